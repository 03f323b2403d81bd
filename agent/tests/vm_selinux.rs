//! Tests that boot the guest image in QEMU with SELinux as the major security module and
//! check that `process.selinuxLabel` labels a container's process and an exec'd process,
//! and that `linux.mountLabel` labels a container's tmpfs mount.
//!
//! Debian's kernel builds SELinux in but enables AppArmor by default, so the guest boots
//! with `security=selinux`. The agent, as PID 1, mounts selinuxfs at `/sys/fs/selinux`,
//! which is what makes rustjail take SELinux as enabled. No policy exists in the guest
//! until the test loads one: a small CIL policy, [`POLICY`], compiled on the host with the
//! `secilc` that `vm/fetch-selinux.sh` unpacks, reaches the guest on an ext4 disk, and a
//! container writes it to `/sys/fs/selinux/load`. The guest stays permissive, which
//! logs denials but still gives every process and mount its label.
//!
//! They are ignored in a plain `cargo test`, because they need QEMU, the Debian kernel,
//! vhost-device-vsock, secilc and a guest image; `ci/vm-test.sh` runs them with
//! `--ignored`. `BERTH_SELINUX_DIR` is the directory of `vm/fetch-selinux.sh` (default:
//! `build/vm/selinux` of the workspace). `common/vm.rs` has the harness and describes
//! its other environment variables.

#[path = "common/vm.rs"]
mod guest;

use std::path::{Path, PathBuf};
use std::process::Command;

use protobuf::MessageField;
use protocols::agent::CreateContainerRequest;
use protocols::agent_ttrpc::AgentServiceClient;

use guest::{
    container_request, context, create_sandbox, exec_and_wait, ext4_image_of_dir, finish_container,
    mounts_with, read_only_disk_storage, run_check, run_container, start_container, workspace, Vm,
    STORAGE_DIR,
};

/// Kernel parameter that makes SELinux the major security module in place of AppArmor.
/// Debian's 6.1 kernel already lists SELinux in `CONFIG_LSM`. It is built without
/// `CONFIG_SECURITY_SELINUX_BOOTPARAM`, so it would not read `selinux=1`.
const SELINUX_KERNEL_PARAM: &str = "security=selinux";

/// The test policy in CIL. Every kernel class it does not declare is allowed
/// (`handleunknown allow`), and the guest stays permissive, so the few rules it has only
/// matter for the contexts they make valid.
const POLICY: &str = "\
; Classes and permissions the policy does not declare are allowed.
(handleunknown allow)
(mls true)
; Lets a label apply to an exec under no_new_privs or from a nosuid mount, which these
; tests do not exercise. That check uses a class the policy does not declare, so it is
; allowed.
(policycap nnp_nosuid_transition)

; The kernel refuses a policy whose process class lacks either of these permissions.
(class process (transition dyntransition))
(classorder (process))

(sensitivity s0)
(sensitivityorder (s0))
(category c0)
(category c1)
(categoryorder (c0 c1))
(sensitivitycategory s0 (c0 c1))

(user berth_u)
(role berth_r)
(role object_r)
(type berth_kernel_t)
(type berth_container_t)
(type berth_file_t)
(roletype berth_r berth_kernel_t)
(roletype berth_r berth_container_t)
(roletype object_r berth_file_t)
(userrole berth_u berth_r)
(userrole berth_u object_r)
(userlevel berth_u (s0))
(userrange berth_u ((s0) (s0 (range c0 c1))))

; The kernel numbers its initial SIDs kernel 1, security 2, unlabeled 3, and CIL
; numbers them in sidorder. The guest kernel loads the policy with only these three.
(sid kernel)
(sid security)
(sid unlabeled)
(sidorder (kernel security unlabeled))
(sidcontext kernel (berth_u berth_r berth_kernel_t ((s0) (s0))))
(sidcontext security (berth_u object_r berth_file_t ((s0) (s0))))
(sidcontext unlabeled (berth_u object_r berth_file_t ((s0) (s0))))

; CIL builds no policy without an allow rule.
(allow berth_kernel_t berth_container_t (process (transition)))
";

/// Highest binary policy version that the guest's 6.1 kernel loads. By default secilc
/// writes its own highest version, which a newer secilc may raise past the kernel's.
const POLICY_VERSION: &str = "33";

/// Context of every process that names no label. The agent started before any policy
/// existed, so it runs under the kernel's initial SID, and its children inherit it.
const KERNEL_CONTEXT: &str = "berth_u:berth_r:berth_kernel_t:s0";

/// Labels the checks ask for: two category sets, as container engines give each
/// container its own, and with a comma that mount options must quote.
const CONTAINER_LABEL: &str = "berth_u:berth_r:berth_container_t:s0:c0,c1";
const EXEC_LABEL: &str = "berth_u:berth_r:berth_container_t:s0:c1";
const MOUNT_LABEL: &str = "berth_u:object_r:berth_file_t:s0:c0,c1";

/// File name of the binary policy on the policy disk.
const POLICY_FILE: &str = "berth-test.policy";

/// Script of each probed process: its SELinux context. The kernel ends the context
/// with a NUL byte, which [`read_context`] drops.
const PROBE_SCRIPT: &str = "exec 2>&1; cat /proc/self/attr/current; echo";

/// Returns the mount point of the policy disk in the guest.
fn disk_mount_point() -> String {
    format!("{STORAGE_DIR}/selinux")
}

/// Checks, in one guest booted with SELinux, that a policy compiled on the host loads,
/// and that containers, exec'd processes and tmpfs mounts get the labels their spec
/// names, while a container without a label keeps the kernel's context.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots a QEMU guest; run by ci/vm-test.sh, which checks for QEMU, the kernel, vhost-device-vsock and secilc"]
async fn selinux_labels_apply_in_guest() {
    let dir = tempfile::tempdir().expect("create temporary directory");
    let disk = policy_disk(dir.path());
    let vm = Vm::boot_with(&[&disk], &[SELINUX_KERNEL_PARAM]);
    let client = vm.client().await;
    create_sandbox(&client).await;

    load_policy(&client).await;
    let mut failed = Vec::new();

    run_check(
        &mut failed,
        "container_gets_label",
        container_gets_label(client.clone()),
    )
    .await;
    run_check(
        &mut failed,
        "container_without_label_keeps_kernel_context",
        container_without_label_keeps_kernel_context(client.clone()),
    )
    .await;
    run_check(
        &mut failed,
        "exec_process_gets_label",
        exec_process_gets_label(client.clone()),
    )
    .await;
    run_check(
        &mut failed,
        "tmpfs_mount_gets_mount_label",
        tmpfs_mount_gets_mount_label(client.clone()),
    )
    .await;

    assert!(
        failed.is_empty(),
        "failed checks: {failed:?} (their panic messages are above)"
    );
}

/// Compiles [`POLICY`] and makes an ext4 disk with the binary policy.
fn policy_disk(dir: &Path) -> PathBuf {
    let content = dir.join("policy-disk");
    std::fs::create_dir(&content).expect("create policy disk directory");
    let source = dir.join("berth-test.cil");
    std::fs::write(&source, POLICY).expect("write policy source");

    compile_policy(&source, &content.join(POLICY_FILE));
    ext4_image_of_dir(dir, "policy", &content)
}

/// Compiles the CIL policy `source` into a binary policy at `output`.
fn compile_policy(source: &Path, output: &Path) {
    let selinux_dir = std::env::var_os("BERTH_SELINUX_DIR")
        .map_or_else(|| workspace().join("build/vm/selinux"), PathBuf::from);
    let secilc = selinux_dir.join("secilc");

    // The file contexts that secilc also writes are of no use in the guest, which has
    // no file labelling tools.
    let result = Command::new(&secilc)
        .args(["--policyvers", POLICY_VERSION, "--filecontext", "/dev/null"])
        .arg("--output")
        .arg(output)
        .arg(source)
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "run {}: {error}; vm/fetch-selinux.sh unpacks it",
                secilc.display()
            )
        });

    assert!(
        result.status.success(),
        "{} failed on {}: {}{}",
        secilc.display(),
        source.display(),
        String::from_utf8_lossy(&result.stdout),
        String::from_utf8_lossy(&result.stderr)
    );
    // The loader copies the policy with one 1 MiB block, because selinuxfs takes it
    // only in one write.
    let size = std::fs::metadata(output).expect("stat policy").len();
    assert!(size < 1 << 20, "the policy has {size} bytes, 1 MiB or more");
}

/// Returns `text` without the NUL bytes that end SELinux contexts read from procfs and
/// selinuxfs.
fn read_context(text: &str) -> String {
    text.replace('\0', "")
}

/// Loads the compiled policy into the guest kernel from a container that mounts
/// selinuxfs, and checks that the kernel took it and stays permissive.
///
/// The container has no capabilities, because before any policy is loaded selinuxfs
/// checks only the file mode of `load` (root, 0600). The kernel takes a policy only in
/// one write from offset 0, so dd copies it in one block.
async fn load_policy(client: &AgentServiceClient) {
    let selinuxfs = "/sys/fs/selinux";
    let request = container_request(
        "selinux-load",
        &format!(
            "exec 2>&1; dd if=/policy/{POLICY_FILE} of={selinuxfs}/load bs=1M && \
             echo loaded && echo \"enforce=$(cat {selinuxfs}/enforce)\" && \
             echo \"kernel=$(cat {selinuxfs}/initial_contexts/kernel)\""
        ),
        serde_json::json!({
            "storages": read_only_disk_storage(&disk_mount_point()),
            "OCI": {
                "Mounts": mounts_with(serde_json::json!([
                    { "destination": "/policy", "source": disk_mount_point(), "type": "bind",
                      "options": ["rbind", "ro"] },
                    { "destination": "/sys", "source": "sysfs", "type": "sysfs",
                      "options": ["ro", "nosuid", "nodev", "noexec"] },
                    { "destination": selinuxfs, "source": "selinuxfs", "type": "selinuxfs",
                      "options": ["nosuid", "noexec"] },
                ])),
            },
        }),
    );

    let (status, output) = run_container(client, request).await;
    let output = read_context(&output);

    assert_eq!(status, 0, "loading the policy failed: {output}");
    assert!(output.contains("loaded\n"), "output: {output}");
    assert!(
        output.contains("enforce=0\n"),
        "the guest is not permissive: {output}"
    );
    assert!(
        output.contains(&format!("kernel={KERNEL_CONTEXT}\n")),
        "the kernel's initial context is not the policy's: {output}"
    );
}

/// Builds the request of a container that runs [`PROBE_SCRIPT`] with `label`, or with
/// no label when it is empty.
fn probe_request(id: &str, label: &str) -> CreateContainerRequest {
    container_request(
        id,
        PROBE_SCRIPT,
        serde_json::json!({
            "OCI": { "Process": { "SelinuxLabel": label } },
        }),
    )
}

/// Checks that a container with `process.selinuxLabel` runs under that context.
async fn container_gets_label(client: AgentServiceClient) {
    let request = probe_request("selinux-labelled", CONTAINER_LABEL);

    let (status, output) = run_container(&client, request).await;

    assert_eq!(status, 0, "container output: {output}");
    assert_eq!(read_context(&output), format!("{CONTAINER_LABEL}\n"));
}

/// Checks that a container without a label keeps the context of the agent, the kernel's.
async fn container_without_label_keeps_kernel_context(client: AgentServiceClient) {
    let request = probe_request("selinux-unlabelled", "");

    let (status, output) = run_container(&client, request).await;

    assert_eq!(status, 0, "container output: {output}");
    assert_eq!(read_context(&output), format!("{KERNEL_CONTEXT}\n"));
}

/// Checks, in an unlabelled container, that a process exec'd with
/// `process.selinuxLabel` runs under that context, and one exec'd without keeps the
/// kernel's.
async fn exec_process_gets_label(client: AgentServiceClient) {
    let id = "selinux-exec";
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

    let labelled = exec_and_wait(&client, id, "exec-labelled", probe_process(EXEC_LABEL)).await;
    let unlabelled = exec_and_wait(&client, id, "exec-unlabelled", probe_process("")).await;
    client
        .signal_process(
            context(),
            &protocols::agent::SignalProcessRequest {
                container_id: id.to_string(),
                signal: libc::SIGKILL as u32,
                ..Default::default()
            },
        )
        .await
        .expect("SignalProcess SIGKILL to the container's init");
    let (_, init_output) = finish_container(&client, id).await;

    assert_eq!(labelled.0, 0, "exec output: {}", labelled.1);
    assert_eq!(read_context(&labelled.1), format!("{EXEC_LABEL}\n"));
    assert_eq!(unlabelled.0, 0, "exec output: {}", unlabelled.1);
    assert_eq!(read_context(&unlabelled.1), format!("{KERNEL_CONTEXT}\n"));
    assert_eq!(init_output, "started\n");
}

/// Returns the process of an ExecProcess request that runs [`PROBE_SCRIPT`] with
/// `label`, or with no label when it is empty.
fn probe_process(label: &str) -> protocols::oci::Process {
    let mut process = protocols::oci::Process::new();
    process.Args = ["/bin/sh", "-c", PROBE_SCRIPT].map(String::from).to_vec();
    process.Env = vec!["PATH=/bin".to_string()];
    process.Cwd = "/".to_string();
    process.User = MessageField::some(protocols::oci::User::new());
    process.SelinuxLabel = label.to_string();
    process
}

/// Checks that a tmpfs mount of a container with `linux.mountLabel` carries the label
/// as its `context=` superblock option. The kernel shows the option only for a mount
/// that got it, quoted because the label has a comma.
async fn tmpfs_mount_gets_mount_label(client: AgentServiceClient) {
    let request = container_request(
        "selinux-mount-label",
        "exec 2>&1; grep ' /data ' /proc/self/mountinfo",
        serde_json::json!({
            "OCI": {
                "Mounts": mounts_with(serde_json::json!([
                    { "destination": "/data", "source": "tmpfs", "type": "tmpfs",
                      "options": ["nosuid", "nodev", "size=1m"] },
                ])),
                "Linux": { "MountLabel": MOUNT_LABEL },
            },
        }),
    );

    let (status, output) = run_container(&client, request).await;

    assert_eq!(status, 0, "container output: {output}");
    let super_options = output
        .lines()
        .next()
        .and_then(|line| line.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no /data line in mountinfo: {output}"));
    assert!(
        super_options.contains(&format!("context=\"{MOUNT_LABEL}\"")),
        "/data has no context=\"{MOUNT_LABEL}\" option: {output}"
    );
}
