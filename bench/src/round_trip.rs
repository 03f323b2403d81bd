//! RPC round trip: Health.Check through the agent next to a plain unix-socket echo.
//!
//! The echo is the floor for any request and response over a unix socket on this
//! machine: one blocking write and one blocking read on each side, with a message the
//! size of a ttRPC Health.Check request frame. Both run in alternating blocks, so
//! a burst of load on the machine hits both.

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::client::AgentClient;
use crate::error::{BenchError, Result};

/// Bytes of each echo message: a 10-byte ttRPC frame header plus a request with a
/// service name, about what a Health.Check request takes on the wire.
pub const ECHO_MESSAGE_LEN: usize = 32;

/// Calls in one block of Health.Check or echo, before switching to the other.
const BLOCK: usize = 1000;

/// Latencies of every Health.Check and every echo round trip.
#[derive(Debug, Clone, Default)]
pub struct RoundTrips {
    pub health: Vec<Duration>,
    pub echo: Vec<Duration>,
}

/// Measures `calls` Health.Check calls on a new connection to the agent at
/// `agent_socket`, and `calls` echo round trips. Blocks the calling thread.
///
/// The Health.Check client runs on a single-threaded runtime on this thread, so that a
/// call costs the client no wake-up of another thread. On the benchmark's two-worker
/// runtime, the response would often wake the waiting task on the other core, and the
/// figure would measure the benchmark's client more than the agent.
pub fn measure(agent_socket: &Path, work_dir: &Path, calls: usize) -> Result<RoundTrips> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| BenchError::Runtime { source })?;
    let client = runtime.block_on(AgentClient::connect(agent_socket))?;

    let socket = work_dir.join("echo.sock");
    let listener = UnixListener::bind(&socket).map_err(echo_error("bind", &socket))?;
    let server = std::thread::spawn(move || serve_echo(listener));
    let mut stream = UnixStream::connect(&socket).map_err(echo_error("connect", &socket))?;

    let mut trips = RoundTrips::default();
    let mut remaining = calls;
    while remaining > 0 {
        let block = remaining.min(BLOCK);
        remaining -= block;

        runtime.block_on(async {
            for _ in 0..block {
                let started = Instant::now();
                client.check().await?;
                trips.health.push(started.elapsed());
            }
            Ok::<_, BenchError>(())
        })?;

        trips.echo.extend(echo_block(&mut stream, block, &socket)?);
    }

    // Closing the client ends the server's loop.
    drop(stream);
    let _ = server.join();
    let _ = std::fs::remove_file(&socket);
    Ok(trips)
}

fn echo_block(stream: &mut UnixStream, count: usize, socket: &Path) -> Result<Vec<Duration>> {
    let message = [0x5au8; ECHO_MESSAGE_LEN];
    let mut reply = [0u8; ECHO_MESSAGE_LEN];
    let mut latencies = Vec::with_capacity(count);

    for _ in 0..count {
        let started = Instant::now();
        stream
            .write_all(&message)
            .map_err(echo_error("write", socket))?;
        stream
            .read_exact(&mut reply)
            .map_err(echo_error("read", socket))?;
        latencies.push(started.elapsed());
    }

    Ok(latencies)
}

/// Accepts one connection and sends back every message until the client closes it.
fn serve_echo(listener: UnixListener) {
    let Ok((mut stream, _)) = listener.accept() else {
        return;
    };
    let mut buffer = [0u8; ECHO_MESSAGE_LEN];

    while stream.read_exact(&mut buffer).is_ok() {
        if stream.write_all(&buffer).is_err() {
            return;
        }
    }
}

fn echo_error(operation: &'static str, socket: &Path) -> impl FnOnce(std::io::Error) -> BenchError {
    let socket: PathBuf = socket.to_path_buf();
    move |source| BenchError::Echo {
        operation,
        socket,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_returns_every_message() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("echo.sock");
        let listener = UnixListener::bind(&socket).unwrap();
        let server = std::thread::spawn(move || serve_echo(listener));
        let mut stream = UnixStream::connect(&socket).unwrap();

        let latencies = echo_block(&mut stream, 50, &socket).unwrap();

        assert_eq!(latencies.len(), 50);
        drop(stream);
        server.join().unwrap();
    }
}
