//! The container's root filesystem: propagation, spec mounts, devices, `pivot_root`,
//! masked and read-only paths.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{chdir, chroot, fchdir, pivot_root};
use oci_spec::runtime::Spec;

use super::mount_options;
use super::mounts::{current_flags, fd_path, mount_entry};
use super::resolve::{open_in_root, Create};
use super::{devices, failed, sysctl, InitError};
use crate::sync::InitConfig;

/// Sets up the root filesystem in the init's new mount namespace and makes it the root.
/// `mount_label` is the SELinux label of new file systems, when SELinux is enabled.
pub(crate) fn set_up(
    spec: &Spec,
    config: &InitConfig,
    mount_label: Option<&str>,
) -> Result<(), InitError> {
    let root = spec
        .root()
        .as_ref()
        .ok_or_else(|| InitError::invalid_spec("spec has no root"))?;
    let root_path = root.path();
    let linux = spec.linux().clone().unwrap_or_default();
    let propagation = rootfs_propagation(linux.rootfs_propagation().as_deref())?;
    let mounts = spec.mounts().clone().unwrap_or_default();

    // Mounts below must not propagate back to the caller's namespace.
    let flags = propagation.unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        flags | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(failed(format_args!("set propagation {flags:?} of /")))?;
    if propagation.is_some_and(|flags| flags.contains(MsFlags::MS_SHARED)) {
        make_parent_mount_private(root_path)?;
    }

    // pivot_root needs the new root to be a mount point, and mounts made below must be on
    // this bind mount, which the root descriptor opened afterwards refers to.
    mount(
        Some(root_path),
        root_path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(failed(format_args!(
        "bind rootfs {} onto itself",
        root_path.display()
    )))?;
    let root_fd = open_directory(root_path)
        .map_err(failed(format_args!("open rootfs {}", root_path.display())))?;

    // Created nodes and directories get exactly the modes asked for.
    umask(Mode::empty());

    for entry in &mounts {
        mount_entry(root_fd.as_fd(), entry, &config.cgroup_dirs, mount_label)?;
    }
    let dev_is_bind_mounted = mounts.iter().any(|entry| {
        entry.destination() == Path::new("/dev")
            && (entry.typ().as_deref() == Some("bind")
                || mount_options::parse(entry.options().as_deref().unwrap_or_default()).bind)
    });
    if !dev_is_bind_mounted {
        devices::create_default_devices(root_fd.as_fd())?;
        devices::create_links(root_fd.as_fd())?;
    }
    devices::create_spec_devices(
        root_fd.as_fd(),
        linux.devices().as_deref().unwrap_or_default(),
    )?;

    // createContainer hooks run in the container's namespaces with the mounts made, but
    // still under the caller's root, where their paths are.
    super::run_hooks(crate::hooks::HookPoint::CreateContainer, config, "creating")?;

    if config.no_pivot {
        move_root(root_fd.as_fd(), root_path)?;
    } else {
        enter_root(root_fd.as_fd(), root_path)?;
    }

    // Sysctls go in through /proc/sys before the read-only and masked paths, which in
    // the usual spec cover /proc/sys.
    sysctl::apply(spec)?;

    let new_root = open_directory(Path::new("/")).map_err(failed("open / after pivot_root"))?;
    for path in linux.masked_paths().iter().flatten() {
        mask_path(new_root.as_fd(), Path::new(path))?;
    }
    for path in linux.readonly_paths().iter().flatten() {
        make_read_only(new_root.as_fd(), Path::new(path))?;
    }
    if root.readonly().unwrap_or(false) {
        remount_read_only(Path::new("/")).map_err(failed("remount / read-only"))?;
    }
    if let Some(flags) = propagation {
        mount(None::<&str>, "/", None::<&str>, flags, None::<&str>).map_err(failed(
            format_args!("set propagation {flags:?} of / after pivot_root"),
        ))?;
    }
    Ok(())
}

fn rootfs_propagation(word: Option<&str>) -> Result<Option<MsFlags>, InitError> {
    match word.filter(|word| !word.is_empty()) {
        None => Ok(None),
        Some(word) => mount_options::propagation(word).map(Some).ok_or_else(|| {
            InitError::invalid_spec(format!(
                "linux.rootfsPropagation {word:?} is not a propagation type"
            ))
        }),
    }
}

/// Makes the mount that contains the rootfs's parent directory private, because
/// `pivot_root` fails when the new root's parent mount is shared.
fn make_parent_mount_private(root_path: &Path) -> Result<(), InitError> {
    let parent = root_path.parent().unwrap_or(Path::new("/"));
    let mount_point = containing_mount_point(parent).map_err(failed(format_args!(
        "find the mount holding {}",
        parent.display()
    )))?;
    mount(
        None::<&str>,
        &mount_point,
        None::<&str>,
        MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(failed(format_args!(
        "make mount {} private",
        mount_point.display()
    )))
}

/// Finds the longest mount point in `/proc/self/mountinfo` that contains `path`.
fn containing_mount_point(path: &Path) -> io::Result<std::path::PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let best = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(Path::new)
        .filter(|mount_point| path.starts_with(mount_point))
        .max_by_key(|mount_point| mount_point.as_os_str().len())
        .unwrap_or(Path::new("/"));
    Ok(best.to_path_buf())
}

/// Makes the rootfs the root with `pivot_root(".", ".")`, which stacks the old root on
/// the new one, and then detaches the old root.
fn enter_root(root_fd: BorrowedFd<'_>, root_path: &Path) -> Result<(), InitError> {
    let step = |what: &str| format!("pivot_root into {}: {what}", root_path.display());

    let old_root = open_directory(Path::new("/")).map_err(failed(step("open the old root")))?;
    fchdir(root_fd).map_err(failed(step("change directory")))?;
    pivot_root(".", ".").map_err(failed(step("pivot_root")))?;
    // The old root now sits on top of the new one, and "." still names the new root.
    // Changing into the old root makes the recursive change below reach only the old
    // mounts, so the container's own mounts keep the propagation the spec gave them.
    fchdir(old_root.as_fd()).map_err(failed(step("change directory to the old root")))?;
    drop(old_root);
    // The old root is still shared or slave of the caller's mounts. Making it a slave keeps
    // the unmount below from propagating to the caller's namespace.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(failed(step("make the old root a slave")))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(failed(step("detach the old root")))?;
    chdir("/").map_err(failed(step("change directory to /")))
}

/// Makes the rootfs the root by moving its mount onto `/` and `chroot`ing into it, for
/// callers whose root cannot be pivoted, such as an initramfs. Unlike `pivot_root` this
/// leaves the old root reachable under the mount stack for a process with
/// `CAP_SYS_CHROOT`, so it is weaker and only used on request.
fn move_root(root_fd: BorrowedFd<'_>, root_path: &Path) -> Result<(), InitError> {
    let step = |what: &str| format!("move root {} onto /: {what}", root_path.display());

    fchdir(root_fd).map_err(failed(step("change directory")))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(failed(step("move mount")))?;
    chroot(".").map_err(failed(step("chroot")))?;
    chdir("/").map_err(failed(step("change directory to /")))
}

/// Hides `path` from the container: `/dev/null` over a file, a read-only empty tmpfs over
/// a directory. A path that does not exist needs no masking.
fn mask_path(root: BorrowedFd<'_>, path: &Path) -> Result<(), InitError> {
    let step = || format!("mask path {}", path.display());
    let target = match open_in_root(root, path, Create::Nothing) {
        Ok(target) => target,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(InitError::system(format!("{}: {error}", step()))),
    };

    let is_directory = rustix::fs::fstat(&target)
        .map(|stat| rustix::fs::FileType::from_raw_mode(stat.st_mode).is_dir())
        .map_err(failed(step()))?;
    if is_directory {
        mount(
            Some("tmpfs"),
            &fd_path(&target),
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0k"),
        )
        .map_err(failed(step()))
    } else {
        mount(
            Some("/dev/null"),
            &fd_path(&target),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(failed(step()))
    }
}

/// Bind-mounts `path` onto itself read-only. A path that does not exist is left out.
fn make_read_only(root: BorrowedFd<'_>, path: &Path) -> Result<(), InitError> {
    let step = || format!("make path {} read-only", path.display());
    let target = match open_in_root(root, path, Create::Nothing) {
        Ok(target) => target,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(error) => return Err(InitError::system(format!("{}: {error}", step()))),
    };

    let target_path = fd_path(&target);
    mount(
        Some(&target_path),
        &target_path,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(failed(step()))?;
    let mounted = open_in_root(root, path, Create::Nothing).map_err(failed(step()))?;
    remount_read_only(&fd_path(&mounted)).map_err(failed(step()))
}

/// Remounts the bind mount at `path` read-only, keeping its nosuid, nodev and noexec
/// flags, which a remount would otherwise clear.
fn remount_read_only(path: &Path) -> nix::Result<()> {
    let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    mount(
        None::<&str>,
        path,
        None::<&str>,
        flags | current_flags(path)?,
        None::<&str>,
    )
}

fn open_directory(path: &Path) -> io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let file: File = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_PATH)
        .open(path)?;
    Ok(file.into())
}
