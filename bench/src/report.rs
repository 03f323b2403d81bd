//! The results of one benchmark run, the targets checked against them, and the
//! Markdown report printed to the terminal and written to docs/benchmarks.md.

use std::fmt::Write;
use std::time::Duration;

use crate::agent::{ProcessReading, LOG_LEVEL};
use crate::lifecycle::{ConcurrencyResult, SequentialResult};
use crate::machine::Machine;
use crate::round_trip::RoundTrips;
use crate::stats::{median_f64, Summary};
use crate::stdio::Throughput;

/// Agent memory and descriptors at the moments the report compares.
#[derive(Debug, Clone, Copy, Default)]
pub struct MemoryResult {
    /// Right after the agent accepted the benchmark's connection.
    pub at_start: ProcessReading,
    /// After CreateSandbox, before any container.
    pub with_sandbox: ProcessReading,
    /// After the first container was created and removed.
    pub after_first: ProcessReading,
    /// After `lifecycles` containers were created and removed one at a time.
    pub after_lifecycles: ProcessReading,
    pub lifecycles: usize,
    /// After the concurrency runs.
    pub after_concurrency: ProcessReading,
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct Results {
    pub quick: bool,
    pub command: String,
    pub date: String,
    pub machine: Machine,
    pub crun_version: String,
    /// Load averages of the machine when the run started and when it ended.
    pub load_before: String,
    pub load_after: String,
    pub start_up: Vec<Duration>,
    pub sequential: SequentialResult,
    pub unshare_wrapper: Vec<Duration>,
    pub concurrency: Vec<ConcurrencyResult>,
    pub memory: MemoryResult,
    pub stdout: Vec<Throughput>,
    pub stdin: Vec<Throughput>,
    pub round_trips: RoundTrips,
    /// Size in bytes of each release binary, by name.
    pub sizes: Vec<(String, u64)>,
}

/// A performance target and whether this run met it.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub name: &'static str,
    pub limit: &'static str,
    pub measured: String,
    pub met: bool,
}

impl Results {
    /// Checks every target against the measured numbers.
    pub fn targets(&self) -> Vec<Target> {
        let ratio = self.sequential.median_ratio().unwrap_or(f64::NAN);
        let setup = Summary::of(&self.sequential.setup_stage_totals()).median;
        let scaling = self.scaling(16).unwrap_or(f64::NAN);
        let memory = &self.memory;
        let rss_growth_kib =
            memory.after_lifecycles.rss_kib as i64 - memory.at_start.rss_kib as i64;
        let stdout = median_ratio(&self.stdout).unwrap_or(f64::NAN);
        let stdin = median_ratio(&self.stdin).unwrap_or(f64::NAN);
        let health = Summary::of(&self.round_trips.health).median;
        let echo = Summary::of(&self.round_trips.echo).median;
        let health_factor = health.as_secs_f64() / echo.as_secs_f64();
        let start_up = Summary::of(&self.start_up).median;

        vec![
            Target {
                name: "lifecycle, median Berth / crun",
                limit: "<= 1.0",
                measured: format!("{ratio:.2}"),
                met: ratio <= 1.0,
            },
            Target {
                name: "stages before spawn, median of their sum",
                limit: "< 300 us",
                measured: micros(setup),
                met: setup < Duration::from_micros(300),
            },
            Target {
                name: "throughput at 16 in flight / at 1",
                limit: ">= 1.6",
                measured: format!("{scaling:.2}"),
                met: scaling >= 1.6,
            },
            Target {
                name: "idle RSS",
                limit: "<= 6 MiB",
                measured: kib(memory.at_start.rss_kib),
                met: memory.at_start.rss_kib <= 6 * 1024,
            },
            Target {
                name: "RSS growth after the sequential lifecycles",
                limit: "<= 1 MiB",
                measured: format!("{rss_growth_kib} KiB after {}", memory.lifecycles),
                met: rss_growth_kib <= 1024,
            },
            Target {
                name: "open descriptors after the lifecycles",
                limit: "= at start",
                measured: format!(
                    "{} (at start {})",
                    memory.after_lifecycles.open_fds, memory.at_start.open_fds
                ),
                met: memory.after_lifecycles.open_fds == memory.at_start.open_fds,
            },
            Target {
                name: "ReadStdout / plain pipe throughput",
                limit: ">= 0.5",
                measured: format!("{stdout:.2}"),
                met: stdout >= 0.5,
            },
            Target {
                name: "WriteStdin / plain pipe throughput",
                limit: ">= 0.5",
                measured: format!("{stdin:.2}"),
                met: stdin >= 0.5,
            },
            Target {
                name: "Health.Check median / echo median",
                limit: "<= 3.0",
                measured: format!("{health_factor:.2}"),
                met: health_factor <= 3.0,
            },
            Target {
                name: "agent start-up, median",
                limit: "< 20 ms",
                measured: millis(start_up),
                met: start_up < Duration::from_millis(20),
            },
        ]
    }

    /// Throughput at `in_flight` divided by throughput at 1.
    fn scaling(&self, in_flight: usize) -> Option<f64> {
        let at = |level: usize| {
            self.concurrency
                .iter()
                .find(|result| result.in_flight == level)
                .map(ConcurrencyResult::per_second)
        };
        Some(at(in_flight)? / at(1)?)
    }

    /// Renders the report as Markdown; `notes` is appended verbatim.
    pub fn to_markdown(&self, notes: &str) -> String {
        let mut out = String::new();
        self.write_header(&mut out);
        self.write_targets(&mut out);
        self.write_lifecycle(&mut out);
        self.write_concurrency(&mut out);
        self.write_memory(&mut out);
        self.write_stdio(&mut out);
        self.write_round_trip(&mut out);
        self.write_sizes(&mut out);

        if !notes.trim().is_empty() {
            out.push('\n');
            out.push_str(notes.trim_end());
            out.push('\n');
        }
        out
    }

    fn write_header(&self, out: &mut String) {
        let machine = &self.machine;
        let mode = if self.quick {
            "quick (a tenth of the iterations, a smoke check only)"
        } else {
            "full"
        };

        let _ = writeln!(out, "# Benchmarks\n");
        let _ = writeln!(
            out,
            "`make bench` writes this file; a run replaces everything above the notes at \
             the end, which come from `bench/notes.md`.\n"
        );
        let _ = writeln!(out, "| | |\n|---|---|");
        let _ = writeln!(out, "| date | {} |", self.date);
        let _ = writeln!(out, "| command | `{}` |", self.command);
        let _ = writeln!(out, "| mode | {mode} |");
        let _ = writeln!(out, "| CPU | {} |", machine.cpu_model);
        let _ = writeln!(out, "| cores | {} |", machine.cores);
        let _ = writeln!(out, "| kernel | {} |", machine.kernel);
        let _ = writeln!(out, "| cgroups | {} |", machine.cgroups.describe());
        let _ = writeln!(
            out,
            "| load average (1, 5, 15 min) | {} at start, {} at end |",
            self.load_before, self.load_after
        );
        let _ = writeln!(out, "| crun | {} |", self.crun_version);
        let _ = writeln!(
            out,
            "| agent | release build, `--isolate --log-level {LOG_LEVEL}`, unix socket |"
        );
    }

    fn write_targets(&self, out: &mut String) {
        let _ = writeln!(out, "\n## Targets\n");
        let _ = writeln!(
            out,
            "| target | limit | measured | met |\n|---|---|---|---|"
        );
        for target in self.targets() {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} |",
                target.name,
                target.limit,
                target.measured,
                if target.met { "yes" } else { "**no**" }
            );
        }
    }

    fn write_lifecycle(&self, out: &mut String) {
        let berth = Summary::of(&self.sequential.berth());
        let crun = Summary::of(&self.sequential.crun());
        let wrapper = Summary::of(&self.unshare_wrapper);

        let _ = writeln!(out, "\n## Lifecycle of `/bin/true`\n");
        let _ = writeln!(
            out,
            "Berth: CreateContainer, StartContainer, WaitProcess and RemoveContainer over one \
             ttRPC connection. crun: `crun run` of the same bundle. The runs alternate, one \
             Berth then one crun, {} pairs.\n",
            berth.count
        );
        let _ = writeln!(out, "| | median | p90 | p99 |\n|---|---|---|---|");
        let _ = writeln!(
            out,
            "| Berth | {} | {} | {} |",
            millis(berth.median),
            millis(berth.p90),
            millis(berth.p99)
        );
        let _ = writeln!(
            out,
            "| crun | {} | {} | {} |",
            millis(crun.median),
            millis(crun.p90),
            millis(crun.p99)
        );
        let _ = writeln!(
            out,
            "\nMedian of the per-pair ratio Berth / crun: **{:.2}**.\n",
            self.sequential.median_ratio().unwrap_or(f64::NAN)
        );
        if wrapper.count > 0 {
            let _ = writeln!(
                out,
                "crun 1.8 rejects this machine's hybrid cgroup layout, so every crun runs from \
                 one thread of the benchmark that entered a private mount namespace once and \
                 unmounted `/sys/fs/cgroup/unified` there. crun's time is its own fork, exec and \
                 run. Making that namespace per run, with `unshare -m --propagation private sh \
                 -c 'umount /sys/fs/cgroup/unified'`, would add a median of {} (p99 {}) to each \
                 crun run; that cost is left out of the ratio.\n",
                millis(wrapper.median),
                millis(wrapper.p99)
            );
        } else {
            let _ = writeln!(
                out,
                "crun's time is its own fork, exec and run, started from a thread of the \
                 benchmark in a private mount namespace. This cgroup layout needed no unmount \
                 there.\n"
            );
        }

        let _ = writeln!(
            out,
            "Stages of CreateContainer, from the agent's own timings (GetMetrics):\n"
        );
        let _ = writeln!(out, "| stage | median | p99 |\n|---|---|---|");
        for (stage, samples) in self.sequential.stage_samples() {
            let summary = Summary::of(&samples);
            let _ = writeln!(
                out,
                "| {stage} | {} | {} |",
                micros(summary.median),
                micros(summary.p99)
            );
        }
        let setup = Summary::of(&self.sequential.setup_stage_totals());
        let _ = writeln!(
            out,
            "| all but spawn, summed per run | {} | {} |",
            micros(setup.median),
            micros(setup.p99)
        );
    }

    fn write_concurrency(&self, out: &mut String) {
        let _ = writeln!(out, "\n## Concurrency\n");
        let _ = writeln!(
            out,
            "The same lifecycle with N in flight at once on one connection.\n"
        );
        let _ = writeln!(
            out,
            "| in flight | lifecycles | containers/s | median | p99 |\n|---|---|---|---|---|"
        );
        for result in &self.concurrency {
            let summary = Summary::of(&result.latencies);
            let _ = writeln!(
                out,
                "| {} | {} | {:.1} | {} | {} |",
                result.in_flight,
                result.lifecycles,
                result.per_second(),
                millis(summary.median),
                millis(summary.p99)
            );
        }
    }

    fn write_memory(&self, out: &mut String) {
        let memory = &self.memory;
        let _ = writeln!(out, "\n## Agent memory and descriptors\n");
        let _ = writeln!(
            out,
            "RSS is VmRSS of /proc/PID/status, split into its anonymous part (heap, stacks) \
             and its file-backed part (pages of the binary and libraries, read in on first \
             use). The lifecycles here run one at a time; the concurrency runs come after.\n"
        );
        let _ = writeln!(
            out,
            "| moment | RSS | anonymous | file-backed | peak RSS | threads | open descriptors |\n\
             |---|---|---|---|---|---|---|"
        );
        for (moment, reading) in [
            ("right after start".to_string(), memory.at_start),
            ("after CreateSandbox".to_string(), memory.with_sandbox),
            ("after the first lifecycle".to_string(), memory.after_first),
            (
                format!("after {} lifecycles", memory.lifecycles),
                memory.after_lifecycles,
            ),
            (
                "after the concurrency runs".to_string(),
                memory.after_concurrency,
            ),
        ] {
            let _ = writeln!(
                out,
                "| {moment} | {} | {} | {} | {} | {} | {} |",
                kib(reading.rss_kib),
                kib(reading.rss_anon_kib),
                kib(reading.rss_file_kib),
                kib(reading.peak_rss_kib),
                reading.threads,
                reading.open_fds
            );
        }
    }

    fn write_stdio(&self, out: &mut String) {
        let _ = writeln!(out, "\n## Stdio throughput\n");
        let _ = writeln!(
            out,
            "ReadStdout: a container runs `head -c BYTES /dev/zero`, read from StartContainer \
             to end of file. WriteStdin: BYTES pushed in 1 MiB writes into `wc -c`, from the \
             first write until WaitProcess returns. Plain pipe: `busybox head -c BYTES \
             /dev/zero | busybox cat >/dev/null` on the machine, run right after each \
             measurement. The ratio is Berth's throughput over the pipe's, median of the runs.\n"
        );
        let _ = writeln!(
            out,
            "| direction | bytes | runs | Berth MiB/s | pipe MiB/s | ratio |\n|---|---|---|---|---|---|"
        );
        for (direction, runs) in [("ReadStdout", &self.stdout), ("WriteStdin", &self.stdin)] {
            let Some(first) = runs.first() else { continue };
            let berth: Vec<f64> = runs.iter().map(Throughput::berth_mib_per_sec).collect();
            let pipe: Vec<f64> = runs.iter().map(Throughput::pipe_mib_per_sec).collect();
            let _ = writeln!(
                out,
                "| {direction} | {} | {} | {:.0} | {:.0} | {:.2} |",
                first.bytes,
                runs.len(),
                median_f64(&berth).unwrap_or(f64::NAN),
                median_f64(&pipe).unwrap_or(f64::NAN),
                median_ratio(runs).unwrap_or(f64::NAN)
            );
        }
    }

    fn write_round_trip(&self, out: &mut String) {
        let health = Summary::of(&self.round_trips.health);
        let echo = Summary::of(&self.round_trips.echo);
        let start_up = Summary::of(&self.start_up);

        let _ = writeln!(out, "\n## RPC round trip and start-up\n");
        let _ = writeln!(out, "| | calls | median | p99 |\n|---|---|---|---|");
        let _ = writeln!(
            out,
            "| Health.Check | {} | {} | {} |",
            health.count,
            micros(health.median),
            micros(health.p99)
        );
        let _ = writeln!(
            out,
            "| unix-socket echo, {}-byte message | {} | {} | {} |",
            crate::round_trip::ECHO_MESSAGE_LEN,
            echo.count,
            micros(echo.median),
            micros(echo.p99)
        );
        let _ = writeln!(
            out,
            "\nAgent start-up, from spawning `berth-agent` until a connection to its socket \
             succeeds, over {} starts: median {}, slowest {}.",
            start_up.count,
            millis(start_up.median),
            millis(start_up.max)
        );
    }

    fn write_sizes(&self, out: &mut String) {
        let _ = writeln!(out, "\n## Release binaries (stripped)\n");
        let _ = writeln!(out, "| binary | bytes | MiB |\n|---|---|---|");
        for (name, bytes) in &self.sizes {
            let _ = writeln!(
                out,
                "| {name} | {bytes} | {:.2} |",
                *bytes as f64 / (1024.0 * 1024.0)
            );
        }
    }
}

/// Median over the runs of Berth's throughput as a fraction of the pipe's.
fn median_ratio(runs: &[Throughput]) -> Option<f64> {
    let ratios: Vec<f64> = runs.iter().map(Throughput::ratio).collect();
    median_f64(&ratios)
}

fn micros(duration: Duration) -> String {
    format!("{} us", duration.as_micros())
}

fn millis(duration: Duration) -> String {
    format!("{:.2} ms", duration.as_secs_f64() * 1000.0)
}

fn kib(value: u64) -> String {
    format!("{:.2} MiB", value as f64 / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crun::CgroupLayout;
    use crate::lifecycle::Pair;

    fn reading(rss_kib: u64, open_fds: usize) -> ProcessReading {
        ProcessReading {
            rss_kib,
            peak_rss_kib: rss_kib,
            rss_anon_kib: rss_kib / 2,
            rss_file_kib: rss_kib / 2,
            threads: 3,
            open_fds,
        }
    }

    fn concurrency(in_flight: usize, wall_ms: u64) -> ConcurrencyResult {
        ConcurrencyResult {
            in_flight,
            lifecycles: 100,
            wall: Duration::from_millis(wall_ms),
            latencies: vec![Duration::from_millis(5); 100],
        }
    }

    /// Results that meet every target except those the test changes.
    fn passing_results() -> Results {
        let stages = vec![
            ("hooks".to_string(), Duration::from_micros(100)),
            ("spawn".to_string(), Duration::from_millis(5)),
        ];
        let pair = Pair {
            berth: Duration::from_millis(8),
            crun: Duration::from_millis(10),
            stages,
        };
        let throughput = Throughput {
            bytes: 1024,
            berth: Duration::from_millis(15),
            pipe: Duration::from_millis(10),
        };

        Results {
            quick: false,
            command: "make bench".to_string(),
            date: "2026-01-01 00:00:00 UTC".to_string(),
            machine: Machine {
                cpu_model: "test CPU".to_string(),
                cores: 2,
                kernel: "6.1".to_string(),
                cgroups: CgroupLayout::Unified,
            },
            crun_version: "crun version 1.8.1".to_string(),
            load_before: "0.10 0.20 0.30".to_string(),
            load_after: "1.00 0.50 0.40".to_string(),
            start_up: vec![Duration::from_millis(5)],
            sequential: SequentialResult { pairs: vec![pair] },
            unshare_wrapper: Vec::new(),
            concurrency: vec![concurrency(1, 1000), concurrency(16, 500)],
            memory: MemoryResult {
                at_start: reading(5000, 12),
                with_sandbox: reading(5200, 12),
                after_first: reading(5300, 12),
                after_lifecycles: reading(5500, 12),
                lifecycles: 1000,
                after_concurrency: reading(9000, 12),
            },
            stdout: vec![throughput],
            stdin: vec![throughput],
            round_trips: RoundTrips {
                health: vec![Duration::from_micros(30)],
                echo: vec![Duration::from_micros(15)],
            },
            sizes: vec![("berth-agent".to_string(), 1024 * 1024)],
        }
    }

    fn unmet(results: &Results) -> Vec<&'static str> {
        results
            .targets()
            .into_iter()
            .filter(|target| !target.met)
            .map(|target| target.name)
            .collect()
    }

    #[test]
    fn targets_all_met() {
        assert_eq!(unmet(&passing_results()), Vec::<&str>::new());
    }

    #[test]
    fn targets_flag_slow_lifecycle() {
        let mut results = passing_results();
        results.sequential.pairs[0].berth = Duration::from_millis(11);

        assert_eq!(unmet(&results), ["lifecycle, median Berth / crun"]);
    }

    #[test]
    fn targets_flag_poor_scaling() {
        let mut results = passing_results();
        results.concurrency[1].wall = Duration::from_millis(700);

        assert_eq!(unmet(&results), ["throughput at 16 in flight / at 1"]);
    }

    #[test]
    fn targets_flag_descriptor_leak() {
        let mut results = passing_results();
        results.memory.after_lifecycles.open_fds = 13;

        assert_eq!(unmet(&results), ["open descriptors after the lifecycles"]);
    }

    #[test]
    fn targets_flag_rss_growth() {
        let mut results = passing_results();
        results.memory.after_lifecycles.rss_kib = 5000 + 1025;

        assert_eq!(
            unmet(&results),
            ["RSS growth after the sequential lifecycles"]
        );
    }

    #[test]
    fn targets_flag_slow_health_check() {
        let mut results = passing_results();
        results.round_trips.health = vec![Duration::from_micros(46)];

        assert_eq!(unmet(&results), ["Health.Check median / echo median"]);
    }

    #[test]
    fn markdown_has_sections_and_notes() {
        let markdown = passing_results().to_markdown("## Notes\n\nprofile text\n");

        for heading in [
            "# Benchmarks",
            "## Targets",
            "## Lifecycle of `/bin/true`",
            "## Concurrency",
            "## Agent memory and descriptors",
            "## Stdio throughput",
            "## RPC round trip and start-up",
            "## Release binaries (stripped)",
        ] {
            assert!(markdown.contains(heading), "missing {heading}");
        }
        assert!(markdown.contains("| hooks | 100 us |"), "{markdown}");
        assert!(markdown.ends_with("profile text\n"), "{markdown}");
    }
}
