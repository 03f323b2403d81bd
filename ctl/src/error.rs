//! Errors of the `berth` client. Each variant names the operation and the value it
//! failed on, so `main` can print the chain as one line and exit with status 1.

use std::io;
use std::path::PathBuf;

/// Everything that can make a `berth` command fail before a container has run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no agent address: pass --address or set BERTH_ADDRESS")]
    MissingAddress,

    #[error(transparent)]
    InvalidAddress(#[from] protocols::AddressError),

    #[error("failed to connect to {address}: {reason}")]
    Connect { address: String, reason: String },

    #[error("connecting to {address} timed out after {timeout_secs}s")]
    ConnectTimeout { address: String, timeout_secs: u64 },

    #[error("{rpc} failed: {}", describe_rpc_error(source))]
    Rpc {
        rpc: &'static str,
        source: ttrpc::Error,
    },

    #[error("failed to read bundle config {path}: {source}")]
    ReadConfig { path: PathBuf, source: io::Error },

    #[error("invalid bundle config {path}: {source}")]
    ParseConfig {
        path: PathBuf,
        source: serde_json::Error,
    },

    #[error("bundle config {path} has no process section, so there is nothing to run")]
    MissingProcess { path: PathBuf },

    #[error("root filesystem {path} not usable: {source}")]
    Rootfs { path: PathBuf, source: io::Error },

    #[error("invalid signal {value:?}: expected a number from 1 to 64 or a name such as TERM or SIGKILL")]
    InvalidSignal { value: String },

    #[error("failed to install the handler for {signal}: {source}")]
    SignalHandler {
        signal: &'static str,
        source: io::Error,
    },

    #[error("failed to write the container's {stream} to berth's {stream}: {source}")]
    WriteOutput {
        stream: &'static str,
        source: io::Error,
    },

    #[error("failed to read berth's stdin: {source}")]
    ReadStdin { source: io::Error },

    #[error("WriteStdin to container {container_id} wrote {written} of {offered} bytes")]
    StdinRejected {
        container_id: String,
        offered: usize,
        written: usize,
    },

    #[error("invalid user {value:?}: expected UID or UID:GID as numbers")]
    InvalidUser { value: String },

    #[error("invalid {option} {value}: expected a positive number")]
    InvalidLimit { option: &'static str, value: String },

    #[error("-t needs stdin to be a terminal")]
    NotATerminal,

    #[error("failed to {operation} the terminal: {source}")]
    Terminal {
        operation: &'static str,
        source: io::Error,
    },

    #[error("failed to start the async runtime: {source}")]
    Runtime { source: io::Error },
}

/// Formats an RPC failure as `CODE: message` when the agent returned a ttRPC status,
/// and as the transport error otherwise (connection lost, deadline passed).
pub fn describe_rpc_error(error: &ttrpc::Error) -> String {
    match error {
        ttrpc::Error::RpcStatus(status) => {
            format!("{:?}: {}", status.code(), status.message())
        }
        other => other.to_string(),
    }
}

/// Returns the ttRPC status code of an RPC failure, or `None` for transport errors.
pub fn rpc_code(error: &ttrpc::Error) -> Option<ttrpc::Code> {
    match error {
        ttrpc::Error::RpcStatus(status) => Some(status.code()),
        _ => None,
    }
}

pub type Result<T> = std::result::Result<T, Error>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rpc_error_shows_code_and_message() {
        let status = ttrpc::get_status(
            ttrpc::Code::INVALID_ARGUMENT,
            "container id \"a/b\" is invalid",
        );
        let error = Error::Rpc {
            rpc: "CreateContainer",
            source: ttrpc::Error::RpcStatus(status),
        };

        assert_eq!(
            error.to_string(),
            "CreateContainer failed: INVALID_ARGUMENT: container id \"a/b\" is invalid"
        );
    }

    #[test]
    fn rpc_error_shows_transport_failure() {
        let error = Error::Rpc {
            rpc: "WaitProcess",
            source: ttrpc::Error::RemoteClosed,
        };

        assert!(error.to_string().starts_with("WaitProcess failed: "));
        assert!(error.to_string().contains("remote stream closed"));
    }

    #[test]
    fn rpc_code_only_for_status() {
        let status = ttrpc::get_status(ttrpc::Code::ALREADY_EXISTS, "sandbox exists");

        assert_eq!(
            rpc_code(&ttrpc::Error::RpcStatus(status)),
            Some(ttrpc::Code::ALREADY_EXISTS)
        );
        assert_eq!(rpc_code(&ttrpc::Error::Eof), None);
    }
}
