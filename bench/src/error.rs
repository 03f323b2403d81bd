//! Errors that stop the benchmark. Each variant names the step that failed and the
//! value it failed on, so the message alone shows where to look.

use std::path::PathBuf;
use std::process::ExitStatus;

pub type Result<T, E = BenchError> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("parse the runtime spec {path}: {source}")]
    ParseSpec {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    #[error("the runtime spec {path} has no process section")]
    MissingProcess { path: PathBuf },

    #[error("create temporary directory: {source}")]
    TempDir {
        #[source]
        source: std::io::Error,
    },

    #[error("mount a tmpfs on {path}: {source}")]
    MountTmpfs {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },

    #[error("start {program}: {source}")]
    Spawn {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("wait for {program}: {source}")]
    WaitChild {
        program: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{command} failed with {status}")]
    CommandFailed { command: String, status: ExitStatus },

    #[error("berth-agent exited with {status} before it accepted a connection; see its log {log}")]
    AgentExited { status: ExitStatus, log: PathBuf },

    #[error("berth-agent did not accept a connection on {socket} within {timeout_secs} s; see its log {log}")]
    AgentStartTimedOut {
        socket: PathBuf,
        timeout_secs: u64,
        log: PathBuf,
    },

    #[error("connect to the agent at {socket}: {source}")]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{rpc} of container {container} failed: {source}")]
    Rpc {
        rpc: &'static str,
        container: String,
        #[source]
        source: ttrpc::Error,
    },

    #[error("container {container} exited with status {status}, expected 0")]
    ContainerStatus { container: String, status: i32 },

    #[error("container {container} moved {actual} bytes through {stream}, expected {expected}")]
    ShortTransfer {
        container: String,
        stream: &'static str,
        expected: u64,
        actual: u64,
    },

    #[error("private mount namespace for crun: {operation}: {source}")]
    MountNamespace {
        operation: &'static str,
        #[source]
        source: nix::Error,
    },

    #[error("the crun runner thread stopped before it returned a result")]
    CrunRunnerStopped,

    #[error("echo server on {socket}: {operation}: {source}")]
    Echo {
        operation: &'static str,
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("build a tokio runtime: {source}")]
    Runtime {
        #[source]
        source: std::io::Error,
    },

    #[error("benchmark task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}
