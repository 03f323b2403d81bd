//! Acquiring the storages of one request as one unit, for the container and sandbox
//! `storages` stages.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::context::Sandbox;
use crate::error::{collect_undo_errors, StageError};
use crate::request::Storage;
use crate::stage::Undo;

/// The references one request took, released in reverse order.
pub(crate) struct StorageReferences {
    sandbox: Arc<Sandbox>,
    mount_points: Vec<PathBuf>,
}

/// Takes a reference to every storage in order. When one fails, releases the references
/// already taken and returns that failure.
pub(crate) fn acquire_storages(
    sandbox: &Arc<Sandbox>,
    storages: &[Storage],
    device_timeout: Duration,
) -> Result<StorageReferences, StageError> {
    let mut references = StorageReferences {
        sandbox: Arc::clone(sandbox),
        mount_points: Vec::with_capacity(storages.len()),
    };

    for storage in storages {
        match sandbox
            .storages
            .acquire(storage, &sandbox.paths, device_timeout)
        {
            Ok(mount_point) => references.mount_points.push(mount_point),
            Err(error) => {
                // The failed storage matters to the caller; a failed release of the
                // earlier ones is logged so it is not lost.
                if let Err(undo_error) = references.undo() {
                    slog::warn!(sandbox.logger, "releasing storages after a failure";
                        "error" => %undo_error);
                }
                return Err(error);
            }
        }
    }

    Ok(references)
}

impl Undo for StorageReferences {
    fn undo(&mut self) -> Result<(), StageError> {
        let mut errors = Vec::new();
        while let Some(mount_point) = self.mount_points.pop() {
            if let Err(error) = self.sandbox.storages.release(&mount_point) {
                errors.push(error);
            }
        }
        collect_undo_errors(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{test_sandbox, TIMEOUT};

    fn storage(driver: &str, mount_point: &std::path::Path) -> Storage {
        Storage {
            driver: driver.to_string(),
            mount_point: mount_point.display().to_string(),
            ..Storage::default()
        }
    }

    #[test]
    fn failure_releases_earlier_storages() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let run_dir = test.sandbox.paths.run_dir.clone();
        let first = run_dir.join("first");
        let second = run_dir.join("second");
        let storages = [
            storage("ephemeral", &first),
            storage("local", &second),
            storage("image_guest_pull", &run_dir.join("third")),
        ];

        let error = acquire_storages(&test.sandbox, &storages, TIMEOUT)
            .err()
            .expect("image_guest_pull is not implemented");

        assert!(
            error.to_string().contains("\"image_guest_pull\""),
            "{error}"
        );
        assert_eq!(test.sandbox.storages.references(&first), 0);
        assert_eq!(test.sandbox.storages.references(&second), 0);
        assert_eq!(test.mounter.unmounted(), std::slice::from_ref(&first));
        assert!(!first.exists());
        assert!(!second.exists());
    }

    #[test]
    fn undo_releases_in_reverse_once() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let run_dir = test.sandbox.paths.run_dir.clone();
        let first = run_dir.join("first");
        let second = run_dir.join("second");
        let storages = [storage("ephemeral", &first), storage("ephemeral", &second)];
        let mut references = acquire_storages(&test.sandbox, &storages, TIMEOUT).expect("acquired");

        references.undo().expect("released");
        references.undo().expect("second undo does nothing");

        assert_eq!(test.mounter.unmounted(), [second, first]);
    }

    #[test]
    fn same_storage_twice_in_one_request_counts_twice() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let mount_point = test
            .sandbox
            .paths
            .sandbox_storage_dir()
            .join("invalid-mount");
        let shared = storage("ephemeral", &mount_point);
        let mut references =
            acquire_storages(&test.sandbox, &[shared.clone(), shared], TIMEOUT).expect("acquired");
        assert_eq!(test.sandbox.storages.references(&mount_point), 2);

        references.undo().expect("released");

        assert_eq!(test.sandbox.storages.references(&mount_point), 0);
        assert_eq!(test.mounter.unmounted(), [mount_point]);
    }
}
