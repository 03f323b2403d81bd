//! Processes started in a running container with [`Container::exec`].
//!
//! The new process is cloned from the caller like an init, into the pid namespace of the
//! container's init, and moved into the container's cgroup before it receives its
//! configuration. It joins the init's other namespaces itself and executes the process
//! without waiting for a start.

use std::fs;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{ContainerState, Process};
use slog::{debug, warn};

use crate::container::{open_fds, Container, InitCommand, INIT_TIMEOUT};
use crate::error::Error;
use crate::init::{
    check_cwd, check_exec_cpu_affinity, exec_label_warnings, set_initial_cpu_affinity,
};
use crate::spawn::{spawn_init, CloneNamespaces, PidNamespace};
use crate::sync::{send_message, ExecConfig, FromInit, ToInit};

/// A process started in a running container. The caller reaps it, as it reaps the init.
#[derive(Debug)]
pub struct ExecProcess {
    pid: i32,
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    terminal: Option<OwnedFd>,
}

impl ExecProcess {
    /// Pid of the process as seen by the caller.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Write end of the process's stdin pipe.
    pub fn take_stdin(&mut self) -> Option<OwnedFd> {
        self.stdin.take()
    }

    /// Read end of the process's stdout pipe.
    pub fn take_stdout(&mut self) -> Option<OwnedFd> {
        self.stdout.take()
    }

    /// Read end of the process's stderr pipe.
    pub fn take_stderr(&mut self) -> Option<OwnedFd> {
        self.stderr.take()
    }

    /// Master of the process's terminal when `process.terminal` is set.
    pub fn take_terminal(&mut self) -> Option<OwnedFd> {
        self.terminal.take()
    }
}

impl Container {
    /// Starts `process` in the container's namespaces and cgroup, with its own user,
    /// environment, working directory, capabilities, rlimits, terminal,
    /// no_new_privileges, AppArmor profile and SELinux label, and the container's seccomp
    /// profile. `init` starts the helper process as for [`Container::create`]. Returns
    /// once the process executed. Blocks for at most about 30 seconds.
    pub fn exec(&self, process: &Process, init: &InitCommand) -> Result<ExecProcess, Error> {
        if self.destroyed {
            return Err(Error::NotRunning(self.id.clone()));
        }
        if process.args().iter().flatten().next().is_none() {
            return Err(Error::InvalidSpec("process.args is empty".to_owned()));
        }
        check_cwd(process.cwd()).map_err(Error::InvalidSpec)?;
        check_exec_cpu_affinity(process).map_err(Error::InvalidSpec)?;
        for warning in exec_label_warnings(process) {
            warn!(self.logger, "exec process setting not applied"; "container" => &self.id, "reason" => warning);
        }
        let namespaces = CloneNamespaces {
            pid: self.pid_namespace()?,
            new_user: false,
            join_first: Vec::new(),
        };

        let (caller_fds, child_fds) = open_fds(&self.id)?;
        let pid = spawn_init(init, &child_fds, namespaces).map_err(|source| Error::Clone {
            container: self.id.clone(),
            program: init.program.clone(),
            source,
        })?;
        drop(child_fds);
        debug!(self.logger, "cloned exec process"; "pid" => pid);

        let mut exec = ExecProcess {
            pid,
            stdin: Some(caller_fds.stdin),
            stdout: Some(caller_fds.stdout),
            stderr: Some(caller_fds.stderr),
            terminal: None,
        };
        match self.configure_exec(process, &caller_fds.sync, &mut exec) {
            Ok(()) => Ok(exec),
            Err(error) => {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                // The caller's reaper may reap it first, so ECHILD is expected.
                let _ = waitpid(Pid::from_raw(pid), None);
                Err(error)
            }
        }
    }

    /// Sets the process's `execCPUAffinity.initial`, moves it into the cgroup, sends its
    /// configuration and waits until it executed.
    fn configure_exec(
        &self,
        process: &Process,
        sync: &OwnedFd,
        exec: &mut ExecProcess,
    ) -> Result<(), Error> {
        set_initial_cpu_affinity(&self.id, exec.pid, process)?;
        self.cgroup.add_process(exec.pid)?;

        let message = ToInit::Exec(Box::new(ExecConfig {
            container_id: self.id.clone(),
            target_pid: self.pid,
            process: process.clone(),
            seccomp: self.seccomp.clone(),
            personality: self.personality.clone(),
            memory_policy: self.memory_policy.clone(),
        }));
        send_message(sync.as_fd(), &message)
            .map_err(|source| self.sync_error("send exec configuration to", source))?;

        // As at start, end of file means the exec succeeded.
        let deadline = Instant::now() + INIT_TIMEOUT;
        let reply = self.recv_reply_with_listener(
            sync.as_fd(),
            deadline,
            &mut exec.terminal,
            exec.pid,
            ContainerState::Running,
        )?;
        match reply {
            Ok(None) => {
                debug!(self.logger, "exec process started"; "pid" => exec.pid);
                Ok(())
            }
            Ok(Some(FromInit::Error { kind, message })) => Err(self.init_error(kind, message)),
            Ok(Some(FromInit::Ready { .. } | FromInit::Terminal | FromInit::SeccompNotify)) => {
                Err(Error::Init {
                    container: self.id.clone(),
                    message: "exec process reported ready instead of executing".to_owned(),
                })
            }
            Err(source) if source.kind() == std::io::ErrorKind::TimedOut => Err(Error::Timeout {
                container: self.id.clone(),
                step: "execute the exec process",
                seconds: INIT_TIMEOUT.as_secs(),
            }),
            Err(source) => Err(self.sync_error("receive exec result from", source)),
        }
    }

    /// Opens the init's pid namespace when it differs from the caller's.
    fn pid_namespace(&self) -> Result<PidNamespace, Error> {
        let path = format!("/proc/{}/ns/pid", self.pid);
        let not_running = |_| Error::NotRunning(self.id.clone());
        let target = fs::File::open(&path).map_err(not_running)?;
        let theirs = target.metadata().map_err(not_running)?;
        let own = fs::metadata("/proc/self/ns/pid").map_err(|source| Error::Prepare {
            container: self.id.clone(),
            resource: "pid namespace of the caller",
            source,
        })?;
        if (own.dev(), own.ino()) == (theirs.dev(), theirs.ino()) {
            Ok(PidNamespace::Inherit)
        } else {
            Ok(PidNamespace::Join(target.into()))
        }
    }
}
