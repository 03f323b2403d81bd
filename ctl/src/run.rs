//! `berth run`: the whole life of one container, from CreateSandbox to RemoveContainer.
//!
//! Once CreateContainer succeeds, every path out of [`run`] tries RemoveContainer, so an
//! error or a signal does not leave the container behind in the agent.

use std::future::Future;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use oci_spec::runtime::Spec;
use protobuf::MessageField;
use protocols::agent::{CreateContainerRequest, CreateSandboxRequest};
use tokio::task::JoinHandle;

use crate::bundle::{generate_id, load_bundle, load_guest_bundle};
use crate::cli::RunArgs;
use crate::client::{Agent, OutputStream};
use crate::error::{rpc_code, Error, Result};
use crate::signals::CaughtSignals;
use crate::stdio::{spawn_output_copy, spawn_stdin_copy, ProcessRef};
use crate::timings::{parse_stage_timings, print_report, Timing};

/// How long the output streams may take to reach their end after the process exited.
/// A process that the container's init left running can hold the pipes open. Past
/// this limit the rest of its output is dropped and the container removed.
const OUTPUT_DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Time the agent gets to kill the container's processes in RemoveContainer.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the bundle described by `args` and returns the container's exit status, which
/// the agent reports as 128 + the signal number for a process killed by a signal.
pub async fn run(agent: &Agent, args: RunArgs) -> Result<i32> {
    let spec = match &args.guest_bundle {
        Some(guest_bundle) => load_guest_bundle(&args.bundle, guest_bundle, &args.args)?,
        None => load_bundle(&args.bundle, &args.args)?,
    };
    let container_id = args.id.clone().unwrap_or_else(generate_id);
    let request = create_container_request(&container_id, &spec);
    let mut signals = CaughtSignals::install()?;
    let mut rpcs: Vec<Timing> = Vec::new();

    let hostname = spec.hostname().clone().unwrap_or_default();
    timed(
        &mut rpcs,
        "CreateSandbox",
        ensure_sandbox(agent, &container_id, &hostname),
    )
    .await?;

    timed(
        &mut rpcs,
        "CreateContainer",
        agent.create_container(&request),
    )
    .await?;
    let process = ProcessRef {
        container_id: container_id.clone(),
        exec_id: container_id.clone(),
    };

    let (stages, stages_unavailable) = if args.timings {
        fetch_stage_timings(agent, &container_id, &mut rpcs).await
    } else {
        (Vec::new(), None)
    };

    // A signal that arrived while the container was being created stops the run
    // before the container's process starts.
    if let Some(signal) = signals.take_pending().await {
        remove_after_failure(agent, &container_id).await;
        return Ok(128 + signal as i32);
    }

    if let Err(error) = timed(
        &mut rpcs,
        "StartContainer",
        agent.start_container(&container_id),
    )
    .await
    {
        remove_after_failure(agent, &container_id).await;
        return Err(error);
    }

    let stdout = spawn_output_copy(agent.clone(), process.clone(), OutputStream::Stdout);
    let stderr = spawn_output_copy(agent.clone(), process.clone(), OutputStream::Stderr);
    let stdin = forward_stdin(agent, &process, args.interactive).await;

    let waited = timed(
        &mut rpcs,
        "WaitProcess",
        wait_forwarding_signals(agent, &process, &mut signals),
    )
    .await;

    drain_output(stdout, stderr).await;
    if let Some(stdin) = stdin {
        stdin.abort();
    }

    let removed = timed(
        &mut rpcs,
        "RemoveContainer",
        agent.remove_container(&container_id, REMOVE_TIMEOUT),
    )
    .await;

    if args.timings {
        let mut out = std::io::stderr().lock();
        // Failing to print timings must not change the container's exit status.
        let _ = print_report(&mut out, &rpcs, &stages, stages_unavailable.as_deref());
    }

    let status = waited?;
    if let Err(error) = removed {
        warn(&error);
    }
    Ok(status)
}

/// Builds the CreateContainer request: the spec in the agent's protobuf form, with the
/// container's main process registered under the container id as its exec id, as
/// Kata shims do.
pub fn create_container_request(container_id: &str, spec: &Spec) -> CreateContainerRequest {
    let mut request = CreateContainerRequest::new();
    request.container_id = container_id.to_string();
    request.exec_id = container_id.to_string();
    request.OCI = MessageField::some(protocols::spec_from_oci(spec));
    request
}

/// Creates the sandbox, named after the container, unless the agent already has one.
async fn ensure_sandbox(agent: &Agent, sandbox_id: &str, hostname: &str) -> Result<()> {
    let mut request = CreateSandboxRequest::new();
    request.sandbox_id = sandbox_id.to_string();
    request.hostname = hostname.to_string();

    match agent.create_sandbox(&request).await {
        Err(Error::Rpc { source, .. })
            if rpc_code(&source) == Some(ttrpc::Code::ALREADY_EXISTS) =>
        {
            Ok(())
        }
        other => other,
    }
}

/// Asks the agent for the stage durations of the new container. Returns the stages,
/// or the reason they are missing.
async fn fetch_stage_timings(
    agent: &Agent,
    container_id: &str,
    rpcs: &mut Vec<Timing>,
) -> (Vec<Timing>, Option<String>) {
    match timed(rpcs, "GetMetrics", agent.metrics()).await {
        Ok(metrics) => (parse_stage_timings(&metrics, container_id), None),
        Err(error) => (Vec::new(), Some(error.to_string())),
    }
}

/// Forwards stdin when it is not a terminal, or when `interactive` is set. Otherwise
/// the terminal is not read, so a container started from a shell does not take the
/// shell's input. Its stdin is then closed at once, so a reader sees its end.
async fn forward_stdin(
    agent: &Agent,
    process: &ProcessRef,
    interactive: bool,
) -> Option<JoinHandle<Result<()>>> {
    if interactive || !std::io::stdin().is_terminal() {
        return Some(spawn_stdin_copy(agent.clone(), process.clone()));
    }

    if let Err(error) = agent
        .close_stdin(&process.container_id, &process.exec_id)
        .await
    {
        warn(&error);
    }
    None
}

/// Waits for the process to exit. SIGINT, SIGTERM and SIGHUP that reach `berth`
/// meanwhile go to the process. A second one sends SIGKILL instead, because the
/// process may ignore the first (as a PID 1 without a handler does).
async fn wait_forwarding_signals(
    agent: &Agent,
    process: &ProcessRef,
    signals: &mut CaughtSignals,
) -> Result<i32> {
    let wait = agent.wait_process(&process.container_id, &process.exec_id);
    tokio::pin!(wait);
    let mut forwarded = 0;

    loop {
        tokio::select! {
            status = &mut wait => return status,
            caught = signals.recv() => {
                let signal = if forwarded == 0 { caught } else { Signal::SIGKILL };
                forwarded += 1;

                if let Err(error) = agent.signal_process(&process.container_id, &process.exec_id, signal as u32).await {
                    warn(&error);
                }
            }
        }
    }
}

/// Waits for both output streams to end, at most [`OUTPUT_DRAIN_TIMEOUT`] in total,
/// and reports a stream that failed or did not end.
async fn drain_output(stdout: JoinHandle<Result<()>>, stderr: JoinHandle<Result<()>>) {
    let deadline = tokio::time::Instant::now() + OUTPUT_DRAIN_TIMEOUT;

    for (name, mut task) in [("stdout", stdout), ("stderr", stderr)] {
        match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(error))) => warn(&error),
            Ok(Err(join_error)) => {
                eprintln!("berth: warning: copying {name} stopped: {join_error}")
            }
            Err(_) => {
                task.abort();
                eprintln!(
                    "berth: warning: {name} of the container did not end within {}s after it exited; the rest is dropped",
                    OUTPUT_DRAIN_TIMEOUT.as_secs()
                );
            }
        }
    }
}

/// Removes the container after a failure, reporting (not returning) a second error,
/// so the caller can return the first one.
async fn remove_after_failure(agent: &Agent, container_id: &str) {
    if let Err(error) = agent.remove_container(container_id, REMOVE_TIMEOUT).await {
        warn(&error);
    }
}

/// Runs `call` and records how long it took under `rpc`, whether it failed or not.
async fn timed<T>(
    rpcs: &mut Vec<Timing>,
    rpc: &str,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    let started = Instant::now();
    let result = call.await;
    rpcs.push((rpc.to_string(), started.elapsed()));
    result
}

fn warn(error: &Error) {
    eprintln!("berth: warning: {error}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_agent::{FakeAgent, Script};

    #[tokio::test]
    async fn existing_sandbox_is_reused() {
        let script = Script {
            create_sandbox_error: Some(ttrpc::Code::ALREADY_EXISTS),
            ..Script::default()
        };
        let fake = FakeAgent::start(script).await;
        let agent = fake.connect().await;

        ensure_sandbox(&agent, "c1", "host").await.unwrap();

        assert_eq!(fake.calls(), ["CreateSandbox"]);
    }

    #[tokio::test]
    async fn other_sandbox_failure_is_returned() {
        let script = Script {
            create_sandbox_error: Some(ttrpc::Code::INTERNAL),
            ..Script::default()
        };
        let fake = FakeAgent::start(script).await;
        let agent = fake.connect().await;

        let error = ensure_sandbox(&agent, "c1", "host").await.unwrap_err();

        assert!(
            error
                .to_string()
                .starts_with("CreateSandbox failed: INTERNAL: "),
            "{error}"
        );
    }

    #[tokio::test]
    async fn rejected_container_id_reported() {
        let fake = FakeAgent::start(Script::default()).await;
        let agent = fake.connect().await;
        let request = create_container_request("a/b", &Spec::default());

        let error = agent.create_container(&request).await.unwrap_err();

        assert_eq!(
            error.to_string(),
            "CreateContainer failed: INVALID_ARGUMENT: container id \"a/b\" contains '/'"
        );
    }

    #[test]
    fn request_carries_id_and_spec() {
        let mut spec = Spec::default();
        spec.set_hostname(Some("berth-demo".to_string()));

        let request = create_container_request("c1", &spec);

        assert_eq!(request.container_id, "c1");
        assert_eq!(request.exec_id, "c1");
        assert_eq!(request.OCI.Hostname, "berth-demo");
    }
}
