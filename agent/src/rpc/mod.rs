//! The ttRPC services: `grpc.AgentService` and `grpc.Health`.
//!
//! Each RPC is a function in the file of its group that returns
//! `Result<_, AgentError>`. [`Service::serve`] is the boundary: it logs the start
//! and end of every request at debug, logs each failure once at error, and turns
//! the error into a ttRPC status through [`AgentError::to_ttrpc`].

mod container;
mod control;
mod exec;
mod guest;
mod health;
mod metrics;
pub(crate) mod oom;
mod process;
mod ps;
mod sandbox;
mod stdio;
pub(crate) mod terminal;
mod unimplemented;

use std::future::Future;
use std::sync::Arc;

use protocols::agent;
use protocols::empty::Empty;
use slog::{debug, error, o, Logger};
use tokio::sync::Mutex;
use ttrpc::r#async::TtrpcContext;

use crate::error::AgentError;
use crate::reaper::Reaper;
use crate::sandbox::Sandbox;

pub use health::HealthService;
pub use sandbox::{shared_sandbox, tear_down_everything};

/// State shared by every request.
pub struct Agent {
    pub sandbox: Mutex<Sandbox>,
    pub reaper: Reaper,
    pub paths: stages::GuestPaths,
    pub init: rustjail::InitCommand,
    pub logger: Logger,
    pub container_pipeline: stages::Pipeline<stages::ContainerContext>,
    pub sandbox_pipeline: stages::Pipeline<stages::SandboxContext>,
}

/// The `grpc.AgentService` implementation.
#[derive(Clone)]
pub struct Service {
    agent: Arc<Agent>,
}

/// Ids a request names, for its log records.
#[derive(Default)]
struct RequestIds<'a> {
    container: Option<&'a str>,
    exec: Option<&'a str>,
}

impl<'a> RequestIds<'a> {
    fn none() -> Self {
        RequestIds::default()
    }

    fn container(container: &'a str) -> Self {
        RequestIds {
            container: Some(container),
            exec: None,
        }
    }

    fn process(container: &'a str, exec: &'a str) -> Self {
        RequestIds {
            container: Some(container),
            exec: Some(exec),
        }
    }
}

impl Service {
    pub fn new(agent: Arc<Agent>) -> Service {
        Service { agent }
    }

    /// Runs one request: logs it, awaits `work` and converts its error to a ttRPC status.
    async fn serve<T, F>(
        &self,
        method: &'static str,
        ids: RequestIds<'_>,
        work: impl FnOnce(Arc<Agent>, Logger) -> F,
    ) -> ttrpc::Result<T>
    where
        F: Future<Output = Result<T, AgentError>>,
    {
        let logger = request_logger(&self.agent.logger, method, &ids);
        debug!(logger, "request started");

        let result = work(self.agent.clone(), logger.clone()).await;

        match &result {
            Ok(_) => debug!(logger, "request finished"),
            Err(failure) => error!(logger, "request failed";
                "code" => ?failure.code(), "error" => %failure),
        }
        result.map_err(|failure| failure.to_ttrpc())
    }
}

fn request_logger(root: &Logger, method: &'static str, ids: &RequestIds<'_>) -> Logger {
    let logger = root.new(o!("method" => method));
    let logger = match ids.container {
        Some(container) => logger.new(o!("container" => container.to_string())),
        None => logger,
    };
    match ids.exec {
        Some(exec) => logger.new(o!("exec" => exec.to_string())),
        None => logger,
    }
}

/// Runs `work` as its own task, so that a client that disconnects mid-request cannot
/// cancel a change to the guest halfway: the task finishes and records its result.
async fn detached<T, F>(operation: &'static str, work: F) -> Result<T, AgentError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, AgentError>> + Send + 'static,
{
    tokio::spawn(work).await.map_err(|error| AgentError::Task {
        operation,
        reason: error.to_string(),
    })?
}

crate::agent_service_impl! {
    served {
        async fn create_sandbox(&self, _ctx: &TtrpcContext, req: agent::CreateSandboxRequest) -> ttrpc::Result<Empty> {
            self.serve("CreateSandbox", RequestIds::none(), move |agent, logger| {
                detached("create sandbox", sandbox::create_sandbox(agent, logger, req))
            }).await
        }

        async fn destroy_sandbox(&self, _ctx: &TtrpcContext, _req: agent::DestroySandboxRequest) -> ttrpc::Result<Empty> {
            self.serve("DestroySandbox", RequestIds::none(), move |agent, logger| {
                detached("destroy sandbox", sandbox::destroy_sandbox(agent, logger))
            }).await
        }

        async fn get_guest_details(&self, _ctx: &TtrpcContext, req: agent::GuestDetailsRequest) -> ttrpc::Result<agent::GuestDetailsResponse> {
            self.serve("GetGuestDetails", RequestIds::none(), move |agent, _logger| async move {
                Ok(guest::guest_details(&agent.paths, &req))
            }).await
        }

        async fn get_metrics(&self, _ctx: &TtrpcContext, _req: agent::GetMetricsRequest) -> ttrpc::Result<agent::Metrics> {
            self.serve("GetMetrics", RequestIds::none(), move |agent, _logger| metrics::get_metrics(agent)).await
        }

        async fn create_container(&self, _ctx: &TtrpcContext, req: agent::CreateContainerRequest) -> ttrpc::Result<Empty> {
            let id = req.container_id.clone();
            self.serve("CreateContainer", RequestIds::container(&id), move |agent, logger| {
                detached("create container", container::create_container(agent, logger, req))
            }).await
        }

        async fn start_container(&self, _ctx: &TtrpcContext, req: agent::StartContainerRequest) -> ttrpc::Result<Empty> {
            let id = req.container_id.clone();
            self.serve("StartContainer", RequestIds::container(&id), move |agent, logger| {
                detached("start container", container::start_container(agent, logger, req))
            }).await
        }

        async fn remove_container(&self, _ctx: &TtrpcContext, req: agent::RemoveContainerRequest) -> ttrpc::Result<Empty> {
            let id = req.container_id.clone();
            self.serve("RemoveContainer", RequestIds::container(&id), move |agent, logger| {
                detached("remove container", container::remove_container(agent, logger, req))
            }).await
        }

        async fn wait_process(&self, _ctx: &TtrpcContext, req: agent::WaitProcessRequest) -> ttrpc::Result<agent::WaitProcessResponse> {
            let (id, exec) = (req.container_id.clone(), req.exec_id.clone());
            self.serve("WaitProcess", RequestIds::process(&id, &exec), move |agent, _logger| {
                process::wait_process(agent, req)
            }).await
        }

        async fn signal_process(&self, _ctx: &TtrpcContext, req: agent::SignalProcessRequest) -> ttrpc::Result<Empty> {
            let (id, exec) = (req.container_id.clone(), req.exec_id.clone());
            self.serve("SignalProcess", RequestIds::process(&id, &exec), move |agent, _logger| {
                process::signal_process(agent, req)
            }).await
        }

        async fn read_stdout(&self, _ctx: &TtrpcContext, req: agent::ReadStreamRequest) -> ttrpc::Result<agent::ReadStreamResponse> {
            let (id, exec) = (req.container_id.clone(), req.exec_id.clone());
            self.serve("ReadStdout", RequestIds::process(&id, &exec), move |agent, _logger| {
                stdio::read_stream(agent, req, stdio::Stream::Stdout)
            }).await
        }

        async fn read_stderr(&self, _ctx: &TtrpcContext, req: agent::ReadStreamRequest) -> ttrpc::Result<agent::ReadStreamResponse> {
            let (id, exec) = (req.container_id.clone(), req.exec_id.clone());
            self.serve("ReadStderr", RequestIds::process(&id, &exec), move |agent, _logger| {
                stdio::read_stream(agent, req, stdio::Stream::Stderr)
            }).await
        }

        async fn write_stdin(&self, _ctx: &TtrpcContext, req: agent::WriteStreamRequest) -> ttrpc::Result<agent::WriteStreamResponse> {
            let (id, exec) = (req.container_id.clone(), req.exec_id.clone());
            self.serve("WriteStdin", RequestIds::process(&id, &exec), move |agent, _logger| {
                stdio::write_stdin(agent, req)
            }).await
        }

        async fn close_stdin(&self, _ctx: &TtrpcContext, req: agent::CloseStdinRequest) -> ttrpc::Result<Empty> {
            let (id, exec) = (req.container_id.clone(), req.exec_id.clone());
            self.serve("CloseStdin", RequestIds::process(&id, &exec), move |agent, _logger| {
                stdio::close_stdin(agent, req)
            }).await
        }

        async fn exec_process(&self, _ctx: &TtrpcContext, req: agent::ExecProcessRequest) -> ttrpc::Result<Empty> {
            let (id, exec) = (req.container_id.clone(), req.exec_id.clone());
            self.serve("ExecProcess", RequestIds::process(&id, &exec), move |agent, logger| {
                detached("exec process", exec::exec_process(agent, logger, req))
            }).await
        }

        async fn tty_win_resize(&self, _ctx: &TtrpcContext, req: agent::TtyWinResizeRequest) -> ttrpc::Result<Empty> {
            let (id, exec) = (req.container_id.clone(), req.exec_id.clone());
            self.serve("TtyWinResize", RequestIds::process(&id, &exec), move |agent, _logger| {
                terminal::tty_win_resize(agent, req)
            }).await
        }

        async fn pause_container(&self, _ctx: &TtrpcContext, req: agent::PauseContainerRequest) -> ttrpc::Result<Empty> {
            let id = req.container_id.clone();
            self.serve("PauseContainer", RequestIds::container(&id), move |agent, logger| {
                detached("pause container", control::pause_container(agent, logger, req))
            }).await
        }

        async fn resume_container(&self, _ctx: &TtrpcContext, req: agent::ResumeContainerRequest) -> ttrpc::Result<Empty> {
            let id = req.container_id.clone();
            self.serve("ResumeContainer", RequestIds::container(&id), move |agent, logger| {
                detached("resume container", control::resume_container(agent, logger, req))
            }).await
        }

        async fn update_container(&self, _ctx: &TtrpcContext, req: agent::UpdateContainerRequest) -> ttrpc::Result<Empty> {
            let id = req.container_id.clone();
            self.serve("UpdateContainer", RequestIds::container(&id), move |agent, logger| {
                detached("update container", control::update_container(agent, logger, req))
            }).await
        }

        async fn stats_container(&self, _ctx: &TtrpcContext, req: agent::StatsContainerRequest) -> ttrpc::Result<agent::StatsContainerResponse> {
            let id = req.container_id.clone();
            self.serve("StatsContainer", RequestIds::container(&id), move |agent, _logger| {
                control::stats_container(agent, req)
            }).await
        }

        async fn list_processes(&self, _ctx: &TtrpcContext, req: agent::ListProcessesRequest) -> ttrpc::Result<agent::ListProcessesResponse> {
            let id = req.container_id.clone();
            self.serve("ListProcesses", RequestIds::container(&id), move |agent, _logger| {
                ps::list_processes(agent, req)
            }).await
        }

        async fn get_oom_event(&self, _ctx: &TtrpcContext, req: agent::GetOOMEventRequest) -> ttrpc::Result<agent::OOMEvent> {
            self.serve("GetOOMEvent", RequestIds::none(), move |agent, _logger| {
                oom::get_oom_event(agent, req)
            }).await
        }
    }

    unimplemented {
        update_ephemeral_mounts(agent::UpdateEphemeralMountsRequest) -> Empty = "UpdateEphemeralMounts";
        remove_stale_virtiofs_share_mounts(agent::RemoveStaleVirtiofsShareMountsRequest) -> Empty = "RemoveStaleVirtiofsShareMounts";
        get_diagnostic_data(agent::GetDiagnosticDataRequest) -> agent::GetDiagnosticDataResponse = "GetDiagnosticData";
        update_interface(agent::UpdateInterfaceRequest) -> protocols::types::Interface = "UpdateInterface";
        update_routes(agent::UpdateRoutesRequest) -> agent::Routes = "UpdateRoutes";
        list_interfaces(agent::ListInterfacesRequest) -> agent::Interfaces = "ListInterfaces";
        list_routes(agent::ListRoutesRequest) -> agent::Routes = "ListRoutes";
        add_arp_neighbors(agent::AddARPNeighborsRequest) -> Empty = "AddARPNeighbors";
        get_ip_tables(agent::GetIPTablesRequest) -> agent::GetIPTablesResponse = "GetIPTables";
        set_ip_tables(agent::SetIPTablesRequest) -> agent::SetIPTablesResponse = "SetIPTables";
        mem_agent_memcg_set(agent::MemAgentMemcgConfig) -> Empty = "MemAgentMemcgSet";
        mem_agent_compact_set(agent::MemAgentCompactConfig) -> Empty = "MemAgentCompactSet";
        online_cpu_mem(agent::OnlineCPUMemRequest) -> Empty = "OnlineCPUMem";
        reseed_random_dev(agent::ReseedRandomDevRequest) -> Empty = "ReseedRandomDev";
        mem_hotplug_by_probe(agent::MemHotplugByProbeRequest) -> Empty = "MemHotplugByProbe";
        set_guest_date_time(agent::SetGuestDateTimeRequest) -> Empty = "SetGuestDateTime";
        copy_file(agent::CopyFileRequest) -> Empty = "CopyFile";
        add_swap(agent::AddSwapRequest) -> Empty = "AddSwap";
        add_swap_path(agent::AddSwapPathRequest) -> Empty = "AddSwapPath";
        get_volume_stats(agent::VolumeStatsRequest) -> protocols::csi::VolumeStatsResponse = "GetVolumeStats";
        resize_volume(agent::ResizeVolumeRequest) -> Empty = "ResizeVolume";
        set_policy(agent::SetPolicyRequest) -> Empty = "SetPolicy";
    }
}
