//! An OCI container launcher used as a library, like runc.
//!
//! [`Container::create`] clones an init process into new namespaces, places it in its
//! cgroup and sends it the spec over a socket. The init ([`init_main`]) sets up the root
//! filesystem and the process attributes, reports ready, and `execve`s the user process
//! only when the caller calls [`Container::start`]. The caller owns the init process: it
//! is the caller's direct child, and the caller reaps it.

mod cgroups;
mod container;
mod error;
mod init;
mod spawn;
mod sync;

pub use cgroups::Cgroup;
pub use container::{Container, ContainerConfig, InitCommand};
pub use error::Error;
pub use init::init_main;

use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;

/// Blocks until process `pid` exits and returns its exit code, or 128 plus the signal
/// number when a signal killed it. For callers without a SIGCHLD reaper, such as tests.
pub fn wait_pid(pid: i32) -> Result<i32, Error> {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(source) => return Err(Error::Wait { pid, source }),
        }
    }
}
