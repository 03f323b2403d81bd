//! JSON-lines logging on stderr.
//!
//! Records are written synchronously under a mutex, so a record logged just
//! before the agent exits is never lost in a queue. Requests log little at the
//! default level, so the lock is not a bottleneck.

use std::sync::Mutex;

use slog::{o, Drain, Logger};

use crate::config::LogLevel;

/// Builds the root logger: one JSON object per line on stderr, filtered at `level`.
pub fn root_logger(level: LogLevel) -> Logger {
    let json = slog_json::Json::new(std::io::stderr())
        .add_default_keys()
        .build();
    let drain = Mutex::new(json).fuse();
    let drain = slog::LevelFilter::new(drain, level.to_slog()).fuse();

    Logger::root(
        drain,
        o!("source" => "berth-agent", "version" => env!("CARGO_PKG_VERSION"), "pid" => std::process::id()),
    )
}
