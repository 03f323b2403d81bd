//! Drives the real agent binary through the requests on a running container: exec,
//! pause and resume, live updates, statistics, process lists, terminals and OOM
//! events.
//!
//! These tests need root: they create namespaces, mounts and cgroups.

mod common;

use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    busybox_rootfs, cgroup_dirs_named, code_of, container_request, context, RunningAgent,
};
use protobuf::MessageField;
use protocols::agent;
use protocols::agent_ttrpc::AgentServiceClient;
use ttrpc::Code;

/// Applets these tests need beyond the harness's set.
const EXTRA_APPLETS: [&str; 5] = ["id", "head", "tail", "stty", "read"];

/// Removes what a failed test left of container `id`: kills the processes in its
/// cgroups and removes the directories. A test that removed its container leaves
/// nothing to do.
struct CgroupCleanup {
    id: String,
}

impl Drop for CgroupCleanup {
    fn drop(&mut self) {
        let dirs = cgroup_dirs_named(&self.id);
        for dir in &dirs {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            for pid in procs
                .lines()
                .filter_map(|line| line.trim().parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }

        // Killed processes leave their cgroup a moment after SIGKILL, and the kernel
        // offers no event for that here, so removal is retried for a bounded time.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        for dir in dirs {
            while std::fs::remove_dir(&dir).is_err()
                && dir.exists()
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// One running container whose init sleeps, in its own agent.
struct Running {
    agent: RunningAgent,
    client: AgentServiceClient,
    id: String,
    _cleanup: CgroupCleanup,
}

impl Running {
    /// Creates and starts a container running `args`, after `adjust` changed the request.
    async fn start(
        name: &str,
        args: &[&str],
        adjust: impl FnOnce(&mut agent::CreateContainerRequest),
    ) -> Running {
        let agent = RunningAgent::start();
        let rootfs = agent.dir.path().join("rootfs");
        prepare_rootfs(&rootfs);
        let client = agent.client().await;
        let id = format!("{name}-{}", std::process::id());
        let cleanup = CgroupCleanup { id: id.clone() };

        let mut request = container_request(&id, &rootfs, args);
        adjust(&mut request);
        client
            .create_container(context(), &request)
            .await
            .expect("create container");
        client
            .start_container(context(), &start_request(&id))
            .await
            .expect("start container");

        Running {
            agent,
            client,
            id,
            _cleanup: cleanup,
        }
    }

    /// Removes the container, so its cgroup is gone before the agent stops.
    async fn remove(self) {
        let request = agent::RemoveContainerRequest {
            container_id: self.id.clone(),
            timeout: 10,
            ..Default::default()
        };
        self.client
            .remove_container(context(), &request)
            .await
            .expect("remove container");
        assert_eq!(cgroup_dirs_named(&self.id), Vec::<PathBuf>::new());
        drop(self.agent);
    }

    /// Starts `args` in the container under `exec_id` as user `uid`.
    async fn exec(&self, exec_id: &str, args: &[&str], uid: u32, terminal: bool) {
        let request = exec_request(&self.id, exec_id, args, uid, terminal);
        self.client
            .exec_process(context(), &request)
            .await
            .expect("exec process");
    }

    /// Reads stdout of `exec_id` until an empty response, the end of file.
    async fn read_to_end(&self, exec_id: &str) -> String {
        let mut output = Vec::new();
        loop {
            let response = self
                .client
                .read_stdout(context(), &read_request(&self.id, exec_id))
                .await
                .expect("read stdout");
            if response.data.is_empty() {
                return String::from_utf8_lossy(&output).into_owned();
            }
            output.extend_from_slice(&response.data);
        }
    }

    /// Reads stdout of `exec_id` until the output contains `expected`.
    async fn read_until(&self, exec_id: &str, expected: &str) -> String {
        let mut output = Vec::new();
        loop {
            let response = self
                .client
                .read_stdout(context(), &read_request(&self.id, exec_id))
                .await
                .expect("read stdout");
            output.extend_from_slice(&response.data);
            let text = String::from_utf8_lossy(&output).into_owned();
            if text.contains(expected) {
                return text;
            }
            assert!(
                !response.data.is_empty(),
                "output ended without {expected:?}: {text:?}"
            );
        }
    }

    async fn wait(&self, exec_id: &str) -> i32 {
        let request = agent::WaitProcessRequest {
            container_id: self.id.clone(),
            exec_id: exec_id.to_string(),
            ..Default::default()
        };
        self.client
            .wait_process(context(), &request)
            .await
            .expect("wait process")
            .status
    }

    async fn stats(&self) -> agent::StatsContainerResponse {
        let request = agent::StatsContainerRequest {
            container_id: self.id.clone(),
            ..Default::default()
        };
        self.client
            .stats_container(context(), &request)
            .await
            .expect("stats container")
    }

    /// Returns the container's directory in the v1 hierarchy `controller`.
    fn cgroup_dir(&self, controller: &str) -> PathBuf {
        cgroup_dirs_named(&self.id)
            .into_iter()
            .find(|dir| dir.starts_with(Path::new("/sys/fs/cgroup").join(controller)))
            .unwrap_or_else(|| panic!("container has a {controller} cgroup"))
    }
}

fn prepare_rootfs(rootfs: &Path) {
    busybox_rootfs(rootfs);
    for applet in EXTRA_APPLETS {
        let link = rootfs.join("bin").join(applet);
        if !link.exists() {
            symlink("busybox", link).expect("link applet");
        }
    }
}

fn start_request(id: &str) -> agent::StartContainerRequest {
    agent::StartContainerRequest {
        container_id: id.to_string(),
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

fn exec_request(
    id: &str,
    exec_id: &str,
    args: &[&str],
    uid: u32,
    terminal: bool,
) -> agent::ExecProcessRequest {
    let mut process = protocols::oci::Process::new();
    process.Args = args.iter().map(|arg| arg.to_string()).collect();
    process.Env = vec!["PATH=/bin".to_string()];
    process.Cwd = "/".to_string();
    process.Terminal = terminal;
    let mut user = protocols::oci::User::new();
    user.UID = uid;
    user.GID = uid;
    process.User = MessageField::some(user);

    agent::ExecProcessRequest {
        container_id: id.to_string(),
        exec_id: exec_id.to_string(),
        process: MessageField::some(process),
        ..Default::default()
    }
}

/// Adds a `/dev` tmpfs and a devpts instance, where the container's terminals come from.
fn add_devpts(request: &mut agent::CreateContainerRequest) {
    let spec = request.OCI.mut_or_insert_default();
    let mount = |destination: &str, kind: &str, options: &[&str]| protocols::oci::Mount {
        destination: destination.to_string(),
        source: kind.to_string(),
        type_: kind.to_string(),
        options: options.iter().map(|option| option.to_string()).collect(),
        ..Default::default()
    };
    spec.Mounts.push(mount(
        "/dev",
        "tmpfs",
        &["nosuid", "strictatime", "mode=755", "size=65536k"],
    ));
    spec.Mounts.push(mount(
        "/dev/pts",
        "devpts",
        &[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
        ],
    ));
}

fn set_memory_limit(request: &mut agent::CreateContainerRequest, bytes: i64) {
    let linux = request
        .OCI
        .mut_or_insert_default()
        .Linux
        .mut_or_insert_default();
    let resources = linux.Resources.mut_or_insert_default();
    resources.Memory.mut_or_insert_default().Limit = bytes;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_output_status_and_user() {
    let running = Running::start("exec", &["/bin/sleep", "100"], |_| {}).await;

    running
        .exec(
            "e1",
            &["/bin/sh", "-c", "id -u; id -g; echo from-exec; exit 7"],
            1000,
            false,
        )
        .await;

    let output = running.read_to_end("e1").await;
    assert_eq!(output, "1000\n1000\nfrom-exec\n");
    assert_eq!(running.wait("e1").await, 7);
    let init_alive = running
        .client
        .signal_process(context(), &signal_request(&running.id, "", 0))
        .await;
    assert!(init_alive.is_ok(), "init still runs: {init_alive:?}");

    running.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_ids_checked() {
    let running = Running::start("execid", &["/bin/sleep", "100"], |_| {}).await;
    let client = &running.client;
    let id = running.id.clone();

    let (code, message) = code_of(
        client
            .wait_process(
                context(),
                &agent::WaitProcessRequest {
                    container_id: id.clone(),
                    exec_id: "missing".to_string(),
                    ..Default::default()
                },
            )
            .await,
    );
    assert_eq!(code, Code::NOT_FOUND, "{message}");
    assert!(message.contains("missing"), "{message}");
    let (code, _) = code_of(
        client
            .read_stdout(context(), &read_request(&id, "missing"))
            .await,
    );
    assert_eq!(code, Code::NOT_FOUND);
    let (code, _) = code_of(
        client
            .signal_process(context(), &signal_request(&id, "missing", 15))
            .await,
    );
    assert_eq!(code, Code::NOT_FOUND);

    let (code, _) = code_of(
        client
            .exec_process(context(), &exec_request(&id, &id, &["/bin/true"], 0, false))
            .await,
    );
    assert_eq!(code, Code::INVALID_ARGUMENT);
    running.exec("dup", &["/bin/sleep", "100"], 0, false).await;
    let (code, _) = code_of(
        client
            .exec_process(
                context(),
                &exec_request(&id, "dup", &["/bin/true"], 0, false),
            )
            .await,
    );
    assert_eq!(code, Code::ALREADY_EXISTS);
    let (code, message) = code_of(
        client
            .exec_process(
                context(),
                &exec_request("nobody", "e1", &["/bin/true"], 0, false),
            )
            .await,
    );
    assert_eq!(code, Code::NOT_FOUND, "{message}");
    let (code, message) = code_of(
        client
            .exec_process(
                context(),
                &exec_request(&id, "e2", &["/bin/no-such-program"], 0, false),
            )
            .await,
    );
    assert_ne!(code, Code::OK, "{message}");

    client
        .signal_process(context(), &signal_request(&id, "dup", 9))
        .await
        .expect("signal exec");
    assert_eq!(running.wait("dup").await, 128 + 9);

    running.remove().await;
}

fn signal_request(id: &str, exec: &str, signal: u32) -> agent::SignalProcessRequest {
    agent::SignalProcessRequest {
        container_id: id.to_string(),
        exec_id: exec.to_string(),
        signal,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_and_resume_freeze_cgroup() {
    let running = Running::start("pause", &["/bin/sleep", "100"], |_| {}).await;
    let freezer = running.cgroup_dir("freezer").join("freezer.state");

    running
        .client
        .pause_container(
            context(),
            &agent::PauseContainerRequest {
                container_id: running.id.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("pause");
    let paused = std::fs::read_to_string(&freezer).expect("read freezer state");
    assert_eq!(paused.trim(), "FROZEN");

    running
        .client
        .resume_container(
            context(),
            &agent::ResumeContainerRequest {
                container_id: running.id.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("resume");
    let resumed = std::fs::read_to_string(&freezer).expect("read freezer state");
    assert_eq!(resumed.trim(), "THAWED");

    // A resumed container runs new processes again.
    running
        .exec("after", &["/bin/echo", "thawed"], 0, false)
        .await;
    assert_eq!(running.read_to_end("after").await, "thawed\n");

    running.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_container_rejects_exec_and_is_removable() {
    let running = Running::start("frozen", &["/bin/sleep", "100"], |_| {}).await;
    running
        .client
        .pause_container(
            context(),
            &agent::PauseContainerRequest {
                container_id: running.id.clone(),
                ..Default::default()
            },
        )
        .await
        .expect("pause");

    let request = exec_request(&running.id, "while-paused", &["/bin/true"], 0, false);
    let error = running
        .client
        .exec_process(context(), &request)
        .await
        .expect_err("exec into a paused container");

    let status = match error {
        ttrpc::Error::RpcStatus(status) => status,
        other => panic!("expected an RPC status, got {other:?}"),
    };
    assert_eq!(status.code(), ttrpc::Code::FAILED_PRECONDITION);
    assert!(status.message().contains("paused"), "{}", status.message());

    // Removal kills the frozen init and must thaw it, or the kill never lands.
    running.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_changes_memory_limit() {
    let running = Running::start("update", &["/bin/sleep", "100"], |_| {}).await;
    let limit_file = running.cgroup_dir("memory").join("memory.limit_in_bytes");

    let mut memory = protocols::oci::LinuxMemory::new();
    memory.Limit = 96 << 20;
    let mut pids = protocols::oci::LinuxPids::new();
    pids.Limit = 50;
    let mut resources = protocols::oci::LinuxResources::new();
    resources.Memory = MessageField::some(memory);
    resources.Pids = MessageField::some(pids);
    running
        .client
        .update_container(
            context(),
            &agent::UpdateContainerRequest {
                container_id: running.id.clone(),
                resources: MessageField::some(resources),
                ..Default::default()
            },
        )
        .await
        .expect("update");

    let limit = std::fs::read_to_string(&limit_file).expect("read memory limit");
    assert_eq!(limit.trim(), (96u64 << 20).to_string());
    let pids_max = std::fs::read_to_string(running.cgroup_dir("pids").join("pids.max"))
        .expect("read pids limit");
    assert_eq!(pids_max.trim(), "50");
    let stats = running.stats().await;
    assert_eq!(stats.cgroup_stats.memory_stats.usage.limit, 96 << 20);
    assert_eq!(stats.cgroup_stats.pids_stats.limit, 50);

    running.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_report_usage() {
    let running = Running::start("stats", &["/bin/sleep", "100"], |_| {}).await;
    running
        .exec(
            "work",
            &[
                "/bin/sh",
                "-c",
                "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done",
            ],
            0,
            false,
        )
        .await;
    assert_eq!(running.wait("work").await, 0);

    let stats = running.stats().await.cgroup_stats;

    assert!(stats.cpu_stats.cpu_usage.total_usage > 0, "{stats:?}");
    assert!(stats.memory_stats.usage.usage > 0, "{stats:?}");
    assert!(stats.pids_stats.current >= 1, "{stats:?}");
    let (code, _) = code_of(
        running
            .client
            .stats_container(
                context(),
                &agent::StatsContainerRequest {
                    container_id: "nobody".to_string(),
                    ..Default::default()
                },
            )
            .await,
    );
    assert_eq!(code, Code::NOT_FOUND);

    running.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_processes_shows_init() {
    let running = Running::start("ps", &["/bin/sleep", "4242"], |_| {}).await;
    let request = |format: &str| agent::ListProcessesRequest {
        container_id: running.id.clone(),
        format: format.to_string(),
        ..Default::default()
    };

    let json = running
        .client
        .list_processes(context(), &request("json"))
        .await
        .expect("list processes as json")
        .process_list;
    let pids: Vec<i32> = serde_json::from_slice(&json).expect("JSON array of pids");
    assert_eq!(pids.len(), 1, "{pids:?}");
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", pids[0])).expect("read cmdline");
    assert_eq!(cmdline, b"/bin/sleep\x004242\x00");

    let table = running
        .client
        .list_processes(context(), &request("table"))
        .await
        .expect("list processes as table")
        .process_list;
    let table = String::from_utf8(table).expect("utf-8 table");
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 2, "{table}");
    assert!(lines[0].contains("PID"), "{table}");
    assert!(lines[1].contains("sleep 4242"), "{table}");

    let (code, _) = code_of(
        running
            .client
            .list_processes(context(), &request("yaml"))
            .await,
    );
    assert_eq!(code, Code::INVALID_ARGUMENT);

    running.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_output_and_resize() {
    let script = "echo start; stty size; read line; stty size; echo got-$line";
    let running = Running::start("tty", &["/bin/sh", "-c", script], |request| {
        add_devpts(request);
        request
            .OCI
            .mut_or_insert_default()
            .Process
            .mut_or_insert_default()
            .Terminal = true;
    })
    .await;
    let id = running.id.clone();

    // A new terminal has no size, so "30 100" can only come from the resize.
    running.read_until("", "start").await;
    running
        .client
        .tty_win_resize(
            context(),
            &agent::TtyWinResizeRequest {
                container_id: id.clone(),
                exec_id: String::new(),
                row: 30,
                column: 100,
                ..Default::default()
            },
        )
        .await
        .expect("resize terminal");
    running
        .client
        .write_stdin(
            context(),
            &agent::WriteStreamRequest {
                container_id: id.clone(),
                exec_id: String::new(),
                data: b"hello\n".to_vec(),
                ..Default::default()
            },
        )
        .await
        .expect("write to terminal");

    let output = running.read_to_end("").await;
    assert!(output.contains("30 100"), "{output:?}");
    assert!(output.contains("got-hello"), "{output:?}");
    assert_eq!(running.wait("").await, 0);
    let stderr = running
        .client
        .read_stderr(context(), &read_request(&id, ""))
        .await
        .expect("read stderr of a terminal");
    assert!(stderr.data.is_empty());

    running.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_terminal_resize() {
    let running = Running::start("exectty", &["/bin/sleep", "100"], add_devpts).await;
    running
        .exec("t1", &["/bin/sh", "-c", "read line; stty size"], 0, true)
        .await;

    running
        .client
        .tty_win_resize(
            context(),
            &agent::TtyWinResizeRequest {
                container_id: running.id.clone(),
                exec_id: "t1".to_string(),
                row: 12,
                column: 34,
                ..Default::default()
            },
        )
        .await
        .expect("resize exec terminal");
    running
        .client
        .write_stdin(
            context(),
            &agent::WriteStreamRequest {
                container_id: running.id.clone(),
                exec_id: "t1".to_string(),
                data: b"\n".to_vec(),
                ..Default::default()
            },
        )
        .await
        .expect("write to exec terminal");

    let output = running.read_to_end("t1").await;
    assert!(output.contains("12 34"), "{output:?}");
    assert_eq!(running.wait("t1").await, 0);

    running
        .exec("plain", &["/bin/sleep", "100"], 0, false)
        .await;
    let (code, message) = code_of(
        running
            .client
            .tty_win_resize(
                context(),
                &agent::TtyWinResizeRequest {
                    container_id: running.id.clone(),
                    exec_id: "plain".to_string(),
                    row: 1,
                    column: 1,
                    ..Default::default()
                },
            )
            .await,
    );
    assert_eq!(code, Code::FAILED_PRECONDITION, "{message}");

    running.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oom_event_names_container() {
    let agent = RunningAgent::start();
    let rootfs = agent.dir.path().join("rootfs");
    prepare_rootfs(&rootfs);
    let client = agent.client().await;
    let id = format!("oom-{}", std::process::id());
    let _cleanup = CgroupCleanup { id: id.clone() };

    // tail keeps its whole input when there is no newline, so it grows past the limit.
    let mut request = container_request(
        &id,
        &rootfs,
        &["/bin/sh", "-c", "head -c 64m /dev/zero | tail"],
    );
    set_memory_limit(&mut request, 8 << 20);
    client
        .create_container(context(), &request)
        .await
        .expect("create container");

    let waiter = client.clone();
    let event = tokio::spawn(async move {
        waiter
            .get_oom_event(context(), &agent::GetOOMEventRequest::new())
            .await
    });
    client
        .start_container(context(), &start_request(&id))
        .await
        .expect("start container");

    let event = tokio::time::timeout(Duration::from_secs(30), event)
        .await
        .expect("OOM event in time")
        .expect("event task")
        .expect("get OOM event");
    assert_eq!(event.container_id, id);

    client
        .remove_container(
            context(),
            &agent::RemoveContainerRequest {
                container_id: id.clone(),
                timeout: 10,
                ..Default::default()
            },
        )
        .await
        .expect("remove container");
    assert_eq!(cgroup_dirs_named(&id), Vec::<PathBuf>::new());
}
