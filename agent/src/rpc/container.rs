//! CreateContainer, StartContainer and RemoveContainer.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use protocols::agent::{CreateContainerRequest, RemoveContainerRequest, StartContainerRequest};
use protocols::empty::Empty;
use slog::{info, warn, Logger};
use tokio::sync::Mutex;

use super::{exec, oom, Agent};
use crate::convert;
use crate::error::{validate_container_id, AgentError};
use crate::pipe::{PipeReader, PipeWriter};
use crate::sandbox::{Container, ContainerState, ProcessIo};

/// Wait used by RemoveContainer when the request's timeout is 0. A bounded default
/// keeps a process stuck in uninterruptible sleep from blocking the request forever.
const DEFAULT_REMOVE_TIMEOUT: Duration = Duration::from_secs(30);

/// Removes an id from the sandbox's in-progress set when CreateContainer fails or is
/// dropped. A successful create takes the id out itself, under the same lock that
/// registers the container.
struct CreatingGuard {
    agent: Arc<Agent>,
    id: Option<String>,
}

impl Drop for CreatingGuard {
    fn drop(&mut self) {
        let Some(id) = self.id.take() else {
            return;
        };
        let agent = self.agent.clone();
        // Drop cannot await; the set is only checked under the lock, so a late removal is safe.
        if let Ok(mut sandbox) = agent.sandbox.try_lock() {
            sandbox.creating.remove(&id);
            return;
        }
        tokio::spawn(async move {
            agent.sandbox.lock().await.creating.remove(&id);
        });
    }
}

/// Validates the request, runs the container pipeline and registers the container.
pub async fn create_container(
    agent: Arc<Agent>,
    logger: Logger,
    request: CreateContainerRequest,
) -> Result<Empty, AgentError> {
    let id = request.container_id.clone();
    validate_container_id(&id)?;
    let container_request = convert::container_request(&request)?;
    check_rootfs(&agent.paths, &container_request)?;

    let shared = reserve_id(&agent, &id).await?;
    let mut creating = CreatingGuard {
        agent: agent.clone(),
        id: Some(id.clone()),
    };

    let since = agent.reaper.checkpoint();
    let mut context = stages::ContainerContext::new(shared, container_request);
    let pipeline_agent = agent.clone();
    let pipeline_logger = logger.clone();
    let (completed, context) = tokio::task::spawn_blocking(move || {
        let completed = pipeline_agent
            .container_pipeline
            .run(&mut context, &pipeline_logger)
            .map_err(AgentError::from);
        (completed, context)
    })
    .await
    .map_err(|error| AgentError::Task {
        operation: "create container",
        reason: error.to_string(),
    })?;
    let completed = completed?;

    let container = match record_container(&agent, &id, context, since) {
        Ok(mut container) => {
            container.timings = completed.timings().to_vec();
            container.pipeline = Some(completed);
            container
        }
        Err(error) => {
            roll_back(completed, &logger).await;
            return Err(error);
        }
    };

    // Registering is the last step: from here on the container is visible to requests.
    let mut sandbox = agent.sandbox.lock().await;
    let mut container = container;
    watch_oom(&mut container, &sandbox.oom_events, &logger);
    creating.id = None;
    sandbox.creating.remove(&id);
    sandbox
        .containers
        .insert(id.clone(), Arc::new(Mutex::new(container)));
    info!(logger, "container created");
    Ok(Empty::new())
}

/// Returns the sandbox's shared state after reserving `id` against concurrent creates.
async fn reserve_id(agent: &Agent, id: &str) -> Result<Arc<stages::Sandbox>, AgentError> {
    let mut sandbox = agent.sandbox.lock().await;

    if sandbox.containers.contains_key(id) || sandbox.creating.contains(id) {
        return Err(AgentError::ContainerExists { id: id.to_string() });
    }

    sandbox.creating.insert(id.to_string());
    Ok(sandbox.shared.clone())
}

/// Rejects a root file system path that does not exist, unless one of the request's
/// storages is mounted on it or above it, because that storage creates it.
fn check_rootfs(
    paths: &stages::GuestPaths,
    request: &stages::ContainerRequest,
) -> Result<(), AgentError> {
    let Some(root) = request.spec.root().as_ref() else {
        return Ok(());
    };

    let rootfs = if root.path().is_absolute() {
        root.path().clone()
    } else {
        paths.bundle_dir(&request.id).join(root.path())
    };

    let provided_by_storage = request
        .storages
        .iter()
        .any(|storage| rootfs.starts_with(Path::new(&storage.mount_point)));

    if provided_by_storage || rootfs.is_dir() {
        return Ok(());
    }

    Err(AgentError::RootfsNotFound {
        container: request.id.clone(),
        path: rootfs.display().to_string(),
    })
}

/// Builds the container record from the pipeline's context and watches its init;
/// the caller adds the undo records.
fn record_container(
    agent: &Agent,
    id: &str,
    context: stages::ContainerContext,
    since: crate::reaper::Checkpoint,
) -> Result<Container, AgentError> {
    let Some(launcher) = context.container else {
        return Err(AgentError::Task {
            operation: "create container",
            reason: format!("the pipeline created no container for {id}"),
        });
    };

    let (pid, terminal, stdin, stdout, stderr) = {
        let mut inner = launcher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        (
            inner.pid(),
            inner.take_terminal(),
            inner.take_stdin(),
            inner.take_stdout(),
            inner.take_stderr(),
        )
    };
    let exit = agent.reaper.register(pid, since);

    let stream_error = |stream, source| AgentError::Stream {
        operation: "prepare",
        container: id.to_string(),
        stream,
        source,
    };
    // With a terminal the init does not use the pipes, so they are dropped.
    let io = match terminal {
        Some(master) => {
            exec::terminal_io(master).map_err(|source| stream_error("terminal", source))?
        }
        None => ProcessIo {
            stdin: stdin
                .map(PipeWriter::new)
                .transpose()
                .map_err(|source| stream_error("stdin", source))?
                .map(Arc::new),
            stdout: stdout
                .map(PipeReader::new)
                .transpose()
                .map_err(|source| stream_error("stdout", source))?
                .map(Arc::new),
            stderr: stderr
                .map(PipeReader::new)
                .transpose()
                .map_err(|source| stream_error("stderr", source))?
                .map(Arc::new),
            terminal: None,
        },
    };

    Ok(Container {
        id: id.to_string(),
        launcher,
        pid,
        pipeline: None,
        timings: Vec::new(),
        started: false,
        removed: false,
        exit,
        io,
        execs: HashMap::new(),
        waits: 0,
        oom_watcher: None,
    })
}

/// Starts the OOM watcher of a new container. A container without one still runs,
/// so a failure is logged and not returned.
fn watch_oom(container: &mut Container, events: &oom::OomEvents, logger: &Logger) {
    let cgroup_paths = {
        let launcher = container
            .launcher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        launcher.cgroup().paths().to_vec()
    };

    match oom::watch(&container.id, &cgroup_paths, events, logger) {
        Ok(watcher) => container.oom_watcher = Some(watcher),
        Err(error) => warn!(logger, "container has no OOM notifications"; "error" => %error),
    }
}

/// Undoes a pipeline whose container could not be recorded.
async fn roll_back(mut completed: stages::Completed, logger: &Logger) {
    let undo_logger = logger.clone();
    let result = tokio::task::spawn_blocking(move || completed.undo_all(&undo_logger)).await;

    if let Ok(Err(errors)) = result {
        slog::error!(logger, "rollback after failed create"; "error" => %errors);
    }
}

/// Lets the container's init exec the user process; a second start is FAILED_PRECONDITION.
pub async fn start_container(
    agent: Arc<Agent>,
    logger: Logger,
    request: StartContainerRequest,
) -> Result<Empty, AgentError> {
    let handle = agent
        .sandbox
        .lock()
        .await
        .container(&request.container_id)?;
    let mut container = handle.lock().await;
    container.ensure_present()?;

    let state = container.state();
    if container.started || state != ContainerState::Created {
        return Err(AgentError::NotCreated {
            id: container.id.clone(),
            state: if container.started {
                "already started"
            } else {
                state.name()
            },
        });
    }

    container.started = true;
    let launcher = container.launcher.clone();
    let result = tokio::task::spawn_blocking(move || {
        let mut inner = launcher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        inner.start()
    })
    .await
    .map_err(|error| AgentError::Task {
        operation: "start container",
        reason: error.to_string(),
    })?;

    result.map_err(|source| AgentError::Start {
        container: container.id.clone(),
        source,
    })?;
    info!(logger, "container started"; "pid" => container.pid);
    Ok(Empty::new())
}

/// Kills the init if it still runs, waits for it up to the request's timeout, runs the
/// container's undos and removes the container from the sandbox.
pub async fn remove_container(
    agent: Arc<Agent>,
    logger: Logger,
    request: RemoveContainerRequest,
) -> Result<Empty, AgentError> {
    let id = request.container_id.clone();
    let handle = agent.sandbox.lock().await.container(&id)?;
    let mut container = handle.lock().await;
    container.ensure_present()?;

    let timeout = match request.timeout {
        0 => DEFAULT_REMOVE_TIMEOUT,
        seconds => Duration::from_secs(u64::from(seconds)),
    };
    let result = container.tear_down(timeout, &logger).await;
    let removed = container.removed;

    // The container lock is released before the sandbox lock is taken, because
    // DestroySandbox takes them in the opposite order.
    drop(container);
    if removed {
        let mut sandbox = agent.sandbox.lock().await;
        let same_entry = sandbox
            .containers
            .get(&id)
            .is_some_and(|entry| Arc::ptr_eq(entry, &handle));
        if same_entry {
            sandbox.containers.remove(&id);
        }
        info!(logger, "container removed");
    }
    result.map(|()| Empty::new())
}
