//! Resolution of container paths inside the root filesystem.
//!
//! A path from the spec is resolved one component at a time, relative to a descriptor of
//! the root. Each symbolic link is read and followed by this code, with an absolute
//! target restarting at the container's root and `..` stopping there, so no link can
//! lead outside the root even when its target does not exist yet. Every open also uses
//! `openat2` with `RESOLVE_IN_ROOT`, so the kernel keeps the walk inside the root if a
//! component is swapped for a link between two steps.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{fstat, mkdirat, openat2, readlinkat, FileType, Mode, OFlags, ResolveFlags};

/// Symbolic links followed in one resolution before it fails with ELOOP, as the kernel's
/// own limit for a path walk.
const MAX_SYMLINKS: usize = 40;

/// Kind of file created when the resolved path does not exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Create {
    Nothing,
    /// Missing components become directories.
    Directory,
    /// Missing parents become directories and the last component an empty file.
    File,
}

/// Opens `path` inside the root `root` as an `O_PATH` descriptor, creating missing
/// components as `create` requests. Mount onto the result through `/proc/self/fd/N`.
pub(crate) fn open_in_root(
    root: BorrowedFd<'_>,
    path: &Path,
    create: Create,
) -> io::Result<OwnedFd> {
    let resolved = resolve_in_root(root, path, create)?;
    open_resolved(root, &resolved, OFlags::empty())
}

/// Resolves `path` inside `root` to a path relative to it that has no symbolic link.
pub(crate) fn resolve_in_root(
    root: BorrowedFd<'_>,
    path: &Path,
    create: Create,
) -> io::Result<PathBuf> {
    let mut resolved: Vec<OsString> = Vec::new();
    let mut pending = components(path);
    let mut symlinks = 0;

    while let Some(component) = pending.pop_front() {
        if component == ".." {
            resolved.pop();
            continue;
        }
        let candidate = join(&resolved, Some(&component));

        let fd = match open_resolved(root, &candidate, OFlags::NOFOLLOW) {
            Ok(fd) => fd,
            Err(errno) if errno.kind() == io::ErrorKind::NotFound && create != Create::Nothing => {
                let is_last = pending.is_empty();
                create_component(
                    root,
                    &resolved,
                    &component,
                    is_last && create == Create::File,
                )?;
                pending.push_front(component);
                continue;
            }
            Err(error) => return Err(error),
        };

        if FileType::from_raw_mode(fstat(&fd)?.st_mode) != FileType::Symlink {
            resolved.push(component);
            continue;
        }

        symlinks += 1;
        if symlinks > MAX_SYMLINKS {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        let target = PathBuf::from(OsStr::from_bytes(
            readlinkat(&fd, "", Vec::new())?.as_bytes(),
        ));
        if target.is_absolute() {
            resolved.clear();
        }
        for part in components(&target).into_iter().rev() {
            pending.push_front(part);
        }
    }
    Ok(join(&resolved, None))
}

/// Opens a path relative to `root` with the kernel confining the walk to the root.
fn open_resolved(root: BorrowedFd<'_>, relative: &Path, extra: OFlags) -> io::Result<OwnedFd> {
    let flags = OFlags::PATH | OFlags::CLOEXEC | extra;
    let resolve = ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS;
    Ok(openat2(
        root.as_fd(),
        relative,
        flags,
        Mode::empty(),
        resolve,
    )?)
}

/// Creates `name` in the directory `parent` (relative to `root`) as a directory or an
/// empty file. A concurrent creation of the same name is not an error.
fn create_component(
    root: BorrowedFd<'_>,
    parent: &[OsString],
    name: &OsStr,
    as_file: bool,
) -> io::Result<()> {
    let parent = open_resolved(root, &join(parent, None), OFlags::DIRECTORY)?;

    let created = if as_file {
        // An O_PATH descriptor cannot create a file, so open the directory for real.
        let directory = openat2(
            &parent,
            ".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::empty(),
        )?;
        let flags =
            OFlags::CREATE | OFlags::EXCL | OFlags::WRONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        openat2(
            &directory,
            name,
            flags,
            Mode::from_raw_mode(0o644),
            ResolveFlags::BENEATH,
        )
        .map(drop)
    } else {
        mkdirat(&parent, name, Mode::from_raw_mode(0o755))
    };
    match created {
        Ok(()) | Err(rustix::io::Errno::EXIST) => Ok(()),
        Err(errno) => Err(errno.into()),
    }
}

/// Splits a path into its names and `..`, dropping the root and `.`.
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

fn join(resolved: &[OsString], last: Option<&OsStr>) -> PathBuf {
    let mut path = PathBuf::from(".");
    path.extend(resolved);
    path.extend(last);
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn open_dir(path: &Path) -> OwnedFd {
        fs::File::open(path).unwrap().into()
    }

    #[test]
    fn absolute_symlink_stays_inside_root() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("mnt")).unwrap();
        symlink(
            outside.path().join("target"),
            root.path().join("mnt/escape"),
        )
        .unwrap();
        let root_fd = open_dir(root.path());

        let resolved =
            resolve_in_root(root_fd.as_fd(), Path::new("/mnt/escape"), Create::Directory).unwrap();

        let inside = root
            .path()
            .join(outside.path().strip_prefix("/").unwrap())
            .join("target");
        assert_eq!(
            resolved,
            Path::new(".").join(inside.strip_prefix(root.path()).unwrap())
        );
        assert!(inside.is_dir());
        assert!(!outside.path().join("target").exists());
    }

    #[test]
    fn dot_dot_symlink_stops_at_root() {
        let root = tempfile::tempdir().unwrap();
        symlink("../../../..", root.path().join("up")).unwrap();
        let root_fd = open_dir(root.path());

        let resolved =
            resolve_in_root(root_fd.as_fd(), Path::new("/up/etc"), Create::Directory).unwrap();

        assert_eq!(resolved, Path::new("./etc"));
        assert!(root.path().join("etc").is_dir());
    }

    #[test]
    fn file_is_created_with_parents() {
        let root = tempfile::tempdir().unwrap();
        let root_fd = open_dir(root.path());

        open_in_root(root_fd.as_fd(), Path::new("/a/b/file"), Create::File).unwrap();

        assert!(root.path().join("a/b/file").is_file());
    }

    #[test]
    fn missing_path_without_create_is_not_found() {
        let root = tempfile::tempdir().unwrap();
        let root_fd = open_dir(root.path());

        let error =
            open_in_root(root_fd.as_fd(), Path::new("/missing"), Create::Nothing).unwrap_err();

        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn symlink_loop_fails() {
        let root = tempfile::tempdir().unwrap();
        symlink("/loop", root.path().join("loop")).unwrap();
        let root_fd = open_dir(root.path());

        let error =
            resolve_in_root(root_fd.as_fd(), Path::new("/loop"), Create::Directory).unwrap_err();

        assert_eq!(error.raw_os_error(), Some(libc::ELOOP));
    }
}
