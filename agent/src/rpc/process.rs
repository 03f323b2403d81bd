//! WaitProcess and SignalProcess for a container's init (exec id "").
//!
//! ExecProcess is not served yet, so the init is the only process of a container
//! and any other exec id is NOT_FOUND.

use std::sync::Arc;

use protocols::agent::{SignalProcessRequest, WaitProcessRequest, WaitProcessResponse};
use protocols::empty::Empty;

use super::Agent;
use crate::error::AgentError;
use crate::sandbox::{wait_exit, ContainerHandle};

/// Highest signal number Linux defines (SIGRTMAX).
const MAX_SIGNAL: u32 = 64;

/// Returns the container named by a process request after checking its exec id.
pub async fn find_process(
    agent: &Agent,
    container_id: &str,
    exec_id: &str,
) -> Result<ContainerHandle, AgentError> {
    let handle = agent.sandbox.lock().await.container(container_id)?;

    if !exec_id.is_empty() && exec_id != container_id {
        return Err(AgentError::ExecNotFound {
            container: container_id.to_string(),
            exec: exec_id.to_string(),
        });
    }

    Ok(handle)
}

/// Waits until the process exits and returns its status.
pub async fn wait_process(
    agent: Arc<Agent>,
    request: WaitProcessRequest,
) -> Result<WaitProcessResponse, AgentError> {
    let handle = find_process(&agent, &request.container_id, &request.exec_id).await?;
    let receiver = {
        let container = handle.lock().await;
        container.ensure_present()?;
        container.exit_receiver()
    };

    // The reaper keeps the sender for as long as the pid is unreaped, so None means
    // the agent is shutting down.
    let status = wait_exit(receiver).await.ok_or_else(|| AgentError::Task {
        operation: "wait process",
        reason: "the reaper stopped before the process exited".to_string(),
    })?;

    let mut response = WaitProcessResponse::new();
    response.status = status;
    Ok(response)
}

/// Sends a signal to the process; a process that already exited is not signalled.
pub async fn signal_process(
    agent: Arc<Agent>,
    request: SignalProcessRequest,
) -> Result<Empty, AgentError> {
    let handle = find_process(&agent, &request.container_id, &request.exec_id).await?;
    let container = handle.lock().await;
    container.ensure_present()?;

    if request.signal > MAX_SIGNAL {
        return Err(AgentError::InvalidSignal {
            container: container.id.clone(),
            signal: request.signal,
        });
    }

    container.signal_init(request.signal)?;
    Ok(Empty::new())
}
