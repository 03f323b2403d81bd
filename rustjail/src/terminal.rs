//! The caller's side of a container terminal.

use std::os::fd::{AsRawFd, BorrowedFd};

use rustix::termios::{tcsetwinsize, Winsize};

use crate::error::Error;

/// Sets the window size of the terminal behind `fd`, a master from
/// [`crate::Container::take_terminal`] or [`crate::ExecProcess::take_terminal`]. The
/// kernel sends SIGWINCH to the terminal's foreground process group.
pub fn resize_terminal(fd: BorrowedFd<'_>, rows: u16, cols: u16) -> Result<(), Error> {
    let size = Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    tcsetwinsize(fd, size).map_err(|errno| Error::Terminal {
        operation: "resize",
        fd: fd.as_raw_fd(),
        source: errno.into(),
    })
}
