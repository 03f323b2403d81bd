//! Group ownership of a storage's tree, as Kubernetes' `fsGroup` requests: every file
//! and directory gets the group, group access, and directories the set-group-ID bit so
//! that new files inherit the group.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::fcntl::AtFlags;
use nix::unistd::{fchownat, Gid};

use crate::error::StageError;
use crate::request::FsGroup;

/// Gives the tree under `root` to the requested group. With `OnRootMismatch`, nothing
/// changes when the root already has the group. Group write access is added unless the
/// storage is read-only. The walk stays on the root's file system and does not follow
/// symbolic links, so it never changes files outside the storage.
pub(crate) fn apply_fs_group(
    fs_group: Option<FsGroup>,
    root: &Path,
    read_only: bool,
) -> Result<(), StageError> {
    let Some(fs_group) = fs_group else {
        return Ok(());
    };

    let metadata =
        fs::symlink_metadata(root).map_err(|error| StageError::io("inspect", root, error))?;
    if fs_group.change_policy_on_root_mismatch && metadata.gid() == fs_group.group_id {
        return Ok(());
    }

    let gid = Gid::from_raw(fs_group.group_id);
    walk(root, metadata.dev(), gid, read_only)
}

fn walk(path: &Path, device: u64, gid: Gid, read_only: bool) -> Result<(), StageError> {
    let metadata =
        fs::symlink_metadata(path).map_err(|error| StageError::io("inspect", path, error))?;
    if metadata.dev() != device {
        // Another file system mounted inside the storage is not part of it.
        return Ok(());
    }

    fchownat(
        nix::fcntl::AT_FDCWD,
        path,
        None,
        Some(gid),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(|errno| StageError::io("change group of", path, io::Error::from(errno)))?;
    if metadata.file_type().is_symlink() {
        return Ok(());
    }

    let write = if read_only { 0 } else { 0o020 };
    let added = if metadata.is_dir() {
        0o2050 | write
    } else {
        0o040 | write
    };
    let mode = (metadata.mode() & 0o7777) | added;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|error| StageError::io("set mode of", path, error))?;

    if metadata.is_dir() {
        let entries =
            fs::read_dir(path).map_err(|error| StageError::io("read directory", path, error))?;
        for entry in entries {
            let entry = entry.map_err(|error| StageError::io("read directory", path, error))?;
            walk(&entry.path(), device, gid, read_only)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    fn gid(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().gid()
    }

    fn group(id: u32, on_mismatch: bool) -> Option<FsGroup> {
        Some(FsGroup {
            group_id: id,
            change_policy_on_root_mismatch: on_mismatch,
        })
    }

    #[test]
    fn whole_tree_gets_group() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let dir = root.path().join("sub");
        fs::create_dir(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)).unwrap();
        let file = dir.join("file");
        fs::write(&file, "x").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        let target = outside.path().join("target");
        fs::write(&target, "y").unwrap();
        std::os::unix::fs::symlink(&target, root.path().join("link")).unwrap();
        let target_gid = gid(&target);

        apply_fs_group(group(4321, false), root.path(), false).expect("group applied");

        assert_eq!(gid(&dir), 4321);
        assert_eq!(mode(&dir), 0o2770);
        assert_eq!(gid(&file), 4321);
        assert_eq!(mode(&file), 0o660);
        assert_eq!(gid(&root.path().join("link")), 4321);
        assert_eq!(gid(&target), target_gid, "followed a symbolic link");
    }

    #[test]
    fn read_only_adds_no_write_access() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("file");
        fs::write(&file, "x").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();

        apply_fs_group(group(4321, false), root.path(), true).expect("group applied");

        assert_eq!(mode(&file), 0o640);
    }

    #[test]
    fn on_root_mismatch_skips_matching_root() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("file");
        fs::write(&file, "x").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
        let root_gid = gid(root.path());

        apply_fs_group(group(root_gid, true), root.path(), false).expect("nothing to do");

        assert_eq!(mode(&file), 0o600);
        assert_eq!(mode(root.path()) & 0o2000, 0);

        apply_fs_group(group(root_gid + 1, true), root.path(), false).expect("root differs");
        assert_eq!(gid(&file), root_gid + 1);
    }
}
