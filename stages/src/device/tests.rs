use std::time::{Duration, Instant};

use nix::sys::stat::SFlag;

use super::testing::{add_virtio_blk, make_node, pci_device_dir};
use super::*;
use crate::error::ErrorCode;

const SHORT: Duration = Duration::from_millis(60);

fn guest() -> (tempfile::TempDir, GuestPaths) {
    let root = tempfile::tempdir().unwrap();
    let paths = GuestPaths::under(root.path()).unwrap();
    (root, paths)
}

#[test]
fn virtio_blk_found_behind_bridge() {
    let (_root, paths) = guest();
    add_virtio_blk(&paths.sysfs, &paths.devfs, &[2, 1], "vdb", 254, 16);
    let finder = DeviceFinder {
        paths: &paths,
        timeout: SHORT,
    };

    let device = finder.block_by_pci("02/01").expect("device found");

    assert_eq!(device.node, paths.devfs.join("vdb"));
    assert_eq!(
        (device.kind, device.major, device.minor),
        (NodeKind::Block, 254, 16)
    );
}

#[test]
fn virtio_blk_on_root_bus_found() {
    let (_root, paths) = guest();
    add_virtio_blk(&paths.sysfs, &paths.devfs, &[5], "vdc", 254, 32);
    let finder = DeviceFinder {
        paths: &paths,
        timeout: SHORT,
    };

    let device = finder.block_by_pci("05").expect("device found");

    assert_eq!((device.major, device.minor), (254, 32));
}

#[test]
fn missing_device_times_out_naming_it() {
    let (_root, paths) = guest();
    let finder = DeviceFinder {
        paths: &paths,
        timeout: SHORT,
    };
    let started = Instant::now();

    let error = finder.block_by_pci("02/01").expect_err("no such device");

    assert_eq!(error.code(), ErrorCode::DeadlineExceeded);
    assert!(error.to_string().contains("PCI path 02/01"), "{error}");
    assert!(started.elapsed() >= SHORT);
}

#[test]
fn device_appearing_late_is_found() {
    let (_root, paths) = guest();
    let finder = DeviceFinder {
        paths: &paths,
        timeout: Duration::from_secs(5),
    };
    let sysfs = paths.sysfs.clone();
    let devfs = paths.devfs.clone();

    let plug = std::thread::spawn(move || {
        // The lookup must already be waiting; the device shows up a little later.
        std::thread::sleep(Duration::from_millis(30));
        add_virtio_blk(&sysfs, &devfs, &[3], "vdd", 254, 48);
    });
    let device = finder.block_by_pci("03");
    plug.join().unwrap();

    assert_eq!(device.expect("device found once plugged").minor, 48);
}

#[test]
fn node_with_other_numbers_rejected() {
    let (_root, paths) = guest();
    let block = pci_device_dir(&paths.sysfs, &[2]).join("virtio0/block/vdb");
    fs::create_dir_all(&block).unwrap();
    fs::write(block.join("dev"), "254:16\n").unwrap();
    make_node(&paths.devfs, "vdb", SFlag::S_IFBLK, 8, 0);
    let finder = DeviceFinder {
        paths: &paths,
        timeout: SHORT,
    };

    let error = finder.block_by_pci("02").expect_err("numbers differ");

    assert_eq!(error.code(), ErrorCode::InvalidArgument);
    assert!(error.to_string().contains("254:16"), "{error}");
}

#[test]
fn scsi_disk_found_by_address() {
    let (_root, paths) = guest();
    let block = paths.sysfs.join("bus/scsi/devices/0:0:1:2/block/sdb");
    fs::create_dir_all(&block).unwrap();
    fs::write(block.join("dev"), "8:16\n").unwrap();
    make_node(&paths.devfs, "sdb", SFlag::S_IFBLK, 8, 16);
    let finder = DeviceFinder {
        paths: &paths,
        timeout: SHORT,
    };

    let device = finder.block_by_scsi("1:2").expect("disk found");

    assert_eq!(device.node, paths.devfs.join("sdb"));
    let error = finder.block_by_scsi("1-2").expect_err("bad address");
    assert_eq!(error.code(), ErrorCode::InvalidArgument);
    let error = finder.block_by_scsi("1:3").expect_err("no such LUN");
    assert_eq!(error.code(), ErrorCode::DeadlineExceeded);
}

#[test]
fn guest_path_node_found() {
    let (_root, paths) = guest();
    make_node(&paths.devfs, "pmem0", SFlag::S_IFBLK, 259, 0);
    make_node(&paths.devfs, "ttyS9", SFlag::S_IFCHR, 4, 73);
    let finder = DeviceFinder {
        paths: &paths,
        timeout: SHORT,
    };

    let device = finder
        .block_by_guest_path("/dev/pmem0")
        .expect("node found");

    assert_eq!((device.major, device.minor), (259, 0));
    let error = finder
        .block_by_guest_path("/dev/ttyS9")
        .expect_err("not a block device");
    assert_eq!(error.code(), ErrorCode::InvalidArgument);
    for bad in ["/etc/passwd", "/dev/../etc/x", "/dev", "vda"] {
        let error = finder.block_by_guest_path(bad).expect_err(bad);
        assert_eq!(error.code(), ErrorCode::InvalidArgument, "{bad}");
    }
}

#[test]
fn vfio_group_found_from_pci_path() {
    let (_root, paths) = guest();
    let device_dir = pci_device_dir(&paths.sysfs, &[2, 4]);
    let groups = paths.sysfs.join("kernel/iommu_groups/12");
    fs::create_dir_all(&groups).unwrap();
    std::os::unix::fs::symlink(&groups, device_dir.join("iommu_group")).unwrap();
    make_node(&paths.devfs, "vfio/12", SFlag::S_IFCHR, 243, 0);
    let finder = DeviceFinder {
        paths: &paths,
        timeout: SHORT,
    };

    let device = finder.vfio_group_by_pci("02/04").expect("group found");

    assert_eq!(device.node, paths.devfs.join("vfio/12"));
    assert_eq!((device.kind, device.major), (NodeKind::Char, 243));
}

#[test]
fn numbers_parsed() {
    assert_eq!(parse_numbers("254:16"), Some((254, 16)));
    assert_eq!(parse_numbers("254:"), None);
    assert_eq!(parse_numbers("a:1"), None);
}
