//! Stage `pid-namespace`: when CreateSandbox sets `sandbox_pidns`, starts a process that
//! keeps a PID namespace for all containers of the sandbox, and binds the namespace's
//! file at `<run_dir>/sandbox/ns/pid`, where the container `namespaces` stage finds it.
//!
//! The holder is a fork of the agent that closes every inherited descriptor but the
//! read end of a pipe, and blocks reading it. The agent keeps the write end, so when the
//! agent dies without a DestroySandbox, the read returns end of file and the holder
//! exits instead of outliving it. The holder is PID 1 of the namespace, so the
//! namespace lives exactly as long as it does. A pidfd taken while the holder is still an unreaped child makes the undo's
//! kill and wait safe even if the agent's reaper collects the holder first and its pid
//! is reused.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use nix::sched::{unshare, CloneFlags};
use nix::sys::wait::{waitid, Id, WaitPidFlag};
use nix::unistd::{fork, ForkResult};
use rustix::process::{pidfd_open, pidfd_send_signal, PidfdFlags, Signal};

use crate::context::SandboxContext;
use crate::error::{collect_undo_errors, StageError};
use crate::namespace::{bind, BoundNamespace};
use crate::stage::{NoUndo, Stage, Undo};

/// Starts the PID namespace holder when the request sets `sandbox_pidns`.
#[derive(Debug, Default)]
pub struct PidNamespace;

/// The holder process and its bound namespace file.
struct StopHolder {
    holder: Option<Holder>,
    bound: Option<BoundNamespace>,
}

struct Holder {
    pid: i32,
    pidfd: OwnedFd,
    /// Write end of the pipe the holder reads; closing it also ends the holder.
    _lifeline: OwnedFd,
}

impl Stage<SandboxContext> for PidNamespace {
    fn name(&self) -> &'static str {
        "pid-namespace"
    }

    fn apply(&self, ctx: &mut SandboxContext) -> Result<Box<dyn Undo>, StageError> {
        if !ctx.request.sandbox_pidns {
            return Ok(Box::new(NoUndo));
        }

        let holder = std::thread::scope(|scope| {
            scope.spawn(start_holder).join().unwrap_or_else(|_| {
                Err(StageError::invalid(
                    "PID namespace holder",
                    "fork",
                    "the thread starting it panicked",
                ))
            })
        })?;
        let mut undo = StopHolder {
            holder: Some(holder),
            bound: None,
        };

        let pid = undo.holder.as_ref().map_or(0, |holder| holder.pid);
        let source = PathBuf::from(format!("/proc/{pid}/ns/pid"));
        match bind(&source, &ctx.sandbox.paths.sandbox_namespace("pid")) {
            Ok(bound) => undo.bound = Some(bound),
            Err(error) => {
                let _ = undo.undo();
                return Err(error);
            }
        }
        slog::debug!(ctx.sandbox.logger, "PID namespace holder started"; "pid" => pid);
        Ok(Box::new(undo))
    }
}

/// Runs on its own thread, because unshare(CLONE_NEWPID) changes where the calling
/// thread's later children go: forks the holder into a new PID namespace.
fn start_holder() -> Result<Holder, StageError> {
    let system = |operation: &'static str| {
        move |source: nix::Error| StageError::System {
            operation,
            value: "sandbox PID namespace".to_string(),
            source,
        }
    };

    unshare(CloneFlags::CLONE_NEWPID).map_err(system("create"))?;
    let (lifeline_read, lifeline_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(system("create lifeline pipe for"))?;
    let read_fd = lifeline_read.as_raw_fd();

    // SAFETY: the child runs only async-signal-safe system calls (close_range, read and
    // _exit) and never returns, so no lock or allocator state of the other threads is
    // touched after the fork.
    let child = match unsafe { fork() }.map_err(system("fork holder for"))? {
        ForkResult::Child => hold(read_fd),
        ForkResult::Parent { child } => child,
    };
    drop(lifeline_read);

    let opened = rustix::process::Pid::from_raw(child.as_raw())
        .ok_or(rustix::io::Errno::SRCH)
        .and_then(|pid| pidfd_open(pid, PidfdFlags::empty()));
    match opened {
        Ok(pidfd) => Ok(Holder {
            pid: child.as_raw(),
            pidfd,
            _lifeline: lifeline_write,
        }),
        Err(errno) => {
            let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
            let _ = nix::sys::wait::waitpid(child, None);
            Err(StageError::System {
                operation: "open pidfd of",
                value: format!("PID namespace holder {}", child.as_raw()),
                source: nix::Error::from_raw(errno.raw_os_error()),
            })
        }
    }
}

/// Runs the holder: closes every descriptor but the lifeline, then waits for SIGKILL or
/// for the agent to exit.
fn hold(lifeline: RawFd) -> ! {
    let lifeline_u32 = lifeline as u32;
    // SAFETY: close_range takes no pointers and only closes descriptors of this freshly
    // forked process; the lifeline, between the two ranges, stays open.
    unsafe {
        if lifeline_u32 > 0 {
            libc::syscall(libc::SYS_close_range, 0u32, lifeline_u32 - 1, 0u32);
        }
        libc::syscall(libc::SYS_close_range, lifeline_u32 + 1, u32::MAX, 0u32);
    }

    let mut byte = 0u8;
    loop {
        // SAFETY: `byte` is a valid one-byte buffer on this stack for the whole call.
        let read = unsafe { libc::read(lifeline, (&mut byte as *mut u8).cast(), 1) };
        // SAFETY: __errno_location returns this thread's errno slot, always valid.
        let interrupted = read < 0 && unsafe { *libc::__errno_location() } == libc::EINTR;
        if !interrupted {
            // End of file: the agent closed the write end, so it is gone.
            // SAFETY: _exit ends the process without running any user-space cleanup.
            unsafe { libc::_exit(0) };
        }
    }
}

impl Undo for StopHolder {
    fn undo(&mut self) -> Result<(), StageError> {
        let mut errors = Vec::new();

        if let Some(mut bound) = self.bound.take() {
            if let Err(error) = bound.release() {
                errors.push(error);
                self.bound = Some(bound);
            }
        }

        if let Some(holder) = self.holder.take() {
            if let Err(error) = stop(&holder) {
                errors.push(error);
            }
        }
        collect_undo_errors(errors)
    }
}

/// Kills the holder through its pidfd and waits for it to exit. A holder already
/// reaped by someone else counts as stopped.
fn stop(holder: &Holder) -> Result<(), StageError> {
    let system = |operation: &'static str, source: nix::Error| StageError::System {
        operation,
        value: format!("PID namespace holder {}", holder.pid),
        source,
    };

    match pidfd_send_signal(holder.pidfd.as_fd(), Signal::KILL) {
        Ok(()) => {}
        Err(errno) if errno == rustix::io::Errno::SRCH => return Ok(()),
        Err(errno) => return Err(system("kill", nix::Error::from_raw(errno.raw_os_error()))),
    }

    loop {
        match waitid(Id::PIDFd(holder.pidfd.as_fd()), WaitPidFlag::WEXITED) {
            Ok(_) | Err(nix::Error::ECHILD) => return Ok(()),
            Err(nix::Error::EINTR) => continue,
            Err(source) => return Err(system("wait for", source)),
        }
    }
}

/// Returns whether `pid` is alive and not a zombie, for tests.
#[cfg(test)]
pub(crate) fn is_running(pid: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name in parentheses.
    let state = status
        .rsplit(')')
        .next()
        .and_then(|rest| rest.split_whitespace().next());
    matches!(state, Some(state) if state != "Z" && state != "X")
}
