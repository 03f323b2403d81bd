//! The agent's one sandbox and the containers in it.
//!
//! Locking: the [`Sandbox`] sits behind one tokio mutex. Container requests hold it
//! only to look up, insert or remove entries, never across a spawn, a wait or a
//! pipeline run. CreateSandbox, DestroySandbox and shutdown hold it for their whole
//! run, so that no container request interleaves with them. Each [`Container`] has
//! its own tokio mutex, which serialises the requests that change that container
//! (start, signal, remove). Requests that block on a container (wait, read, write)
//! clone what they need under that mutex and wait after releasing it, so a pending
//! WaitProcess never delays a SignalProcess.
//!
//! Lock order: the sandbox mutex before a container mutex. Code that holds a
//! container mutex releases it before it takes the sandbox mutex.
//!
//! A container enters the map only after its pipeline completed and the reaper
//! watches its init, so a container that is visible can always be torn down.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use slog::Logger;
use tokio::sync::Mutex;

use crate::error::AgentError;
use crate::pipe::{PipeReader, PipeWriter};
use crate::reaper::{ExitReceiver, ExitStatus};

/// Shared handle to one container's state.
pub type ContainerHandle = Arc<Mutex<Container>>;

/// Sandbox-wide state.
pub struct Sandbox {
    /// Whether CreateSandbox succeeded; containers may also run in the implicit sandbox.
    pub created: bool,
    pub id: String,
    pub hostname: String,
    /// Resources the stages share between the sandbox and its containers.
    pub shared: Arc<stages::Sandbox>,
    /// Undo records of the sandbox pipeline, present while the sandbox exists.
    pub pipeline: Option<stages::Completed>,
    pub containers: HashMap<String, ContainerHandle>,
    /// Ids whose CreateContainer is running, so a concurrent duplicate is rejected.
    pub creating: HashSet<String>,
}

impl Sandbox {
    /// Creates the implicit sandbox the agent starts with.
    pub fn new(shared: Arc<stages::Sandbox>) -> Sandbox {
        Sandbox {
            created: false,
            id: String::new(),
            hostname: String::new(),
            shared,
            pipeline: None,
            containers: HashMap::new(),
            creating: HashSet::new(),
        }
    }

    /// Returns the container `id` or NOT_FOUND.
    pub fn container(&self, id: &str) -> Result<ContainerHandle, AgentError> {
        self.containers
            .get(id)
            .cloned()
            .ok_or_else(|| AgentError::ContainerNotFound { id: id.to_string() })
    }
}

/// Lifecycle state of a container as the API reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Stopped,
}

impl ContainerState {
    pub fn name(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Stopped => "stopped",
        }
    }
}

/// One container: its launcher handle, undo records, init exit status and stdio.
pub struct Container {
    pub id: String,
    pub launcher: stages::SharedContainer,
    /// Pid of the init process in the agent's PID namespace.
    pub pid: i32,
    /// Undo records of the container pipeline; taken by the teardown.
    pub pipeline: Option<stages::Completed>,
    /// Per-stage durations of CreateContainer, kept for GetMetrics.
    pub timings: Vec<(&'static str, Duration)>,
    pub started: bool,
    /// Set once the teardown ran, for requests that waited on the mutex meanwhile.
    pub removed: bool,
    pub exit: ExitReceiver,
    pub stdin: Option<Arc<PipeWriter>>,
    pub stdout: Option<Arc<PipeReader>>,
    pub stderr: Option<Arc<PipeReader>>,
}

impl Container {
    /// Returns the state derived from the start flag and the reaper's exit status.
    pub fn state(&self) -> ContainerState {
        if self.exit.borrow().is_some() {
            ContainerState::Stopped
        } else if self.started {
            ContainerState::Running
        } else {
            ContainerState::Created
        }
    }

    /// Returns NOT_FOUND when a concurrent RemoveContainer already tore this container down.
    pub fn ensure_present(&self) -> Result<(), AgentError> {
        if self.removed {
            return Err(AgentError::ContainerNotFound {
                id: self.id.clone(),
            });
        }
        Ok(())
    }

    /// Sends `signal` to the init unless it has exited, since its pid may be reused then.
    pub fn signal_init(&self, signal: u32) -> Result<(), AgentError> {
        if self.exit.borrow().is_some() {
            return Ok(());
        }

        send_signal(self.pid, signal).map_err(|source| AgentError::Signal {
            container: self.id.clone(),
            pid: self.pid,
            signal,
            source,
        })
    }

    /// Kills the init, waits up to `timeout` for the reaper to see it exit, then runs
    /// the pipeline's undos. A timeout leaves the container in place, so a later call
    /// can try again. Undo failures still mark the container removed, because the
    /// undo records are consumed either way.
    pub async fn tear_down(
        &mut self,
        timeout: Duration,
        logger: &Logger,
    ) -> Result<(), AgentError> {
        self.signal_init(libc::SIGKILL as u32)?;

        let mut exit = self.exit.clone();
        let exited = tokio::time::timeout(timeout, exit.wait_for(Option::is_some))
            .await
            .map(|status| status.is_ok());
        if exited.is_err() {
            return Err(AgentError::RemoveTimeout {
                container: self.id.clone(),
                timeout,
            });
        }

        self.removed = true;
        self.stdin = None;
        self.stdout = None;
        self.stderr = None;

        let Some(mut pipeline) = self.pipeline.take() else {
            return Ok(());
        };
        let undo_logger = logger.clone();
        let result = tokio::task::spawn_blocking(move || pipeline.undo_all(&undo_logger))
            .await
            .map_err(|error| AgentError::Task {
                operation: "tear down container",
                reason: error.to_string(),
            })?;

        result.map_err(|source| AgentError::Undo {
            container: self.id.clone(),
            source,
        })
    }

    /// Returns the init's exit status once the reaper reports it.
    pub fn exit_receiver(&self) -> ExitReceiver {
        self.exit.clone()
    }
}

/// Waits for an exit status on `receiver`.
pub async fn wait_exit(mut receiver: ExitReceiver) -> Option<ExitStatus> {
    let status = receiver.wait_for(Option::is_some).await.ok()?;
    *status
}

/// Sends signal number `signal` (0 to 64) to `pid`.
fn send_signal(pid: i32, signal: u32) -> std::io::Result<()> {
    // nix and rustix accept only named signals, and the API also passes real-time ones.
    // SAFETY: kill(2) takes two integers and touches no memory of this process.
    let result = unsafe { libc::kill(pid, signal as libc::c_int) };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
