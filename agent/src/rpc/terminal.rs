//! The agent's end of a process's pseudo-terminal, and TtyWinResize.
//!
//! The master carries both directions: WriteStdin writes to it and ReadStdout reads
//! from it. Once every slave descriptor is closed, Linux fails a read of the master
//! with EIO instead of returning end of file, so [`Terminal::read`] turns EIO into
//! the empty read that the API uses for end of file.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use protocols::agent::TtyWinResizeRequest;
use protocols::empty::Empty;
use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
use tokio::io::unix::AsyncFd;

use super::process::find_container;
use super::Agent;
use crate::error::AgentError;

/// The byte a terminal in canonical mode reads as end of file (VEOF, Ctrl-D).
const END_OF_FILE_CHARACTER: u8 = 0x04;

/// The agent's end (master) of a process's pseudo-terminal.
pub struct Terminal {
    fd: AsyncFd<OwnedFd>,
}

impl Terminal {
    /// Wraps the master `fd`, switching it to non-blocking mode.
    pub fn new(fd: OwnedFd) -> io::Result<Terminal> {
        let flags = fcntl_getfl(&fd)?;
        fcntl_setfl(&fd, flags | OFlags::NONBLOCK)?;

        Ok(Terminal {
            fd: register_fd(fd)?,
        })
    }

    /// Reads up to `max` bytes of the process's output, waiting until some arrive; an
    /// empty result means the process closed the terminal.
    pub async fn read(&self, max: usize) -> io::Result<Vec<u8>> {
        let mut buffer = vec![0u8; max];

        loop {
            let mut ready = self.fd.readable().await?;
            let attempt = ready.try_io(|fd| {
                rustix::io::read(fd.get_ref(), &mut buffer[..]).map_err(io::Error::from)
            });

            match attempt {
                Ok(Ok(count)) => {
                    buffer.truncate(count);
                    return Ok(buffer);
                }
                Ok(Err(error)) if error.raw_os_error() == Some(libc::EIO) => return Ok(Vec::new()),
                Ok(Err(error)) if error.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(error)) => return Err(error),
                Err(_would_block) => continue,
            }
        }
    }

    /// Writes all of `data` as the process's input, waiting while the terminal's
    /// input queue is full.
    pub async fn write_all(&self, mut data: &[u8]) -> io::Result<()> {
        while !data.is_empty() {
            let mut ready = self.fd.writable().await?;
            let attempt =
                ready.try_io(|fd| rustix::io::write(fd.get_ref(), data).map_err(io::Error::from));

            match attempt {
                Ok(Ok(count)) => data = &data[count..],
                Ok(Err(error)) if error.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(error)) => return Err(error),
                Err(_would_block) => continue,
            }
        }

        Ok(())
    }

    /// Sends the end-of-file character, which a reader in canonical mode (the
    /// default) reads as end of file. The master stays open, because it also carries
    /// the output.
    pub async fn send_end_of_file(&self) -> io::Result<()> {
        self.write_all(&[END_OF_FILE_CHARACTER]).await
    }

    /// Sets the window size; the kernel sends SIGWINCH to the foreground process group.
    pub fn resize(&self, rows: u16, columns: u16) -> Result<(), rustjail::Error> {
        rustjail::resize_terminal(self.fd.get_ref().as_fd(), rows, columns)
    }
}

/// Registers `fd` with the tokio reactor of the current runtime.
pub(crate) fn register_fd(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the OwnedFd owns an open descriptor, which stays open and keeps its
    // number until the AsyncFd that takes ownership of it drops it.
    let registered = unsafe { AsyncFd::register(fd) }?;
    Ok(registered)
}

/// Changes the window size of the terminal of a process.
pub async fn tty_win_resize(
    agent: Arc<Agent>,
    request: TtyWinResizeRequest,
) -> Result<Empty, AgentError> {
    let invalid = |reason| AgentError::InvalidWindowSize {
        container: request.container_id.clone(),
        rows: request.row,
        columns: request.column,
        reason,
    };
    let rows = u16::try_from(request.row).map_err(|_| invalid("rows exceed 65535"))?;
    let columns = u16::try_from(request.column).map_err(|_| invalid("columns exceed 65535"))?;

    let handle = find_container(&agent, &request.container_id).await?;
    let terminal = {
        let container = handle.lock().await;
        container.ensure_present()?;
        terminal_of(&container, &request.exec_id)?
    };

    terminal
        .resize(rows, columns)
        .map_err(|source| AgentError::Resize {
            container: request.container_id.clone(),
            exec: request.exec_id.clone(),
            source: Box::new(source),
        })?;
    Ok(Empty::new())
}

fn terminal_of(
    container: &crate::sandbox::Container,
    exec_id: &str,
) -> Result<Arc<Terminal>, AgentError> {
    let process = container.process(exec_id)?;

    process
        .io
        .terminal
        .clone()
        .ok_or_else(|| AgentError::NoTerminal {
            container: container.id.clone(),
            exec: exec_id.to_string(),
        })
}
