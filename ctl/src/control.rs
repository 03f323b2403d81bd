//! Subcommands on a running container: `pause`, `resume`, `update`, `stats`, `ps`,
//! `resize` and `events`. They print what the agent returns on stdout.

use std::fmt::Write;

use protobuf::MessageField;
use protocols::agent::{StatsContainerResponse, UpdateContainerRequest};
use protocols::oci::{LinuxCPU, LinuxMemory, LinuxPids, LinuxResources};

use crate::cli::{EventsArgs, PsArgs, ResizeArgs, UpdateArgs};
use crate::client::Agent;
use crate::error::{Error, Result};

/// CFS period used to express `--cpus`, in microseconds (the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

pub async fn pause(agent: &Agent, container_id: &str) -> Result<()> {
    agent.pause_container(container_id).await
}

pub async fn resume(agent: &Agent, container_id: &str) -> Result<()> {
    agent.resume_container(container_id).await
}

pub async fn update(agent: &Agent, args: UpdateArgs) -> Result<()> {
    let request = update_request(&args)?;

    agent.update_container(&request).await
}

pub async fn stats(agent: &Agent, container_id: &str) -> Result<()> {
    let response = agent.stats_container(container_id).await?;

    print!("{}", format_stats(&response));
    Ok(())
}

pub async fn ps(agent: &Agent, args: PsArgs) -> Result<()> {
    let list = agent
        .list_processes(&args.id, &args.format, &args.ps_args)
        .await?;

    print!("{}", String::from_utf8_lossy(&list));
    if args.format == "json" {
        println!();
    }
    Ok(())
}

pub async fn resize(agent: &Agent, args: ResizeArgs) -> Result<()> {
    let exec_id = args.exec_id.as_deref().unwrap_or(&args.id);

    agent
        .resize_terminal(&args.id, exec_id, args.rows, args.cols)
        .await
}

/// Prints one line per OOM event until interrupted; with an id, only that
/// container's events.
pub async fn events(agent: &Agent, args: EventsArgs) -> Result<()> {
    loop {
        let container_id = agent.oom_event().await?;
        if args
            .id
            .as_ref()
            .is_some_and(|wanted| *wanted != container_id)
        {
            continue;
        }

        println!("oom {container_id}");
        use std::io::Write as _;
        // Events are rare and a reader such as `grep -m1` waits for each line.
        let _ = std::io::stdout().flush();
    }
}

/// Builds the UpdateContainer request for the limits given on the command line.
fn update_request(args: &UpdateArgs) -> Result<UpdateContainerRequest> {
    let mut resources = LinuxResources::new();

    if let Some(bytes) = args.memory {
        let limit = i64::try_from(bytes).map_err(|_| Error::InvalidLimit {
            option: "--memory",
            value: bytes.to_string(),
        })?;
        resources.Memory = MessageField::some(LinuxMemory {
            Limit: limit,
            ..Default::default()
        });
    }

    if let Some(cpus) = args.cpus {
        resources.CPU = MessageField::some(cpu_limit(cpus)?);
    }

    if let Some(count) = args.pids {
        resources.Pids = MessageField::some(LinuxPids {
            Limit: count,
            ..Default::default()
        });
    }

    let mut request = UpdateContainerRequest::new();
    request.container_id = args.id.clone();
    request.resources = MessageField::some(resources);
    Ok(request)
}

/// Converts a number of CPUs into a CFS quota over [`CPU_PERIOD_US`].
fn cpu_limit(cpus: f64) -> Result<LinuxCPU> {
    if !cpus.is_finite() || cpus <= 0.0 {
        return Err(Error::InvalidLimit {
            option: "--cpus",
            value: cpus.to_string(),
        });
    }

    Ok(LinuxCPU {
        Quota: (cpus * CPU_PERIOD_US as f64).round() as i64,
        Period: CPU_PERIOD_US,
        ..Default::default()
    })
}

fn format_stats(response: &StatsContainerResponse) -> String {
    let mut text = String::new();
    let Some(stats) = response.cgroup_stats.as_ref() else {
        return "no cgroup statistics\n".to_string();
    };

    if let Some(cpu) = stats.cpu_stats.cpu_usage.as_ref() {
        let _ = writeln!(
            text,
            "cpu usage: {} ns (user {} ns, system {} ns)",
            cpu.total_usage, cpu.usage_in_usermode, cpu.usage_in_kernelmode
        );
    }

    if let Some(memory) = stats.memory_stats.usage.as_ref() {
        let _ = writeln!(
            text,
            "memory usage: {} bytes (max {} bytes, limit {})",
            memory.usage,
            memory.max_usage,
            limit_text(memory.limit, u64::MAX)
        );
    }

    if let Some(pids) = stats.pids_stats.as_ref() {
        let _ = writeln!(
            text,
            "pids: {} (limit {})",
            pids.current,
            limit_text(pids.limit, 0)
        );
    }

    if let Some(blkio) = stats.blkio_stats.as_ref() {
        for (unit, entries) in [
            ("bytes", &blkio.io_service_bytes_recursive),
            ("ios", &blkio.io_serviced_recursive),
        ] {
            for entry in entries {
                let _ = writeln!(
                    text,
                    "blkio {}:{} {} {} {unit}",
                    entry.major, entry.minor, entry.op, entry.value
                );
            }
        }
    }

    let mut hugetlb: Vec<_> = stats.hugetlb_stats.iter().collect();
    hugetlb.sort_by(|a, b| a.0.cmp(b.0));
    for (page_size, usage) in hugetlb {
        let _ = writeln!(
            text,
            "hugetlb {page_size}: {} bytes (max {} bytes, failed allocations {})",
            usage.usage, usage.max_usage, usage.failcnt
        );
    }
    text
}

/// Prints `unlimited` for the value the agent uses for no limit.
fn limit_text(value: u64, unlimited: u64) -> String {
    if value == unlimited {
        "unlimited".to_string()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocols::agent::{CgroupStats, CpuStats, CpuUsage, MemoryData, MemoryStats, PidsStats};

    fn update_args(memory: Option<u64>, cpus: Option<f64>, pids: Option<i64>) -> UpdateArgs {
        UpdateArgs {
            id: "c1".to_string(),
            memory,
            cpus,
            pids,
        }
    }

    #[test]
    fn update_sets_only_given_limits() {
        let request = update_request(&update_args(Some(64 << 20), None, Some(20))).unwrap();

        assert_eq!(request.container_id, "c1");
        assert_eq!(request.resources.Memory.Limit, 64 << 20);
        assert!(request.resources.CPU.is_none());
        assert_eq!(request.resources.Pids.Limit, 20);
    }

    #[test]
    fn cpus_become_quota_over_period() {
        let request = update_request(&update_args(None, Some(1.5), None)).unwrap();

        assert_eq!(request.resources.CPU.Quota, 150_000);
        assert_eq!(request.resources.CPU.Period, 100_000);
    }

    #[test]
    fn invalid_cpus_rejected() {
        for cpus in [0.0, -1.0, f64::NAN] {
            let error = update_request(&update_args(None, Some(cpus), None)).unwrap_err();

            assert!(error.to_string().contains("--cpus"), "{error}");
        }
    }

    #[test]
    fn memory_beyond_i64_rejected() {
        let error = update_request(&update_args(Some(u64::MAX), None, None)).unwrap_err();

        assert!(error.to_string().contains("--memory"), "{error}");
    }

    #[test]
    fn stats_printed_with_limits() {
        let usage = CpuUsage {
            total_usage: 30,
            usage_in_usermode: 20,
            usage_in_kernelmode: 10,
            ..Default::default()
        };
        let memory = MemoryData {
            usage: 4096,
            max_usage: 8192,
            limit: u64::MAX,
            ..Default::default()
        };
        let stats = CgroupStats {
            cpu_stats: MessageField::some(CpuStats {
                cpu_usage: MessageField::some(usage),
                ..Default::default()
            }),
            memory_stats: MessageField::some(MemoryStats {
                usage: MessageField::some(memory),
                ..Default::default()
            }),
            pids_stats: MessageField::some(PidsStats {
                current: 3,
                limit: 50,
                ..Default::default()
            }),
            ..Default::default()
        };
        let response = StatsContainerResponse {
            cgroup_stats: MessageField::some(stats),
            ..Default::default()
        };

        let text = format_stats(&response);

        assert!(
            text.contains("cpu usage: 30 ns (user 20 ns, system 10 ns)"),
            "{text}"
        );
        assert!(
            text.contains("memory usage: 4096 bytes (max 8192 bytes, limit unlimited)"),
            "{text}"
        );
        assert!(text.contains("pids: 3 (limit 50)"), "{text}");
    }
}
