//! Finding the guest device node behind a request's device or storage source.
//!
//! The host names a device by where it plugged it: a PCI path for virtio-blk and VFIO, a
//! SCSI address, or a guest path for MMIO and NVDIMM devices. Each lookup waits for the
//! kernel to show the device in sysfs and the node in devfs, up to a timeout, and reads
//! the major and minor numbers the container's spec must use.

mod pci;
pub mod wait;

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

pub use pci::PciPath;

use crate::error::StageError;
use crate::paths::GuestPaths;

/// Whether a device node is a block or a character device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    Block,
    Char,
}

/// A device node in the guest and its numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestDevice {
    pub node: PathBuf,
    pub kind: NodeKind,
    pub major: u64,
    pub minor: u64,
}

/// Finds devices under one guest's sysfs and devfs, waiting up to `timeout` for each.
#[derive(Debug, Clone, Copy)]
pub struct DeviceFinder<'a> {
    pub paths: &'a GuestPaths,
    pub timeout: Duration,
}

impl DeviceFinder<'_> {
    /// Finds the virtio-blk disk at PCI path `pci_path`.
    pub fn block_by_pci(&self, pci_path: &str) -> Result<GuestDevice, StageError> {
        let path = PciPath::parse(pci_path)?;
        let what = format!("virtio-blk device at PCI path {path}");

        let name = wait::until(&what, self.timeout, || {
            match path.sysfs_dir(&self.paths.sysfs)? {
                Some(dir) => block_name_under(&dir),
                None => Ok(None),
            }
        })?;
        self.block_node(&name, &what)
    }

    /// Finds the SCSI disk at address `SCSI_ID:LUN` on host 0.
    pub fn block_by_scsi(&self, address: &str) -> Result<GuestDevice, StageError> {
        let (target, lun) = parse_scsi_address(address)?;
        let dir = self
            .paths
            .sysfs
            .join("bus/scsi/devices")
            .join(format!("0:0:{target}:{lun}"));
        let what = format!("SCSI device {address}");

        let name = wait::until(&what, self.timeout, || block_name_under(&dir))?;
        self.block_node(&name, &what)
    }

    /// Finds the node at guest path `vm_path`, such as `/dev/vdb` or `/dev/pmem0`, which
    /// must be a block device.
    pub fn block_by_guest_path(&self, vm_path: &str) -> Result<GuestDevice, StageError> {
        let node = self.devfs_path(vm_path)?;
        let what = format!("block device {vm_path}");

        let device = wait::until(&what, self.timeout, || stat_node(&node))?;
        if device.kind != NodeKind::Block {
            return Err(StageError::invalid(
                "guest device path",
                vm_path,
                "is not a block device",
            ));
        }
        Ok(device)
    }

    /// Finds the VFIO group node, `/dev/vfio/N`, of the device at PCI path `pci_path`.
    pub fn vfio_group_by_pci(&self, pci_path: &str) -> Result<GuestDevice, StageError> {
        let path = PciPath::parse(pci_path)?;
        let what = format!("VFIO device at PCI path {path}");

        let group = wait::until(&what, self.timeout, || {
            match path.sysfs_dir(&self.paths.sysfs)? {
                Some(dir) => iommu_group(&dir),
                None => Ok(None),
            }
        })?;
        let node = self.paths.devfs.join("vfio").join(&group);
        let what = format!("VFIO group node {}", node.display());
        let device = wait::until(&what, self.timeout, || stat_node(&node))?;
        if device.kind != NodeKind::Char {
            return Err(StageError::invalid(
                "VFIO group node",
                node.display().to_string(),
                "is not a character device",
            ));
        }
        Ok(device)
    }

    /// Waits for `<devfs>/<name>` and checks that it carries the numbers sysfs reports.
    fn block_node(&self, name: &BlockName, what: &str) -> Result<GuestDevice, StageError> {
        let node = self.paths.devfs.join(&name.name);
        let device = wait::until(what, self.timeout, || stat_node(&node))?;

        if device.kind != NodeKind::Block || (device.major, device.minor) != name.numbers {
            let reason = format!(
                "sysfs reports block device {}:{}, the node is {:?} {}:{}",
                name.numbers.0, name.numbers.1, device.kind, device.major, device.minor
            );
            return Err(StageError::invalid(
                "device node",
                node.display().to_string(),
                reason,
            ));
        }
        Ok(device)
    }

    /// Maps a guest path under `/dev` onto the devfs in use.
    fn devfs_path(&self, vm_path: &str) -> Result<PathBuf, StageError> {
        let invalid = |reason: &str| StageError::invalid("guest device path", vm_path, reason);

        let relative = Path::new(vm_path)
            .strip_prefix("/dev")
            .map_err(|_| invalid("must be a path under /dev"))?;
        let plain = relative
            .components()
            .all(|component| matches!(component, Component::Normal(_)));
        if relative.as_os_str().is_empty() || !plain {
            return Err(invalid("must name a device under /dev without '.' or '..'"));
        }
        Ok(self.paths.devfs.join(relative))
    }
}

/// The kernel name of a block device and its numbers from sysfs.
#[derive(Debug)]
struct BlockName {
    name: String,
    numbers: (u64, u64),
}

/// Returns the block device under a sysfs device directory: `block/<name>` directly
/// (SCSI) or under a `virtio*` child (virtio-blk), with the numbers of its `dev` file.
fn block_name_under(device_dir: &Path) -> Result<Option<BlockName>, StageError> {
    let mut candidates = vec![device_dir.join("block")];
    if let Ok(entries) = fs::read_dir(device_dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("virtio") {
                candidates.push(entry.path().join("block"));
            }
        }
    }

    for block_dir in candidates {
        let Ok(entries) = fs::read_dir(&block_dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let dev_file = entry.path().join("dev");
            let text = match fs::read_to_string(&dev_file) {
                Ok(text) => text,
                // The kernel creates the directory before its attributes.
                Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
                Err(error) => return Err(StageError::io("read", dev_file, error)),
            };
            let numbers = parse_numbers(text.trim()).ok_or_else(|| {
                StageError::invalid(
                    "device numbers",
                    text.trim(),
                    format!("expected MAJOR:MINOR in {}", dev_file.display()),
                )
            })?;
            return Ok(Some(BlockName {
                name: entry.file_name().to_string_lossy().into_owned(),
                numbers,
            }));
        }
    }

    Ok(None)
}

/// Returns the IOMMU group number of a PCI device, the name its `iommu_group` link
/// points to.
fn iommu_group(device_dir: &Path) -> Result<Option<String>, StageError> {
    let link = device_dir.join("iommu_group");
    let target = match fs::read_link(&link) {
        Ok(target) => target,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StageError::io("read IOMMU group link", link, error)),
    };

    let group = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    if group.is_empty() || !group.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(StageError::invalid(
            "IOMMU group",
            target.display().to_string(),
            format!("the link {} must end in a group number", link.display()),
        ));
    }
    Ok(Some(group))
}

/// Returns the node's kind and numbers, or `None` while it does not exist.
fn stat_node(node: &Path) -> Result<Option<GuestDevice>, StageError> {
    let metadata = match fs::metadata(node) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StageError::io("inspect device node", node, error)),
    };

    let kind = if metadata.file_type().is_block_device() {
        NodeKind::Block
    } else if metadata.file_type().is_char_device() {
        NodeKind::Char
    } else {
        return Err(StageError::invalid(
            "device node",
            node.display().to_string(),
            "is not a device node",
        ));
    };
    let rdev = metadata.rdev();
    Ok(Some(GuestDevice {
        node: node.to_path_buf(),
        kind,
        major: nix::sys::stat::major(rdev),
        minor: nix::sys::stat::minor(rdev),
    }))
}

/// Parses `MAJOR:MINOR`.
pub(crate) fn parse_numbers(text: &str) -> Option<(u64, u64)> {
    let (major, minor) = text.split_once(':')?;
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    if !digits(major) || !digits(minor) {
        return None;
    }
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Parses a SCSI address `SCSI_ID:LUN` into its two decimal numbers.
fn parse_scsi_address(address: &str) -> Result<(u32, u32), StageError> {
    let invalid =
        || StageError::invalid("SCSI address", address, "expected SCSI_ID:LUN, as in 0:1");
    let (target, lun) = address.split_once(':').ok_or_else(invalid)?;
    let number = |part: &str| -> Result<u32, StageError> {
        if part.is_empty() || !part.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(invalid());
        }
        part.parse().map_err(|_| invalid())
    };
    Ok((number(target)?, number(lun)?))
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;
