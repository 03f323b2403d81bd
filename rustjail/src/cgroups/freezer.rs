//! Freezing and thawing every process of a cgroup: `freezer.state` on v1,
//! `cgroup.freeze` on v2.

use std::fs;
use std::os::fd::AsFd;
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::resources::write_file;
use super::Cgroup;
use crate::error::Error;

/// How long a freeze may take before it counts as failed. Freezing waits for every task
/// to leave the kernel, which is quick unless one is stuck in uninterruptible sleep.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

impl Cgroup {
    /// Reports whether the cgroup is frozen or being frozen. A cgroup without a freezer
    /// is never frozen.
    pub(crate) fn is_frozen(&self) -> Result<bool, Error> {
        let targets: Vec<_> = self.hierarchies().collect();
        let v1 = targets
            .iter()
            .find(|(hierarchy, _)| !hierarchy.unified && hierarchy.has("freezer"));
        let v2 = targets.iter().find(|(hierarchy, _)| hierarchy.unified);
        match v1.or(v2) {
            Some((hierarchy, directory)) if hierarchy.unified => {
                Ok(read(&directory.join("cgroup.freeze"))?.trim() == "1")
            }
            Some((_, directory)) => {
                let state = read(&directory.join("freezer.state"))?;
                Ok(matches!(state.trim(), "FROZEN" | "FREEZING"))
            }
            None => Ok(false),
        }
    }

    /// Freezes (true) or thaws (false) the cgroup and returns once the kernel reports the
    /// new state.
    pub(crate) fn set_frozen(&self, frozen: bool) -> Result<(), Error> {
        let targets: Vec<_> = self.hierarchies().collect();
        let v1 = targets
            .iter()
            .find(|(hierarchy, _)| !hierarchy.unified && hierarchy.has("freezer"));
        // The v2 freezer is part of the core, not a controller, so any v2 hierarchy has it.
        let v2 = targets.iter().find(|(hierarchy, _)| hierarchy.unified);
        let Some((hierarchy, directory)) = v1.or(v2).copied() else {
            return Err(Error::Cgroup {
                operation: "find the freezer for",
                path: self.paths.first().cloned().unwrap_or_default(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "no v1 freezer and no v2 hierarchy is mounted",
                ),
            });
        };

        let deadline = Instant::now() + FREEZE_TIMEOUT;
        if hierarchy.unified {
            write_file(
                &directory.join("cgroup.freeze"),
                if frozen { "1" } else { "0" },
            )?;
            wait_v2(directory, frozen, deadline)
        } else {
            let state = if frozen { "FROZEN" } else { "THAWED" };
            wait_v1(directory, state, deadline)
        }
    }
}

/// Writes `state` to `freezer.state` until the file reads back the same. v1 reports
/// FREEZING while tasks are still being frozen, and it sends no notification, so the
/// file is polled with a growing delay until `deadline`.
fn wait_v1(directory: &Path, state: &str, deadline: Instant) -> Result<(), Error> {
    let path = directory.join("freezer.state");
    let mut delay = Duration::from_millis(1);
    loop {
        write_file(&path, state)?;
        let current = read(&path)?;
        if current.trim() == state {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(timed_out(&path, current.trim()));
        }
        thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// Waits until `cgroup.events` reports `frozen 1` (or 0). The kernel wakes pollers of
/// that file with POLLPRI when it changes.
fn wait_v2(directory: &Path, frozen: bool, deadline: Instant) -> Result<(), Error> {
    let path = directory.join("cgroup.events");
    let expected = if frozen { "frozen 1" } else { "frozen 0" };
    let file = fs::File::open(&path).map_err(|source| Error::Cgroup {
        operation: "open",
        path: path.clone(),
        source,
    })?;
    loop {
        let events = read(&path)?;
        if events.lines().any(|line| line.trim() == expected) {
            return Ok(());
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(timed_out(&path, &events));
        }
        let millis = remaining.as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLPRI)];
        match poll(
            &mut fds,
            PollTimeout::try_from(millis).unwrap_or(PollTimeout::MAX),
        ) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => {}
            Err(errno) => {
                return Err(Error::Cgroup {
                    operation: "poll",
                    path,
                    source: errno.into(),
                })
            }
        }
    }
}

fn read(path: &Path) -> Result<String, Error> {
    fs::read_to_string(path).map_err(|source| Error::Cgroup {
        operation: "read",
        path: path.to_path_buf(),
        source,
    })
}

fn timed_out(path: &Path, state: &str) -> Error {
    Error::Cgroup {
        operation: "wait for freezer state in",
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("still {state:?} after {} s", FREEZE_TIMEOUT.as_secs()),
        ),
    }
}
