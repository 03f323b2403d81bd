//! `linux.intelRdt`: cache and memory bandwidth allocation through the resctrl
//! filesystem, following the rules of the runtime spec.
//!
//! The container joins a control group of resctrl: the one named by `closID`, or one
//! named after the container that is created for it and removed with it. Schemata go
//! into a group only when it is new, and an existing group must already have them.
//! `enableMonitoring` adds a monitoring group named after the container.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxIntelRdt, Spec};

use crate::error::Error;

const FIELD: &str = "linux.intelRdt";

/// The resctrl groups of one container, removed by [`ResctrlGroup::remove`] where the
/// container owns them.
#[derive(Debug, Default)]
pub struct ResctrlGroup {
    /// Control group created for the container, removed with it.
    created: Option<PathBuf>,
    /// Monitoring group of the container, removed with it.
    monitoring: Option<PathBuf>,
}

impl ResctrlGroup {
    /// Removes the monitoring group and the control group the container owns. The
    /// kernel moves tasks still in a removed group to its parent.
    pub fn remove(&mut self) -> Result<(), Error> {
        for directory in [self.monitoring.take(), self.created.take()]
            .into_iter()
            .flatten()
        {
            match fs::remove_dir(&directory) {
                Ok(()) => {}
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(Error::Resctrl {
                        operation: "remove",
                        path: directory,
                        source,
                    })
                }
            }
        }
        Ok(())
    }
}

/// Fails early when the spec sets `linux.intelRdt` but no resctrl filesystem is
/// mounted, naming what is missing.
pub(crate) fn check_intel_rdt(spec: &Spec) -> Result<(), Error> {
    if intel_rdt(spec).is_none() {
        return Ok(());
    }
    resctrl_root().map(drop)
}

/// Places process `pid` of container `id` in the resctrl groups the spec requests.
/// Returns an empty group when the spec has no `linux.intelRdt`.
pub(crate) fn join(spec: &Spec, id: &str, pid: i32) -> Result<ResctrlGroup, Error> {
    let Some(rdt) = intel_rdt(spec) else {
        return Ok(ResctrlGroup::default());
    };
    join_at(&resctrl_root()?, rdt, id, pid)
}

fn intel_rdt(spec: &Spec) -> Option<&LinuxIntelRdt> {
    spec.linux()
        .as_ref()
        .and_then(|linux| linux.intel_rdt().as_ref())
}

/// Returns where the resctrl filesystem is mounted.
fn resctrl_root() -> Result<PathBuf, Error> {
    // An unreadable mount table reads as no resctrl mount: the field fails either way.
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mount_point(&mountinfo).ok_or_else(|| Error::Unsupported {
        field: FIELD,
        missing: "the resctrl filesystem is not mounted (usually at /sys/fs/resctrl)".to_owned(),
    })
}

/// Finds the first resctrl mount in the text of a `mountinfo` file (see proc(5)).
fn mount_point(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        if after.split(' ').next()? != "resctrl" {
            return None;
        }
        before.split(' ').nth(4).map(PathBuf::from)
    })
}

/// Joins the groups under the resctrl mount `root`; see the module comment.
fn join_at(root: &Path, rdt: &LinuxIntelRdt, id: &str, pid: i32) -> Result<ResctrlGroup, Error> {
    let lines = schema_lines(rdt)?;
    let clos_id = rdt.clos_id().as_deref();
    let directory = group_directory(root, clos_id, id)?;
    let mut group = ResctrlGroup::default();

    let exists = directory.is_dir();
    match (exists, clos_id) {
        (true, Some(_)) => check_schemata(&directory, &lines)?,
        (true, None) => {
            return Err(Error::InvalidSpec(format!(
                "{FIELD}: resctrl group {} for the container already exists",
                directory.display()
            )))
        }
        (false, Some(name)) if lines.is_empty() => {
            return Err(Error::InvalidSpec(format!(
                "{FIELD}.closID {name:?} names no resctrl group under {}, and the spec gives \
                 no schemata to create it with",
                root.display()
            )))
        }
        (false, _) => {
            create_dir(&directory)?;
            // The container owns only a group named after it; one named by closID
            // outlives it, as other containers may share it.
            if clos_id.is_none() {
                group.created = Some(directory.clone());
            }
            if let Err(error) = write_schemata(&directory, &lines) {
                let _ = fs::remove_dir(&directory);
                return Err(error);
            }
        }
    }

    let added = add_task(&directory, pid).and_then(|()| {
        if !monitoring_requested(rdt) {
            return Ok(());
        }
        // The kernel makes `mon_groups` in every control group; creating the parents
        // too lets the same code run on a plain directory in tests.
        let monitoring = directory.join("mon_groups").join(id);
        fs::create_dir_all(&monitoring).map_err(|source| Error::Resctrl {
            operation: "create",
            path: monitoring.clone(),
            source,
        })?;
        group.monitoring = Some(monitoring.clone());
        add_task(&monitoring, pid)
    });
    if let Err(error) = added {
        let _ = group.remove();
        return Err(error);
    }
    Ok(group)
}

/// Reports whether the spec requests a monitoring group: `enableMonitoring`, or
/// `enableCMT` or `enableMBM`, which runtime spec 1.1 to 1.2 had in its place.
#[allow(deprecated)]
fn monitoring_requested(rdt: &LinuxIntelRdt) -> bool {
    [rdt.enable_monitoring(), rdt.enable_cmt(), rdt.enable_mbm()]
        .iter()
        .any(|flag| **flag == Some(true))
}

/// Returns the lines to write to `schemata`, in the order the spec sets: the L3 schema,
/// the memory bandwidth schema, then `schemata`.
fn schema_lines(rdt: &LinuxIntelRdt) -> Result<Vec<String>, Error> {
    let mut lines = Vec::new();
    if let Some(l3) = rdt
        .l3_cache_schema()
        .as_deref()
        .filter(|line| !line.is_empty())
    {
        lines.push(("l3CacheSchema", l3));
    }
    if let Some(bandwidth) = rdt
        .mem_bw_schema()
        .as_deref()
        .filter(|line| !line.is_empty())
    {
        if !bandwidth.starts_with("MB:") {
            return Err(Error::InvalidSpec(format!(
                "{FIELD}.memBwSchema {bandwidth:?} must start with MB:"
            )));
        }
        lines.push(("memBwSchema", bandwidth));
    }
    for line in rdt.schemata().iter().flatten() {
        lines.push(("schemata", line.as_str()));
    }

    for (field, line) in &lines {
        if line.contains('\n') {
            return Err(Error::InvalidSpec(format!(
                "{FIELD}.{field} {line:?} must not contain a newline"
            )));
        }
    }
    Ok(lines.into_iter().map(|(_, line)| line.to_owned()).collect())
}

/// Returns the control group directory: the root for closID `/`, the closID, or the
/// container ID.
fn group_directory(root: &Path, clos_id: Option<&str>, id: &str) -> Result<PathBuf, Error> {
    let name = match clos_id {
        Some("/") => return Ok(root.to_path_buf()),
        Some(name) => name,
        None => id,
    };
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(Error::InvalidSpec(format!(
            "{FIELD}.closID {name:?} is not a resctrl group name: use / or a name without '/'"
        )));
    }
    Ok(root.join(name))
}

/// Checks that every `ID=VALUE` of each requested line is already in the group's
/// `schemata` file, comparing values as hexadecimal or decimal numbers, because the
/// kernel rewrites them (leading zeros, padding).
fn check_schemata(directory: &Path, lines: &[String]) -> Result<(), Error> {
    if lines.is_empty() {
        return Ok(());
    }
    let path = directory.join("schemata");
    let current = fs::read_to_string(&path).map_err(|source| Error::Resctrl {
        operation: "read",
        path: path.clone(),
        source,
    })?;

    for line in lines {
        if !schema_line_present(&current, line) {
            return Err(Error::InvalidSpec(format!(
                "{FIELD}: resctrl group {} exists with other schemata: {line:?} is not in {:?}",
                directory.display(),
                current.trim()
            )));
        }
    }
    Ok(())
}

fn schema_line_present(current: &str, requested: &str) -> bool {
    let Some((resource, entries)) = requested.split_once(':') else {
        return false;
    };
    let Some(existing) = current.lines().find_map(|line| {
        let (name, entries) = line.trim().split_once(':')?;
        (name.trim() == resource.trim()).then_some(entries)
    }) else {
        return false;
    };

    let existing: Vec<(&str, &str)> = existing
        .split(';')
        .filter_map(|entry| entry.trim().split_once('='))
        .collect();
    entries
        .split(';')
        .filter_map(|entry| entry.trim().split_once('='))
        .all(|(domain, value)| {
            existing.iter().any(|(other_domain, other_value)| {
                other_domain.trim() == domain.trim() && same_value(other_value, value)
            })
        })
}

/// Compares two schemata values, which the kernel prints in hexadecimal for cache bit
/// masks and in decimal for bandwidth.
fn same_value(left: &str, right: &str) -> bool {
    let (left, right) = (left.trim(), right.trim());
    if left == right {
        return true;
    }
    match (
        u64::from_str_radix(left, 16),
        u64::from_str_radix(right, 16),
    ) {
        (Ok(left), Ok(right)) => left == right,
        _ => false,
    }
}

/// Writes each line to the group's `schemata` file with its own write, because the
/// kernel parses one write at a time.
fn write_schemata(directory: &Path, lines: &[String]) -> Result<(), Error> {
    let path = directory.join("schemata");
    for line in lines {
        fs::write(&path, format!("{line}\n")).map_err(|source| Error::CgroupWrite {
            path: path.clone(),
            value: line.clone(),
            source,
        })?;
    }
    Ok(())
}

fn add_task(directory: &Path, pid: i32) -> Result<(), Error> {
    let path = directory.join("tasks");
    fs::write(&path, pid.to_string()).map_err(|source| Error::CgroupWrite {
        path,
        value: pid.to_string(),
        source,
    })
}

fn create_dir(directory: &Path) -> Result<(), Error> {
    fs::create_dir(directory).map_err(|source| Error::Resctrl {
        operation: "create",
        path: directory.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxIntelRdtBuilder, SpecBuilder};

    /// Makes a resctrl root in a temporary directory. Kernel files are plain files here,
    /// so a write replaces the file instead of being parsed.
    fn fake_root() -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        fs::write(
            root.path().join("schemata"),
            "    L3:0=fff;1=fff\n    MB:0=100;1=100\n",
        )
        .unwrap();
        fs::write(root.path().join("tasks"), "").unwrap();
        root
    }

    fn rdt(builder: LinuxIntelRdtBuilder) -> LinuxIntelRdt {
        builder.build().unwrap()
    }

    #[test]
    fn container_group_is_created_filled_and_removed() {
        let root = fake_root();
        let spec = rdt(LinuxIntelRdtBuilder::default()
            .l3_cache_schema("L3:0=f0;1=f0")
            .mem_bw_schema("MB:0=50;1=50")
            .enable_monitoring(true));

        let mut group = join_at(root.path(), &spec, "c1", 4242).unwrap();

        let directory = root.path().join("c1");
        // Each line is a write of its own, so the fake file keeps the last one.
        assert_eq!(
            fs::read_to_string(directory.join("schemata")).unwrap(),
            "MB:0=50;1=50\n"
        );
        assert_eq!(fs::read_to_string(directory.join("tasks")).unwrap(), "4242");
        let monitoring = directory.join("mon_groups/c1");
        assert_eq!(
            fs::read_to_string(monitoring.join("tasks")).unwrap(),
            "4242"
        );

        // The fake directories hold files the kernel would not have, so they are
        // emptied before the removal that a real resctrl allows.
        fs::remove_file(monitoring.join("tasks")).unwrap();
        fs::remove_dir(&monitoring).unwrap();
        fs::remove_dir(directory.join("mon_groups")).unwrap();
        fs::remove_file(directory.join("tasks")).unwrap();
        fs::remove_file(directory.join("schemata")).unwrap();
        group.remove().unwrap();
        assert!(!directory.exists());
    }

    #[test]
    fn existing_clos_group_is_compared_not_written() {
        let root = fake_root();
        let shared = root.path().join("shared");
        fs::create_dir(&shared).unwrap();
        fs::write(shared.join("schemata"), "    L3:0=00f0;1=f0\n").unwrap();
        let matching = rdt(LinuxIntelRdtBuilder::default()
            .clos_id("shared")
            .l3_cache_schema("L3:0=f0"));
        let different = rdt(LinuxIntelRdtBuilder::default()
            .clos_id("shared")
            .l3_cache_schema("L3:0=ff"));

        let mut group = join_at(root.path(), &matching, "c1", 7).unwrap();
        let error = join_at(root.path(), &different, "c2", 8).unwrap_err();

        assert_eq!(fs::read_to_string(shared.join("tasks")).unwrap(), "7");
        assert_eq!(
            fs::read_to_string(shared.join("schemata")).unwrap(),
            "    L3:0=00f0;1=f0\n"
        );
        assert!(error.is_invalid_input(), "{error}");
        assert!(error.to_string().contains("L3:0=ff"), "{error}");
        group.remove().unwrap();
        assert!(shared.exists(), "a closID group outlives the container");
    }

    #[test]
    fn missing_clos_group_without_schemata_is_invalid() {
        let root = fake_root();
        let spec = rdt(LinuxIntelRdtBuilder::default().clos_id("absent"));

        let error = join_at(root.path(), &spec, "c1", 7).unwrap_err();

        assert!(error.is_invalid_input(), "{error}");
        assert!(error.to_string().contains("\"absent\""), "{error}");
    }

    #[test]
    fn default_clos_joins_the_root_group() {
        let root = fake_root();
        let spec = rdt(LinuxIntelRdtBuilder::default().clos_id("/"));

        join_at(root.path(), &spec, "c1", 9).unwrap();

        assert_eq!(fs::read_to_string(root.path().join("tasks")).unwrap(), "9");
    }

    #[test]
    fn bad_names_and_lines_are_invalid() {
        let root = fake_root();
        let cases = [
            (LinuxIntelRdtBuilder::default().clos_id("a/b"), "\"a/b\""),
            (LinuxIntelRdtBuilder::default().clos_id(".."), "\"..\""),
            (
                LinuxIntelRdtBuilder::default().mem_bw_schema("L3:0=1"),
                "must start with MB:",
            ),
            (
                LinuxIntelRdtBuilder::default().schemata(vec!["L3:0=f\nMB:0=1".to_owned()]),
                "newline",
            ),
        ];
        for (builder, expected) in cases {
            let error = join_at(root.path(), &rdt(builder), "c1", 7).unwrap_err();

            assert!(error.is_invalid_input(), "{error}");
            assert!(error.to_string().contains(expected), "{error}");
        }
        assert!(
            !root.path().join("c1").exists(),
            "a refused group is not left behind"
        );
    }

    #[test]
    fn spec_without_intel_rdt_needs_no_resctrl() {
        let spec = SpecBuilder::default()
            .linux(LinuxBuilder::default().build().unwrap())
            .build()
            .unwrap();

        check_intel_rdt(&spec).unwrap();
        assert!(join(&spec, "c1", 1).unwrap().created.is_none());
    }

    #[test]
    fn resctrl_mount_is_found_in_mountinfo() {
        let without = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n";
        let with = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                    60 23 0:50 / /sys/fs/resctrl rw,relatime - resctrl resctrl rw\n";

        assert_eq!(mount_point(without), None);
        assert_eq!(mount_point(with), Some(PathBuf::from("/sys/fs/resctrl")));
    }
}
