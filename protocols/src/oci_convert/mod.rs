// SPDX-License-Identifier: Apache-2.0

//! Conversion between the protobuf `oci::Spec` that the shim sends and
//! `oci_spec::runtime::Spec`, which the rest of Berth works with.
//!
//! Proto3 scalars carry no presence, so the mapping treats a field's default
//! value as "absent". Default values are 0, `""`, `false`, an empty list or
//! map, and an unset or all-default message. Such a value becomes `None`
//! where oci-spec has an `Option`, and `None` becomes the default value on
//! the way back. A spec whose optional fields are either `None` or
//! non-default therefore survives both round trips unchanged.
//!
//! Two exceptions: a device cgroup major or minor of 0 or less is the
//! wildcard `None`, and an empty name where oci-spec requires an enum value
//! (namespace type, seccomp action) is a [`ConvertError::Missing`].
//!
//! Fields of oci-spec 0.10 that the Kata protobuf has no place for are
//! dropped by [`spec_from_oci`] and are `None` after [`spec_to_oci`]:
//! `domainname`, `vm`, `zos`, `process.commandLine`, `process.ioPriority`,
//! `process.scheduler`, `process.execCPUAffinity`, `process.user.umask`,
//! mount ID mappings, `linux.netDevices`, `linux.memoryPolicy`,
//! `linux.personality`, `linux.timeOffsets`, `resources.rdma`,
//! `resources.unified`, `memory.useHierarchy`, `memory.checkBeforeUpdate`,
//! `cpu.idle`, `cpu.burst`, seccomp `defaultErrnoRet`, `listenerPath` and
//! `listenerMetadata`, and every Intel RDT field but `l3CacheSchema`.
//! Solaris and Windows sections are ignored in both directions.

mod from_oci;
mod to_oci;

pub use from_oci::spec_from_oci;
pub use to_oci::spec_to_oci;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Failure to convert a protobuf spec into an oci-spec one. `field` is the
/// path of the field in OCI `config.json` terms, such as
/// `linux.namespaces[2].type`.
#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("invalid {field} {value:?}: unknown {kind}")]
    UnknownName {
        field: String,
        value: String,
        kind: &'static str,
    },

    #[error("invalid {field}: {value} does not fit in {target}")]
    OutOfRange {
        field: String,
        value: String,
        target: &'static str,
    },

    #[error("missing {field}: it is required when its parent is set")]
    Missing { field: String },

    #[error("building {field} failed")]
    Build {
        field: String,
        #[source]
        source: oci_spec::OciSpecError,
    },
}

/// Parses an OCI enum from the name `config.json` uses for it (such as
/// `RLIMIT_NOFILE` or `SCMP_ACT_ERRNO`), through oci-spec's serde names.
fn parse_name<T: DeserializeOwned>(
    field: impl FnOnce() -> String,
    value: &str,
    kind: &'static str,
) -> Result<T, ConvertError> {
    if value.is_empty() {
        return Err(ConvertError::Missing { field: field() });
    }

    serde_json::from_value(serde_json::Value::String(value.to_string())).map_err(|_| {
        ConvertError::UnknownName {
            field: field(),
            value: value.to_string(),
            kind,
        }
    })
}

/// Returns the `config.json` name of an OCI enum value.
fn name_of<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => name,
        // oci-spec serialises every enum used here as a plain string, so
        // this arm only guards against a future oci-spec change.
        Ok(other) => other.to_string(),
        Err(error) => format!("<unserialisable: {error}>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oci;

    #[test]
    fn unknown_namespace_type_named_in_error() {
        let mut namespace = oci::LinuxNamespace::new();
        namespace.Type = "foo".to_string();
        let mut linux = oci::Linux::new();
        linux.Namespaces.push(namespace);
        let mut spec = oci::Spec::new();
        spec.Linux = Some(linux).into();

        let error = spec_to_oci(&spec).unwrap_err();

        assert!(
            matches!(error, ConvertError::UnknownName { ref field, ref value, kind: "namespace type" }
                if field == "linux.namespaces[0].type" && value == "foo"),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "invalid linux.namespaces[0].type \"foo\": unknown namespace type"
        );
    }

    #[test]
    fn unknown_capability_rejected() {
        let mut capabilities = oci::LinuxCapabilities::new();
        capabilities.Bounding = vec!["CAP_CHOWN".to_string(), "CAP_FLY".to_string()];
        let mut process = oci::Process::new();
        process.Capabilities = Some(capabilities).into();
        let mut spec = oci::Spec::new();
        spec.Process = Some(process).into();

        let error = spec_to_oci(&spec).unwrap_err();

        assert!(
            matches!(error, ConvertError::UnknownName { ref field, ref value, .. }
                if field == "process.capabilities.bounding[1]" && value == "CAP_FLY"),
            "{error}"
        );
    }

    #[test]
    fn oom_score_adj_out_of_range() {
        let mut process = oci::Process::new();
        process.OOMScoreAdj = i64::from(i32::MAX) + 1;
        let mut spec = oci::Spec::new();
        spec.Process = Some(process).into();

        let error = spec_to_oci(&spec).unwrap_err();

        assert!(
            matches!(error, ConvertError::OutOfRange { ref field, .. } if field == "process.oomScoreAdj"),
            "{error}"
        );
    }

    #[test]
    fn block_io_weight_out_of_range() {
        let mut block_io = oci::LinuxBlockIO::new();
        block_io.Weight = 70_000;
        let mut resources = oci::LinuxResources::new();
        resources.BlockIO = Some(block_io).into();
        let mut linux = oci::Linux::new();
        linux.Resources = Some(resources).into();
        let mut spec = oci::Spec::new();
        spec.Linux = Some(linux).into();

        let error = spec_to_oci(&spec).unwrap_err();

        assert!(
            matches!(error, ConvertError::OutOfRange { ref field, ref value, target: "u16" }
                if field == "linux.resources.blockIO.weight" && value == "70000"),
            "{error}"
        );
    }

    #[test]
    fn seccomp_without_default_action_rejected() {
        let mut seccomp = oci::LinuxSeccomp::new();
        seccomp.Architectures = vec!["SCMP_ARCH_X86_64".to_string()];
        let mut linux = oci::Linux::new();
        linux.Seccomp = Some(seccomp).into();
        let mut spec = oci::Spec::new();
        spec.Linux = Some(linux).into();

        let error = spec_to_oci(&spec).unwrap_err();

        assert!(
            matches!(error, ConvertError::Missing { ref field } if field == "linux.seccomp.defaultAction"),
            "{error:?}"
        );
    }

    #[test]
    fn empty_messages_become_none() {
        let mut spec = oci::Spec::new();
        spec.Process = Some(oci::Process::new()).into();
        spec.Root = Some(oci::Root::new()).into();
        spec.Hooks = Some(oci::Hooks::new()).into();
        spec.Linux = Some(oci::Linux::new()).into();

        let converted = spec_to_oci(&spec).unwrap();

        assert_eq!(converted.process(), &None);
        assert_eq!(converted.root(), &None);
        assert_eq!(converted.hooks(), &None);
        assert_eq!(converted.linux(), &None);
        assert_eq!(converted.mounts(), &None);
        assert_eq!(converted.annotations(), &None);
    }

    #[test]
    fn device_cgroup_zero_numbers_are_wildcards() {
        let mut rule = oci::LinuxDeviceCgroup::new();
        rule.Allow = true;
        rule.Type = "c".to_string();
        rule.Major = 136;
        rule.Access = "rwm".to_string();
        let mut resources = oci::LinuxResources::new();
        resources.Devices.push(rule);
        let mut linux = oci::Linux::new();
        linux.Resources = Some(resources).into();
        let mut spec = oci::Spec::new();
        spec.Linux = Some(linux).into();

        let converted = spec_to_oci(&spec).unwrap();

        let rules = converted
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap()
            .devices()
            .clone()
            .unwrap();
        assert_eq!(rules[0].major(), Some(136));
        assert_eq!(rules[0].minor(), None);
        assert_eq!(rules[0].to_string(), "c 136:* rwm");
    }
}
