//! `linux.resources.network` and `linux.resources.rdma`.
//!
//! The network fields go to the v1 `net_cls` and `net_prio` controllers, which cgroup v2
//! does not have. RDMA limits go to the `rdma` controller of v1 or v2. A field whose
//! controller is not mounted fails with [`Error::Unsupported`] instead of being dropped.

use std::collections::HashMap;
use std::path::Path;

use oci_spec::runtime::{LinuxNetwork, LinuxRdma};

use super::layout::Hierarchy;
use super::resources::{write_controller_file, write_file};
use crate::error::Error;

/// Writes `net_cls.classid` and one `net_prio.ifpriomap` line per interface.
pub(super) fn apply_network(
    targets: &[(&Hierarchy, &Path)],
    network: &LinuxNetwork,
) -> Result<(), Error> {
    // A class id of 0 means no class, which is what a new cgroup has already, and runc
    // does not write it either.
    if let Some(class_id) = network.class_id().filter(|class_id| *class_id != 0) {
        let directory = v1_directory(targets, "net_cls", "linux.resources.network.classID")?;
        write_file(&directory.join("net_cls.classid"), &class_id.to_string())?;
    }

    let priorities = network.priorities().as_deref().unwrap_or_default();
    if priorities.is_empty() {
        return Ok(());
    }
    let directory = v1_directory(targets, "net_prio", "linux.resources.network.priorities")?;
    for priority in priorities {
        let name = priority.name();
        check_name("linux.resources.network.priorities.name", name)?;
        // NOTE: the kernel looks the name up in the initial network namespace
        // (net/core/netprio_cgroup.c), so an interface that exists only in the container fails.
        write_file(
            &directory.join("net_prio.ifpriomap"),
            &format!("{name} {}", priority.priority()),
        )?;
    }
    Ok(())
}

/// Writes one `rdma.max` line per device, in device order. A limit the spec leaves out
/// is written as `max`, because the spec's default is no limit.
pub(super) fn apply_rdma(
    targets: &[(&Hierarchy, &Path)],
    rdma: &HashMap<String, LinuxRdma>,
) -> Result<(), Error> {
    if rdma.is_empty() {
        return Ok(());
    }
    let v1 = targets
        .iter()
        .find(|(hierarchy, _)| !hierarchy.unified && hierarchy.has("rdma"));
    let v2 = targets
        .iter()
        .find(|(hierarchy, _)| hierarchy.unified && hierarchy.has("rdma"));
    let Some((hierarchy, directory)) = v1.or(v2) else {
        return Err(Error::Unsupported {
            field: "linux.resources.rdma",
            missing: "the rdma controller is mounted neither as cgroup v1 nor in the cgroup2 \
                      hierarchy under the cgroup root"
                .to_owned(),
        });
    };

    let mut devices: Vec<(&String, &LinuxRdma)> = rdma.iter().collect();
    devices.sort_by_key(|(device, _)| *device);
    for (device, limits) in devices {
        check_name("linux.resources.rdma device", device)?;
        write_controller_file(
            hierarchy,
            directory,
            "rdma",
            "rdma.max",
            &rdma_max_line(device, limits),
        )?;
    }
    Ok(())
}

/// Formats one `rdma.max` line, such as `mlx5_0 hca_handle=2 hca_object=max`.
fn rdma_max_line(device: &str, limits: &LinuxRdma) -> String {
    let limit = |value: Option<u32>| value.map_or("max".to_owned(), |value| value.to_string());
    format!(
        "{device} hca_handle={} hca_object={}",
        limit(limits.hca_handles()),
        limit(limits.hca_objects())
    )
}

/// Finds the container's directory in the v1 hierarchy of `controller`.
fn v1_directory<'a>(
    targets: &[(&'a Hierarchy, &'a Path)],
    controller: &str,
    field: &'static str,
) -> Result<&'a Path, Error> {
    targets
        .iter()
        .find(|(hierarchy, _)| !hierarchy.unified && hierarchy.has(controller))
        .map(|(_, directory)| *directory)
        .ok_or_else(|| Error::Unsupported {
            field,
            missing: format!(
                "the {controller} controller, which exists only in cgroup v1, is not mounted \
                 under the cgroup root"
            ),
        })
}

/// Checks that an interface or device name is one word, because the kernel reads it as
/// the first field of a line.
fn check_name(key: &'static str, name: &str) -> Result<(), Error> {
    if name.is_empty() || name.contains(char::is_whitespace) || name.contains('\0') {
        return Err(Error::CgroupValue {
            key,
            value: name.to_owned(),
            reason: "must be a non-empty name without spaces".to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxInterfacePriorityBuilder, LinuxNetworkBuilder, LinuxRdmaBuilder};
    use std::fs;

    /// Creates a fake hierarchy with `controllers` and the container's directory at
    /// `leaf`. A v2 one gets the root's `cgroup.subtree_control`.
    fn fake(unified: bool, controllers: &[&str]) -> (tempfile::TempDir, Hierarchy) {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("leaf")).unwrap();
        if unified {
            fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
        }
        let hierarchy = Hierarchy {
            mount_point: root.path().to_path_buf(),
            controllers: controllers.iter().map(|name| name.to_string()).collect(),
            unified,
        };
        (root, hierarchy)
    }

    fn network(class_id: u32, interface: &str) -> LinuxNetwork {
        LinuxNetworkBuilder::default()
            .class_id(class_id)
            .priorities(vec![LinuxInterfacePriorityBuilder::default()
                .name(interface)
                .priority(5u32)
                .build()
                .unwrap()])
            .build()
            .unwrap()
    }

    fn rdma(entries: &[(&str, Option<u32>, Option<u32>)]) -> HashMap<String, LinuxRdma> {
        entries
            .iter()
            .map(|(device, handles, objects)| {
                let mut limits = LinuxRdmaBuilder::default();
                if let Some(handles) = handles {
                    limits = limits.hca_handles(*handles);
                }
                if let Some(objects) = objects {
                    limits = limits.hca_objects(*objects);
                }
                (device.to_string(), limits.build().unwrap())
            })
            .collect()
    }

    #[test]
    fn v1_network_controllers_get_class_and_priority() {
        let (root, hierarchy) = fake(false, &["net_cls", "net_prio"]);
        let leaf = root.path().join("leaf");

        apply_network(&[(&hierarchy, &leaf)], &network(0x0010_0001, "eth0")).unwrap();

        let read = |file: &str| fs::read_to_string(leaf.join(file)).unwrap();
        assert_eq!(read("net_cls.classid"), "1048577");
        assert_eq!(read("net_prio.ifpriomap"), "eth0 5");
    }

    #[test]
    fn class_id_without_net_cls_is_unsupported() {
        let (root, hierarchy) = fake(true, &["memory", "io"]);
        let leaf = root.path().join("leaf");
        let network = LinuxNetworkBuilder::default()
            .class_id(7u32)
            .build()
            .unwrap();

        let error = apply_network(&[(&hierarchy, &leaf)], &network).unwrap_err();

        assert!(error.is_unsupported(), "{error}");
        let message = error.to_string();
        assert!(
            message.contains("linux.resources.network.classID"),
            "{message}"
        );
        assert!(message.contains("net_cls controller"), "{message}");
        assert!(!leaf.join("net_cls.classid").exists());
    }

    #[test]
    fn priorities_without_net_prio_are_unsupported() {
        let (root, hierarchy) = fake(false, &["net_cls"]);
        let leaf = root.path().join("leaf");

        let error = apply_network(&[(&hierarchy, &leaf)], &network(7, "eth0")).unwrap_err();

        assert!(error.is_unsupported(), "{error}");
        assert!(
            error
                .to_string()
                .contains("linux.resources.network.priorities"),
            "{error}"
        );
    }

    #[test]
    fn interface_name_with_space_is_rejected() {
        let (root, hierarchy) = fake(false, &["net_cls", "net_prio"]);
        let leaf = root.path().join("leaf");

        let error = apply_network(&[(&hierarchy, &leaf)], &network(7, "eth0 9")).unwrap_err();

        assert!(error.is_invalid_input(), "{error}");
    }

    #[test]
    fn zero_class_id_needs_no_controller() {
        let (root, hierarchy) = fake(true, &["memory"]);
        let leaf = root.path().join("leaf");
        let network = LinuxNetworkBuilder::default()
            .class_id(0u32)
            .build()
            .unwrap();

        apply_network(&[(&hierarchy, &leaf)], &network).unwrap();
    }

    #[test]
    fn rdma_limits_go_to_v1_controller() {
        let (root, hierarchy) = fake(false, &["rdma"]);
        let leaf = root.path().join("leaf");

        apply_rdma(
            &[(&hierarchy, &leaf)],
            &rdma(&[("mlx5_0", Some(2), Some(2000))]),
        )
        .unwrap();

        assert_eq!(
            fs::read_to_string(leaf.join("rdma.max")).unwrap(),
            "mlx5_0 hca_handle=2 hca_object=2000"
        );
    }

    #[test]
    fn rdma_v2_writes_max_defaults() {
        let (root, hierarchy) = fake(true, &["memory", "rdma"]);
        let leaf = root.path().join("leaf");

        apply_rdma(&[(&hierarchy, &leaf)], &rdma(&[("mlx5_0", None, Some(10))])).unwrap();

        assert_eq!(
            fs::read_to_string(leaf.join("rdma.max")).unwrap(),
            "mlx5_0 hca_handle=max hca_object=10"
        );
        assert_eq!(
            fs::read_to_string(root.path().join("cgroup.subtree_control")).unwrap(),
            "+rdma"
        );
    }

    #[test]
    fn rdma_without_controller_is_unsupported() {
        let (root, hierarchy) = fake(true, &["memory"]);
        let leaf = root.path().join("leaf");

        let error =
            apply_rdma(&[(&hierarchy, &leaf)], &rdma(&[("mlx5_0", Some(1), None)])).unwrap_err();

        assert!(error.is_unsupported(), "{error}");
        assert!(
            error.to_string().contains("linux.resources.rdma"),
            "{error}"
        );
        assert!(!leaf.join("rdma.max").exists());
    }
}
