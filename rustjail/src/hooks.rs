//! The six OCI hook points.
//!
//! createRuntime, prestart, poststart and poststop run in the caller's namespaces, started
//! by the caller. createContainer runs in the init after the mounts and before
//! `pivot_root`, startContainer in the init after start and before `execve`, so both run
//! in the container's namespaces. Each hook gets the OCI state on stdin.
//!
//! Each hook runs as the child of a helper process cloned with exit signal 0 (see
//! `spawn::spawn_hook`), which is waited for through a pidfd with `__WALL`. A caller's
//! SIGCHLD reaper that calls `waitpid(-1, ...)` without `__WALL` or `__WCLONE` never
//! reaps the helper, which is the rule such a reaper must follow.

use std::ffi::CString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::unistd::pipe2;
use oci_spec::runtime::{Hook, Hooks};
use rustix::process::{pidfd_send_signal, waitid, Signal, WaitId, WaitIdOptions};

use crate::spawn::{above_stdio, spawn_hook, HookChild};

/// How long a hook without `timeout` may run. The OCI spec sets no limit, but an agent
/// must not hang on a stuck hook forever.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// Bytes of a failed hook's stderr kept for the error message.
const STDERR_KEPT: usize = 4096;

/// One of the points in a container's life where hooks run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HookPoint {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl HookPoint {
    pub fn name(self) -> &'static str {
        match self {
            HookPoint::Prestart => "prestart",
            HookPoint::CreateRuntime => "createRuntime",
            HookPoint::CreateContainer => "createContainer",
            HookPoint::StartContainer => "startContainer",
            HookPoint::Poststart => "poststart",
            HookPoint::Poststop => "poststop",
        }
    }

    fn hooks(self, hooks: &Hooks) -> Option<&Vec<Hook>> {
        #[allow(deprecated)]
        let prestart = hooks.prestart();
        match self {
            HookPoint::Prestart => prestart.as_ref(),
            HookPoint::CreateRuntime => hooks.create_runtime().as_ref(),
            HookPoint::CreateContainer => hooks.create_container().as_ref(),
            HookPoint::StartContainer => hooks.start_container().as_ref(),
            HookPoint::Poststart => hooks.poststart().as_ref(),
            HookPoint::Poststop => hooks.poststop().as_ref(),
        }
    }
}

/// A hook that could not run or did not succeed.
#[derive(Debug, thiserror::Error)]
#[error("{point} hook {path}: {reason}")]
pub struct HookError {
    pub point: &'static str,
    pub path: String,
    pub reason: String,
}

/// Runs the hooks of `point` in order, stopping at the first failure.
pub(crate) fn run_all(
    point: HookPoint,
    hooks: Option<&Hooks>,
    state: &str,
) -> Result<(), HookError> {
    for hook in hooks
        .and_then(|hooks| point.hooks(hooks))
        .into_iter()
        .flatten()
    {
        run_one(point, hook, state)?;
    }
    Ok(())
}

fn run_one(point: HookPoint, hook: &Hook, state: &str) -> Result<(), HookError> {
    let path = hook.path();
    let fail = |reason: String| HookError {
        point: point.name(),
        path: path.display().to_string(),
        reason,
    };
    if !path.is_absolute() {
        return Err(fail("path must be absolute".to_owned()));
    }
    let cstring = |bytes: &[u8]| {
        CString::new(bytes).map_err(|_| fail("argument contains a NUL byte".to_owned()))
    };
    let program = cstring(path.as_os_str().as_bytes())?;
    let argv = match hook.args().as_deref() {
        Some(args) if !args.is_empty() => args
            .iter()
            .map(|arg| cstring(arg.as_bytes()))
            .collect::<Result<Vec<_>, _>>()?,
        _ => vec![program.clone()],
    };
    let envp = hook
        .env()
        .iter()
        .flatten()
        .map(|entry| cstring(entry.as_bytes()))
        .collect::<Result<Vec<_>, _>>()?;
    let timeout = match hook.timeout() {
        Some(seconds) if seconds <= 0 => {
            return Err(fail(format!("timeout {seconds} must be positive")))
        }
        Some(seconds) => Duration::from_secs(seconds as u64),
        None => DEFAULT_TIMEOUT,
    };

    let pipe = || -> std::io::Result<(OwnedFd, OwnedFd)> {
        let (read, write) = pipe2(OFlag::O_CLOEXEC)?;
        Ok((above_stdio(read)?, above_stdio(write)?))
    };
    let (stdin_read, stdin_write) =
        pipe().map_err(|error| fail(format!("create stdin pipe: {error}")))?;
    let (stderr_read, stderr_write) =
        pipe().map_err(|error| fail(format!("create stderr pipe: {error}")))?;
    let null = File::options()
        .write(true)
        .open("/dev/null")
        .map_err(|error| fail(format!("open /dev/null: {error}")))
        .and_then(|file| {
            above_stdio(file.into()).map_err(|error| fail(format!("move /dev/null: {error}")))
        })?;

    let child = spawn_hook(
        &program,
        &argv,
        &envp,
        [
            stdin_read.as_raw_fd(),
            null.as_raw_fd(),
            stderr_write.as_raw_fd(),
        ],
    )
    .map_err(|error| fail(format!("clone: {error}")))?;
    drop((stdin_read, stderr_write, null));

    // A hook that ignores its stdin closes the pipe early, and that is no failure.
    let _ = File::from(stdin_write).write_all(state.as_bytes());
    let stderr = std::thread::spawn(move || {
        let mut text = Vec::new();
        let _ = File::from(stderr_read).read_to_end(&mut text);
        text
    });

    let status = wait(&child, timeout).map_err(fail)?;
    let stderr = stderr.join().unwrap_or_default();
    if status == 0 {
        return Ok(());
    }
    let start = stderr.len().saturating_sub(STDERR_KEPT);
    Err(fail(format!(
        "exited with status {status}: {}",
        String::from_utf8_lossy(&stderr[start..]).trim()
    )))
}

/// Time a hook's helper gets to kill and reap a timed-out hook before it is killed itself.
const HELPER_STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Waits for the hook's helper to exit within `timeout`, then has it kill the hook. Returns the hook's exit code, or 128 plus the signal number.
fn wait(child: &HookChild, timeout: Duration) -> Result<i32, String> {
    let exited = wait_readable(&child.pidfd, timeout)
        .map_err(|errno| format!("wait for pid {}: {errno}", child.pid))?;
    if !exited {
        // On SIGTERM the helper kills the hook and reaps it. SIGKILL is the fallback for a
        // helper that does not exit, and it would orphan the hook.
        pidfd_send_signal(&child.pidfd, Signal::TERM)
            .map_err(|errno| format!("stop pid {} after timeout: {errno}", child.pid))?;
        let stopped = wait_readable(&child.pidfd, HELPER_STOP_TIMEOUT)
            .map_err(|errno| format!("wait for pid {}: {errno}", child.pid))?;
        if !stopped {
            pidfd_send_signal(&child.pidfd, Signal::KILL)
                .map_err(|errno| format!("kill pid {} after timeout: {errno}", child.pid))?;
        }
    }

    let options = WaitIdOptions::EXITED | WaitIdOptions::from_bits_retain(libc::__WALL as u32);
    let status = loop {
        match waitid(WaitId::PidFd(child.pidfd.as_fd()), options) {
            Ok(Some(status)) => break status,
            Ok(None) => return Err(format!("pid {} has no exit status", child.pid)),
            Err(rustix::io::Errno::INTR) => continue,
            Err(errno) => return Err(format!("reap pid {}: {errno}", child.pid)),
        }
    };
    if !exited {
        return Err(format!(
            "timed out after {} s and was killed",
            timeout.as_secs()
        ));
    }
    if let Some(code) = status.exit_status() {
        return Ok(code);
    }
    Ok(128 + status.terminating_signal().unwrap_or(0))
}

/// Polls `pidfd` until the process exits (true) or `timeout` passes (false).
fn wait_readable(pidfd: &OwnedFd, timeout: Duration) -> Result<bool, Errno> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let remaining = deadline.saturating_duration_since(std::time::Instant::now());
        if remaining.is_zero() {
            return Ok(false);
        }
        let millis = remaining.as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
        match poll(
            &mut fds,
            PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(0) => continue,
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno),
        }
    }
}
