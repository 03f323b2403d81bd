//! Tests that boot the guest image in QEMU and check, from inside containers, that the
//! `linux.resources` limits reach the guest's pure cgroup v2 hierarchy, which
//! berth-agent mounts at `/sys/fs/cgroup` as PID 1.
//!
//! They are ignored in a plain `cargo test`, because they need QEMU, the Debian kernel,
//! vhost-device-vsock and a guest image; `ci/vm-test.sh` runs them with `--ignored`.
//! `common/vm.rs` has the harness and describes its environment variables.
//!
//! A boot takes most of a test's time under TCG, so one test boots one guest and runs
//! every check in it, each check in containers of its own. Each check runs on its own
//! task, so a failed assert is recorded and the checks after it still run.

#[path = "common/vm.rs"]
mod guest;

use std::time::Duration;

use protocols::agent::{CreateContainerRequest, GetOOMEventRequest};
use protocols::agent_ttrpc::AgentServiceClient;

use guest::{
    container_request, context, create_sandbox, default_mounts, finish_container, raw_image,
    run_check, run_container, start_container, Vm,
};

/// Maximum time the OOM check waits for GetOOMEvent after starting its container.
const OOM_EVENT_TIMEOUT: Duration = Duration::from_secs(60);

/// Name of the virtio-blk disk the test attaches, the first one the guest finds.
const GUEST_DISK: &str = "vda";

/// Checks each cgroup v2 controller that `linux.resources` sets, in one guest: cpu,
/// memory, pids, io, the OOM notification from `memory.events`, and the eBPF device
/// filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots a QEMU guest; run by ci/vm-test.sh, which checks for QEMU, the kernel and vhost-device-vsock"]
async fn cgroup_v2_limits_apply_in_guest() {
    let dir = tempfile::tempdir().expect("create temporary directory");
    let token = format!("cgroup-v2-disk-{}", std::process::id());
    let disk = raw_image(dir.path(), "disk0", &token);
    let vm = Vm::boot(&[&disk]);
    let client = vm.client().await;
    create_sandbox(&client).await;
    let mut failed = Vec::new();

    run_check(
        &mut failed,
        "cpu_weight_and_max",
        cpu_weight_and_max(client.clone()),
    )
    .await;
    run_check(
        &mut failed,
        "memory_max_low_and_pids_max",
        memory_max_low_and_pids_max(client.clone()),
    )
    .await;
    run_check(
        &mut failed,
        "memory_swap_max",
        memory_swap_max(client.clone()),
    )
    .await;
    run_check(
        &mut failed,
        "oom_kill_is_reported",
        oom_kill_is_reported(client.clone()),
    )
    .await;

    let number = run_check(&mut failed, "disk_number", disk_number(client.clone())).await;
    if let Some(number) = number {
        run_check(
            &mut failed,
            "io_weight_and_max",
            io_weight_and_max(client.clone(), number.clone()),
        )
        .await;
        run_check(
            &mut failed,
            "io_weight_device_without_io_cost",
            io_weight_device_without_io_cost(client.clone(), number.clone()),
        )
        .await;
        run_check(
            &mut failed,
            "device_filter_denies_and_allows",
            device_filter_denies_and_allows(client.clone(), number, token),
        )
        .await;
    }

    assert!(
        failed.is_empty(),
        "failed checks: {failed:?} (their panic messages are above)"
    );
}

/// Returns the default mounts plus the container's own cgroup directory, read-only, at
/// `/sys/fs/cgroup`.
fn mounts_with_cgroup() -> serde_json::Value {
    let mut mounts = default_mounts();
    mounts
        .as_array_mut()
        .expect("default mounts are an array")
        .push(serde_json::json!({
            "destination": "/sys/fs/cgroup",
            "source": "cgroup",
            "type": "cgroup",
            "options": ["ro", "nosuid", "nodev", "noexec"],
        }));
    mounts
}

/// Builds a request that prints `files` of its cgroup directory, one `name=value` line
/// each, with `resources` as its `Linux.Resources`.
fn print_cgroup_files(
    id: &str,
    files: &[&str],
    resources: serde_json::Value,
) -> CreateContainerRequest {
    let script = files
        .iter()
        .map(|file| format!("echo {file}=$(cat /sys/fs/cgroup/{file})"))
        .collect::<Vec<_>>()
        .join("; ");

    container_request(
        id,
        &format!("exec 2>&1; {script}"),
        serde_json::json!({
            "OCI": {
                "Mounts": mounts_with_cgroup(),
                "Linux": { "Resources": resources },
            },
        }),
    )
}

/// Checks that `cpu.shares` 1024 becomes `cpu.weight` 39, by rustjail's linear map of
/// 2..262144 onto 1..10000 (1 + (1024 - 2) * 9999 / 262142, rounded down), and that
/// quota and period become `cpu.max`.
async fn cpu_weight_and_max(client: AgentServiceClient) {
    let request = print_cgroup_files(
        "cgroup-v2-cpu",
        &["cpu.weight", "cpu.max"],
        serde_json::json!({ "CPU": { "Shares": 1024, "Quota": 30000, "Period": 200000 } }),
    );

    let (status, output) = run_container(&client, request).await;

    assert_eq!(status, 0, "container output: {output}");
    assert_eq!(output, "cpu.weight=39\ncpu.max=30000 200000\n");
}

/// Checks that `memory.limit` becomes `memory.max`, `memory.reservation` becomes
/// `memory.low`, and `pids.limit` becomes `pids.max`.
async fn memory_max_low_and_pids_max(client: AgentServiceClient) {
    let request = print_cgroup_files(
        "cgroup-v2-memory",
        &["memory.max", "memory.low", "pids.max"],
        serde_json::json!({
            "Memory": { "Limit": 64 << 20, "Reservation": 16 << 20 },
            "Pids": { "Limit": 32 },
        }),
    );

    let (status, output) = run_container(&client, request).await;

    assert_eq!(status, 0, "container output: {output}");
    assert_eq!(
        output,
        format!(
            "memory.max={}\nmemory.low={}\npids.max=32\n",
            64 << 20,
            16 << 20
        )
    );
}

/// Checks that `memory.swap`, which the spec counts as memory plus swap, becomes
/// `memory.swap.max` as swap alone: 96 MiB minus the 64 MiB limit.
async fn memory_swap_max(client: AgentServiceClient) {
    let request = print_cgroup_files(
        "cgroup-v2-swap",
        &["memory.max", "memory.swap.max"],
        serde_json::json!({ "Memory": { "Limit": 64 << 20, "Swap": 96 << 20 } }),
    );

    let (status, output) = run_container(&client, request).await;

    assert_eq!(status, 0, "container output: {output}");
    assert_eq!(
        output,
        format!("memory.max={}\nmemory.swap.max={}\n", 64 << 20, 32 << 20)
    );
}

/// Checks that a process past `memory.max` is OOM-killed, that the container reads a
/// nonzero `oom_kill` count in its `memory.events`, and that GetOOMEvent returns its id.
async fn oom_kill_is_reported(client: AgentServiceClient) {
    let id = "cgroup-v2-oom";
    // tail keeps its whole input when there is no newline, so it grows past the limit,
    // and the shell, far smaller, survives to print the counter.
    let request = container_request(
        id,
        "exec 2>&1; head -c 64m /dev/zero | tail; grep '^oom_kill ' /sys/fs/cgroup/memory.events",
        serde_json::json!({
            "OCI": {
                "Mounts": mounts_with_cgroup(),
                "Linux": { "Resources": { "Memory": { "Limit": 8 << 20 } } },
            },
        }),
    );
    let waiter = client.clone();
    let event = tokio::spawn(async move {
        waiter
            .get_oom_event(context(), &GetOOMEventRequest::new())
            .await
    });

    start_container(&client, request).await;
    let event = tokio::time::timeout(OOM_EVENT_TIMEOUT, event)
        .await
        .expect("GetOOMEvent returned in time")
        .expect("GetOOMEvent task")
        .expect("GetOOMEvent");
    let (status, output) = finish_container(&client, id).await;

    assert_eq!(event.container_id, id);
    assert_eq!(status, 0, "container output: {output}");
    let kills: u64 = output
        .lines()
        .find_map(|line| line.strip_prefix("oom_kill "))
        .and_then(|count| count.parse().ok())
        .unwrap_or_else(|| panic!("no oom_kill count in the output: {output:?}"));
    assert!(kills >= 1, "output: {output}");
}

/// Returns the `major:minor` number of the attached disk, read in a container that
/// mounts the guest's sysfs.
async fn disk_number(client: AgentServiceClient) -> String {
    let mut mounts = default_mounts();
    mounts
        .as_array_mut()
        .expect("default mounts are an array")
        .push(serde_json::json!({
            "destination": "/sys",
            "source": "sysfs",
            "type": "sysfs",
            "options": ["ro", "nosuid", "nodev", "noexec"],
        }));
    let request = container_request(
        "cgroup-v2-disk-number",
        &format!("exec 2>&1; cat /sys/block/{GUEST_DISK}/dev"),
        serde_json::json!({ "OCI": { "Mounts": mounts } }),
    );

    let (status, output) = run_container(&client, request).await;

    assert_eq!(status, 0, "container output: {output}");
    let number = output.trim().to_string();
    assert!(
        number.split_once(':').is_some_and(
            |(major, minor)| major.parse::<u32>().is_ok() && minor.parse::<u32>().is_ok()
        ),
        "not a major:minor number: {output:?}"
    );
    number
}

/// Checks that `blockIO.weight` 500 becomes the default `io.weight` 4950, by rustjail's
/// linear map of 10..1000 onto 1..10000 (1 + (500 - 10) * 9999 / 990), and that the four
/// throttles of the disk `number` become one `io.max` line.
async fn io_weight_and_max(client: AgentServiceClient, number: String) {
    let (major, minor) = split_number(&number);
    let device = |rate: u64| serde_json::json!([{ "Major": major, "Minor": minor, "Rate": rate }]);
    let request = print_cgroup_files(
        "cgroup-v2-io",
        &["io.weight", "io.max"],
        serde_json::json!({ "BlockIO": {
            "Weight": 500,
            "ThrottleReadBpsDevice": device(1 << 20),
            "ThrottleWriteBpsDevice": device(2 << 20),
            "ThrottleReadIOPSDevice": device(100),
            "ThrottleWriteIOPSDevice": device(200),
        } }),
    );

    let (status, output) = run_container(&client, request).await;

    assert_eq!(status, 0, "container output: {output}");
    assert_eq!(
        output,
        format!(
            "io.weight=default 4950\nio.max={number} rbps={} wbps={} riops=100 wiops=200\n",
            1 << 20,
            2 << 20
        )
    );
}

/// Checks that a per-device `blockIO.weightDevice` for the disk `number`, which the
/// kernel's `io.weight` rejects with EOPNOTSUPP unless io.cost is enabled on the disk,
/// makes CreateContainer return UNIMPLEMENTED naming the field and the value. Where
/// io.cost is enabled, the weight must show in `io.weight` instead.
async fn io_weight_device_without_io_cost(client: AgentServiceClient, number: String) {
    let (major, minor) = split_number(&number);
    let request = print_cgroup_files(
        "cgroup-v2-io-weight-device",
        &["io.weight"],
        serde_json::json!({ "BlockIO": {
            "WeightDevice": [{ "Major": major, "Minor": minor, "Weight": 500 }],
        } }),
    );

    let created = client.create_container(context(), &request).await;

    let status = match created {
        Err(ttrpc::Error::RpcStatus(status)) => status,
        Ok(_) => {
            let (status, output) = finish_started(&client, "cgroup-v2-io-weight-device").await;
            assert_eq!(status, 0, "container output: {output}");
            assert!(
                output.contains(&format!("{number} 4950")),
                "output: {output}"
            );
            return;
        }
        Err(error) => panic!("CreateContainer: {error}"),
    };
    let message = status.message();
    assert_eq!(status.code(), ttrpc::Code::UNIMPLEMENTED, "{message}");
    assert!(
        message.contains("linux.resources.blockIO.weightDevice"),
        "{message}"
    );
    assert!(message.contains(&format!("\"{number} 4950\"")), "{message}");
}

/// Starts the created container `id`, then waits for it and removes it, returning its
/// exit status and output.
async fn finish_started(client: &AgentServiceClient, id: &str) -> (i32, String) {
    client
        .start_container(
            context(),
            &protocols::agent::StartContainerRequest {
                container_id: id.to_string(),
                ..Default::default()
            },
        )
        .await
        .unwrap_or_else(|error| panic!("StartContainer {id}: {error}"));
    finish_container(client, id).await
}

/// Checks the eBPF device filter with a deny-all rule and a rule that allows reading the
/// disk `number`. The container reads the disk through a node of its own but cannot open
/// it for writing, and it still writes to `/dev/null`, which the default rules allow.
async fn device_filter_denies_and_allows(
    client: AgentServiceClient,
    number: String,
    token: String,
) {
    let (major, minor) = split_number(&number);
    let request = container_request(
        "cgroup-v2-devices",
        &format!(
            "exec 2>&1; head -c {} /dev/guest-disk; echo; \
             echo overwrite > /dev/guest-disk || echo write-denied; \
             echo discard > /dev/null && echo null-allowed",
            token.len()
        ),
        serde_json::json!({ "OCI": { "Linux": {
            "Devices": [{
                "Path": "/dev/guest-disk",
                "Type": "b",
                "Major": major,
                "Minor": minor,
                "FileMode": 0o600,
                "UID": 0,
                "GID": 0,
            }],
            "Resources": { "Devices": [
                { "Allow": false, "Access": "rwm" },
                { "Allow": true, "Type": "b", "Major": major, "Minor": minor, "Access": "r" },
            ] },
        } } }),
    );

    let (status, output) = run_container(&client, request).await;

    assert_eq!(status, 0, "container output: {output}");
    assert!(
        output.starts_with(&format!("{token}\n")),
        "output: {output}"
    );
    assert!(
        output.contains("Operation not permitted"),
        "output: {output}"
    );
    assert!(output.contains("write-denied\n"), "output: {output}");
    assert!(output.ends_with("null-allowed\n"), "output: {output}");
}

/// Splits a `major:minor` number that [`disk_number`] checked.
fn split_number(number: &str) -> (i64, i64) {
    let (major, minor) = number.split_once(':').expect("major:minor number");
    (
        major.parse().expect("major number"),
        minor.parse().expect("minor number"),
    )
}
