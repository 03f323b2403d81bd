//! CPU limits: `cpu` and `cpuset` on v1 and v2, with idle scheduling, CFS burst and,
//! on v1 only, real-time bandwidth.

use std::path::Path;

use oci_spec::runtime::LinuxCpu;

use super::layout::Hierarchy;
use super::resources::{
    find, unsupported_on_v2, write_controller_file, write_file, write_supported_file,
};
use crate::error::Error;

const IDLE_FIELD: &str = "linux.resources.cpu.idle";
const BURST_FIELD: &str = "linux.resources.cpu.burst";

/// Conversion of cpu.shares (2 to 262144) to cpu.weight (1 to 10000), mapping the two
/// ranges linearly onto each other.
fn shares_to_weight(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// Applies `linux.resources.cpu` to the cpu and cpuset controllers.
pub(super) fn apply_cpu(targets: &[(&Hierarchy, &Path)], cpu: &LinuxCpu) -> Result<(), Error> {
    if cpu.shares().is_some()
        || cpu.quota().is_some()
        || cpu.period().is_some()
        || cpu.burst().is_some()
        || cpu.idle().is_some()
        || cpu.realtime_runtime().is_some()
        || cpu.realtime_period().is_some()
    {
        check_idle(cpu)?;
        let (hierarchy, directory) = find(targets, "cpu")?;
        if hierarchy.unified {
            apply_cpu_v2(hierarchy, directory, cpu)?;
        } else {
            apply_cpu_v1(hierarchy, directory, cpu)?;
        }
    }

    if cpu.cpus().is_some() || cpu.mems().is_some() {
        let (hierarchy, directory) = find(targets, "cpuset")?;
        if let Some(cpus) = cpu.cpus().as_deref().filter(|cpus| !cpus.is_empty()) {
            write_controller_file(hierarchy, directory, "cpuset", "cpuset.cpus", cpus)?;
        }
        if let Some(mems) = cpu.mems().as_deref().filter(|mems| !mems.is_empty()) {
            write_controller_file(hierarchy, directory, "cpuset", "cpuset.mems", mems)?;
        }
    }
    Ok(())
}

fn apply_cpu_v1(hierarchy: &Hierarchy, directory: &Path, cpu: &LinuxCpu) -> Result<(), Error> {
    let write = |file: &str, value: String| {
        write_controller_file(hierarchy, directory, "cpu", file, &value)
    };

    let shares = cpu
        .shares()
        .map(|shares| move || write("cpu.shares", shares.to_string()));
    write_idle_and_weight(hierarchy, directory, cpu.idle(), shares)?;

    // The kernel checks a quota against the current period, so the period goes first.
    if let Some(period) = cpu.period() {
        write("cpu.cfs_period_us", period.to_string())?;
    }
    let quota = cpu
        .quota()
        .map(|quota| move || write("cpu.cfs_quota_us", quota.to_string()));
    let burst = cpu.burst().map(|burst| {
        move || {
            let value = burst.to_string();
            write_supported_file(
                hierarchy,
                directory,
                "cpu",
                BURST_FIELD,
                "cpu.cfs_burst_us",
                &value,
            )
        }
    });
    write_quota_and_burst(quota, burst)?;

    apply_realtime_v1(directory, cpu)
}

/// Writes `cpu.idle` and, through `write_weight`, `cpu.shares` or `cpu.weight`, each when
/// set. The kernel rejects a weight for an idle group, so the group leaves idle before
/// the weight is written and, for an idle of 1, becomes idle again after it.
fn write_idle_and_weight(
    hierarchy: &Hierarchy,
    directory: &Path,
    idle: Option<i64>,
    write_weight: Option<impl FnOnce() -> Result<(), Error>>,
) -> Result<(), Error> {
    let write_idle = |value: &str| {
        write_supported_file(hierarchy, directory, "cpu", IDLE_FIELD, "cpu.idle", value)
    };

    if idle == Some(0) || (idle == Some(1) && write_weight.is_some()) {
        write_idle("0")?;
    }
    if let Some(write_weight) = write_weight {
        write_weight()?;
    }
    if idle == Some(1) {
        write_idle("1")?;
    }
    Ok(())
}

/// Writes a CFS quota and burst, each when set. The kernel rejects a burst above the
/// current quota and a quota below the current burst, so the quota goes first, and
/// when the kernel rejects it, it goes again after the burst.
fn write_quota_and_burst(
    quota: Option<impl Fn() -> Result<(), Error>>,
    burst: Option<impl Fn() -> Result<(), Error>>,
) -> Result<(), Error> {
    match (quota, burst) {
        (Some(quota), Some(burst)) => {
            if quota().is_ok() {
                burst()
            } else {
                burst()?;
                quota()
            }
        }
        (Some(quota), None) => quota(),
        (None, Some(burst)) => burst(),
        (None, None) => Ok(()),
    }
}

/// Checks `cpu.idle`, which the kernel takes as 0 or 1 on v1 and v2.
fn check_idle(cpu: &LinuxCpu) -> Result<(), Error> {
    match cpu.idle() {
        None | Some(0) | Some(1) => Ok(()),
        Some(idle) => Err(Error::CgroupValue {
            key: IDLE_FIELD,
            value: idle.to_string(),
            reason: "must be 0 or 1".to_owned(),
        }),
    }
}

/// Writes the real-time bandwidth, which exists only on v1 kernels built with real-time
/// group scheduling. The kernel checks a runtime against the current period, so the
/// period goes first, and the parent cgroup must have a runtime of its own to share.
fn apply_realtime_v1(directory: &Path, cpu: &LinuxCpu) -> Result<(), Error> {
    let settings = [
        (
            "cpu.realtimePeriod",
            "cpu.rt_period_us",
            cpu.realtime_period().map(|period| period.to_string()),
        ),
        (
            "cpu.realtimeRuntime",
            "cpu.rt_runtime_us",
            cpu.realtime_runtime().map(|runtime| runtime.to_string()),
        ),
    ];
    for (key, file, value) in settings {
        let Some(value) = value else {
            continue;
        };
        let path = directory.join(file);
        if !path.exists() {
            return Err(Error::Unsupported {
                field: key,
                missing: format!(
                    "the kernel has no real-time group scheduling ({} is missing)",
                    path.display()
                ),
            });
        }
        write_file(&path, &value)?;
    }
    Ok(())
}

fn apply_cpu_v2(hierarchy: &Hierarchy, directory: &Path, cpu: &LinuxCpu) -> Result<(), Error> {
    if let Some(runtime) = cpu.realtime_runtime() {
        return Err(unsupported_on_v2("cpu.realtimeRuntime", runtime));
    }
    if let Some(period) = cpu.realtime_period() {
        return Err(unsupported_on_v2("cpu.realtimePeriod", period));
    }

    let weight = cpu.shares().map(|shares| {
        let weight = shares_to_weight(shares).to_string();
        move || write_controller_file(hierarchy, directory, "cpu", "cpu.weight", &weight)
    });
    write_idle_and_weight(hierarchy, directory, cpu.idle(), weight)?;

    let quota = (cpu.quota().is_some() || cpu.period().is_some()).then(|| {
        let quota = match cpu.quota() {
            Some(quota) if quota > 0 => quota.to_string(),
            _ => "max".to_owned(),
        };
        // 100000 us is the kernel's default period.
        let period = cpu.period().unwrap_or(100_000);
        let value = format!("{quota} {period}");
        move || write_controller_file(hierarchy, directory, "cpu", "cpu.max", &value)
    });
    let burst = cpu.burst().map(|burst| {
        move || {
            let value = burst.to_string();
            write_supported_file(
                hierarchy,
                directory,
                "cpu",
                BURST_FIELD,
                "cpu.max.burst",
                &value,
            )
        }
    });
    write_quota_and_burst(quota, burst)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxCpuBuilder;
    use std::fs;

    #[test]
    fn shares_map_onto_weight_range() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
        assert_eq!(shares_to_weight(0), 1);
    }

    /// Creates a fake cpu hierarchy in a temporary directory, with the container's
    /// directory at `leaf` holding `files`, all empty.
    fn fake(unified: bool, files: &[&str]) -> (tempfile::TempDir, Hierarchy) {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("leaf")).unwrap();
        for file in files {
            fs::write(root.path().join("leaf").join(file), "").unwrap();
        }
        if unified {
            fs::write(root.path().join("cgroup.subtree_control"), "cpu").unwrap();
        }
        let hierarchy = Hierarchy {
            mount_point: root.path().to_path_buf(),
            controllers: vec!["cpu".to_owned()],
            unified,
        };
        (root, hierarchy)
    }

    fn idle_and_burst() -> LinuxCpu {
        LinuxCpuBuilder::default()
            .idle(1i64)
            .burst(20_000u64)
            .quota(50_000i64)
            .period(100_000u64)
            .build()
            .unwrap()
    }

    #[test]
    fn idle_and_burst_go_to_version_files() {
        for (unified, burst_file, quota_file, quota) in [
            (false, "cpu.cfs_burst_us", "cpu.cfs_quota_us", "50000"),
            (true, "cpu.max.burst", "cpu.max", "50000 100000"),
        ] {
            let (root, hierarchy) = fake(unified, &["cpu.idle", burst_file]);
            let leaf = root.path().join("leaf");

            apply_cpu(&[(&hierarchy, &leaf)], &idle_and_burst()).unwrap();

            let read = |file: &str| fs::read_to_string(leaf.join(file)).unwrap();
            assert_eq!(read("cpu.idle"), "1");
            assert_eq!(read(burst_file), "20000");
            assert_eq!(read(quota_file), quota);
        }
    }

    #[test]
    fn missing_idle_or_burst_file_is_unsupported() {
        for (unified, present, field, missing) in [
            (false, "cpu.cfs_burst_us", IDLE_FIELD, "cpu.idle"),
            (false, "cpu.idle", BURST_FIELD, "cpu.cfs_burst_us"),
            (true, "cpu.idle", BURST_FIELD, "cpu.max.burst"),
        ] {
            let (root, hierarchy) = fake(unified, &[present]);
            let leaf = root.path().join("leaf");

            let error = apply_cpu(&[(&hierarchy, &leaf)], &idle_and_burst()).unwrap_err();

            assert!(error.is_unsupported(), "{error}");
            let message = error.to_string();
            assert!(message.starts_with(&format!("{field} ")), "{message}");
            assert!(
                message.contains(&format!("/{missing} does not exist")),
                "{message}"
            );
        }
    }

    #[test]
    fn idle_other_than_zero_or_one_is_rejected() {
        let (root, hierarchy) = fake(false, &["cpu.idle"]);
        let leaf = root.path().join("leaf");
        let cpu = LinuxCpuBuilder::default().idle(2i64).build().unwrap();

        let error = apply_cpu(&[(&hierarchy, &leaf)], &cpu).unwrap_err();

        assert!(error.is_invalid_input(), "{error}");
        assert_eq!(fs::read_to_string(leaf.join("cpu.idle")).unwrap(), "");
    }

    #[test]
    fn realtime_without_kernel_support_names_field() {
        let directory = tempfile::tempdir().unwrap();
        let hierarchy = Hierarchy {
            mount_point: directory.path().to_path_buf(),
            controllers: vec!["cpu".to_owned()],
            unified: false,
        };
        let cpu = LinuxCpuBuilder::default()
            .realtime_runtime(10_000i64)
            .build()
            .unwrap();

        let error = apply_cpu(&[(&hierarchy, directory.path())], &cpu).unwrap_err();

        assert!(error.is_unsupported(), "{error}");
        assert!(error.to_string().contains("cpu.realtimeRuntime"), "{error}");
        assert!(error.to_string().contains("cpu.rt_runtime_us"), "{error}");
    }
}
