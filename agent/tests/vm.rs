//! Tests that boot the guest image in QEMU, with berth-agent as its PID 1, and call the
//! agent over hybrid vsock with the block devices a hypervisor gives a real guest.
//!
//! They are ignored in a plain `cargo test`, because they need QEMU, the Debian kernel,
//! vhost-device-vsock and a guest image. `ci/vm-test.sh` checks for those, builds the
//! image, and runs them with `--ignored`, or prints why it skips them.
//!
//! Environment: `BERTH_VM_IMAGE` is the directory with `kernel/vmlinux` and
//! `initramfs.cpio` (default: `build/vm` of the workspace).
//! `BERTH_VM_BOOT_TIMEOUT` is the seconds allowed for a boot (default 120).
//!
//! Each test boots its own VM; `common/vm.rs` has the harness.

#[path = "common/vm.rs"]
mod guest;

use guest::{
    container_request, create_sandbox, ext4_image, raw_image, run_container, Vm, STORAGE_DIR,
};

/// Checks that a disk present at boot, at PCI slot 0x5 (PCI path `05`), is mounted by
/// a `blk` storage and read by the container through a bind mount.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots a QEMU guest; run by ci/vm-test.sh, which checks for QEMU, the kernel and vhost-device-vsock"]
async fn blk_storage_mounts_boot_disk() {
    let dir = tempfile::tempdir().expect("create temporary directory");
    let token = format!("blk-storage-{}", std::process::id());
    let disk = ext4_image(dir.path(), "disk0", &[("message.txt", &token)]);
    let vm = Vm::boot(&[&disk]);
    let client = vm.client().await;
    create_sandbox(&client).await;
    let mount_point = format!("{STORAGE_DIR}/disk0");

    let request = container_request(
        "blk-storage",
        "cat /data/message.txt; grep ' /data ' /proc/mounts",
        serde_json::json!({
            "storages": [{
                "driver": "blk",
                "source": "05",
                "fstype": "ext4",
                "options": ["ro"],
                "mount_point": mount_point,
            }],
            "OCI": { "Mounts": [
                { "destination": "/proc", "source": "proc", "type": "proc", "options": [] },
                { "destination": "/data", "source": mount_point, "type": "bind",
                  "options": ["rbind", "ro"] },
            ] },
        }),
    );
    let (status, output) = run_container(&client, request).await;

    assert_eq!(status, 0, "container output: {output}");
    assert!(output.starts_with(&token), "output: {output}");
    assert!(output.contains(" /data ext4 ro"), "output: {output}");
}

/// Checks that a disk hot-plugged through QMP `device_add` after boot, at PCI slot 0x7,
/// reaches the container as a block device through the `pci-rescan` and `devices` stages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "boots a QEMU guest; run by ci/vm-test.sh, which checks for QEMU, the kernel and vhost-device-vsock"]
async fn hot_plugged_disk_reaches_container() {
    let dir = tempfile::tempdir().expect("create temporary directory");
    let token = format!("hot-plugged-{}", std::process::id());
    let disk = raw_image(dir.path(), "hotplug", &token);
    let vm = Vm::boot(&[]);
    let client = vm.client().await;
    create_sandbox(&client).await;

    let blockdev = serde_json::json!({
        "driver": "raw",
        "node-name": "hotplug0",
        "file": { "driver": "file", "filename": disk },
    });
    vm.qmp(&[
        "blockdev-add",
        &blockdev.to_string(),
        "device_add",
        r#"{"driver":"virtio-blk-pci","drive":"hotplug0","id":"hotplug0","addr":"0x7"}"#,
    ]);

    // The host's major and minor numbers in the spec are placeholders: the devices
    // stage replaces them with the numbers of the node it finds in the guest.
    let request = container_request(
        "hot-plug",
        &format!(
            "head -c {} /dev/hotplugged; echo; ls -l /dev/hotplugged",
            token.len()
        ),
        serde_json::json!({
            "devices": [{
                "id": "07",
                "type": "blk",
                "container_path": "/dev/hotplugged",
            }],
            "OCI": { "Linux": { "Devices": [{
                "Path": "/dev/hotplugged",
                "Type": "b",
                "Major": 8,
                "Minor": 0,
                "FileMode": 0o600,
                "UID": 0,
                "GID": 0,
            }] } },
        }),
    );
    let (status, output) = run_container(&client, request).await;

    assert_eq!(status, 0, "container output: {output}");
    assert!(output.starts_with(&token), "output: {output}");
    assert!(output.contains("brw-------"), "output: {output}");
    assert!(
        vm.console().contains(r#""stage":"pci-rescan""#),
        "the pci-rescan stage left no record in the console log"
    );
}
