//! RPCs on a running container: exec, pause and resume, updates, statistics,
//! process lists, terminal sizes and OOM events.

use protocols::agent::{
    ExecProcessRequest, GetOOMEventRequest, ListProcessesRequest, PauseContainerRequest,
    ResumeContainerRequest, StatsContainerRequest, StatsContainerResponse, TtyWinResizeRequest,
    UpdateContainerRequest,
};
use ttrpc::context;

use super::{rpc_error, Agent};
use crate::error::Result;

impl Agent {
    pub async fn exec_process(&self, request: &ExecProcessRequest) -> Result<()> {
        self.agent
            .exec_process(self.bounded(), request)
            .await
            .map_err(rpc_error("ExecProcess"))?;
        Ok(())
    }

    pub async fn pause_container(&self, container_id: &str) -> Result<()> {
        let mut request = PauseContainerRequest::new();
        request.container_id = container_id.to_string();

        self.agent
            .pause_container(self.bounded(), &request)
            .await
            .map_err(rpc_error("PauseContainer"))?;
        Ok(())
    }

    pub async fn resume_container(&self, container_id: &str) -> Result<()> {
        let mut request = ResumeContainerRequest::new();
        request.container_id = container_id.to_string();

        self.agent
            .resume_container(self.bounded(), &request)
            .await
            .map_err(rpc_error("ResumeContainer"))?;
        Ok(())
    }

    pub async fn update_container(&self, request: &UpdateContainerRequest) -> Result<()> {
        self.agent
            .update_container(self.bounded(), request)
            .await
            .map_err(rpc_error("UpdateContainer"))?;
        Ok(())
    }

    pub async fn stats_container(&self, container_id: &str) -> Result<StatsContainerResponse> {
        let mut request = StatsContainerRequest::new();
        request.container_id = container_id.to_string();

        self.agent
            .stats_container(self.bounded(), &request)
            .await
            .map_err(rpc_error("StatsContainer"))
    }

    /// Returns the container's processes as the agent formats them: a `ps` table or
    /// a JSON array of pids.
    pub async fn list_processes(
        &self,
        container_id: &str,
        format: &str,
        args: &[String],
    ) -> Result<Vec<u8>> {
        let mut request = ListProcessesRequest::new();
        request.container_id = container_id.to_string();
        request.format = format.to_string();
        request.args = args.to_vec();

        let response = self
            .agent
            .list_processes(self.bounded(), &request)
            .await
            .map_err(rpc_error("ListProcesses"))?;
        Ok(response.process_list)
    }

    pub async fn resize_terminal(
        &self,
        container_id: &str,
        exec_id: &str,
        rows: u32,
        columns: u32,
    ) -> Result<()> {
        let mut request = TtyWinResizeRequest::new();
        request.container_id = container_id.to_string();
        request.exec_id = exec_id.to_string();
        request.row = rows;
        request.column = columns;

        self.agent
            .tty_win_resize(self.bounded(), &request)
            .await
            .map_err(rpc_error("TtyWinResize"))?;
        Ok(())
    }

    /// Waits for the next OOM of any container in the sandbox and returns the
    /// container's id. The call has no deadline, because OOMs may never come.
    pub async fn oom_event(&self) -> Result<String> {
        let request = GetOOMEventRequest::new();

        let event = self
            .agent
            .get_oom_event(context::with_timeout(0), &request)
            .await
            .map_err(rpc_error("GetOOMEvent"))?;
        Ok(event.container_id)
    }
}
