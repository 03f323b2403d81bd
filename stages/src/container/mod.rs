//! The CreateContainer pipeline. [`container_pipeline`] is the one place that lists its
//! stages and their order.

mod cgroup_fixup;
mod cpuset;
mod devices;
pub(crate) mod hooks;
mod namespaces;
mod pci_rescan;
mod spawn;
mod storages;
mod sysctls;

pub use cgroup_fixup::CgroupFixup;
pub use cpuset::{format_cpu_list, parse_cpu_list, Cpuset};
pub use devices::{Devices, KNOWN_DEVICE_TYPES};
pub use hooks::Hooks;
pub use namespaces::Namespaces;
pub use pci_rescan::PciRescan;
pub use spawn::Spawn;
pub use storages::Storages;
pub use sysctls::Sysctls;

use std::time::Duration;

use crate::context::ContainerContext;
use crate::device::wait::DEFAULT_DEVICE_TIMEOUT;
use crate::pipeline::Pipeline;
use crate::stage::Stage;

/// Settings of the container pipeline's stages.
#[derive(Debug, Clone)]
pub struct ContainerOptions {
    /// How long the devices and storages stages wait for each device.
    pub device_timeout: Duration,
}

impl Default for ContainerOptions {
    fn default() -> Self {
        ContainerOptions {
            device_timeout: DEFAULT_DEVICE_TIMEOUT,
        }
    }
}

/// Builds the pipeline that creates a container, with default options.
pub fn container_pipeline() -> Pipeline<ContainerContext> {
    Pipeline::new(container_stages(&ContainerOptions::default()))
}

/// Returns the stages of the container pipeline in run order, so that a caller can
/// build the pipeline with some stages wrapped, as fault-injection tests do.
pub fn container_stages(options: &ContainerOptions) -> Vec<Box<dyn Stage<ContainerContext>>> {
    vec![
        Box::new(PciRescan),
        Box::new(Devices {
            timeout: options.device_timeout,
        }),
        Box::new(Storages {
            device_timeout: options.device_timeout,
        }),
        Box::new(CgroupFixup::default()),
        Box::new(Cpuset),
        Box::new(Sysctls),
        Box::new(Namespaces),
        Box::new(Hooks),
        Box::new(Spawn),
    ]
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use oci_spec::runtime::LinuxBuilder;

    use super::*;
    use crate::error::ErrorCode;
    use crate::request::Storage;
    use crate::testing::{test_context, test_sandbox};

    #[test]
    fn container_pipeline_order() {
        assert_eq!(
            container_pipeline().stage_names(),
            [
                "pci-rescan",
                "devices",
                "storages",
                "cgroup-fixup",
                "cpuset",
                "sysctls",
                "namespaces",
                "hooks",
                "spawn"
            ]
        );
    }

    /// Runs the whole pipeline up to a spawn that fails on the missing rootfs, and checks
    /// that every earlier stage's change is gone.
    #[test]
    fn spawn_failure_rolls_back_every_stage() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let paths = test.sandbox.paths.clone();
        let forward = paths.procfs.join("sys/net/ipv4/ip_forward");
        std::fs::create_dir_all(forward.parent().unwrap()).unwrap();
        std::fs::write(&forward, "0\n").unwrap();
        let mount_point = paths.run_dir.join("sandbox/ephemeral/cache");
        let mut ctx = test_context(&test.sandbox, "c1");
        ctx.storages = vec![Storage {
            driver: "ephemeral".to_string(),
            mount_point: mount_point.display().to_string(),
            ..Storage::default()
        }];
        let sysctls = HashMap::from([("net.ipv4.ip_forward".to_string(), "1".to_string())]);
        ctx.spec.set_linux(Some(
            LinuxBuilder::default().sysctl(sysctls).build().unwrap(),
        ));
        let logger = test.sandbox.logger.clone();

        let error = container_pipeline()
            .run(&mut ctx, &logger)
            .expect_err("spawn fails without a rootfs");

        assert_eq!(error.stage, "spawn");
        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        assert!(error.undo_errors.is_empty(), "{error}");
        assert_eq!(error.timings.len(), 9);
        assert_eq!(test.mounter.mount_count(), 1);
        assert_eq!(test.mounter.unmounted(), std::slice::from_ref(&mount_point));
        assert_eq!(test.sandbox.storages.references(&mount_point), 0);
        assert!(!mount_point.exists());
        assert_eq!(std::fs::read_to_string(&forward).unwrap(), "0");
        assert!(!paths.bundle_dir("c1").exists());
    }
}
