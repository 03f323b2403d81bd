//! The `local` driver's mode under a restrictive umask. The umask belongs to the whole
//! process, so this is the only test in this binary.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use nix::sys::stat::{umask, Mode};
use stages::{GuestPaths, Storage, StorageRegistry};

/// Restores the previous umask on drop.
struct UmaskGuard(Mode);

impl Drop for UmaskGuard {
    fn drop(&mut self) {
        umask(self.0);
    }
}

#[test]
fn local_mode_exact_under_umask() {
    let _guard = UmaskGuard(umask(Mode::from_bits_truncate(0o077)));
    let root = tempfile::tempdir().unwrap();
    let paths = GuestPaths::under(root.path()).unwrap();
    let registry = StorageRegistry::system();

    for (option, expected) in [
        ("mode=0777", 0o777),
        ("mode=1777", 0o1777),
        ("mode=0750", 0o750),
    ] {
        let mount_point = paths.run_dir.join(format!("vol-{expected:o}"));
        let storage = Storage {
            driver: "local".to_string(),
            options: vec![option.to_string()],
            mount_point: mount_point.display().to_string(),
            ..Storage::default()
        };

        registry
            .acquire(&storage, &paths, Duration::from_millis(10))
            .expect("local storage created");

        let mode = std::fs::metadata(&mount_point)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, expected, "{option}");
        registry
            .release(&mount_point)
            .expect("local storage removed");
        assert!(!mount_point.exists());
    }
}
