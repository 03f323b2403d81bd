//! Command-line interface of `berth`: global options and one subcommand per task.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Client for the Berth guest agent, which speaks the Kata Containers agent API over ttRPC.
#[derive(Debug, Parser)]
#[command(name = "berth", version)]
pub struct Cli {
    /// Agent address: vsock://CID:PORT, unix:///PATH, unix://@NAME (abstract socket)
    /// or hvsock://PATH:PORT (hybrid vsock through a VMM's unix socket).
    #[arg(long, short = 'a', global = true, env = "BERTH_ADDRESS")]
    pub address: Option<String>,

    /// Seconds to wait for the connection and for each RPC that does not wait for a
    /// container to finish. 0 waits forever. Give it before the subcommand, because
    /// `rm` has a --timeout of its own.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    pub timeout: u64,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Ask the agent whether it serves (Health.Check) and print the status.
    Check,

    /// Print the agent's version and API version (Health.Version).
    Version,

    /// Run an OCI bundle from start to end: create the sandbox if needed, create and
    /// start the container, stream its output, wait for it, remove it, and exit with
    /// its exit status.
    Run(RunArgs),

    /// Create the sandbox (CreateSandbox).
    CreateSandbox(CreateSandboxArgs),

    /// Destroy the sandbox and everything in it (DestroySandbox).
    DestroySandbox,

    /// Create a container from an OCI bundle without starting it (CreateContainer).
    Create(CreateArgs),

    /// Start a created container (StartContainer).
    Start(ContainerArgs),

    /// Wait for a container's process to exit and print its exit status (WaitProcess).
    Wait(ContainerArgs),

    /// Send a signal to a container's process (SignalProcess).
    Kill(KillArgs),

    /// Remove a container, killing its processes first (RemoveContainer).
    Rm(RemoveArgs),

    /// Print what the agent reports about the guest (GetGuestDetails).
    GuestDetails,

    /// Run a further process in a running container, attach to its stdio, and exit
    /// with its exit status (ExecProcess, then WaitProcess).
    Exec(ExecArgs),

    /// Freeze every process of a container (PauseContainer).
    Pause(ContainerArgs),

    /// Thaw a paused container (ResumeContainer).
    Resume(ContainerArgs),

    /// Change the resource limits of a running container (UpdateContainer).
    Update(UpdateArgs),

    /// Print the CPU, memory, pids, block I/O and huge page usage of a container
    /// (StatsContainer).
    Stats(ContainerArgs),

    /// List the processes of a container (ListProcesses).
    Ps(PsArgs),

    /// Set the window size of a process's terminal (TtyWinResize).
    Resize(ResizeArgs),

    /// Print a line for each out-of-memory event until interrupted (GetOOMEvent).
    Events(EventsArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Container id made of letters, digits, '.', '_' and '-'. Generated when not given.
    #[arg(long)]
    pub id: Option<String>,

    /// Print the duration of each RPC and of each stage of CreateContainer to stderr
    /// after the run.
    #[arg(long)]
    pub timings: bool,

    /// Forward stdin to the container even when it is a terminal. Stdin that is not a
    /// terminal (a pipe or a file) is always forwarded.
    #[arg(long, short = 'i')]
    pub interactive: bool,

    /// Absolute path of the same bundle inside the guest, such as /bundle in the VM
    /// image. config.json is still read from BUNDLE on this machine, but the root
    /// filesystem is taken from this guest path and not checked here.
    #[arg(long, value_name = "GUEST_PATH", value_parser = parse_guest_path)]
    pub guest_bundle: Option<PathBuf>,

    /// Bundle directory that contains config.json and the root filesystem.
    pub bundle: PathBuf,

    /// Command and arguments that replace process.args of config.json.
    #[arg(last = true)]
    pub args: Vec<String>,
}

/// Accepts only absolute paths, because a relative one has no meaning in the guest.
fn parse_guest_path(text: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(text);
    if !path.is_absolute() {
        return Err(format!(
            "guest path {text:?} must be absolute, such as /bundle"
        ));
    }
    Ok(path)
}

#[derive(Debug, Args)]
pub struct CreateSandboxArgs {
    /// Hostname of the sandbox.
    #[arg(long, default_value = "")]
    pub hostname: String,

    /// Sandbox id. Generated when not given.
    #[arg(long)]
    pub id: Option<String>,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Bundle directory that contains config.json and the root filesystem.
    pub bundle: PathBuf,

    /// Container id made of letters, digits, '.', '_' and '-'.
    #[arg(long)]
    pub id: String,

    /// Command and arguments that replace process.args of config.json.
    #[arg(last = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ContainerArgs {
    /// Container id.
    pub id: String,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    /// Container id.
    pub id: String,

    /// Signal as a number or a name, with or without the SIG prefix (9, KILL, SIGKILL).
    #[arg(long, short = 's', default_value = "TERM")]
    pub signal: String,

    /// Signal every process of the container, not only its main process.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// Container id.
    pub id: String,

    /// Seconds the agent may spend killing the container's processes before it gives
    /// up. 0 lets it wait forever.
    #[arg(long = "timeout", value_name = "SECS", default_value_t = 10)]
    pub remove_timeout: u32,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Container id.
    pub id: String,

    /// Exec id of the new process. Generated when not given.
    #[arg(long)]
    pub exec_id: Option<String>,

    /// Give the process a terminal and attach berth's terminal to it in raw mode.
    #[arg(long, short = 't')]
    pub tty: bool,

    /// Forward stdin to the process even when it is a terminal. Implied by -t.
    #[arg(long, short = 'i')]
    pub interactive: bool,

    /// User of the process, as UID or UID:GID.
    #[arg(long, short = 'u', default_value = "0")]
    pub user: String,

    /// Working directory of the process inside the container.
    #[arg(long, default_value = "/")]
    pub cwd: String,

    /// Environment variable NAME=VALUE; repeat for more. PATH gets a default when
    /// not given.
    #[arg(long, short = 'e')]
    pub env: Vec<String>,

    /// Command and arguments.
    #[arg(last = true, required = true)]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    /// Container id.
    pub id: String,

    /// Memory limit in bytes.
    #[arg(long, value_name = "BYTES")]
    pub memory: Option<u64>,

    /// CPU limit as a number of CPUs, such as 0.5 or 2.
    #[arg(long)]
    pub cpus: Option<f64>,

    /// Maximum number of processes; -1 or 0 removes the limit.
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub pids: Option<i64>,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Container id.
    pub id: String,

    /// Output format: "table" (the guest's ps output for the container's processes)
    /// or "json" (an array of pids).
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    pub format: String,

    /// Arguments of ps for the table format; -ef when none are given.
    #[arg(last = true)]
    pub ps_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ResizeArgs {
    /// Container id.
    pub id: String,

    /// Exec id of the process; the container's main process when not given.
    #[arg(long)]
    pub exec_id: Option<String>,

    /// Number of rows.
    #[arg(long)]
    pub rows: u32,

    /// Number of columns.
    #[arg(long)]
    pub cols: u32,
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Print only the events of this container; all containers' events when not given.
    pub id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Cli {
        Cli::try_parse_from(args).expect("arguments should parse")
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_options_before_subcommand() {
        let cli = parse(&[
            "berth",
            "--address",
            "unix:///a.sock",
            "--timeout",
            "5",
            "check",
        ]);

        assert_eq!(cli.address.as_deref(), Some("unix:///a.sock"));
        assert_eq!(cli.timeout, 5);
        assert!(matches!(cli.command, Command::Check));
    }

    #[test]
    fn global_options_after_subcommand() {
        let cli = parse(&["berth", "run", "--address", "vsock://3:1024", "bundle"]);

        assert_eq!(cli.address.as_deref(), Some("vsock://3:1024"));
        assert!(matches!(cli.command, Command::Run(_)));
    }

    #[test]
    fn timeout_defaults_to_sixty_seconds() {
        let cli = parse(&["berth", "check"]);

        assert_eq!(cli.timeout, 60);
    }

    #[test]
    fn run_takes_args_after_double_dash() {
        let cli = parse(&[
            "berth",
            "run",
            "--id",
            "c1",
            "--timings",
            "/b",
            "--",
            "sh",
            "-c",
            "exit 3",
        ]);

        let Command::Run(run) = cli.command else {
            panic!("expected the run subcommand");
        };
        assert_eq!(run.id.as_deref(), Some("c1"));
        assert!(run.timings);
        assert!(!run.interactive);
        assert_eq!(run.bundle, PathBuf::from("/b"));
        assert_eq!(run.args, ["sh", "-c", "exit 3"]);
    }

    #[test]
    fn run_without_args_keeps_config_args() {
        let cli = parse(&["berth", "run", "/b"]);

        let Command::Run(run) = cli.command else {
            panic!("expected the run subcommand");
        };
        assert!(run.args.is_empty());
        assert_eq!(run.id, None);
    }

    #[test]
    fn run_guest_bundle_must_be_absolute() {
        let cli = parse(&["berth", "run", "--guest-bundle", "/bundle", "build/bundle"]);
        let Command::Run(run) = cli.command else {
            panic!("expected the run subcommand");
        };
        assert_eq!(run.guest_bundle, Some(PathBuf::from("/bundle")));
        assert_eq!(run.bundle, PathBuf::from("build/bundle"));

        let error = Cli::try_parse_from(["berth", "run", "--guest-bundle", "bundle", "b"])
            .expect_err("relative guest path is rejected");
        assert!(error.to_string().contains("must be absolute"), "{error}");
    }

    #[test]
    fn run_rejects_missing_bundle() {
        assert!(Cli::try_parse_from(["berth", "run"]).is_err());
    }

    #[test]
    fn create_requires_id() {
        assert!(Cli::try_parse_from(["berth", "create", "/b"]).is_err());

        let cli = parse(&["berth", "create", "/b", "--id", "c1", "--", "true"]);
        let Command::Create(create) = cli.command else {
            panic!("expected the create subcommand");
        };
        assert_eq!(create.id, "c1");
        assert_eq!(create.args, ["true"]);
    }

    #[test]
    fn kill_signal_defaults_to_term() {
        let cli = parse(&["berth", "kill", "c1"]);

        let Command::Kill(kill) = cli.command else {
            panic!("expected the kill subcommand");
        };
        assert_eq!(kill.signal, "TERM");
        assert!(!kill.all);
    }

    #[test]
    fn rm_timeout_is_its_own_option() {
        let cli = parse(&["berth", "rm", "c1", "--timeout", "3"]);

        let Command::Rm(rm) = cli.command else {
            panic!("expected the rm subcommand");
        };
        assert_eq!(rm.remove_timeout, 3);
        assert_eq!(cli.timeout, 60);
    }

    #[test]
    fn rm_accepts_both_timeouts() {
        let cli = parse(&["berth", "--timeout", "7", "rm", "c1", "--timeout", "3"]);

        let Command::Rm(rm) = cli.command else {
            panic!("expected the rm subcommand");
        };
        assert_eq!(rm.remove_timeout, 3);
        assert_eq!(cli.timeout, 7);
    }

    #[test]
    fn create_sandbox_options() {
        let cli = parse(&["berth", "create-sandbox", "--hostname", "h1", "--id", "s1"]);

        let Command::CreateSandbox(sandbox) = cli.command else {
            panic!("expected the create-sandbox subcommand");
        };
        assert_eq!(sandbox.hostname, "h1");
        assert_eq!(sandbox.id.as_deref(), Some("s1"));
    }

    #[test]
    fn unknown_subcommand_is_rejected() {
        assert!(Cli::try_parse_from(["berth", "attach", "c1"]).is_err());
    }

    #[test]
    fn exec_takes_command_after_double_dash() {
        let cli = parse(&[
            "berth",
            "exec",
            "c1",
            "-t",
            "--exec-id",
            "e1",
            "-u",
            "1000:100",
            "-e",
            "A=1",
            "--",
            "sh",
            "-c",
            "id",
        ]);

        let Command::Exec(exec) = cli.command else {
            panic!("expected the exec subcommand");
        };
        assert_eq!(exec.id, "c1");
        assert_eq!(exec.exec_id.as_deref(), Some("e1"));
        assert!(exec.tty);
        assert_eq!(exec.user, "1000:100");
        assert_eq!(exec.env, ["A=1"]);
        assert_eq!(exec.cwd, "/");
        assert_eq!(exec.args, ["sh", "-c", "id"]);
    }

    #[test]
    fn exec_requires_command() {
        assert!(Cli::try_parse_from(["berth", "exec", "c1"]).is_err());
    }

    #[test]
    fn update_limits() {
        let cli = parse(&[
            "berth", "update", "c1", "--memory", "67108864", "--cpus", "0.5", "--pids", "-1",
        ]);

        let Command::Update(update) = cli.command else {
            panic!("expected the update subcommand");
        };
        assert_eq!(update.memory, Some(67108864));
        assert_eq!(update.cpus, Some(0.5));
        assert_eq!(update.pids, Some(-1));
    }

    #[test]
    fn ps_format_defaults_to_table() {
        let cli = parse(&["berth", "ps", "c1"]);
        let Command::Ps(ps) = cli.command else {
            panic!("expected the ps subcommand");
        };
        assert_eq!(ps.format, "table");
        assert!(ps.ps_args.is_empty());

        let cli = parse(&["berth", "ps", "c1", "--format", "json"]);
        let Command::Ps(ps) = cli.command else {
            panic!("expected the ps subcommand");
        };
        assert_eq!(ps.format, "json");
        assert!(Cli::try_parse_from(["berth", "ps", "c1", "--format", "yaml"]).is_err());
    }

    #[test]
    fn resize_requires_size() {
        assert!(Cli::try_parse_from(["berth", "resize", "c1", "--rows", "24"]).is_err());

        let cli = parse(&[
            "berth",
            "resize",
            "c1",
            "--rows",
            "24",
            "--cols",
            "80",
            "--exec-id",
            "e1",
        ]);
        let Command::Resize(resize) = cli.command else {
            panic!("expected the resize subcommand");
        };
        assert_eq!((resize.rows, resize.cols), (24, 80));
        assert_eq!(resize.exec_id.as_deref(), Some("e1"));
    }

    #[test]
    fn events_id_is_optional() {
        let cli = parse(&["berth", "events"]);
        let Command::Events(events) = cli.command else {
            panic!("expected the events subcommand");
        };
        assert_eq!(events.id, None);

        let cli = parse(&["berth", "events", "c1"]);
        let Command::Events(events) = cli.command else {
            panic!("expected the events subcommand");
        };
        assert_eq!(events.id.as_deref(), Some("c1"));
    }
}
