//! CreateSandbox and DestroySandbox.
//!
//! Without CreateSandbox, containers run in an implicit sandbox with an empty id, so
//! a client that only creates containers still works. CreateSandbox is accepted only
//! while no container exists, because the stages' shared state (storages, hooks) is
//! rebuilt for the new sandbox id.

use std::sync::Arc;
use std::time::Duration;

use protocols::agent::CreateSandboxRequest;
use protocols::empty::Empty;
use slog::{info, Logger};

use super::Agent;
use crate::convert;
use crate::error::AgentError;
use crate::sandbox::Sandbox;

/// How long DestroySandbox and shutdown wait for each killed container init to exit.
pub const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Builds the stages' shared sandbox value for `id`.
pub fn shared_sandbox(
    agent_paths: &stages::GuestPaths,
    init: &rustjail::InitCommand,
    id: &str,
    guest_hooks: &str,
    logger: &Logger,
) -> Arc<stages::Sandbox> {
    Arc::new(stages::Sandbox {
        id: id.to_string(),
        paths: agent_paths.clone(),
        storages: stages::StorageRegistry::system(),
        guest_hooks: (!guest_hooks.is_empty()).then(|| guest_hooks.into()),
        init: init.clone(),
        logger: logger.new(slog::o!("sandbox" => id.to_string())),
    })
}

/// Runs the sandbox pipeline and records the sandbox; a second call is ALREADY_EXISTS.
pub async fn create_sandbox(
    agent: Arc<Agent>,
    logger: Logger,
    request: CreateSandboxRequest,
) -> Result<Empty, AgentError> {
    let mut sandbox = agent.sandbox.lock().await;

    if sandbox.created {
        return Err(AgentError::SandboxExists {
            id: sandbox.id.clone(),
        });
    }

    if !sandbox.containers.is_empty() || !sandbox.creating.is_empty() {
        return Err(AgentError::SandboxHasContainers {
            id: request.sandbox_id.clone(),
            count: sandbox.containers.len() + sandbox.creating.len(),
        });
    }

    // Holding the sandbox lock here is deliberate: no container request may start
    // while the shared state is replaced, and there are no containers to delay.
    let shared = shared_sandbox(
        &agent.paths,
        &agent.init,
        &request.sandbox_id,
        &request.guest_hook_path,
        &agent.logger,
    );
    let mut context = stages::SandboxContext {
        sandbox: shared.clone(),
        request: convert::sandbox_request(&request),
    };
    let pipeline_agent = agent.clone();
    let pipeline_logger = logger.new(slog::o!("sandbox" => request.sandbox_id.clone()));
    let completed = tokio::task::spawn_blocking(move || {
        pipeline_agent
            .sandbox_pipeline
            .run(&mut context, &pipeline_logger)
            .map_err(AgentError::from)
    })
    .await
    .map_err(|error| AgentError::Task {
        operation: "create sandbox",
        reason: error.to_string(),
    })??;

    sandbox.created = true;
    sandbox.id = request.sandbox_id.clone();
    sandbox.hostname = request.hostname.clone();
    sandbox.shared = shared;
    sandbox.pipeline = Some(completed);
    info!(logger, "sandbox created"; "sandbox" => &sandbox.id);
    Ok(Empty::new())
}

/// Tears down every container and then the sandbox pipeline; a second call does nothing.
pub async fn destroy_sandbox(agent: Arc<Agent>, logger: Logger) -> Result<Empty, AgentError> {
    tear_down_everything(&agent, &logger).await?;
    Ok(Empty::new())
}

/// Kills and removes every container, then undoes the sandbox pipeline and returns to
/// the implicit sandbox. Every container is attempted; the first failure is returned.
pub async fn tear_down_everything(agent: &Agent, logger: &Logger) -> Result<(), AgentError> {
    let mut sandbox = agent.sandbox.lock().await;
    let mut first_error = None;

    let entries: Vec<_> = sandbox.containers.drain().collect();
    for (id, handle) in entries {
        let mut container = handle.lock().await;
        if container.removed {
            continue;
        }

        let container_logger = logger.new(slog::o!("container" => id.clone()));
        if let Err(error) = container
            .tear_down(TEARDOWN_TIMEOUT, &container_logger)
            .await
        {
            slog::error!(container_logger, "container teardown failed"; "error" => %error);
            first_error.get_or_insert(error);
        }

        // A container whose init did not die stays listed, so a later call can retry.
        if !container.removed {
            drop(container);
            sandbox.containers.insert(id, handle);
        }
    }

    if let (false, Some(error)) = (sandbox.containers.is_empty(), first_error.take()) {
        return Err(error);
    }

    if let Some(mut pipeline) = sandbox.pipeline.take() {
        let undo_logger = logger.clone();
        let result = tokio::task::spawn_blocking(move || pipeline.undo_all(&undo_logger))
            .await
            .map_err(|error| AgentError::Task {
                operation: "destroy sandbox",
                reason: error.to_string(),
            })?;
        if let Err(source) = result {
            first_error.get_or_insert(AgentError::SandboxUndo {
                id: sandbox.id.clone(),
                source,
            });
        }
    }

    if sandbox.created {
        info!(logger, "sandbox destroyed"; "sandbox" => &sandbox.id);
    }
    let shared = shared_sandbox(&agent.paths, &agent.init, "", "", &agent.logger);
    let oom_events = sandbox.oom_events.clone();
    *sandbox = Sandbox::new(shared);
    // A GetOOMEvent may be waiting on the queue; the next sandbox keeps it.
    sandbox.oom_events = oom_events;

    match first_error {
        Some(error) => Err(error),
        None => Ok(()),
    }
}
