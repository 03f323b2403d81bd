//! The benchmark run: each measurement in turn, on one agent where they share it, then
//! the report.
//!
//! Order matters for the memory figures. The reading "after the lifecycles" is taken
//! after sequential lifecycles only. The concurrency runs come later because they grow
//! the agent's thread pool, and the stdio runs too, because their 1 MiB messages grow
//! its heap for reasons that have nothing to do with a leak per container.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::agent::AgentProcess;
use crate::client::{AgentClient, ContainerTemplate};
use crate::crun::{cgroup_layout, time_unshare_wrapper, CgroupLayout, CrunRunner};
use crate::error::{BenchError, Result};
use crate::lifecycle::{container_id, run_concurrent, run_sequential, run_unmeasured, TRUE_ARGS};
use crate::machine::{load_average, now_utc, program_version, Machine};
use crate::report::{MemoryResult, Results};
use crate::stdio::{measure_stdin, measure_stdout};
use crate::work_dir::WorkDir;
use crate::{round_trip, Flags};

/// Concurrency levels measured.
const IN_FLIGHT_LEVELS: [usize; 4] = [1, 4, 16, 64];

/// Release binaries whose size is reported.
const BINARIES: [&str; 2] = ["berth-agent", "berth"];

/// Iteration counts of a full run; `--quick` divides each by ten.
#[derive(Debug, Clone, Copy)]
struct Iterations {
    start_ups: usize,
    pairs: usize,
    unshare_wrappers: usize,
    lifecycles_per_level: usize,
    lifecycles_before_memory: usize,
    stdio_bytes: u64,
    stdio_runs: usize,
    health_calls: usize,
}

impl Iterations {
    const FULL: Iterations = Iterations {
        start_ups: 20,
        pairs: 200,
        unshare_wrappers: 20,
        lifecycles_per_level: 256,
        lifecycles_before_memory: 1000,
        stdio_bytes: 256 * 1024 * 1024,
        stdio_runs: 3,
        health_calls: 10_000,
    };

    fn for_mode(quick: bool) -> Iterations {
        if !quick {
            return Iterations::FULL;
        }

        let tenth = |count: usize| (count / 10).max(1);
        let full = Iterations::FULL;
        Iterations {
            start_ups: tenth(full.start_ups),
            pairs: tenth(full.pairs),
            unshare_wrappers: tenth(full.unshare_wrappers),
            lifecycles_per_level: tenth(full.lifecycles_per_level),
            lifecycles_before_memory: tenth(full.lifecycles_before_memory),
            stdio_bytes: full.stdio_bytes / 10,
            stdio_runs: 1,
            health_calls: tenth(full.health_calls),
        }
    }
}

/// Runs every measurement, prints the report and writes it to `flags.output`.
pub async fn run(flags: &Flags) -> Result<()> {
    let iterations = Iterations::for_mode(flags.quick);
    let load_before = load_average();
    let agent_program = flags.bin_dir.join("berth-agent");
    let work_dir = WorkDir::create()?;
    let template = ContainerTemplate::load(&flags.bundle)?;
    let crun_bundle = write_crun_bundle(&flags.bundle, work_dir.path())?;

    progress(&format!("agent start-up, {} starts", iterations.start_ups));
    let start_up = measure_start_ups(&agent_program, work_dir.path(), iterations.start_ups)?;

    let agent_dir = make_dir(work_dir.path(), "agent")?;
    let agent = AgentProcess::start(&agent_program, &agent_dir)?;
    let client = AgentClient::connect(agent.socket()).await?;
    client.check().await?;
    let mut memory = MemoryResult {
        at_start: agent.reading()?,
        ..MemoryResult::default()
    };
    client.create_sandbox("bench", "berth-bench").await?;
    memory.with_sandbox = agent.reading()?;

    let crun = CrunRunner::start(
        &flags.crun,
        &crun_bundle,
        &make_dir(work_dir.path(), "crun-state")?,
    )?;
    let unshare_wrapper = measure_unshare_wrapper(iterations.unshare_wrappers)?;

    // One unmeasured run of each first, so that one-time work (the agent caching its
    // init binary, crun's first cgroup setup) stays out of the pairs.
    run_unmeasured(&client, &template, "warm", 1).await?;
    memory.after_first = agent.reading()?;
    crun.run(container_id("crun-warm")).await?;

    progress(&format!(
        "lifecycle, {} Berth / crun pairs",
        iterations.pairs
    ));
    let sequential = run_sequential(&client, &template, &crun, iterations.pairs).await?;
    drop(crun);
    let lifecycles = 1 + iterations.pairs;

    // The leak check runs on sequential lifecycles only. The concurrency runs below
    // grow the agent's thread pool to as many threads as containers in flight, and
    // their reading is reported apart.
    let missing = iterations
        .lifecycles_before_memory
        .saturating_sub(lifecycles);
    run_unmeasured(&client, &template, "fill", missing).await?;
    memory.lifecycles = lifecycles + missing;
    memory.after_lifecycles = agent.reading()?;

    let mut concurrency = Vec::new();
    for in_flight in IN_FLIGHT_LEVELS {
        let total = iterations.lifecycles_per_level.max(in_flight);
        progress(&format!(
            "concurrency, {in_flight} in flight, {total} lifecycles"
        ));
        concurrency.push(run_concurrent(&client, &template, in_flight, total).await?);
    }
    memory.after_concurrency = agent.reading()?;

    progress(&format!(
        "stdio, {} runs of {} bytes each way",
        iterations.stdio_runs, iterations.stdio_bytes
    ));
    let (stdout, stdin) = measure_stdio(&client, &template, &flags.busybox, iterations).await?;

    progress(&format!(
        "RPC round trip, {} calls",
        iterations.health_calls
    ));
    let agent_socket = agent.socket().to_path_buf();
    let echo_dir = work_dir.path().to_path_buf();
    let calls = iterations.health_calls;
    let round_trips =
        tokio::task::spawn_blocking(move || round_trip::measure(&agent_socket, &echo_dir, calls))
            .await??;

    client.destroy_sandbox().await?;
    drop(client);
    agent.stop()?;

    let results = Results {
        quick: flags.quick,
        command: flags.command.clone(),
        date: now_utc(),
        machine: Machine::describe(),
        crun_version: program_version(&flags.crun),
        load_before,
        load_after: load_average(),
        start_up,
        sequential,
        unshare_wrapper,
        concurrency,
        memory,
        stdout,
        stdin,
        round_trips,
        sizes: binary_sizes(&flags.bin_dir)?,
    };
    write_report(&results, flags)
}

/// Starts and stops a fresh agent `count` times and returns each start-up time.
fn measure_start_ups(program: &Path, work_dir: &Path, count: usize) -> Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(count);

    for index in 0..count {
        let dir = make_dir(work_dir, &format!("start-{index}"))?;
        let agent = AgentProcess::start(program, &dir)?;
        samples.push(agent.start_up);
        agent.stop()?;
    }
    Ok(samples)
}

/// Times the per-run mount namespace wrapper crun would need on a hybrid layout; on
/// other layouts crun needs none and nothing is measured.
fn measure_unshare_wrapper(count: usize) -> Result<Vec<Duration>> {
    if cgroup_layout() != CgroupLayout::Hybrid {
        return Ok(Vec::new());
    }
    (0..count).map(|_| time_unshare_wrapper()).collect()
}

/// Runs the stdout and stdin measurements in turn, `stdio_runs` times each.
async fn measure_stdio(
    client: &AgentClient,
    template: &ContainerTemplate,
    busybox: &Path,
    iterations: Iterations,
) -> Result<(Vec<crate::stdio::Throughput>, Vec<crate::stdio::Throughput>)> {
    let mut stdout = Vec::new();
    let mut stdin = Vec::new();

    for run in 0..iterations.stdio_runs {
        let bytes = iterations.stdio_bytes;
        stdout.push(
            measure_stdout(
                client,
                template,
                busybox,
                &container_id(&format!("stdout-{run}")),
                bytes,
            )
            .await?,
        );
        stdin.push(
            measure_stdin(
                client,
                template,
                busybox,
                &container_id(&format!("stdin-{run}")),
                bytes,
            )
            .await?,
        );
    }
    Ok((stdout, stdin))
}

/// Writes a copy of the bundle's config.json that runs `/bin/true` on the bundle's
/// root file system, for crun, and returns the new bundle directory.
fn write_crun_bundle(bundle: &Path, work_dir: &Path) -> Result<PathBuf> {
    let config = bundle.join("config.json");
    let text = std::fs::read(&config).map_err(|source| BenchError::Read {
        path: config.clone(),
        source,
    })?;
    let mut spec: Value =
        serde_json::from_slice(&text).map_err(|source| BenchError::ParseSpec {
            path: config.clone(),
            source,
        })?;

    let configured = spec["root"]["path"]
        .as_str()
        .unwrap_or("rootfs")
        .to_string();
    let rootfs = bundle.join(configured);
    let rootfs = std::fs::canonicalize(&rootfs).map_err(|source| BenchError::Read {
        path: rootfs.clone(),
        source,
    })?;
    spec["root"]["path"] = Value::from(rootfs.to_string_lossy().into_owned());
    spec["process"]["args"] = Value::from(TRUE_ARGS.to_vec());

    let crun_bundle = make_dir(work_dir, "crun-bundle")?;
    let crun_config = crun_bundle.join("config.json");
    std::fs::write(&crun_config, spec.to_string()).map_err(|source| BenchError::Write {
        path: crun_config,
        source,
    })?;
    Ok(crun_bundle)
}

fn binary_sizes(bin_dir: &Path) -> Result<Vec<(String, u64)>> {
    BINARIES
        .iter()
        .map(|name| {
            let path = bin_dir.join(name);
            let metadata =
                std::fs::metadata(&path).map_err(|source| BenchError::Read { path, source })?;
            Ok((name.to_string(), metadata.len()))
        })
        .collect()
}

fn write_report(results: &Results, flags: &Flags) -> Result<()> {
    // A missing notes file leaves the report without notes, and a warning is printed.
    let notes = std::fs::read_to_string(&flags.notes).unwrap_or_else(|error| {
        eprintln!(
            "berth-bench: no notes from {}: {error}",
            flags.notes.display()
        );
        String::new()
    });
    let markdown = results.to_markdown(&notes);

    println!("{}", results.to_markdown(""));
    if let Some(parent) = flags
        .output
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|source| BenchError::Write {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    std::fs::write(&flags.output, markdown).map_err(|source| BenchError::Write {
        path: flags.output.clone(),
        source,
    })?;
    progress(&format!("wrote {}", flags.output.display()));
    Ok(())
}

fn make_dir(parent: &Path, name: &str) -> Result<PathBuf> {
    let dir = parent.join(name);
    std::fs::create_dir_all(&dir).map_err(|source| BenchError::Write {
        path: dir.clone(),
        source,
    })?;
    Ok(dir)
}

fn progress(step: &str) {
    eprintln!("berth-bench: {step}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quick_runs_a_tenth() {
        let quick = Iterations::for_mode(true);

        assert_eq!(quick.pairs, 20);
        assert_eq!(quick.health_calls, 1000);
        assert_eq!(quick.lifecycles_before_memory, 100);
        assert_eq!(quick.stdio_bytes, Iterations::FULL.stdio_bytes / 10);
    }

    #[test]
    fn crun_bundle_runs_true_on_absolute_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle");
        std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
        std::fs::write(
            bundle.join("config.json"),
            r#"{"ociVersion":"1.0.2","process":{"args":["sh"],"cwd":"/"},"root":{"path":"rootfs","readonly":true}}"#,
        )
        .unwrap();

        let crun_bundle = write_crun_bundle(&bundle, dir.path()).unwrap();

        let text = std::fs::read_to_string(crun_bundle.join("config.json")).unwrap();
        let spec: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(spec["process"]["args"], serde_json::json!(["/bin/true"]));
        let rootfs = std::fs::canonicalize(bundle.join("rootfs")).unwrap();
        assert_eq!(spec["root"]["path"], rootfs.to_str().unwrap());
        assert_eq!(spec["root"]["readonly"], true);
    }
}
