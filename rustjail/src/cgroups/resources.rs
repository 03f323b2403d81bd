//! Writing `linux.resources` limits into the container's cgroup files.
//!
//! Each limit goes to the v1 hierarchy of its controller when one is mounted, otherwise
//! to the v2 hierarchy, whose controller is first enabled in every ancestor's
//! `cgroup.subtree_control`.

use std::fs;
use std::io;
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType, LinuxResources};
use slog::{warn, Logger};

use super::device_filter::{self, DeviceRule};
use super::layout::Hierarchy;
use super::{block_io, cpu, memory, network, unified};
use crate::error::Error;

/// Device rules added after the spec's own rules. They let a spec that starts with "deny
/// all" still create and use the standard nodes: mknod of any node, null, zero, full,
/// random, urandom, tty, console, ptmx and the pseudo-terminals.
const DEFAULT_DEVICE_RULES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
];

/// The point at which limits are applied, which `memory.checkBeforeUpdate` depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApplyMode {
    /// A new cgroup, before any process joins it.
    Create,
    /// A live update of a cgroup whose processes run.
    Update,
}

/// Applies every supported limit of `resources` to the container's `targets`, one per
/// hierarchy.
pub(super) fn apply(
    targets: &[(&Hierarchy, &Path)],
    resources: &LinuxResources,
    mode: ApplyMode,
    logger: &Logger,
) -> Result<(), Error> {
    if let Some(memory) = resources.memory() {
        memory::apply_memory(targets, memory, mode)?;
    }
    if let Some(pids) = resources.pids() {
        let value = if pids.limit() > 0 {
            pids.limit().to_string()
        } else {
            "max".to_owned()
        };
        let (hierarchy, directory) = find(targets, "pids")?;
        write_controller_file(hierarchy, directory, "pids", "pids.max", &value)?;
    }
    if let Some(cpu) = resources.cpu() {
        cpu::apply_cpu(targets, cpu)?;
    }
    if let Some(rules) = resources
        .devices()
        .as_deref()
        .filter(|rules| !rules.is_empty())
    {
        apply_devices(targets, rules, logger)?;
    }
    if let Some(block_io) = resources.block_io() {
        block_io::apply_block_io(targets, block_io)?;
    }
    if let Some(limits) = resources.hugepage_limits().as_deref() {
        block_io::apply_hugepages(targets, limits)?;
    }
    if let Some(network) = resources.network() {
        network::apply_network(targets, network)?;
    }
    if let Some(rdma) = resources.rdma() {
        network::apply_rdma(targets, rdma)?;
    }
    if let Some(unified) = resources.unified() {
        unified::apply_unified(targets, unified)?;
    }
    Ok(())
}

pub(super) fn unsupported_on_v2(key: &'static str, value: impl ToString) -> Error {
    Error::CgroupValue {
        key,
        value: value.to_string(),
        reason: "cgroup v2 has no such setting".to_owned(),
    }
}

/// Applies device rules through the v1 devices controller, or on a pure v2 layout
/// through a device filter program. A hybrid layout has the v1 controller, which
/// enforces the rules already.
fn apply_devices(
    targets: &[(&Hierarchy, &Path)],
    rules: &[LinuxDeviceCgroup],
    logger: &Logger,
) -> Result<(), Error> {
    let v1 = targets
        .iter()
        .find(|(hierarchy, _)| hierarchy.has("devices") && !hierarchy.unified);
    let v2 = targets.iter().find(|(hierarchy, _)| hierarchy.unified);
    let directory = match (v1, v2) {
        (Some((_, directory)), _) => directory,
        (None, Some((_, directory))) => return apply_device_filter(directory, rules),
        (None, None) => {
            warn!(logger, "device cgroup rules not applied: no devices hierarchy"; "rules" => rules.len());
            return Ok(());
        }
    };

    for rule in rules {
        let file = if rule.allow() {
            "devices.allow"
        } else {
            "devices.deny"
        };
        write_file(&directory.join(file), &device_rule(rule)?)?;
    }
    for rule in DEFAULT_DEVICE_RULES {
        write_file(&directory.join("devices.allow"), rule)?;
    }
    Ok(())
}

/// Attaches a device filter with the spec's rules followed by the default allows, the
/// order the v1 controller gets them in. A live update attaches one more filter, and a
/// request needs the consent of all, so on v2 an update can narrow access but not
/// widen it.
fn apply_device_filter(directory: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), Error> {
    let mut parsed = Vec::new();
    for rule in rules {
        let text = device_rule(rule)?;
        parsed.push(parse_rule(rule.allow(), &text)?);
    }
    for text in DEFAULT_DEVICE_RULES {
        parsed.push(parse_rule(true, text)?);
    }
    device_filter::attach(directory, &parsed)
}

fn parse_rule(allow: bool, text: &str) -> Result<DeviceRule, Error> {
    DeviceRule::parse(allow, text).ok_or_else(|| Error::CgroupValue {
        key: "linux.resources.devices",
        value: text.to_owned(),
        reason: "not a device rule of the form \"c 1:3 rwm\"".to_owned(),
    })
}

/// Formats a rule as the v1 devices controller reads it: `type major:minor access`.
fn device_rule(rule: &LinuxDeviceCgroup) -> Result<String, Error> {
    let kind = match rule.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => "a",
        LinuxDeviceType::B => "b",
        LinuxDeviceType::C | LinuxDeviceType::U => "c",
        LinuxDeviceType::P => {
            return Err(Error::CgroupValue {
                key: "linux.resources.devices.type",
                value: "p".to_owned(),
                reason: "the devices controller has no rules for FIFOs".to_owned(),
            })
        }
    };
    let number = |value: Option<i64>| {
        value
            .filter(|value| *value >= 0)
            .map_or("*".to_owned(), |value| value.to_string())
    };
    let access = rule.access().clone().unwrap_or_else(|| "rwm".to_owned());
    if access.is_empty()
        || !access
            .chars()
            .all(|letter| matches!(letter, 'r' | 'w' | 'm'))
    {
        return Err(Error::CgroupValue {
            key: "linux.resources.devices.access",
            value: access,
            reason: "must be made of the letters r, w and m".to_owned(),
        });
    }
    Ok(format!(
        "{kind} {}:{} {access}",
        number(rule.major()),
        number(rule.minor())
    ))
}

/// Finds the hierarchy that controls `controller`, preferring a v1 mount over a v2 one.
pub(super) fn find<'a>(
    targets: &[(&'a Hierarchy, &'a Path)],
    controller: &str,
) -> Result<(&'a Hierarchy, &'a Path), Error> {
    let v1 = targets
        .iter()
        .find(|(hierarchy, _)| !hierarchy.unified && hierarchy.has(controller));
    let v2 = targets
        .iter()
        .find(|(hierarchy, _)| hierarchy.unified && hierarchy.has(controller));
    match v1.or(v2) {
        Some((hierarchy, directory)) => Ok((hierarchy, directory)),
        None => Err(Error::Cgroup {
            operation: "find the cgroup controller for",
            path: Path::new(controller).to_path_buf(),
            source: io::Error::new(
                io::ErrorKind::NotFound,
                "controller is not mounted under the cgroup root",
            ),
        }),
    }
}

/// Writes `value` to `file` in `directory`, enabling the v2 controller first.
pub(super) fn write_controller_file(
    hierarchy: &Hierarchy,
    directory: &Path,
    controller: &str,
    file: &str,
    value: &str,
) -> Result<(), Error> {
    if hierarchy.unified {
        enable_controller(&hierarchy.mount_point, directory, controller)?;
    }
    write_file(&directory.join(file), value)
}

/// Writes `value` to `file` as [`write_controller_file`] does, after checking that the
/// kernel provides the file. A file that is missing because the kernel lacks a feature,
/// such as `blkio.weight` without an I/O scheduler that has weights, fails with
/// [`Error::Unsupported`] naming the spec's `field`, and so does a write the kernel
/// rejects with EOPNOTSUPP.
pub(super) fn write_supported_file(
    hierarchy: &Hierarchy,
    directory: &Path,
    controller: &str,
    field: &'static str,
    file: &str,
    value: &str,
) -> Result<(), Error> {
    if hierarchy.unified {
        enable_controller(&hierarchy.mount_point, directory, controller)?;
    }
    let path = directory.join(file);
    if !path.exists() {
        return Err(Error::Unsupported {
            field,
            missing: format!("{} does not exist", path.display()),
        });
    }
    write_file(&path, value).map_err(|error| unsupported_write(field, error))
}

/// Turns a write that the kernel rejected with EOPNOTSUPP into [`Error::Unsupported`]
/// for the spec's `field`. The v2 `io.weight` file does that for a per-device weight
/// when io.cost is not enabled on the device.
fn unsupported_write(field: &'static str, error: Error) -> Error {
    match error {
        Error::CgroupWrite {
            path,
            value,
            source,
        } if source.raw_os_error() == Some(libc::EOPNOTSUPP) => Error::Unsupported {
            field,
            missing: format!(
                "the kernel rejected {value:?} in {} as not supported ({source})",
                path.display()
            ),
        },
        other => other,
    }
}

/// Enables `controller` in `cgroup.subtree_control` of every ancestor of `directory`
/// up to the hierarchy root, so that the container's directory gets the controller's
/// files.
pub(super) fn enable_controller(
    mount_point: &Path,
    directory: &Path,
    controller: &str,
) -> Result<(), Error> {
    let mut ancestors: Vec<&Path> = directory
        .ancestors()
        .skip(1)
        .take_while(|path| path.starts_with(mount_point))
        .collect();
    ancestors.reverse();

    for ancestor in ancestors {
        let control = ancestor.join("cgroup.subtree_control");
        let enabled = fs::read_to_string(&control).map_err(|source| Error::Cgroup {
            operation: "read",
            path: control.clone(),
            source,
        })?;
        if !enabled.split_whitespace().any(|name| name == controller) {
            write_file(&control, &format!("+{controller}"))?;
        }
    }
    Ok(())
}

/// Copies `cpuset.cpus` and `cpuset.mems` from `parent` into a v1 `directory` where they
/// are empty, because the kernel rejects tasks in a cpuset without CPUs or memory nodes.
pub(super) fn inherit_cpuset(parent: &Path, directory: &Path) -> Result<(), Error> {
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let current = directory.join(file);
        let value = fs::read_to_string(&current).map_err(|source| Error::Cgroup {
            operation: "read",
            path: current.clone(),
            source,
        })?;
        if !value.trim().is_empty() {
            continue;
        }
        let inherited_path = parent.join(file);
        let inherited = fs::read_to_string(&inherited_path).map_err(|source| Error::Cgroup {
            operation: "read",
            path: inherited_path,
            source,
        })?;
        write_file(&current, inherited.trim())?;
    }
    Ok(())
}

pub(crate) fn write_file(path: &Path, value: &str) -> Result<(), Error> {
    fs::write(path, value).map_err(|source| Error::CgroupWrite {
        path: path.to_path_buf(),
        value: value.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    #[test]
    fn deny_all_rule_is_formatted() {
        let rule = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .unwrap();
        assert_eq!(device_rule(&rule).unwrap(), "a *:* rwm");
    }

    #[test]
    fn char_device_rule_is_formatted() {
        let rule = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .typ(LinuxDeviceType::C)
            .major(10)
            .minor(200)
            .access("rw")
            .build()
            .unwrap();
        assert_eq!(device_rule(&rule).unwrap(), "c 10:200 rw");
    }

    #[test]
    fn invalid_access_is_rejected() {
        let rule = LinuxDeviceCgroupBuilder::default()
            .access("rwx")
            .build()
            .unwrap();
        let error = device_rule(&rule).unwrap_err();
        assert!(error.is_invalid_input(), "{error}");
    }

    #[test]
    fn write_rejected_as_not_supported_is_unsupported() {
        let rejected = Error::CgroupWrite {
            path: "/sys/fs/cgroup/c1/io.weight".into(),
            value: "254:0 100".to_owned(),
            source: io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        };
        let denied = Error::CgroupWrite {
            path: "/sys/fs/cgroup/c1/io.weight".into(),
            value: "254:0 100".to_owned(),
            source: io::Error::from_raw_os_error(libc::EACCES),
        };

        let error = unsupported_write("linux.resources.blockIO.weightDevice", rejected);
        let other = unsupported_write("linux.resources.blockIO.weightDevice", denied);

        assert!(error.is_unsupported(), "{error}");
        let message = error.to_string();
        assert!(
            message.starts_with("linux.resources.blockIO.weightDevice "),
            "{message}"
        );
        assert!(message.contains("\"254:0 100\""), "{message}");
        assert!(message.contains("/sys/fs/cgroup/c1/io.weight"), "{message}");
        assert!(!other.is_unsupported(), "{other}");
    }
}
