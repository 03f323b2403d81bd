//! The benchmark's temporary directory: a tmpfs mounted on a new directory, unmounted
//! and removed at the end unless something is still mounted below it.
//!
//! The agent keeps its run directory and the fake sysfs here. In a guest the run
//! directory is on tmpfs (`/run`), and on a disk file system every container's bundle
//! directory and config.json would cost journal and writeback work that a guest never
//! pays. crun's state directory is here too, as `/run/crun` is on tmpfs.
//!
//! The agent mounts container root file systems under its run directory. If a mount
//! were left behind, a recursive removal would delete through it into the bundle, so
//! the directory is then kept and reported instead.

use std::path::{Path, PathBuf};

use nix::mount::{mount, umount, MsFlags};

use crate::error::{BenchError, Result};

/// Options of the work directory's tmpfs. The largest files are the agent's log and
/// the copied bundle config, so 64 MiB leaves ample room.
const TMPFS_OPTIONS: &str = "mode=0700,size=64m";

pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    pub fn create() -> Result<WorkDir> {
        let dir = tempfile::Builder::new()
            .prefix("berth-bench-")
            .tempdir()
            .map_err(|source| BenchError::TempDir { source })?;
        let path = dir.keep();

        if let Err(source) = mount(
            Some("tmpfs"),
            &path,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(TMPFS_OPTIONS),
        ) {
            let _ = std::fs::remove_dir(&path);
            return Err(BenchError::MountTmpfs { path, source });
        }
        Ok(WorkDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mounted: Vec<String> = mounts_below(&mountinfo, &self.path)
            .into_iter()
            .filter(|mount_point| Path::new(mount_point) != self.path)
            .collect();
        if !mounted.is_empty() {
            eprintln!(
                "berth-bench: kept {} because these mounts are still below it: {}",
                self.path.display(),
                mounted.join(", ")
            );
            return;
        }

        if let Err(error) = umount(&self.path) {
            eprintln!(
                "berth-bench: kept {}: unmount its tmpfs: {error}",
                self.path.display()
            );
            return;
        }
        if let Err(error) = std::fs::remove_dir(&self.path) {
            eprintln!("berth-bench: remove {}: {error}", self.path.display());
        }
    }
}

/// Returns the mount points in `mountinfo` at or below `dir`.
fn mounts_below(mountinfo: &str, dir: &Path) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|line| line.split_whitespace().nth(4))
        .filter(|mount_point| Path::new(mount_point).starts_with(dir))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 0:21 / / rw - ext4 /dev/root rw
90 22 0:50 / /tmp/berth-bench-x/run/c1/rootfs rw - overlay overlay rw
91 22 0:51 / /tmp/berth-bench-xy rw - tmpfs tmpfs rw
";

    #[test]
    fn mounts_below_finds_nested_mount() {
        let found = mounts_below(MOUNTINFO, Path::new("/tmp/berth-bench-x"));

        assert_eq!(found, ["/tmp/berth-bench-x/run/c1/rootfs"]);
    }

    #[test]
    fn mounts_below_empty_when_none() {
        assert!(mounts_below(MOUNTINFO, Path::new("/tmp/other")).is_empty());
    }

    #[test]
    fn work_dir_is_tmpfs_removed_on_drop() {
        // Needs root to mount, as every test of Berth does.
        let work_dir = WorkDir::create().unwrap();
        let path = work_dir.path().to_path_buf();
        std::fs::write(path.join("file"), "x").unwrap();
        let statfs = nix::sys::statfs::statfs(&path).unwrap();
        assert_eq!(statfs.filesystem_type(), nix::sys::statfs::TMPFS_MAGIC);

        drop(work_dir);

        assert!(!path.exists());
    }
}
