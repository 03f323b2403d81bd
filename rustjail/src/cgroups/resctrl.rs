//! `linux.intelRdt`: cache and memory bandwidth allocation through the resctrl
//! filesystem.
//!
//! The launcher does not create resctrl groups, so a spec with `linux.intelRdt` fails
//! with [`Error::Unsupported`], which names the missing resctrl mount when there is none.

use std::fs;

use oci_spec::runtime::Spec;

use crate::error::Error;

const FIELD: &str = "linux.intelRdt";

/// Fails when the spec sets `linux.intelRdt`, naming what is missing.
pub(crate) fn check_intel_rdt(spec: &Spec) -> Result<(), Error> {
    let requested = spec
        .linux()
        .as_ref()
        .is_some_and(|linux| linux.intel_rdt().is_some());
    if !requested {
        return Ok(());
    }
    // An unreadable mount table reads as no resctrl mount: the field fails either way.
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    Err(unsupported(&mountinfo))
}

/// Builds the error for a requested `linux.intelRdt`, given the text of a `mountinfo`
/// file (see proc(5)).
fn unsupported(mountinfo: &str) -> Error {
    let mount_point = mountinfo.lines().find_map(|line| {
        let (before, after) = line.split_once(" - ")?;
        if after.split(' ').next()? != "resctrl" {
            return None;
        }
        before.split(' ').nth(4).map(str::to_owned)
    });

    let missing = match mount_point {
        None => "the resctrl filesystem is not mounted (usually at /sys/fs/resctrl)".to_owned(),
        // TODO: create a resctrl group per container, write its schemata and add the
        // init's pid to its tasks, so that this case applies the settings.
        Some(mount_point) => format!(
            "resctrl is mounted at {mount_point}, but this launcher does not create \
             resctrl groups"
        ),
    };
    Error::Unsupported {
        field: FIELD,
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, LinuxIntelRdtBuilder, SpecBuilder};

    #[test]
    fn spec_without_intel_rdt_passes() {
        let spec = SpecBuilder::default()
            .linux(LinuxBuilder::default().build().unwrap())
            .build()
            .unwrap();

        check_intel_rdt(&spec).unwrap();
    }

    #[test]
    fn intel_rdt_is_unsupported() {
        let rdt = LinuxIntelRdtBuilder::default()
            .l3_cache_schema("L3:0=ff")
            .build()
            .unwrap();
        let spec = SpecBuilder::default()
            .linux(LinuxBuilder::default().intel_rdt(rdt).build().unwrap())
            .build()
            .unwrap();

        let error = check_intel_rdt(&spec).unwrap_err();

        assert!(error.is_unsupported(), "{error}");
        assert!(error.to_string().contains("linux.intelRdt"), "{error}");
    }

    #[test]
    fn message_names_missing_or_present_mount() {
        let without = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n";
        let with = "31 23 0:28 / /sys/fs/cgroup rw - tmpfs tmpfs rw\n\
                    60 23 0:50 / /sys/fs/resctrl rw,relatime - resctrl resctrl rw\n";

        let missing = unsupported(without).to_string();
        let present = unsupported(with).to_string();

        assert!(
            missing.contains("resctrl filesystem is not mounted"),
            "{missing}"
        );
        assert!(present.contains("mounted at /sys/fs/resctrl"), "{present}");
        assert!(
            present.contains("does not create resctrl groups"),
            "{present}"
        );
    }
}
