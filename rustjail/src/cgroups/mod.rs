//! Container cgroups on v1, hybrid and v2 layouts.
//!
//! A [`Cgroup`] records the directories it created, so that [`Cgroup::remove`] deletes
//! exactly those, deepest first, and never a parent that existed before.

mod layout;
mod path;
mod resources;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use oci_spec::runtime::LinuxResources;
use slog::{debug, Logger};

use crate::error::Error;
use layout::Hierarchy;

pub(crate) use path::relative_path;

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
}

impl Cgroup {
    /// Creates the directory `relative` in every hierarchy under `root` and applies
    /// `resources`. Removes what it created when a step fails.
    pub(crate) fn create(
        root: &Path,
        relative: &Path,
        resources: Option<&LinuxResources>,
        logger: &Logger,
    ) -> Result<Cgroup, Error> {
        let hierarchies = layout::detect(root)?;
        let mut cgroup = Cgroup {
            hierarchies,
            ..Cgroup::default()
        };

        if let Err(error) = cgroup
            .create_directories(relative)
            .and_then(|()| cgroup.apply(resources, logger))
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

    /// Removes the directories this cgroup created, deepest first. A missing directory
    /// counts as removed, so a second call succeeds.
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
        first_error.map_or(Ok(()), Err)
    }

    /// Returns the container's directory in each hierarchy.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
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
            let mut directory = hierarchy.mount_point.clone();
            for component in relative.components() {
                let parent = directory.clone();
                directory.push(component);

                match fs::create_dir(&directory) {
                    Ok(()) => self.created.push(directory.clone()),
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
            self.paths.push(directory);
        }
        Ok(())
    }

    fn apply(&self, resources: Option<&LinuxResources>, logger: &Logger) -> Result<(), Error> {
        let Some(resources) = resources else {
            return Ok(());
        };
        let targets: Vec<(&Hierarchy, &Path)> = self
            .hierarchies
            .iter()
            .zip(self.paths.iter().map(PathBuf::as_path))
            .collect();
        resources::apply(&targets, resources, logger)
    }
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
