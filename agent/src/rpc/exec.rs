//! ExecProcess: a new process in a running container.
//!
//! rustjail starts the process in the init's namespaces and cgroup, with the
//! request's user, environment, working directory, capabilities, rlimits and
//! terminal. The agent then watches it as it watches an init: the reaper delivers
//! its exit status, and its stdio or terminal serves the process requests under its
//! exec id.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use protobuf::MessageField;
use protocols::agent::ExecProcessRequest;
use protocols::empty::Empty;
use slog::{info, Logger};

use super::process::find_container;
use super::terminal::Terminal;
use super::Agent;
use crate::error::AgentError;
use crate::pipe::{PipeReader, PipeWriter};
use crate::reaper::Checkpoint;
use crate::sandbox::{ContainerState, ExecEntry, ProcessIo};

/// Starts the request's process in its container and registers it under its exec id.
pub async fn exec_process(
    agent: Arc<Agent>,
    logger: Logger,
    request: ExecProcessRequest,
) -> Result<Empty, AgentError> {
    let container_id = request.container_id.clone();
    let exec_id = request.exec_id.clone();
    check_exec_id(&container_id, &exec_id)?;
    let process = exec_process_spec(&request)?;

    // The container stays locked until the process is registered, so a concurrent
    // RemoveContainer cannot tear it down in between and miss the new process.
    let handle = find_container(&agent, &container_id).await?;
    let mut container = handle.lock().await;
    container.ensure_present()?;

    if container.execs.contains_key(&exec_id) {
        return Err(AgentError::ExecExists {
            container: container_id,
            exec: exec_id,
        });
    }

    let state = container.state();
    if state != ContainerState::Running {
        return Err(AgentError::NotRunning {
            id: container_id,
            state: state.name(),
        });
    }
    // A process cloned into a frozen cgroup freezes too, before it could report back.
    if container.is_paused() {
        return Err(AgentError::NotRunning {
            id: container_id,
            state: "paused",
        });
    }

    let since = agent.reaper.checkpoint();
    let launcher = container.launcher.clone();
    let init = agent.init.clone();
    let started = tokio::task::spawn_blocking(move || {
        let inner = launcher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.exec(&process, &init)
    })
    .await
    .map_err(|error| AgentError::Task {
        operation: "exec process",
        reason: error.to_string(),
    })?;
    let started = started.map_err(|source| AgentError::Exec {
        container: container_id.clone(),
        exec: exec_id.clone(),
        source: Box::new(source),
    })?;

    let entry = exec_entry(&agent, &container_id, &exec_id, started, since)?;
    info!(logger, "exec process started"; "pid" => entry.pid);
    container.execs.insert(exec_id, entry);
    Ok(Empty::new())
}

/// Rejects the exec ids that name the init, see the sandbox module.
fn check_exec_id(container_id: &str, exec_id: &str) -> Result<(), AgentError> {
    let reason = if exec_id.is_empty() {
        "must not be empty"
    } else if exec_id == container_id {
        "must differ from the container id, which names the container's init"
    } else {
        return Ok(());
    };

    Err(AgentError::InvalidExecId {
        container: container_id.to_string(),
        exec: exec_id.to_string(),
        reason,
    })
}

/// Converts the request's protobuf process through the spec conversion of
/// `protocols`, by wrapping it in an otherwise empty spec.
fn exec_process_spec(
    request: &ExecProcessRequest,
) -> Result<oci_spec::runtime::Process, AgentError> {
    let missing = || AgentError::MissingExecProcess {
        container: request.container_id.clone(),
        exec: request.exec_id.clone(),
    };
    let message = request.process.as_ref().ok_or_else(missing)?;

    let mut spec = protocols::oci::Spec::new();
    spec.Process = MessageField::some(message.clone());
    let converted = protocols::spec_to_oci(&spec).map_err(|error| AgentError::InvalidProcess {
        container: request.container_id.clone(),
        exec: request.exec_id.clone(),
        reason: error.to_string(),
    })?;

    converted.process().clone().ok_or_else(missing)
}

/// Registers the started process with the reaper and wraps its stdio. A failure
/// kills the process, whose exit the reaper then collects.
fn exec_entry(
    agent: &Agent,
    container_id: &str,
    exec_id: &str,
    mut started: rustjail::ExecProcess,
    since: Checkpoint,
) -> Result<ExecEntry, AgentError> {
    let pid = started.pid();
    let exit = agent.reaper.register(pid, since);

    let io = match process_io(&mut started) {
        Ok(io) => io,
        Err((stream, source)) => {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            return Err(AgentError::ExecStream {
                container: container_id.to_string(),
                exec: exec_id.to_string(),
                stream,
                source,
            });
        }
    };

    Ok(ExecEntry {
        pid,
        exit,
        io,
        waited: None,
    })
}

/// Wraps the caller's ends of a process's stdio. With a terminal only its master is
/// kept, because the process does not use the pipes.
fn process_io(
    started: &mut rustjail::ExecProcess,
) -> Result<ProcessIo, (&'static str, std::io::Error)> {
    if let Some(master) = started.take_terminal() {
        return terminal_io(master).map_err(|source| ("terminal", source));
    }

    let stdin = started
        .take_stdin()
        .map(PipeWriter::new)
        .transpose()
        .map_err(|source| ("stdin", source))?;
    let stdout = started
        .take_stdout()
        .map(PipeReader::new)
        .transpose()
        .map_err(|source| ("stdout", source))?;
    let stderr = started
        .take_stderr()
        .map(PipeReader::new)
        .transpose()
        .map_err(|source| ("stderr", source))?;

    Ok(ProcessIo {
        stdin: stdin.map(Arc::new),
        stdout: stdout.map(Arc::new),
        stderr: stderr.map(Arc::new),
        terminal: None,
    })
}

/// Streams of a process whose stdio is the terminal behind `master`.
pub fn terminal_io(master: OwnedFd) -> std::io::Result<ProcessIo> {
    Ok(ProcessIo {
        terminal: Some(Arc::new(Terminal::new(master)?)),
        ..ProcessIo::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_id_naming_init_rejected() {
        for exec_id in ["", "c1"] {
            let error = check_exec_id("c1", exec_id).expect_err(exec_id);

            assert_eq!(error.code(), ttrpc::Code::INVALID_ARGUMENT, "{exec_id:?}");
        }
        assert!(check_exec_id("c1", "e1").is_ok());
    }

    #[test]
    fn missing_process_rejected() {
        let request = ExecProcessRequest {
            container_id: "c1".to_string(),
            exec_id: "e1".to_string(),
            ..Default::default()
        };

        let error = exec_process_spec(&request).expect_err("no process");

        assert_eq!(error.code(), ttrpc::Code::INVALID_ARGUMENT);
        assert!(error.to_string().contains("e1"), "{error}");
    }

    #[test]
    fn process_fields_converted() {
        let mut process = protocols::oci::Process::new();
        process.Args = vec!["/bin/id".to_string(), "-u".to_string()];
        process.Env = vec!["PATH=/bin".to_string()];
        process.Cwd = "/tmp".to_string();
        process.Terminal = true;
        let mut user = protocols::oci::User::new();
        user.UID = 1000;
        user.GID = 100;
        process.User = MessageField::some(user);
        let request = ExecProcessRequest {
            container_id: "c1".to_string(),
            exec_id: "e1".to_string(),
            process: MessageField::some(process),
            ..Default::default()
        };

        let converted = exec_process_spec(&request).expect("converted");

        assert_eq!(
            converted.args().as_deref(),
            Some(&["/bin/id".to_string(), "-u".to_string()][..])
        );
        assert_eq!(converted.cwd().to_str(), Some("/tmp"));
        assert_eq!(converted.terminal(), Some(true));
        assert_eq!(converted.user().uid(), 1000);
        assert_eq!(converted.user().gid(), 100);
    }

    #[test]
    fn unknown_capability_is_invalid_argument() {
        let mut capabilities = protocols::oci::LinuxCapabilities::new();
        capabilities.Effective = vec!["CAP_FLY".to_string()];
        let mut process = protocols::oci::Process::new();
        process.Args = vec!["true".to_string()];
        process.Capabilities = MessageField::some(capabilities);
        let request = ExecProcessRequest {
            container_id: "c1".to_string(),
            exec_id: "e1".to_string(),
            process: MessageField::some(process),
            ..Default::default()
        };

        let error = exec_process_spec(&request).expect_err("bad capability");

        assert_eq!(error.code(), ttrpc::Code::INVALID_ARGUMENT);
        assert!(error.to_string().contains("CAP_FLY"), "{error}");
    }
}
