//! Namespaces of the init: join the ones given by path, then create the others.
//!
//! The pid namespace is not handled here: the caller's clone already placed the init in
//! it. The cgroup namespace is created after the caller moved the init into its cgroup,
//! so the container's view of cgroups starts at its own cgroup.

use std::fs::File;

use nix::sched::{setns, unshare, CloneFlags};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::{failed, InitError};

/// Joins and creates the namespaces the spec lists, except pid and user.
pub(crate) fn enter(spec: &Spec) -> Result<(), InitError> {
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.namespaces().clone())
        .unwrap_or_default();
    let mut new_namespaces = CloneFlags::empty();

    for namespace in &namespaces {
        let Some(flag) = clone_flag(namespace.typ()) else {
            continue;
        };
        match namespace.path() {
            Some(path) => {
                let file = File::open(path).map_err(|cause| {
                    InitError::invalid_spec(format!(
                        "open {:?} namespace {}: {cause}",
                        namespace.typ(),
                        path.display()
                    ))
                })?;
                setns(&file, flag).map_err(failed(format_args!(
                    "join {:?} namespace {}",
                    namespace.typ(),
                    path.display()
                )))?;
            }
            None => new_namespaces |= flag,
        }
    }

    unshare(new_namespaces).map_err(failed(format_args!("create namespaces {new_namespaces:?}")))
}

/// Returns the clone flag of each namespace this module handles.
fn clone_flag(kind: LinuxNamespaceType) -> Option<CloneFlags> {
    match kind {
        LinuxNamespaceType::Mount => Some(CloneFlags::CLONE_NEWNS),
        LinuxNamespaceType::Uts => Some(CloneFlags::CLONE_NEWUTS),
        LinuxNamespaceType::Ipc => Some(CloneFlags::CLONE_NEWIPC),
        LinuxNamespaceType::Network => Some(CloneFlags::CLONE_NEWNET),
        LinuxNamespaceType::Cgroup => Some(CloneFlags::CLONE_NEWCGROUP),
        LinuxNamespaceType::Pid | LinuxNamespaceType::User | LinuxNamespaceType::Time => None,
    }
}
