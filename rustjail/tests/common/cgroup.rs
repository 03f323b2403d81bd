//! Helpers for the cgroup tests: specs with resources, the container's cgroup files,
//! and checks that a failed create leaves no cgroup behind.

use std::fs;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxResources, Spec};

use super::{config, Guard};

pub const MIB: i64 = 1024 * 1024;

pub fn with_resources(mut spec: Spec, resources: LinuxResources) -> Spec {
    let mut linux = spec.linux().clone().unwrap();
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
    spec
}

pub fn hierarchy_path(paths: &[PathBuf], hierarchy: &str) -> PathBuf {
    paths
        .iter()
        .find(|path| path.starts_with(Path::new("/sys/fs/cgroup").join(hierarchy)))
        .unwrap_or_else(|| panic!("no {hierarchy} cgroup in {paths:?}"))
        .clone()
}

pub fn read(directory: &Path, file: &str) -> String {
    fs::read_to_string(directory.join(file))
        .unwrap_or_else(|error| panic!("read {file}: {error}"))
        .trim()
        .to_owned()
}

/// Cgroup directories, relative to every hierarchy under `/sys/fs/cgroup`, that a test
/// expects the launcher to remove. On drop, those still there are removed, deepest first,
/// so a failing test leaves nothing behind.
pub struct ExpectedRemoved(pub Vec<PathBuf>);

impl ExpectedRemoved {
    /// Returns the directories of this list that still exist in some hierarchy.
    pub fn left_behind(&self) -> Vec<PathBuf> {
        hierarchy_roots()
            .iter()
            .flat_map(|root| self.0.iter().map(move |relative| root.join(relative)))
            .filter(|directory| directory.exists())
            .collect()
    }
}

impl Drop for ExpectedRemoved {
    fn drop(&mut self) {
        for directory in self.left_behind() {
            let _ = fs::remove_dir(directory);
        }
    }
}

/// Returns the mount point of every cgroup hierarchy under `/sys/fs/cgroup`.
pub fn hierarchy_roots() -> Vec<PathBuf> {
    fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("cgroup.procs").exists())
        .collect()
}

/// Creates a container from `spec` and checks that create fails with an unsupported
/// error naming `field` and `missing`, leaving no cgroup directory behind.
pub fn assert_create_unsupported(test: &str, spec: Spec, field: &str, missing: &str) {
    let config = config(test, spec);
    let expected_removed = ExpectedRemoved(vec![
        Path::new(&config.cgroup_parent).join(&config.id),
        PathBuf::from(&config.cgroup_parent),
    ]);

    let error = Guard::create(config)
        .err()
        .unwrap_or_else(|| panic!("create with {field} fails"));

    assert!(error.is_unsupported(), "{error}");
    let message = error.to_string();
    assert!(message.starts_with(&format!("{field} ")), "{message}");
    assert!(message.contains(missing), "{message}");
    assert_eq!(expected_removed.left_behind(), Vec::<PathBuf>::new());
}
