//! Writing `linux.resources` limits into the container's cgroup files.
//!
//! Each limit goes to the v1 hierarchy of its controller when one is mounted, otherwise
//! to the v2 hierarchy, whose controller is first enabled in every ancestor's
//! `cgroup.subtree_control`.

use std::fs;
use std::io;
use std::path::Path;

use oci_spec::runtime::{
    LinuxCpu, LinuxDeviceCgroup, LinuxDeviceType, LinuxMemory, LinuxResources,
};
use slog::{warn, Logger};

use super::block_io;
use super::device_filter::{self, DeviceRule};
use super::layout::Hierarchy;
use super::{network, unified};
use crate::error::Error;

/// Device rules added after the spec's own rules. They let a spec that starts with "deny
/// all" still create and use the standard nodes: mknod of any node, null, zero, full,
/// random, urandom, tty, console, ptmx and the pseudo-terminals.
const DEFAULT_DEVICE_RULES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

/// Conversion of cpu.shares (2 to 262144) to cpu.weight (1 to 10000), mapping the two
/// ranges linearly onto each other.
fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// Applies every supported limit of `resources` to the container's `targets`, one per
/// hierarchy.
pub(super) fn apply(
    targets: &[(&Hierarchy, &Path)],
    resources: &LinuxResources,
    logger: &Logger,
) -> Result<(), Error> {
    if let Some(memory) = resources.memory() {
        apply_memory(targets, memory)?;
    }
    if let Some(pids) = resources.pids() {
        let value = if pids.limit() > 0 {
            pids.limit().to_string()
        } else {
            "max".to_owned()
        };
        let (hierarchy, directory) = find(targets, "pids")?;
        write_controller_file(hierarchy, directory, "pids", "pids.max", &value)?;
    }
    if let Some(cpu) = resources.cpu() {
        apply_cpu(targets, cpu)?;
    }
    if let Some(rules) = resources
        .devices()
        .as_deref()
        .filter(|rules| !rules.is_empty())
    {
        apply_devices(targets, rules, logger)?;
    }
    if let Some(block_io) = resources.block_io() {
        block_io::apply_block_io(targets, block_io)?;
    }
    if let Some(limits) = resources.hugepage_limits().as_deref() {
        block_io::apply_hugepages(targets, limits)?;
    }
    if let Some(network) = resources.network() {
        network::apply_network(targets, network)?;
    }
    if let Some(rdma) = resources.rdma() {
        network::apply_rdma(targets, rdma)?;
    }
    if let Some(unified) = resources.unified() {
        unified::apply_unified(targets, unified)?;
    }
    Ok(())
}

fn apply_memory(targets: &[(&Hierarchy, &Path)], memory: &LinuxMemory) -> Result<(), Error> {
    let (hierarchy, directory) = find(targets, "memory")?;

    if hierarchy.unified {
        apply_memory_limits_v2(hierarchy, directory, memory)?;
    } else {
        apply_memory_limits_v1(directory, memory)?;
    }
    if let Some(reservation) = memory.reservation() {
        let value = memory_value("memory.reservation", reservation, hierarchy.unified)?;
        let file = if hierarchy.unified {
            "memory.low"
        } else {
            "memory.soft_limit_in_bytes"
        };
        write_controller_file(hierarchy, directory, "memory", file, &value)?;
    }

    if let Some(swappiness) = memory.swappiness() {
        if hierarchy.unified {
            return Err(unsupported_on_v2("memory.swappiness", swappiness));
        }
        if swappiness > 100 {
            return Err(Error::CgroupValue {
                key: "memory.swappiness",
                value: swappiness.to_string(),
                reason: "must be between 0 and 100".to_owned(),
            });
        }
        write_file(
            &directory.join("memory.swappiness"),
            &swappiness.to_string(),
        )?;
    }
    if memory.disable_oom_killer() == Some(true) {
        if hierarchy.unified {
            return Err(unsupported_on_v2("memory.disableOOMKiller", true));
        }
        write_file(&directory.join("memory.oom_control"), "1")?;
    }
    // NOTE: kernel memory limits are deprecated in the runtime spec and not applied.
    Ok(())
}

fn unsupported_on_v2(key: &'static str, value: impl ToString) -> Error {
    Error::CgroupValue {
        key,
        value: value.to_string(),
        reason: "cgroup v2 has no such setting".to_owned(),
    }
}

/// Writes the memory limit and the memory plus swap limit of a v1 cgroup. The kernel
/// keeps the swap limit at least as high as the memory limit at every step, so a rising
/// limit goes after the swap limit and a falling one before it.
fn apply_memory_limits_v1(directory: &Path, memory: &LinuxMemory) -> Result<(), Error> {
    let limit = memory
        .limit()
        .map(|limit| memory_value("memory.limit", limit, false))
        .transpose()?;
    let swap = memory
        .swap()
        .map(|swap| memory_value("memory.swap", swap, false))
        .transpose()?;
    let limit_file = directory.join("memory.limit_in_bytes");
    let swap_file = directory.join("memory.memsw.limit_in_bytes");

    match (limit, swap) {
        (Some(limit), Some(swap)) => {
            if write_file(&limit_file, &limit).is_ok() {
                write_file(&swap_file, &swap)
            } else {
                write_file(&swap_file, &swap)?;
                write_file(&limit_file, &limit)
            }
        }
        (Some(limit), None) => write_file(&limit_file, &limit),
        (None, Some(swap)) => write_file(&swap_file, &swap),
        (None, None) => Ok(()),
    }
}

/// Writes `memory.max` and `memory.swap.max`. The spec's swap is memory plus swap, and v2
/// limits swap alone, so the difference is written.
fn apply_memory_limits_v2(
    hierarchy: &Hierarchy,
    directory: &Path,
    memory: &LinuxMemory,
) -> Result<(), Error> {
    if let Some(limit) = memory.limit() {
        let value = memory_value("memory.limit", limit, true)?;
        write_controller_file(hierarchy, directory, "memory", "memory.max", &value)?;
    }
    let Some(swap) = memory.swap() else {
        return Ok(());
    };
    let value = match (swap, memory.limit()) {
        (-1, _) => "max".to_owned(),
        (swap, Some(limit)) if limit >= 0 && swap >= limit => (swap - limit).to_string(),
        (swap, Some(-1)) | (swap, None) if swap >= 0 => {
            return Err(Error::CgroupValue {
                key: "memory.swap",
                value: swap.to_string(),
                reason: "needs memory.limit on cgroup v2, where swap is limited apart".to_owned(),
            })
        }
        (swap, _) => {
            return Err(Error::CgroupValue {
                key: "memory.swap",
                value: swap.to_string(),
                reason: "must be -1 or at least memory.limit".to_owned(),
            })
        }
    };
    write_controller_file(hierarchy, directory, "memory", "memory.swap.max", &value)
}

/// Formats a byte count where -1 means unlimited.
fn memory_value(key: &'static str, bytes: i64, unified: bool) -> Result<String, Error> {
    match bytes {
        -1 if unified => Ok("max".to_owned()),
        -1 => Ok("-1".to_owned()),
        bytes if bytes >= 0 => Ok(bytes.to_string()),
        bytes => Err(Error::CgroupValue {
            key,
            value: bytes.to_string(),
            reason: "must be a byte count or -1 for unlimited".to_owned(),
        }),
    }
}

fn apply_cpu(targets: &[(&Hierarchy, &Path)], cpu: &LinuxCpu) -> Result<(), Error> {
    if cpu.shares().is_some()
        || cpu.quota().is_some()
        || cpu.period().is_some()
        || cpu.realtime_runtime().is_some()
        || cpu.realtime_period().is_some()
    {
        let (hierarchy, directory) = find(targets, "cpu")?;
        if hierarchy.unified {
            apply_cpu_v2(hierarchy, directory, cpu)?;
        } else {
            apply_cpu_v1(hierarchy, directory, cpu)?;
        }
    }

    if cpu.cpus().is_some() || cpu.mems().is_some() {
        let (hierarchy, directory) = find(targets, "cpuset")?;
        if let Some(cpus) = cpu.cpus().as_deref().filter(|cpus| !cpus.is_empty()) {
            write_controller_file(hierarchy, directory, "cpuset", "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|mems| !mems.is_empty()) {
            write_controller_file(hierarchy, directory, "cpuset", "cpuset.mems", mems)?;
        }
    }
    Ok(())
}

fn apply_cpu_v1(hierarchy: &Hierarchy, directory: &Path, cpu: &LinuxCpu) -> Result<(), Error> {
    if let Some(shares) = cpu.shares() {
        write_controller_file(
            hierarchy,
            directory,
            "cpu",
            "cpu.shares",
            &shares.to_string(),
        )?;
    }
    // The kernel checks a quota against the current period, so the period goes first.
    if let Some(period) = cpu.period() {
        write_controller_file(
            hierarchy,
            directory,
            "cpu",
            "cpu.cfs_period_us",
            &period.to_string(),
        )?;
    }
    if let Some(quota) = cpu.quota() {
        write_controller_file(
            hierarchy,
            directory,
            "cpu",
            "cpu.cfs_quota_us",
            &quota.to_string(),
        )?;
    }
    apply_realtime_v1(directory, cpu)
}

/// Writes the real-time bandwidth, which exists only on v1 kernels built with real-time
/// group scheduling. The kernel checks a runtime against the current period, so the
/// period goes first, and the parent cgroup must have a runtime of its own to share.
fn apply_realtime_v1(directory: &Path, cpu: &LinuxCpu) -> Result<(), Error> {
    let settings = [
        (
            "cpu.realtimePeriod",
            "cpu.rt_period_us",
            cpu.realtime_period().map(|period| period.to_string()),
        ),
        (
            "cpu.realtimeRuntime",
            "cpu.rt_runtime_us",
            cpu.realtime_runtime().map(|runtime| runtime.to_string()),
        ),
    ];
    for (key, file, value) in settings {
        let Some(value) = value else {
            continue;
        };
        let path = directory.join(file);
        if !path.exists() {
            return Err(Error::Unsupported {
                field: key,
                missing: format!(
                    "the kernel has no real-time group scheduling ({} is missing)",
                    path.display()
                ),
            });
        }
        write_file(&path, &value)?;
    }
    Ok(())
}

fn apply_cpu_v2(hierarchy: &Hierarchy, directory: &Path, cpu: &LinuxCpu) -> Result<(), Error> {
    if let Some(runtime) = cpu.realtime_runtime() {
        return Err(unsupported_on_v2("cpu.realtimeRuntime", runtime));
    }
    if let Some(period) = cpu.realtime_period() {
        return Err(unsupported_on_v2("cpu.realtimePeriod", period));
    }
    if let Some(shares) = cpu.shares() {
        let weight = shares_to_weight(shares).to_string();
        write_controller_file(hierarchy, directory, "cpu", "cpu.weight", &weight)?;
    }
    if cpu.quota().is_some() || cpu.period().is_some() {
        let quota = match cpu.quota() {
            Some(quota) if quota > 0 => quota.to_string(),
            _ => "max".to_owned(),
        };
        // 100000 us is the kernel's default period.
        let period = cpu.period().unwrap_or(100_000);
        write_controller_file(
            hierarchy,
            directory,
            "cpu",
            "cpu.max",
            &format!("{quota} {period}"),
        )?;
    }
    Ok(())
}

/// Applies device rules through the v1 devices controller, or on a pure v2 layout
/// through a device filter program. A hybrid layout has the v1 controller, which
/// enforces the rules already.
fn apply_devices(
    targets: &[(&Hierarchy, &Path)],
    rules: &[LinuxDeviceCgroup],
    logger: &Logger,
) -> Result<(), Error> {
    let v1 = targets
        .iter()
        .find(|(hierarchy, _)| hierarchy.has("devices") && !hierarchy.unified);
    let v2 = targets.iter().find(|(hierarchy, _)| hierarchy.unified);
    let directory = match (v1, v2) {
        (Some((_, directory)), _) => directory,
        (None, Some((_, directory))) => return apply_device_filter(directory, rules),
        (None, None) => {
            warn!(logger, "device cgroup rules not applied: no devices hierarchy"; "rules" => rules.len());
            return Ok(());
        }
    };

    for rule in rules {
        let file = if rule.allow() {
            "devices.allow"
        } else {
            "devices.deny"
        };
        write_file(&directory.join(file), &device_rule(rule)?)?;
    }
    for rule in DEFAULT_DEVICE_RULES {
        write_file(&directory.join("devices.allow"), rule)?;
    }
    Ok(())
}

/// Attaches a device filter with the spec's rules followed by the default allows, the
/// order the v1 controller gets them in. A live update attaches one more filter, and a
/// request needs the consent of all, so on v2 an update can narrow access but not
/// widen it.
fn apply_device_filter(directory: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), Error> {
    let mut parsed = Vec::new();
    for rule in rules {
        let text = device_rule(rule)?;
        parsed.push(parse_rule(rule.allow(), &text)?);
    }
    for text in DEFAULT_DEVICE_RULES {
        parsed.push(parse_rule(true, text)?);
    }
    device_filter::attach(directory, &parsed)
}

fn parse_rule(allow: bool, text: &str) -> Result<DeviceRule, Error> {
    DeviceRule::parse(allow, text).ok_or_else(|| Error::CgroupValue {
        key: "linux.resources.devices",
        value: text.to_owned(),
        reason: "not a device rule of the form \"c 1:3 rwm\"".to_owned(),
    })
}

/// Formats a rule as the v1 devices controller reads it: `type major:minor access`.
fn device_rule(rule: &LinuxDeviceCgroup) -> Result<String, Error> {
    let kind = match rule.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => "a",
        LinuxDeviceType::B => "b",
        LinuxDeviceType::C | LinuxDeviceType::U => "c",
        LinuxDeviceType::P => {
            return Err(Error::CgroupValue {
                key: "linux.resources.devices.type",
                value: "p".to_owned(),
                reason: "the devices controller has no rules for FIFOs".to_owned(),
            })
        }
    };
    let number = |value: Option<i64>| {
        value
            .filter(|value| *value >= 0)
            .map_or("*".to_owned(), |value| value.to_string())
    };
    let access = rule.access().clone().unwrap_or_else(|| "rwm".to_owned());
    if access.is_empty()
        || !access
            .chars()
            .all(|letter| matches!(letter, 'r' | 'w' | 'm'))
    {
        return Err(Error::CgroupValue {
            key: "linux.resources.devices.access",
            value: access,
            reason: "must be made of the letters r, w and m".to_owned(),
        });
    }
    Ok(format!(
        "{kind} {}:{} {access}",
        number(rule.major()),
        number(rule.minor())
    ))
}

/// Finds the hierarchy that controls `controller`, preferring a v1 mount over a v2 one.
pub(super) fn find<'a>(
    targets: &[(&'a Hierarchy, &'a Path)],
    controller: &str,
) -> Result<(&'a Hierarchy, &'a Path), Error> {
    let v1 = targets
        .iter()
        .find(|(hierarchy, _)| !hierarchy.unified && hierarchy.has(controller));
    let v2 = targets
        .iter()
        .find(|(hierarchy, _)| hierarchy.unified && hierarchy.has(controller));
    match v1.or(v2) {
        Some((hierarchy, directory)) => Ok((hierarchy, directory)),
        None => Err(Error::Cgroup {
            operation: "find the cgroup controller for",
            path: Path::new(controller).to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::NotFound,
                "controller is not mounted under the cgroup root",
            ),
        }),
    }
}

/// Writes `value` to `file` in `directory`, enabling the v2 controller first.
pub(super) fn write_controller_file(
    hierarchy: &Hierarchy,
    directory: &Path,
    controller: &str,
    file: &str,
    value: &str,
) -> Result<(), Error> {
    if hierarchy.unified {
        enable_controller(&hierarchy.mount_point, directory, controller)?;
    }
    write_file(&directory.join(file), value)
}

/// Writes `value` to `file` as [`write_controller_file`] does, after checking that the
/// kernel provides the file. A file that is missing because the kernel lacks a feature,
/// such as `blkio.weight` without an I/O scheduler that has weights, fails with
/// [`Error::Unsupported`] naming the spec's `field`.
pub(super) fn write_supported_file(
    hierarchy: &Hierarchy,
    directory: &Path,
    controller: &str,
    field: &'static str,
    file: &str,
    value: &str,
) -> Result<(), Error> {
    if hierarchy.unified {
        enable_controller(&hierarchy.mount_point, directory, controller)?;
    }
    let path = directory.join(file);
    if !path.exists() {
        return Err(Error::Unsupported {
            field,
            missing: format!("{} does not exist", path.display()),
        });
    }
    write_file(&path, value)
}

/// Enables `controller` in `cgroup.subtree_control` of every ancestor of `directory`
/// up to the hierarchy root, so that the container's directory gets the controller's
/// files.
pub(super) fn enable_controller(
    mount_point: &Path,
    directory: &Path,
    controller: &str,
) -> Result<(), Error> {
    let mut ancestors: Vec<&Path> = directory
        .ancestors()
        .skip(1)
        .take_while(|path| path.starts_with(mount_point))
        .collect();
    ancestors.reverse();

    for ancestor in ancestors {
        let control = ancestor.join("cgroup.subtree_control");
        let enabled = fs::read_to_string(&control).map_err(|source| Error::Cgroup {
            operation: "read",
            path: control.clone(),
            source,
        })?;
        if !enabled.split_whitespace().any(|name| name == controller) {
            write_file(&control, &format!("+{controller}"))?;
        }
    }
    Ok(())
}

/// Copies `cpuset.cpus` and `cpuset.mems` from `parent` into a v1 `directory` where they
/// are empty, because the kernel rejects tasks in a cpuset without CPUs or memory nodes.
pub(super) fn inherit_cpuset(parent: &Path, directory: &Path) -> Result<(), Error> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let current = directory.join(file);
        let value = fs::read_to_string(&current).map_err(|source| Error::Cgroup {
            operation: "read",
            path: current.clone(),
            source,
        })?;
        if !value.trim().is_empty() {
            continue;
        }
        let inherited_path = parent.join(file);
        let inherited = fs::read_to_string(&inherited_path).map_err(|source| Error::Cgroup {
            operation: "read",
            path: inherited_path,
            source,
        })?;
        write_file(&current, inherited.trim())?;
    }
    Ok(())
}

pub(crate) fn write_file(path: &Path, value: &str) -> Result<(), Error> {
    fs::write(path, value).map_err(|source| Error::CgroupWrite {
        path: path.to_path_buf(),
        value: value.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxCpuBuilder, LinuxDeviceCgroupBuilder};

    #[test]
    fn shares_map_onto_weight_range() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 1);
    }

    #[test]
    fn deny_all_rule_is_formatted() {
        let rule = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .unwrap();
        assert_eq!(device_rule(&rule).unwrap(), "a *:* rwm");
    }

    #[test]
    fn char_device_rule_is_formatted() {
        let rule = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(10)
            .minor(200)
            .access("rw")
            .build()
            .unwrap();
        assert_eq!(device_rule(&rule).unwrap(), "c 10:200 rw");
    }

    #[test]
    fn invalid_access_is_rejected() {
        let rule = LinuxDeviceCgroupBuilder::default()
            .access("rwx")
            .build()
            .unwrap();
        let error = device_rule(&rule).unwrap_err();
        assert!(error.is_invalid_input(), "{error}");
    }

    #[test]
    fn realtime_without_kernel_support_names_field() {
        let directory = tempfile::tempdir().unwrap();
        let hierarchy = Hierarchy {
            mount_point: directory.path().to_path_buf(),
            controllers: vec!["cpu".to_owned()],
            unified: false,
        };
        let cpu = LinuxCpuBuilder::default()
            .realtime_runtime(10_000i64)
            .build()
            .unwrap();

        let error = apply_cpu(&[(&hierarchy, directory.path())], &cpu).unwrap_err();

        assert!(error.is_unsupported(), "{error}");
        assert!(error.to_string().contains("cpu.realtimeRuntime"), "{error}");
        assert!(error.to_string().contains("cpu.rt_runtime_us"), "{error}");
    }

    #[test]
    fn negative_memory_other_than_minus_one_is_rejected() {
        assert_eq!(memory_value("memory.limit", -1, true).unwrap(), "max");
        assert_eq!(memory_value("memory.limit", -1, false).unwrap(), "-1");
        assert!(memory_value("memory.limit", -2, false).is_err());
    }
}
