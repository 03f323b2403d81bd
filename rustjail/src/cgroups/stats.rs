//! Usage statistics of a container's cgroup, read from the v1 or v2 files of each
//! controller. A controller that is not mounted gives `None`.

use std::fs;
use std::path::Path;

use super::layout::Hierarchy;
use super::resources::find;
use super::Cgroup;
use crate::error::Error;

/// Usage and limits of a container's cgroup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    pub cpu: Option<CpuStats>,
    pub memory: Option<MemoryStats>,
    pub pids: Option<PidsStats>,
    /// Bytes and operations per device and direction.
    pub blkio: Vec<BlkioEntry>,
    pub hugetlb: Vec<HugetlbStats>,
}

/// CPU time used, in nanoseconds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuStats {
    pub usage_ns: u64,
    pub user_ns: u64,
    pub system_ns: u64,
}

/// Memory in bytes. `limit` is `u64::MAX` when unlimited.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryStats {
    pub usage: u64,
    /// Highest usage so far (`memory.max_usage_in_bytes`, or `memory.peak` on v2
    /// kernels that have it, 0 otherwise).
    pub max_usage: u64,
    pub limit: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PidsStats {
    pub current: u64,
    /// `None` when unlimited.
    pub limit: Option<u64>,
}

/// One counter of the block I/O controller, such as bytes read from 8:0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlkioEntry {
    pub major: u64,
    pub minor: u64,
    /// `Read`, `Write`, `Sync`, `Async`, `Discard` or `Total` as v1 names them, with
    /// v2's `rbytes`/`rios` mapped to `Read` and `wbytes`/`wios` to `Write`.
    pub operation: String,
    /// `bytes` or `ios`.
    pub unit: &'static str,
    pub value: u64,
}

/// Usage of one huge page size, in bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HugetlbStats {
    pub page_size: String,
    pub usage: u64,
    /// Highest usage so far on v1, 0 on v2, which does not record it.
    pub max_usage: u64,
    /// Allocations that failed because of the limit.
    pub failcnt: u64,
}

impl Cgroup {
    /// Reads the statistics of every mounted controller.
    pub(crate) fn stats(&self) -> Result<CgroupStats, Error> {
        let targets: Vec<(&Hierarchy, &Path)> = self.hierarchies().collect();
        let found = |controller: &str| find(&targets, controller).ok();

        Ok(CgroupStats {
            cpu: found("cpuacct")
                .filter(|(hierarchy, _)| !hierarchy.unified)
                .or_else(|| found("cpu").filter(|(hierarchy, _)| hierarchy.unified))
                .map(cpu_stats)
                .transpose()?,
            memory: found("memory").map(memory_stats).transpose()?,
            pids: found("pids").map(pids_stats).transpose()?,
            blkio: found("blkio")
                .or_else(|| found("io"))
                .map(blkio_stats)
                .transpose()?
                .unwrap_or_default(),
            hugetlb: found("hugetlb")
                .map(hugetlb_stats)
                .transpose()?
                .unwrap_or_default(),
        })
    }
}

fn cpu_stats((hierarchy, directory): (&Hierarchy, &Path)) -> Result<CpuStats, Error> {
    if hierarchy.unified {
        let stat = read(&directory.join("cpu.stat"))?;
        let micros = |key: &str| keyed_value(&stat, key).unwrap_or(0) * 1000;
        return Ok(CpuStats {
            usage_ns: micros("usage_usec"),
            user_ns: micros("user_usec"),
            system_ns: micros("system_usec"),
        });
    }

    let usage_ns = number(&directory.join("cpuacct.usage"))?;
    let stat = read(&directory.join("cpuacct.stat"))?;
    // cpuacct.stat counts in clock ticks of USER_HZ.
    // SAFETY: sysconf only reads a configuration value.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    let nanos = |key: &str| keyed_value(&stat, key).unwrap_or(0) * 1_000_000_000 / ticks_per_second;
    Ok(CpuStats {
        usage_ns,
        user_ns: nanos("user"),
        system_ns: nanos("system"),
    })
}

fn memory_stats((hierarchy, directory): (&Hierarchy, &Path)) -> Result<MemoryStats, Error> {
    if hierarchy.unified {
        let peak = directory.join("memory.peak");
        return Ok(MemoryStats {
            usage: number(&directory.join("memory.current"))?,
            max_usage: if peak.exists() { number(&peak)? } else { 0 },
            limit: limit(&directory.join("memory.max"))?.unwrap_or(u64::MAX),
        });
    }
    Ok(MemoryStats {
        usage: number(&directory.join("memory.usage_in_bytes"))?,
        max_usage: number(&directory.join("memory.max_usage_in_bytes"))?,
        limit: number(&directory.join("memory.limit_in_bytes"))?,
    })
}

fn pids_stats((_, directory): (&Hierarchy, &Path)) -> Result<PidsStats, Error> {
    Ok(PidsStats {
        current: number(&directory.join("pids.current"))?,
        limit: limit(&directory.join("pids.max"))?,
    })
}

fn blkio_stats((hierarchy, directory): (&Hierarchy, &Path)) -> Result<Vec<BlkioEntry>, Error> {
    if hierarchy.unified {
        return Ok(parse_io_stat(&read(&directory.join("io.stat"))?));
    }
    let mut entries = parse_blkio(
        &read(&directory.join("blkio.throttle.io_service_bytes_recursive"))?,
        "bytes",
    );
    entries.extend(parse_blkio(
        &read(&directory.join("blkio.throttle.io_serviced_recursive"))?,
        "ios",
    ));
    Ok(entries)
}

/// Parses v1 lines `8:0 Read 4096`, skipping the closing `Total 4096` line.
fn parse_blkio(text: &str, unit: &'static str) -> Vec<BlkioEntry> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (major, minor) = fields.next()?.split_once(':')?;
            Some(BlkioEntry {
                major: major.parse().ok()?,
                minor: minor.parse().ok()?,
                operation: fields.next()?.to_owned(),
                unit,
                value: fields.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// Parses v2 lines `8:0 rbytes=4096 wbytes=0 rios=1 wios=0 dbytes=0 dios=0`.
fn parse_io_stat(text: &str) -> Vec<BlkioEntry> {
    let mut entries = Vec::new();
    for line in text.lines() {
        let mut fields = line.split_whitespace();
        let Some((major, minor)) = fields.next().and_then(|device| device.split_once(':')) else {
            continue;
        };
        let (Ok(major), Ok(minor)) = (major.parse(), minor.parse()) else {
            continue;
        };
        for field in fields {
            let Some((key, value)) = field.split_once('=') else {
                continue;
            };
            let (operation, unit) = match key {
                "rbytes" => ("Read", "bytes"),
                "wbytes" => ("Write", "bytes"),
                "rios" => ("Read", "ios"),
                "wios" => ("Write", "ios"),
                "dbytes" => ("Discard", "bytes"),
                "dios" => ("Discard", "ios"),
                _ => continue,
            };
            if let Ok(value) = value.parse() {
                entries.push(BlkioEntry {
                    major,
                    minor,
                    operation: operation.to_owned(),
                    unit,
                    value,
                });
            }
        }
    }
    entries
}

fn hugetlb_stats((hierarchy, directory): (&Hierarchy, &Path)) -> Result<Vec<HugetlbStats>, Error> {
    let usage_suffix = if hierarchy.unified {
        ".current"
    } else {
        ".usage_in_bytes"
    };
    let listing = fs::read_dir(directory).map_err(|source| Error::Cgroup {
        operation: "list",
        path: directory.to_path_buf(),
        source,
    })?;
    let mut sizes: Vec<String> = listing
        .filter_map(|entry| entry.ok())
        .filter_map(|entry| entry.file_name().into_string().ok())
        .filter_map(|name| {
            let size = name.strip_prefix("hugetlb.")?.strip_suffix(usage_suffix)?;
            (!size.contains('.')).then(|| size.to_owned())
        })
        .collect();
    sizes.sort();

    let mut stats = Vec::new();
    for size in sizes {
        let file = |suffix: &str| directory.join(format!("hugetlb.{size}{suffix}"));
        let entry = if hierarchy.unified {
            let events = read(&file(".events"))?;
            HugetlbStats {
                usage: number(&file(".current"))?,
                max_usage: 0,
                failcnt: keyed_value(&events, "max").unwrap_or(0),
                page_size: size,
            }
        } else {
            HugetlbStats {
                usage: number(&file(".usage_in_bytes"))?,
                max_usage: number(&file(".max_usage_in_bytes"))?,
                failcnt: number(&file(".failcnt"))?,
                page_size: size,
            }
        };
        stats.push(entry);
    }
    Ok(stats)
}

/// Returns the number after `key` in a `key value` per line file.
fn keyed_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let (name, value) = line.split_once(' ')?;
        (name == key).then(|| value.trim().parse().ok())?
    })
}

fn read(path: &Path) -> Result<String, Error> {
    fs::read_to_string(path).map_err(|source| Error::Cgroup {
        operation: "read",
        path: path.to_path_buf(),
        source,
    })
}

pub(super) fn number(path: &Path) -> Result<u64, Error> {
    let text = read(path)?;
    text.trim().parse().map_err(|_| Error::Cgroup {
        operation: "parse a number from",
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{:?}", text.trim()),
        ),
    })
}

/// Reads a limit file where `max` means no limit.
fn limit(path: &Path) -> Result<Option<u64>, Error> {
    if read(path)?.trim() == "max" {
        return Ok(None);
    }
    number(path).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_blkio_lines_parse() {
        let entries = parse_blkio("8:0 Read 4096\n8:0 Write 0\nTotal 4096\n", "bytes");

        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].operation, "Read");
        assert_eq!(entries[0].value, 4096);
    }

    #[test]
    fn v2_io_stat_parses() {
        let entries = parse_io_stat("254:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n");

        assert_eq!(entries.len(), 6);
        assert_eq!(
            (
                entries[1].operation.as_str(),
                entries[1].unit,
                entries[1].value
            ),
            ("Write", "bytes", 20)
        );
    }

    #[test]
    fn keyed_value_finds_exact_key() {
        let text = "usage_usec 10\nuser_usec 7\n";

        assert_eq!(keyed_value(text, "user_usec"), Some(7));
        assert_eq!(keyed_value(text, "user"), None);
    }
}
