//! Cloning the init process from a multi-threaded caller.
//!
//! Between `clone` and `execve` the child runs on a copy of one thread of a process whose
//! other threads may hold locks (the allocator's among them). It therefore makes only raw
//! system calls on memory prepared before the clone: no allocation, no locks, no panics.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

use nix::fcntl::{fcntl, FcntlArg};
use nix::sched::{setns, CloneFlags};

use crate::container::InitCommand;

/// Lowest descriptor the caller's copies may use, so that the `dup2` calls onto 0 to 3 in
/// the child never overwrite a source descriptor before it was copied.
const FIRST_FREE_FD: RawFd = 4;

/// The descriptors the init receives as 0, 1, 2 and 3.
pub(crate) struct ChildFds {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub sync: OwnedFd,
}

/// Pid namespace the init enters.
pub(crate) enum PidNamespace {
    /// Stay in the caller's pid namespace.
    Inherit,
    /// Create a new one with `CLONE_NEWPID`.
    New,
    /// Join the namespace behind this descriptor.
    Join(OwnedFd),
}

/// Moves `fd` to a number of at least [`FIRST_FREE_FD`], keeping `O_CLOEXEC`.
pub(crate) fn above_stdio(fd: OwnedFd) -> io::Result<OwnedFd> {
    if fd.as_raw_fd() >= FIRST_FREE_FD {
        return Ok(fd);
    }
    let raised = fcntl(&fd, FcntlArg::F_DUPFD_CLOEXEC(FIRST_FREE_FD))?;
    // SAFETY: F_DUPFD_CLOEXEC returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raised) })
}

/// Clones the init process and returns its pid in the caller's pid namespace.
pub(crate) fn spawn_init(
    command: &InitCommand,
    fds: &ChildFds,
    pid_namespace: PidNamespace,
) -> io::Result<i32> {
    let program = to_cstring(command.program.as_os_str())?;
    let mut argv = vec![program.clone()];
    for arg in &command.args {
        argv.push(to_cstring(arg)?);
    }
    let raw_fds = [
        fds.stdin.as_raw_fd(),
        fds.stdout.as_raw_fd(),
        fds.stderr.as_raw_fd(),
        fds.sync.as_raw_fd(),
    ];

    match pid_namespace {
        PidNamespace::Inherit => clone_and_exec(&program, &argv, raw_fds, false),
        PidNamespace::New => clone_and_exec(&program, &argv, raw_fds, true),
        PidNamespace::Join(namespace) => {
            // setns(CLONE_NEWPID) changes the pid namespace of the calling thread's future
            // children only, so a short-lived thread joins it and clones there, leaving the
            // caller's threads untouched.
            std::thread::scope(|scope| {
                scope
                    .spawn(|| {
                        setns(&namespace, CloneFlags::CLONE_NEWPID)?;
                        clone_and_exec(&program, &argv, raw_fds, false)
                    })
                    .join()
                    .map_err(|_| io::Error::other("thread joining the pid namespace panicked"))?
            })
        }
    }
}

fn to_cstring(value: &OsStr) -> io::Result<CString> {
    CString::new(value.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{value:?} contains a NUL byte"),
        )
    })
}

fn clone_and_exec(
    program: &CString,
    argv: &[CString],
    fds: [RawFd; 4],
    new_pid_namespace: bool,
) -> io::Result<i32> {
    let mut argv_pointers: Vec<*const libc::c_char> = argv.iter().map(|arg| arg.as_ptr()).collect();
    argv_pointers.push(std::ptr::null());
    // The init reads everything it needs from the sync socket, so it gets no environment.
    let envp_pointers: [*const libc::c_char; 1] = [std::ptr::null()];

    let mut flags = libc::SIGCHLD as libc::c_ulong;
    if new_pid_namespace {
        flags |= libc::CLONE_NEWPID as libc::c_ulong;
    }

    // SAFETY: clone without CLONE_VM and with a null stack has fork semantics: the child
    // gets a copy of the address space and continues here on its copy of this stack. The
    // child branch below only calls async-signal-safe functions and never returns.
    let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: this is the child of the clone above, and every pointer refers to memory
        // prepared before the clone, which the child's copy of the address space contains.
        unsafe {
            exec_in_child(
                program.as_ptr(),
                argv_pointers.as_ptr(),
                envp_pointers.as_ptr(),
                fds,
            )
        }
    }
    Ok(pid as i32)
}

/// Installs the init's descriptors and executes it. Runs in the freshly cloned child.
///
/// # Safety
///
/// Call only in a child of `clone` with fork semantics. `program`, `argv` and `envp` must
/// be valid C strings and null-terminated arrays of them.
unsafe fn exec_in_child(
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    fds: [RawFd; 4],
) -> ! {
    // dup2 clears FD_CLOEXEC on the copy, so exactly descriptors 0 to 3 survive execve.
    for (target, source) in fds.into_iter().enumerate() {
        // SAFETY: dup2 is async-signal-safe and every source is an open descriptor of at
        // least FIRST_FREE_FD, so no earlier dup2 replaced it.
        if unsafe { libc::dup2(source, target as RawFd) } < 0 {
            // SAFETY: _exit is async-signal-safe and does not run the parent's atexit handlers.
            unsafe { libc::_exit(126) };
        }
    }

    // Descriptors the caller opened without O_CLOEXEC would otherwise leak into the
    // container.
    // SAFETY: close_range only closes descriptors of this process.
    let closed = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            FIRST_FREE_FD as libc::c_uint,
            libc::c_uint::MAX,
            0,
        )
    };
    if closed != 0 {
        // SAFETY: as above, _exit is async-signal-safe.
        unsafe { libc::_exit(125) };
    }

    // SAFETY: the caller guarantees valid, null-terminated arguments.
    unsafe { libc::execve(program, argv, envp) };
    // SAFETY: as above, _exit is async-signal-safe.
    unsafe { libc::_exit(127) }
}
