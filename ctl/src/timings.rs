//! Durations that `berth run --timings` prints: the client-side duration of each RPC,
//! and the agent-side duration of each CreateContainer stage.
//!
//! The Kata agent API has no RPC for stage timings, so the agent publishes them through
//! GetMetrics as Prometheus text lines of the form
//! `berth_container_stage_duration_seconds{container="ID",stage="NAME"} SECONDS`.

use std::io::{self, Write};
use std::time::Duration;

/// Metric that carries one stage duration per line.
const STAGE_METRIC: &str = "berth_container_stage_duration_seconds";

/// A labelled duration: an RPC name or a stage name and how long it took.
pub type Timing = (String, Duration);

/// Returns the stage durations of `container_id` from Prometheus text, in the order of
/// the lines. Lines of other metrics or containers, comments, and lines that do not
/// parse are skipped.
pub fn parse_stage_timings(metrics: &str, container_id: &str) -> Vec<Timing> {
    metrics
        .lines()
        .filter_map(parse_sample)
        .filter(|sample| sample.name == STAGE_METRIC)
        .filter(|sample| sample.label("container") == Some(container_id))
        .filter_map(|sample| {
            let stage = sample.label("stage")?.to_string();
            let duration = Duration::try_from_secs_f64(sample.value).ok()?;
            Some((stage, duration))
        })
        .collect()
}

/// Writes a table of `timings` under `title`, one line per entry with the duration in
/// microseconds.
pub fn print_timings(out: &mut impl Write, title: &str, timings: &[Timing]) -> io::Result<()> {
    let width = timings
        .iter()
        .map(|(name, _)| name.len())
        .max()
        .unwrap_or(0);

    writeln!(out, "{title}")?;
    for (name, duration) in timings {
        writeln!(out, "  {name:<width$}  {:>10} us", duration.as_micros())?;
    }
    Ok(())
}

/// Writes the `--timings` report: the RPC table, then the stage table, or a pointer to
/// the agent log when the agent reported no stages for the container.
pub fn print_report(
    out: &mut impl Write,
    rpcs: &[Timing],
    stages: &[Timing],
    stages_unavailable: Option<&str>,
) -> io::Result<()> {
    print_timings(out, "RPC durations (client side):", rpcs)?;

    if !stages.is_empty() {
        return print_timings(out, "CreateContainer stages (agent side):", stages);
    }

    match stages_unavailable {
        Some(reason) => writeln!(out, "stage timings: not available ({reason})")?,
        None => writeln!(
            out,
            "stage timings: the agent reported none for this container"
        )?,
    }
    writeln!(
        out,
        "stage timings: see agent log (stage=..., duration_us=...)"
    )
}

/// One sample line of the Prometheus text format: `name{labels} value [timestamp]`.
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Sample {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(name, _)| name == key)
            .map(|(_, value)| value.as_str())
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }

    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = line[..name_end].to_string();
    let mut rest = &line[name_end..];

    let mut labels = Vec::new();
    if let Some(after_brace) = rest.strip_prefix('{') {
        let (parsed, after_labels) = parse_labels(after_brace)?;
        labels = parsed;
        rest = after_labels;
    }

    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    Some(Sample {
        name,
        labels,
        value,
    })
}

/// Parses `key="value",...}` and returns the labels and the text after the `}`.
/// Values may contain the escapes `\\`, `\"` and `\n`.
fn parse_labels(text: &str) -> Option<(Vec<(String, String)>, &str)> {
    let mut labels = Vec::new();
    let mut rest = text.trim_start();

    loop {
        if let Some(after) = rest.strip_prefix('}') {
            return Some((labels, after));
        }

        let (key, after_key) = rest.split_once('=')?;
        let (value, after_value) = parse_quoted(after_key.trim_start())?;
        labels.push((key.trim().to_string(), value));

        rest = after_value.trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
}

/// Parses a double-quoted label value and returns it with the text after the quote.
fn parse_quoted(text: &str) -> Option<(String, &str)> {
    let body = text.strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = body.char_indices();

    while let Some((index, c)) = chars.next() {
        match c {
            '"' => return Some((value, &body[index + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                escaped => value.push(escaped),
            },
            other => value.push(other),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const METRICS: &str = "\
# HELP berth_container_stage_duration_seconds Duration of each CreateContainer stage.
# TYPE berth_container_stage_duration_seconds gauge
berth_container_stage_duration_seconds{container=\"c1\",stage=\"pci-rescan\"} 0.000012
berth_container_stage_duration_seconds{container=\"c2\",stage=\"pci-rescan\"} 0.5
berth_container_stage_duration_seconds{container=\"c1\",stage=\"storages\"} 0.25
berth_process_count 3
berth_container_stage_duration_seconds{stage=\"spawn\",container=\"c1\"} 1.5e-3 1712000000000
";

    #[test]
    fn stages_of_one_container_in_line_order() {
        let stages = parse_stage_timings(METRICS, "c1");

        assert_eq!(
            stages,
            vec![
                ("pci-rescan".to_string(), Duration::from_micros(12)),
                ("storages".to_string(), Duration::from_millis(250)),
                ("spawn".to_string(), Duration::from_micros(1500)),
            ]
        );
    }

    #[test]
    fn stages_empty_for_unknown_container() {
        assert!(parse_stage_timings(METRICS, "c3").is_empty());
    }

    #[test]
    fn stage_lines_that_do_not_parse_are_skipped() {
        let metrics = "\
berth_container_stage_duration_seconds{container=\"c1\",stage=\"a\"} not-a-number
berth_container_stage_duration_seconds{container=\"c1\",stage=\"b\"} -1
berth_container_stage_duration_seconds{container=\"c1\",stage=\"c\" 0.1
berth_container_stage_duration_seconds{container=\"c1\"} 0.1
berth_container_stage_duration_seconds{container=\"c1\",stage=\"d\"} 0.000002
";

        let stages = parse_stage_timings(metrics, "c1");

        assert_eq!(stages, vec![("d".to_string(), Duration::from_micros(2))]);
    }

    #[test]
    fn label_values_unescaped() {
        let metrics =
            "berth_container_stage_duration_seconds{container=\"a\\\"b\",stage=\"x\\\\y\"} 1\n";

        let stages = parse_stage_timings(metrics, "a\"b");

        assert_eq!(stages, vec![("x\\y".to_string(), Duration::from_secs(1))]);
    }

    #[test]
    fn report_lists_rpcs_and_stages() {
        let rpcs = vec![("CreateContainer".to_string(), Duration::from_micros(1234))];
        let stages = vec![("spawn".to_string(), Duration::from_micros(56))];
        let mut out = Vec::new();

        print_report(&mut out, &rpcs, &stages, None).unwrap();

        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("CreateContainer"), "{text}");
        assert!(text.contains("1234 us"), "{text}");
        assert!(text.contains("spawn"), "{text}");
        assert!(text.contains("56 us"), "{text}");
        assert!(!text.contains("see agent log"), "{text}");
    }

    #[test]
    fn report_points_to_agent_log_without_stages() {
        let rpcs = vec![("WaitProcess".to_string(), Duration::from_millis(3))];
        let mut out = Vec::new();

        print_report(
            &mut out,
            &rpcs,
            &[],
            Some("GetMetrics failed: UNIMPLEMENTED: GetMetrics"),
        )
        .unwrap();

        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("3000 us"), "{text}");
        assert!(text.contains("UNIMPLEMENTED"), "{text}");
        assert!(
            text.contains("stage timings: see agent log (stage=..., duration_us=...)"),
            "{text}"
        );
    }
}
