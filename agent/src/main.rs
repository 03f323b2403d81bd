//! `berth-agent`: the guest agent daemon.
//!
//! The same binary is also every container's init: rustjail re-executes it as
//! `/proc/self/exe init`, and that must be detected before anything else runs.
//! Started as the guest's PID 1, it first mounts the kernel filesystems and, when
//! it stops for any reason, powers the VM off instead of exiting (see pid1.rs).

mod config;
mod convert;
mod error;
mod isolate;
mod logging;
mod modules;
mod pid1;
mod pipe;
mod reaper;
mod rpc;
mod sandbox;
mod server;

use std::process::ExitCode;

use clap::Parser;
use slog::{error, warn};

use crate::config::{Config, Environment, Flags, KernelParams, LogLevel};

/// Most threads of the blocking pool, which runs the container and sandbox pipelines.
/// Eight keep two cores busy while pipelines wait on their inits.
const MAX_BLOCKING_THREADS: usize = 8;

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|arg| arg == "init") {
        rustjail::init_main();
    }

    // As PID 1 nothing is mounted yet, not even the /proc/cmdline the options come from.
    if pid1::is_init() {
        let prepared = pid1::prepare_guest();
        let status = run_agent(Some(&prepared));

        let logger = logging::root_logger(LogLevel::Info);
        let reason = match status {
            0 => "the agent stopped".to_string(),
            status => {
                format!("the agent failed with exit status {status}; its error is logged above")
            }
        };
        pid1::power_off(&logger, &reason);
    }

    ExitCode::from(run_agent(None))
}

/// Runs the agent until SIGTERM or SIGINT and returns its exit status. `prepared` is
/// what PID 1 start-up did, logged once the logger exists.
fn run_agent(prepared: Option<&pid1::Prepared>) -> u8 {
    let mut flags = match Flags::try_parse() {
        Ok(flags) => flags,
        Err(failure) => {
            // Prints the help or version text too, which are not failures.
            let _ = failure.print();
            return failure.exit_code().clamp(0, 255) as u8;
        }
    };
    flags.isolate |= config::isolate_from_env();

    let config = match KernelParams::read(&flags.kernel_cmdline)
        .and_then(|kernel| Config::resolve(&flags, &Environment::from_process(), &kernel))
    {
        Ok(config) => config,
        Err(failure) => {
            eprintln!("berth-agent: {failure}");
            return 2;
        }
    };

    // Isolation must come before the runtime starts any thread, see isolate.rs.
    let loopback_warning = if flags.isolate {
        match isolate::enter() {
            Ok(warning) => warning,
            Err(failure) => {
                eprintln!("berth-agent: {failure}");
                return 1;
            }
        }
    } else {
        None
    };

    let logger = logging::root_logger(config.log_level);
    if let Some(prepared) = prepared {
        prepared.log(&logger);
    }
    if flags.isolate && matches!(config.server_addr, protocols::Address::UnixAbstract(_)) {
        warn!(logger, "abstract socket is reachable only inside the isolated network namespace";
            "address" => &config.server_addr_text);
    }
    if let Some(warning) = loopback_warning {
        warn!(logger, "isolated agent has no loopback"; "error" => %warning);
    }

    // One worker thread. RPC handlers are short and the container pipelines run on the
    // blocking pool, so a second worker only adds wake-ups between threads. With two, a
    // Health.Check cost the agent about ten system calls, five of them futex, instead
    // of three (strace of the agent serving Health.Check in a loop, on 2 cores).
    //
    // The blocking pool runs the pipelines, each a short job that waits on no other
    // blocking job, so a bound only queues requests beyond it. Without one, tokio
    // starts a thread per request in flight, and 64 concurrent lifecycles left about 60
    // threads with their stacks and malloc arenas (docs/benchmarks.md).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(failure) => {
            error!(logger, "build tokio runtime failed"; "error" => %failure);
            return 1;
        }
    };

    match runtime.block_on(server::run(config, logger.clone())) {
        Ok(()) => 0,
        Err(failure) => {
            error!(logger, "agent failed"; "error" => %failure);
            1
        }
    }
}
