//! `linux.sysctl`, written through the container's `/proc/sys` after the proc mount.
//!
//! Only sysctls that belong to a namespace of the container are accepted. Any other key
//! would change the whole machine, because `/proc/sys` outside the namespaced entries is
//! global.

use std::path::PathBuf;

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::{failed, InitError};

/// IPC sysctls that the kernel keeps per IPC namespace.
const IPC_KEYS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Writes each sysctl of the spec.
pub(crate) fn apply(spec: &Spec) -> Result<(), InitError> {
    let Some(sysctls) = spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.sysctl().as_ref())
    else {
        return Ok(());
    };
    let namespaces: Vec<LinuxNamespaceType> = spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.namespaces().clone())
        .unwrap_or_default()
        .iter()
        .map(|namespace| namespace.typ())
        .collect();

    let mut keys: Vec<&String> = sysctls.keys().collect();
    keys.sort();
    for key in keys {
        let path = proc_path(key, &namespaces)?;
        std::fs::write(&path, &sysctls[key]).map_err(failed(format_args!(
            "set sysctl {key} to {:?} in {}",
            sysctls[key],
            path.display()
        )))?;
    }
    Ok(())
}

/// Checks `key` and returns its file under `/proc/sys`.
fn proc_path(key: &str, namespaces: &[LinuxNamespaceType]) -> Result<PathBuf, InitError> {
    let invalid =
        |reason: &str| InitError::invalid_spec(format!("linux.sysctl key {key:?} {reason}"));
    let parts: Vec<&str> = key.split('.').collect();
    if key.contains('/') || parts.iter().any(|part| part.is_empty() || *part == "..") {
        return Err(invalid(
            "must be dot-separated names without '/', '..' or empty parts",
        ));
    }

    let needed = if IPC_KEYS.contains(&key) || key.starts_with("fs.mqueue.") {
        LinuxNamespaceType::Ipc
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        LinuxNamespaceType::Uts
    } else if key.starts_with("net.") {
        LinuxNamespaceType::Network
    } else {
        return Err(invalid(
            "is not namespaced, so it would change the whole machine",
        ));
    };
    if !namespaces.contains(&needed) {
        return Err(invalid(&format!(
            "needs a new {needed:?} namespace in the spec"
        )));
    }
    Ok(PathBuf::from("/proc/sys").join(parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: &[LinuxNamespaceType] = &[
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Network,
    ];

    #[test]
    fn net_key_maps_to_proc_path() {
        let path = proc_path("net.ipv4.ip_forward", ALL).unwrap();

        assert_eq!(path, PathBuf::from("/proc/sys/net/ipv4/ip_forward"));
    }

    #[test]
    fn key_with_slash_or_dot_dot_is_rejected() {
        for key in ["net/ipv4", "net...ipv4", "net.ipv4..", "..", "net.ipv4.a/b"] {
            let error = proc_path(key, ALL).unwrap_err();
            assert!(
                error.message.contains("must be dot-separated"),
                "{key}: {}",
                error.message
            );
        }
    }

    #[test]
    fn global_key_is_rejected() {
        let error = proc_path("kernel.panic", ALL).unwrap_err();

        assert!(
            error.message.contains("not namespaced"),
            "{}",
            error.message
        );
    }

    #[test]
    fn key_without_its_namespace_is_rejected() {
        let error = proc_path("kernel.shmmax", &[LinuxNamespaceType::Network]).unwrap_err();

        assert!(error.message.contains("Ipc"), "{}", error.message);
    }
}
