//! The pseudo-terminal of a process with `process.terminal`.
//!
//! The master comes from the container's own devpts instance (`/dev/pts/ptmx`), so the
//! terminal belongs to the container. The slave becomes the controlling terminal and
//! stdio of the process, and the master goes to the caller over the sync socket.
//! `process.consoleSize` is set on the terminal before the process starts, so the size it
//! reads first is already the spec's.

use std::os::fd::{AsFd, BorrowedFd};

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout, setsid};
use oci_spec::runtime::Box as ConsoleSize;
use rustix::pty::{ioctl_tiocgptpeer, unlockpt, OpenptFlags};
use rustix::termios::{tcsetwinsize, Winsize};

use super::{failed, InitError};
use crate::sync::{send_fd, send_message, FromInit};

/// Opens a terminal pair of `size`, makes the slave the controlling terminal and stdio
/// of this process, and sends the master to the caller. Call after the devpts mount.
pub(crate) fn set_up(sync: BorrowedFd<'_>, size: Option<ConsoleSize>) -> Result<(), InitError> {
    let size = size.map(window_size).transpose()?;
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
    if let Some(size) = size {
        tcsetwinsize(&master, size).map_err(failed(format_args!(
            "set terminal size to process.consoleSize {} rows {} columns",
            size.ws_row, size.ws_col
        )))?;
    }

    // A new session has no controlling terminal, so the slave can become one.
    setsid().map_err(failed("create a session for the terminal"))?;
    rustix::process::ioctl_tiocsctty(&slave).map_err(failed("make the terminal controlling"))?;
    dup2_stdin(&slave).map_err(failed("make the terminal stdin"))?;
    dup2_stdout(&slave).map_err(failed("make the terminal stdout"))?;
    dup2_stderr(&slave).map_err(failed("make the terminal stderr"))?;

    send_message(sync, &FromInit::Terminal).map_err(failed("announce the terminal master"))?;
    send_fd(sync, master.as_fd()).map_err(failed("send the terminal master"))
}

/// Converts `process.consoleSize`, whose fields are u64 in the spec, to a window size,
/// whose fields are u16 in the kernel.
fn window_size(size: ConsoleSize) -> Result<Winsize, InitError> {
    let cells = |value: u64, name: &str| {
        u16::try_from(value).map_err(|_| {
            InitError::invalid_spec(format!(
                "process.consoleSize.{name} {value} is more than {}",
                u16::MAX
            ))
        })
    };
    Ok(Winsize {
        ws_row: cells(size.height(), "height")?,
        ws_col: cells(size.width(), "width")?,
        ws_xpixel: 0,
        ws_ypixel: 0,
    })
}
