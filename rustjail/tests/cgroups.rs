//! Cgroup limits, freezer, statistics and live updates of real containers. Needs root.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{config, require_root, Bundle, Guard};
use oci_spec::runtime::{
    LinuxHugepageLimitBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources,
    LinuxResourcesBuilder, Spec,
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
