//! Errors of the agent's requests and the one map from them to ttRPC status codes.
//!
//! Every RPC returns [`AgentError`] internally, and [`AgentError::to_ttrpc`] is the
//! only place that picks a status code. The message sent is the error's Display
//! text, which names the operation, the value and the cause, never its Debug text.

use std::time::Duration;

use ttrpc::Code;

/// A failed agent request.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("invalid container id {id:?}: {reason}")]
    InvalidContainerId { id: String, reason: &'static str },

    #[error("create container {container}: request has no OCI spec")]
    MissingSpec { container: String },

    #[error("create container {container}: OCI spec has no process")]
    MissingProcess { container: String },

    #[error("create container {container}: invalid OCI spec: {reason}")]
    InvalidSpec { container: String, reason: String },

    #[error("create container {container}: root file system {path} does not exist")]
    RootfsNotFound { container: String, path: String },

    #[error("container {id} already exists")]
    ContainerExists { id: String },

    #[error("container {id} not found")]
    ContainerNotFound { id: String },

    #[error("exec {exec:?} of container {container} not found")]
    ExecNotFound { container: String, exec: String },

    #[error("exec {exec:?} of container {container} already exists")]
    ExecExists { container: String, exec: String },

    #[error("invalid exec id {exec:?} for container {container}: {reason}")]
    InvalidExecId {
        container: String,
        exec: String,
        reason: &'static str,
    },

    #[error("exec {exec:?} in container {container}: request has no process")]
    MissingExecProcess { container: String, exec: String },

    #[error("exec {exec:?} in container {container}: invalid process: {reason}")]
    InvalidProcess {
        container: String,
        exec: String,
        reason: String,
    },

    #[error("container {id} is {state}, expected running")]
    NotRunning { id: String, state: &'static str },

    #[error("exec {exec:?} in container {container}: {source}")]
    Exec {
        container: String,
        exec: String,
        #[source]
        source: Box<rustjail::Error>,
    },

    #[error("exec {exec:?} in container {container}: prepare {stream}: {source}")]
    ExecStream {
        container: String,
        exec: String,
        stream: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("update container {container}: invalid resources: {reason}")]
    InvalidResources { container: String, reason: String },

    #[error("{operation} container {container}: {source}")]
    Control {
        operation: &'static str,
        container: String,
        #[source]
        source: Box<rustjail::Error>,
    },

    #[error("invalid window size {rows}x{columns} for container {container}: {reason}")]
    InvalidWindowSize {
        container: String,
        rows: u32,
        columns: u32,
        reason: &'static str,
    },

    #[error("process {exec:?} of container {container} has no terminal")]
    NoTerminal { container: String, exec: String },

    #[error("resize terminal of process {exec:?} of container {container}: {source}")]
    Resize {
        container: String,
        exec: String,
        #[source]
        source: Box<rustjail::Error>,
    },

    #[error("list processes of container {container}: invalid format {format:?}, expected \"table\" or \"json\"")]
    InvalidProcessListFormat { container: String, format: String },

    #[error("list processes of container {container}: {reason}")]
    ProcessList { container: String, reason: String },

    #[error("list processes of container {container}: read {path}: {source}")]
    CgroupProcs {
        container: String,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("sandbox {id:?} already exists")]
    SandboxExists { id: String },

    #[error("create sandbox {id:?}: {count} containers already run in the implicit sandbox")]
    SandboxHasContainers { id: String, count: usize },

    #[error("container {id} is {state}, expected created")]
    NotCreated { id: String, state: &'static str },

    #[error("container {id} has no {stream}")]
    NoStream { id: String, stream: &'static str },

    #[error("invalid signal {signal} for container {container}: expected 0 to 64")]
    InvalidSignal { container: String, signal: u32 },

    #[error("{}", .0)]
    Pipeline(Box<stages::PipelineError>),

    #[error("tear down container {container}: {source}")]
    Undo {
        container: String,
        #[source]
        source: stages::UndoErrors,
    },

    #[error("tear down sandbox {id:?}: {source}")]
    SandboxUndo {
        id: String,
        #[source]
        source: stages::UndoErrors,
    },

    #[error("start container {container}: {source}")]
    Start {
        container: String,
        #[source]
        source: rustjail::Error,
    },

    #[error("signal {signal} container {container} pid {pid}: {source}")]
    Signal {
        container: String,
        pid: i32,
        signal: u32,
        #[source]
        source: std::io::Error,
    },

    #[error("remove container {container}: init did not exit within {}s of SIGKILL", .timeout.as_secs())]
    RemoveTimeout {
        container: String,
        timeout: Duration,
    },

    #[error("{operation} {stream} of container {container}: {source}")]
    Stream {
        operation: &'static str,
        container: String,
        stream: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("{operation}: agent task failed: {reason}")]
    Task {
        operation: &'static str,
        reason: String,
    },

    #[error("{method} is not implemented")]
    Unimplemented { method: &'static str },
}

impl From<stages::PipelineError> for AgentError {
    fn from(error: stages::PipelineError) -> Self {
        AgentError::Pipeline(Box::new(error))
    }
}

impl AgentError {
    /// Returns the ttRPC status code of this error.
    pub fn code(&self) -> Code {
        match self {
            AgentError::InvalidContainerId { .. }
            | AgentError::MissingSpec { .. }
            | AgentError::MissingProcess { .. }
            | AgentError::InvalidSpec { .. }
            | AgentError::RootfsNotFound { .. }
            | AgentError::InvalidSignal { .. }
            | AgentError::InvalidExecId { .. }
            | AgentError::MissingExecProcess { .. }
            | AgentError::InvalidProcess { .. }
            | AgentError::InvalidResources { .. }
            | AgentError::InvalidWindowSize { .. }
            | AgentError::InvalidProcessListFormat { .. } => Code::INVALID_ARGUMENT,

            AgentError::ContainerExists { .. }
            | AgentError::SandboxExists { .. }
            | AgentError::ExecExists { .. } => Code::ALREADY_EXISTS,

            AgentError::ContainerNotFound { .. } | AgentError::ExecNotFound { .. } => {
                Code::NOT_FOUND
            }

            AgentError::NotCreated { .. }
            | AgentError::NotRunning { .. }
            | AgentError::NoTerminal { .. }
            | AgentError::NoStream { .. }
            | AgentError::SandboxHasContainers { .. } => Code::FAILED_PRECONDITION,

            AgentError::RemoveTimeout { .. } => Code::DEADLINE_EXCEEDED,

            AgentError::Unimplemented { .. } => Code::UNIMPLEMENTED,

            AgentError::Pipeline(error) => stage_code(error.code()),

            AgentError::Start { source, .. } if source.is_invalid_input() => Code::INVALID_ARGUMENT,
            AgentError::Exec { source, .. } | AgentError::Control { source, .. }
                if source.is_invalid_input() =>
            {
                Code::INVALID_ARGUMENT
            }
            AgentError::Start { source, .. } if source.is_unsupported() => Code::UNIMPLEMENTED,
            AgentError::Exec { source, .. } | AgentError::Control { source, .. }
                if source.is_unsupported() =>
            {
                Code::UNIMPLEMENTED
            }

            AgentError::Start { .. }
            | AgentError::Exec { .. }
            | AgentError::ExecStream { .. }
            | AgentError::Control { .. }
            | AgentError::Resize { .. }
            | AgentError::ProcessList { .. }
            | AgentError::CgroupProcs { .. }
            | AgentError::Undo { .. }
            | AgentError::SandboxUndo { .. }
            | AgentError::Signal { .. }
            | AgentError::Stream { .. }
            | AgentError::Task { .. } => Code::INTERNAL,
        }
    }

    /// Builds the ttRPC error sent to the client.
    pub fn to_ttrpc(&self) -> ttrpc::Error {
        ttrpc::Error::RpcStatus(ttrpc::get_status(self.code(), self.to_string()))
    }
}

/// Maps the stages' status classes to ttRPC codes of the same name.
fn stage_code(code: stages::ErrorCode) -> Code {
    match code {
        stages::ErrorCode::InvalidArgument => Code::INVALID_ARGUMENT,
        stages::ErrorCode::NotFound => Code::NOT_FOUND,
        stages::ErrorCode::AlreadyExists => Code::ALREADY_EXISTS,
        stages::ErrorCode::FailedPrecondition => Code::FAILED_PRECONDITION,
        stages::ErrorCode::DeadlineExceeded => Code::DEADLINE_EXCEEDED,
        stages::ErrorCode::Unimplemented => Code::UNIMPLEMENTED,
        stages::ErrorCode::Internal => Code::INTERNAL,
    }
}

/// Checks a container id: 1 to 256 bytes of `[A-Za-z0-9._-]`, and neither `.` nor `..`.
///
/// The id becomes a directory name under the run directory and the cgroup root, so
/// anything that could leave those directories is rejected.
pub fn validate_container_id(id: &str) -> Result<(), AgentError> {
    let invalid = |reason| {
        Err(AgentError::InvalidContainerId {
            id: id.to_string(),
            reason,
        })
    };

    if id.is_empty() {
        return invalid("must not be empty");
    }

    if id.len() > 256 {
        return invalid("longer than 256 bytes");
    }

    if id == "." || id.contains("..") {
        return invalid("must not contain \"..\" or be \".\"");
    }

    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if !id.chars().all(allowed) {
        return invalid("may contain only letters, digits, '.', '_' and '-'");
    }

    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_id_rules() {
        let long = "a".repeat(257);
        let max = "a".repeat(256);

        for bad in [
            "",
            ".",
            "..",
            "a/b",
            "../x",
            "a..b",
            "a b",
            "a\0b",
            "é",
            long.as_str(),
        ] {
            let error = validate_container_id(bad).expect_err(bad);
            assert_eq!(error.code(), Code::INVALID_ARGUMENT, "{bad:?}");
        }

        for good in ["a", "A-1_b.c", "0123456789abcdef", max.as_str()] {
            assert!(validate_container_id(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn message_names_value() {
        let error = validate_container_id("a/b").expect_err("slash rejected");

        assert!(error.to_string().contains("\"a/b\""), "{error}");
    }

    #[test]
    fn unsupported_launcher_error_is_unimplemented() {
        let unsupported = || rustjail::Error::Unsupported {
            field: "linux.resources.network.classID",
            missing: "the net_cls controller is not mounted".to_owned(),
        };
        let start = AgentError::Start {
            container: "c1".to_owned(),
            source: unsupported(),
        };
        let control = AgentError::Control {
            operation: "update",
            container: "c1".to_owned(),
            source: Box::new(unsupported()),
        };

        assert_eq!(start.code(), Code::UNIMPLEMENTED);
        assert_eq!(control.code(), Code::UNIMPLEMENTED);
    }

    #[test]
    fn unimplemented_names_method() {
        let error = AgentError::Unimplemented {
            method: "ExecProcess",
        };

        let ttrpc::Error::RpcStatus(status) = error.to_ttrpc() else {
            panic!("expected an RPC status");
        };
        assert_eq!(status.code(), Code::UNIMPLEMENTED);
        assert_eq!(status.message(), "ExecProcess is not implemented");
    }
}
