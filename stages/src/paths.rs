//! Guest paths. Every stage reaches the guest's file systems through one [`GuestPaths`]
//! value, so tests can point the stages at a fake tree in a temporary directory.

use std::io;
use std::path::{Path, PathBuf};

/// Locations of the guest's run directory and kernel file systems.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestPaths {
    /// Directory holding bundles and storages, `/run/kata-containers` in production.
    pub run_dir: PathBuf,
    pub sysfs: PathBuf,
    pub procfs: PathBuf,
    pub devfs: PathBuf,
    /// Mount point of the cgroup hierarchies.
    pub cgroup_root: PathBuf,
    pub kernel_cmdline: PathBuf,
}

impl GuestPaths {
    /// Returns the paths of a real guest.
    pub fn production() -> Self {
        GuestPaths {
            run_dir: PathBuf::from("/run/kata-containers"),
            sysfs: PathBuf::from("/sys"),
            procfs: PathBuf::from("/proc"),
            devfs: PathBuf::from("/dev"),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            kernel_cmdline: PathBuf::from("/proc/cmdline"),
        }
    }

    /// Creates a fake guest tree under `root` (`run`, `sys`, `proc`, `dev`, `cgroup`
    /// directories and an empty `cmdline` file) and returns its paths.
    pub fn under(root: &Path) -> io::Result<Self> {
        let paths = GuestPaths {
            run_dir: root.join("run"),
            sysfs: root.join("sys"),
            procfs: root.join("proc"),
            devfs: root.join("dev"),
            cgroup_root: root.join("cgroup"),
            kernel_cmdline: root.join("cmdline"),
        };

        for dir in [
            &paths.run_dir,
            &paths.sysfs,
            &paths.procfs,
            &paths.devfs,
            &paths.cgroup_root,
        ] {
            std::fs::create_dir_all(dir)?;
        }
        if !paths.kernel_cmdline.exists() {
            std::fs::write(&paths.kernel_cmdline, "")?;
        }

        Ok(paths)
    }

    /// Returns the bundle directory of a container, `<run_dir>/<container_id>`.
    pub fn bundle_dir(&self, container_id: &str) -> PathBuf {
        self.run_dir.join(container_id)
    }

    /// Returns the file that keeps the sandbox's shared namespace of `kind` (`uts`,
    /// `ipc` or `pid`) alive, `<run_dir>/sandbox/ns/<kind>`.
    pub fn sandbox_namespace(&self, kind: &str) -> PathBuf {
        self.run_dir.join("sandbox").join("ns").join(kind)
    }

    /// Returns the directory for storages of the sandbox itself.
    pub fn sandbox_storage_dir(&self) -> PathBuf {
        self.run_dir.join("sandbox").join("storage")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn production_paths_match_guest_layout() {
        let paths = GuestPaths::production();

        assert_eq!(paths.run_dir, Path::new("/run/kata-containers"));
        assert_eq!(paths.bundle_dir("c1"), Path::new("/run/kata-containers/c1"));
        assert_eq!(
            paths.sandbox_storage_dir(),
            Path::new("/run/kata-containers/sandbox/storage")
        );
        assert_eq!(paths.kernel_cmdline, Path::new("/proc/cmdline"));
    }

    #[test]
    fn under_creates_fake_tree() {
        let root = tempfile::tempdir().unwrap();

        let paths = GuestPaths::under(root.path()).expect("fake tree created");

        for dir in [
            &paths.run_dir,
            &paths.sysfs,
            &paths.procfs,
            &paths.devfs,
            &paths.cgroup_root,
        ] {
            assert!(dir.is_dir(), "{} missing", dir.display());
            assert!(dir.starts_with(root.path()));
        }
        assert!(paths.kernel_cmdline.is_file());
    }
}
