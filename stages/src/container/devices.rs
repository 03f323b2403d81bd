//! Stage `devices`: checks the request's devices.
//!
//! NOTE: finding the guest device node and rewriting `linux.devices` and the cgroup
//! device rules is not implemented yet, so any request device is rejected as
//! unimplemented, and a request without devices passes through unchanged.

use crate::context::ContainerContext;
use crate::error::StageError;
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

/// Validates device types; resolves nothing yet.
#[derive(Debug, Default)]
pub struct Devices;

impl Stage<ContainerContext> for Devices {
    fn name(&self) -> &'static str {
        "devices"
    }

    fn apply(&self, ctx: &mut ContainerContext) -> Result<Box<dyn Undo>, StageError> {
        // Check every type first, so a request with an unknown type is reported as
        // invalid rather than as unimplemented.
        for device in &ctx.devices {
            if !KNOWN_DEVICE_TYPES.contains(&device.type_.as_str()) {
                return Err(StageError::invalid(
                    "device type",
                    &device.type_,
                    format!(
                        "device {:?} has an unknown type; known types are {}",
                        device.id,
                        KNOWN_DEVICE_TYPES.join(", ")
                    ),
                ));
            }
        }

        if let Some(device) = ctx.devices.first() {
            return Err(StageError::Unimplemented {
                kind: "device",
                value: device.id.clone(),
                reason: format!(
                    "this agent cannot resolve {} devices to guest device nodes yet",
                    device.type_
                ),
            });
        }

        Ok(Box::new(NoUndo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::request::Device;
    use crate::testing::{test_context, test_sandbox};

    fn device(id: &str, type_: &str) -> Device {
        Device {
            id: id.to_string(),
            type_: type_.to_string(),
            vm_path: "/dev/vdb".to_string(),
            container_path: "/dev/data".to_string(),
            options: Vec::new(),
        }
    }

    #[test]
    fn no_devices_pass_through() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let mut ctx = test_context(&test.sandbox, "c1");
        let before = ctx.spec.clone();

        Devices.apply(&mut ctx).expect("no devices to resolve");

        assert_eq!(ctx.spec, before);
    }

    #[test]
    fn unknown_type_is_invalid_argument() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let mut ctx = test_context(&test.sandbox, "c1");
        ctx.devices = vec![device("d1", "blk"), device("d2", "floppy")];

        let error = Devices
            .apply(&mut ctx)
            .err()
            .expect("unknown type rejected");

        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        let message = error.to_string();
        assert!(message.contains("\"floppy\""), "{message}");
        assert!(message.contains("\"d2\""), "{message}");
    }

    #[test]
    fn known_type_is_unimplemented() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let mut ctx = test_context(&test.sandbox, "c1");
        ctx.devices = vec![device("disk-1", "blk")];

        let error = Devices
            .apply(&mut ctx)
            .err()
            .expect("resolution not implemented");

        assert_eq!(error.code(), ErrorCode::Unimplemented);
        let message = error.to_string();
        assert!(message.contains("\"disk-1\""), "{message}");
        assert!(message.contains("blk devices"), "{message}");
    }
}
