//! A ttRPC server on a unix socket in a temporary directory that serves the few RPCs
//! the client tests need, with scripted replies, and records every call it receives.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use protocols::agent::{
    CloseStdinRequest, CreateContainerRequest, CreateSandboxRequest, ReadStreamRequest,
    ReadStreamResponse, WriteStreamRequest, WriteStreamResponse,
};
use protocols::agent_ttrpc::{create_agent_service, AgentService};
use protocols::empty::Empty;
use ttrpc::r#async::{Server, TtrpcContext};

use crate::client::Agent;

/// Replies of the fake agent, and the calls it received.
#[derive(Default)]
pub struct Script {
    /// Status code CreateSandbox fails with; `None` succeeds.
    pub create_sandbox_error: Option<ttrpc::Code>,
    /// Chunks ReadStdout returns in order; an empty queue returns the end of stream.
    pub stdout_chunks: VecDeque<Vec<u8>>,
    /// Maximum number of bytes one WriteStdin call writes.
    pub stdin_write_max: usize,
    /// Bytes received by WriteStdin, in order.
    pub stdin_received: Vec<u8>,
    /// Names of the RPCs received, in order.
    pub calls: Vec<String>,
}

#[derive(Clone)]
struct FakeService {
    script: Arc<Mutex<Script>>,
}

impl FakeService {
    fn record(&self, rpc: &str) {
        self.script.lock().unwrap().calls.push(rpc.to_string());
    }
}

fn status(code: ttrpc::Code, message: &str) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message))
}

#[async_trait]
impl AgentService for FakeService {
    async fn create_sandbox(
        &self,
        _ctx: &TtrpcContext,
        _req: CreateSandboxRequest,
    ) -> ttrpc::Result<Empty> {
        self.record("CreateSandbox");

        match self.script.lock().unwrap().create_sandbox_error {
            Some(code) => Err(status(code, "scripted CreateSandbox failure")),
            None => Ok(Empty::new()),
        }
    }

    async fn create_container(
        &self,
        _ctx: &TtrpcContext,
        req: CreateContainerRequest,
    ) -> ttrpc::Result<Empty> {
        self.record("CreateContainer");

        if req.container_id.contains('/') {
            let message = format!("container id {:?} contains '/'", req.container_id);
            return Err(status(ttrpc::Code::INVALID_ARGUMENT, &message));
        }
        Ok(Empty::new())
    }

    async fn read_stdout(
        &self,
        _ctx: &TtrpcContext,
        _req: ReadStreamRequest,
    ) -> ttrpc::Result<ReadStreamResponse> {
        self.record("ReadStdout");

        let mut response = ReadStreamResponse::new();
        response.data = self
            .script
            .lock()
            .unwrap()
            .stdout_chunks
            .pop_front()
            .unwrap_or_default();
        Ok(response)
    }

    async fn write_stdin(
        &self,
        _ctx: &TtrpcContext,
        req: WriteStreamRequest,
    ) -> ttrpc::Result<WriteStreamResponse> {
        self.record("WriteStdin");

        let mut script = self.script.lock().unwrap();
        let written = req.data.len().min(script.stdin_write_max);
        script
            .stdin_received
            .extend_from_slice(&req.data[..written]);

        let mut response = WriteStreamResponse::new();
        response.len = written as u32;
        Ok(response)
    }

    async fn close_stdin(
        &self,
        _ctx: &TtrpcContext,
        _req: CloseStdinRequest,
    ) -> ttrpc::Result<Empty> {
        self.record("CloseStdin");
        Ok(Empty::new())
    }
}

/// A running fake agent. Dropping it removes its socket directory; the server task
/// ends with the test's runtime.
pub struct FakeAgent {
    pub script: Arc<Mutex<Script>>,
    pub address: String,
    _server: Server,
    _dir: tempfile::TempDir,
}

impl FakeAgent {
    pub async fn start(script: Script) -> FakeAgent {
        let dir = tempfile::tempdir().unwrap();
        let address = format!("unix://{}/agent.sock", dir.path().display());
        let script = Arc::new(Mutex::new(script));

        let service = FakeService {
            script: script.clone(),
        };
        let mut server = Server::new()
            .bind(&address)
            .unwrap()
            .register_service(create_agent_service(Arc::new(service)));
        server.start().await.unwrap();

        FakeAgent {
            script,
            address,
            _server: server,
            _dir: dir,
        }
    }

    pub async fn connect(&self) -> Agent {
        Agent::connect(&self.address, Some(Duration::from_secs(5)))
            .await
            .unwrap()
    }

    pub fn calls(&self) -> Vec<String> {
        self.script.lock().unwrap().calls.clone()
    }
}
