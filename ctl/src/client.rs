//! Connection to the agent and one method per RPC. Every method maps a failure to
//! [`Error::Rpc`] with the RPC's name, so callers only add what they were doing.

use std::time::Duration;

use protocols::agent::{
    CloseStdinRequest, CreateContainerRequest, CreateSandboxRequest, DestroySandboxRequest,
    GetMetricsRequest, GuestDetailsRequest, GuestDetailsResponse, ReadStreamRequest,
    RemoveContainerRequest, SignalProcessRequest, StartContainerRequest, WaitProcessRequest,
    WriteStreamRequest,
};
use protocols::agent_ttrpc::AgentServiceClient;
use protocols::health::{CheckRequest, HealthCheckResponse, VersionCheckResponse};
use protocols::health_ttrpc::HealthClient;
use protocols::Address;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use ttrpc::context::{self, Context};
use ttrpc::r#async::transport::Socket;

use crate::error::{Error, Result};

mod control;

/// Bytes requested by each ReadStdout or ReadStderr call.
const READ_CHUNK_LEN: u32 = 32 * 1024;

/// An output stream of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// A connection to one agent. Clones share the connection, so concurrent tasks
/// (output streaming, stdin forwarding, signal forwarding) each hold a clone.
#[derive(Clone)]
pub struct Agent {
    agent: AgentServiceClient,
    health: HealthClient,
    timeout: Option<Duration>,
}

impl Agent {
    /// Connects to `address`. `timeout` bounds the connection and every RPC that does
    /// not wait for a container. `None` waits forever.
    pub async fn connect(address: &str, timeout: Option<Duration>) -> Result<Agent> {
        let parsed: Address = address.parse()?;

        let socket = match timeout {
            Some(limit) => tokio::time::timeout(limit, open_socket(&parsed))
                .await
                .map_err(|_| Error::ConnectTimeout {
                    address: address.to_string(),
                    timeout_secs: limit.as_secs(),
                })?,
            None => open_socket(&parsed).await,
        };
        let socket = socket.map_err(|reason| Error::Connect {
            address: address.to_string(),
            reason,
        })?;

        let client = ttrpc::r#async::Client::new(socket);
        Ok(Agent {
            agent: AgentServiceClient::new(client.clone()),
            health: HealthClient::new(client),
            timeout,
        })
    }

    pub async fn check(&self) -> Result<HealthCheckResponse> {
        let request = CheckRequest::new();
        self.health
            .check(self.bounded(), &request)
            .await
            .map_err(rpc_error("Check"))
    }

    pub async fn version(&self) -> Result<VersionCheckResponse> {
        let request = CheckRequest::new();
        self.health
            .version(self.bounded(), &request)
            .await
            .map_err(rpc_error("Version"))
    }

    pub async fn create_sandbox(&self, request: &CreateSandboxRequest) -> Result<()> {
        self.agent
            .create_sandbox(self.bounded(), request)
            .await
            .map_err(rpc_error("CreateSandbox"))?;
        Ok(())
    }

    pub async fn destroy_sandbox(&self) -> Result<()> {
        let request = DestroySandboxRequest::new();
        self.agent
            .destroy_sandbox(self.bounded(), &request)
            .await
            .map_err(rpc_error("DestroySandbox"))?;
        Ok(())
    }

    pub async fn create_container(&self, request: &CreateContainerRequest) -> Result<()> {
        self.agent
            .create_container(self.bounded(), request)
            .await
            .map_err(rpc_error("CreateContainer"))?;
        Ok(())
    }

    pub async fn start_container(&self, container_id: &str) -> Result<()> {
        let mut request = StartContainerRequest::new();
        request.container_id = container_id.to_string();

        self.agent
            .start_container(self.bounded(), &request)
            .await
            .map_err(rpc_error("StartContainer"))?;
        Ok(())
    }

    /// Waits for the process to exit and returns its exit status, which the agent
    /// reports as 128 + the signal number for a process killed by a signal.
    pub async fn wait_process(&self, container_id: &str, exec_id: &str) -> Result<i32> {
        let mut request = WaitProcessRequest::new();
        request.container_id = container_id.to_string();
        request.exec_id = exec_id.to_string();

        let response = self
            .agent
            .wait_process(context::with_timeout(0), &request)
            .await
            .map_err(rpc_error("WaitProcess"))?;
        Ok(response.status)
    }

    /// Sends `signal` to the process `exec_id`, or to every process of the container
    /// when `exec_id` is empty.
    pub async fn signal_process(
        &self,
        container_id: &str,
        exec_id: &str,
        signal: u32,
    ) -> Result<()> {
        let mut request = SignalProcessRequest::new();
        request.container_id = container_id.to_string();
        request.exec_id = exec_id.to_string();
        request.signal = signal;

        self.agent
            .signal_process(self.bounded(), &request)
            .await
            .map_err(rpc_error("SignalProcess"))?;
        Ok(())
    }

    /// Removes the container. The agent gets `remove_timeout` to kill its processes
    /// (zero lets it wait forever), and this call waits that long plus the RPC timeout.
    pub async fn remove_container(
        &self,
        container_id: &str,
        remove_timeout: Duration,
    ) -> Result<()> {
        let mut request = RemoveContainerRequest::new();
        request.container_id = container_id.to_string();
        request.timeout = u32::try_from(remove_timeout.as_secs()).unwrap_or(u32::MAX);

        let ctx = match self.timeout {
            Some(limit) if !remove_timeout.is_zero() => {
                context::with_duration(limit + remove_timeout)
            }
            _ => context::with_timeout(0),
        };
        self.agent
            .remove_container(ctx, &request)
            .await
            .map_err(rpc_error("RemoveContainer"))?;
        Ok(())
    }

    /// Reads the next chunk of a process's output. An empty chunk means the stream
    /// reached its end. The call has no deadline, because it returns only when the
    /// process writes or closes the stream.
    pub async fn read_output(
        &self,
        stream: OutputStream,
        container_id: &str,
        exec_id: &str,
    ) -> Result<Vec<u8>> {
        let mut request = ReadStreamRequest::new();
        request.container_id = container_id.to_string();
        request.exec_id = exec_id.to_string();
        request.len = READ_CHUNK_LEN;

        let response = match stream {
            OutputStream::Stdout => self
                .agent
                .read_stdout(context::with_timeout(0), &request)
                .await
                .map_err(rpc_error("ReadStdout"))?,
            OutputStream::Stderr => self
                .agent
                .read_stderr(context::with_timeout(0), &request)
                .await
                .map_err(rpc_error("ReadStderr"))?,
        };
        Ok(response.data)
    }

    /// Writes `data` to the process's stdin and returns how many bytes the agent wrote.
    /// The call has no deadline, because a process that does not read its stdin
    /// blocks the write until it exits.
    pub async fn write_stdin(
        &self,
        container_id: &str,
        exec_id: &str,
        data: &[u8],
    ) -> Result<usize> {
        let mut request = WriteStreamRequest::new();
        request.container_id = container_id.to_string();
        request.exec_id = exec_id.to_string();
        request.data = data.to_vec();

        let response = self
            .agent
            .write_stdin(context::with_timeout(0), &request)
            .await
            .map_err(rpc_error("WriteStdin"))?;
        Ok(response.len as usize)
    }

    pub async fn close_stdin(&self, container_id: &str, exec_id: &str) -> Result<()> {
        let mut request = CloseStdinRequest::new();
        request.container_id = container_id.to_string();
        request.exec_id = exec_id.to_string();

        self.agent
            .close_stdin(self.bounded(), &request)
            .await
            .map_err(rpc_error("CloseStdin"))?;
        Ok(())
    }

    pub async fn guest_details(&self) -> Result<GuestDetailsResponse> {
        let mut request = GuestDetailsRequest::new();
        request.mem_block_size = true;
        request.mem_hotplug_probe = true;

        self.agent
            .get_guest_details(self.bounded(), &request)
            .await
            .map_err(rpc_error("GetGuestDetails"))
    }

    /// Returns the agent's metrics in the Prometheus text format.
    pub async fn metrics(&self) -> Result<String> {
        let request = GetMetricsRequest::new();

        let response = self
            .agent
            .get_metrics(self.bounded(), &request)
            .await
            .map_err(rpc_error("GetMetrics"))?;
        Ok(response.metrics)
    }

    /// Context for an RPC that must return within the configured timeout.
    fn bounded(&self) -> Context {
        match self.timeout {
            Some(limit) => context::with_duration(limit),
            None => context::with_timeout(0),
        }
    }
}

fn rpc_error(rpc: &'static str) -> impl FnOnce(ttrpc::Error) -> Error {
    move |source| Error::Rpc { rpc, source }
}

/// Opens the transport for `address`. Errors come back as text, because ttrpc
/// reports its transport errors as `std::io::Error` and the hybrid vsock handshake
/// adds failures of its own.
async fn open_socket(address: &Address) -> std::result::Result<Socket, String> {
    match address {
        Address::HybridVsock { path, port } => {
            let stream = UnixStream::connect(path)
                .await
                .map_err(|error| error.to_string())?;
            let stream = hybrid_vsock_handshake(stream, *port).await?;
            Ok(Socket::new(stream))
        }
        other => Socket::connect(other.to_ttrpc_string())
            .await
            .map_err(|error| error.to_string()),
    }
}

/// Longest reply line accepted from the VMM during the hybrid vsock handshake.
const MAX_HANDSHAKE_REPLY: usize = 128;

/// Asks the VMM behind a hybrid vsock socket to connect to guest port `port`. The VMM
/// (Firecracker, Cloud Hypervisor) expects `CONNECT <port>\n` and replies with a line
/// starting with `OK` before the stream carries the guest's bytes.
async fn hybrid_vsock_handshake(
    mut stream: UnixStream,
    port: u32,
) -> std::result::Result<UnixStream, String> {
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await
        .map_err(|error| format!("hybrid vsock handshake: {error}"))?;

    // Read one byte at a time so that no byte after the newline, which belongs to
    // the guest, ends up in a buffer that is dropped.
    let mut reply = Vec::new();
    loop {
        let byte = stream
            .read_u8()
            .await
            .map_err(|error| format!("hybrid vsock handshake: {error}"))?;
        if byte == b'\n' {
            break;
        }
        reply.push(byte);
        if reply.len() > MAX_HANDSHAKE_REPLY {
            return Err(format!(
                "hybrid vsock handshake: reply longer than {MAX_HANDSHAKE_REPLY} bytes"
            ));
        }
    }

    let reply = String::from_utf8_lossy(&reply);
    if !reply.starts_with("OK") {
        return Err(format!(
            "hybrid vsock handshake: expected OK for port {port}, got {reply:?}"
        ));
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::UnixListener;

    #[tokio::test]
    async fn hybrid_vsock_sends_connect_and_accepts_ok() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hv.sock");
        let listener = UnixListener::bind(&path).unwrap();

        let vmm = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = BufReader::new(stream);
            let mut line = String::new();
            stream.read_line(&mut line).await.unwrap();
            stream
                .get_mut()
                .write_all(b"OK 1073741824\n")
                .await
                .unwrap();
            let mut after = [0u8; 4];
            stream.read_exact(&mut after).await.unwrap();
            (line, after)
        });

        let stream = UnixStream::connect(&path).await.unwrap();
        let mut stream = hybrid_vsock_handshake(stream, 1024).await.unwrap();
        stream.write_all(b"ping").await.unwrap();

        let (line, after) = vmm.await.unwrap();
        assert_eq!(line, "CONNECT 1024\n");
        assert_eq!(&after, b"ping");
    }

    #[tokio::test]
    async fn hybrid_vsock_rejects_other_reply() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hv.sock");
        let listener = UnixListener::bind(&path).unwrap();

        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buffer = [0u8; 64];
            let _ = stream.read(&mut buffer).await;
            stream.write_all(b"ERR no listener\n").await.unwrap();
        });

        let stream = UnixStream::connect(&path).await.unwrap();
        let error = hybrid_vsock_handshake(stream, 1024).await.unwrap_err();

        assert!(error.contains("ERR no listener"), "{error}");
    }

    #[tokio::test]
    async fn connect_failure_names_address() {
        let dir = tempfile::tempdir().unwrap();
        let address = format!("unix://{}/missing.sock", dir.path().display());

        let error = Agent::connect(&address, Some(Duration::from_secs(2)))
            .await
            .err()
            .expect("connecting to a missing socket should fail");

        assert!(matches!(error, Error::Connect { .. }));
        assert!(error.to_string().contains(&address), "{error}");
    }

    #[tokio::test]
    async fn connect_rejects_bad_address() {
        let error = Agent::connect("tcp://127.0.0.1:1", None)
            .await
            .err()
            .expect("an unknown scheme should be rejected");

        assert!(matches!(error, Error::InvalidAddress(_)));
        assert!(error.to_string().contains("tcp://127.0.0.1:1"), "{error}");
    }
}
