//! `berth-bench`: measures `berth-agent` side by side with crun and writes the report
//! that docs/benchmarks.md holds. `make bench` builds everything and runs it; see
//! ci/bench.sh.

mod agent;
mod client;
mod crun;
mod error;
mod lifecycle;
mod machine;
mod report;
mod round_trip;
mod run;
mod stats;
mod stdio;
mod work_dir;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// Command-line flags of `berth-bench`.
#[derive(Debug, Parser)]
#[command(
    name = "berth-bench",
    about = "Benchmark berth-agent against crun and write the Markdown report (needs root)"
)]
pub struct Flags {
    /// Run a tenth of the iterations, as a smoke check
    #[arg(long)]
    pub quick: bool,

    /// Directory with the release binaries berth-agent and berth
    #[arg(long, value_name = "DIR", default_value = "target/release")]
    pub bin_dir: PathBuf,

    /// OCI bundle whose root file system every container runs (see ci/busybox-bundle.sh)
    #[arg(long, value_name = "DIR")]
    pub bundle: PathBuf,

    /// crun program to compare with
    #[arg(long, value_name = "PATH", default_value = "crun")]
    pub crun: PathBuf,

    /// Statically linked busybox for the plain-pipe baseline
    #[arg(long, value_name = "PATH", default_value = "/bin/busybox")]
    pub busybox: PathBuf,

    /// Markdown report to write
    #[arg(long, value_name = "PATH", default_value = "docs/benchmarks.md")]
    pub output: PathBuf,

    /// Markdown appended to the report as its notes section
    #[arg(long, value_name = "PATH", default_value = "bench/notes.md")]
    pub notes: PathBuf,

    /// Command recorded in the report as the one that produced it
    #[arg(long, value_name = "TEXT", default_value = "make bench")]
    pub command: String,
}

fn main() -> ExitCode {
    let flags = Flags::parse();

    if !nix::unistd::geteuid().is_root() {
        eprintln!("berth-bench: must run as root, because the agent and crun create namespaces, mounts and cgroups");
        return ExitCode::from(2);
    }

    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("berth-bench: build tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };

    match runtime.block_on(run::run(&flags)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("berth-bench: {error}");
            ExitCode::FAILURE
        }
    }
}
