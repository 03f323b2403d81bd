//! The pseudo-terminal of a process with `process.terminal`.
//!
//! The master comes from the container's own devpts instance (`/dev/pts/ptmx`), so the
//! terminal belongs to the container. The slave becomes the controlling terminal and
//! stdio of the process, and the master goes to the caller over the sync socket.

use std::os::fd::{AsFd, BorrowedFd};

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout, setsid};
use rustix::pty::{ioctl_tiocgptpeer, unlockpt, OpenptFlags};

use super::{failed, InitError};
use crate::sync::{send_fd, send_message, FromInit};

/// Opens a terminal pair, makes the slave the controlling terminal and stdio of this
/// process, and sends the master to the caller. Call after the devpts mount.
pub(crate) fn set_up(sync: BorrowedFd<'_>) -> Result<(), InitError> {
    let master = open(
        "/dev/pts/ptmx",
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(failed("open terminal master /dev/pts/ptmx"))?;
    unlockpt(&master).map_err(failed("unlock terminal master"))?;
    // TIOCGPTPEER opens the slave of this very master, where a path in /dev/pts could
    // name another file.
    let slave = ioctl_tiocgptpeer(&master, OpenptFlags::RDWR | OpenptFlags::NOCTTY)
        .map_err(failed("open terminal slave"))?;

    // A new session has no controlling terminal, so the slave can become one.
    setsid().map_err(failed("create a session for the terminal"))?;
    rustix::process::ioctl_tiocsctty(&slave).map_err(failed("make the terminal controlling"))?;
    dup2_stdin(&slave).map_err(failed("make the terminal stdin"))?;
    dup2_stdout(&slave).map_err(failed("make the terminal stdout"))?;
    dup2_stderr(&slave).map_err(failed("make the terminal stderr"))?;

    send_message(sync, &FromInit::Terminal).map_err(failed("announce the terminal master"))?;
    send_fd(sync, master.as_fd()).map_err(failed("send the terminal master"))
}
