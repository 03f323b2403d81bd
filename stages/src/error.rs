//! Errors of the stages and the status code each one maps to.

use std::path::PathBuf;

/// The status class of a [`StageError`]. The agent maps each to the ttRPC code of the
/// same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidArgument,
    NotFound,
    AlreadyExists,
    FailedPrecondition,
    DeadlineExceeded,
    Unimplemented,
    Internal,
}

/// A failure of one stage or of one undo. Each variant names the operation and the value
/// it acted on, so the message reads like `mount tmpfs on /run/x: no such device`.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// A request value that the stage cannot accept.
    #[error("invalid {kind} {value:?}: {reason}")]
    InvalidArgument {
        kind: &'static str,
        value: String,
        reason: String,
    },

    /// A request that names something this agent does not implement yet.
    #[error("{kind} {value:?} is not supported yet: {reason}")]
    Unimplemented {
        kind: &'static str,
        value: String,
        reason: String,
    },

    /// A path the stage must create already exists.
    #[error("{kind} {path} already exists")]
    AlreadyExists { kind: &'static str, path: PathBuf },

    /// A file operation failed.
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A mount(2) call failed.
    #[error("mount {source_name} on {target}: {source}")]
    Mount {
        source_name: String,
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An umount(2) call failed.
    #[error("unmount {target}: {source}")]
    Unmount {
        target: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A system call that acts on no path failed.
    #[error("{operation} {value:?}: {source}")]
    System {
        operation: &'static str,
        value: String,
        #[source]
        source: nix::Error,
    },

    /// The container launcher failed.
    #[error("create container {container}: {source}")]
    Container {
        container: String,
        /// Boxed, because the launcher's errors are large and every stage result
        /// carries this enum.
        #[source]
        source: Box<rustjail::Error>,
    },

    /// A device or file the stage waits for did not appear in time.
    #[error("timed out after {timeout:?} waiting for {what}")]
    Timeout {
        what: String,
        timeout: std::time::Duration,
    },

    /// Several steps of one undo failed.
    #[error("{}", join_errors(.0))]
    Several(Vec<StageError>),

    /// The container launcher failed while destroying a container.
    #[error("destroy container {container}: {source}")]
    Destroy {
        container: String,
        /// Boxed for the same reason as in `Container`.
        #[source]
        source: Box<rustjail::Error>,
    },
}

impl StageError {
    /// Returns the status class of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            StageError::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            StageError::Unimplemented { .. } => ErrorCode::Unimplemented,
            StageError::AlreadyExists { .. } => ErrorCode::AlreadyExists,
            StageError::Timeout { .. } => ErrorCode::DeadlineExceeded,
            StageError::Container { source, .. } if source.is_invalid_input() => {
                ErrorCode::InvalidArgument
            }
            StageError::Container { source, .. } if source.is_unsupported() => {
                ErrorCode::Unimplemented
            }
            StageError::Io { .. }
            | StageError::Mount { .. }
            | StageError::Unmount { .. }
            | StageError::System { .. }
            | StageError::Container { .. }
            | StageError::Destroy { .. }
            | StageError::Several(_) => ErrorCode::Internal,
        }
    }

    /// Builds a [`StageError::InvalidArgument`].
    pub(crate) fn invalid(
        kind: &'static str,
        value: impl Into<String>,
        reason: impl Into<String>,
    ) -> Self {
        StageError::InvalidArgument {
            kind,
            value: value.into(),
            reason: reason.into(),
        }
    }

    /// Builds a [`StageError::Io`].
    pub(crate) fn io(
        operation: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        StageError::Io {
            operation,
            path: path.into(),
            source,
        }
    }
}

/// Joins the messages of several errors with "; ".
fn join_errors(errors: &[StageError]) -> String {
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    messages.join("; ")
}

/// Folds the errors of a multi-step undo into one result.
pub(crate) fn collect_undo_errors(mut errors: Vec<StageError>) -> Result<(), StageError> {
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(StageError::Several(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn launcher_input_errors_are_invalid_argument() {
        let error = StageError::Container {
            container: "c1".to_string(),
            source: Box::new(rustjail::Error::InvalidSpec(
                "process.args is empty".to_string(),
            )),
        };

        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        assert_eq!(
            error.to_string(),
            "create container c1: invalid container spec: process.args is empty"
        );
    }

    #[test]
    fn launcher_system_errors_are_internal() {
        let error = StageError::Container {
            container: "c1".to_string(),
            source: Box::new(rustjail::Error::NotRunning("c1".to_string())),
        };

        assert_eq!(error.code(), ErrorCode::Internal);
    }

    #[test]
    fn several_undo_errors_joined() {
        let first = StageError::invalid("sysctl", "net.a", "first");
        let second = StageError::invalid("sysctl", "net.b", "second");

        let error = collect_undo_errors(vec![first, second]).expect_err("two failures");

        assert_eq!(
            error.to_string(),
            "invalid sysctl \"net.a\": first; invalid sysctl \"net.b\": second"
        );
        assert!(collect_undo_errors(Vec::new()).is_ok());
    }
}
