//! ReadStdout, ReadStderr, WriteStdin and CloseStdin.
//!
//! At end of file a read returns empty data and no error. Kata's shim takes an empty
//! response as EOF (`readProcessStream` in `src/runtime/virtcontainers/kata_agent.go`),
//! and Kata's own agent returns one once the process closed its output
//! (`do_read_stream` in `src/agent/src/rpc.rs`, Kata Containers main branch of 2026).

use std::sync::Arc;

use protocols::agent::{
    CloseStdinRequest, ReadStreamRequest, ReadStreamResponse, WriteStreamRequest,
    WriteStreamResponse,
};
use protocols::empty::Empty;

use super::process::find_process;
use super::Agent;
use crate::error::AgentError;

/// Largest read returned at once; ttRPC messages are limited to 4 MiB.
const MAX_READ: usize = 1024 * 1024;

/// Output stream named by a read request.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn name(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Returns up to `len` bytes of the stream, waiting until some are there.
pub async fn read_stream(
    agent: Arc<Agent>,
    request: ReadStreamRequest,
    stream: Stream,
) -> Result<ReadStreamResponse, AgentError> {
    let handle = find_process(&agent, &request.container_id, &request.exec_id).await?;
    let (id, reader) = {
        let container = handle.lock().await;
        container.ensure_present()?;
        let reader = match stream {
            Stream::Stdout => container.stdout.clone(),
            Stream::Stderr => container.stderr.clone(),
        };
        (container.id.clone(), reader)
    };

    let Some(reader) = reader else {
        return Err(AgentError::NoStream {
            id,
            stream: stream.name(),
        });
    };

    let max = (request.len as usize).clamp(1, MAX_READ);
    let data = reader
        .read(max)
        .await
        .map_err(|source| AgentError::Stream {
            operation: "read",
            container: id,
            stream: stream.name(),
            source,
        })?;

    let mut response = ReadStreamResponse::new();
    response.data = data;
    Ok(response)
}

/// Writes all of the request's data to stdin and returns its length.
pub async fn write_stdin(
    agent: Arc<Agent>,
    request: WriteStreamRequest,
) -> Result<WriteStreamResponse, AgentError> {
    let handle = find_process(&agent, &request.container_id, &request.exec_id).await?;
    let (id, writer) = {
        let container = handle.lock().await;
        container.ensure_present()?;
        (container.id.clone(), container.stdin.clone())
    };

    let Some(writer) = writer else {
        return Err(AgentError::NoStream {
            id,
            stream: "stdin",
        });
    };

    writer
        .write_all(&request.data)
        .await
        .map_err(|source| AgentError::Stream {
            operation: "write",
            container: id,
            stream: "stdin",
            source,
        })?;

    let mut response = WriteStreamResponse::new();
    response.len = request.data.len() as u32;
    Ok(response)
}

/// Closes the agent's end of stdin so the process reads end of file; idempotent.
pub async fn close_stdin(
    agent: Arc<Agent>,
    request: CloseStdinRequest,
) -> Result<Empty, AgentError> {
    let handle = find_process(&agent, &request.container_id, &request.exec_id).await?;
    let mut container = handle.lock().await;
    container.ensure_present()?;

    // A write still in progress holds its own reference; the pipe closes when it ends.
    container.stdin = None;
    Ok(Empty::new())
}
