//! ReadStdout, ReadStderr, WriteStdin and CloseStdin, for the init and exec processes.
//!
//! A process with a terminal has one stream each way: ReadStdout reads the terminal,
//! WriteStdin writes to it, and ReadStderr returns end of file at once, as the
//! terminal merges stderr into stdout.
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

use super::process::find_container;
use super::terminal::Terminal;
use super::Agent;
use crate::error::AgentError;
use crate::pipe::{PipeReader, PipeWriter};

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

/// Source of a read request's data.
enum Source {
    Pipe(Arc<PipeReader>),
    Terminal(Arc<Terminal>),
    /// stderr of a process with a terminal.
    Empty,
}

/// Returns up to `len` bytes of the stream, waiting until some are there.
pub async fn read_stream(
    agent: Arc<Agent>,
    request: ReadStreamRequest,
    stream: Stream,
) -> Result<ReadStreamResponse, AgentError> {
    let handle = find_container(&agent, &request.container_id).await?;
    let (id, source) = {
        let container = handle.lock().await;
        container.ensure_present()?;
        let io = container.process(&request.exec_id)?.io;
        let source = match (stream, &io.terminal) {
            (Stream::Stdout, Some(terminal)) => Some(Source::Terminal(terminal.clone())),
            (Stream::Stderr, Some(_)) => Some(Source::Empty),
            (Stream::Stdout, None) => io.stdout.clone().map(Source::Pipe),
            (Stream::Stderr, None) => io.stderr.clone().map(Source::Pipe),
        };
        (container.id.clone(), source)
    };

    let Some(source) = source else {
        return Err(AgentError::NoStream {
            id,
            stream: stream.name(),
        });
    };

    let max = (request.len as usize).clamp(1, MAX_READ);
    let data = match source {
        Source::Pipe(reader) => reader.read(max).await,
        Source::Terminal(terminal) => terminal.read(max).await,
        Source::Empty => Ok(Vec::new()),
    };
    let data = data.map_err(|source| AgentError::Stream {
        operation: "read",
        container: id,
        stream: stream.name(),
        source,
    })?;

    let mut response = ReadStreamResponse::new();
    response.data = data;
    Ok(response)
}

/// Destination of a write request's data.
enum Sink {
    Pipe(Arc<PipeWriter>),
    Terminal(Arc<Terminal>),
}

/// Writes all of the request's data to stdin and returns its length.
pub async fn write_stdin(
    agent: Arc<Agent>,
    request: WriteStreamRequest,
) -> Result<WriteStreamResponse, AgentError> {
    let handle = find_container(&agent, &request.container_id).await?;
    let (id, sink) = {
        let container = handle.lock().await;
        container.ensure_present()?;
        let io = container.process(&request.exec_id)?.io;
        let sink = match &io.terminal {
            Some(terminal) => Some(Sink::Terminal(terminal.clone())),
            None => io.stdin.clone().map(Sink::Pipe),
        };
        (container.id.clone(), sink)
    };

    let Some(sink) = sink else {
        return Err(AgentError::NoStream {
            id,
            stream: "stdin",
        });
    };

    let written = match sink {
        Sink::Pipe(writer) => writer.write_all(&request.data).await,
        Sink::Terminal(terminal) => terminal.write_all(&request.data).await,
    };
    written.map_err(|source| AgentError::Stream {
        operation: "write",
        container: id,
        stream: "stdin",
        source,
    })?;

    let mut response = WriteStreamResponse::new();
    response.len = request.data.len() as u32;
    Ok(response)
}

/// Closes the agent's end of stdin so the process reads end of file; idempotent. On
/// a terminal it sends the end-of-file character instead, each time it is called.
pub async fn close_stdin(
    agent: Arc<Agent>,
    request: CloseStdinRequest,
) -> Result<Empty, AgentError> {
    let handle = find_container(&agent, &request.container_id).await?;
    let terminal = {
        let mut container = handle.lock().await;
        container.ensure_present()?;
        let io = container.process_io_mut(&request.exec_id)?;

        // A write still in progress holds its own reference; the pipe closes when it ends.
        io.stdin = None;
        io.terminal.clone()
    };

    if let Some(terminal) = terminal {
        terminal
            .send_end_of_file()
            .await
            .map_err(|source| AgentError::Stream {
                operation: "close",
                container: request.container_id.clone(),
                stream: "stdin",
                source,
            })?;
    }
    Ok(Empty::new())
}
