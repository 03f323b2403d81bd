//! Container cgroups on v1, hybrid and v2 layouts.
//!
//! A [`Cgroup`] records the directories it created, so that [`Cgroup::remove`] deletes
//! exactly those, deepest first. A parent that existed before is removed only when it is
//! the shared parent directory of the launcher's containers and has become empty, so the
//! last container removes it even when another one created it.

mod block_io;
mod cpu;
mod device_filter;
mod freezer;
mod layout;
mod memory;
mod network;
mod path;
mod resctrl;
mod resources;
mod stats;
mod unified;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;
use slog::{debug, Logger};

use crate::error::Error;
use layout::Hierarchy;
use resources::ApplyMode;

pub(crate) use path::relative_path;
pub(crate) use resctrl::{check_intel_rdt, join as join_resctrl, ResctrlGroup};
pub use stats::{BlkioEntry, CgroupStats, CpuStats, HugetlbStats, MemoryStats, PidsStats};

/// How long [`Cgroup::remove`] retries a directory that is busy because killed processes
/// have not exited yet.
const REMOVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The cgroup directories of one container, one per hierarchy.
#[derive(Debug, Default)]
pub struct Cgroup {
    hierarchies: Vec<Hierarchy>,
    /// The container's directory in each hierarchy, in the order of `hierarchies`.
    paths: Vec<PathBuf>,
    /// Directories this cgroup created, parents before children.
    created: Vec<PathBuf>,
    /// Ancestors of the container's directories inside the shared parent cgroup, deepest
    /// first. `remove` tries each once, whichever container created it.
    shared_ancestors: Vec<PathBuf>,
}

impl Cgroup {
    /// Creates the directory `relative` in every hierarchy under `root` and applies
    /// `resources`. Removes what it created when a step fails. `shared_parent` is the
    /// parent cgroup of all the launcher's containers, such as `berth`.
    pub(crate) fn create(
        root: &Path,
        relative: &Path,
        shared_parent: &Path,
        resources: Option<&LinuxResources>,
        logger: &Logger,
    ) -> Result<Cgroup, Error> {
        let hierarchies = layout::detect(root)?;
        let mut cgroup = Cgroup {
            hierarchies,
            ..Cgroup::default()
        };

        cgroup.shared_ancestors = shared_ancestors(&cgroup.hierarchies, relative, shared_parent);
        if let Err(error) = cgroup
            .create_directories(relative)
            .and_then(|()| cgroup.apply(resources, ApplyMode::Create, logger))
        {
            // The creation error is the one to report. A leftover directory is empty and
            // logged, and a later remove of the same path retries it.
            if let Err(undo_error) = cgroup.remove() {
                debug!(logger, "remove cgroup after failed create"; "error" => %undo_error);
            }
            return Err(error);
        }
        debug!(logger, "created cgroup"; "path" => %relative.display(), "hierarchies" => cgroup.paths.len());
        Ok(cgroup)
    }

    /// Removes the directories this cgroup created, deepest first, then tries once to
    /// remove each ancestor inside the shared parent, which stays while another
    /// container is in it. A missing directory counts as removed, so a second call
    /// succeeds.
    pub fn remove(&self) -> Result<(), Error> {
        let deadline = Instant::now() + REMOVE_TIMEOUT;
        let mut first_error = None;

        for directory in self.created.iter().rev() {
            let is_leaf = self.paths.contains(directory);
            if let Err(source) = remove_directory(directory, is_leaf, deadline) {
                first_error.get_or_insert(Error::Cgroup {
                    operation: "remove cgroup",
                    path: directory.clone(),
                    source,
                });
            }
        }

        for directory in &self.shared_ancestors {
            match fs::remove_dir(directory) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound || is_busy(&error) => {}
                Err(source) => {
                    first_error.get_or_insert(Error::Cgroup {
                        operation: "remove shared parent cgroup",
                        path: directory.clone(),
                        source,
                    });
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Applies `resources` to the existing directories, for a live update.
    pub(crate) fn update(&self, resources: &LinuxResources, logger: &Logger) -> Result<(), Error> {
        self.apply(Some(resources), ApplyMode::Update, logger)
    }

    /// Returns the container's directory in each hierarchy.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Returns, for each hierarchy, its mount point relative to `root` (empty when the
    /// hierarchy is mounted at `root` itself) and the container's directory in it.
    pub(crate) fn mount_dirs(&self, root: &Path) -> Vec<(PathBuf, PathBuf)> {
        self.hierarchies
            .iter()
            .zip(&self.paths)
            .map(|(hierarchy, path)| {
                let relative = hierarchy
                    .mount_point
                    .strip_prefix(root)
                    .unwrap_or(Path::new(""));
                (relative.to_path_buf(), path.clone())
            })
            .collect()
    }

    /// Moves process `pid` into the container's directory of every hierarchy.
    pub(crate) fn add_process(&self, pid: i32) -> Result<(), Error> {
        for directory in &self.paths {
            resources::write_file(&directory.join("cgroup.procs"), &pid.to_string())?;
        }
        Ok(())
    }

    fn create_directories(&mut self, relative: &Path) -> Result<(), Error> {
        for hierarchy in &self.hierarchies {
            let mut attempt = 1;
            let directory = loop {
                match create_in(hierarchy, relative, &mut self.created) {
                    Err(error) if parent_vanished(&error) && attempt < CREATE_ATTEMPTS => {
                        attempt += 1;
                    }
                    result => break result?,
                }
            };
            self.paths.push(directory);
        }
        Ok(())
    }

    pub(crate) fn hierarchies(&self) -> impl Iterator<Item = (&Hierarchy, &Path)> {
        self.hierarchies
            .iter()
            .zip(self.paths.iter().map(PathBuf::as_path))
    }

    fn apply(
        &self,
        resources: Option<&LinuxResources>,
        mode: ApplyMode,
        logger: &Logger,
    ) -> Result<(), Error> {
        let Some(resources) = resources else {
            return Ok(());
        };
        let targets: Vec<(&Hierarchy, &Path)> = self
            .hierarchies
            .iter()
            .zip(self.paths.iter().map(PathBuf::as_path))
            .collect();
        resources::apply(&targets, resources, mode, logger)
    }
}

/// Creates the directories of `relative` in one hierarchy, parents first, and returns
/// the deepest. A parent shared with other containers can vanish between two steps,
/// when the last container in it is removed at that moment, and then a step fails
/// with NotFound and the caller starts over.
fn create_in(
    hierarchy: &Hierarchy,
    relative: &Path,
    created: &mut Vec<PathBuf>,
) -> Result<PathBuf, Error> {
    let mut directory = hierarchy.mount_point.clone();
    for component in relative.components() {
        let parent = directory.clone();
        directory.push(component);

        match fs::create_dir(&directory) {
            Ok(()) => created.push(directory.clone()),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(Error::Cgroup {
                    operation: "create cgroup",
                    path: directory,
                    source,
                })
            }
        }
        if hierarchy.has("cpuset") && !hierarchy.unified {
            resources::inherit_cpuset(&parent, &directory)?;
        }
    }
    Ok(directory)
}

/// Reports whether `error` comes from a directory that disappeared while the cgroup was
/// being created.
fn parent_vanished(error: &Error) -> bool {
    match error {
        Error::Cgroup { source, .. } | Error::CgroupWrite { source, .. } => {
            source.kind() == io::ErrorKind::NotFound
        }
        _ => false,
    }
}

/// How often [`Cgroup::create`] walks a hierarchy whose shared parent other containers'
/// removals keep deleting under it.
const CREATE_ATTEMPTS: u32 = 100;

/// Returns, deepest first, the directories of every hierarchy between the hierarchy root
/// and `relative` that lie inside `shared_parent`: `berth` for `berth/c1`, and nothing
/// when `relative` is not below `shared_parent`.
fn shared_ancestors(
    hierarchies: &[Hierarchy],
    relative: &Path,
    shared_parent: &Path,
) -> Vec<PathBuf> {
    let parent = shared_parent.strip_prefix("/").unwrap_or(shared_parent);
    if parent.as_os_str().is_empty() || !relative.starts_with(parent) {
        return Vec::new();
    }
    let inside: Vec<&Path> = relative
        .ancestors()
        .skip(1)
        .filter(|ancestor| ancestor.starts_with(parent))
        .collect();

    let mut ancestors = Vec::new();
    for hierarchy in hierarchies {
        for ancestor in &inside {
            ancestors.push(hierarchy.mount_point.join(ancestor));
        }
    }
    ancestors
}

/// Removes one cgroup directory. A leaf is retried with back-off while its processes
/// exit. A parent that is still busy contains another container's cgroup and stays.
fn remove_directory(directory: &Path, is_leaf: bool, deadline: Instant) -> io::Result<()> {
    let mut delay = Duration::from_millis(5);
    loop {
        match fs::remove_dir(directory) {
            Ok(()) => return Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error) if is_busy(&error) && !is_leaf => return Ok(()),
            Err(error) if is_busy(&error) && Instant::now() < deadline => {
                thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(200));
            }
            Err(error) => return Err(error),
        }
    }
}

fn is_busy(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EBUSY) | Some(libc::ENOTEMPTY)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Creates and removes containers under one shared parent from several threads, on
    /// plain directories, where mkdir and rmdir behave as on a cgroup hierarchy. A
    /// removal deletes the parent whenever it is empty, so creates race with it.
    #[test]
    fn create_survives_shared_parent_removed_meanwhile() {
        let root = tempfile::tempdir().unwrap();
        let hierarchy = Hierarchy {
            mount_point: root.path().to_path_buf(),
            controllers: vec!["pids".to_owned()],
            unified: false,
        };

        std::thread::scope(|scope| {
            for thread in 0..4 {
                let hierarchy = hierarchy.clone();
                scope.spawn(move || {
                    for round in 0..300 {
                        let relative = PathBuf::from(format!("berth/c{thread}-{round}"));
                        let mut cgroup = Cgroup {
                            hierarchies: vec![hierarchy.clone()],
                            ..Cgroup::default()
                        };
                        cgroup.shared_ancestors =
                            shared_ancestors(&cgroup.hierarchies, &relative, Path::new("berth"));

                        cgroup.create_directories(&relative).unwrap();
                        cgroup.remove().unwrap();
                    }
                });
            }
        });

        assert!(!root.path().join("berth").exists());
    }

    #[test]
    fn shared_ancestors_stay_inside_parent() {
        let hierarchies = [Hierarchy {
            mount_point: PathBuf::from("/cg/memory"),
            controllers: vec!["memory".to_owned()],
            unified: false,
        }];

        let nested = shared_ancestors(&hierarchies, Path::new("a/b/c1"), Path::new("/a/b"));
        let other = shared_ancestors(&hierarchies, Path::new("kubepods/c1"), Path::new("berth"));

        assert_eq!(nested, [PathBuf::from("/cg/memory/a/b")]);
        assert!(other.is_empty());
    }
}
