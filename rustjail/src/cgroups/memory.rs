//! Memory limits: the `memory` controller on v1 and v2.

use std::path::Path;

use oci_spec::runtime::LinuxMemory;

use super::layout::Hierarchy;
use super::resources::{find, unsupported_on_v2, write_controller_file, write_file, ApplyMode};
use super::stats;
use crate::error::Error;

const USE_HIERARCHY_FIELD: &str = "linux.resources.memory.useHierarchy";

/// Applies `linux.resources.memory` to the memory controller.
pub(super) fn apply_memory(
    targets: &[(&Hierarchy, &Path)],
    memory: &LinuxMemory,
    mode: ApplyMode,
) -> Result<(), Error> {
    let (hierarchy, directory) = find(targets, "memory")?;

    if let Some(use_hierarchy) = memory.use_hierarchy() {
        apply_use_hierarchy(hierarchy, directory, use_hierarchy)?;
    }
    if mode == ApplyMode::Update && memory.check_before_update() == Some(true) {
        check_limit_not_below_usage(hierarchy, directory, memory)?;
    }

    if hierarchy.unified {
        apply_memory_limits_v2(hierarchy, directory, memory)?;
    } else {
        apply_memory_limits_v1(directory, memory)?;
    }
    if let Some(reservation) = memory.reservation() {
        let value = memory_value("memory.reservation", reservation, hierarchy.unified)?;
        let file = if hierarchy.unified {
            "memory.low"
        } else {
            "memory.soft_limit_in_bytes"
        };
        write_controller_file(hierarchy, directory, "memory", file, &value)?;
    }

    if let Some(swappiness) = memory.swappiness() {
        if hierarchy.unified {
            return Err(unsupported_on_v2("memory.swappiness", swappiness));
        }
        if swappiness > 100 {
            return Err(Error::CgroupValue {
                key: "memory.swappiness",
                value: swappiness.to_string(),
                reason: "must be between 0 and 100".to_owned(),
            });
        }
        write_file(
            &directory.join("memory.swappiness"),
            &swappiness.to_string(),
        )?;
    }
    if memory.disable_oom_killer() == Some(true) {
        if hierarchy.unified {
            return Err(unsupported_on_v2("memory.disableOOMKiller", true));
        }
        write_file(&directory.join("memory.oom_control"), "1")?;
    }
    // NOTE: kernel memory limits are deprecated in the runtime spec and not applied.
    Ok(())
}

/// Applies `memory.useHierarchy`. Hierarchical accounting is always on in v2. The v1
/// `memory.use_hierarchy` of recent kernels rejects 0 with EINVAL (Linux 6.18 does), and
/// older kernels reject it where the parent cgroup accounts hierarchically.
fn apply_use_hierarchy(
    hierarchy: &Hierarchy,
    directory: &Path,
    use_hierarchy: bool,
) -> Result<(), Error> {
    if hierarchy.unified {
        if use_hierarchy {
            return Ok(());
        }
        return Err(Error::CgroupValue {
            key: USE_HIERARCHY_FIELD,
            value: "false".to_owned(),
            reason: "cgroup v2 always accounts memory hierarchically".to_owned(),
        });
    }

    let value = if use_hierarchy { "1" } else { "0" };
    match write_file(&directory.join("memory.use_hierarchy"), value) {
        Err(Error::CgroupWrite { path, source, .. })
            if !use_hierarchy && source.raw_os_error() == Some(libc::EINVAL) =>
        {
            Err(Error::Unsupported {
                field: USE_HIERARCHY_FIELD,
                missing: format!(
                    "the kernel keeps hierarchical memory accounting on and rejected 0 in {}",
                    path.display()
                ),
            })
        }
        result => result,
    }
}

/// Rejects, for `memory.checkBeforeUpdate`, a new memory limit below the memory the
/// cgroup uses now, which the kernel would otherwise try to reclaim or meet with the OOM
/// killer.
fn check_limit_not_below_usage(
    hierarchy: &Hierarchy,
    directory: &Path,
    memory: &LinuxMemory,
) -> Result<(), Error> {
    let Some(limit) = memory.limit().filter(|limit| *limit >= 0) else {
        return Ok(());
    };
    let usage_file = if hierarchy.unified {
        "memory.current"
    } else {
        "memory.usage_in_bytes"
    };
    let usage_path = directory.join(usage_file);
    let usage = stats::number(&usage_path)?;

    if u64::try_from(limit).unwrap_or(0) < usage {
        return Err(Error::CgroupValue {
            key: "linux.resources.memory.limit",
            value: limit.to_string(),
            reason: format!(
                "below the current usage of {usage} bytes in {}, which \
                 memory.checkBeforeUpdate rejects",
                usage_path.display()
            ),
        });
    }
    Ok(())
}

/// Writes the memory limit and the memory plus swap limit of a v1 cgroup. The kernel
/// keeps the swap limit at least as high as the memory limit at every step, so a rising
/// limit goes after the swap limit and a falling one before it.
fn apply_memory_limits_v1(directory: &Path, memory: &LinuxMemory) -> Result<(), Error> {
    let limit = memory
        .limit()
        .map(|limit| memory_value("memory.limit", limit, false))
        .transpose()?;
    let swap = memory
        .swap()
        .map(|swap| memory_value("memory.swap", swap, false))
        .transpose()?;
    let limit_file = directory.join("memory.limit_in_bytes");
    let swap_file = directory.join("memory.memsw.limit_in_bytes");

    match (limit, swap) {
        (Some(limit), Some(swap)) => {
            if write_file(&limit_file, &limit).is_ok() {
                write_file(&swap_file, &swap)
            } else {
                write_file(&swap_file, &swap)?;
                write_file(&limit_file, &limit)
            }
        }
        (Some(limit), None) => write_file(&limit_file, &limit),
        (None, Some(swap)) => write_file(&swap_file, &swap),
        (None, None) => Ok(()),
    }
}

/// Writes `memory.max` and `memory.swap.max`. The spec's swap is memory plus swap, and v2
/// limits swap alone, so the difference is written.
fn apply_memory_limits_v2(
    hierarchy: &Hierarchy,
    directory: &Path,
    memory: &LinuxMemory,
) -> Result<(), Error> {
    if let Some(limit) = memory.limit() {
        let value = memory_value("memory.limit", limit, true)?;
        write_controller_file(hierarchy, directory, "memory", "memory.max", &value)?;
    }
    let Some(swap) = memory.swap() else {
        return Ok(());
    };
    let value = match (swap, memory.limit()) {
        (-1, _) => "max".to_owned(),
        (swap, Some(limit)) if limit >= 0 && swap >= limit => (swap - limit).to_string(),
        (swap, Some(-1)) | (swap, None) if swap >= 0 => {
            return Err(Error::CgroupValue {
                key: "memory.swap",
                value: swap.to_string(),
                reason: "needs memory.limit on cgroup v2, where swap is limited apart".to_owned(),
            })
        }
        (swap, _) => {
            return Err(Error::CgroupValue {
                key: "memory.swap",
                value: swap.to_string(),
                reason: "must be -1 or at least memory.limit".to_owned(),
            })
        }
    };
    write_controller_file(hierarchy, directory, "memory", "memory.swap.max", &value)
}

/// Formats a byte count where -1 means unlimited.
fn memory_value(key: &'static str, bytes: i64, unified: bool) -> Result<String, Error> {
    match bytes {
        -1 if unified => Ok("max".to_owned()),
        -1 => Ok("-1".to_owned()),
        bytes if bytes >= 0 => Ok(bytes.to_string()),
        bytes => Err(Error::CgroupValue {
            key,
            value: bytes.to_string(),
            reason: "must be a byte count or -1 for unlimited".to_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxMemoryBuilder;
    use std::fs;

    /// Creates a fake memory hierarchy in a temporary directory, with the container's
    /// directory at `leaf` holding `files`.
    fn fake(unified: bool, files: &[(&str, &str)]) -> (tempfile::TempDir, Hierarchy) {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("leaf")).unwrap();
        for (file, text) in files {
            fs::write(root.path().join("leaf").join(file), text).unwrap();
        }
        if unified {
            fs::write(root.path().join("cgroup.subtree_control"), "memory").unwrap();
        }
        let hierarchy = Hierarchy {
            mount_point: root.path().to_path_buf(),
            controllers: vec!["memory".to_owned()],
            unified,
        };
        (root, hierarchy)
    }

    fn limit_with_check(limit: i64) -> LinuxMemory {
        LinuxMemoryBuilder::default()
            .limit(limit)
            .check_before_update(true)
            .build()
            .unwrap()
    }

    #[test]
    fn update_below_usage_is_rejected() {
        for (unified, usage_file, limit_file) in [
            (false, "memory.usage_in_bytes", "memory.limit_in_bytes"),
            (true, "memory.current", "memory.max"),
        ] {
            let (root, hierarchy) =
                fake(unified, &[(usage_file, "8388608\n"), (limit_file, "max")]);
            let leaf = root.path().join("leaf");

            let error = apply_memory(
                &[(&hierarchy, &leaf)],
                &limit_with_check(4_194_304),
                ApplyMode::Update,
            )
            .unwrap_err();

            assert!(error.is_invalid_input(), "{error}");
            let message = error.to_string();
            assert!(message.contains("\"4194304\""), "{message}");
            assert!(message.contains("usage of 8388608 bytes"), "{message}");
            assert!(message.contains(usage_file), "{message}");
            let limit = fs::read_to_string(leaf.join(limit_file)).unwrap();
            assert_eq!(limit, "max", "the rejected limit was written");
        }
    }

    #[test]
    fn limit_above_usage_or_on_create_applies() {
        let (root, hierarchy) = fake(true, &[("memory.current", "8388608\n")]);
        let leaf = root.path().join("leaf");
        let targets = [(&hierarchy, leaf.as_path())];

        apply_memory(&targets, &limit_with_check(4_194_304), ApplyMode::Create).unwrap();
        let on_create = fs::read_to_string(leaf.join("memory.max")).unwrap();
        apply_memory(&targets, &limit_with_check(16_777_216), ApplyMode::Update).unwrap();
        let on_update = fs::read_to_string(leaf.join("memory.max")).unwrap();

        assert_eq!(on_create, "4194304");
        assert_eq!(on_update, "16777216");
    }

    #[test]
    fn use_hierarchy_false_on_v2_is_rejected() {
        let (root, hierarchy) = fake(true, &[]);
        let leaf = root.path().join("leaf");
        let memory = |use_hierarchy: bool| {
            LinuxMemoryBuilder::default()
                .use_hierarchy(use_hierarchy)
                .build()
                .unwrap()
        };

        let enabled = apply_memory(&[(&hierarchy, &leaf)], &memory(true), ApplyMode::Create);
        let error =
            apply_memory(&[(&hierarchy, &leaf)], &memory(false), ApplyMode::Create).unwrap_err();

        assert!(enabled.is_ok(), "{enabled:?}");
        assert!(error.is_invalid_input(), "{error}");
        assert!(error.to_string().contains(USE_HIERARCHY_FIELD), "{error}");
    }

    #[test]
    fn negative_memory_other_than_minus_one_is_rejected() {
        assert_eq!(memory_value("memory.limit", -1, true).unwrap(), "max");
        assert_eq!(memory_value("memory.limit", -1, false).unwrap(), "-1");
        assert!(memory_value("memory.limit", -2, false).is_err());
    }
}
