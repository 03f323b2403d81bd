//! Errors of the launcher. Each variant names the step, the value it acted on and the
//! underlying cause, so a message reads like `mount proc on /proc: permission denied`.

use std::path::PathBuf;

/// A failure while creating, starting or destroying a container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid container spec: {0}")]
    InvalidSpec(String),

    #[error("rootfs {path} is missing or not a directory")]
    RootfsMissing { path: PathBuf },

    #[error(
        "executable {name:?} not found {} of container {container}",
        searched_in(name)
    )]
    ExecutableNotFound { container: String, name: String },

    #[error("container {0} was already started")]
    AlreadyStarted(String),

    #[error("container {0} is not running")]
    NotRunning(String),

    #[error("make a sealed copy of init program {}: {source}", .program.display())]
    SealProgram {
        program: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("prepare {resource} for container {container}: {source}")]
    Prepare {
        container: String,
        resource: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("clone init process {program} for container {container}: {source}")]
    Clone {
        container: String,
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{operation} {path}: {source}")]
    Cgroup {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("write {value:?} to {path}: {source}")]
    CgroupWrite {
        path: PathBuf,
        value: String,
        #[source]
        source: std::io::Error,
    },

    /// The cgroup v2 device filter could not be loaded or attached, for example because
    /// the kernel lacks `BPF_PROG_TYPE_CGROUP_DEVICE`.
    #[error("{operation} {path}: {source}")]
    DeviceFilter {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("invalid cgroup value {value:?} for {key}: {reason}")]
    CgroupValue {
        key: &'static str,
        value: String,
        reason: String,
    },

    /// The spec sets a field that needs a controller, a cgroup file or a filesystem this
    /// machine lacks, such as `network.classID` without a mounted net_cls controller.
    #[error("{field} is not supported on this machine: {missing}")]
    Unsupported {
        field: &'static str,
        missing: String,
    },

    /// A key of `linux.resources.unified` that names no file in the container's cgroup2
    /// directory.
    #[error("invalid linux.resources.unified key {key:?}: {reason}")]
    UnifiedKey { key: String, reason: String },

    #[error("{operation} sync socket of container {container}: {source}")]
    Sync {
        container: String,
        operation: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("write user namespace map \"{map}\" to {path} for container {container}: {source}")]
    IdMap {
        container: String,
        path: PathBuf,
        map: String,
        #[source]
        source: std::io::Error,
    },

    /// An ID-mapped bind mount (`mounts[].uidMappings`) that the caller could not prepare.
    /// `mount` reads "DESTINATION from SOURCE", one string to keep this enum small.
    #[error("prepare ID-mapped mount {mount} for container {container}: {step}: {source}")]
    IdMappedMount {
        container: String,
        mount: String,
        step: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{operation} resctrl group {path}: {source}")]
    Resctrl {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("move network device {device} into container {container}: {step}: {source}")]
    NetDevice {
        container: String,
        device: String,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// The notify fd of a `SCMP_ACT_NOTIFY` filter could not be sent to
    /// `linux.seccomp.listenerPath`. The process may run already: destroy the container.
    #[error(
        "send seccomp notify fd of container {container} to listener {}: {source}",
        .path.display()
    )]
    SeccompListener {
        container: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("init of container {container} failed: {message}")]
    Init { container: String, message: String },

    #[error("init of container {container} did not {step} within {seconds} s")]
    Timeout {
        container: String,
        step: &'static str,
        seconds: u64,
    },

    #[error("kill init {pid} of container {container}: {source}")]
    Kill {
        container: String,
        pid: i32,
        #[source]
        source: nix::Error,
    },

    #[error("container {container}: {source}")]
    Hook {
        container: String,
        #[source]
        source: crate::hooks::HookError,
    },

    #[error("{operation} terminal {fd}: {source}")]
    Terminal {
        operation: &'static str,
        fd: i32,
        #[source]
        source: std::io::Error,
    },

    #[error("wait for process {pid}: {source}")]
    Wait {
        pid: i32,
        #[source]
        source: nix::Error,
    },
}

impl Error {
    /// Reports whether the error comes from the caller's input (a bad spec value, a missing
    /// rootfs or executable) rather than from the system, so the agent can map it to
    /// INVALID_ARGUMENT.
    pub fn is_invalid_input(&self) -> bool {
        matches!(
            self,
            Error::InvalidSpec(_)
                | Error::RootfsMissing { .. }
                | Error::ExecutableNotFound { .. }
                | Error::CgroupValue { .. }
                | Error::UnifiedKey { .. }
        ) || matches!(
            self,
            Error::NetDevice { source, .. }
                if matches!(source.raw_os_error(), Some(libc::ENODEV) | Some(libc::EEXIST))
        )
    }

    /// Reports whether the error comes from a machine that lacks a feature the spec
    /// needs, such as device filter programs on cgroup v2 or an unmounted controller, so
    /// the agent can map it to UNIMPLEMENTED.
    pub fn is_unsupported(&self) -> bool {
        match self {
            Error::Unsupported { .. } => true,
            Error::DeviceFilter { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::ENOSYS) | Some(libc::EINVAL) | Some(libc::EOPNOTSUPP)
            ),
            // A cgroup file that exists but refuses a setting the kernel does not
            // support here, such as a per-device io.weight without io.cost.
            Error::CgroupWrite { source, .. } => source.raw_os_error() == Some(libc::EOPNOTSUPP),
            _ => false,
        }
    }
}

/// Returns where an executable was looked for. A name with a slash is a path in the
/// rootfs, and any other name is searched in the container's `PATH`.
pub(crate) fn searched_in(name: &str) -> &'static str {
    if name.contains('/') {
        "in the rootfs"
    } else {
        "in $PATH"
    }
}
