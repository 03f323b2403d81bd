//! Tests that boot the guest image in QEMU and check that `process.apparmorProfile`
//! confines a container's process and an exec'd process in the guest, whose Debian
//! kernel has AppArmor enabled but no profile loaded.
//!
//! The profile is compiled on the host with the `apparmor_parser` that
//! `vm/fetch-apparmor.sh` unpacks, against the feature set its package pins, and reaches
//! the guest on an ext4 disk. A privileged container loads it through securityfs.
//!
//! They are ignored in a plain `cargo test`, because they need QEMU, the Debian kernel,
//! vhost-device-vsock, apparmor_parser and a guest image; `ci/vm-test.sh` runs them with
//! `--ignored`. `BERTH_APPARMOR_DIR` is the directory of `vm/fetch-apparmor.sh` (default:
//! `build/vm/apparmor` of the workspace). `common/vm.rs` has the harness and describes
//! its other environment variables.

#[path = "common/vm.rs"]
mod guest;

use std::path::{Path, PathBuf};
use std::process::Command;

use protobuf::MessageField;
use protocols::agent::SignalProcessRequest;
use protocols::agent_ttrpc::AgentServiceClient;

use guest::{
    container_request, context, create_sandbox, exec_and_wait, ext4_image_of_dir, finish_container,
    mounts_with, read_only_disk_storage, run_check, run_container, start_container, workspace, Vm,
    STORAGE_DIR,
};

/// Name of the test profile, as the spec and `/proc/self/attr/current` give it.
const PROFILE_NAME: &str = "berth-test";

/// The test profile. It allows every file access but reads of `/etc/secret`, and takes
/// signals from unconfined processes, so that the agent can still stop it.
const PROFILE: &str = "\
profile berth-test flags=(attach_disconnected) {
  file,
  signal (receive) peer=unconfined,
  deny /etc/secret r,
}
";

/// File names on the policy disk.
const POLICY_FILE: &str = "berth-test.policy";
const SECRET_FILE: &str = "secret";

/// Returns the mount point of the policy disk in the guest.
fn disk_mount_point() -> String {
    format!("{STORAGE_DIR}/apparmor")
}

/// Script of each confined or unconfined process: its label, then the secret or the
/// reason it could not read it.
const PROBE_SCRIPT: &str =
    "exec 2>&1; cat /proc/self/attr/current; cat /etc/secret || echo secret-not-read";

/// Checks, in one guest, that a profile compiled on the host loads into the guest kernel,
/// and that it confines a container and an exec'd process that name it, while processes
/// that name no profile stay unconfined.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots a QEMU guest; run by ci/vm-test.sh, which checks for QEMU, the kernel, vhost-device-vsock and apparmor_parser"]
async fn apparmor_profile_confines_in_guest() {
    let dir = tempfile::tempdir().expect("create temporary directory");
    let secret = format!("apparmor-secret-{}", std::process::id());
    let disk = policy_disk(dir.path(), &secret);
    let vm = Vm::boot(&[&disk]);
    let client = vm.client().await;
    create_sandbox(&client).await;

    load_profile(&client).await;
    let mut failed = Vec::new();

    run_check(
        &mut failed,
        "container_is_confined",
        container_is_confined(client.clone(), secret.clone()),
    )
    .await;
    run_check(
        &mut failed,
        "container_without_profile_is_unconfined",
        container_without_profile_is_unconfined(client.clone(), secret.clone()),
    )
    .await;
    run_check(
        &mut failed,
        "exec_process_is_confined",
        exec_process_is_confined(client.clone(), secret),
    )
    .await;

    assert!(
        failed.is_empty(),
        "failed checks: {failed:?} (their panic messages are above)"
    );
}

/// Compiles [`PROFILE`] and makes an ext4 disk with the binary policy and the secret.
fn policy_disk(dir: &Path, secret: &str) -> PathBuf {
    let content = dir.join("policy-disk");
    std::fs::create_dir(&content).expect("create policy disk directory");
    let source = dir.join(PROFILE_NAME);
    std::fs::write(&source, PROFILE).expect("write profile source");
    std::fs::write(content.join(SECRET_FILE), secret).expect("write secret");

    compile_profile(&source, &content.join(POLICY_FILE));
    ext4_image_of_dir(dir, "policy", &content)
}

/// Compiles the profile `source` into binary policy at `output` without loading it:
/// the host kernel may have no AppArmor. The feature set is the one Debian's package
/// pins for its own kernels, which the guest's Debian kernel accepts.
fn compile_profile(source: &Path, output: &Path) {
    let apparmor_dir = std::env::var_os("BERTH_APPARMOR_DIR")
        .map_or_else(|| workspace().join("build/vm/apparmor"), PathBuf::from);
    let parser = apparmor_dir.join("apparmor_parser");

    let result = Command::new(&parser)
        .args([
            "--config-file",
            "/dev/null",
            "--skip-kernel-load",
            "--features-file",
        ])
        .arg(apparmor_dir.join("features"))
        .arg("--ofile")
        .arg(output)
        .arg(source)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "run {}: {error}; vm/fetch-apparmor.sh unpacks it",
                parser.display()
            )
        });

    assert!(
        result.status.success(),
        "{} failed on {}: {}",
        parser.display(),
        source.display(),
        String::from_utf8_lossy(&result.stderr)
    );
}

/// Returns the bind mount of the secret on the policy disk at `/etc/secret`.
fn secret_mount() -> serde_json::Value {
    serde_json::json!({
        "destination": "/etc/secret",
        "source": format!("{}/{SECRET_FILE}", disk_mount_point()),
        "type": "bind",
        "options": ["bind", "ro"],
    })
}

/// Loads the compiled policy into the guest kernel from a container that has only
/// CAP_MAC_ADMIN and securityfs mounted, and checks that the kernel lists the profile.
/// The kernel takes a policy in one write from offset 0, so dd copies it in one block.
async fn load_profile(client: &AgentServiceClient) {
    let apparmor = "/sys/kernel/security/apparmor";
    let request = container_request(
        "apparmor-load",
        &format!(
            "exec 2>&1; dd if=/policy/{POLICY_FILE} of={apparmor}/.load bs=1M && \
             echo loaded && cat {apparmor}/profiles"
        ),
        serde_json::json!({
            "storages": read_only_disk_storage(&disk_mount_point()),
            "OCI": {
                "Process": { "Capabilities": {
                    "Bounding": ["CAP_MAC_ADMIN"],
                    "Effective": ["CAP_MAC_ADMIN"],
                    "Permitted": ["CAP_MAC_ADMIN"],
                } },
                "Mounts": mounts_with(serde_json::json!([
                    { "destination": "/policy", "source": disk_mount_point(), "type": "bind",
                      "options": ["rbind", "ro"] },
                    { "destination": "/sys", "source": "sysfs", "type": "sysfs",
                      "options": ["ro", "nosuid", "nodev", "noexec"] },
                    { "destination": "/sys/kernel/security", "source": "securityfs",
                      "type": "securityfs", "options": ["nosuid", "nodev", "noexec"] },
                ])),
            },
        }),
    );

    let (status, output) = run_container(client, request).await;

    assert_eq!(status, 0, "loading the policy failed: {output}");
    assert!(output.contains("loaded\n"), "output: {output}");
    assert!(
        output
            .lines()
            .any(|line| line == format!("{PROFILE_NAME} (enforce)")),
        "the kernel does not list {PROFILE_NAME} (enforce): {output}"
    );
}

/// Builds the request of a container that runs [`PROBE_SCRIPT`] with `profile`, or with
/// no profile when it is empty.
fn probe_request(id: &str, profile: &str) -> protocols::agent::CreateContainerRequest {
    container_request(
        id,
        PROBE_SCRIPT,
        serde_json::json!({
            "storages": read_only_disk_storage(&disk_mount_point()),
            "OCI": {
                "Process": { "ApparmorProfile": profile },
                "Mounts": mounts_with(serde_json::json!([secret_mount()])),
            },
        }),
    )
}

/// Checks the output of [`PROBE_SCRIPT`] in a process confined by the test profile.
fn assert_confined(output: &str, secret: &str) {
    let mut lines = output.lines();
    assert_eq!(
        lines.next(),
        Some(format!("{PROFILE_NAME} (enforce)").as_str()),
        "output: {output}"
    );
    assert!(
        output.contains("Permission denied"),
        "reading /etc/secret was not denied: {output}"
    );
    assert!(!output.contains(secret), "output: {output}");
    assert!(output.ends_with("secret-not-read\n"), "output: {output}");
}

/// Checks the output of [`PROBE_SCRIPT`] in an unconfined process.
fn assert_unconfined(output: &str, secret: &str) {
    assert_eq!(output, format!("unconfined\n{secret}"));
}

/// Checks that a container with `process.apparmorProfile` runs under the profile and
/// cannot read the file it denies.
async fn container_is_confined(client: AgentServiceClient, secret: String) {
    let request = probe_request("apparmor-confined", PROFILE_NAME);

    let (status, output) = run_container(&client, request).await;

    assert_eq!(status, 0, "container output: {output}");
    assert_confined(&output, &secret);
}

/// Checks that a container without a profile stays unconfined and reads the secret.
async fn container_without_profile_is_unconfined(client: AgentServiceClient, secret: String) {
    let request = probe_request("apparmor-unconfined", "");

    let (status, output) = run_container(&client, request).await;

    assert_eq!(status, 0, "container output: {output}");
    assert_unconfined(&output, &secret);
}

/// Checks, in an unconfined container, that a process exec'd with
/// `process.apparmorProfile` runs under the profile, and one exec'd without stays
/// unconfined.
async fn exec_process_is_confined(client: AgentServiceClient, secret: String) {
    let id = "apparmor-exec";
    let mut request = probe_request(id, "");
    request
        .OCI
        .as_mut()
        .expect("request has a spec")
        .Process
        .as_mut()
        .expect("spec has a process")
        .Args = ["/bin/sh", "-c", "exec 2>&1; echo started; sleep 600"]
        .map(String::from)
        .to_vec();
    start_container(&client, request).await;

    let confined = exec_probe(&client, id, "exec-confined", PROFILE_NAME).await;
    let unconfined = exec_probe(&client, id, "exec-unconfined", "").await;
    client
        .signal_process(
            context(),
            &SignalProcessRequest {
                container_id: id.to_string(),
                signal: libc::SIGKILL as u32,
                ..Default::default()
            },
        )
        .await
        .expect("SignalProcess SIGKILL to the container's init");
    let (_, init_output) = finish_container(&client, id).await;

    assert_eq!(confined.0, 0, "exec output: {}", confined.1);
    assert_confined(&confined.1, &secret);
    assert_eq!(unconfined.0, 0, "exec output: {}", unconfined.1);
    assert_unconfined(&unconfined.1, &secret);
    assert_eq!(init_output, "started\n");
}

/// Starts [`PROBE_SCRIPT`] in container `id` with ExecProcess and `profile`, and returns
/// its exit status and output.
async fn exec_probe(
    client: &AgentServiceClient,
    id: &str,
    exec_id: &str,
    profile: &str,
) -> (i32, String) {
    let mut process = protocols::oci::Process::new();
    process.Args = ["/bin/sh", "-c", PROBE_SCRIPT].map(String::from).to_vec();
    process.Env = vec!["PATH=/bin".to_string()];
    process.Cwd = "/".to_string();
    process.User = MessageField::some(protocols::oci::User::new());
    process.ApparmorProfile = profile.to_string();
    exec_and_wait(client, id, exec_id, process).await
}
