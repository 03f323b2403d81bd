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
//!
//! Processes of a container: exec id `""` and the container's own id name its init,
//! any other id names a process started by ExecProcess. An exec id therefore may be
//! neither of those two.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use slog::Logger;
use tokio::sync::Mutex;

use crate::error::AgentError;
use crate::pipe::{PipeReader, PipeWriter};
use crate::reaper::{ExitReceiver, ExitStatus};
use crate::rpc::oom::OomEvents;
use crate::rpc::terminal::Terminal;

/// Maximum number of exec processes per container that exited and were waited for but
/// are still kept, so that their remaining output can be read after WaitProcess.
/// Beyond it the oldest one is dropped, with its pipes.
const WAITED_EXECS_MAX: usize = 16;

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
    /// OOM notifications of every container, for GetOOMEvent. They outlive a
    /// DestroySandbox, which keeps this value for the next sandbox.
    pub oom_events: Arc<OomEvents>,
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
            oom_events: Arc::new(OomEvents::new()),
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

/// Standard streams of one process. With a terminal, the terminal's master carries
/// stdin and stdout, and the pipes are absent.
#[derive(Default)]
pub struct ProcessIo {
    pub stdin: Option<Arc<PipeWriter>>,
    pub stdout: Option<Arc<PipeReader>>,
    pub stderr: Option<Arc<PipeReader>>,
    pub terminal: Option<Arc<Terminal>>,
}

/// A process started in the container by ExecProcess.
pub struct ExecEntry {
    /// Pid in the agent's PID namespace.
    pub pid: i32,
    pub exit: ExitReceiver,
    pub io: ProcessIo,
    /// Order of the WaitProcess that returned this process's status, once one did.
    pub waited: Option<u64>,
}

/// One process of a container: its pid, exit status and stdio, borrowed for a request.
pub struct ProcessView<'a> {
    pub pid: i32,
    pub exit: &'a ExitReceiver,
    pub io: &'a ProcessIo,
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
    pub io: ProcessIo,
    /// Processes started by ExecProcess, by exec id.
    pub execs: HashMap<String, ExecEntry>,
    /// Count of WaitProcess calls that returned an exec's status, to order them.
    pub waits: u64,
    /// Task that forwards the container's OOM notifications; aborted at teardown.
    pub oom_watcher: Option<tokio::task::AbortHandle>,
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

    /// Returns whether `exec_id` names the init rather than an exec process.
    fn names_init(&self, exec_id: &str) -> bool {
        !self.execs.contains_key(exec_id) && (exec_id.is_empty() || exec_id == self.id)
    }

    /// Returns the process `exec_id` (see the module docs) or NOT_FOUND.
    pub fn process(&self, exec_id: &str) -> Result<ProcessView<'_>, AgentError> {
        if self.names_init(exec_id) {
            return Ok(ProcessView {
                pid: self.pid,
                exit: &self.exit,
                io: &self.io,
            });
        }

        let exec = self.exec(exec_id)?;
        Ok(ProcessView {
            pid: exec.pid,
            exit: &exec.exit,
            io: &exec.io,
        })
    }

    /// Returns the streams of the process `exec_id` for a change, or NOT_FOUND.
    pub fn process_io_mut(&mut self, exec_id: &str) -> Result<&mut ProcessIo, AgentError> {
        if self.names_init(exec_id) {
            return Ok(&mut self.io);
        }

        let container = self.id.clone();
        self.execs
            .get_mut(exec_id)
            .map(|exec| &mut exec.io)
            .ok_or_else(|| AgentError::ExecNotFound {
                container,
                exec: exec_id.to_string(),
            })
    }

    fn exec(&self, exec_id: &str) -> Result<&ExecEntry, AgentError> {
        self.execs
            .get(exec_id)
            .ok_or_else(|| AgentError::ExecNotFound {
                container: self.id.clone(),
                exec: exec_id.to_string(),
            })
    }

    /// Records that WaitProcess returned the status of exec `exec_id`, and drops the
    /// oldest waited execs beyond [`WAITED_EXECS_MAX`].
    pub fn mark_waited(&mut self, exec_id: &str) {
        self.waits += 1;
        let order = self.waits;
        if let Some(exec) = self.execs.get_mut(exec_id) {
            exec.waited.get_or_insert(order);
        }

        let mut waited: Vec<(u64, String)> = self
            .execs
            .iter()
            .filter_map(|(id, exec)| exec.waited.map(|order| (order, id.clone())))
            .collect();
        if waited.len() <= WAITED_EXECS_MAX {
            return;
        }
        waited.sort();
        let excess = waited.len() - WAITED_EXECS_MAX;
        for (_, id) in waited.into_iter().take(excess) {
            self.execs.remove(&id);
        }
    }

    /// Reports whether the container is paused. A launcher error counts as not paused,
    /// so the caller goes on with its request and gets the real error from it.
    pub fn is_paused(&self) -> bool {
        let launcher = self
            .launcher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        launcher.is_paused().unwrap_or(false)
    }

    /// Resumes a paused container after its processes were sent SIGKILL: frozen tasks
    /// die only once thawed, so without this a kill or a removal would wait forever.
    pub fn thaw_after_kill(&self, logger: &Logger) {
        let launcher = self
            .launcher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match launcher.is_paused() {
            Ok(false) => {}
            Ok(true) => {
                if let Err(error) = launcher.resume() {
                    slog::warn!(logger, "resume of killed paused container failed";
                        "container" => &self.id, "error" => %error);
                }
            }
            Err(error) => {
                slog::warn!(logger, "freezer state unreadable, container not resumed";
                    "container" => &self.id, "error" => %error);
            }
        }
    }

    /// Sends `signal` to the init unless it has exited, since its pid may be reused then.
    pub fn signal_init(&self, signal: u32) -> Result<(), AgentError> {
        self.signal_process("", signal)
    }

    /// Sends `signal` to the process `exec_id` unless it has exited, since its pid may
    /// be reused then.
    pub fn signal_process(&self, exec_id: &str, signal: u32) -> Result<(), AgentError> {
        let process = self.process(exec_id)?;
        if process.exit.borrow().is_some() {
            return Ok(());
        }

        send_signal(process.pid, signal).map_err(|source| AgentError::Signal {
            container: self.id.clone(),
            pid: process.pid,
            signal,
            source,
        })
    }

    /// Kills every exec process that still runs. Without a PID namespace of its own,
    /// the container's execs would survive the init's death and keep the cgroup busy.
    fn kill_execs(&self, logger: &Logger) {
        for (exec_id, exec) in &self.execs {
            if exec.exit.borrow().is_some() {
                continue;
            }
            if let Err(error) = send_signal(exec.pid, libc::SIGKILL as u32) {
                slog::warn!(logger, "kill exec process failed";
                    "exec" => exec_id, "pid" => exec.pid, "error" => %error);
            }
        }
    }

    /// Kills the init and the execs, waits up to `timeout` for the reaper to see them
    /// exit, then runs the pipeline's undos. A timeout leaves the container in place,
    /// so a later call can try again. Undo failures still mark the container removed, because the
    /// undo records are consumed either way.
    pub async fn tear_down(
        &mut self,
        timeout: Duration,
        logger: &Logger,
    ) -> Result<(), AgentError> {
        self.signal_init(libc::SIGKILL as u32)?;
        self.kill_execs(logger);
        self.thaw_after_kill(logger);

        let mut exits: Vec<ExitReceiver> = vec![self.exit.clone()];
        exits.extend(self.execs.values().map(|exec| exec.exit.clone()));
        let all_exited = async move {
            for exit in &mut exits {
                // An error means the reaper is gone, which only happens at shutdown.
                let _ = exit.wait_for(Option::is_some).await;
            }
        };
        if tokio::time::timeout(timeout, all_exited).await.is_err() {
            return Err(AgentError::RemoveTimeout {
                container: self.id.clone(),
                timeout,
            });
        }

        self.removed = true;
        self.io = ProcessIo::default();
        self.execs.clear();
        if let Some(watcher) = self.oom_watcher.take() {
            watcher.abort();
        }

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
