//! Storage registry tests with the real mount(2). They need root. Each test runs on a
//! thread in its own mount namespace, so a mount that a failing test leaves behind ends
//! with the thread and never reaches this machine's mount table.

use std::path::{Path, PathBuf};

use nix::mount::{umount2, MntFlags};
use nix::sched::{unshare, CloneFlags};
use stages::{Storage, StorageRegistry};

/// Unmounts `path` on drop if it is still a mount point, for tests that fail midway.
struct MountGuard(PathBuf);

impl Drop for MountGuard {
    fn drop(&mut self) {
        if is_mounted(&self.0) {
            let _ = umount2(&self.0, MntFlags::MNT_DETACH);
        }
    }
}

/// Runs `body` on a thread with a private mount namespace.
fn in_private_mount_namespace(body: impl FnOnce() + Send + 'static) {
    std::thread::spawn(move || {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts tmpfs and needs root"
        );
        unshare(CloneFlags::CLONE_NEWNS).expect("unshare mount namespace");
        body();
    })
    .join()
    .expect("test thread panicked");
}

/// Returns the file system type mounted at `path` in this thread's mount namespace.
fn mounted_fstype(path: &Path) -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
    let target = path.to_str().unwrap();
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let mount_point = left.split(' ').nth(4)?;
        (mount_point == target).then(|| right.split(' ').next().unwrap_or("").to_string())
    })
}

fn is_mounted(path: &Path) -> bool {
    mounted_fstype(path).is_some()
}

fn ephemeral(mount_point: &Path, fstype: &str) -> Storage {
    Storage {
        driver: "ephemeral".to_string(),
        source: "tmpfs".to_string(),
        fstype: fstype.to_string(),
        options: vec!["nodev".to_string(), "size=1m".to_string()],
        mount_point: mount_point.display().to_string(),
        ..Storage::default()
    }
}

#[test]
fn ephemeral_is_real_tmpfs_until_last_release() {
    in_private_mount_namespace(|| {
        let run = tempfile::tempdir().unwrap();
        let registry = StorageRegistry::system();
        let mount_point = run.path().join("sandbox/ephemeral/cache");
        let _guard = MountGuard(mount_point.clone());
        let storage = ephemeral(&mount_point, "tmpfs");

        registry
            .acquire(&storage, run.path())
            .expect("first user mounts");
        registry
            .acquire(&storage, run.path())
            .expect("second user shares");
        assert_eq!(mounted_fstype(&mount_point).as_deref(), Some("tmpfs"));
        let statfs = nix::sys::statfs::statfs(&mount_point).unwrap();
        assert_eq!(statfs.filesystem_type(), nix::sys::statfs::TMPFS_MAGIC);
        assert_eq!(registry.references(&mount_point), 2);

        std::fs::write(mount_point.join("file"), "data").unwrap();
        registry.release(&mount_point).expect("first release");
        assert!(is_mounted(&mount_point), "unmounted while still referenced");

        registry.release(&mount_point).expect("last release");
        assert!(!is_mounted(&mount_point));
        assert!(!run.path().join("sandbox").exists());
    });
}

#[test]
fn failed_real_mount_leaves_nothing() {
    in_private_mount_namespace(|| {
        let run = tempfile::tempdir().unwrap();
        let registry = StorageRegistry::system();
        let mount_point = run.path().join("broken/vol");
        let _guard = MountGuard(mount_point.clone());

        let error = registry
            .acquire(&ephemeral(&mount_point, "berth-no-such-fs"), run.path())
            .expect_err("unknown file system type fails");

        let message = error.to_string();
        assert!(message.starts_with("mount tmpfs on "), "{message}");
        assert!(message.contains("No such device"), "{message}");
        assert_eq!(registry.references(&mount_point), 0);
        assert!(!run.path().join("broken").exists());
    });
}
