//! WaitProcess and SignalProcess, for a container's init and its exec processes.

use std::sync::Arc;

use protocols::agent::{SignalProcessRequest, WaitProcessRequest, WaitProcessResponse};
use protocols::empty::Empty;

use super::Agent;
use crate::error::AgentError;
use crate::sandbox::{wait_exit, ContainerHandle};

/// Highest signal number Linux defines (SIGRTMAX).
const MAX_SIGNAL: u32 = 64;

/// Returns the container `container_id` or NOT_FOUND.
pub async fn find_container(
    agent: &Agent,
    container_id: &str,
) -> Result<ContainerHandle, AgentError> {
    agent.sandbox.lock().await.container(container_id)
}

/// Waits until the process exits and returns its status. An exec process stays
/// readable after this, until later waits push it out.
pub async fn wait_process(
    agent: Arc<Agent>,
    request: WaitProcessRequest,
) -> Result<WaitProcessResponse, AgentError> {
    let handle = find_container(&agent, &request.container_id).await?;
    let receiver = {
        let container = handle.lock().await;
        container.ensure_present()?;
        container.process(&request.exec_id)?.exit.clone()
    };

    // The reaper keeps the sender for as long as the pid is unreaped, so None means
    // the agent is shutting down.
    let status = wait_exit(receiver).await.ok_or_else(|| AgentError::Task {
        operation: "wait process",
        reason: "the reaper stopped before the process exited".to_string(),
    })?;

    handle.lock().await.mark_waited(&request.exec_id);

    let mut response = WaitProcessResponse::new();
    response.status = status;
    Ok(response)
}

/// Sends a signal to the process; a process that already exited is not signalled.
pub async fn signal_process(
    agent: Arc<Agent>,
    request: SignalProcessRequest,
) -> Result<Empty, AgentError> {
    let handle = find_container(&agent, &request.container_id).await?;
    let container = handle.lock().await;
    container.ensure_present()?;

    if request.signal > MAX_SIGNAL {
        return Err(AgentError::InvalidSignal {
            container: container.id.clone(),
            signal: request.signal,
        });
    }

    container.signal_process(&request.exec_id, request.signal)?;
    if request.signal == libc::SIGKILL as u32 {
        container.thaw_after_kill(&agent.logger);
    }
    Ok(Empty::new())
}
