//! Drives the real agent binary through container lifecycles and bad requests.
//!
//! These tests need root: they create namespaces, mounts and cgroups.

mod common;

use std::time::Duration;

use common::{
    busybox_rootfs, cgroup_dirs_named, code_of, container_request, context, RunningAgent,
};
use protocols::agent;
use ttrpc::Code;

fn sandbox_request(id: &str) -> agent::CreateSandboxRequest {
    agent::CreateSandboxRequest {
        sandbox_id: id.to_string(),
        hostname: "berth-sandbox".to_string(),
        ..Default::default()
    }
}

fn read_request(id: &str, exec: &str) -> agent::ReadStreamRequest {
    agent::ReadStreamRequest {
        container_id: id.to_string(),
        exec_id: exec.to_string(),
        len: 4096,
        ..Default::default()
    }
}

fn wait_request(id: &str, exec: &str) -> agent::WaitProcessRequest {
    agent::WaitProcessRequest {
        container_id: id.to_string(),
        exec_id: exec.to_string(),
        ..Default::default()
    }
}

fn start_request(id: &str) -> agent::StartContainerRequest {
    agent::StartContainerRequest {
        container_id: id.to_string(),
        ..Default::default()
    }
}

fn remove_request(id: &str, timeout: u32) -> agent::RemoveContainerRequest {
    agent::RemoveContainerRequest {
        container_id: id.to_string(),
        timeout,
        ..Default::default()
    }
}

fn signal_request(id: &str, exec: &str, signal: u32) -> agent::SignalProcessRequest {
    agent::SignalProcessRequest {
        container_id: id.to_string(),
        exec_id: exec.to_string(),
        signal,
        ..Default::default()
    }
}

/// Reads stdout until an empty response, which is how the agent reports end of file.
async fn read_to_end(client: &protocols::agent_ttrpc::AgentServiceClient, id: &str) -> Vec<u8> {
    let mut output = Vec::new();
    loop {
        let response = client
            .read_stdout(context(), &read_request(id, ""))
            .await
            .expect("read stdout");
        if response.data.is_empty() {
            return output;
        }
        output.extend_from_slice(&response.data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_runs_and_is_removed() {
    let agent = RunningAgent::start();
    let rootfs = agent.dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let client = agent.client().await;
    let id = format!("life-{}", std::process::id());

    let hostname_before = nix::unistd::gethostname().expect("hostname");
    client
        .create_sandbox(context(), &sandbox_request("sb-life"))
        .await
        .expect("create sandbox");
    let request = container_request(
        &id,
        &rootfs,
        &["/bin/sh", "-c", "echo hello; echo oops >&2; exit 3"],
    );
    client
        .create_container(context(), &request)
        .await
        .expect("create container");
    assert!(!cgroup_dirs_named(&id).is_empty(), "container has a cgroup");

    let metrics = client
        .get_metrics(context(), &agent::GetMetricsRequest::new())
        .await
        .expect("get metrics")
        .metrics;
    assert!(
        metrics.contains(&format!(
            "berth_container_stage_duration_seconds{{container=\"{id}\",stage=\"spawn\"}}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "berth_container_stage_duration_seconds{{container=\"{id}\",stage=\"storages\"}}"
        )),
        "{metrics}"
    );
    assert!(metrics.contains("berth_containers 1\n"), "{metrics}");

    client
        .start_container(context(), &start_request(&id))
        .await
        .expect("start container");
    let output = read_to_end(&client, &id).await;
    assert_eq!(output, b"hello\n");
    let errors = client
        .read_stderr(context(), &read_request(&id, ""))
        .await
        .expect("read stderr");
    assert_eq!(errors.data, b"oops\n");

    let waited = client
        .wait_process(context(), &wait_request(&id, ""))
        .await
        .expect("wait");
    assert_eq!(waited.status, 3);
    let by_exec_id = client
        .wait_process(context(), &wait_request(&id, &id))
        .await
        .expect("wait by id");
    assert_eq!(by_exec_id.status, 3);

    let (code, message) = code_of(client.start_container(context(), &start_request(&id)).await);
    assert_eq!(code, Code::FAILED_PRECONDITION, "{message}");

    client
        .remove_container(context(), &remove_request(&id, 10))
        .await
        .expect("remove");
    assert_eq!(cgroup_dirs_named(&id), Vec::<std::path::PathBuf>::new());
    assert!(
        !agent.run_dir.join(&id).exists(),
        "bundle directory removed"
    );
    let (code, _) = code_of(client.wait_process(context(), &wait_request(&id, "")).await);
    assert_eq!(code, Code::NOT_FOUND);

    let metrics = client
        .get_metrics(context(), &agent::GetMetricsRequest::new())
        .await
        .expect("get metrics after remove")
        .metrics;
    assert!(metrics.contains("berth_containers 0\n"), "{metrics}");

    let hostname_after = nix::unistd::gethostname().expect("hostname");
    assert_eq!(
        hostname_after, hostname_before,
        "machine hostname unchanged"
    );

    let logs = agent.logs().join("\n");
    assert!(logs.contains("\"duration_us\""), "stage durations logged");
    assert!(
        !logs.contains("PATH=/bin"),
        "environment values never logged"
    );

    client
        .destroy_sandbox(context(), &agent::DestroySandboxRequest::new())
        .await
        .expect("destroy");
    client
        .destroy_sandbox(context(), &agent::DestroySandboxRequest::new())
        .await
        .expect("second destroy does nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_reaches_container() {
    let agent = RunningAgent::start();
    let rootfs = agent.dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let client = agent.client().await;
    let id = format!("stdin-{}", std::process::id());

    client
        .create_container(context(), &container_request(&id, &rootfs, &["/bin/cat"]))
        .await
        .expect("create container in implicit sandbox");
    client
        .start_container(context(), &start_request(&id))
        .await
        .expect("start");

    let written = client
        .write_stdin(
            context(),
            &agent::WriteStreamRequest {
                container_id: id.clone(),
                data: b"ping\n".to_vec(),
                ..Default::default()
            },
        )
        .await
        .expect("write stdin");
    assert_eq!(written.len, 5);
    client
        .close_stdin(
            context(),
            &agent::CloseStdinRequest {
                container_id: id.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("close stdin");

    assert_eq!(read_to_end(&client, &id).await, b"ping\n");
    let waited = client
        .wait_process(context(), &wait_request(&id, ""))
        .await
        .expect("wait");
    assert_eq!(waited.status, 0);
    client
        .remove_container(context(), &remove_request(&id, 10))
        .await
        .expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_codes() {
    let agent = RunningAgent::start();
    let rootfs = agent.dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let client = agent.client().await;
    let long_id = "x".repeat(257);

    client
        .create_sandbox(context(), &sandbox_request("sb-bad"))
        .await
        .expect("create sandbox");
    let (code, message) = code_of(
        client
            .create_sandbox(context(), &sandbox_request("sb-bad"))
            .await,
    );
    assert_eq!(code, Code::ALREADY_EXISTS, "{message}");

    for bad_id in ["", long_id.as_str(), "a/b", "..", "a b", "../etc"] {
        let request = container_request(bad_id, &rootfs, &["/bin/true"]);
        let (code, message) = code_of(client.create_container(context(), &request).await);
        assert_eq!(code, Code::INVALID_ARGUMENT, "id {bad_id:?}: {message}");
        assert!(
            message.contains(&format!("{bad_id:?}")),
            "message names the id: {message}"
        );
    }

    let no_spec = agent::CreateContainerRequest {
        container_id: "nospec".to_string(),
        ..Default::default()
    };
    let (code, message) = code_of(client.create_container(context(), &no_spec).await);
    assert_eq!(code, Code::INVALID_ARGUMENT, "{message}");
    assert!(message.contains("nospec"), "{message}");

    let mut no_process = container_request("noprocess", &rootfs, &["/bin/true"]);
    no_process.OCI.as_mut().expect("spec").Process = protobuf::MessageField::none();
    let (code, message) = code_of(client.create_container(context(), &no_process).await);
    assert_eq!(code, Code::INVALID_ARGUMENT, "{message}");

    let missing_root = agent.dir.path().join("no-such-rootfs");
    let request = container_request("norootfs", &missing_root, &["/bin/true"]);
    let (code, message) = code_of(client.create_container(context(), &request).await);
    assert_eq!(code, Code::INVALID_ARGUMENT, "{message}");
    assert!(message.contains("no-such-rootfs"), "{message}");

    for method in ["start", "wait", "signal", "read", "remove"] {
        let result = match method {
            "start" => client
                .start_container(context(), &start_request("ghost"))
                .await
                .map(drop),
            "wait" => client
                .wait_process(context(), &wait_request("ghost", ""))
                .await
                .map(drop),
            "signal" => client
                .signal_process(context(), &signal_request("ghost", "", 9))
                .await
                .map(drop),
            "read" => client
                .read_stdout(context(), &read_request("ghost", ""))
                .await
                .map(drop),
            _ => client
                .remove_container(context(), &remove_request("ghost", 1))
                .await
                .map(drop),
        };
        let (code, message) = code_of(result);
        assert_eq!(code, Code::NOT_FOUND, "{method}: {message}");
        assert!(message.contains("ghost"), "{method}: {message}");
    }

    let id = "present";
    client
        .create_container(
            context(),
            &container_request(id, &rootfs, &["/bin/sleep", "1000"]),
        )
        .await
        .expect("create container");
    let (code, message) = code_of(
        client
            .create_container(context(), &container_request(id, &rootfs, &["/bin/true"]))
            .await,
    );
    assert_eq!(code, Code::ALREADY_EXISTS, "{message}");

    let (code, message) = code_of(
        client
            .wait_process(context(), &wait_request(id, "exec-1"))
            .await,
    );
    assert_eq!(code, Code::NOT_FOUND, "{message}");
    assert!(message.contains("exec-1"), "{message}");
    let (code, message) = code_of(
        client
            .signal_process(context(), &signal_request(id, "exec-1", 9))
            .await,
    );
    assert_eq!(code, Code::NOT_FOUND, "{message}");
    let (code, message) = code_of(
        client
            .signal_process(context(), &signal_request(id, "", 65))
            .await,
    );
    assert_eq!(code, Code::INVALID_ARGUMENT, "{message}");
    assert!(message.contains("65"), "{message}");

    let (code, message) = code_of(
        client
            .exec_process(context(), &agent::ExecProcessRequest::new())
            .await,
    );
    assert_eq!(code, Code::INVALID_ARGUMENT, "{message}");
    assert!(message.contains("exec id"), "{message}");
    let (code, message) = code_of(
        client
            .list_routes(context(), &agent::ListRoutesRequest::new())
            .await,
    );
    assert_eq!(code, Code::UNIMPLEMENTED);
    assert_eq!(message, "ListRoutes is not implemented");
    let (code, message) = code_of(
        client
            .set_policy(context(), &agent::SetPolicyRequest::new())
            .await,
    );
    assert_eq!(code, Code::UNIMPLEMENTED);
    assert_eq!(message, "SetPolicy is not implemented");

    client
        .start_container(context(), &start_request(id))
        .await
        .expect("start");
    let (code, message) = code_of(client.start_container(context(), &start_request(id)).await);
    assert_eq!(code, Code::FAILED_PRECONDITION, "{message}");
    client
        .remove_container(context(), &remove_request(id, 10))
        .await
        .expect("remove running container");
    assert_eq!(cgroup_dirs_named(id), Vec::<std::path::PathBuf>::new());

    let leftovers: Vec<_> = std::fs::read_dir(&agent.run_dir)
        .map(|entries| entries.flatten().map(|entry| entry.file_name()).collect())
        .unwrap_or_default();
    let container_dirs: Vec<_> = leftovers
        .iter()
        .filter(|name| name.to_str() != Some("sandbox"))
        .collect();
    assert!(
        container_dirs.is_empty(),
        "run dir leftovers: {leftovers:?}"
    );

    let health = agent.health().await;
    let status = health
        .check(context(), &protocols::health::CheckRequest::new())
        .await
        .expect("agent still serves");
    assert_eq!(
        status.status.enum_value(),
        Ok(protocols::health::health_check_response::ServingStatus::SERVING)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_program_fails_without_hang() {
    let agent = RunningAgent::start();
    let rootfs = agent.dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let client = agent.client().await;
    let id = "noprogram";

    let request = container_request(id, &rootfs, &["/bin/no-such-program"]);
    let created = client.create_container(context(), &request).await;
    if created.is_ok() {
        let (code, message) = code_of(client.start_container(context(), &start_request(id)).await);
        assert_ne!(code, Code::OK, "{message}");
        assert!(message.contains("no-such-program"), "{message}");
        client
            .remove_container(context(), &remove_request(id, 10))
            .await
            .expect("remove");
    } else {
        let (code, message) = code_of(created);
        assert!(message.contains("no-such-program"), "{code:?}: {message}");
    }

    assert_eq!(cgroup_dirs_named(id), Vec::<std::path::PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_mid_wait() {
    let agent = RunningAgent::start();
    let rootfs = agent.dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let client = agent.client().await;
    let id = "disconnect";

    client
        .create_container(
            context(),
            &container_request(id, &rootfs, &["/bin/sleep", "1000"]),
        )
        .await
        .expect("create");
    client
        .start_container(context(), &start_request(id))
        .await
        .expect("start");

    let leaving = agent.client().await;
    let mut pending =
        tokio::spawn(async move { leaving.wait_process(context(), &wait_request(id, "")).await });
    let early = tokio::time::timeout(Duration::from_millis(200), &mut pending).await;
    assert!(
        early.is_err(),
        "WaitProcess returned while the container runs"
    );
    pending.abort();
    let _ = pending.await;

    let health = agent.health().await;
    health
        .check(context(), &protocols::health::CheckRequest::new())
        .await
        .expect("agent serves after a client left mid-wait");

    client
        .signal_process(context(), &signal_request(id, "", 9))
        .await
        .expect("kill container");
    let waited = client
        .wait_process(context(), &wait_request(id, ""))
        .await
        .expect("wait");
    assert_eq!(waited.status, 128 + 9);
    client
        .signal_process(context(), &signal_request(id, "", 9))
        .await
        .expect("signal after exit is a no-op");
    client
        .remove_container(context(), &remove_request(id, 10))
        .await
        .expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_cleans_up() {
    let mut agent = RunningAgent::start();
    let rootfs = agent.dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let id = format!("term-{}", std::process::id());

    {
        let client = agent.client().await;
        client
            .create_sandbox(context(), &sandbox_request("sb-term"))
            .await
            .expect("create sandbox");
        client
            .create_container(
                context(),
                &container_request(&id, &rootfs, &["/bin/sleep", "1000"]),
            )
            .await
            .expect("create");
        client
            .start_container(context(), &start_request(&id))
            .await
            .expect("start");
    }
    assert!(!cgroup_dirs_named(&id).is_empty(), "container has a cgroup");

    let status = agent.terminate();

    assert_eq!(status.code(), Some(0), "log:\n{}", agent.logs().join("\n"));
    assert!(!agent.socket.exists(), "socket file removed");
    assert_eq!(cgroup_dirs_named(&id), Vec::<std::path::PathBuf>::new());
    assert!(
        !agent.run_dir.join(&id).exists(),
        "bundle directory removed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_version_and_details() {
    let agent = RunningAgent::start();
    let health = agent.health().await;
    let client = agent.client().await;

    let version = health
        .version(context(), &protocols::health::CheckRequest::new())
        .await
        .expect("version");
    assert_eq!(version.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(version.grpc_version, "0.0.1");

    let details = client
        .get_guest_details(
            context(),
            &agent::GuestDetailsRequest {
                mem_block_size: true,
                mem_hotplug_probe: true,
                ..Default::default()
            },
        )
        .await
        .expect("guest details");
    let agent_details = details.agent_details.as_ref().expect("agent details");
    assert_eq!(agent_details.version, env!("CARGO_PKG_VERSION"));
    assert!(!agent_details.init_daemon, "the test agent is not pid 1");
    assert_eq!(agent_details.storage_handlers, vec!["ephemeral", "local"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_socket_is_replaced() {
    let agent = RunningAgent::start_after(&[], |socket| {
        let listener = std::os::unix::net::UnixListener::bind(socket).expect("bind stale socket");
        drop(listener);
        assert!(
            socket.exists(),
            "stale socket file stays after its listener closed"
        );
    });

    let health = agent.health().await;
    health
        .check(context(), &protocols::health::CheckRequest::new())
        .await
        .expect("agent serves on the replaced socket");
}
