//! A spec mount of type `cgroup`, which shows the container its own cgroup directories
//! only.
//!
//! On a pure v2 layout the container's directory is bind-mounted at the destination. On
//! v1 and hybrid layouts a tmpfs goes there, with the container's directory of each
//! hierarchy bind-mounted below it under the hierarchy's name (`memory`, `unified`, ...).
//! Binds rather than new cgroup mounts keep the view the same with and without a cgroup
//! namespace.

use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};

use super::mount_options::MountOptions;
use super::mounts::{fd_path, remount_bind};
use super::resolve::{open_in_root, Create};
use super::{failed, InitError};

/// Mounts the container's cgroup directories `dirs` at `destination` inside `root`.
pub(crate) fn mount_cgroups(
    root: BorrowedFd<'_>,
    destination: &Path,
    options: &MountOptions,
    dirs: &[(PathBuf, PathBuf)],
) -> Result<(), InitError> {
    let step = || format!("mount cgroups on {}", destination.display());
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    flags |= options.flags & MsFlags::MS_RDONLY;

    if let [(name, source)] = dirs {
        if name.as_os_str().is_empty() {
            return bind(root, source, destination, flags).map_err(failed(step()));
        }
    }

    let target = open_in_root(root, destination, Create::Directory).map_err(failed(step()))?;
    mount(
        Some("tmpfs"),
        &fd_path(&target),
        Some("tmpfs"),
        flags - MsFlags::MS_RDONLY,
        Some("mode=755"),
    )
    .map_err(failed(format_args!("{}: mount tmpfs", step())))?;

    for (name, source) in dirs {
        bind(root, source, &destination.join(name), flags).map_err(failed(format_args!(
            "{}: bind {}",
            step(),
            source.display()
        )))?;
    }

    if flags.contains(MsFlags::MS_RDONLY) {
        // The tmpfs stayed writable until every hierarchy directory was made in it.
        let mounted = open_in_root(root, destination, Create::Nothing).map_err(failed(step()))?;
        mount(
            None::<&str>,
            &fd_path(&mounted),
            None::<&str>,
            MsFlags::MS_REMOUNT | flags,
            Some("mode=755"),
        )
        .map_err(failed(format_args!("{}: remount read-only", step())))?;
    }
    Ok(())
}

/// Bind-mounts the host directory `source` at `destination` inside `root` with `flags`.
fn bind(
    root: BorrowedFd<'_>,
    source: &Path,
    destination: &Path,
    flags: MsFlags,
) -> Result<(), String> {
    let target = open_in_root(root, destination, Create::Directory)
        .map_err(|error| format!("resolve {}: {error}", destination.display()))?;
    mount(
        Some(source),
        &fd_path(&target),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|errno| errno.to_string())?;

    let mounted = open_in_root(root, destination, Create::Nothing)
        .map_err(|error| format!("reopen {}: {error}", destination.display()))?;
    remount_bind(&fd_path(&mounted), flags)
        .map_err(|errno| format!("remount with {flags:?}: {errno}"))
}
