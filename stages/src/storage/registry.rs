//! Reference-counted storages, keyed by mount point, shared by the sandbox and its
//! containers.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use std::time::Duration;

use crate::device::DeviceFinder;
use crate::error::StageError;
use crate::paths::GuestPaths;
use crate::request::Storage;
use crate::storage::driver;
use crate::storage::mounter::{Mounter, SystemMounter};
use crate::storage::provide::{self, Created, Guest};

/// The storages in use in the sandbox.
pub struct StorageRegistry {
    mounter: Arc<dyn Mounter>,
    entries: Mutex<HashMap<PathBuf, Entry>>,
}

struct Entry {
    references: usize,
    driver: String,
    source: String,
    created: Created,
}

impl StorageRegistry {
    /// Creates an empty registry that mounts through `mounter`.
    pub fn new(mounter: Arc<dyn Mounter>) -> Self {
        StorageRegistry {
            mounter,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// Creates an empty registry that uses the real mount system calls.
    pub fn system() -> Self {
        StorageRegistry::new(Arc::new(SystemMounter))
    }

    /// Returns how many users hold the storage at `mount_point`, 0 when none.
    pub fn references(&self, mount_point: &Path) -> usize {
        self.lock()
            .get(mount_point)
            .map_or(0, |entry| entry.references)
    }

    /// Provides `storage` or, when another user already provided it, takes one more
    /// reference. Block devices are looked up in `paths`, waiting up to `device_timeout`
    /// for each. Returns the mount point to pass to [`StorageRegistry::release`].
    pub fn acquire(
        &self,
        storage: &Storage,
        paths: &GuestPaths,
        device_timeout: Duration,
    ) -> Result<PathBuf, StageError> {
        let mount_point = driver::validate_mount_point(&storage.mount_point, &paths.run_dir)?;
        let plan = driver::plan(storage)?;

        let mut entries = self.lock();
        if let Some(entry) = entries.get_mut(&mount_point) {
            if entry.driver != storage.driver || entry.source != storage.source {
                let reason = format!(
                    "already used by a storage with driver {:?} and source {:?}",
                    entry.driver, entry.source
                );
                return Err(StageError::invalid(
                    "mount point",
                    &storage.mount_point,
                    reason,
                ));
            }
            entry.references += 1;
            return Ok(mount_point);
        }

        // The lock stays held while mounting so that a second user of the same mount
        // point waits for the first mount instead of mounting twice.
        let guest = Guest {
            mounter: self.mounter.as_ref(),
            devices: DeviceFinder {
                paths,
                timeout: device_timeout,
            },
        };
        let created = provide::provide(&guest, storage, &plan, &mount_point)?;
        entries.insert(
            mount_point.clone(),
            Entry {
                references: 1,
                driver: storage.driver.clone(),
                source: storage.source.clone(),
                created,
            },
        );
        Ok(mount_point)
    }

    /// Drops one reference to the storage at `mount_point`. The last reference unmounts
    /// it and removes the directories it created. When that teardown fails, the entry
    /// stays with no references: a later [`StorageRegistry::acquire`] reuses the
    /// remaining mount, and a later release tries the teardown again.
    pub fn release(&self, mount_point: &Path) -> Result<(), StageError> {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(mount_point) else {
            return Ok(());
        };

        entry.references = entry.references.saturating_sub(1);
        if entry.references > 0 {
            return Ok(());
        }

        provide::remove(self.mounter.as_ref(), mount_point, &entry.created)?;
        entries.remove(mount_point);
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<PathBuf, Entry>> {
        // A panic while holding the lock cannot leave an entry half-written: entries are
        // inserted or removed whole, so the data is still consistent.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl std::fmt::Debug for StorageRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let entries = self.lock();
        let mut map = f.debug_map();
        for (mount_point, entry) in entries.iter() {
            map.entry(mount_point, &entry.references);
        }
        map.finish()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use nix::mount::MsFlags;

    use super::*;
    use crate::error::ErrorCode;
    use crate::testing::{run_paths, FakeMounter, TIMEOUT};

    fn ephemeral(mount_point: &Path) -> Storage {
        Storage {
            driver: "ephemeral".to_string(),
            source: "tmpfs".to_string(),
            fstype: "tmpfs".to_string(),
            options: vec!["nodev".to_string(), "size=1m".to_string()],
            mount_point: mount_point.display().to_string(),
            ..Storage::default()
        }
    }

    fn registry() -> (StorageRegistry, Arc<FakeMounter>) {
        let mounter = Arc::new(FakeMounter::default());
        (StorageRegistry::new(mounter.clone()), mounter)
    }

    #[test]
    fn ephemeral_mounts_tmpfs_with_options() {
        let run = tempfile::tempdir().unwrap();
        let (registry, mounter) = registry();
        let mount_point = run.path().join("sandbox/ephemeral/cache");

        registry
            .acquire(&ephemeral(&mount_point), &run_paths(run.path()), TIMEOUT)
            .expect("storage provided");

        let mounts = mounter.mounts.lock().unwrap().clone();
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].source, "tmpfs");
        assert_eq!(mounts[0].fstype, "tmpfs");
        assert_eq!(mounts[0].target, mount_point);
        assert_eq!(mounts[0].flags, MsFlags::MS_NODEV);
        assert_eq!(mounts[0].data.as_deref(), Some("size=1m"));
        assert!(mount_point.is_dir());
    }

    #[test]
    fn second_user_takes_reference_only() {
        let run = tempfile::tempdir().unwrap();
        let (registry, mounter) = registry();
        let mount_point = run.path().join("shared");
        let storage = ephemeral(&mount_point);

        registry
            .acquire(&storage, &run_paths(run.path()), TIMEOUT)
            .unwrap();
        registry
            .acquire(&storage, &run_paths(run.path()), TIMEOUT)
            .unwrap();

        assert_eq!(mounter.mount_count(), 1);
        assert_eq!(registry.references(&mount_point), 2);

        registry.release(&mount_point).unwrap();
        assert!(mounter.unmounted().is_empty());
        assert!(mount_point.is_dir());

        registry.release(&mount_point).unwrap();
        assert_eq!(mounter.unmounted(), std::slice::from_ref(&mount_point));
        assert!(!mount_point.exists());
        assert_eq!(registry.references(&mount_point), 0);
    }

    #[test]
    fn release_keeps_directories_it_did_not_create() {
        let run = tempfile::tempdir().unwrap();
        let (registry, _mounter) = registry();
        let mount_point = run.path().join("existing");
        std::fs::create_dir(&mount_point).unwrap();

        registry
            .acquire(&ephemeral(&mount_point), &run_paths(run.path()), TIMEOUT)
            .unwrap();
        registry.release(&mount_point).unwrap();

        assert!(mount_point.is_dir());
    }

    #[test]
    fn created_parents_removed_at_zero() {
        let run = tempfile::tempdir().unwrap();
        let (registry, _mounter) = registry();
        let mount_point = run.path().join("a/b/c");

        registry
            .acquire(&ephemeral(&mount_point), &run_paths(run.path()), TIMEOUT)
            .unwrap();
        registry.release(&mount_point).unwrap();

        assert!(!run.path().join("a").exists());
    }

    #[test]
    fn failed_mount_takes_back_reference() {
        let run = tempfile::tempdir().unwrap();
        let (registry, mounter) = registry();
        let mount_point = run.path().join("dir/failing");
        *mounter.fail_mounts.lock().unwrap() = 1;

        let error = registry
            .acquire(&ephemeral(&mount_point), &run_paths(run.path()), TIMEOUT)
            .expect_err("mount fails");

        assert_eq!(error.code(), ErrorCode::Internal);
        let message = error.to_string();
        assert!(message.starts_with("mount tmpfs on "), "{message}");
        assert!(message.contains("No such device"), "{message}");
        assert_eq!(registry.references(&mount_point), 0);
        assert!(!run.path().join("dir").exists());

        registry
            .acquire(&ephemeral(&mount_point), &run_paths(run.path()), TIMEOUT)
            .expect("a later attempt mounts again");
        assert_eq!(registry.references(&mount_point), 1);
        assert_eq!(mounter.mount_count(), 1);
    }

    #[test]
    fn failed_unmount_kept_for_retry() {
        let run = tempfile::tempdir().unwrap();
        let (registry, mounter) = registry();
        let mount_point = run.path().join("busy");
        registry
            .acquire(&ephemeral(&mount_point), &run_paths(run.path()), TIMEOUT)
            .unwrap();
        *mounter.fail_unmounts.lock().unwrap() = 1;

        let error = registry.release(&mount_point).expect_err("unmount fails");
        assert!(error.to_string().starts_with("unmount "), "{error}");
        assert!(mount_point.is_dir());

        registry
            .acquire(&ephemeral(&mount_point), &run_paths(run.path()), TIMEOUT)
            .unwrap();
        assert_eq!(mounter.mount_count(), 1, "the remaining mount is reused");
        registry.release(&mount_point).expect("teardown retried");
        assert!(!mount_point.exists());
    }

    #[test]
    fn different_storage_on_same_mount_point_rejected() {
        let run = tempfile::tempdir().unwrap();
        let (registry, _mounter) = registry();
        let mount_point = run.path().join("shared");
        registry
            .acquire(&ephemeral(&mount_point), &run_paths(run.path()), TIMEOUT)
            .unwrap();
        let local = Storage {
            driver: "local".to_string(),
            mount_point: mount_point.display().to_string(),
            ..Storage::default()
        };

        let error = registry
            .acquire(&local, &run_paths(run.path()), TIMEOUT)
            .expect_err("conflict rejected");

        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        assert!(error.to_string().contains("already used"), "{error}");
        assert_eq!(registry.references(&mount_point), 1);
    }

    #[test]
    fn local_creates_directory_with_mode() {
        let run = tempfile::tempdir().unwrap();
        let (registry, mounter) = registry();
        let mount_point = run.path().join("local/vol");
        let storage = Storage {
            driver: "local".to_string(),
            options: vec!["mode=0777".to_string()],
            mount_point: mount_point.display().to_string(),
            ..Storage::default()
        };

        registry
            .acquire(&storage, &run_paths(run.path()), TIMEOUT)
            .unwrap();

        let mode = std::fs::metadata(&mount_point)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o777);
        assert_eq!(mounter.mount_count(), 0);

        std::fs::write(mount_point.join("data"), "x").unwrap();
        registry.release(&mount_point).unwrap();
        assert!(!run.path().join("local").exists());
    }

    #[test]
    fn fs_group_sets_group_and_setgid() {
        use std::os::unix::fs::MetadataExt;

        let run = tempfile::tempdir().unwrap();
        let (registry, _mounter) = registry();
        let mount_point = run.path().join("grouped");
        let storage = Storage {
            driver: "local".to_string(),
            options: vec!["mode=0750".to_string()],
            mount_point: mount_point.display().to_string(),
            fs_group: Some(crate::request::FsGroup {
                group_id: 4321,
                change_policy_on_root_mismatch: false,
            }),
            ..Storage::default()
        };

        if !nix::unistd::geteuid().is_root() {
            panic!("needs root to change a directory's group");
        }
        registry
            .acquire(&storage, &run_paths(run.path()), TIMEOUT)
            .unwrap();

        let metadata = std::fs::metadata(&mount_point).unwrap();
        assert_eq!(metadata.gid(), 4321);
        assert_eq!(metadata.mode() & 0o7777, 0o2770);
    }
}
