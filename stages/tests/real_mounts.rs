//! Storage registry tests with the real mount(2): tmpfs, bind, overlay, and ext4 on a
//! loop device behind a fake PCI path. They need root. Each test runs on a thread in its
//! own mount namespace, so a mount that a failing test leaves behind ends with the
//! thread and never reaches this machine's mount table.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use common::{
    add_virtio_blk, in_private_namespaces, mount_table, mounted_fstype, LoopDevice, TIMEOUT,
};
use stages::{FsGroup, GuestPaths, Storage, StorageRegistry};

fn is_mounted(path: &Path) -> bool {
    mounted_fstype(path).is_some()
}

fn storage(
    driver: &str,
    source: &str,
    fstype: &str,
    options: &[&str],
    mount_point: &Path,
) -> Storage {
    Storage {
        driver: driver.to_string(),
        source: source.to_string(),
        fstype: fstype.to_string(),
        options: options.iter().map(|option| option.to_string()).collect(),
        mount_point: mount_point.display().to_string(),
        ..Storage::default()
    }
}

fn ephemeral(mount_point: &Path, fstype: &str) -> Storage {
    storage(
        "ephemeral",
        "tmpfs",
        fstype,
        &["nodev", "size=1m"],
        mount_point,
    )
}

fn guest() -> (tempfile::TempDir, GuestPaths) {
    let root = tempfile::tempdir().unwrap();
    let paths = GuestPaths::under(root.path()).unwrap();
    (root, paths)
}

#[test]
fn ephemeral_is_real_tmpfs_until_last_release() {
    in_private_namespaces(|| {
        let (_root, paths) = guest();
        let registry = StorageRegistry::system();
        let mount_point = paths.run_dir.join("sandbox/ephemeral/cache");
        let storage = ephemeral(&mount_point, "tmpfs");

        registry
            .acquire(&storage, &paths, TIMEOUT)
            .expect("first user mounts");
        registry
            .acquire(&storage, &paths, TIMEOUT)
            .expect("second user shares");
        assert_eq!(mounted_fstype(&mount_point).as_deref(), Some("tmpfs"));
        assert_eq!(registry.references(&mount_point), 2);

        std::fs::write(mount_point.join("file"), "data").unwrap();
        registry.release(&mount_point).expect("first release");
        assert!(is_mounted(&mount_point), "unmounted while still referenced");

        registry.release(&mount_point).expect("last release");
        assert!(!is_mounted(&mount_point));
        assert!(!paths.run_dir.join("sandbox").exists());
    });
}

#[test]
fn failed_real_mount_leaves_nothing() {
    in_private_namespaces(|| {
        let (_root, paths) = guest();
        let registry = StorageRegistry::system();
        let mount_point = paths.run_dir.join("broken/vol");

        let error = registry
            .acquire(
                &ephemeral(&mount_point, "berth-no-such-fs"),
                &paths,
                TIMEOUT,
            )
            .expect_err("unknown file system type fails");

        let message = error.to_string();
        assert!(message.starts_with("mount tmpfs on "), "{message}");
        assert!(message.contains("No such device"), "{message}");
        assert_eq!(registry.references(&mount_point), 0);
        assert!(!paths.run_dir.join("broken").exists());
    });
}

#[test]
fn bind_directory_and_read_only_file() {
    in_private_namespaces(|| {
        let (root, paths) = guest();
        let registry = StorageRegistry::system();
        let source_dir = root.path().join("shared-dir");
        std::fs::create_dir(&source_dir).unwrap();
        std::fs::write(source_dir.join("a"), "from source").unwrap();
        let source_file = root.path().join("resolv.conf");
        std::fs::write(&source_file, "nameserver 10.0.0.2\n").unwrap();
        let dir_point = paths.run_dir.join("shared/dir");
        let file_point = paths.run_dir.join("shared/resolv.conf");
        let dir_storage = storage(
            "bind",
            source_dir.to_str().unwrap(),
            "",
            &["rbind"],
            &dir_point,
        );
        let file_storage = storage(
            "bind",
            source_file.to_str().unwrap(),
            "",
            &["ro"],
            &file_point,
        );

        registry
            .acquire(&dir_storage, &paths, TIMEOUT)
            .expect("directory bound");
        registry
            .acquire(&file_storage, &paths, TIMEOUT)
            .expect("file bound");

        assert_eq!(
            std::fs::read_to_string(dir_point.join("a")).unwrap(),
            "from source"
        );
        assert_eq!(
            std::fs::read_to_string(&file_point).unwrap(),
            "nameserver 10.0.0.2\n"
        );
        let error = std::fs::write(&file_point, "x").expect_err("read-only bind");
        assert_eq!(error.raw_os_error(), Some(libc::EROFS));

        registry.release(&file_point).expect("file unbound");
        registry.release(&dir_point).expect("directory unbound");
        assert!(!paths.run_dir.join("shared").exists());
        assert_eq!(
            std::fs::read_to_string(source_dir.join("a")).unwrap(),
            "from source"
        );
        assert!(source_file.exists());
    });
}

#[test]
fn missing_bind_source_is_invalid_argument() {
    in_private_namespaces(|| {
        let (root, paths) = guest();
        let registry = StorageRegistry::system();
        let mount_point = paths.run_dir.join("bound");
        let missing = root.path().join("missing");

        let error = registry
            .acquire(
                &storage("bind", missing.to_str().unwrap(), "", &[], &mount_point),
                &paths,
                TIMEOUT,
            )
            .expect_err("source missing");

        assert_eq!(error.code(), stages::ErrorCode::InvalidArgument);
        assert!(!mount_point.exists());
    });
}

#[test]
fn overlay_mounted_with_created_layers() {
    in_private_namespaces(|| {
        let (root, paths) = guest();
        let registry = StorageRegistry::system();
        let lower = root.path().join("lower");
        std::fs::create_dir(&lower).unwrap();
        std::fs::write(lower.join("base"), "lower layer").unwrap();
        let layers = paths.run_dir.join("layers/c1");
        let upper = layers.join("upper");
        let work = layers.join("work");
        let mount_point = paths.run_dir.join("c1/rootfs");
        let options = [
            format!("lowerdir={}", lower.display()),
            format!("upperdir={}", upper.display()),
            format!("workdir={}", work.display()),
        ];
        let options: Vec<&str> = options.iter().map(String::as_str).collect();
        let overlay = storage("overlayfs", "overlay", "overlay", &options, &mount_point);

        registry
            .acquire(&overlay, &paths, TIMEOUT)
            .expect("overlay mounted");
        assert_eq!(mounted_fstype(&mount_point).as_deref(), Some("overlay"));
        assert_eq!(
            std::fs::read_to_string(mount_point.join("base")).unwrap(),
            "lower layer"
        );
        std::fs::write(mount_point.join("new"), "upper").unwrap();
        assert!(upper.join("new").exists());

        registry.release(&mount_point).expect("overlay unmounted");
        assert!(!paths.run_dir.join("layers").exists());
        assert!(!paths.run_dir.join("c1").exists());
        assert!(!lower.join("new").exists());
    });
}

#[test]
fn ext4_on_loop_behind_pci_path() {
    let disk = LoopDevice::ext4(&[("hello", "from the disk")]);
    let (major, minor) = (disk.major, disk.minor);
    in_private_namespaces(move || {
        let (_root, paths) = guest();
        add_virtio_blk(&paths.sysfs, &paths.devfs, &[2, 1], "vdb", major, minor);
        let registry = StorageRegistry::system();
        let mount_point = paths.sandbox_storage_dir().join("disk");
        let mut blk = storage("blk", "02/01", "ext4", &["nodev"], &mount_point);
        blk.fs_group = Some(FsGroup {
            group_id: 4242,
            change_policy_on_root_mismatch: false,
        });

        registry
            .acquire(&blk, &paths, TIMEOUT)
            .expect("disk mounted");

        assert_eq!(mounted_fstype(&mount_point).as_deref(), Some("ext4"));
        let file = mount_point.join("hello");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "from the disk");
        assert_eq!(std::fs::metadata(&file).unwrap().gid(), 4242);
        let root_mode = std::fs::metadata(&mount_point)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(root_mode & 0o2070, 0o2070);

        registry.release(&mount_point).expect("disk unmounted");
        assert!(!is_mounted(&mount_point));
        assert!(!paths.run_dir.join("sandbox").exists());
    });
    drop(disk);
}

#[test]
fn missing_pci_device_times_out() {
    in_private_namespaces(|| {
        let (_root, paths) = guest();
        let registry = StorageRegistry::system();
        let mount_point = paths.sandbox_storage_dir().join("disk");

        let error = registry
            .acquire(
                &storage("blk", "05/01", "ext4", &[], &mount_point),
                &paths,
                TIMEOUT,
            )
            .expect_err("no device");

        assert_eq!(error.code(), stages::ErrorCode::DeadlineExceeded);
        assert!(error.to_string().contains("05/01"), "{error}");
        assert!(!paths.run_dir.join("sandbox").exists());
    });
}

#[test]
fn nested_mounts_unmounted_first() {
    in_private_namespaces(|| {
        let (_root, paths) = guest();
        let registry = StorageRegistry::system();
        let outer = paths.run_dir.join("outer");
        let inner = outer.join("inner");
        let before = mount_table();

        registry
            .acquire(&ephemeral(&outer, "tmpfs"), &paths, TIMEOUT)
            .unwrap();
        registry
            .acquire(&ephemeral(&inner, "tmpfs"), &paths, TIMEOUT)
            .unwrap();
        registry
            .release(&outer)
            .expect("outer released with the inner mount below");

        assert!(!is_mounted(&inner));
        assert!(!is_mounted(&outer));
        assert!(!outer.exists());
        // The inner storage's own release finds it unmounted and counts that as done.
        registry
            .release(&inner)
            .expect("inner release after its mount went");
        assert_eq!(mount_table(), before);
    });
}
