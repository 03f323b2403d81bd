//! Stage `devices`: finds the guest node of each request device and rewrites the spec's
//! `linux.devices` entry and cgroup device rules from the host's numbers to the guest's.
//!
//! The whole host-to-guest map is built before the spec changes, and the rewrite reads
//! only the original numbers, so one device's new numbers are never taken for another
//! device's old ones.

use std::path::PathBuf;
use std::time::Duration;

use oci_spec::runtime::LinuxDeviceType;

use crate::context::ContainerContext;
use crate::device::wait::DEFAULT_DEVICE_TIMEOUT;
use crate::device::{DeviceFinder, GuestDevice, NodeKind};
use crate::error::StageError;
use crate::request::Device;
use crate::stage::{NoUndo, Stage, Undo};

/// Device types of the Kata agent API.
pub const KNOWN_DEVICE_TYPES: &[&str] = &[
    "blk",
    "blk-ccw",
    "mmioblk",
    "scsi",
    "nvdimm",
    "vfio",
    "vfio-pci",
    "vfio-pci-gk",
    "vfio-ap",
    "vfio-ap-cold",
];

/// Resolves request devices and rewrites the spec; the undo has nothing to restore
/// because the spec belongs to the request.
#[derive(Debug)]
pub struct Devices {
    /// How long to wait for each device to appear.
    pub timeout: Duration,
}

impl Default for Devices {
    fn default() -> Self {
        Devices {
            timeout: DEFAULT_DEVICE_TIMEOUT,
        }
    }
}

/// One spec device entry to rewrite: its index in `linux.devices`, the numbers it had
/// and the guest device that replaces them.
struct Rewrite {
    index: usize,
    old_type: LinuxDeviceType,
    old_numbers: (i64, i64),
    guest: GuestDevice,
    /// New container path, for VFIO groups whose number differs in the guest.
    new_path: Option<PathBuf>,
}

impl Stage<ContainerContext> for Devices {
    fn name(&self) -> &'static str {
        "devices"
    }

    fn apply(&self, ctx: &mut ContainerContext) -> Result<Box<dyn Undo>, StageError> {
        // Check every type first, so a request with an unknown type fails before any wait.
        for device in &ctx.devices {
            check_type(device)?;
        }

        let finder = DeviceFinder {
            paths: &ctx.sandbox.paths,
            timeout: self.timeout,
        };
        let mut rewrites = Vec::with_capacity(ctx.devices.len());
        for device in &ctx.devices {
            let guest = find(&finder, device)?;
            rewrites.push(plan_rewrite(ctx, device, guest)?);
        }

        apply_rewrites(ctx, &rewrites);
        Ok(Box::new(NoUndo))
    }
}

fn check_type(device: &Device) -> Result<(), StageError> {
    match device.type_.as_str() {
        "blk" | "mmioblk" | "scsi" | "nvdimm" | "vfio" | "vfio-pci" => Ok(()),
        other if KNOWN_DEVICE_TYPES.contains(&other) => Err(StageError::Unimplemented {
            kind: "device type",
            value: other.to_string(),
            reason: format!("device {:?} needs it", device.id),
        }),
        other => Err(StageError::invalid(
            "device type",
            other,
            format!(
                "device {:?} has an unknown type; known types are {}",
                device.id,
                KNOWN_DEVICE_TYPES.join(", ")
            ),
        )),
    }
}

/// Finds the guest node of `device` by the locator its type uses.
fn find(finder: &DeviceFinder<'_>, device: &Device) -> Result<GuestDevice, StageError> {
    match device.type_.as_str() {
        "blk" => finder.block_by_pci(&device.id),
        "scsi" => finder.block_by_scsi(&device.id),
        "mmioblk" | "nvdimm" => finder.block_by_guest_path(&device.vm_path),
        _ => find_vfio_group(finder, device),
    }
}

/// Finds the VFIO group of a device. Each option `HOST_BDF=GUEST_PCI_PATH` names one
/// function; all must share one IOMMU group. Without options, `id` is the PCI path.
fn find_vfio_group(finder: &DeviceFinder<'_>, device: &Device) -> Result<GuestDevice, StageError> {
    let mut pci_paths: Vec<&str> = device
        .options
        .iter()
        .filter_map(|option| option.split_once('=').map(|(_, guest)| guest))
        .collect();
    if pci_paths.is_empty() {
        pci_paths.push(&device.id);
    }

    let mut group: Option<GuestDevice> = None;
    for pci_path in pci_paths {
        let found = finder.vfio_group_by_pci(pci_path)?;
        if let Some(first) = &group {
            if first.node != found.node {
                return Err(StageError::invalid(
                    "VFIO device",
                    &device.id,
                    format!(
                        "its functions are in different IOMMU groups: {} and {}",
                        first.node.display(),
                        found.node.display()
                    ),
                ));
            }
        }
        group = Some(found);
    }
    group.ok_or_else(|| StageError::invalid("VFIO device", &device.id, "names no PCI path"))
}

/// Finds the spec entry for `device` and records how it changes.
fn plan_rewrite(
    ctx: &ContainerContext,
    device: &Device,
    guest: GuestDevice,
) -> Result<Rewrite, StageError> {
    let entries = ctx
        .spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.devices().as_ref());
    let found = entries.and_then(|entries| {
        entries
            .iter()
            .position(|entry| entry.path().as_os_str() == device.container_path.as_str())
    });
    let Some(index) = found else {
        return Err(StageError::invalid(
            "device",
            &device.id,
            format!(
                "no linux.devices entry has the container path {:?}",
                device.container_path
            ),
        ));
    };
    let entry = &entries.expect("entry found above")[index];

    let new_path = (guest.kind == NodeKind::Char && device.type_.starts_with("vfio")).then(|| {
        let group = guest.node.file_name().unwrap_or_default();
        PathBuf::from("/dev/vfio").join(group)
    });
    Ok(Rewrite {
        index,
        old_type: entry.typ(),
        old_numbers: (entry.major(), entry.minor()),
        guest,
        new_path,
    })
}

/// Rewrites the device entries and every cgroup rule that named an old device.
fn apply_rewrites(ctx: &mut ContainerContext, rewrites: &[Rewrite]) {
    let Some(linux) = ctx.spec.linux_mut().as_mut() else {
        return;
    };

    if let Some(entries) = linux.devices_mut().as_mut() {
        for rewrite in rewrites {
            let entry = &mut entries[rewrite.index];
            entry.set_major(rewrite.guest.major as i64);
            entry.set_minor(rewrite.guest.minor as i64);
            if let Some(path) = &rewrite.new_path {
                entry.set_path(path.clone());
            }
        }
    }

    let rules = linux
        .resources_mut()
        .as_mut()
        .and_then(|resources| resources.devices_mut().as_mut());
    for rule in rules.into_iter().flatten() {
        let (Some(major), Some(minor)) = (rule.major(), rule.minor()) else {
            continue;
        };
        let matching = rewrites.iter().find(|rewrite| {
            rule.typ() == Some(rewrite.old_type) && rewrite.old_numbers == (major, minor)
        });
        if let Some(rewrite) = matching {
            rule.set_major(Some(rewrite.guest.major as i64));
            rule.set_minor(Some(rewrite.guest.minor as i64));
        }
    }
}

#[cfg(test)]
mod tests;
