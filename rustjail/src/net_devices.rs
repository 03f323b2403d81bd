//! `linux.netDevices`: network devices of the caller's network namespace moved into the
//! container's, renamed, with their permanent global addresses, and set up.
//!
//! The caller moves them once the init has created its network namespace and before the
//! user process starts. As the runtime spec requires, nothing moves them back: when
//! the namespace goes away, the kernel destroys virtual devices and returns physical
//! ones to the initial namespace.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;

use nix::sched::{setns, CloneFlags};
use oci_spec::runtime::{LinuxNamespaceType, LinuxNetDevice, Spec};

use crate::error::Error;
use crate::netlink::{Address, Netlink};

/// Maximum length of an interface name in bytes, without the terminating NUL.
const MAX_NAME_LEN: usize = 15;

/// Returns the devices to move, keyed by their name in the caller's namespace and
/// sorted, after checking the names and that the container gets its own network
/// namespace to move them into.
pub(crate) fn plan(spec: &Spec) -> Result<Vec<(String, String)>, Error> {
    let linux = spec.linux().as_ref();
    let devices: HashMap<String, LinuxNetDevice> = linux
        .and_then(|linux| linux.net_devices().clone())
        .unwrap_or_default();
    if devices.is_empty() {
        return Ok(Vec::new());
    }
    let has_network_namespace = linux
        .and_then(|linux| linux.namespaces().as_ref())
        .is_some_and(|namespaces| {
            namespaces
                .iter()
                .any(|namespace| namespace.typ() == LinuxNamespaceType::Network)
        });
    if !has_network_namespace {
        return Err(Error::InvalidSpec(
            "linux.netDevices needs a network namespace in linux.namespaces".to_owned(),
        ));
    }

    let mut planned = Vec::new();
    for (host_name, device) in devices {
        check_name("linux.netDevices key", &host_name)?;
        let name = device.name().clone().unwrap_or_else(|| host_name.clone());
        check_name(&format!("linux.netDevices.{host_name}.name"), &name)?;
        planned.push((host_name, name));
    }
    planned.sort();
    Ok(planned)
}

/// Moves each planned device into the network namespace of process `pid`.
pub(crate) fn move_all(
    container: &str,
    pid: i32,
    planned: &[(String, String)],
) -> Result<(), Error> {
    if planned.is_empty() {
        return Ok(());
    }
    let namespace_path = format!("/proc/{pid}/ns/net");
    let namespace: OwnedFd = File::open(&namespace_path)
        .map_err(|source| Error::NetDevice {
            container: container.to_owned(),
            device: namespace_path.clone(),
            step: "open the container's network namespace",
            source,
        })?
        .into();
    let mut caller = Netlink::open().map_err(|source| Error::NetDevice {
        container: container.to_owned(),
        device: String::new(),
        step: "open a netlink socket",
        source,
    })?;

    for (host_name, name) in planned {
        move_one(&mut caller, &namespace, host_name, name).map_err(|(step, source)| {
            Error::NetDevice {
                container: container.to_owned(),
                device: format!("{host_name} (as {name})"),
                step,
                source,
            }
        })?;
    }
    Ok(())
}

type StepError = (&'static str, io::Error);

fn move_one(
    caller: &mut Netlink,
    namespace: &OwnedFd,
    host_name: &str,
    name: &str,
) -> Result<(), StepError> {
    let index = index_of(host_name).map_err(|error| ("find the device", error))?;
    let addresses: Vec<Address> = caller
        .addresses(index)
        .map_err(|error| ("list its addresses", error))?
        .into_iter()
        .filter(Address::is_permanent_global)
        .collect();

    let templated = name.ends_with("%d");
    if !templated {
        in_namespace(namespace, || match index_of(name) {
            Ok(_) => Err((
                "check the name in the container",
                io::Error::from_raw_os_error(libc::EEXIST),
            )),
            Err(_) => Ok(()),
        })?;
    }
    caller
        .move_link(index, namespace, name)
        .map_err(|error| ("move it into the container's network namespace", error))?;

    in_namespace(namespace, || {
        let moved = if templated {
            // NOTE: the kernel keeps the index across namespaces unless it is taken
            // there, and a templated name cannot be looked up, so the index is trusted.
            index
        } else {
            index_of(name).map_err(|error| ("find it in the container", error))?
        };
        let mut inside =
            Netlink::open().map_err(|error| ("open a netlink socket inside", error))?;
        for address in &addresses {
            inside
                .add_address(moved, address)
                .map_err(|error| ("restore an address", error))?;
        }
        inside.set_up(moved).map_err(|error| ("set it up", error))
    })
}

/// Runs `step` on a thread that joined `namespace`, so the calling thread keeps its
/// network namespace.
fn in_namespace<T: Send>(
    namespace: &OwnedFd,
    step: impl FnOnce() -> Result<T, StepError> + Send,
) -> Result<T, StepError> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                setns(namespace, CloneFlags::CLONE_NEWNET)
                    .map_err(|errno| ("join the container's network namespace", errno.into()))?;
                step()
            })
            .join()
            .unwrap_or_else(|_| {
                Err((
                    "work in the container's network namespace",
                    io::Error::other("thread panicked"),
                ))
            })
    })
}

/// Returns the index of interface `name` in the calling thread's network namespace.
fn index_of(name: &str) -> io::Result<u32> {
    let name = CString::new(name).map_err(io::Error::other)?;
    // SAFETY: `name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index)
}

/// Checks that `name` can name an interface: 1 to 15 bytes, no slash, colon or
/// whitespace, and not `.` or `..`.
fn check_name(field: &str, name: &str) -> Result<(), Error> {
    let invalid = |reason: &str| {
        Error::InvalidSpec(format!(
            "{field} {name:?} is not a valid interface name: {reason}"
        ))
    };
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(invalid("it must have 1 to 15 bytes"));
    }
    if name == "." || name == ".." {
        return Err(invalid("it must not be . or .."));
    }
    if name
        .chars()
        .any(|character| character == '/' || character == ':' || character.is_whitespace())
    {
        return Err(invalid("it must not contain '/', ':' or whitespace"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked() {
        for name in ["", "a/b", "eth 0", "..", "sixteen-bytes-xx", "a:b"] {
            let error = check_name("linux.netDevices key", name).unwrap_err();
            assert!(error.is_invalid_input(), "{error}");
            assert!(error.to_string().contains(&format!("{name:?}")), "{error}");
        }
        for name in ["eth0", "ctr%d", "fifteen-bytes-x"] {
            assert!(check_name("linux.netDevices key", name).is_ok(), "{name}");
        }
    }
}
