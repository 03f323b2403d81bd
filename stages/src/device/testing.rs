//! Fake guest devices for unit tests: sysfs entries as the kernel lays them out and
//! real device nodes made with mknod(2). The nodes are never opened.

use std::fs;
use std::path::{Path, PathBuf};

use nix::sys::stat::{makedev, mknod, Mode, SFlag};

/// Creates the device node `<devfs>/<name>` of `kind` with the given numbers.
pub fn make_node(devfs: &Path, name: &str, kind: SFlag, major: u64, minor: u64) -> PathBuf {
    let node = devfs.join(name);
    fs::create_dir_all(node.parent().unwrap()).unwrap();
    mknod(
        &node,
        kind,
        Mode::from_bits_truncate(0o600),
        makedev(major, minor),
    )
    .expect("mknod needs root");
    node
}

/// Creates the sysfs directory of the PCI device at `slots` (bridges first) and returns
/// it, adding a `pci_bus` entry to every bridge on the way.
pub fn pci_device_dir(sysfs: &Path, slots: &[u8]) -> PathBuf {
    let mut dir = sysfs.join("devices/pci0000:00");
    let mut bus = 0u8;
    for (index, slot) in slots.iter().enumerate() {
        dir.push(format!("0000:{bus:02x}:{slot:02x}.0"));
        fs::create_dir_all(&dir).unwrap();
        if index + 1 < slots.len() {
            // Each bridge leads to a bus numbered after its depth, as a hypervisor would.
            bus = index as u8 + 1;
            fs::create_dir_all(dir.join(format!("pci_bus/0000:{bus:02x}"))).unwrap();
        }
    }
    dir
}

/// Adds a virtio-blk disk `name` at PCI `slots` to sysfs and devfs.
pub fn add_virtio_blk(
    sysfs: &Path,
    devfs: &Path,
    slots: &[u8],
    name: &str,
    major: u64,
    minor: u64,
) {
    let block = pci_device_dir(sysfs, slots)
        .join("virtio3/block")
        .join(name);
    fs::create_dir_all(&block).unwrap();
    fs::write(block.join("dev"), format!("{major}:{minor}\n")).unwrap();
    make_node(devfs, name, SFlag::S_IFBLK, major, minor);
}
