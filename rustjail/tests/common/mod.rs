//! Helpers for the container tests: a busybox root filesystem, the runc-style spec and
//! a guard that kills, reaps and removes a container even when a test fails.

#![allow(dead_code)]

pub mod cgroup;
pub mod user_namespace;

use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use oci_spec::runtime::Spec;
use rustjail::{wait_pid, Container, ContainerConfig, Error, InitCommand, LaunchOptions};

/// How long a test waits for a container's user process to exit.
const RUN_TIMEOUT: Duration = Duration::from_secs(30);

const APPLETS: &[&str] = &[
    "sh", "echo", "cat", "id", "hostname", "ls", "true", "false", "sleep", "mount", "grep", "pwd",
    "touch", "stat", "wc", "env", "readlink", "stty", "tty", "head", "mkdir", "kill", "tr", "sed",
    "printf", "cut", "uname", "ip",
];

/// Fails the test when not run as root, because every test here needs real mounts,
/// namespaces and cgroups.
pub fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the rustjail container tests need root: run them as root"
    );
}

/// A bundle directory with a busybox root filesystem at `rootfs`.
pub struct Bundle {
    pub directory: tempfile::TempDir,
}

impl Bundle {
    pub fn new() -> Bundle {
        let directory = tempfile::tempdir().unwrap();
        let bin = directory.path().join("rootfs/bin");
        fs::create_dir_all(&bin).unwrap();
        fs::copy(busybox(), bin.join("busybox")).unwrap();
        for applet in APPLETS {
            symlink("busybox", bin.join(applet)).unwrap();
        }
        for dir in ["proc", "sys", "dev", "etc", "tmp"] {
            fs::create_dir(directory.path().join("rootfs").join(dir)).unwrap();
        }
        Bundle { directory }
    }

    pub fn rootfs(&self) -> PathBuf {
        self.directory.path().join("rootfs")
    }

    /// Returns the runc default spec pointing at this rootfs, without terminal, running `args`.
    pub fn spec(&self, args: &[&str]) -> Spec {
        let text = fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/runc-spec.json"),
        )
        .unwrap();
        let mut spec: Spec = serde_json::from_str(&text).unwrap();

        let mut root = spec.root().clone().unwrap();
        root.set_path(self.rootfs());
        spec.set_root(Some(root));

        let mut process = spec.process().clone().unwrap();
        process.set_terminal(Some(false));
        process.set_args(Some(args.iter().map(|arg| arg.to_string()).collect()));
        spec.set_process(Some(process));
        spec
    }
}

fn busybox() -> &'static Path {
    ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(Path::new)
        .find(|path| path.exists())
        .expect("busybox is installed")
}

/// Returns a unique container id and cgroup parent for one test container.
pub fn unique_names(test: &str) -> (String, String) {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let number = COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = format!("{test}-{number}");
    let parent = format!("rustjail-test-{}-{number}", std::process::id());
    (id, parent)
}

pub fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

pub fn config(test: &str, spec: Spec) -> ContainerConfig {
    let (id, cgroup_parent) = unique_names(test);
    ContainerConfig {
        id,
        spec,
        cgroup_root: PathBuf::from("/sys/fs/cgroup"),
        cgroup_parent,
        init: init_command(),
        logger: logger(),
    }
}

/// Owns a created container: on drop it kills the init, reaps it unless a test already
/// did, and removes the cgroup.
pub struct Guard {
    pub container: Container,
    reaped: bool,
}

impl Guard {
    pub fn create(config: ContainerConfig) -> Result<Guard, Error> {
        Guard::create_with(config, LaunchOptions::default())
    }

    pub fn create_with(config: ContainerConfig, options: LaunchOptions) -> Result<Guard, Error> {
        Container::create_with(config, options).map(|container| Guard {
            container,
            reaped: false,
        })
    }

    /// Starts the container and returns its stdout, stderr and exit code.
    pub fn run(&mut self) -> Output {
        let stdout = read_in_background(self.container.take_stdout().unwrap());
        let stderr = read_in_background(self.container.take_stderr().unwrap());
        drop(self.container.take_stdin());

        self.container.start().unwrap();
        let code = self.wait();

        Output {
            stdout: stdout
                .recv_timeout(RUN_TIMEOUT)
                .expect("stdout closes after exit"),
            stderr: stderr
                .recv_timeout(RUN_TIMEOUT)
                .expect("stderr closes after exit"),
            code,
        }
    }

    /// Waits for the init to exit, at most [`RUN_TIMEOUT`], and returns its exit code.
    pub fn wait(&mut self) -> i32 {
        let pid = self.container.pid();
        let (sender, receiver) = mpsc::channel();
        std::thread::spawn(move || sender.send(wait_pid(pid)));
        // The waiter thread reaps the init even when this times out and the guard then
        // kills it, so the guard must not wait for it again.
        self.reaped = true;
        receiver
            .recv_timeout(RUN_TIMEOUT)
            .expect("container exits in time")
            .unwrap()
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let destroyed = self.container.destroy();
        if !self.reaped {
            let _ = wait_pid(self.container.pid());
        }
        if !std::thread::panicking() {
            destroyed.unwrap();
        }
    }
}

#[derive(Debug)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

fn read_in_background(fd: OwnedFd) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut text = String::new();
        let _ = fs::File::from(fd).read_to_string(&mut text);
        let _ = sender.send(text);
    });
    receiver
}

/// Reads everything from `fd` in a thread; the receiver gets the text at end of file.
pub fn read_all(fd: OwnedFd) -> mpsc::Receiver<String> {
    read_in_background(fd)
}

/// Receives the text of a [`read_all`] reader, waiting at most [`RUN_TIMEOUT`].
pub fn received(receiver: &mpsc::Receiver<String>) -> String {
    receiver
        .recv_timeout(RUN_TIMEOUT)
        .expect("the stream closes in time")
}

/// Waits for process `pid`, a child of the test, at most [`RUN_TIMEOUT`].
pub fn wait_child(pid: i32) -> i32 {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || sender.send(wait_pid(pid)));
    receiver
        .recv_timeout(RUN_TIMEOUT)
        .expect("process exits in time")
        .unwrap()
}

/// Returns the command that starts the test init binary.
pub fn init_command() -> InitCommand {
    InitCommand {
        program: PathBuf::from(env!("CARGO_BIN_EXE_rustjail-init")),
        args: Vec::new(),
    }
}

/// Returns `spec` with a writable root filesystem.
pub fn writable_root(mut spec: Spec) -> Spec {
    let mut root = spec.root().clone().unwrap();
    root.set_readonly(Some(false));
    spec.set_root(Some(root));
    spec
}

/// Creates, starts and waits for a container running `spec`.
pub fn run(test: &str, spec: Spec) -> Output {
    let mut guard = Guard::create(config(test, spec)).unwrap();
    guard.run()
}
