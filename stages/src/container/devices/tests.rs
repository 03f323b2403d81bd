use std::fs;

use nix::sys::stat::SFlag;
use oci_spec::runtime::{
    LinuxBuilder, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxResourcesBuilder,
};

use super::*;
use crate::device::testing::{add_virtio_blk, make_node, pci_device_dir};
use crate::error::ErrorCode;
use crate::testing::{test_context, test_sandbox};

const SHORT: Duration = Duration::from_millis(50);

fn device(id: &str, type_: &str, container_path: &str) -> Device {
    Device {
        id: id.to_string(),
        type_: type_.to_string(),
        vm_path: String::new(),
        container_path: container_path.to_string(),
        options: Vec::new(),
    }
}

fn entry(
    path: &str,
    typ: LinuxDeviceType,
    major: i64,
    minor: i64,
) -> oci_spec::runtime::LinuxDevice {
    LinuxDeviceBuilder::default()
        .path(path)
        .typ(typ)
        .major(major)
        .minor(minor)
        .build()
        .unwrap()
}

fn rule(
    typ: LinuxDeviceType,
    major: i64,
    minor: i64,
    access: &str,
) -> oci_spec::runtime::LinuxDeviceCgroup {
    LinuxDeviceCgroupBuilder::default()
        .allow(true)
        .typ(typ)
        .major(major)
        .minor(minor)
        .access(access)
        .build()
        .unwrap()
}

fn set_devices(
    ctx: &mut ContainerContext,
    devices: Vec<oci_spec::runtime::LinuxDevice>,
    rules: Vec<oci_spec::runtime::LinuxDeviceCgroup>,
) {
    let resources = LinuxResourcesBuilder::default()
        .devices(rules)
        .build()
        .unwrap();
    let linux = LinuxBuilder::default()
        .devices(devices)
        .resources(resources)
        .build()
        .unwrap();
    ctx.spec.set_linux(Some(linux));
}

fn devices_of(ctx: &ContainerContext) -> Vec<(String, i64, i64)> {
    let linux = ctx.spec.linux().as_ref().unwrap();
    linux
        .devices()
        .iter()
        .flatten()
        .map(|entry| {
            (
                entry.path().display().to_string(),
                entry.major(),
                entry.minor(),
            )
        })
        .collect()
}

fn rules_of(ctx: &ContainerContext) -> Vec<(Option<i64>, Option<i64>)> {
    let linux = ctx.spec.linux().as_ref().unwrap();
    let resources = linux.resources().as_ref().unwrap();
    resources
        .devices()
        .iter()
        .flatten()
        .map(|rule| (rule.major(), rule.minor()))
        .collect()
}

fn stage() -> Devices {
    Devices { timeout: SHORT }
}

#[test]
fn no_devices_pass_through() {
    let root = tempfile::tempdir().unwrap();
    let test = test_sandbox(root.path());
    let mut ctx = test_context(&test.sandbox, "c1");
    let before = ctx.spec.clone();

    stage().apply(&mut ctx).expect("no devices to resolve");

    assert_eq!(ctx.spec, before);
}

#[test]
fn blk_entry_and_rules_rewritten() {
    let root = tempfile::tempdir().unwrap();
    let test = test_sandbox(root.path());
    let paths = &test.sandbox.paths;
    add_virtio_blk(&paths.sysfs, &paths.devfs, &[2, 1], "vdb", 254, 16);
    let mut ctx = test_context(&test.sandbox, "c1");
    ctx.devices = vec![device("02/01", "blk", "/dev/data")];
    set_devices(
        &mut ctx,
        vec![entry("/dev/data", LinuxDeviceType::B, 8, 0)],
        vec![
            rule(LinuxDeviceType::B, 8, 0, "rwm"),
            rule(LinuxDeviceType::C, 8, 0, "rwm"),
            rule(LinuxDeviceType::B, 8, 1, "r"),
        ],
    );

    stage().apply(&mut ctx).expect("device resolved");

    assert_eq!(devices_of(&ctx), [("/dev/data".to_string(), 254, 16)]);
    // Only the block rule with the old numbers changes.
    assert_eq!(
        rules_of(&ctx),
        [
            (Some(254), Some(16)),
            (Some(8), Some(0)),
            (Some(8), Some(1))
        ]
    );
}

#[test]
fn swapped_numbers_not_confused() {
    let root = tempfile::tempdir().unwrap();
    let test = test_sandbox(root.path());
    let paths = &test.sandbox.paths;
    // Host numbers of one device are the guest numbers of the other.
    add_virtio_blk(&paths.sysfs, &paths.devfs, &[2], "vdb", 254, 16);
    add_virtio_blk(&paths.sysfs, &paths.devfs, &[3], "vdc", 8, 0);
    let mut ctx = test_context(&test.sandbox, "c1");
    ctx.devices = vec![
        device("02", "blk", "/dev/first"),
        device("03", "blk", "/dev/second"),
    ];
    set_devices(
        &mut ctx,
        vec![
            entry("/dev/first", LinuxDeviceType::B, 8, 0),
            entry("/dev/second", LinuxDeviceType::B, 254, 16),
        ],
        vec![
            rule(LinuxDeviceType::B, 8, 0, "rw"),
            rule(LinuxDeviceType::B, 254, 16, "r"),
        ],
    );

    stage().apply(&mut ctx).expect("devices resolved");

    assert_eq!(
        devices_of(&ctx),
        [
            ("/dev/first".to_string(), 254, 16),
            ("/dev/second".to_string(), 8, 0)
        ]
    );
    assert_eq!(rules_of(&ctx), [(Some(254), Some(16)), (Some(8), Some(0))]);
}

#[test]
fn mmioblk_and_nvdimm_use_vm_path() {
    let root = tempfile::tempdir().unwrap();
    let test = test_sandbox(root.path());
    make_node(&test.sandbox.paths.devfs, "vdc", SFlag::S_IFBLK, 254, 32);
    make_node(&test.sandbox.paths.devfs, "pmem0", SFlag::S_IFBLK, 259, 0);
    let mut ctx = test_context(&test.sandbox, "c1");
    let mut mmio = device("mmio-1", "mmioblk", "/dev/a");
    mmio.vm_path = "/dev/vdc".to_string();
    let mut pmem = device("pmem-1", "nvdimm", "/dev/b");
    pmem.vm_path = "/dev/pmem0".to_string();
    ctx.devices = vec![mmio, pmem];
    set_devices(
        &mut ctx,
        vec![
            entry("/dev/a", LinuxDeviceType::B, 1, 1),
            entry("/dev/b", LinuxDeviceType::B, 1, 2),
        ],
        Vec::new(),
    );

    stage().apply(&mut ctx).expect("devices resolved");

    assert_eq!(
        devices_of(&ctx),
        [
            ("/dev/a".to_string(), 254, 32),
            ("/dev/b".to_string(), 259, 0)
        ]
    );
}

#[test]
fn scsi_resolved_by_address() {
    let root = tempfile::tempdir().unwrap();
    let test = test_sandbox(root.path());
    let paths = &test.sandbox.paths;
    let block = paths.sysfs.join("bus/scsi/devices/0:0:0:1/block/sda");
    fs::create_dir_all(&block).unwrap();
    fs::write(block.join("dev"), "8:0\n").unwrap();
    make_node(&paths.devfs, "sda", SFlag::S_IFBLK, 8, 0);
    let mut ctx = test_context(&test.sandbox, "c1");
    ctx.devices = vec![device("0:1", "scsi", "/dev/disk")];
    set_devices(
        &mut ctx,
        vec![entry("/dev/disk", LinuxDeviceType::B, 65, 0)],
        Vec::new(),
    );

    stage().apply(&mut ctx).expect("scsi disk resolved");

    assert_eq!(devices_of(&ctx), [("/dev/disk".to_string(), 8, 0)]);
}

#[test]
fn vfio_group_path_and_numbers_rewritten() {
    let root = tempfile::tempdir().unwrap();
    let test = test_sandbox(root.path());
    let paths = &test.sandbox.paths;
    let device_dir = pci_device_dir(&paths.sysfs, &[2, 4]);
    let group = paths.sysfs.join("kernel/iommu_groups/7");
    fs::create_dir_all(&group).unwrap();
    std::os::unix::fs::symlink(&group, device_dir.join("iommu_group")).unwrap();
    make_node(&paths.devfs, "vfio/7", SFlag::S_IFCHR, 243, 1);
    let mut ctx = test_context(&test.sandbox, "c1");
    let mut vfio = device("vfio-1", "vfio-pci", "/dev/vfio/42");
    vfio.options = vec!["0000:3b:00.0=02/04".to_string()];
    ctx.devices = vec![vfio];
    set_devices(
        &mut ctx,
        vec![entry("/dev/vfio/42", LinuxDeviceType::C, 243, 5)],
        vec![rule(LinuxDeviceType::C, 243, 5, "rwm")],
    );

    stage().apply(&mut ctx).expect("vfio group resolved");

    assert_eq!(devices_of(&ctx), [("/dev/vfio/7".to_string(), 243, 1)]);
    assert_eq!(rules_of(&ctx), [(Some(243), Some(1))]);
}

#[test]
fn device_without_spec_entry_is_invalid_argument() {
    let root = tempfile::tempdir().unwrap();
    let test = test_sandbox(root.path());
    let paths = &test.sandbox.paths;
    add_virtio_blk(&paths.sysfs, &paths.devfs, &[2], "vdb", 254, 16);
    let mut ctx = test_context(&test.sandbox, "c1");
    ctx.devices = vec![device("02", "blk", "/dev/missing")];
    set_devices(
        &mut ctx,
        vec![entry("/dev/other", LinuxDeviceType::B, 8, 0)],
        Vec::new(),
    );
    let before = ctx.spec.clone();

    let error = stage().apply(&mut ctx).err().expect("no spec entry");

    assert_eq!(error.code(), ErrorCode::InvalidArgument);
    assert!(error.to_string().contains("/dev/missing"), "{error}");
    assert_eq!(ctx.spec, before);
}

#[test]
fn missing_device_is_deadline_exceeded() {
    let root = tempfile::tempdir().unwrap();
    let test = test_sandbox(root.path());
    let mut ctx = test_context(&test.sandbox, "c1");
    ctx.devices = vec![device("02/01", "blk", "/dev/data")];
    set_devices(
        &mut ctx,
        vec![entry("/dev/data", LinuxDeviceType::B, 8, 0)],
        Vec::new(),
    );

    let error = stage().apply(&mut ctx).err().expect("device never appears");

    assert_eq!(error.code(), ErrorCode::DeadlineExceeded);
    assert!(error.to_string().contains("PCI path 02/01"), "{error}");
}

#[test]
fn unknown_type_is_invalid_argument() {
    let root = tempfile::tempdir().unwrap();
    let test = test_sandbox(root.path());
    let mut ctx = test_context(&test.sandbox, "c1");
    ctx.devices = vec![
        device("d1", "blk", "/dev/a"),
        device("d2", "floppy", "/dev/b"),
    ];

    let error = stage()
        .apply(&mut ctx)
        .err()
        .expect("unknown type rejected");

    assert_eq!(error.code(), ErrorCode::InvalidArgument);
    let message = error.to_string();
    assert!(message.contains("\"floppy\""), "{message}");
    assert!(message.contains("\"d2\""), "{message}");
}

#[test]
fn unsupported_known_type_is_unimplemented() {
    let root = tempfile::tempdir().unwrap();
    let test = test_sandbox(root.path());
    let mut ctx = test_context(&test.sandbox, "c1");
    ctx.devices = vec![device("0.0.0005", "blk-ccw", "/dev/a")];

    let error = stage().apply(&mut ctx).err().expect("ccw not supported");

    assert_eq!(error.code(), ErrorCode::Unimplemented);
    assert!(error.to_string().contains("\"blk-ccw\""), "{error}");
}
