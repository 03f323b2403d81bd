//! The one place where the agent collects exited child processes.
//!
//! The agent is a child subreaper, so container processes whose parent exits
//! are reparented to it and must be reaped here too. One task waits for
//! SIGCHLD and calls `waitpid(-1, WNOHANG)` until no exited child is left, then
//! hands each exit status to the waiter registered for that pid. Nothing else
//! in the agent may wait for a child (no `tokio::process`, no
//! `std::process::Child::wait`), because whichever call reaps first takes the
//! status from the other.
//!
//! A process can exit before its creator registers it. Such exits are kept in a
//! bounded map for a while, and [`Reaper::register`] looks there first. A
//! [`Checkpoint`] taken before the process is created keeps an older process
//! that had the same pid from being taken for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use slog::{debug, error, Logger};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Maximum number of exits kept for processes not registered yet.
const UNCLAIMED_MAX: usize = 1024;

/// How long an unclaimed exit is kept; orphans reparented to the agent are never claimed.
const UNCLAIMED_TTL: Duration = Duration::from_secs(120);

/// Exit status as the Kata API reports it: the exit code, or 128 + N for signal N.
pub type ExitStatus = i32;

/// Receiver whose value becomes `Some(status)` once the process has exited.
pub type ExitReceiver = watch::Receiver<Option<ExitStatus>>;

/// Position in the sequence of reaped processes, taken before creating a child.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Checkpoint(u64);

/// Errors of starting the reaper.
#[derive(Debug, thiserror::Error)]
pub enum ReaperError {
    #[error("make the agent a child subreaper: {0}")]
    Subreaper(#[source] nix::Error),

    #[error("install SIGCHLD handler: {0}")]
    Signal(#[source] std::io::Error),
}

/// Handle to the reaper state; clones share it.
#[derive(Clone, Default)]
pub struct Reaper {
    state: Arc<Mutex<ReaperState>>,
}

#[derive(Default)]
struct ReaperState {
    waiters: HashMap<i32, watch::Sender<Option<ExitStatus>>>,
    unclaimed: HashMap<i32, UnclaimedExit>,
    reaped: u64,
}

struct UnclaimedExit {
    status: ExitStatus,
    sequence: u64,
    at: Instant,
}

impl Reaper {
    /// Makes the agent a subreaper and starts the SIGCHLD task on the current runtime.
    pub fn start(logger: Logger) -> Result<Reaper, ReaperError> {
        nix::sys::prctl::set_child_subreaper(true).map_err(ReaperError::Subreaper)?;

        let mut sigchld = signal(SignalKind::child()).map_err(ReaperError::Signal)?;
        let reaper = Reaper::default();

        let task_reaper = reaper.clone();
        tokio::spawn(async move {
            // A child may have exited before the handler was installed, so reap once first.
            loop {
                task_reaper.reap_exited(&logger);
                if sigchld.recv().await.is_none() {
                    break;
                }
            }
        });

        Ok(reaper)
    }

    /// Marks the present point, to be passed to [`Reaper::register`] for a child created after it.
    pub fn checkpoint(&self) -> Checkpoint {
        Checkpoint(self.lock().reaped)
    }

    /// Returns a receiver for the exit status of `pid`, a child created after `since`.
    pub fn register(&self, pid: i32, since: Checkpoint) -> ExitReceiver {
        let mut state = self.lock();

        if let Some(exit) = state.unclaimed.remove(&pid) {
            if exit.sequence > since.0 {
                return watch::channel(Some(exit.status)).1;
            }
        }

        if let Some(sender) = state.waiters.get(&pid) {
            return sender.subscribe();
        }

        let (sender, receiver) = watch::channel(None);
        state.waiters.insert(pid, sender);
        receiver
    }

    /// Collects every exited child without blocking and delivers the statuses.
    pub fn reap_exited(&self, logger: &Logger) {
        loop {
            let (pid, status) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, code),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, 128 + signal as i32),
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    error!(logger, "waitpid failed"; "error" => %errno);
                    return;
                }
            };

            debug!(logger, "child exited"; "pid" => pid.as_raw(), "status" => status);
            self.deliver(pid.as_raw(), status);
        }
    }

    fn deliver(&self, pid: i32, status: ExitStatus) {
        let mut state = self.lock();
        state.reaped += 1;

        if let Some(sender) = state.waiters.remove(&pid) {
            sender.send_replace(Some(status));
            return;
        }

        let now = Instant::now();
        state
            .unclaimed
            .retain(|_, exit| now.duration_since(exit.at) < UNCLAIMED_TTL);
        if state.unclaimed.len() >= UNCLAIMED_MAX {
            evict_oldest(&mut state.unclaimed);
        }

        let sequence = state.reaped;
        state.unclaimed.insert(
            pid,
            UnclaimedExit {
                status,
                sequence,
                at: now,
            },
        );
    }

    fn lock(&self) -> MutexGuard<'_, ReaperState> {
        // A panic while holding this lock leaves maps that are still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn evict_oldest(unclaimed: &mut HashMap<i32, UnclaimedExit>) {
    let oldest = unclaimed
        .iter()
        .min_by_key(|(_, exit)| exit.sequence)
        .map(|(pid, _)| *pid);

    if let Some(pid) = oldest {
        unclaimed.remove(&pid);
    }
}

/// Serialises the unit tests that start a reaper, because two reapers in one
/// process would take each other's children.
#[cfg(test)]
pub(crate) static TEST_REAPER_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[cfg(test)]
mod tests {
    use super::*;

    fn test_logger() -> Logger {
        Logger::root(slog::Discard, slog::o!())
    }

    #[test]
    fn exit_before_register_is_kept() {
        let reaper = Reaper::default();
        let since = reaper.checkpoint();

        reaper.deliver(4242, 7);
        let receiver = reaper.register(4242, since);

        assert_eq!(*receiver.borrow(), Some(7));
    }

    #[test]
    fn exit_older_than_checkpoint_is_ignored() {
        let reaper = Reaper::default();

        reaper.deliver(4242, 7);
        let since = reaper.checkpoint();
        let receiver = reaper.register(4242, since);

        assert_eq!(*receiver.borrow(), None);
    }

    #[test]
    fn exit_after_register_reaches_waiter() {
        let reaper = Reaper::default();
        let receiver = reaper.register(4343, reaper.checkpoint());
        let second = reaper.register(4343, reaper.checkpoint());

        reaper.deliver(4343, 137);

        assert_eq!(*receiver.borrow(), Some(137));
        assert_eq!(*second.borrow(), Some(137));
    }

    #[test]
    fn unclaimed_exits_are_bounded() {
        let reaper = Reaper::default();
        let since = reaper.checkpoint();

        for pid in 0..(UNCLAIMED_MAX as i32 + 10) {
            reaper.deliver(100_000 + pid, 0);
        }

        assert_eq!(reaper.lock().unclaimed.len(), UNCLAIMED_MAX);
        assert_eq!(*reaper.register(100_000, since).borrow(), None);
        let newest = 100_000 + UNCLAIMED_MAX as i32 + 9;
        assert_eq!(*reaper.register(newest, since).borrow(), Some(0));
    }

    #[tokio::test]
    async fn reaps_real_children_with_status() {
        let _serial = TEST_REAPER_LOCK.lock().await;
        let reaper = Reaper::start(test_logger()).expect("start reaper");

        let since = reaper.checkpoint();
        let exits = spawn_forgotten("/bin/sh", &["-c", "exit 3"]);
        let killed = spawn_forgotten("/bin/sleep", &["30"]);
        let exits_receiver = reaper.register(exits, since);
        let killed_receiver = reaper.register(killed, since);
        nix::sys::signal::kill(Pid::from_raw(killed), nix::sys::signal::Signal::SIGKILL)
            .expect("kill sleep");

        assert_eq!(wait_exit(exits_receiver).await, 3);
        assert_eq!(wait_exit(killed_receiver).await, 128 + libc::SIGKILL);
    }

    async fn wait_exit(mut receiver: ExitReceiver) -> ExitStatus {
        let waited = tokio::time::timeout(
            Duration::from_secs(10),
            receiver.wait_for(|status| status.is_some()),
        )
        .await
        .expect("child exit seen in time");

        waited.expect("reaper alive").expect("status present")
    }

    /// Starts a child whose status only the reaper under test collects.
    fn spawn_forgotten(program: &str, args: &[&str]) -> i32 {
        let child = std::process::Command::new(program)
            .args(args)
            .spawn()
            .expect("spawn child");

        let pid = child.id() as i32;
        std::mem::forget(child);
        pid
    }
}
