//! GetMetrics: per-stage CreateContainer durations in the Prometheus text format.

use std::fmt::Write;
use std::sync::Arc;

use protocols::agent::Metrics;

use super::Agent;
use crate::error::AgentError;

/// Renders one duration line per CreateContainer stage of each existing container,
/// then the container count. Containers and stages appear in a stable order.
pub async fn get_metrics(agent: Arc<Agent>) -> Result<Metrics, AgentError> {
    let handles: Vec<_> = {
        let sandbox = agent.sandbox.lock().await;
        let mut handles: Vec<_> = sandbox
            .containers
            .iter()
            .map(|(id, handle)| (id.clone(), handle.clone()))
            .collect();
        handles.sort_by(|a, b| a.0.cmp(&b.0));
        handles
    };

    let mut text = String::new();
    text.push_str(
        "# HELP berth_container_stage_duration_seconds Duration of each CreateContainer stage.\n",
    );
    text.push_str("# TYPE berth_container_stage_duration_seconds gauge\n");

    let mut count = 0;
    for (id, handle) in handles {
        let container = handle.lock().await;
        if container.removed {
            continue;
        }
        count += 1;

        for (stage, duration) in &container.timings {
            let _ = writeln!(
                text,
                "berth_container_stage_duration_seconds{{container=\"{id}\",stage=\"{stage}\"}} {:.6}",
                duration.as_secs_f64()
            );
        }
    }

    text.push_str("# HELP berth_containers Number of containers in the sandbox.\n");
    text.push_str("# TYPE berth_containers gauge\n");
    let _ = writeln!(text, "berth_containers {count}");

    let mut metrics = Metrics::new();
    metrics.metrics = text;
    Ok(metrics)
}
