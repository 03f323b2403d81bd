//! An OCI container launcher used as a library, like runc.
//!
//! [`Container::create`] clones an init process into new namespaces, places it in its
//! cgroup and sends it the spec over a socket. The init ([`init_main`]) sets up the root
//! filesystem and the process attributes, reports ready, and `execve`s the user process
//! only when the caller calls [`Container::start`]. The caller owns the init process: it
//! is the caller's direct child, and the caller reaps it.
//!
//! [`Container::exec`] starts further processes in a running container the same way, and
//! they are the caller's children too. Hooks are the exception: rustjail starts each
//! through a helper child cloned with exit signal 0 instead of SIGCHLD, and reaps the
//! helper itself. The rule for a caller's SIGCHLD reaper is therefore to call
//! `waitpid(-1, ...)` or `waitid(P_ALL, ...)` without `__WALL` and `__WCLONE`, because
//! such a call never returns a helper. The hook itself is the helper's child.

mod cgroups;
mod container;
mod control;
mod error;
mod exec;
mod hooks;
mod init;
mod net_devices;
mod netlink;
mod seccomp_listener;
mod spawn;
mod state;
mod sync;
mod terminal;
mod user_namespace;

pub use cgroups::{
    BlkioEntry, Cgroup, CgroupStats, CpuStats, HugetlbStats, MemoryStats, PidsStats,
};
pub use container::{Container, ContainerConfig, InitCommand, LaunchOptions};
pub use error::Error;
pub use exec::ExecProcess;
pub use hooks::HookError;
pub use init::init_main;
pub use terminal::resize_terminal;

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
