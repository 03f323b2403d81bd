//! Cgroup fields of real containers beyond the basic limits: blkio, `cgroupsPath`,
//! `unified`, network, rdma and Intel RDT. Needs root.

mod common;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::cgroup::{
    assert_create_unsupported, hierarchy_path, read, with_resources, ExpectedRemoved, MIB,
};
use common::{config, require_root, Bundle, Guard};
use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxIntelRdtBuilder, LinuxNetworkBuilder, LinuxRdmaBuilder,
    LinuxResources, LinuxResourcesBuilder, LinuxThrottleDeviceBuilder,
};

/// A loop device over a sparse file in a temporary directory, detached on drop.
struct LoopDevice {
    path: PathBuf,
    /// Dropped after the device is detached, because fields drop after `drop` runs.
    _backing: tempfile::TempDir,
}

impl LoopDevice {
    fn attach() -> LoopDevice {
        let backing = tempfile::tempdir().unwrap();
        let image = backing.path().join("disk.img");
        fs::File::create(&image)
            .unwrap()
            .set_len(16 * MIB as u64)
            .unwrap();

        let output = Command::new("losetup")
            .arg("--find")
            .arg("--show")
            .arg(&image)
            .output()
            .expect("run losetup");
        assert!(output.status.success(), "losetup failed: {output:?}");
        let path = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
        LoopDevice {
            path,
            _backing: backing,
        }
    }

    /// Returns the device's major and minor number.
    fn number(&self) -> (i64, i64) {
        let rdev = fs::metadata(&self.path).unwrap().rdev();
        (
            i64::from(rustix::fs::major(rdev)),
            i64::from(rustix::fs::minor(rdev)),
        )
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

#[test]
fn blkio_throttles_apply_to_loop_device() {
    require_root();
    let device = LoopDevice::attach();
    let (major, minor) = device.number();
    let throttle = |rate: u64| {
        vec![LinuxThrottleDeviceBuilder::default()
            .major(major)
            .minor(minor)
            .rate(rate)
            .build()
            .unwrap()]
    };
    let resources = LinuxResourcesBuilder::default()
        .block_io(
            LinuxBlockIoBuilder::default()
                .throttle_read_bps_device(throttle(1_048_576))
                .throttle_write_bps_device(throttle(524_288))
                .throttle_read_iops_device(throttle(300))
                .throttle_write_iops_device(throttle(200))
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let bundle = Bundle::new();
    let spec = with_resources(
        bundle.spec(&[
            "sh",
            "-c",
            "cd /sys/fs/cgroup/blkio && cat blkio.throttle.read_bps_device \
             blkio.throttle.write_bps_device blkio.throttle.read_iops_device \
             blkio.throttle.write_iops_device",
        ]),
        resources,
    );

    let output = Guard::create(config("blkio-throttle", spec)).unwrap().run();

    assert_eq!(output.code, 0, "{output:?}");
    let number = format!("{major}:{minor}");
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{number} 1048576"),
            format!("{number} 524288"),
            format!("{number} 300"),
            format!("{number} 200"),
        ],
        "{output:?}"
    );
}

#[test]
fn blkio_weight_needs_kernel_support() {
    require_root();
    // A kernel without an I/O scheduler that has weights (BFQ, or CFQ before 5.0) has
    // neither file.
    let weight_file = ["blkio.bfq.weight", "blkio.weight"]
        .into_iter()
        .find(|file| Path::new("/sys/fs/cgroup/blkio").join(file).exists());
    let bundle = Bundle::new();
    let resources = LinuxResourcesBuilder::default()
        .block_io(
            LinuxBlockIoBuilder::default()
                .weight(500u16)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let spec = with_resources(
        bundle.spec(&[
            "cat",
            &format!(
                "/sys/fs/cgroup/blkio/{}",
                weight_file.unwrap_or("blkio.weight")
            ),
        ]),
        resources,
    );
    let config = config("blkio-weight", spec);
    let expected_removed = ExpectedRemoved(vec![
        Path::new(&config.cgroup_parent).join(&config.id),
        PathBuf::from(&config.cgroup_parent),
    ]);

    let result = Guard::create(config);

    if weight_file.is_some() {
        let output = result.unwrap().run();
        assert!(output.stdout.contains("500"), "{output:?}");
        return;
    }
    let error = result.err().expect("create fails without blkio.weight");
    assert!(error.is_unsupported(), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("linux.resources.blockIO.weight "),
        "{message}"
    );
    assert!(
        message.contains("/blkio.weight does not exist"),
        "{message}"
    );
    assert_eq!(expected_removed.left_behind(), Vec::<PathBuf>::new());
}

/// Runs a container with `linux.cgroupsPath` set to `cgroups_path` and no cgroup
/// namespace, and checks that its `/proc/self/cgroup` names `expected` in every hierarchy
/// and that destroy removes `expected` and each of its ancestors, which the test's unique
/// names mean the launcher created.
fn assert_cgroups_path_used(cgroups_path: &str, expected: &Path) {
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["cat", "/proc/self/cgroup"]);
    let mut linux = spec.linux().clone().unwrap();
    linux.set_cgroups_path(Some(PathBuf::from(cgroups_path)));
    spec.set_linux(Some(linux));
    let expected_removed = ExpectedRemoved(
        expected
            .ancestors()
            .filter(|ancestor| !ancestor.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .collect(),
    );
    let mut guard = Guard::create(config("cgroups-path", spec)).unwrap();
    let paths = guard.container.cgroup().paths().to_vec();

    let output = guard.run();
    drop(guard);

    assert_eq!(output.code, 0, "{output:?}");
    let expected_line_end = format!(":/{}", expected.display());
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert!(lines.len() >= paths.len(), "{output:?} {paths:?}");
    for line in &lines {
        assert!(line.ends_with(&expected_line_end), "{line:?} in {output:?}");
    }
    for path in &paths {
        assert!(path.ends_with(expected), "{path:?}");
    }
    assert_eq!(expected_removed.left_behind(), Vec::<PathBuf>::new());
}

#[test]
fn cgroups_path_plain_form_is_used() {
    require_root();
    let (_, base) = common::unique_names("cgroups-path-plain");

    assert_cgroups_path_used(
        &format!("/{base}/pod/ctr"),
        &Path::new(&base).join("pod/ctr"),
    );
}

#[test]
fn cgroups_path_systemd_form_is_used() {
    require_root();
    let (_, base) = common::unique_names("cgroups-path-systemd");

    assert_cgroups_path_used(
        &format!("{base}.slice:kata:ctr"),
        &Path::new(&format!("{base}.slice")).join("kata-ctr"),
    );
}

fn unified_resources(entries: &[(&str, &str)]) -> LinuxResources {
    let unified: HashMap<String, String> = entries
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    LinuxResourcesBuilder::default()
        .unified(unified)
        .build()
        .unwrap()
}

#[test]
fn unified_keys_apply_on_hybrid_layout() {
    require_root();
    let bundle = Bundle::new();
    let resources =
        unified_resources(&[("cgroup.max.descendants", "5"), ("cgroup.max.depth", "3")]);
    let spec = with_resources(
        bundle.spec(&[
            "cat",
            "/sys/fs/cgroup/unified/cgroup.max.descendants",
            "/sys/fs/cgroup/unified/cgroup.max.depth",
        ]),
        resources,
    );
    let mut guard = Guard::create(config("unified", spec)).unwrap();
    let unified = hierarchy_path(guard.container.cgroup().paths(), "unified");
    let descendants = read(&unified, "cgroup.max.descendants");
    let depth = read(&unified, "cgroup.max.depth");

    let output = guard.run();

    assert_eq!(descendants, "5");
    assert_eq!(depth, "3");
    assert_eq!(output.code, 0, "{output:?}");
    assert_eq!(output.stdout, "5\n3\n", "{output:?}");
}

#[test]
fn unified_key_without_file_fails_create() {
    require_root();
    let bundle = Bundle::new();
    let spec = with_resources(
        bundle.spec(&["true"]),
        unified_resources(&[("cgroup.no_such_file", "1")]),
    );
    let config = config("unified-invalid", spec);
    let expected_removed = ExpectedRemoved(vec![
        Path::new(&config.cgroup_parent).join(&config.id),
        PathBuf::from(&config.cgroup_parent),
    ]);

    let error = Guard::create(config)
        .err()
        .expect("create fails on an unknown key");

    assert!(error.is_invalid_input(), "{error}");
    assert!(
        error.to_string().contains("\"cgroup.no_such_file\""),
        "{error}"
    );
    assert_eq!(expected_removed.left_behind(), Vec::<PathBuf>::new());
}

#[test]
fn update_writes_unified_keys() {
    require_root();
    let bundle = Bundle::new();
    let mut guard = Guard::create(config("unified-update", bundle.spec(&["sleep", "60"]))).unwrap();
    guard.container.start().unwrap();
    let unified = hierarchy_path(guard.container.cgroup().paths(), "unified");
    let before = read(&unified, "cgroup.max.depth");

    guard
        .container
        .update(&unified_resources(&[("cgroup.max.depth", "2")]))
        .unwrap();

    assert_eq!(before, "max");
    assert_eq!(read(&unified, "cgroup.max.depth"), "2");
}

#[test]
fn unified_keys_enable_controller_on_v2_layout() {
    require_root();
    // The cgroup2 mount of this hybrid layout, taken as the cgroup root, is a pure v2
    // layout. Its hugetlb files appear only once the parent enables the controller.
    let root = Path::new("/sys/fs/cgroup/unified");
    let bundle = Bundle::new();
    let resources = unified_resources(&[
        ("hugetlb.2MB.max", &(4 * MIB).to_string()),
        ("cgroup.max.depth", "3"),
    ]);
    let mut config = config(
        "unified-v2",
        with_resources(bundle.spec(&["true"]), resources),
    );
    config.cgroup_root = root.to_path_buf();

    let guard = Guard::create(config).unwrap();

    let directory = &guard.container.cgroup().paths()[0];
    assert!(directory.starts_with(root), "{directory:?}");
    assert_eq!(read(directory, "hugetlb.2MB.max"), (4 * MIB).to_string());
    assert_eq!(read(directory, "cgroup.max.depth"), "3");
}

#[test]
fn class_id_needs_net_cls_controller() {
    require_root();
    let bundle = Bundle::new();
    let resources = LinuxResourcesBuilder::default()
        .network(
            LinuxNetworkBuilder::default()
                .class_id(0x0010_0001u32)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let spec = with_resources(bundle.spec(&["true"]), resources);

    if Path::new("/sys/fs/cgroup/net_cls").is_dir() {
        let guard = Guard::create(config("class-id", spec)).unwrap();
        // net_cls is often mounted together with net_prio as `net_cls,net_prio`.
        let paths = guard.container.cgroup().paths();
        let net_cls = paths
            .iter()
            .find(|path| path.join("net_cls.classid").exists())
            .unwrap_or_else(|| panic!("no net_cls cgroup in {paths:?}"));
        assert_eq!(read(net_cls, "net_cls.classid"), "1048577");
        return;
    }
    assert_create_unsupported(
        "class-id",
        spec,
        "linux.resources.network.classID",
        "net_cls controller",
    );
}

#[test]
fn rdma_without_controller_fails_create() {
    require_root();
    let unified_controllers =
        fs::read_to_string("/sys/fs/cgroup/unified/cgroup.controllers").unwrap_or_default();
    if Path::new("/sys/fs/cgroup/rdma").exists() || unified_controllers.contains("rdma") {
        eprintln!("skipped: this machine has the rdma controller");
        return;
    }
    let bundle = Bundle::new();
    let limits = LinuxRdmaBuilder::default()
        .hca_handles(2u32)
        .build()
        .unwrap();
    let resources = LinuxResourcesBuilder::default()
        .rdma(HashMap::from([("mlx5_0".to_owned(), limits)]))
        .build()
        .unwrap();

    assert_create_unsupported(
        "rdma",
        with_resources(bundle.spec(&["true"]), resources),
        "linux.resources.rdma",
        "rdma controller",
    );
}

#[test]
fn intel_rdt_without_resctrl_fails_create() {
    require_root();
    if Path::new("/sys/fs/resctrl/schemata").exists() {
        // The resctrl groups themselves are tested on a fake tree in
        // rustjail/src/cgroups/resctrl.rs.
        eprintln!("SKIP: this machine mounts resctrl");
        return;
    }
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["true"]);
    let mut linux = spec.linux().clone().unwrap();
    linux.set_intel_rdt(Some(
        LinuxIntelRdtBuilder::default()
            .l3_cache_schema("L3:0=ff")
            .build()
            .unwrap(),
    ));
    spec.set_linux(Some(linux));

    assert_create_unsupported(
        "intel-rdt",
        spec,
        "linux.intelRdt",
        "resctrl filesystem is not mounted",
    );
}
