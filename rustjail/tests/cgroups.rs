//! Cgroup limits, freezer, statistics and live updates of real containers: cpu, memory,
//! pids, hugetlb and devices. Needs root.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::cgroup::{hierarchy_path, read, with_resources, ExpectedRemoved, MIB};
use common::{config, require_root, Bundle, Guard, Output};
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxDeviceBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResourcesBuilder, Spec,
};

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

#[test]
fn cpu_idle_and_burst_apply_on_v1() {
    require_root();
    let cpu_root = Path::new("/sys/fs/cgroup/cpu");
    let bundle = Bundle::new();
    let resources = LinuxResourcesBuilder::default()
        .cpu(
            LinuxCpuBuilder::default()
                .idle(1i64)
                .burst(20_000u64)
                .quota(50_000i64)
                .period(100_000u64)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    let spec = with_resources(
        bundle.spec(&[
            "sh",
            "-c",
            "cd /sys/fs/cgroup/cpu && cat cpu.idle cpu.cfs_burst_us cpu.cfs_quota_us",
        ]),
        resources,
    );
    let missing = ["cpu.idle", "cpu.cfs_burst_us"]
        .into_iter()
        .find(|file| !cpu_root.join(file).exists());

    let result = Guard::create(config("cpu-idle-burst", spec));

    if let Some(file) = missing {
        let error = result.err().expect("create fails without the file");
        assert!(error.is_unsupported(), "{error}");
        assert!(error.to_string().contains(file), "{error}");
        return;
    }
    let output = result.unwrap().run();
    assert_eq!(output.code, 0, "{output:?}");
    assert_eq!(output.stdout, "1\n20000\n50000\n", "{output:?}");
}

#[test]
fn update_lowers_quota_below_old_burst() {
    require_root();
    if !Path::new("/sys/fs/cgroup/cpu/cpu.cfs_burst_us").exists() {
        eprintln!("skipped: the kernel has no CFS burst");
        return;
    }
    let bundle = Bundle::new();
    let cpu = |quota: i64, burst: u64| {
        LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .quota(quota)
                    .burst(burst)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    };
    let spec = with_resources(bundle.spec(&["sleep", "60"]), cpu(50_000, 40_000));
    let mut guard = Guard::create(config("cpu-burst-update", spec)).unwrap();
    guard.container.start().unwrap();
    let directory = hierarchy_path(guard.container.cgroup().paths(), "cpu");

    // The kernel rejects the new quota while the old burst is above it, so the burst
    // has to go first.
    guard.container.update(&cpu(20_000, 10_000)).unwrap();

    assert_eq!(read(&directory, "cpu.cfs_quota_us"), "20000");
    assert_eq!(read(&directory, "cpu.cfs_burst_us"), "10000");
}

#[test]
fn update_sets_shares_of_idle_group() {
    require_root();
    if !Path::new("/sys/fs/cgroup/cpu/cpu.idle").exists() {
        eprintln!("skipped: the kernel has no cpu.idle");
        return;
    }
    let bundle = Bundle::new();
    let cpu = |idle: i64, shares: u64| {
        LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .idle(idle)
                    .shares(shares)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    };
    let spec = with_resources(bundle.spec(&["sleep", "60"]), cpu(1, 512));
    let mut guard = Guard::create(config("cpu-idle-update", spec)).unwrap();
    guard.container.start().unwrap();
    let directory = hierarchy_path(guard.container.cgroup().paths(), "cpu");

    // The kernel rejects shares for an idle group, which this group is already.
    let still_idle = guard.container.update(&cpu(1, 1024));
    let idle_after_first = read(&directory, "cpu.idle");
    guard.container.update(&cpu(0, 2048)).unwrap();

    assert!(still_idle.is_ok(), "{still_idle:?}");
    assert_eq!(idle_after_first, "1");
    assert_eq!(read(&directory, "cpu.idle"), "0");
    assert_eq!(read(&directory, "cpu.shares"), "2048");
}

fn use_hierarchy_spec(bundle: &Bundle, use_hierarchy: bool) -> Spec {
    let resources = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .use_hierarchy(use_hierarchy)
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    with_resources(
        bundle.spec(&["cat", "/sys/fs/cgroup/memory/memory.use_hierarchy"]),
        resources,
    )
}

#[test]
fn use_hierarchy_true_applies() {
    require_root();
    let bundle = Bundle::new();

    let output = Guard::create(config("use-hierarchy", use_hierarchy_spec(&bundle, true)))
        .unwrap()
        .run();

    assert_eq!(output.code, 0, "{output:?}");
    assert_eq!(output.stdout, "1\n", "{output:?}");
}

#[test]
fn use_hierarchy_false_is_unsupported() {
    require_root();
    let bundle = Bundle::new();
    let config = config("no-hierarchy", use_hierarchy_spec(&bundle, false));
    let expected_removed = ExpectedRemoved(vec![
        Path::new(&config.cgroup_parent).join(&config.id),
        PathBuf::from(&config.cgroup_parent),
    ]);

    let result = Guard::create(config);

    // Older kernels accept 0 where the parent cgroup accounts flat.
    if let Ok(mut guard) = result {
        let output = guard.run();
        assert_eq!(output.stdout, "0\n", "{output:?}");
        return;
    }
    let error = result.err().unwrap();
    assert!(error.is_unsupported(), "{error}");
    let message = error.to_string();
    assert!(
        message.starts_with("linux.resources.memory.useHierarchy "),
        "{message}"
    );
    assert!(message.contains("memory.use_hierarchy"), "{message}");
    assert_eq!(expected_removed.left_behind(), Vec::<PathBuf>::new());
}

#[test]
fn check_before_update_rejects_limit_below_usage() {
    require_root();
    let bundle = Bundle::new();
    let mut guard = Guard::create(config("check-update", bundle.spec(&["sleep", "60"]))).unwrap();
    guard.container.start().unwrap();
    let memory = hierarchy_path(guard.container.cgroup().paths(), "memory");
    let limit = |bytes: i64| {
        LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(bytes)
                    .check_before_update(true)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    };
    let before = read(&memory, "memory.limit_in_bytes");
    let usage: i64 = read(&memory, "memory.usage_in_bytes").parse().unwrap();
    assert!(usage > 4096, "the running sleep uses only {usage} bytes");

    let error = guard.container.update(&limit(4096)).unwrap_err();
    let after_rejected = read(&memory, "memory.limit_in_bytes");
    guard.container.update(&limit(64 * MIB)).unwrap();

    assert!(error.is_invalid_input(), "{error}");
    let message = error.to_string();
    assert!(message.contains("\"4096\""), "{message}");
    assert!(
        message.contains("linux.resources.memory.limit"),
        "{message}"
    );
    assert!(message.contains("memory.usage_in_bytes"), "{message}");
    assert_eq!(after_rejected, before);
    assert_eq!(
        read(&memory, "memory.limit_in_bytes"),
        (64 * MIB).to_string()
    );
}
