//! Carrying out a storage plan on the guest, and taking it back.
//!
//! Invariant: [`Created`] lists exactly what [`provide`] made, so [`remove`] never
//! deletes a directory or file it found in place, and never deletes anything under a
//! mount point that it could not unmount.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::device::DeviceFinder;
use crate::error::{collect_undo_errors, StageError};
use crate::request::Storage;
use crate::storage::driver::{BlockLocator, Plan};
use crate::storage::fs_group::apply_fs_group;
use crate::storage::mounter::Mounter;

/// The mount, files and directories a storage created, so teardown removes exactly those.
#[derive(Debug, Default)]
pub(crate) struct Created {
    pub mounted: bool,
    /// Directories created for the mount point, parents first.
    pub dirs: Vec<PathBuf>,
    /// The mount point, when it was created as a file for a file bind mount.
    pub file: Option<PathBuf>,
    /// Directories created for an overlay's upper and work layers, parents first.
    pub layer_dirs: Vec<PathBuf>,
}

/// The guest-side services a storage needs.
pub(crate) struct Guest<'a> {
    pub mounter: &'a dyn Mounter,
    pub devices: DeviceFinder<'a>,
}

/// Creates the mount point and provides the storage there. On failure, removes what it
/// created and returns the error.
pub(crate) fn provide(
    guest: &Guest<'_>,
    storage: &Storage,
    plan: &Plan,
    mount_point: &Path,
) -> Result<Created, StageError> {
    let mut created = Created::default();

    let result = apply_plan(guest, storage, plan, mount_point, &mut created).and_then(|()| {
        let read_only = plan_is_read_only(plan);
        apply_fs_group(storage.fs_group, mount_point, read_only)
    });

    match result {
        Ok(()) => Ok(created),
        Err(error) => {
            // The storage never became usable, so a failed cleanup step only leaves an
            // empty directory or an unused mount behind; the original error matters more.
            let _ = remove(guest.mounter, mount_point, &created);
            Err(error)
        }
    }
}

/// Unmounts what [`provide`] mounted, mount points nested below it first, and removes
/// what it created. Goes on past individual failures and returns them together; a mount
/// point that is no longer mounted counts as unmounted.
pub(crate) fn remove(
    mounter: &dyn Mounter,
    mount_point: &Path,
    created: &Created,
) -> Result<(), StageError> {
    let mut errors = Vec::new();

    if created.mounted {
        unmount_tree(mounter, mount_point, &mut errors);
        if !errors.is_empty() {
            // Files under a mount point that is still mounted belong to the storage.
            return collect_undo_errors(errors);
        }
    }

    if let Some(file) = &created.file {
        remove_entry(file, false, &mut errors);
    }
    for dir in created.dirs.iter().rev() {
        remove_entry(dir, dir == mount_point, &mut errors);
    }
    for dir in created.layer_dirs.iter().rev() {
        remove_entry(dir, true, &mut errors);
    }

    collect_undo_errors(errors)
}

fn apply_plan(
    guest: &Guest<'_>,
    storage: &Storage,
    plan: &Plan,
    mount_point: &Path,
    created: &mut Created,
) -> Result<(), StageError> {
    match plan {
        Plan::Mount {
            source,
            fstype,
            flags,
            data,
        } => {
            create_dirs(mount_point, &mut created.dirs)?;
            mount(
                guest.mounter,
                source,
                mount_point,
                fstype,
                *flags,
                data.as_deref(),
            )?;
            created.mounted = true;
        }
        Plan::Local { mode } => {
            create_dirs(mount_point, &mut created.dirs)?;
            // mkdir applies the umask, so the requested mode is set explicitly afterwards.
            fs::set_permissions(mount_point, fs::Permissions::from_mode(*mode))
                .map_err(|error| StageError::io("set mode of", mount_point, error))?;
        }
        Plan::Bind { source, flags } => {
            provide_bind(guest.mounter, source, *flags, mount_point, created)?
        }
        Plan::Block {
            locator,
            fstype,
            flags,
            data,
        } => {
            let device = match locator {
                BlockLocator::Pci(path) => guest.devices.block_by_pci(path)?,
                BlockLocator::Scsi(address) => guest.devices.block_by_scsi(address)?,
                BlockLocator::GuestPath(path) => guest.devices.block_by_guest_path(path)?,
            };
            create_dirs(mount_point, &mut created.dirs)?;
            let source = device.node.display().to_string();
            mount(
                guest.mounter,
                &source,
                mount_point,
                fstype,
                *flags,
                data.as_deref(),
            )?;
            created.mounted = true;
        }
        Plan::Overlay {
            upper_and_work,
            flags,
            data,
        } => {
            check_lower_dirs(storage)?;
            if let Some((upper, work)) = upper_and_work {
                create_dirs(upper, &mut created.layer_dirs)?;
                create_dirs(work, &mut created.layer_dirs)?;
            }
            create_dirs(mount_point, &mut created.dirs)?;
            let source = if storage.source.is_empty() {
                "overlay"
            } else {
                &storage.source
            };
            mount(
                guest.mounter,
                source,
                mount_point,
                "overlay",
                *flags,
                Some(data),
            )?;
            created.mounted = true;
        }
    }
    Ok(())
}

/// Bind-mounts `source`, creating the mount point as a file when the source is a file,
/// and remounts read-only when `flags` contains `MS_RDONLY`.
fn provide_bind(
    mounter: &dyn Mounter,
    source: &Path,
    flags: MsFlags,
    mount_point: &Path,
    created: &mut Created,
) -> Result<(), StageError> {
    let metadata = fs::metadata(source).map_err(|error| match error.kind() {
        io::ErrorKind::NotFound => StageError::invalid(
            "bind source",
            source.display().to_string(),
            "does not exist in the guest",
        ),
        _ => StageError::io("inspect bind source", source, error),
    })?;

    if metadata.is_dir() {
        create_dirs(mount_point, &mut created.dirs)?;
    } else {
        let parent = mount_point.parent().unwrap_or(Path::new("/"));
        create_dirs(parent, &mut created.dirs)?;
        create_file(mount_point, created)?;
    }

    let source_text = source.display().to_string();
    mount(
        mounter,
        &source_text,
        mount_point,
        "",
        flags - MsFlags::MS_RDONLY,
        None,
    )?;
    created.mounted = true;

    // The kernel ignores MS_RDONLY on the first bind call; only a remount applies it.
    if flags.contains(MsFlags::MS_RDONLY) {
        let remount = MsFlags::MS_BIND
            | MsFlags::MS_REMOUNT
            | MsFlags::MS_RDONLY
            | (flags & (MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC));
        mount(mounter, &source_text, mount_point, "", remount, None)?;
    }
    Ok(())
}

fn create_file(path: &Path, created: &mut Created) -> Result<(), StageError> {
    match fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
    {
        Ok(_) => {
            created.file = Some(path.to_path_buf());
            Ok(())
        }
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists && path.is_file() => Ok(()),
        Err(error) => Err(StageError::io("create mount point file", path, error)),
    }
}

/// Checks that every overlay lower directory exists, naming the first missing one.
fn check_lower_dirs(storage: &Storage) -> Result<(), StageError> {
    let lower = storage
        .options
        .iter()
        .find_map(|option| option.strip_prefix("lowerdir="))
        .unwrap_or_default();
    for dir in lower.split(':') {
        if !Path::new(dir).is_dir() {
            return Err(StageError::invalid(
                "overlayfs lowerdir",
                dir,
                "is not a directory in the guest",
            ));
        }
    }
    Ok(())
}

fn mount(
    mounter: &dyn Mounter,
    source: &str,
    target: &Path,
    fstype: &str,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), StageError> {
    mounter
        .mount(source, target, fstype, flags, data)
        .map_err(|error| StageError::Mount {
            source_name: source.to_string(),
            target: target.to_path_buf(),
            source: error,
        })
}

/// Unmounts the mount points below `mount_point`, deepest first, then `mount_point`.
fn unmount_tree(mounter: &dyn Mounter, mount_point: &Path, errors: &mut Vec<StageError>) {
    let mut targets = match mounter.mounts_under(mount_point) {
        Ok(nested) => nested,
        Err(error) => {
            errors.push(StageError::io("list mounts under", mount_point, error));
            Vec::new()
        }
    };
    targets.retain(|target| target != mount_point);
    targets.sort_by_key(|target| std::cmp::Reverse(target.components().count()));
    targets.push(mount_point.to_path_buf());

    for target in targets {
        match mounter.unmount(&target) {
            Ok(()) => {}
            // EINVAL: the target is not a mount point (any more); ENOENT: it is gone,
            // with the parent storage that held it. Either way it is not mounted.
            Err(error) if matches!(error.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) => {}
            Err(source) => errors.push(StageError::Unmount { target, source }),
        }
    }
}

fn remove_entry(path: &Path, recursive: bool, errors: &mut Vec<StageError>) {
    let result = if recursive {
        fs::remove_dir_all(path)
    } else if path.is_dir() {
        fs::remove_dir(path)
    } else {
        fs::remove_file(path)
    };
    match result {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        // A parent that another storage still uses stays.
        Err(error) if error.kind() == io::ErrorKind::DirectoryNotEmpty => {}
        Err(error) => errors.push(StageError::io("remove", path, error)),
    }
}

/// Creates `path` and its missing parents, recording each directory created.
fn create_dirs(path: &Path, created: &mut Vec<PathBuf>) -> Result<(), StageError> {
    let mut missing = Vec::new();
    let mut current = path;
    while !current.exists() {
        missing.push(current.to_path_buf());
        match current.parent() {
            Some(parent) => current = parent,
            None => break,
        }
    }

    for dir in missing.into_iter().rev() {
        match fs::create_dir(&dir) {
            Ok(()) => created.push(dir),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(StageError::io("create directory", dir, error)),
        }
    }

    if !path.is_dir() {
        let error = io::Error::new(
            io::ErrorKind::AlreadyExists,
            "exists and is not a directory",
        );
        return Err(StageError::io("use mount point", path, error));
    }
    Ok(())
}

fn plan_is_read_only(plan: &Plan) -> bool {
    match plan {
        Plan::Mount { flags, .. }
        | Plan::Bind { flags, .. }
        | Plan::Block { flags, .. }
        | Plan::Overlay { flags, .. } => flags.contains(MsFlags::MS_RDONLY),
        Plan::Local { .. } => false,
    }
}
