//! Container lifecycles through the agent: CreateContainer, StartContainer, WaitProcess
//! and RemoveContainer of `/bin/true`, one at a time beside crun, and many in flight.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::{AgentClient, ContainerTemplate};
use crate::crun::CrunRunner;
use crate::error::{BenchError, Result};
use crate::stats::median_f64;

/// The process every lifecycle container runs.
pub const TRUE_ARGS: &[&str] = &["/bin/true"];

/// Name of the stage that starts the container's init; every other stage is setup.
pub const SPAWN_STAGE: &str = "spawn";

/// Returns a container id unique to this run of the benchmark, `bench<PID>-<name>`.
/// Berth names a container's cgroup `berth/<id>` in hierarchies that the whole machine
/// shares, so ids of two runs at once, or of a run and another tool, must differ.
pub fn container_id(name: &str) -> String {
    format!("bench{}-{name}", std::process::id())
}

/// One Berth lifecycle and the crun run interleaved after it.
#[derive(Debug, Clone)]
pub struct Pair {
    pub berth: Duration,
    pub crun: Duration,
    /// Stage durations the agent reported for the Berth container, in its order.
    pub stages: Vec<(String, Duration)>,
}

/// Results of the interleaved Berth and crun runs.
#[derive(Debug, Clone, Default)]
pub struct SequentialResult {
    pub pairs: Vec<Pair>,
}

impl SequentialResult {
    pub fn berth(&self) -> Vec<Duration> {
        self.pairs.iter().map(|pair| pair.berth).collect()
    }

    pub fn crun(&self) -> Vec<Duration> {
        self.pairs.iter().map(|pair| pair.crun).collect()
    }

    /// Median over the pairs of Berth's time divided by crun's.
    pub fn median_ratio(&self) -> Option<f64> {
        let ratios: Vec<f64> = self
            .pairs
            .iter()
            .map(|pair| pair.berth.as_secs_f64() / pair.crun.as_secs_f64())
            .collect();
        median_f64(&ratios)
    }

    /// Per stage name, in the agent's order, the durations of every Berth run.
    pub fn stage_samples(&self) -> Vec<(String, Vec<Duration>)> {
        let mut order: Vec<String> = Vec::new();
        let mut samples: BTreeMap<String, Vec<Duration>> = BTreeMap::new();

        for pair in &self.pairs {
            for (stage, duration) in &pair.stages {
                if !samples.contains_key(stage) {
                    order.push(stage.clone());
                }
                samples.entry(stage.clone()).or_default().push(*duration);
            }
        }

        order
            .into_iter()
            .map(|stage| {
                let durations = samples.remove(&stage).unwrap_or_default();
                (stage, durations)
            })
            .collect()
    }

    /// Per Berth run, the sum of every stage except spawn.
    pub fn setup_stage_totals(&self) -> Vec<Duration> {
        self.pairs
            .iter()
            .map(|pair| {
                pair.stages
                    .iter()
                    .filter(|(stage, _)| stage != SPAWN_STAGE)
                    .map(|(_, duration)| *duration)
                    .sum()
            })
            .collect()
    }
}

/// Throughput and latencies at one concurrency level.
#[derive(Debug, Clone)]
pub struct ConcurrencyResult {
    pub in_flight: usize,
    pub lifecycles: usize,
    pub wall: Duration,
    pub latencies: Vec<Duration>,
}

impl ConcurrencyResult {
    pub fn per_second(&self) -> f64 {
        self.lifecycles as f64 / self.wall.as_secs_f64()
    }
}

/// Runs `count` Berth lifecycles, each followed by one `crun run` of the same bundle,
/// so both see the same machine load. Stage timings are read with GetMetrics between
/// CreateContainer and StartContainer, outside the measured time.
pub async fn run_sequential(
    client: &AgentClient,
    template: &ContainerTemplate,
    crun: &CrunRunner,
    count: usize,
) -> Result<SequentialResult> {
    let mut result = SequentialResult::default();

    for index in 0..count {
        let id = container_id(&format!("seq-{index}"));
        let request = template.request(&id, TRUE_ARGS);

        let started = Instant::now();
        client.create_container(&request).await?;
        let create = started.elapsed();

        let metrics = client.metrics().await?;
        let stages = parse_stage_timings(&metrics, &id);

        let started = Instant::now();
        finish_lifecycle(client, &id).await?;
        let berth = create + started.elapsed();

        let crun = crun.run(container_id(&format!("crun-{index}"))).await?;
        result.pairs.push(Pair {
            berth,
            crun,
            stages,
        });
    }

    Ok(result)
}

/// Runs `total` lifecycles with `in_flight` of them running at any time.
pub async fn run_concurrent(
    client: &AgentClient,
    template: &ContainerTemplate,
    in_flight: usize,
    total: usize,
) -> Result<ConcurrencyResult> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();

    let mut workers = Vec::with_capacity(in_flight);
    for _ in 0..in_flight {
        let client = client.clone();
        let template = template.clone();
        let next = next.clone();
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    return Ok::<_, BenchError>(latencies);
                }
                let id = container_id(&format!("par{in_flight}-{index}"));
                let request = template.request(&id, TRUE_ARGS);

                let lifecycle_started = Instant::now();
                client.create_container(&request).await?;
                finish_lifecycle(&client, &id).await?;
                latencies.push(lifecycle_started.elapsed());
            }
        }));
    }

    let mut latencies = Vec::with_capacity(total);
    for worker in workers {
        latencies.extend(worker.await??);
    }

    Ok(ConcurrencyResult {
        in_flight,
        lifecycles: total,
        wall: started.elapsed(),
        latencies,
    })
}

/// Runs `count` lifecycles one after the other without measuring them.
pub async fn run_unmeasured(
    client: &AgentClient,
    template: &ContainerTemplate,
    prefix: &str,
    count: usize,
) -> Result<()> {
    for index in 0..count {
        let id = container_id(&format!("{prefix}-{index}"));
        client
            .create_container(&template.request(&id, TRUE_ARGS))
            .await?;
        finish_lifecycle(client, &id).await?;
    }
    Ok(())
}

/// StartContainer, WaitProcess and RemoveContainer of a created container; fails when
/// the process exits with anything but 0.
async fn finish_lifecycle(client: &AgentClient, id: &str) -> Result<()> {
    client.start_container(id).await?;

    let status = client.wait_process(id).await?;

    client.remove_container(id).await?;
    if status != 0 {
        return Err(BenchError::ContainerStatus {
            container: id.to_string(),
            status,
        });
    }
    Ok(())
}

/// Extracts `(stage, duration)` of `container` from the agent's GetMetrics text, lines
/// of the form `berth_container_stage_duration_seconds{container="ID",stage="NAME"} SECONDS`.
pub fn parse_stage_timings(metrics: &str, container: &str) -> Vec<(String, Duration)> {
    let prefix =
        format!("berth_container_stage_duration_seconds{{container=\"{container}\",stage=\"");

    metrics
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix(&prefix)?;
            let (stage, value) = rest.split_once("\"}")?;
            let seconds: f64 = value.trim().parse().ok()?;
            let duration = Duration::try_from_secs_f64(seconds).ok()?;
            Some((stage.to_string(), duration))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "\
# TYPE berth_container_stage_duration_seconds gauge
berth_container_stage_duration_seconds{container=\"seq-1\",stage=\"pci-rescan\"} 0.000200
berth_container_stage_duration_seconds{container=\"seq-10\",stage=\"pci-rescan\"} 0.000900
berth_container_stage_duration_seconds{container=\"seq-1\",stage=\"spawn\"} 0.013000
berth_containers 2
";

    #[test]
    fn stage_timings_of_one_container() {
        let stages = parse_stage_timings(METRICS, "seq-1");

        assert_eq!(
            stages,
            [
                ("pci-rescan".to_string(), Duration::from_micros(200)),
                ("spawn".to_string(), Duration::from_millis(13)),
            ]
        );
    }

    #[test]
    fn container_id_is_valid_and_per_run() {
        let id = container_id("seq-1");

        assert_eq!(id, format!("bench{}-seq-1", std::process::id()));
        assert!(
            id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "{id}"
        );
    }

    #[test]
    fn stage_timings_of_unknown_container_empty() {
        assert!(parse_stage_timings(METRICS, "seq-2").is_empty());
    }

    fn pair(berth_ms: u64, crun_ms: u64, stages: &[(&str, u64)]) -> Pair {
        Pair {
            berth: Duration::from_millis(berth_ms),
            crun: Duration::from_millis(crun_ms),
            stages: stages
                .iter()
                .map(|(name, us)| (name.to_string(), Duration::from_micros(*us)))
                .collect(),
        }
    }

    #[test]
    fn median_ratio_is_per_pair() {
        let result = SequentialResult {
            pairs: vec![pair(10, 20, &[]), pair(30, 10, &[]), pair(10, 10, &[])],
        };

        assert_eq!(result.median_ratio(), Some(1.0));
    }

    #[test]
    fn setup_total_leaves_out_spawn() {
        let result = SequentialResult {
            pairs: vec![pair(
                1,
                1,
                &[("hooks", 100), ("spawn", 9000), ("devices", 5)],
            )],
        };

        assert_eq!(result.setup_stage_totals(), [Duration::from_micros(105)]);
    }

    #[test]
    fn stage_samples_keep_agent_order() {
        let result = SequentialResult {
            pairs: vec![
                pair(1, 1, &[("pci-rescan", 1), ("spawn", 2)]),
                pair(1, 1, &[("pci-rescan", 3), ("spawn", 4)]),
            ],
        };

        let samples = result.stage_samples();

        assert_eq!(samples[0].0, "pci-rescan");
        assert_eq!(
            samples[0].1,
            [Duration::from_micros(1), Duration::from_micros(3)]
        );
        assert_eq!(samples[1].0, "spawn");
    }
}
