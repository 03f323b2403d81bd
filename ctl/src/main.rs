//! `berth`: the operator's client for the Berth guest agent.
//!
//! Exit status: 0 on success, 1 when a command fails (the error is printed on stderr
//! as `berth: ...`), 2 for invalid arguments, and for `run` the container's own exit
//! status once its process ran.

mod bundle;
mod cli;
mod client;
mod commands;
mod control;
mod error;
mod exec;
#[cfg(test)]
mod fake_agent;
mod run;
mod signals;
mod stdio;
mod timings;

use std::time::Duration;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::client::Agent;
use crate::error::{Error, Result};

fn main() {
    let cli = Cli::parse();

    let status = match execute(cli) {
        Ok(status) => status,
        Err(error) => {
            eprintln!("berth: {error}");
            1
        }
    };

    flush_stdio();
    std::process::exit(status);
}

/// Runs the command and returns the process exit status.
fn execute(cli: Cli) -> Result<i32> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Runtime { source })?;

    let status = runtime.block_on(async move {
        let address = cli.address.ok_or(Error::MissingAddress)?;
        let timeout = (cli.timeout > 0).then(|| Duration::from_secs(cli.timeout));
        let agent = Agent::connect(&address, timeout).await?;

        dispatch(&agent, cli.command).await
    });

    // A stdin copy task may still block in a read of stdin (a terminal, or a pipe
    // whose writer is still open), and a plain drop of the runtime would wait for it.
    runtime.shutdown_background();
    status
}

async fn dispatch(agent: &Agent, command: Command) -> Result<i32> {
    match command {
        Command::Run(args) => return run::run(agent, args).await,
        Command::Check => commands::check(agent).await?,
        Command::Version => commands::version(agent).await?,
        Command::CreateSandbox(args) => commands::create_sandbox(agent, args).await?,
        Command::DestroySandbox => commands::destroy_sandbox(agent).await?,
        Command::Create(args) => commands::create(agent, args).await?,
        Command::Start(args) => commands::start(agent, &args.id).await?,
        Command::Wait(args) => commands::wait(agent, &args.id).await?,
        Command::Kill(args) => commands::kill(agent, args).await?,
        Command::Rm(args) => commands::remove(agent, args).await?,
        Command::GuestDetails => commands::guest_details(agent).await?,
        Command::Exec(args) => return exec::exec(agent, args).await,
        Command::Pause(args) => control::pause(agent, &args.id).await?,
        Command::Resume(args) => control::resume(agent, &args.id).await?,
        Command::Update(args) => control::update(agent, args).await?,
        Command::Stats(args) => control::stats(agent, &args.id).await?,
        Command::Ps(args) => control::ps(agent, args).await?,
        Command::Resize(args) => control::resize(agent, args).await?,
        Command::Events(args) => control::events(agent, args).await?,
    }
    Ok(0)
}

fn flush_stdio() {
    use std::io::Write;

    // A failed flush is not reported, because stderr is the stream that failed or
    // the one that was just written.
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
}
