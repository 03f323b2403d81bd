//! Non-blocking ends of a container's stdio pipes, driven by the tokio reactor.

use std::io;
use std::os::fd::OwnedFd;

use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
use tokio::io::unix::AsyncFd;

/// Sets O_NONBLOCK on our open file description; the container's end keeps its own flags.
fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    let flags = fcntl_getfl(fd)?;
    fcntl_setfl(fd, flags | OFlags::NONBLOCK)?;
    Ok(())
}

/// Registers `fd` with the tokio reactor of the current runtime.
fn register(fd: OwnedFd) -> io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the OwnedFd owns an open descriptor that stays open, and keeps returning
    // the same number, until the AsyncFd that takes ownership of it drops it.
    let registered = unsafe { AsyncFd::register(fd) }?;
    Ok(registered)
}

/// The agent's read end of a container's stdout or stderr pipe.
pub struct PipeReader {
    fd: AsyncFd<OwnedFd>,
}

impl PipeReader {
    /// Wraps `fd`, switching it to non-blocking mode.
    pub fn new(fd: OwnedFd) -> io::Result<PipeReader> {
        set_nonblocking(&fd)?;
        Ok(PipeReader { fd: register(fd)? })
    }

    /// Reads up to `max` bytes, waiting until some arrive; an empty result means end of file.
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
                Ok(Err(error)) if error.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(error)) => return Err(error),
                Err(_would_block) => continue,
            }
        }
    }
}

/// The agent's write end of a container's stdin pipe.
pub struct PipeWriter {
    fd: AsyncFd<OwnedFd>,
}

impl PipeWriter {
    /// Wraps `fd`, switching it to non-blocking mode.
    pub fn new(fd: OwnedFd) -> io::Result<PipeWriter> {
        set_nonblocking(&fd)?;
        Ok(PipeWriter { fd: register(fd)? })
    }

    /// Writes all of `data`, waiting while the pipe is full.
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn data_then_end_of_file() {
        let (read_end, write_end) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("create pipe");
        let reader = PipeReader::new(read_end).expect("wrap reader");
        let writer = PipeWriter::new(write_end).expect("wrap writer");

        writer.write_all(b"hello").await.expect("write");
        let data = reader.read(3).await.expect("read");
        assert_eq!(data, b"hel");

        drop(writer);
        let rest = reader.read(16).await.expect("read rest");
        assert_eq!(rest, b"lo");
        let end = reader.read(16).await.expect("read at end");
        assert!(end.is_empty());
    }

    #[tokio::test]
    async fn read_waits_for_data() {
        let (read_end, write_end) =
            rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).expect("create pipe");
        let reader = PipeReader::new(read_end).expect("wrap reader");
        let writer = PipeWriter::new(write_end).expect("wrap writer");

        let pending = tokio::time::timeout(Duration::from_millis(50), reader.read(8)).await;
        assert!(pending.is_err(), "read returned before any data");

        writer.write_all(b"x").await.expect("write");
        let data = tokio::time::timeout(Duration::from_secs(5), reader.read(8))
            .await
            .expect("read after write")
            .expect("read ok");
        assert_eq!(data, b"x");
    }
}
