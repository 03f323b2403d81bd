//! Harness for tests that boot the guest image in QEMU, with berth-agent as its PID 1,
//! and call the agent over hybrid vsock. The VM test files include it with `#[path]`.
//!
//! Environment: `BERTH_VM_IMAGE` is the directory with `kernel/vmlinux` and
//! `initramfs.cpio` (default: `build/vm` of the workspace).
//! `BERTH_VM_BOOT_TIMEOUT` is the seconds allowed for a boot (default 120).
//!
//! [`Vm::boot`] starts `vm/run-vm.sh --foreground`, which stays a child of the test until
//! the VM stops, so the test reaps every process of the VM. [`Vm`]'s drop stops it, also
//! when the test fails, and then prints the guest console.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use protocols::agent::{self, CreateContainerRequest};
use protocols::agent_ttrpc::AgentServiceClient;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use ttrpc::r#async::transport::Socket;

/// Guest vsock port the agent listens on, as vm/run-vm.sh configures it.
pub const AGENT_PORT: u32 = 1024;

/// Deadline of each RPC. TCG runs the guest several times slower than the host.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(60);

/// Seconds the guest may take to hot-plug a device, passed as agent.hotplug_timeout.
pub const HOTPLUG_TIMEOUT_SECS: u32 = 30;

/// Directory where CreateContainer storages mount in the guest, inside the agent's
/// run directory as the storage driver requires.
pub const STORAGE_DIR: &str = "/run/kata-containers/sandbox/storage";

/// Root filesystem of the busybox bundle packed into the image.
pub const GUEST_ROOTFS: &str = "/bundle/rootfs";

/// One QEMU guest started by vm/run-vm.sh.
pub struct Vm {
    run_dir: TempDir,
    socket: PathBuf,
    /// `vm/run-vm.sh --foreground`, which exits once QEMU and the daemon have exited.
    run_vm: Child,
}

impl Vm {
    /// Boots the guest with `disks` attached as virtio-blk disks 0, 1, ... at PCI slots
    /// 0x5, 0x6, ... and returns once the agent accepts on its vsock port.
    pub fn boot(disks: &[&Path]) -> Vm {
        Vm::boot_with(disks, &[])
    }

    /// Boots the guest as [`Vm::boot`] does, with `kernel_params` added to the kernel
    /// command line, such as `security=selinux` to choose the major security module.
    pub fn boot_with(disks: &[&Path], kernel_params: &[&str]) -> Vm {
        let run_dir = tempfile::Builder::new()
            .prefix("berth-vm-test.")
            .tempdir()
            .expect("create run directory");
        let boot_timeout = std::env::var("BERTH_VM_BOOT_TIMEOUT").unwrap_or_else(|_| "120".into());

        let mut command = Command::new(workspace().join("vm/run-vm.sh"));
        command
            .arg("--foreground")
            .arg("--image")
            .arg(image_dir())
            .arg("--run-dir")
            .arg(run_dir.path())
            .args(["--boot-timeout", &boot_timeout, "--lifetime", "600"])
            .arg("--append")
            .arg(kernel_command_line(kernel_params));
        for disk in disks {
            command.arg("--disk").arg(disk);
        }
        let mut run_vm = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run vm/run-vm.sh");

        // run-vm.sh prints the socket path once the agent accepts. When the boot fails
        // it stops what it started, prints the console, and exits without a path.
        let mut line = String::new();
        let stdout = run_vm.stdout.take().expect("run-vm.sh stdout");
        let read = BufReader::new(stdout).read_line(&mut line);
        if !matches!(read, Ok(length) if length > 0) {
            let status = run_vm.wait().expect("wait for vm/run-vm.sh");
            panic!("vm/run-vm.sh printed no socket path: {status}, read result {read:?}");
        }

        Vm {
            run_dir,
            socket: PathBuf::from(line.trim()),
            run_vm,
        }
    }

    /// Connects to the agent through the hybrid vsock socket.
    pub async fn client(&self) -> AgentServiceClient {
        let mut stream = UnixStream::connect(&self.socket)
            .await
            .unwrap_or_else(|error| panic!("connect to {}: {error}", self.socket.display()));
        stream
            .write_all(format!("CONNECT {AGENT_PORT}\n").as_bytes())
            .await
            .expect("send CONNECT");

        // Byte by byte, so no byte of the ttRPC stream after the reply line is lost.
        let mut reply = Vec::new();
        while reply.last() != Some(&b'\n') {
            reply.push(stream.read_u8().await.expect("read CONNECT reply"));
            assert!(reply.len() <= 64, "CONNECT reply too long: {reply:?}");
        }
        assert!(reply.starts_with(b"OK "), "CONNECT reply: {reply:?}");

        AgentServiceClient::new(ttrpc::r#async::Client::new(Socket::new(stream)))
    }

    /// Sends QMP commands, each followed by its JSON arguments, through vm/qmp.py.
    pub fn qmp(&self, commands: &[&str]) {
        let output = Command::new("python3")
            .arg(workspace().join("vm/qmp.py"))
            .arg(self.run_dir.path().join("qmp.sock"))
            .args(commands)
            .output()
            .expect("run vm/qmp.py");

        assert!(
            output.status.success(),
            "QMP {commands:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    pub fn console(&self) -> String {
        std::fs::read_to_string(self.run_dir.path().join("console.log")).unwrap_or_default()
    }
}

impl Drop for Vm {
    /// Asks the agent to power the guest off, then stops whatever still runs. After a
    /// failed test it prints the end of the guest console, where the agent logs.
    fn drop(&mut self) {
        let _ = Command::new(workspace().join("vm/stop-vm.sh"))
            .args(["--graceful", "20"])
            .arg(self.run_dir.path())
            .status();
        let _ = self.run_vm.wait();

        if std::thread::panicking() {
            let console = self.console();
            let lines: Vec<&str> = console.lines().collect();
            let tail = lines[lines.len().saturating_sub(80)..].join("\n");
            let _ = writeln!(
                std::io::stderr(),
                "--- guest console ({}, last 80 lines)\n{tail}",
                self.run_dir.path().join("console.log").display()
            );
        }
    }
}

/// Returns the parameters that every test passes to the guest kernel, followed by
/// `extra`, as one `--append` value, because vm/run-vm.sh keeps only its last `--append`.
fn kernel_command_line(extra: &[&str]) -> String {
    let mut params = vec![format!("agent.hotplug_timeout={HOTPLUG_TIMEOUT_SECS}")];
    params.extend(extra.iter().map(|param| param.to_string()));
    params.join(" ")
}

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace directory")
        .to_path_buf()
}

pub fn image_dir() -> PathBuf {
    std::env::var_os("BERTH_VM_IMAGE").map_or_else(|| workspace().join("build/vm"), PathBuf::from)
}

pub fn context() -> ttrpc::context::Context {
    ttrpc::context::with_duration(RPC_TIMEOUT)
}

/// Makes an ext4 image file of 16 MiB whose root directory contains `files`.
pub fn ext4_image(dir: &Path, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let content = dir.join(format!("{name}.d"));
    std::fs::create_dir_all(&content).expect("create image content directory");
    for (file, text) in files {
        std::fs::write(content.join(file), text).expect("write image file");
    }
    ext4_image_of_dir(dir, name, &content)
}

/// Makes an ext4 image file of 16 MiB whose root directory is a copy of `content`, for
/// files that are not text.
pub fn ext4_image_of_dir(dir: &Path, name: &str, content: &Path) -> PathBuf {
    let image = dir.join(format!("{name}.img"));
    let output = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-E", "root_owner=0:0", "-d"])
        .arg(content)
        .arg(&image)
        .arg("16M")
        .output()
        .expect("run mkfs.ext4 (e2fsprogs)");
    assert!(
        output.status.success(),
        "mkfs.ext4 {} failed: {}",
        image.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    image
}

/// Makes a raw disk image of 4 MiB that starts with `token`.
pub fn raw_image(dir: &Path, name: &str, token: &str) -> PathBuf {
    let image = dir.join(format!("{name}.img"));
    let mut contents = token.as_bytes().to_vec();
    contents.resize(4 << 20, 0);
    std::fs::write(&image, &contents).expect("write raw disk image");
    image
}

/// Builds a CreateContainer request that runs `script` with busybox sh in the image's
/// bundle rootfs, with `extra` merged into the request.
pub fn container_request(
    id: &str,
    script: &str,
    extra: serde_json::Value,
) -> CreateContainerRequest {
    let mut json = serde_json::json!({
        "container_id": id,
        "exec_id": id,
        "OCI": {
            "Version": "1.1.0",
            "Process": {
                "Terminal": false,
                "User": { "UID": 0, "GID": 0 },
                "Args": ["/bin/sh", "-c", script],
                "Env": ["PATH=/bin"],
                "Cwd": "/",
            },
            "Root": { "Path": GUEST_ROOTFS, "Readonly": false },
            "Hostname": "berth-vm-test",
            "Mounts": default_mounts(),
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
    merge(&mut json, extra);

    protocols::parse_request(&json.to_string()).expect("test request parses")
}

/// Returns the mounts of [`container_request`], as a JSON array: `/proc` and a tmpfs on
/// `/dev`. A request that sets `Mounts` replaces them, so tests extend this list.
pub fn default_mounts() -> serde_json::Value {
    serde_json::json!([
        { "destination": "/proc", "source": "proc", "type": "proc", "options": [] },
        { "destination": "/dev", "source": "tmpfs", "type": "tmpfs",
          "options": ["nosuid", "mode=755"] },
    ])
}

/// Returns [`default_mounts`] followed by the mounts of the JSON array `extra`.
pub fn mounts_with(extra: serde_json::Value) -> serde_json::Value {
    let mut mounts = default_mounts();
    let list = mounts.as_array_mut().expect("default mounts are an array");
    list.extend(
        extra
            .as_array()
            .expect("extra mounts are an array")
            .iter()
            .cloned(),
    );
    mounts
}

/// Returns the `storages` of a request that mounts the first extra disk, at PCI slot
/// 0x5 (PCI path `05`), read-only at `mount_point`.
pub fn read_only_disk_storage(mount_point: &str) -> serde_json::Value {
    serde_json::json!([{
        "driver": "blk",
        "source": "05",
        "fstype": "ext4",
        "options": ["ro"],
        "mount_point": mount_point,
    }])
}

/// Runs one check on a task of its own and returns its result, or records `name` in
/// `failed` when it panicked, so that the checks after a failed one still run.
pub async fn run_check<T, F>(
    failed: &mut Vec<&'static str>,
    name: &'static str,
    check: F,
) -> Option<T>
where
    F: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    match tokio::spawn(check).await {
        Ok(value) => Some(value),
        Err(_) => {
            failed.push(name);
            None
        }
    }
}

/// Merges `extra` into `base`: objects key by key, any other value replaces.
pub fn merge(base: &mut serde_json::Value, extra: serde_json::Value) {
    match (base, extra) {
        (serde_json::Value::Object(base), serde_json::Value::Object(extra)) => {
            for (key, value) in extra {
                merge(base.entry(key).or_insert(serde_json::Value::Null), value);
            }
        }
        (base, extra) => *base = extra,
    }
}

/// Creates the sandbox of the VM tests. The agent takes one CreateSandbox per guest, so
/// each boot calls this once before its containers.
pub async fn create_sandbox(client: &AgentServiceClient) {
    let sandbox = agent::CreateSandboxRequest {
        sandbox_id: "vm-test".to_string(),
        hostname: "berth-vm-test".to_string(),
        ..Default::default()
    };
    client
        .create_sandbox(context(), &sandbox)
        .await
        .expect("CreateSandbox");
}

/// Creates and starts the container, and returns its exit status and standard output
/// once it exited. The container is removed either way.
pub async fn run_container(
    client: &AgentServiceClient,
    request: CreateContainerRequest,
) -> (i32, String) {
    let id = request.container_id.clone();
    start_container(client, request).await;
    finish_container(client, &id).await
}

/// Creates and starts the container of `request`.
pub async fn start_container(client: &AgentServiceClient, request: CreateContainerRequest) {
    let id = request.container_id.clone();
    client
        .create_container(context(), &request)
        .await
        .unwrap_or_else(|error| panic!("CreateContainer {id}: {error}"));

    client
        .start_container(
            context(),
            &agent::StartContainerRequest {
                container_id: id.clone(),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|error| panic!("StartContainer {id}: {error}"));
}

/// Reads the standard output of a started container to its end, waits for it, removes
/// it, and returns its exit status and output.
pub async fn finish_container(client: &AgentServiceClient, id: &str) -> (i32, String) {
    let output = read_stdout(client, id).await;
    let status = client
        .wait_process(
            context(),
            &agent::WaitProcessRequest {
                container_id: id.to_string(),
                ..Default::default()
            },
        )
        .await
        .expect("WaitProcess")
        .status;

    client
        .remove_container(
            context(),
            &agent::RemoveContainerRequest {
                container_id: id.to_string(),
                timeout: 10,
                ..Default::default()
            },
        )
        .await
        .expect("RemoveContainer");
    (status, output)
}

pub async fn read_stdout(client: &AgentServiceClient, id: &str) -> String {
    let request = agent::ReadStreamRequest {
        container_id: id.to_string(),
        len: 4096,
        ..Default::default()
    };
    let mut output = Vec::new();

    loop {
        let response = client
            .read_stdout(context(), &request)
            .await
            .expect("ReadStdout");
        if response.data.is_empty() {
            return String::from_utf8_lossy(&output).into_owned();
        }
        output.extend_from_slice(&response.data);
    }
}

/// Starts `process` in container `id` with ExecProcess, reads its standard output to the
/// end, waits for it, and returns its exit status and output.
pub async fn exec_and_wait(
    client: &AgentServiceClient,
    id: &str,
    exec_id: &str,
    process: protocols::oci::Process,
) -> (i32, String) {
    let request = agent::ExecProcessRequest {
        container_id: id.to_string(),
        exec_id: exec_id.to_string(),
        process: protobuf::MessageField::some(process),
        ..Default::default()
    };
    client
        .exec_process(context(), &request)
        .await
        .unwrap_or_else(|error| panic!("ExecProcess {exec_id}: {error}"));

    let read = agent::ReadStreamRequest {
        container_id: id.to_string(),
        exec_id: exec_id.to_string(),
        len: 4096,
        ..Default::default()
    };
    let mut output = Vec::new();
    loop {
        let response = client
            .read_stdout(context(), &read)
            .await
            .unwrap_or_else(|error| panic!("ReadStdout {exec_id}: {error}"));
        if response.data.is_empty() {
            break;
        }
        output.extend_from_slice(&response.data);
    }

    let status = client
        .wait_process(
            context(),
            &agent::WaitProcessRequest {
                container_id: id.to_string(),
                exec_id: exec_id.to_string(),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|error| panic!("WaitProcess {exec_id}: {error}"))
        .status;
    (status, String::from_utf8_lossy(&output).into_owned())
}
