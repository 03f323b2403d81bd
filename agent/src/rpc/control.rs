//! PauseContainer, ResumeContainer, UpdateContainer and StatsContainer: control of a
//! container through its cgroup.
//!
//! Each holds the container's lock while rustjail works, so these requests and
//! ExecProcess never touch one container's cgroup at the same time.

use std::collections::HashMap;
use std::sync::Arc;

use protobuf::MessageField;
use protocols::agent::{
    BlkioStats, BlkioStatsEntry, CgroupStats, CpuStats, CpuUsage, HugetlbStats, MemoryData,
    MemoryStats, PauseContainerRequest, PidsStats, ResumeContainerRequest, StatsContainerRequest,
    StatsContainerResponse, UpdateContainerRequest,
};
use protocols::empty::Empty;
use slog::{info, Logger};

use super::process::find_container;
use super::Agent;
use crate::error::AgentError;

/// Freezes every process of the container.
pub async fn pause_container(
    agent: Arc<Agent>,
    logger: Logger,
    request: PauseContainerRequest,
) -> Result<Empty, AgentError> {
    with_launcher(&agent, &request.container_id, "pause", |launcher| {
        launcher.pause()
    })
    .await?;

    info!(logger, "container paused");
    Ok(Empty::new())
}

/// Thaws a paused container.
pub async fn resume_container(
    agent: Arc<Agent>,
    logger: Logger,
    request: ResumeContainerRequest,
) -> Result<Empty, AgentError> {
    with_launcher(&agent, &request.container_id, "resume", |launcher| {
        launcher.resume()
    })
    .await?;

    info!(logger, "container resumed");
    Ok(Empty::new())
}

/// Applies the request's resources to the running container. A request without
/// resources changes nothing, as with Kata's agent.
pub async fn update_container(
    agent: Arc<Agent>,
    logger: Logger,
    request: UpdateContainerRequest,
) -> Result<Empty, AgentError> {
    let Some(resources) = convert_resources(&request)? else {
        return Ok(Empty::new());
    };

    with_launcher(&agent, &request.container_id, "update", move |launcher| {
        launcher.update(&resources)
    })
    .await?;

    info!(logger, "container resources updated");
    Ok(Empty::new())
}

/// Returns the usage statistics of the container's cgroup. Network statistics are
/// left empty: the container shares the sandbox's interfaces.
pub async fn stats_container(
    agent: Arc<Agent>,
    request: StatsContainerRequest,
) -> Result<StatsContainerResponse, AgentError> {
    let stats = with_launcher(
        &agent,
        &request.container_id,
        "read statistics of",
        |launcher| launcher.stats(),
    )
    .await?;

    let mut response = StatsContainerResponse::new();
    response.cgroup_stats = MessageField::some(cgroup_stats(&stats));
    Ok(response)
}

/// Runs `work` on the container's launcher on a blocking thread, holding the
/// container's lock, and names `operation` in its error.
async fn with_launcher<T, F>(
    agent: &Agent,
    container_id: &str,
    operation: &'static str,
    work: F,
) -> Result<T, AgentError>
where
    T: Send + 'static,
    F: FnOnce(&rustjail::Container) -> Result<T, rustjail::Error> + Send + 'static,
{
    let handle = find_container(agent, container_id).await?;
    let container = handle.lock().await;
    container.ensure_present()?;

    let launcher = container.launcher.clone();
    let result = tokio::task::spawn_blocking(move || {
        let inner = launcher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        work(&inner)
    })
    .await
    .map_err(|error| AgentError::Task {
        operation,
        reason: error.to_string(),
    })?;

    result.map_err(|source| AgentError::Control {
        operation,
        container: container_id.to_string(),
        source: Box::new(source),
    })
}

/// Converts the request's protobuf resources by wrapping them in an otherwise empty
/// spec. Returns `None` when the request carries no resources.
fn convert_resources(
    request: &UpdateContainerRequest,
) -> Result<Option<oci_spec::runtime::LinuxResources>, AgentError> {
    let Some(resources) = request.resources.as_ref() else {
        return Ok(None);
    };

    let mut linux = protocols::oci::Linux::new();
    linux.Resources = MessageField::some(resources.clone());
    let mut spec = protocols::oci::Spec::new();
    spec.Linux = MessageField::some(linux);

    let converted =
        protocols::spec_to_oci(&spec).map_err(|error| AgentError::InvalidResources {
            container: request.container_id.clone(),
            reason: error.to_string(),
        })?;
    Ok(converted
        .linux()
        .as_ref()
        .and_then(|linux| linux.resources().clone()))
}

/// Maps rustjail's statistics onto Kata's CgroupStats message. Fields rustjail does
/// not read (per-CPU usage, throttling, memory cache, swap and kernel usage) stay 0.
fn cgroup_stats(stats: &rustjail::CgroupStats) -> CgroupStats {
    let mut message = CgroupStats::new();

    if let Some(cpu) = &stats.cpu {
        let usage = CpuUsage {
            total_usage: cpu.usage_ns,
            usage_in_kernelmode: cpu.system_ns,
            usage_in_usermode: cpu.user_ns,
            ..Default::default()
        };
        message.cpu_stats = MessageField::some(CpuStats {
            cpu_usage: MessageField::some(usage),
            ..Default::default()
        });
    }

    if let Some(memory) = &stats.memory {
        let usage = MemoryData {
            usage: memory.usage,
            max_usage: memory.max_usage,
            limit: memory.limit,
            ..Default::default()
        };
        message.memory_stats = MessageField::some(MemoryStats {
            usage: MessageField::some(usage),
            ..Default::default()
        });
    }

    if let Some(pids) = &stats.pids {
        // Kata reports an unlimited pids controller as limit 0.
        message.pids_stats = MessageField::some(PidsStats {
            current: pids.current,
            limit: pids.limit.unwrap_or(0),
            ..Default::default()
        });
    }

    message.blkio_stats = MessageField::some(blkio_stats(&stats.blkio));
    message.hugetlb_stats = hugetlb_stats(&stats.hugetlb);
    message
}

fn blkio_stats(entries: &[rustjail::BlkioEntry]) -> BlkioStats {
    let mut message = BlkioStats::new();

    for entry in entries {
        let converted = BlkioStatsEntry {
            major: entry.major,
            minor: entry.minor,
            op: entry.operation.clone(),
            value: entry.value,
            ..Default::default()
        };
        match entry.unit {
            "bytes" => message.io_service_bytes_recursive.push(converted),
            _ => message.io_serviced_recursive.push(converted),
        }
    }
    message
}

fn hugetlb_stats(entries: &[rustjail::HugetlbStats]) -> HashMap<String, HugetlbStats> {
    entries
        .iter()
        .map(|entry| {
            let stats = HugetlbStats {
                usage: entry.usage,
                max_usage: entry.max_usage,
                failcnt: entry.failcnt,
                ..Default::default()
            };
            (entry.page_size.clone(), stats)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_mapped_to_kata_messages() {
        let stats = rustjail::CgroupStats {
            cpu: Some(rustjail::CpuStats {
                usage_ns: 30,
                user_ns: 20,
                system_ns: 10,
            }),
            memory: Some(rustjail::MemoryStats {
                usage: 4096,
                max_usage: 8192,
                limit: u64::MAX,
            }),
            pids: Some(rustjail::PidsStats {
                current: 2,
                limit: None,
            }),
            blkio: vec![
                rustjail::BlkioEntry {
                    major: 8,
                    minor: 0,
                    operation: "Read".to_string(),
                    unit: "bytes",
                    value: 512,
                },
                rustjail::BlkioEntry {
                    major: 8,
                    minor: 0,
                    operation: "Write".to_string(),
                    unit: "ios",
                    value: 3,
                },
            ],
            hugetlb: vec![rustjail::HugetlbStats {
                page_size: "2MB".to_string(),
                usage: 0,
                max_usage: 0,
                failcnt: 1,
            }],
        };

        let message = cgroup_stats(&stats);

        let usage = &message.cpu_stats.cpu_usage;
        assert_eq!(usage.total_usage, 30);
        assert_eq!(usage.usage_in_usermode, 20);
        assert_eq!(usage.usage_in_kernelmode, 10);
        assert_eq!(message.memory_stats.usage.usage, 4096);
        assert_eq!(message.memory_stats.usage.max_usage, 8192);
        assert_eq!(message.memory_stats.usage.limit, u64::MAX);
        assert_eq!(message.pids_stats.current, 2);
        assert_eq!(message.pids_stats.limit, 0);
        let blkio = &message.blkio_stats;
        assert_eq!(blkio.io_service_bytes_recursive.len(), 1);
        assert_eq!(blkio.io_service_bytes_recursive[0].op, "Read");
        assert_eq!(blkio.io_service_bytes_recursive[0].value, 512);
        assert_eq!(blkio.io_serviced_recursive[0].op, "Write");
        assert_eq!(message.hugetlb_stats["2MB"].failcnt, 1);
    }

    #[test]
    fn missing_controllers_leave_messages_unset() {
        let message = cgroup_stats(&rustjail::CgroupStats::default());

        assert!(message.cpu_stats.is_none());
        assert!(message.memory_stats.is_none());
        assert!(message.pids_stats.is_none());
        assert!(message.hugetlb_stats.is_empty());
    }

    #[test]
    fn update_without_resources_is_empty() {
        let request = UpdateContainerRequest {
            container_id: "c1".to_string(),
            ..Default::default()
        };

        assert!(convert_resources(&request).expect("converted").is_none());
    }

    #[test]
    fn update_resources_converted() {
        let mut memory = protocols::oci::LinuxMemory::new();
        memory.Limit = 64 << 20;
        let mut resources = protocols::oci::LinuxResources::new();
        resources.Memory = MessageField::some(memory);
        let request = UpdateContainerRequest {
            container_id: "c1".to_string(),
            resources: MessageField::some(resources),
            ..Default::default()
        };

        let converted = convert_resources(&request)
            .expect("converted")
            .expect("resources present");

        let limit = converted
            .memory()
            .as_ref()
            .and_then(|memory| memory.limit());
        assert_eq!(limit, Some(64 << 20));
    }
}
