//! ID-mapped bind mounts (`mounts[].uidMappings`, `gidMappings`, options `idmap` and
//! `ridmap`), observed from inside containers with and without a user namespace. Needs
//! root.

mod common;

use std::fs;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::user_namespace::{id_mapping, map_bundle, HOST_BASE};
use common::{config, require_root, run, writable_root, Bundle, Guard};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::{
    LinuxIdMapping, LinuxNamespaceBuilder, LinuxNamespaceType, Mount, MountBuilder, Spec,
};
use rustjail::{Container, Error};

/// The ID that the kernel shows for an owner a mapping does not cover.
const OVERFLOW_ID: u32 = 65534;

/// Builds a bind mount of `source` at `destination` with `options` and, when given, the
/// uid and gid mappings.
fn bind(
    destination: &str,
    source: &Path,
    options: &[&str],
    mappings: Option<(Vec<LinuxIdMapping>, Vec<LinuxIdMapping>)>,
) -> Mount {
    let mut builder = MountBuilder::default()
        .destination(destination)
        .typ("bind")
        .source(source)
        .options(
            options
                .iter()
                .map(|option| option.to_string())
                .collect::<Vec<_>>(),
        );
    if let Some((uid_mappings, gid_mappings)) = mappings {
        builder = builder
            .uid_mappings(uid_mappings)
            .gid_mappings(gid_mappings);
    }
    builder.build().unwrap()
}

fn with_mounts(mut spec: Spec, extra: Vec<Mount>) -> Spec {
    let mut mounts = spec.mounts().clone().unwrap();
    mounts.extend(extra);
    spec.set_mounts(Some(mounts));
    spec
}

fn as_user(mut spec: Spec, uid: u32, gid: u32) -> Spec {
    let mut process = spec.process().clone().unwrap();
    let mut user = process.user().clone();
    user.set_uid(uid);
    user.set_gid(gid);
    process.set_user(user);
    spec.set_process(Some(process));
    spec
}

/// Gives `spec` a new user namespace with the test range, and hands the rootfs to the
/// mapped root.
fn with_user_namespace(spec: Spec, bundle: &Bundle) -> Spec {
    map_bundle(bundle);
    common::user_namespace::with_user_namespace(spec)
}

/// A file system of type `kind` mounted on a directory, unmounted on drop.
struct MountedDirectory {
    path: PathBuf,
}

impl MountedDirectory {
    fn mount_on(path: PathBuf, kind: &str) -> MountedDirectory {
        fs::create_dir(&path).unwrap();
        mount(
            Some(kind),
            &path,
            Some(kind),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        MountedDirectory { path }
    }
}

impl Drop for MountedDirectory {
    fn drop(&mut self) {
        let _ = umount2(&self.path, MntFlags::MNT_DETACH);
    }
}

/// Returns the per-mount options of the topmost mount at `mount_point` in a mountinfo
/// dump.
fn mount_options(mountinfo: &str, mount_point: &str) -> Vec<String> {
    let line = mountinfo
        .lines()
        .rev()
        .find(|line| line.split(' ').nth(4) == Some(mount_point))
        .unwrap_or_else(|| panic!("no mount at {mount_point} in {mountinfo}"));
    line.split(' ')
        .nth(5)
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect()
}

#[test]
fn mapping_shows_disk_owner_as_host_id() {
    require_root();
    let bundle = Bundle::new();
    let source = tempfile::tempdir().unwrap();
    let owned_by_1000 = source.path().join("owned-by-1000");
    fs::write(&owned_by_1000, "").unwrap();
    chown(&owned_by_1000, Some(1000), Some(1000)).unwrap();
    let mappings = || Some((vec![id_mapping(0, 1000, 1)], vec![id_mapping(0, 2000, 1)]));
    let spec = with_mounts(
        bundle.spec(&[
            "sh",
            "-c",
            "stat -c '%u %g' /data /data/owned-by-1000; \
             touch /data/made-by-root || echo root cannot create; \
             touch /data-ro/made-read-only || echo read-only; \
             cat /proc/self/mountinfo",
        ]),
        vec![
            bind("/data", source.path(), &["bind"], mappings()),
            bind(
                "/data-ro",
                source.path(),
                &["bind", "ro", "idmap"],
                mappings(),
            ),
        ],
    );

    let output = run("idmap-owner", spec);

    assert_eq!(output.code, 0, "{output:?}");
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(
        lines[0], "1000 2000",
        "disk owner 0 shows as the host ID it maps to"
    );
    assert_eq!(
        lines[1],
        format!("{OVERFLOW_ID} {OVERFLOW_ID}"),
        "disk owner 1000 is outside the mapping"
    );
    assert_eq!(lines[2], "root cannot create", "{output:?}");
    assert!(output.stderr.contains("Value too large"), "{output:?}");
    assert_eq!(lines[3], "read-only", "{output:?}");
    assert!(
        output.stderr.contains("Read-only file system"),
        "{output:?}"
    );
    assert!(
        mount_options(&output.stdout, "/data").contains(&"idmapped".to_owned()),
        "{output:?}"
    );
    let read_only = mount_options(&output.stdout, "/data-ro");
    assert!(read_only.contains(&"idmapped".to_owned()), "{read_only:?}");
    assert!(read_only.contains(&"ro".to_owned()), "{read_only:?}");
    assert!(!source.path().join("made-by-root").exists());
}

#[test]
fn file_created_through_mapping_has_disk_owner() {
    require_root();
    let bundle = Bundle::new();
    let source = tempfile::tempdir().unwrap();
    let spec = as_user(
        with_mounts(
            bundle.spec(&[
                "sh",
                "-c",
                "touch /data/made-inside && stat -c '%u %g' /data/made-inside",
            ]),
            vec![bind(
                "/data",
                source.path(),
                &["bind"],
                Some((vec![id_mapping(0, 1000, 1)], vec![id_mapping(0, 2000, 1)])),
            )],
        ),
        1000,
        2000,
    );

    let output = run("idmap-create", spec);

    assert_eq!(output.code, 0, "{output:?}");
    assert_eq!(output.stdout, "1000 2000\n", "the creator sees its own IDs");
    let created = fs::metadata(source.path().join("made-inside")).unwrap();
    assert_eq!(
        (created.uid(), created.gid()),
        (0, 0),
        "host IDs 1000 and 2000 are stored as the mapping's container ID 0"
    );
}

#[test]
fn ridmap_maps_submounts_and_idmap_does_not() {
    require_root();
    let bundle = Bundle::new();
    let source = tempfile::tempdir().unwrap();
    // tmpfs supports ID-mapped mounts since Linux 6.3.
    let _inner = MountedDirectory::mount_on(source.path().join("inner"), "tmpfs");
    let mappings = || Some((vec![id_mapping(0, 1000, 1)], vec![id_mapping(0, 1000, 1)]));
    let spec = with_mounts(
        bundle.spec(&["stat", "-c", "%u", "/top-only/inner", "/recursive/inner"]),
        vec![
            bind("/top-only", source.path(), &["rbind", "idmap"], mappings()),
            bind(
                "/recursive",
                source.path(),
                &["rbind", "ridmap"],
                mappings(),
            ),
        ],
    );

    let output = run("idmap-recursive", spec);

    assert_eq!(output.code, 0, "{output:?}");
    assert_eq!(output.stdout, "0\n1000\n", "{output:?}");
}

#[test]
fn idmap_option_takes_user_namespace_mappings() {
    require_root();
    let bundle = Bundle::new();
    let source = tempfile::tempdir().unwrap();
    fs::set_permissions(source.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let owned_by_5 = source.path().join("owned-by-5");
    fs::write(&owned_by_5, "").unwrap();
    chown(&owned_by_5, Some(5), Some(5)).unwrap();
    let spec = writable_root(with_mounts(
        with_user_namespace(
            bundle.spec(&[
                "sh",
                "-c",
                "stat -c %u /plain /mapped /mapped/owned-by-5 /explicit; touch /mapped/made-inside",
            ]),
            &bundle,
        ),
        vec![
            bind("/plain", source.path(), &["bind"], None),
            bind("/mapped", source.path(), &["bind", "idmap"], None),
            // Host-relative: disk owner 0 shows as host 201000, which the container's
            // namespace maps to 1000.
            bind(
                "/explicit",
                source.path(),
                &["bind"],
                Some((
                    vec![id_mapping(0, HOST_BASE + 1000, 1)],
                    vec![id_mapping(0, HOST_BASE + 1000, 1)],
                )),
            ),
        ],
    ));

    let output = run("idmap-userns", spec);

    assert_eq!(output.code, 0, "{output:?}");
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            OVERFLOW_ID.to_string(),
            "0".to_owned(),
            "5".to_owned(),
            "1000".to_owned()
        ],
        "{output:?}"
    );
    let created = fs::metadata(source.path().join("made-inside")).unwrap();
    assert_eq!(
        (created.uid(), created.gid()),
        (0, 0),
        "the container's root creates files stored as owned by 0"
    );
}

#[test]
fn mappings_on_non_bind_mount_are_rejected() {
    require_root();
    let bundle = Bundle::new();
    let tmpfs = MountBuilder::default()
        .destination("/scratch")
        .typ("tmpfs")
        .source("tmpfs")
        .uid_mappings(vec![id_mapping(0, 1000, 1)])
        .gid_mappings(vec![id_mapping(0, 1000, 1)])
        .build()
        .unwrap();
    let spec = with_mounts(bundle.spec(&["true"]), vec![tmpfs]);

    let error = Container::create(config("idmap-tmpfs", spec))
        .err()
        .expect("create fails");

    assert!(matches!(error, Error::InvalidSpec(_)), "{error}");
    let message = error.to_string();
    assert!(message.contains("/scratch"), "{message}");
    assert!(message.contains("bind mount"), "{message}");
}

#[test]
fn uid_mappings_alone_are_rejected() {
    require_root();
    let bundle = Bundle::new();
    let source = tempfile::tempdir().unwrap();
    let mut only_uid = bind("/data", source.path(), &["bind"], None);
    only_uid.set_uid_mappings(Some(vec![id_mapping(0, 1000, 1)]));
    let spec = with_mounts(bundle.spec(&["true"]), vec![only_uid]);

    let error = Container::create(config("idmap-uid-only", spec))
        .err()
        .expect("create fails");

    assert!(matches!(error, Error::InvalidSpec(_)), "{error}");
    assert!(error.to_string().contains("gidMappings"), "{error}");
}

#[test]
fn filesystem_without_idmap_support_is_unsupported() {
    require_root();
    let bundle = Bundle::new();
    // ramfs does not support ID-mapped mounts (Linux 6.18).
    let parent = tempfile::tempdir().unwrap();
    let ramfs = MountedDirectory::mount_on(parent.path().join("ramfs"), "ramfs");
    let spec = with_mounts(
        bundle.spec(&["true"]),
        vec![bind(
            "/data",
            &ramfs.path,
            &["bind"],
            Some((vec![id_mapping(0, 1000, 1)], vec![id_mapping(0, 1000, 1)])),
        )],
    );

    let error = Container::create(config("idmap-ramfs", spec))
        .err()
        .expect("create fails");

    assert!(error.is_unsupported(), "{error}");
    let message = error.to_string();
    assert!(message.contains("/data"), "{message}");
    assert!(
        message.contains(&ramfs.path.display().to_string()),
        "{message}"
    );
    assert!(message.contains("file system ramfs"), "{message}");
}

#[test]
fn missing_source_names_mount_and_source() {
    require_root();
    let bundle = Bundle::new();
    let source = tempfile::tempdir().unwrap();
    let missing = source.path().join("missing");
    let spec = with_mounts(
        bundle.spec(&["true"]),
        vec![bind(
            "/data",
            &missing,
            &["bind"],
            Some((vec![id_mapping(0, 1000, 1)], vec![id_mapping(0, 1000, 1)])),
        )],
    );

    let error = Container::create(config("idmap-missing", spec))
        .err()
        .expect("create fails");

    assert!(matches!(error, Error::IdMappedMount { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("/data"), "{message}");
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );
    assert!(message.contains("open_tree"), "{message}");
}

#[test]
fn idmap_option_takes_joined_user_namespace() {
    require_root();
    let bundle = Bundle::new();
    let first_spec = with_user_namespace(bundle.spec(&["sleep", "60"]), &bundle);
    let mut first = Guard::create(config("idmap-joined-first", first_spec)).unwrap();
    first.container.start().unwrap();
    let first_pid = first.container.pid();
    let source = tempfile::tempdir().unwrap();
    let owned_by_7 = source.path().join("owned-by-7");
    fs::write(&owned_by_7, "").unwrap();
    chown(&owned_by_7, Some(7), Some(7)).unwrap();

    // The second container joins the first one's user namespace, and pid namespace with
    // it, so that it can mount /proc.
    let mut spec = with_mounts(
        bundle.spec(&["stat", "-c", "%u", "/mapped/owned-by-7"]),
        vec![bind("/mapped", source.path(), &["bind", "idmap"], None)],
    );
    let mut linux = spec.linux().clone().unwrap();
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    namespaces.retain(|namespace| {
        !matches!(
            namespace.typ(),
            LinuxNamespaceType::User | LinuxNamespaceType::Pid
        )
    });
    for (kind, name) in [
        (LinuxNamespaceType::User, "user"),
        (LinuxNamespaceType::Pid, "pid"),
    ] {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(kind)
                .path(format!("/proc/{first_pid}/ns/{name}"))
                .build()
                .unwrap(),
        );
    }
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));

    let output = run("idmap-joined-second", spec);

    assert_eq!(output.code, 0, "{output:?}");
    assert_eq!(output.stdout, "7\n", "disk owner 7 shows as container ID 7");
}

#[test]
fn no_launcher_fd_reaches_mapped_container() {
    require_root();
    let bundle = Bundle::new();
    let source = tempfile::tempdir().unwrap();
    fs::set_permissions(source.path(), fs::Permissions::from_mode(0o755)).unwrap();
    // A new user namespace makes the init wait for the go-ahead on the sync socket, and
    // each ID-mapped mount arrives as a descriptor: none of them may stay open.
    let spec = with_mounts(
        with_user_namespace(bundle.spec(&["ls", "-l", "/proc/self/fd"]), &bundle),
        vec![
            bind("/first", source.path(), &["bind", "idmap"], None),
            bind("/second", source.path(), &["bind", "idmap"], None),
        ],
    );

    let output = run("idmap-fds", spec);

    assert_eq!(output.code, 0, "{output:?}");
    // ls keeps the directory it lists open, so that descriptor is left out.
    let open: Vec<&str> = output
        .stdout
        .lines()
        .filter_map(|line| line.split_once(" -> "))
        .filter(|(_, target)| !(target.starts_with("/proc/") && target.ends_with("/fd")))
        .filter_map(|(entry, _)| entry.split_whitespace().last())
        .collect();
    assert_eq!(open, ["0", "1", "2"], "{output:?}");
}
