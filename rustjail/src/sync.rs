//! Messages between the caller and the container init over the sync socket.
//!
//! The socket is `SOCK_SEQPACKET`. A message is a JSON document sent as one header
//! packet holding its length (8 bytes, little endian) followed by data packets of at
//! most [`CHUNK_SIZE`] bytes, because a whole spec may exceed what one packet can carry.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recv, send, MsgFlags};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

const CHUNK_SIZE: usize = 32 * 1024;

/// Largest message accepted, so a corrupt header cannot make the reader allocate without
/// bound. A spec is a few kilobytes.
const MAX_MESSAGE_SIZE: u64 = 16 * 1024 * 1024;

/// Configuration of the init besides its file descriptors.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct InitConfig {
    pub container_id: String,
    pub spec: oci_spec::runtime::Spec,
}

/// Messages from the caller to the init.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToInit {
    Config(Box<InitConfig>),
    Start,
}

/// Failure class of the init, so the caller can tell bad input from a system failure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum FailureKind {
    System,
    InvalidSpec,
    ExecutableNotFound { name: String },
}

/// Messages from the init to the caller. A successful exec of the user process sends
/// nothing: the socket is close-on-exec, so the caller reads end of file.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromInit {
    Ready,
    Error { kind: FailureKind, message: String },
}

/// Sends `message` as a header packet and data packets.
pub(crate) fn send_message<T: Serialize>(fd: BorrowedFd<'_>, message: &T) -> io::Result<()> {
    let data = serde_json::to_vec(message).map_err(io::Error::other)?;

    let header = (data.len() as u64).to_le_bytes();
    send_packet(fd, &header)?;

    for chunk in data.chunks(CHUNK_SIZE) {
        send_packet(fd, chunk)?;
    }
    Ok(())
}

/// Receives one message. Returns `None` when the peer closed the socket before a
/// message began, and fails with `TimedOut` when `deadline` passes first.
pub(crate) fn recv_message<T: DeserializeOwned>(
    fd: BorrowedFd<'_>,
    deadline: Option<Instant>,
) -> io::Result<Option<T>> {
    let mut buffer = vec![0u8; 2 * CHUNK_SIZE];

    let header_len = recv_packet(fd, &mut buffer, deadline)?;
    if header_len == 0 {
        return Ok(None);
    }
    if header_len != 8 {
        return Err(invalid_data(format!(
            "message header has {header_len} bytes, expected 8"
        )));
    }
    let mut header = [0u8; 8];
    header.copy_from_slice(&buffer[..8]);
    let total = u64::from_le_bytes(header);
    if total > MAX_MESSAGE_SIZE {
        return Err(invalid_data(format!(
            "message of {total} bytes exceeds the maximum {MAX_MESSAGE_SIZE}"
        )));
    }

    let mut data = Vec::with_capacity(total as usize);
    while (data.len() as u64) < total {
        let len = recv_packet(fd, &mut buffer, deadline)?;
        if len == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
        }
        data.extend_from_slice(&buffer[..len]);
    }
    if data.len() as u64 != total {
        return Err(invalid_data(format!(
            "message has {} bytes, header announced {total}",
            data.len()
        )));
    }

    serde_json::from_slice(&data)
        .map(Some)
        .map_err(io::Error::other)
}

fn send_packet(fd: BorrowedFd<'_>, packet: &[u8]) -> io::Result<()> {
    loop {
        match send(fd.as_raw_fd(), packet, MsgFlags::MSG_NOSIGNAL) {
            Ok(sent) if sent == packet.len() => return Ok(()),
            Ok(sent) => {
                return Err(invalid_data(format!(
                    "sent {sent} of {} bytes of a packet",
                    packet.len()
                )))
            }
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// Receives one packet into `buffer`, waiting at most until `deadline`. Returns 0 at end
/// of file.
fn recv_packet(
    fd: BorrowedFd<'_>,
    buffer: &mut [u8],
    deadline: Option<Instant>,
) -> io::Result<usize> {
    loop {
        if let Some(deadline) = deadline {
            wait_readable(fd, deadline)?;
        }
        match recv(fd.as_raw_fd(), buffer, MsgFlags::empty()) {
            Ok(len) => return Ok(len),
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
}

fn wait_readable(fd: BorrowedFd<'_>, deadline: Instant) -> io::Result<()> {
    loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(io::Error::from(io::ErrorKind::TimedOut));
        }
        let millis = remaining.as_millis().clamp(1, i32::MAX as u128) as i32;
        let timeout = PollTimeout::try_from(millis).map_err(io::Error::other)?;

        let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut fds, timeout) {
            Ok(0) => continue,
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
}

fn invalid_data(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}
