//! `berth exec`: run a further process in a running container and attach to it.
//!
//! With `-t` the process gets a terminal in the guest, and berth's own terminal is
//! put in raw mode, so keys such as Ctrl-C reach the process instead of berth. The
//! local window size is sent with TtyWinResize at start and on every SIGWINCH, and
//! the terminal's settings are restored on every way out, because a shell left in
//! raw mode is unusable.

use std::io::IsTerminal;
use std::os::fd::{AsFd, BorrowedFd};

use protobuf::MessageField;
use protocols::agent::ExecProcessRequest;
use protocols::oci::{Box as ConsoleSize, Process, User};
use rustix::termios::{tcgetattr, tcgetwinsize, tcsetattr, OptionalActions, Termios};
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinHandle;

use crate::bundle::generate_id;
use crate::cli::ExecArgs;
use crate::client::{Agent, OutputStream};
use crate::error::{Error, Result};
use crate::stdio::{spawn_output_copy, spawn_stdin_copy, ProcessRef};

/// Environment of the process when `--env` gives none.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs the process and returns its exit status, which the agent reports as
/// 128 + the signal number for a process killed by a signal.
pub async fn exec(agent: &Agent, args: ExecArgs) -> Result<i32> {
    let exec_id = args.exec_id.clone().unwrap_or_else(generate_id);
    let request = exec_request(&args, &exec_id)?;
    let process = ProcessRef {
        container_id: args.id.clone(),
        exec_id,
    };

    // Raw mode starts before the process, so its first output is not mangled.
    let raw_terminal = if args.tty {
        Some(RawTerminal::enter()?)
    } else {
        None
    };

    agent.exec_process(&request).await?;

    let resizer = args
        .tty
        .then(|| spawn_resizer(agent.clone(), process.clone()));
    let stdout = spawn_output_copy(agent.clone(), process.clone(), OutputStream::Stdout);
    let stderr = (!args.tty)
        .then(|| spawn_output_copy(agent.clone(), process.clone(), OutputStream::Stderr));
    let stdin = if args.tty || args.interactive || !std::io::stdin().is_terminal() {
        Some(spawn_stdin_copy(agent.clone(), process.clone()))
    } else {
        agent
            .close_stdin(&process.container_id, &process.exec_id)
            .await?;
        None
    };

    let status = agent
        .wait_process(&process.container_id, &process.exec_id)
        .await;

    finish(stdout, "stdout").await;
    if let Some(stderr) = stderr {
        finish(stderr, "stderr").await;
    }
    for task in [stdin, resizer].into_iter().flatten() {
        task.abort();
    }
    drop(raw_terminal);
    status
}

/// Builds the ExecProcess request from the command line.
fn exec_request(args: &ExecArgs, exec_id: &str) -> Result<ExecProcessRequest> {
    let (uid, gid) = parse_user(&args.user)?;

    let mut env = args.env.clone();
    if !env.iter().any(|variable| variable.starts_with("PATH=")) {
        env.push(DEFAULT_PATH.to_string());
    }
    if args.tty && !env.iter().any(|variable| variable.starts_with("TERM=")) {
        env.push(format!(
            "TERM={}",
            std::env::var("TERM").unwrap_or_else(|_| "xterm".to_string())
        ));
    }

    // The size goes with the request, so the process has it from its first
    // instruction; the resizer only follows later changes.
    let console_size = args
        .tty
        .then(|| tcgetwinsize(std::io::stdin().as_fd()).ok())
        .flatten()
        // A terminal that never had a size reports 0x0, which sets nothing.
        .filter(|size| size.ws_row > 0 && size.ws_col > 0)
        .map(|size| ConsoleSize {
            Height: u32::from(size.ws_row),
            Width: u32::from(size.ws_col),
            ..Default::default()
        });

    let process = Process {
        Terminal: args.tty,
        ConsoleSize: console_size.into(),
        User: MessageField::some(User {
            UID: uid,
            GID: gid,
            ..Default::default()
        }),
        Args: args.args.clone(),
        Env: env,
        Cwd: args.cwd.clone(),
        ..Default::default()
    };

    let mut request = ExecProcessRequest::new();
    request.container_id = args.id.clone();
    request.exec_id = exec_id.to_string();
    request.process = MessageField::some(process);
    Ok(request)
}

/// Parses `UID` or `UID:GID`. The group defaults to the user id.
fn parse_user(value: &str) -> Result<(u32, u32)> {
    let invalid = || Error::InvalidUser {
        value: value.to_string(),
    };

    let (uid, gid) = match value.split_once(':') {
        Some((uid, gid)) => (uid, Some(gid)),
        None => (value, None),
    };
    let uid = uid.parse().map_err(|_| invalid())?;
    let gid = match gid {
        Some(gid) => gid.parse().map_err(|_| invalid())?,
        None => uid,
    };
    Ok((uid, gid))
}

/// Waits for an output copy to end and reports a failure without failing the exec.
async fn finish(task: JoinHandle<Result<()>>, name: &str) {
    match task.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => eprintln!("berth: warning: {error}"),
        Err(join_error) => eprintln!("berth: warning: copying {name} stopped: {join_error}"),
    }
}

/// Sends the local window size now, in case it changed since the request, and after
/// each SIGWINCH.
fn spawn_resizer(agent: Agent, process: ProcessRef) -> JoinHandle<Result<()>> {
    tokio::spawn(async move {
        let mut changes =
            signal(SignalKind::window_change()).map_err(|source| Error::SignalHandler {
                signal: "SIGWINCH",
                source,
            })?;

        loop {
            if let Ok(size) = tcgetwinsize(std::io::stdin().as_fd()) {
                let resized = agent
                    .resize_terminal(
                        &process.container_id,
                        &process.exec_id,
                        u32::from(size.ws_row),
                        u32::from(size.ws_col),
                    )
                    .await;
                if let Err(error) = resized {
                    eprintln!("berth: warning: {error}\r");
                }
            }
            if changes.recv().await.is_none() {
                return Ok(());
            }
        }
    })
}

/// berth's terminal in raw mode; dropping it restores the saved settings.
struct RawTerminal {
    saved: Termios,
}

impl RawTerminal {
    fn enter() -> Result<RawTerminal> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Err(Error::NotATerminal);
        }

        let fd = stdin.as_fd();
        let saved = tcgetattr(fd).map_err(terminal_error("read settings of"))?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(fd, OptionalActions::Now, &raw).map_err(terminal_error("set raw mode on"))?;
        Ok(RawTerminal { saved })
    }

    fn restore(&self, fd: BorrowedFd<'_>) -> rustix::io::Result<()> {
        tcsetattr(fd, OptionalActions::Now, &self.saved)
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Err(error) = self.restore(std::io::stdin().as_fd()) {
            eprintln!("berth: warning: failed to restore the terminal settings: {error}");
        }
    }
}

fn terminal_error(operation: &'static str) -> impl FnOnce(rustix::io::Errno) -> Error {
    move |errno| Error::Terminal {
        operation,
        source: errno.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(tty: bool, env: &[&str]) -> ExecArgs {
        ExecArgs {
            id: "c1".to_string(),
            exec_id: None,
            tty,
            interactive: false,
            user: "1000:100".to_string(),
            cwd: "/tmp".to_string(),
            env: env.iter().map(|variable| variable.to_string()).collect(),
            args: vec!["sh".to_string(), "-c".to_string(), "id".to_string()],
        }
    }

    #[test]
    fn request_carries_process() {
        let request = exec_request(&args(false, &[]), "e1").unwrap();

        assert_eq!(request.container_id, "c1");
        assert_eq!(request.exec_id, "e1");
        let process = &request.process;
        assert_eq!(process.Args, ["sh", "-c", "id"]);
        assert_eq!(process.Cwd, "/tmp");
        assert_eq!(process.User.UID, 1000);
        assert_eq!(process.User.GID, 100);
        assert!(!process.Terminal);
        assert_eq!(process.Env, [DEFAULT_PATH]);
    }

    #[test]
    fn given_path_kept_and_terminal_gets_term() {
        let request = exec_request(&args(true, &["PATH=/bin", "TERM=vt100"]), "e1").unwrap();

        assert!(request.process.Terminal);
        assert_eq!(request.process.Env, ["PATH=/bin", "TERM=vt100"]);
    }

    #[test]
    fn user_forms() {
        assert_eq!(parse_user("0").unwrap(), (0, 0));
        assert_eq!(parse_user("1000").unwrap(), (1000, 1000));
        assert_eq!(parse_user("1000:5").unwrap(), (1000, 5));
        for bad in ["", "root", "1:", ":1", "1:2:3", "-1"] {
            assert!(parse_user(bad).is_err(), "{bad:?}");
        }
    }
}
