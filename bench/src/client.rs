//! The benchmark's ttRPC client of the agent, and the CreateContainer requests it sends.
//!
//! One connection serves every task: ttRPC multiplexes concurrent requests on it, as a
//! Kata shim does with its single connection to the agent.

use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::{Root, Spec};
use protobuf::MessageField;
use protocols::agent::{
    CloseStdinRequest, CreateContainerRequest, CreateSandboxRequest, DestroySandboxRequest,
    GetMetricsRequest, ReadStreamRequest, RemoveContainerRequest, StartContainerRequest,
    WaitProcessRequest, WriteStreamRequest,
};
use protocols::agent_ttrpc::AgentServiceClient;
use protocols::health::CheckRequest;
use protocols::health_ttrpc::HealthClient;
use tokio::net::UnixStream;
use ttrpc::context::{self, Context};
use ttrpc::r#async::transport::Socket;

use crate::error::{BenchError, Result};

/// Deadline of every RPC that does not wait for a container's process.
const RPC_TIMEOUT: Duration = Duration::from_secs(60);

/// Seconds the agent gets to kill a container's processes in RemoveContainer.
const REMOVE_TIMEOUT_SECS: u32 = 10;

/// A connection to the agent under test.
#[derive(Clone)]
pub struct AgentClient {
    agent: AgentServiceClient,
    health: HealthClient,
}

impl AgentClient {
    pub async fn connect(socket: &Path) -> Result<AgentClient> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|source| BenchError::Connect {
                socket: socket.to_path_buf(),
                source,
            })?;

        let client = ttrpc::r#async::Client::new(Socket::new(stream));
        Ok(AgentClient {
            agent: AgentServiceClient::new(client.clone()),
            health: HealthClient::new(client),
        })
    }

    pub async fn check(&self) -> Result<()> {
        self.health
            .check(bounded(), &CheckRequest::new())
            .await
            .map_err(rpc_error("Check", ""))?;
        Ok(())
    }

    pub async fn create_sandbox(&self, sandbox_id: &str, hostname: &str) -> Result<()> {
        let mut request = CreateSandboxRequest::new();
        request.sandbox_id = sandbox_id.to_string();
        request.hostname = hostname.to_string();

        self.agent
            .create_sandbox(bounded(), &request)
            .await
            .map_err(rpc_error("CreateSandbox", sandbox_id))?;
        Ok(())
    }

    pub async fn destroy_sandbox(&self) -> Result<()> {
        self.agent
            .destroy_sandbox(bounded(), &DestroySandboxRequest::new())
            .await
            .map_err(rpc_error("DestroySandbox", ""))?;
        Ok(())
    }

    pub async fn create_container(&self, request: &CreateContainerRequest) -> Result<()> {
        self.agent
            .create_container(bounded(), request)
            .await
            .map_err(rpc_error("CreateContainer", &request.container_id))?;
        Ok(())
    }

    pub async fn start_container(&self, container_id: &str) -> Result<()> {
        let mut request = StartContainerRequest::new();
        request.container_id = container_id.to_string();

        self.agent
            .start_container(bounded(), &request)
            .await
            .map_err(rpc_error("StartContainer", container_id))?;
        Ok(())
    }

    /// Waits for the container's main process and returns its exit status.
    pub async fn wait_process(&self, container_id: &str) -> Result<i32> {
        let mut request = WaitProcessRequest::new();
        request.container_id = container_id.to_string();
        request.exec_id = container_id.to_string();

        let response = self
            .agent
            .wait_process(unbounded(), &request)
            .await
            .map_err(rpc_error("WaitProcess", container_id))?;
        Ok(response.status)
    }

    pub async fn remove_container(&self, container_id: &str) -> Result<()> {
        let mut request = RemoveContainerRequest::new();
        request.container_id = container_id.to_string();
        request.timeout = REMOVE_TIMEOUT_SECS;

        self.agent
            .remove_container(bounded(), &request)
            .await
            .map_err(rpc_error("RemoveContainer", container_id))?;
        Ok(())
    }

    /// Returns the agent's metrics in the Prometheus text format.
    pub async fn metrics(&self) -> Result<String> {
        let response = self
            .agent
            .get_metrics(bounded(), &GetMetricsRequest::new())
            .await
            .map_err(rpc_error("GetMetrics", ""))?;
        Ok(response.metrics)
    }

    /// Reads up to `len` bytes of the main process's stdout; empty data is end of file.
    pub async fn read_stdout(&self, container_id: &str, len: u32) -> Result<Vec<u8>> {
        let mut request = ReadStreamRequest::new();
        request.container_id = container_id.to_string();
        request.exec_id = container_id.to_string();
        request.len = len;

        let response = self
            .agent
            .read_stdout(unbounded(), &request)
            .await
            .map_err(rpc_error("ReadStdout", container_id))?;
        Ok(response.data)
    }

    /// Writes `data` to the main process's stdin and returns the length the agent wrote.
    pub async fn write_stdin(&self, container_id: &str, data: Vec<u8>) -> Result<u32> {
        let mut request = WriteStreamRequest::new();
        request.container_id = container_id.to_string();
        request.exec_id = container_id.to_string();
        request.data = data;

        let response = self
            .agent
            .write_stdin(unbounded(), &request)
            .await
            .map_err(rpc_error("WriteStdin", container_id))?;
        Ok(response.len)
    }

    pub async fn close_stdin(&self, container_id: &str) -> Result<()> {
        let mut request = CloseStdinRequest::new();
        request.container_id = container_id.to_string();
        request.exec_id = container_id.to_string();

        self.agent
            .close_stdin(bounded(), &request)
            .await
            .map_err(rpc_error("CloseStdin", container_id))?;
        Ok(())
    }
}

/// The bundle's spec in the agent's protobuf form, from which every CreateContainer
/// request of the benchmark is made.
#[derive(Clone)]
pub struct ContainerTemplate {
    spec: protocols::oci::Spec,
}

impl ContainerTemplate {
    /// Loads `bundle/config.json` and makes its root path absolute, because the agent
    /// resolves no path against the bundle.
    pub fn load(bundle: &Path) -> Result<ContainerTemplate> {
        let config = bundle.join("config.json");
        let text = std::fs::read(&config).map_err(|source| BenchError::Read {
            path: config.clone(),
            source,
        })?;
        let mut spec: Spec =
            serde_json::from_slice(&text).map_err(|source| BenchError::ParseSpec {
                path: config.clone(),
                source,
            })?;
        if spec.process().is_none() {
            return Err(BenchError::MissingProcess { path: config });
        }

        let rootfs = absolute_rootfs(bundle, spec.root().as_ref())?;
        let mut root = Root::default();
        root.set_path(rootfs)
            .set_readonly(spec.root().as_ref().and_then(Root::readonly));
        spec.set_root(Some(root));

        Ok(ContainerTemplate {
            spec: protocols::spec_from_oci(&spec),
        })
    }

    /// Builds a CreateContainer request for `container_id` running `args`, with the
    /// main process registered under the container id as its exec id, as Kata shims do.
    pub fn request(&self, container_id: &str, args: &[&str]) -> CreateContainerRequest {
        let mut spec = self.spec.clone();
        if let Some(process) = spec.Process.as_mut() {
            process.Args = args.iter().map(|arg| arg.to_string()).collect();
        }

        let mut request = CreateContainerRequest::new();
        request.container_id = container_id.to_string();
        request.exec_id = container_id.to_string();
        request.OCI = MessageField::some(spec);
        request
    }
}

fn absolute_rootfs(bundle: &Path, root: Option<&Root>) -> Result<PathBuf> {
    let configured = root.map_or_else(|| PathBuf::from("rootfs"), |root| root.path().clone());
    let path = bundle.join(configured);

    std::fs::canonicalize(&path).map_err(|source| BenchError::Read { path, source })
}

fn bounded() -> Context {
    context::with_duration(RPC_TIMEOUT)
}

/// Context without a deadline, for RPCs that return only when a process acts.
fn unbounded() -> Context {
    context::with_timeout(0)
}

fn rpc_error(rpc: &'static str, container: &str) -> impl FnOnce(ttrpc::Error) -> BenchError {
    let container = container.to_string();
    move |source| BenchError::Rpc {
        rpc,
        container,
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{
        "ociVersion": "1.0.2",
        "process": { "cwd": "/", "args": ["sh", "-c", "echo hi"], "user": { "uid": 0, "gid": 0 } },
        "root": { "path": "rootfs", "readonly": true }
    }"#;

    #[test]
    fn template_request_sets_ids_args_and_root() {
        let bundle = tempfile::tempdir().unwrap();
        std::fs::create_dir(bundle.path().join("rootfs")).unwrap();
        std::fs::write(bundle.path().join("config.json"), CONFIG).unwrap();

        let template = ContainerTemplate::load(bundle.path()).unwrap();
        let request = template.request("c1", &["/bin/true"]);

        assert_eq!(request.container_id, "c1");
        assert_eq!(request.exec_id, "c1");
        let spec = request.OCI.as_ref().unwrap();
        assert_eq!(spec.Process.Args, ["/bin/true"]);
        let expected_root = std::fs::canonicalize(bundle.path().join("rootfs")).unwrap();
        assert_eq!(spec.Root.Path, expected_root.to_str().unwrap());
        assert!(spec.Root.Readonly);
    }

    #[test]
    fn template_without_config_names_path() {
        let bundle = tempfile::tempdir().unwrap();

        let error = ContainerTemplate::load(bundle.path()).err().unwrap();

        assert!(error.to_string().contains("config.json"), "{error}");
    }
}
