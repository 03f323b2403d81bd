//! A user namespace for test containers: container IDs 0..RANGE mapped onto host IDs
//! HOST_BASE..HOST_BASE+RANGE, and a bundle the mapped root can use.

use std::fs;
use std::os::unix::fs::{lchown, PermissionsExt};
use std::path::Path;

use oci_spec::runtime::{
    LinuxIdMapping, LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Spec,
};

use super::Bundle;

/// First host ID of the range mapped into the test containers.
pub const HOST_BASE: u32 = 200_000;
pub const RANGE: u32 = 65_536;

pub fn id_mapping(container: u32, host: u32, size: u32) -> LinuxIdMapping {
    LinuxIdMappingBuilder::default()
        .container_id(container)
        .host_id(host)
        .size(size)
        .build()
        .unwrap()
}

/// Gives `spec` a new user namespace with the test range as its uid and gid mappings,
/// replacing a user namespace it had.
pub fn with_user_namespace(mut spec: Spec) -> Spec {
    let mut linux = spec.linux().clone().unwrap();
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    namespaces.retain(|namespace| namespace.typ() != LinuxNamespaceType::User);
    namespaces.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::User)
            .build()
            .unwrap(),
    );
    linux.set_namespaces(Some(namespaces));
    linux.set_uid_mappings(Some(vec![id_mapping(0, HOST_BASE, RANGE)]));
    linux.set_gid_mappings(Some(vec![id_mapping(0, HOST_BASE, RANGE)]));
    spec.set_linux(Some(linux));
    spec
}

/// Makes the bundle usable by the mapped root: the rootfs belongs to it, as an image
/// unpacked for a user namespace does, and the bundle directory can be searched.
pub fn map_bundle(bundle: &Bundle) {
    fs::set_permissions(bundle.directory.path(), fs::Permissions::from_mode(0o755)).unwrap();
    chown_tree(&bundle.rootfs(), HOST_BASE);
}

fn chown_tree(path: &Path, id: u32) {
    lchown(path, Some(id), Some(id)).unwrap();
    if fs::symlink_metadata(path).unwrap().is_dir() {
        for entry in fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), id);
        }
    }
}
