//! Messages between the caller and the container init over the sync socket.
//!
//! The socket is `SOCK_SEQPACKET`. A message is a JSON document sent as one header
//! packet holding its length (8 bytes, little endian) followed by data packets of at
//! most [`CHUNK_SIZE`] bytes, because a whole spec may exceed what one packet can carry.
//! A descriptor (the terminal master, a seccomp notify fd, each ID-mapped mount tree that
//! the configuration counts) follows its announcing message as one packet of one byte
//! carrying `SCM_RIGHTS`.

use std::io;
use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{
    recv, recvmsg, send, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags,
};
use oci_spec::runtime::{LinuxSeccomp, Process};
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
    /// Enter the rootfs with `MS_MOVE` and `chroot` instead of `pivot_root`.
    pub no_pivot: bool,
    /// OCI state of the container in JSON, the input of the hooks the init runs.
    pub state: String,
    /// The container's cgroup directory in each hierarchy, as (directory of the
    /// hierarchy below the cgroup mount point, host path), for `cgroup` mounts. The
    /// directory is empty on a pure v2 layout.
    pub cgroup_dirs: Vec<(std::path::PathBuf, std::path::PathBuf)>,
    /// Namespaces given by path that the caller joined before the clone, which the init
    /// is in already and could not open from its new user namespace.
    pub joined_by_caller: Vec<oci_spec::runtime::LinuxNamespaceType>,
    /// Number of ID-mapped mount trees that follow the configuration as descriptors, one
    /// per ID-mapped spec mount in spec order (see `init::idmap`).
    #[serde(default)]
    pub idmapped_trees: usize,
}

/// Configuration of a process started in a running container.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct ExecConfig {
    pub container_id: String,
    /// Pid of the container's init in the caller's pid namespace, whose namespaces the
    /// new process joins.
    pub target_pid: i32,
    pub process: Process,
    pub seccomp: Option<LinuxSeccomp>,
    /// The container's `linux.personality`, which the new process takes too.
    pub personality: Option<oci_spec::runtime::LinuxPersonality>,
    /// The container's `linux.memoryPolicy`, which the new process takes too.
    pub memory_policy: Option<oci_spec::runtime::LinuxMemoryPolicy>,
}

/// Messages from the caller to the init.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum ToInit {
    Config(Box<InitConfig>),
    Exec(Box<ExecConfig>),
    Start,
}

/// Failure class of the init, so the caller can tell bad input from a system failure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum FailureKind {
    System,
    InvalidSpec,
    ExecutableNotFound {
        name: String,
    },
    /// A `linux.seccomp.flags` entry that the installed libseccomp or the kernel lacks.
    SeccompFlagUnsupported,
}

/// Messages from the init to the caller. A successful exec of the user process sends
/// nothing: the socket is close-on-exec, so the caller reads end of file.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) enum FromInit {
    /// Set up and waiting for start. `warnings` name the spec settings the init left out
    /// because the kernel lacks what they need.
    Ready {
        warnings: Vec<String>,
    },
    /// The next packet carries the master of the process's terminal.
    Terminal,
    /// The next packet carries the notify fd of the seccomp filter just loaded, for the
    /// caller to send to `linux.seccomp.listenerPath`.
    SeccompNotify,
    Error {
        kind: FailureKind,
        message: String,
    },
}

/// Receives the next message from the init. A terminal master announced on the way is
/// stored in `terminal`, so the result is `Ready`, `SeccompNotify` (its fd not received
/// yet), `Error` or `None` at end of file.
pub(crate) fn recv_reply(
    fd: BorrowedFd<'_>,
    deadline: Instant,
    terminal: &mut Option<OwnedFd>,
) -> io::Result<Option<FromInit>> {
    loop {
        match recv_message::<FromInit>(fd, Some(deadline))? {
            Some(FromInit::Terminal) => *terminal = Some(recv_fd(fd, deadline)?),
            other => return Ok(other),
        }
    }
}

/// Sends `passed` as `SCM_RIGHTS` in a packet of one byte.
pub(crate) fn send_fd(fd: BorrowedFd<'_>, passed: BorrowedFd<'_>) -> io::Result<()> {
    let data = [0u8];
    let payload = [IoSlice::new(&data)];
    let fds = [passed.as_raw_fd()];
    let control = [ControlMessage::ScmRights(&fds)];
    loop {
        match sendmsg::<()>(
            fd.as_raw_fd(),
            &payload,
            &control,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    }
}

/// Receives a descriptor sent by [`send_fd`], close-on-exec.
pub(crate) fn recv_fd(fd: BorrowedFd<'_>, deadline: Instant) -> io::Result<OwnedFd> {
    wait_readable(fd, deadline)?;
    let mut data = [0u8; 1];
    let mut payload = [IoSliceMut::new(&mut data)];
    let mut control = nix::cmsg_space!([std::os::fd::RawFd; 1]);
    let message = loop {
        match recvmsg::<()>(
            fd.as_raw_fd(),
            &mut payload,
            Some(&mut control),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(message) => break message,
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
    };

    let mut received = None;
    for control in message.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = control {
            for raw in fds {
                // SAFETY: the kernel installed `raw` in this process for this message, so
                // nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                received.get_or_insert(owned);
            }
        }
    }
    received.ok_or_else(|| invalid_data("descriptor packet carries no descriptor".to_owned()))
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
