//! The spec's mounts, made inside the container's root before `pivot_root`.
//!
//! Every destination is resolved inside the root (see `resolve`), and the mount goes onto
//! the resolved descriptor through `/proc/self/fd/N`, or with `move_mount` for an
//! ID-mapped mount (see `idmap`), so a symbolic link in the image cannot move it
//! elsewhere.

use std::fs;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use oci_spec::runtime::Mount;

use super::mount_options::{self, MountOptions};
use super::resolve::{open_in_root, Create};
use super::{cgroup_mount, idmap, lsm};
use super::{failed, InitError};

/// File system types whose files have labels of their own, so they take no SELinux
/// `context=` option.
const OWN_LABEL_TYPES: &[&str] = &["proc", "sysfs", "mqueue"];

/// Makes one spec mount under `root`. A `cgroup` mount shows the container's own cgroup
/// directories, `cgroup_dirs` (see `cgroup_mount`). `mount_label` is the SELinux label
/// of new file systems, when SELinux is enabled.
pub(crate) fn mount_entry(
    root: BorrowedFd<'_>,
    entry: &Mount,
    cgroup_dirs: &[(PathBuf, PathBuf)],
    mount_label: Option<&str>,
) -> Result<(), InitError> {
    let destination = entry.destination();
    if !destination.is_absolute() {
        return Err(InitError::invalid_spec(format!(
            "mount destination {} must be absolute",
            destination.display()
        )));
    }
    let kind = entry.typ().as_deref().unwrap_or("");
    let options = mount_options::parse(entry.options().as_deref().unwrap_or_default());
    if kind == "cgroup" || kind == "cgroup2" {
        return cgroup_mount::mount_cgroups(root, destination, &options, cgroup_dirs);
    }
    let is_bind = options.bind || kind == "bind";
    let step = || {
        format!(
            "mount {kind} {} on {}",
            source_text(entry),
            destination.display()
        )
    };

    let create = if is_bind && !entry.source().as_deref().is_some_and(Path::is_dir) {
        Create::File
    } else {
        Create::Directory
    };
    let target = open_in_root(root, destination, create)
        .map_err(failed(format_args!("{}: resolve destination", step())))?;

    if idmap::is_idmapped(entry) {
        idmap::attach_next(&target).map_err(failed(step()))?;
        apply_bind_flags(root, entry, &options).map_err(failed(step()))?;
    } else if is_bind {
        bind_mount(root, entry, &options, &target).map_err(failed(step()))?;
    } else {
        let source = entry
            .source()
            .clone()
            .unwrap_or_else(|| PathBuf::from(kind));
        let mut data = options.data.join(",");
        if let Some(label) = mount_label.filter(|_| !OWN_LABEL_TYPES.contains(&kind)) {
            data = lsm::mount_data(&data, label);
        }
        let data = (!data.is_empty()).then_some(data.as_str());
        let mounted = mount(
            Some(&source),
            &fd_path(&target),
            Some(kind),
            options.flags,
            data,
        );
        match (mounted, kind) {
            (Ok(()), _) => {}
            // In a user namespace the kernel mounts sysfs only for a network namespace
            // of that user namespace, and a container sharing a sandbox's network gets
            // EPERM. The caller's /sys is bound there instead, as runc does for rootless
            // containers.
            (Err(nix::errno::Errno::EPERM), "sysfs") => {
                bind_caller_sysfs(root, destination, &options, &target)
                    .map_err(failed(format_args!("{}: bind /sys instead", step())))?;
            }
            (Err(nix::errno::Errno::EPERM), "mqueue") => {
                return Err(InitError::system(format!(
                    "{}: EPERM: the kernel mounts mqueue only for an ipc namespace of the \
                     container's user namespace; leave the mount out or give the \
                     container an ipc namespace of its own",
                    step()
                )))
            }
            (Err(errno), _) => return Err(failed(step())(errno)),
        }
    }

    for flag in &options.propagation {
        let mounted = open_in_root(root, destination, Create::Nothing).map_err(failed(step()))?;
        mount(
            None::<&str>,
            &fd_path(&mounted),
            None::<&str>,
            *flag,
            None::<&str>,
        )
        .map_err(failed(format_args!("{}: set propagation {flag:?}", step())))?;
    }
    Ok(())
}

/// Bind-mounts the source, then remounts with the flags, which a bind mount ignores on
/// its first call.
fn bind_mount(
    root: BorrowedFd<'_>,
    entry: &Mount,
    options: &MountOptions,
    target: &OwnedFd,
) -> Result<(), String> {
    let source = entry
        .source()
        .as_deref()
        .ok_or("bind mount has no source")?;
    if fs::symlink_metadata(source).is_err() {
        return Err(format!("source {} does not exist", source.display()));
    }
    let mut flags = MsFlags::MS_BIND;
    if options.recursive {
        flags |= MsFlags::MS_REC;
    }
    mount(
        Some(source),
        &fd_path(target),
        None::<&str>,
        flags,
        None::<&str>,
    )
    .map_err(|errno| errno.to_string())?;

    apply_bind_flags(root, entry, options)
}

/// Remounts the bind mount at the destination of `entry` with the flags of `options`.
fn apply_bind_flags(
    root: BorrowedFd<'_>,
    entry: &Mount,
    options: &MountOptions,
) -> Result<(), String> {
    if options.flags.is_empty() {
        return Ok(());
    }
    // The descriptor opened before the mount refers to the directory underneath it, so
    // the remount needs a new one that crosses into the bind mount.
    let mounted = open_in_root(root, entry.destination(), Create::Nothing)
        .map_err(|error| format!("reopen: {error}"))?;
    remount_bind(&fd_path(&mounted), options.flags)
        .map_err(|errno| format!("remount with {:?}: {errno}", options.flags))
}

/// Bind-mounts the caller's `/sys` with its submounts at `target`, then applies the
/// flags of the sysfs mount it replaces.
fn bind_caller_sysfs(
    root: BorrowedFd<'_>,
    destination: &Path,
    options: &MountOptions,
    target: &OwnedFd,
) -> Result<(), String> {
    mount(
        Some("/sys"),
        &fd_path(target),
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(|errno| errno.to_string())?;

    if options.flags.is_empty() {
        return Ok(());
    }
    let mounted = open_in_root(root, destination, Create::Nothing)
        .map_err(|error| format!("reopen: {error}"))?;
    remount_bind(&fd_path(&mounted), options.flags)
        .map_err(|errno| format!("remount with {:?}: {errno}", options.flags))
}

/// Remounts the bind mount at `path` with `flags`.
///
/// In a user namespace the flags that the source mount had in the parent namespace are
/// locked: a remount that would clear nosuid, nodev, noexec or read-only fails with
/// EPERM. The remount is then tried once more with the source's flags added, as the
/// mount can get stricter but never looser.
pub(crate) fn remount_bind(path: &Path, flags: MsFlags) -> nix::Result<()> {
    let remount = |flags: MsFlags| {
        mount(
            None::<&str>,
            path,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
            None::<&str>,
        )
    };
    match remount(flags) {
        Err(nix::errno::Errno::EPERM) => remount(flags | current_flags(path)?),
        result => result,
    }
}

/// Returns the nosuid, nodev, noexec and read-only flags of the mount at `path`.
pub(crate) fn current_flags(path: &Path) -> nix::Result<MsFlags> {
    use nix::sys::statvfs::{statvfs, FsFlags};

    let current = statvfs(path)?.flags();
    let mut flags = MsFlags::empty();
    for (set, flag) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_RDONLY, MsFlags::MS_RDONLY),
    ] {
        if current.contains(set) {
            flags |= flag;
        }
    }
    Ok(flags)
}

/// Returns the path through which mount(2) reaches the file behind `fd`.
pub(crate) fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

fn source_text(entry: &Mount) -> String {
    entry
        .source()
        .as_ref()
        .map_or_else(|| "none".to_owned(), |source| source.display().to_string())
}
