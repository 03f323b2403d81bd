//! Namespace files kept alive by bind mounts, so that the sandbox's shared namespaces
//! outlive the thread or process that created them and containers can join them by
//! path.
//!
//! These are real mounts made with mount(2) directly, not through the storages'
//! `Mounter`, because only the kernel's namespace files can be bound this way.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::statfs::{statfs, NSFS_MAGIC};

use crate::error::{collect_undo_errors, StageError};

/// A namespace file bound at `target`, with the directories created for it.
#[derive(Debug)]
pub(crate) struct BoundNamespace {
    target: Option<PathBuf>,
    /// Directories created for the target, parents first.
    created_dirs: Vec<PathBuf>,
}

/// Returns whether `path` is a bound namespace file.
pub(crate) fn is_namespace_file(path: &Path) -> bool {
    statfs(path).is_ok_and(|stat| stat.filesystem_type() == NSFS_MAGIC)
}

/// Bind-mounts the namespace file `source` (such as `/proc/thread-self/ns/uts`) on a new
/// empty file `target`. On failure, removes what it created.
pub(crate) fn bind(source: &Path, target: &Path) -> Result<BoundNamespace, StageError> {
    let mut bound = BoundNamespace {
        target: None,
        created_dirs: Vec::new(),
    };

    let result = create_target(target, &mut bound).and_then(|()| {
        mount(
            Some(source),
            target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|errno| StageError::Mount {
            source_name: source.display().to_string(),
            target: target.to_path_buf(),
            source: errno.into(),
        })
    });
    match result {
        Ok(()) => Ok(bound),
        Err(error) => {
            let _ = bound.release();
            Err(error)
        }
    }
}

impl BoundNamespace {
    /// Unmounts and removes the file and the directories created for it. A target that
    /// is no longer mounted counts as unmounted. A second call does nothing.
    pub(crate) fn release(&mut self) -> Result<(), StageError> {
        let Some(target) = self.target.take() else {
            return Ok(());
        };
        let mut errors = Vec::new();

        match umount2(&target, MntFlags::MNT_DETACH) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
            Err(errno) => {
                errors.push(StageError::Unmount {
                    target: target.clone(),
                    source: errno.into(),
                });
                // Removing the file under a live mount fails anyway, so the record stays
                // for a second attempt.
                self.target = Some(target);
                return collect_undo_errors(errors);
            }
        }

        if let Err(error) = fs::remove_file(&target) {
            if error.kind() != io::ErrorKind::NotFound {
                errors.push(StageError::io("remove namespace file", &target, error));
            }
        }
        for dir in self.created_dirs.drain(..).rev() {
            match fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(error)
                    if matches!(
                        error.kind(),
                        io::ErrorKind::NotFound | io::ErrorKind::DirectoryNotEmpty
                    ) => {}
                Err(error) => errors.push(StageError::io("remove directory", dir, error)),
            }
        }
        collect_undo_errors(errors)
    }
}

fn create_target(target: &Path, bound: &mut BoundNamespace) -> Result<(), StageError> {
    let parent = target.parent().unwrap_or(Path::new("/"));
    let mut missing = Vec::new();
    let mut current = parent;
    while !current.exists() {
        missing.push(current.to_path_buf());
        match current.parent() {
            Some(next) => current = next,
            None => break,
        }
    }
    for dir in missing.into_iter().rev() {
        fs::create_dir(&dir).map_err(|error| StageError::io("create directory", &dir, error))?;
        bound.created_dirs.push(dir);
    }

    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(target)
        .map_err(|error| match error.kind() {
            io::ErrorKind::AlreadyExists => StageError::AlreadyExists {
                kind: "namespace file",
                path: target.to_path_buf(),
            },
            _ => StageError::io("create namespace file", target, error),
        })?;
    bound.target = Some(target.to_path_buf());
    Ok(())
}
