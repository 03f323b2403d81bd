//! Device nodes and the standard `/dev` symbolic links inside the container's root.

use std::os::fd::BorrowedFd;
use std::path::Path;

use nix::mount::{mount, MsFlags};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};
use rustix::fs::{
    chmodat, chownat, makedev, mknodat, symlinkat, AtFlags, FileType, Gid, Mode, Uid,
};

use super::mounts::fd_path;
use super::resolve::{open_in_root, Create};
use super::{failed, InitError};

/// A device node to create: path inside the container, type, numbers, mode and owner.
struct Node<'a> {
    path: &'a Path,
    file_type: FileType,
    major: u32,
    minor: u32,
    mode: u32,
    uid: u32,
    gid: u32,
}

/// The character devices every container gets when its `/dev` is not bind-mounted, with
/// their major and minor numbers.
const DEFAULT_DEVICES: &[(&str, u32, u32)] = &[
    ("/dev/null", 1, 3),
    ("/dev/zero", 1, 5),
    ("/dev/full", 1, 7),
    ("/dev/random", 1, 8),
    ("/dev/urandom", 1, 9),
    ("/dev/tty", 5, 0),
];

/// The `/dev` links every container gets when its `/dev` is not bind-mounted.
const DEFAULT_LINKS: &[(&str, &str)] = &[
    ("fd", "/proc/self/fd"),
    ("stdin", "/proc/self/fd/0"),
    ("stdout", "/proc/self/fd/1"),
    ("stderr", "/proc/self/fd/2"),
    ("ptmx", "pts/ptmx"),
];

/// Creates the default device nodes under `root`.
pub(crate) fn create_default_devices(root: BorrowedFd<'_>) -> Result<(), InitError> {
    for (path, major, minor) in DEFAULT_DEVICES {
        let node = Node {
            path: Path::new(path),
            file_type: FileType::CharacterDevice,
            major: *major,
            minor: *minor,
            mode: 0o666,
            uid: 0,
            gid: 0,
        };
        create_node(root, &node)?;
    }
    Ok(())
}

/// Creates the devices of `linux.devices` under `root`.
pub(crate) fn create_spec_devices(
    root: BorrowedFd<'_>,
    devices: &[LinuxDevice],
) -> Result<(), InitError> {
    for device in devices {
        let file_type = match device.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => FileType::CharacterDevice,
            LinuxDeviceType::B => FileType::BlockDevice,
            LinuxDeviceType::P => FileType::Fifo,
            LinuxDeviceType::A => {
                return Err(InitError::invalid_spec(format!(
                    "device {} has type a, which names no node type",
                    device.path().display()
                )))
            }
        };
        let node = Node {
            path: device.path(),
            file_type,
            major: u32::try_from(device.major()).map_err(|_| {
                InitError::invalid_spec(format!(
                    "device {} has invalid major {}",
                    device.path().display(),
                    device.major()
                ))
            })?,
            minor: u32::try_from(device.minor()).map_err(|_| {
                InitError::invalid_spec(format!(
                    "device {} has invalid minor {}",
                    device.path().display(),
                    device.minor()
                ))
            })?,
            mode: device.file_mode().unwrap_or(0o666) & 0o7777,
            uid: device.uid().unwrap_or(0),
            gid: device.gid().unwrap_or(0),
        };
        create_node(root, &node)?;
    }
    Ok(())
}

/// Creates the standard links in the container's `/dev`, and `/dev/core` when the host
/// has `/proc/kcore`.
pub(crate) fn create_links(root: BorrowedFd<'_>) -> Result<(), InitError> {
    let dev =
        open_in_root(root, Path::new("/dev"), Create::Directory).map_err(failed("open /dev"))?;

    let core = Path::new("/proc/kcore")
        .exists()
        .then_some(("core", "/proc/kcore"));
    for (name, target) in DEFAULT_LINKS.iter().copied().chain(core) {
        match symlinkat(target, &dev, name) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(errno) => {
                return Err(InitError::system(format!(
                    "create link /dev/{name} -> {target}: {errno}"
                )))
            }
        }
    }
    Ok(())
}

/// Creates a device node, or bind-mounts the host's node of the same path where mknod is
/// not permitted. A node that already exists is kept.
fn create_node(root: BorrowedFd<'_>, node: &Node<'_>) -> Result<(), InitError> {
    let path = node.path;
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(InitError::invalid_spec(format!(
            "device path {} has no file name",
            path.display()
        )));
    };
    if !path.is_absolute() {
        return Err(InitError::invalid_spec(format!(
            "device path {} must be absolute",
            path.display()
        )));
    }
    let directory = open_in_root(root, parent, Create::Directory).map_err(failed(format_args!(
        "create device {}: open parent",
        path.display()
    )))?;

    // mknod does not apply the umask here because the init cleared it.
    let mode = Mode::from_raw_mode(node.mode);
    match mknodat(
        &directory,
        name,
        node.file_type,
        mode,
        makedev(node.major, node.minor),
    ) {
        Ok(()) => {}
        Err(rustix::io::Errno::EXIST) => return Ok(()),
        Err(rustix::io::Errno::PERM) => return bind_host_node(root, path),
        Err(errno) => {
            return Err(InitError::system(format!(
                "create device {} ({}:{}): {errno}",
                path.display(),
                node.major,
                node.minor
            )))
        }
    }

    chmodat(&directory, name, mode, AtFlags::empty()).map_err(failed(format_args!(
        "set mode {:o} of device {}",
        node.mode,
        path.display()
    )))?;
    let (uid, gid) = (Uid::from_raw(node.uid), Gid::from_raw(node.gid));
    chownat(
        &directory,
        name,
        Some(uid),
        Some(gid),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(failed(format_args!(
        "set owner {}:{} of device {}",
        node.uid,
        node.gid,
        path.display()
    )))
}

/// Bind-mounts the host's node at `path` onto an empty file at `path` in the container.
fn bind_host_node(root: BorrowedFd<'_>, path: &Path) -> Result<(), InitError> {
    let target = open_in_root(root, path, Create::File).map_err(failed(format_args!(
        "create mount point for device {}",
        path.display()
    )))?;
    mount(
        Some(path),
        &fd_path(&target),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(failed(format_args!("bind host device {}", path.display())))?;
    Ok(())
}
