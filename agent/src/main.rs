//! `berth-agent`: the guest agent daemon.
//!
//! The same binary is also every container's init: rustjail re-executes it as
//! `/proc/self/exe init`, and that must be detected before anything else runs.

mod config;
mod convert;
mod error;
mod isolate;
mod logging;
mod modules;
mod pipe;
mod reaper;
mod rpc;
mod sandbox;
mod server;

use std::process::ExitCode;

use clap::Parser;
use slog::{error, warn};

use crate::config::{Config, Environment, Flags, KernelParams};

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|arg| arg == "init") {
        rustjail::init_main();
    }

    let mut flags = Flags::parse();
    flags.isolate |= config::isolate_from_env();

    let config = match KernelParams::read(&flags.kernel_cmdline)
        .and_then(|kernel| Config::resolve(&flags, &Environment::from_process(), &kernel))
    {
        Ok(config) => config,
        Err(failure) => {
            eprintln!("berth-agent: {failure}");
            return ExitCode::from(2);
        }
    };

    // Isolation must come before the runtime starts any thread, see isolate.rs.
    let loopback_warning = if flags.isolate {
        match isolate::enter() {
            Ok(warning) => warning,
            Err(failure) => {
                eprintln!("berth-agent: {failure}");
                return ExitCode::from(1);
            }
        }
    } else {
        None
    };

    let logger = logging::root_logger(config.log_level);
    if flags.isolate && matches!(config.server_addr, protocols::Address::UnixAbstract(_)) {
        warn!(logger, "abstract socket is reachable only inside the isolated network namespace";
            "address" => &config.server_addr_text);
    }
    if let Some(warning) = loopback_warning {
        warn!(logger, "isolated agent has no loopback"; "error" => %warning);
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(failure) => {
            error!(logger, "build tokio runtime failed"; "error" => %failure);
            return ExitCode::from(1);
        }
    };

    match runtime.block_on(server::run(config, logger.clone())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            error!(logger, "agent failed"; "error" => %failure);
            ExitCode::from(1)
        }
    }
}
