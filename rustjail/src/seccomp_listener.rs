//! The caller's side of `SCMP_ACT_NOTIFY`: the notify fd that a container's process
//! passes after loading its seccomp filter goes to `linux.seccomp.listenerPath`, with the
//! container process state of the runtime spec.
//!
//! The caller sends it, not the init, because the path lies in the caller's mount
//! namespace and the init has left it by then. Every loaded filter has its own notify
//! fd, so the listener gets one connection for the container's process at start and one
//! for each process started by exec.

use std::io;
use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::socket::{
    connect, send, sendmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessage, MsgFlags,
    SockFlag, SockType, UnixAddr,
};
use nix::sys::time::{TimeVal, TimeValLike};
use oci_spec::runtime::ContainerState;
use serde::Serialize;
use slog::debug;

use crate::container::Container;
use crate::error::Error;
use crate::sync::{recv_fd, recv_reply, FromInit};

/// Name of the notify fd in the `fds` list of the container process state.
const SECCOMP_FD_NAME: &str = "seccompFd";

/// The container process state that the runtime spec defines for the listener.
#[derive(Debug, Serialize)]
struct ProcessState<'a> {
    #[serde(rename = "ociVersion")]
    oci_version: String,
    fds: [&'a str; 1],
    pid: i32,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<&'a str>,
    state: serde_json::Value,
}

impl Container {
    /// Receives the reply of a process that was sent start or exec, as `recv_reply`
    /// does, and passes each seccomp notify fd that arrives on the way to the listener at
    /// once, because a notified syscall of the process, `execve` among them, waits until
    /// a listener responds.
    ///
    /// `pid` is the process's pid in the caller's pid namespace and `status` the
    /// container status the listener sees. The outer error is a failed send to the
    /// listener, the inner one a failure of the sync socket.
    pub(crate) fn recv_reply_with_listener(
        &self,
        sync: BorrowedFd<'_>,
        deadline: Instant,
        terminal: &mut Option<OwnedFd>,
        pid: i32,
        status: ContainerState,
    ) -> Result<io::Result<Option<FromInit>>, Error> {
        loop {
            match recv_reply(sync, deadline, terminal) {
                Ok(Some(FromInit::SeccompNotify)) => {}
                other => return Ok(other),
            }
            let notify = match recv_fd(sync, deadline) {
                Ok(notify) => notify,
                Err(source) => return Ok(Err(source)),
            };
            self.send_to_listener(notify.as_fd(), pid, status, deadline)?;
        }
    }

    /// Sends `notify` with the container process state to the listener. The caller's
    /// copy of the fd closes when the caller drops it, and the listener keeps its own.
    fn send_to_listener(
        &self,
        notify: BorrowedFd<'_>,
        pid: i32,
        status: ContainerState,
        deadline: Instant,
    ) -> Result<(), Error> {
        let seccomp = self.seccomp.as_ref();
        // The init checks for a listener before it loads a notifying filter, so a
        // missing one means the process sent a notify fd it should not have.
        let Some(path) = seccomp.and_then(|seccomp| seccomp.listener_path().as_ref()) else {
            return Err(Error::Init {
                container: self.id.clone(),
                message: "process sent a seccomp notify fd, but linux.seccomp.listenerPath \
                          is not set"
                    .to_owned(),
            });
        };
        let metadata = seccomp.and_then(|seccomp| seccomp.listener_metadata().as_deref());
        let payload = process_state(&self.state_json(status), pid, metadata);

        send_with_fd(path, &payload, notify, deadline).map_err(|source| {
            Error::SeccompListener {
                container: self.id.clone(),
                path: path.clone(),
                source,
            }
        })?;
        debug!(self.logger, "sent seccomp notify fd to listener"; "pid" => pid, "path" => %path.display());
        Ok(())
    }
}

/// Returns the container process state in JSON. `state` is the container's OCI state,
/// whose `ociVersion` the process state repeats.
fn process_state(state: &str, pid: i32, metadata: Option<&str>) -> Vec<u8> {
    let state: serde_json::Value = serde_json::from_str(state).unwrap_or_default();
    let oci_version = state
        .get("ociVersion")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let process_state = ProcessState {
        oci_version,
        fds: [SECCOMP_FD_NAME],
        pid,
        metadata,
        state,
    };
    // Strings, numbers and a JSON value always serialize.
    serde_json::to_vec(&process_state).unwrap_or_default()
}

/// Connects to the `SOCK_STREAM` socket at `path`, sends `payload` with `fd` as
/// `SCM_RIGHTS` on its first part, and closes the connection, as the runtime spec
/// requires one state per connection. Gives up with `EAGAIN` at `deadline`.
fn send_with_fd(
    path: &Path,
    payload: &[u8],
    fd: BorrowedFd<'_>,
    deadline: Instant,
) -> io::Result<()> {
    let socket = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // The send timeout bounds connect too, on a listener whose backlog is full.
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    let timeout = TimeVal::milliseconds(remaining.as_millis().min(i64::MAX as u128) as i64);
    setsockopt(&socket, sockopt::SendTimeout, &timeout)?;
    let address = UnixAddr::new(path)?;
    retry_interrupted(|| connect(socket.as_raw_fd(), &address))?;

    let fds = [fd.as_raw_fd()];
    let control = [ControlMessage::ScmRights(&fds)];
    let mut sent = retry_interrupted(|| {
        sendmsg::<()>(
            socket.as_raw_fd(),
            &[IoSlice::new(payload)],
            &control,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )
    })?;
    while sent < payload.len() {
        sent += retry_interrupted(|| {
            send(socket.as_raw_fd(), &payload[sent..], MsgFlags::MSG_NOSIGNAL)
        })?;
    }
    Ok(())
}

fn retry_interrupted<T>(mut call: impl FnMut() -> nix::Result<T>) -> io::Result<T> {
    loop {
        match call() {
            Err(Errno::EINTR) => continue,
            result => return result.map_err(io::Error::from),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_state_names_fd_and_repeats_state() {
        let state = r#"{"ociVersion":"1.2.0","id":"c1","status":"created","pid":42,"bundle":"/b"}"#;

        let payload = process_state(state, 42, Some("tag"));
        let parsed: serde_json::Value = serde_json::from_slice(&payload).unwrap();

        assert_eq!(parsed["ociVersion"], "1.2.0");
        assert_eq!(parsed["fds"], serde_json::json!(["seccompFd"]));
        assert_eq!(parsed["pid"], 42);
        assert_eq!(parsed["metadata"], "tag");
        assert_eq!(parsed["state"]["id"], "c1");
        assert_eq!(parsed["state"]["status"], "created");
    }

    #[test]
    fn process_state_without_metadata_leaves_it_out() {
        let state = r#"{"ociVersion":"1.2.0","id":"c1","status":"running","bundle":"/b"}"#;

        let payload = process_state(state, 7, None);
        let parsed: serde_json::Value = serde_json::from_slice(&payload).unwrap();

        assert!(parsed.get("metadata").is_none(), "{parsed}");
        assert_eq!(parsed["pid"], 7);
    }
}
