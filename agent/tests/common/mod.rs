//! Harness for tests that run the real `berth-agent` binary.
//!
//! [`RunningAgent`] starts the agent isolated (`--isolate`) on a unix socket in a
//! temporary directory, next to a fake kernel command line and a run directory.
//! Dropping it kills the agent by pid, so no agent outlives a test that fails.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocols::agent_ttrpc::AgentServiceClient;
use protocols::health_ttrpc::HealthClient;
use tempfile::TempDir;

/// Maximum time a test waits for the agent to start, stop, or complete one request.
pub const TIMEOUT: Duration = Duration::from_secs(30);

/// Applets linked into the test root file system.
const APPLETS: [&str; 8] = ["sh", "echo", "cat", "sleep", "true", "false", "ls", "env"];

/// A `berth-agent` process with its own temporary guest directories.
pub struct RunningAgent {
    pub dir: TempDir,
    pub socket: PathBuf,
    pub run_dir: PathBuf,
    child: Option<Child>,
    logs: Arc<Mutex<Vec<String>>>,
}

impl RunningAgent {
    /// Starts the agent and returns once it logged that it serves.
    pub fn start() -> RunningAgent {
        RunningAgent::start_with(&[])
    }

    /// Starts the agent with extra flags.
    pub fn start_with(extra: &[&str]) -> RunningAgent {
        RunningAgent::start_after(extra, |_| {})
    }

    /// Starts the agent with extra flags after `prepare` ran on the socket path.
    pub fn start_after(extra: &[&str], prepare: impl FnOnce(&Path)) -> RunningAgent {
        let dir = tempfile::tempdir().expect("create temporary directory");
        let socket = dir.path().join("agent.sock");
        prepare(&socket);
        let run_dir = dir.path().join("run");
        let cmdline = dir.path().join("cmdline");
        std::fs::write(&cmdline, "console=hvc0 agent.log=debug\n").expect("write fake cmdline");

        let mut child = Command::new(env!("CARGO_BIN_EXE_berth-agent"))
            .arg("--isolate")
            .arg("--server-addr")
            .arg(format!("unix://{}", socket.display()))
            .arg("--run-dir")
            .arg(&run_dir)
            .arg("--cgroup-root")
            .arg("/sys/fs/cgroup")
            .arg("--kernel-cmdline")
            .arg(&cmdline)
            .args(extra)
            .env_remove("KATA_AGENT_SERVER_ADDR")
            .env_remove("KATA_AGENT_LOG_LEVEL")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn berth-agent");

        let logs = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("agent stderr");
        let thread_logs = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("agent serving") {
                    let _ = ready_tx.send(());
                }
                thread_logs.lock().unwrap().push(line);
            }
        });

        let agent = RunningAgent {
            dir,
            socket,
            run_dir,
            child: Some(child),
            logs,
        };
        if ready_rx.recv_timeout(TIMEOUT).is_err() {
            panic!(
                "agent did not start serving; its log:\n{}",
                agent.logs().join("\n")
            );
        }
        agent
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("agent running").id() as i32
    }

    /// Returns the agent's log lines so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Connects a new client.
    pub async fn client(&self) -> AgentServiceClient {
        AgentServiceClient::new(self.connect().await)
    }

    /// Connects a new health client.
    pub async fn health(&self) -> HealthClient {
        HealthClient::new(self.connect().await)
    }

    async fn connect(&self) -> ttrpc::r#async::Client {
        ttrpc::r#async::Client::connect(&format!("unix://{}", self.socket.display()))
            .await
            .expect("connect to agent")
    }

    /// Sends SIGTERM and waits for the agent to exit.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("agent running");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .expect("send SIGTERM");

        let (done_tx, done_rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let status = child.wait();
            let _ = done_tx.send(());
            (child, status)
        });
        if done_rx.recv_timeout(TIMEOUT).is_err() {
            panic!(
                "agent did not exit after SIGTERM; its log:\n{}",
                self.logs().join("\n")
            );
        }
        let (_, status) = waiter.join().expect("wait thread");
        status.expect("wait for agent")
    }
}

impl Drop for RunningAgent {
    /// Kills the agent if a test left it running, then unmounts whatever it left under
    /// the temporary directory, so that a failed test leaks no mounts.
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }

        for mount_point in mounts_under(self.dir.path()).into_iter().rev() {
            let _ = nix::mount::umount2(mount_point.as_str(), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Returns the mount points at or below `dir` in mount order, as /proc/self/mountinfo lists them.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("read mountinfo");
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|mount_point| Path::new(mount_point).starts_with(dir))
        .map(str::to_string)
        .collect()
}

/// Request context with the harness timeout, so a hung request fails the test.
pub fn context() -> ttrpc::context::Context {
    ttrpc::context::with_duration(TIMEOUT)
}

/// Builds a busybox root file system at `root`.
pub fn busybox_rootfs(root: &Path) {
    let bin = root.join("bin");
    if bin.join("busybox").is_file() {
        return;
    }
    std::fs::create_dir_all(&bin).expect("create rootfs/bin");
    for dir in ["proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(root.join(dir)).expect("create rootfs dir");
    }

    std::fs::copy(busybox(), bin.join("busybox")).expect("copy busybox");
    for applet in APPLETS {
        symlink("busybox", bin.join(applet)).expect("link applet");
    }
}

fn busybox() -> PathBuf {
    for candidate in ["/bin/busybox", "/usr/bin/busybox"] {
        if Path::new(candidate).is_file() {
            return PathBuf::from(candidate);
        }
    }
    panic!("busybox not found: install busybox-static");
}

/// Builds a CreateContainer request for `args` in the busybox rootfs at `rootfs`.
pub fn container_request(
    id: &str,
    rootfs: &Path,
    args: &[&str],
) -> protocols::agent::CreateContainerRequest {
    let json = serde_json::json!({
        "container_id": id,
        "OCI": {
            "Version": "1.1.0",
            "Process": {
                "Terminal": false,
                "User": { "UID": 0, "GID": 0 },
                "Args": args,
                "Env": ["PATH=/bin"],
                "Cwd": "/",
            },
            "Root": { "Path": rootfs.display().to_string(), "Readonly": false },
            "Hostname": "berth-test",
            "Mounts": [
                { "destination": "/proc", "source": "proc", "type_": "proc", "options": [] },
            ],
            "Linux": {
                "Namespaces": [
                    { "Type": "pid", "Path": "" },
                    { "Type": "mount", "Path": "" },
                    { "Type": "ipc", "Path": "" },
                    { "Type": "uts", "Path": "" },
                ],
            },
        },
    });

    protocols::parse_request(&json.to_string()).expect("test request parses")
}

/// Returns every cgroup directory named `id`, in any hierarchy, up to four levels deep.
pub fn cgroup_dirs_named(id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![(PathBuf::from("/sys/fs/cgroup"), 0)];

    while let Some((dir, depth)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if !entry.file_type().map(|kind| kind.is_dir()).unwrap_or(false) {
                continue;
            }
            if entry.file_name() == id {
                found.push(path.clone());
            }
            if depth < 4 {
                pending.push((path, depth + 1));
            }
        }
    }

    found
}

/// Returns the ttRPC status code of a failed call, panicking on success.
pub fn code_of<T: std::fmt::Debug>(result: ttrpc::Result<T>) -> (ttrpc::Code, String) {
    match result {
        Err(ttrpc::Error::RpcStatus(status)) => (status.code(), status.message().to_string()),
        other => panic!("expected an RPC status, got {other:?}"),
    }
}
