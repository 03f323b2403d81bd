//! `--isolate`: new UTS and network namespaces for an agent run outside a guest.
//!
//! `unshare` of these namespaces must happen while the process has a single
//! thread, because it applies to the calling thread only: any thread created
//! earlier would stay in the machine's namespaces. `main` therefore calls
//! [`enter`] before it builds the tokio runtime.

use std::os::fd::AsRawFd;

use nix::sched::CloneFlags;
use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};

/// Errors of entering the isolation namespaces.
#[derive(Debug, thiserror::Error)]
pub enum IsolateError {
    #[error("unshare UTS and network namespaces: {0}")]
    Unshare(#[source] nix::Error),

    #[error("bring up loopback interface lo: {0}")]
    Loopback(#[source] std::io::Error),
}

/// Moves the calling, still single-threaded, process into new UTS and network namespaces.
///
/// Returns a loopback error separately so the caller can treat a down `lo` as a warning,
/// because the agent itself only needs its own socket, which is not on the network.
pub fn enter() -> Result<Option<IsolateError>, IsolateError> {
    nix::sched::unshare(CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWNET)
        .map_err(IsolateError::Unshare)?;

    Ok(bring_up_loopback().err().map(IsolateError::Loopback))
}

/// Sets IFF_UP on `lo`, which a new network namespace starts with down.
fn bring_up_loopback() -> std::io::Result<()> {
    let socket = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;

    // SAFETY: ifreq is a plain C struct for which all-zero bytes are a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }

    // SAFETY: the socket is open for the whole call and `request` is a valid ifreq
    // that outlives it; SIOCGIFFLAGS writes only ifr_flags inside it.
    let result = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }

    // SAFETY: SIOCGIFFLAGS succeeded, so ifru_flags is the initialised union member.
    unsafe {
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }

    // SAFETY: as above; SIOCSIFFLAGS reads the name and flags from `request`.
    let result = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) };
    if result < 0 {
        return Err(std::io::Error::last_os_error());
    }

    Ok(())
}
