//! Cgroup limits, freezer, statistics and live updates of real containers. Needs root.

mod common;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{config, require_root, Bundle, Guard, Output};
use oci_spec::runtime::{
    LinuxBlockIoBuilder, LinuxCpuBuilder, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder,
    LinuxDeviceType, LinuxHugepageLimitBuilder, LinuxIntelRdtBuilder, LinuxMemoryBuilder,
    LinuxNetworkBuilder, LinuxPidsBuilder, LinuxRdmaBuilder, LinuxResources, LinuxResourcesBuilder,
    LinuxThrottleDeviceBuilder, Spec,
};

const MIB: i64 = 1024 * 1024;

fn with_resources(mut spec: Spec, resources: LinuxResources) -> Spec {
    let mut linux = spec.linux().clone().unwrap();
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
    spec
}

fn hierarchy_path(paths: &[PathBuf], hierarchy: &str) -> PathBuf {
    paths
        .iter()
        .find(|path| path.starts_with(Path::new("/sys/fs/cgroup").join(hierarchy)))
        .unwrap_or_else(|| panic!("no {hierarchy} cgroup in {paths:?}"))
        .clone()
}

fn read(directory: &Path, file: &str) -> String {
    fs::read_to_string(directory.join(file))
        .unwrap_or_else(|error| panic!("read {file}: {error}"))
        .trim()
        .to_owned()
}

#[test]
fn memory_swap_swappiness_oom_and_hugetlb_apply() {
    require_root();
    let bundle = Bundle::new();
    let resources = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 * MIB)
                .swap(128 * MIB)
                .swappiness(10u64)
                .disable_oom_killer(true)
                .build()
                .unwrap(),
        )
        .hugepage_limits(vec![LinuxHugepageLimitBuilder::default()
            .page_size("2MB")
            .limit(4 * MIB)
            .build()
            .unwrap()])
        .build()
        .unwrap();
    let spec = with_resources(bundle.spec(&["true"]), resources);

    let guard = Guard::create(config("memory-extra", spec)).unwrap();

    let paths = guard.container.cgroup().paths().to_vec();
    let memory = hierarchy_path(&paths, "memory");
    assert_eq!(
        read(&memory, "memory.limit_in_bytes"),
        (64 * MIB).to_string()
    );
    assert_eq!(
        read(&memory, "memory.memsw.limit_in_bytes"),
        (128 * MIB).to_string()
    );
    assert_eq!(read(&memory, "memory.swappiness"), "10");
    assert!(read(&memory, "memory.oom_control").contains("oom_kill_disable 1"));
    let unified = hierarchy_path(&paths, "unified");
    assert_eq!(read(&unified, "hugetlb.2MB.max"), (4 * MIB).to_string());
}

#[test]
fn pause_freezes_and_resume_thaws() {
    require_root();
    let bundle = Bundle::new();
    let mut guard = Guard::create(config("pause", bundle.spec(&["sleep", "60"]))).unwrap();
    guard.container.start().unwrap();
    let freezer = hierarchy_path(guard.container.cgroup().paths(), "freezer");

    guard.container.pause().unwrap();
    let paused = read(&freezer, "freezer.state");
    guard.container.resume().unwrap();
    let resumed = read(&freezer, "freezer.state");

    assert_eq!(paused, "FROZEN");
    assert_eq!(resumed, "THAWED");
}

#[test]
fn stats_report_usage_and_limits() {
    require_root();
    let bundle = Bundle::new();
    let resources = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 * MIB)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(32).build().unwrap())
        .build()
        .unwrap();
    let spec = with_resources(bundle.spec(&["sleep", "60"]), resources);
    let mut guard = Guard::create(config("stats", spec)).unwrap();
    guard.container.start().unwrap();

    let stats = guard.container.stats().unwrap();

    let memory = stats.memory.expect("memory stats");
    assert_eq!(memory.limit, 64 * MIB as u64);
    assert!(memory.usage > 0, "{memory:?}");
    let pids = stats.pids.expect("pids stats");
    assert_eq!(pids.current, 1);
    assert_eq!(pids.limit, Some(32));
    assert!(stats.cpu.expect("cpu stats").usage_ns > 0);
}

#[test]
fn update_changes_running_limits() {
    require_root();
    let bundle = Bundle::new();
    let mut guard = Guard::create(config("update", bundle.spec(&["sleep", "60"]))).unwrap();
    guard.container.start().unwrap();
    let resources = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(32 * MIB)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(16).build().unwrap())
        .build()
        .unwrap();

    guard.container.update(&resources).unwrap();

    let paths = guard.container.cgroup().paths().to_vec();
    assert_eq!(
        read(&hierarchy_path(&paths, "memory"), "memory.limit_in_bytes"),
        (32 * MIB).to_string()
    );
    assert_eq!(read(&hierarchy_path(&paths, "pids"), "pids.max"), "16");
}

#[test]
fn last_container_removes_shared_parent() {
    require_root();
    let bundle = Bundle::new();
    let first_config = config("shared-first", bundle.spec(&["sleep", "60"]));
    let parent = first_config.cgroup_parent.clone();
    let mut second_config = config("shared-second", bundle.spec(&["sleep", "60"]));
    second_config.cgroup_parent = parent.clone();
    let mut first = Guard::create(first_config).unwrap();
    let mut second = Guard::create(second_config).unwrap();
    let parent_dir = Path::new("/sys/fs/cgroup/memory").join(&parent);

    // The first container created the parent, and the second is still in it.
    first.container.destroy().unwrap();
    first.wait();
    let after_first = parent_dir.is_dir();
    second.container.destroy().unwrap();
    second.wait();

    assert!(after_first, "the parent went while a container was in it");
    assert!(!parent_dir.exists(), "{} left behind", parent_dir.display());
}

#[test]
fn cpu_cpuset_and_memory_reservation_apply() {
    require_root();
    let bundle = Bundle::new();
    let resources = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .shares(512u64)
                .period(50_000u64)
                .quota(25_000i64)
                .cpus("0")
                .mems("0")
                .build()
                .unwrap(),
        )
        .memory(
            LinuxMemoryBuilder::default()
                .reservation(32 * MIB)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let spec = with_resources(
        bundle.spec(&[
            "sh",
            "-c",
            "cd /sys/fs/cgroup/cpu && cat cpu.shares cpu.cfs_quota_us cpu.cfs_period_us; \
             grep Cpus_allowed_list /proc/self/status",
        ]),
        resources,
    );
    let mut guard = Guard::create(config("cpu", spec)).unwrap();
    let paths = guard.container.cgroup().paths().to_vec();
    let reservation = read(
        &hierarchy_path(&paths, "memory"),
        "memory.soft_limit_in_bytes",
    );
    let cpuset = hierarchy_path(&paths, "cpuset");
    let cpus = read(&cpuset, "cpuset.cpus");
    let mems = read(&cpuset, "cpuset.mems");

    let output = guard.run();

    assert_eq!(output.code, 0, "{output:?}");
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(lines[..3], ["512", "25000", "50000"], "{output:?}");
    assert_eq!(
        lines[3].split_whitespace().collect::<Vec<_>>(),
        ["Cpus_allowed_list:", "0"]
    );
    assert_eq!(reservation, (32 * MIB).to_string());
    assert_eq!((cpus.as_str(), mems.as_str()), ("0", "0"));
}

/// A cgroup directory made by a test in one v1 hierarchy, removed on drop if the
/// container's cleanup left it.
struct TestCgroup(PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

#[test]
fn realtime_bandwidth_applies_on_v1() {
    require_root();
    let cpu_root = Path::new("/sys/fs/cgroup/cpu");
    if !cpu_root.join("cpu.rt_runtime_us").exists() {
        eprintln!("skipped: the kernel has no real-time group scheduling");
        return;
    }
    let bundle = Bundle::new();
    let resources = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .realtime_period(500_000u64)
                .realtime_runtime(10_000i64)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let spec = with_resources(
        bundle.spec(&[
            "cat",
            "/sys/fs/cgroup/cpu/cpu.rt_period_us",
            "/sys/fs/cgroup/cpu/cpu.rt_runtime_us",
        ]),
        resources,
    );
    let config = config("realtime", spec);
    // A child gets real-time runtime only out of its parent's, and a new cgroup has none.
    let parent = TestCgroup(cpu_root.join(&config.cgroup_parent));
    fs::create_dir(&parent.0).unwrap();
    fs::write(parent.0.join("cpu.rt_runtime_us"), "20000").unwrap();

    let output = Guard::create(config).unwrap().run();

    assert_eq!(output.code, 0, "{output:?}");
    assert_eq!(output.stdout, "500000\n10000\n", "{output:?}");
}

/// Returns a spec with a node for sample device 42:0 at `/dev/sample`, which opens it and
/// then `/dev/null`. Major 42 is reserved for sample drivers and never backs real hardware:
/// an allowed open fails in the kernel with "No such device or address", a denied one
/// earlier, in the device cgroup, with "Operation not permitted".
fn sample_device_spec(bundle: &Bundle, allow_sample: bool) -> Spec {
    let mut spec = bundle.spec(&[
        "sh",
        "-c",
        "head -c1 /dev/sample; head -c1 /dev/null && echo null-ok",
    ]);
    let node = LinuxDeviceBuilder::default()
        .path("/dev/sample")
        .typ(LinuxDeviceType::C)
        .major(42)
        .minor(0)
        .file_mode(0o666u32)
        .build()
        .unwrap();

    let mut linux = spec.linux().clone().unwrap();
    linux.set_devices(Some(vec![node]));
    let mut resources = linux.resources().clone().unwrap();
    // The runc spec starts with "deny all", and the launcher adds its default allows.
    let mut rules = resources.devices().clone().unwrap();
    if allow_sample {
        rules.push(
            LinuxDeviceCgroupBuilder::default()
                .allow(true)
                .typ(LinuxDeviceType::C)
                .major(42)
                .minor(0)
                .access("r")
                .build()
                .unwrap(),
        );
    }

    resources.set_devices(Some(rules));
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
    spec
}

fn assert_sample_denied_then_allowed(denied: &Output, allowed: &Output) {
    assert!(
        denied.stderr.contains("Operation not permitted"),
        "{denied:?}"
    );
    assert!(
        allowed.stderr.contains("No such device or address"),
        "{allowed:?}"
    );
    assert_eq!(denied.stdout, "null-ok\n", "{denied:?}");
    assert_eq!(allowed.stdout, "null-ok\n", "{allowed:?}");
}

#[test]
fn v1_device_rules_deny_and_allow() {
    require_root();
    let bundle = Bundle::new();

    let denied = Guard::create(config("devices-deny", sample_device_spec(&bundle, false)))
        .unwrap()
        .run();
    let allowed = Guard::create(config("devices-allow", sample_device_spec(&bundle, true)))
        .unwrap()
        .run();

    assert_sample_denied_then_allowed(&denied, &allowed);
}

#[test]
fn v2_device_filter_denies_and_allows() {
    require_root();
    // The cgroup2 mount of this hybrid layout, taken as the cgroup root, is a pure v2
    // layout with no devices controller.
    let unified = Path::new("/sys/fs/cgroup/unified");
    if !unified.join("cgroup.controllers").is_file() {
        eprintln!("skipped: no cgroup2 mount at {}", unified.display());
        return;
    }
    let bundle = Bundle::new();
    let v2_config = |test: &str, allow_sample: bool| {
        let mut config = config(test, sample_device_spec(&bundle, allow_sample));
        config.cgroup_root = unified.to_path_buf();
        config
    };

    let mut denied_guard = Guard::create(v2_config("filter-deny", false)).unwrap();
    assert!(
        denied_guard.container.cgroup().paths()[0].starts_with(unified),
        "{:?}",
        denied_guard.container.cgroup().paths()
    );
    let denied = denied_guard.run();
    let allowed = Guard::create(v2_config("filter-allow", true))
        .unwrap()
        .run();

    assert_sample_denied_then_allowed(&denied, &allowed);
}

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

/// Cgroup directories, relative to every hierarchy under `/sys/fs/cgroup`, that a test
/// expects the launcher to remove. On drop, those still there are removed, deepest first,
/// so a failing test leaves nothing behind.
struct ExpectedRemoved(Vec<PathBuf>);

impl ExpectedRemoved {
    /// Returns the directories of this list that still exist in some hierarchy.
    fn left_behind(&self) -> Vec<PathBuf> {
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
fn hierarchy_roots() -> Vec<PathBuf> {
    fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.join("cgroup.procs").exists())
        .collect()
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

/// Creates a container from `spec` and checks that create fails with an unsupported
/// error naming `field` and `missing`, leaving no cgroup directory behind.
fn assert_create_unsupported(test: &str, spec: Spec, field: &str, missing: &str) {
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
fn intel_rdt_fails_create() {
    require_root();
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
    let missing = if Path::new("/sys/fs/resctrl/schemata").exists() {
        "does not create resctrl groups"
    } else {
        "resctrl filesystem is not mounted"
    };

    assert_create_unsupported("intel-rdt", spec, "linux.intelRdt", missing);
}
