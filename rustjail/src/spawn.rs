//! Cloning the init process from a multi-threaded caller.
//!
//! Between `clone` and `execve` the child runs on a copy of one thread of a process whose
//! other threads may hold locks (the allocator's among them). It therefore makes only raw
//! system calls on memory prepared before the clone: no allocation, no locks, no panics.
//!
//! The child never executes the init program from the filesystem. It executes a sealed
//! in-memory copy (see [`sealed_program`]), so that a container process reaching the init
//! through `/proc/<pid>/exe` finds a file that cannot be written, and the binary on disk
//! stays out of its reach.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::fcntl::{fcntl, FcntlArg};
use nix::sched::{setns, CloneFlags};
use rustix::fs::{fcntl_add_seals, memfd_create, MemfdFlags, SealFlags};

use crate::container::InitCommand;

/// Lowest descriptor the caller's copies may use, so that the `dup2` calls onto 0 to 4 in
/// the child never overwrite a source descriptor before it was copied.
const FIRST_FREE_FD: RawFd = 5;

/// Descriptor of the sealed init program in the child between `clone` and `execveat`.
/// It is close-on-exec, so the init itself never has it.
const PROGRAM_FD: RawFd = 4;

/// Sealed copies of init programs, made once per program and kept for the life of the
/// process, because every container of a process runs the same program.
static SEALED_PROGRAMS: Mutex<Vec<(PathBuf, Arc<OwnedFd>)>> = Mutex::new(Vec::new());

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

/// The namespaces the init starts in.
pub(crate) struct CloneNamespaces {
    pub pid: PidNamespace,
    /// Clone into a new user namespace, which then owns a new pid namespace too.
    pub new_user: bool,
    /// Namespaces joined before the clone, by a short-lived thread that then clones, for
    /// those the init could not join itself from inside a new user namespace. Only
    /// namespaces that a thread of a multi-threaded process may join belong here: uts,
    /// ipc, net and cgroup.
    pub join_first: Vec<(OwnedFd, CloneFlags)>,
}

/// Clones the init process and returns its pid in the caller's pid namespace.
///
/// With `namespaces.new_user` the child waits before it executes the init program until
/// the caller wrote its ID maps and sent [`crate::user_namespace::MAPPED`] on the sync
/// socket.
pub(crate) fn spawn_init(
    command: &InitCommand,
    fds: &ChildFds,
    namespaces: CloneNamespaces,
) -> io::Result<i32> {
    let sealed = sealed_program(&command.program)?;
    let mut argv = vec![to_cstring(command.program.as_os_str())?];
    for arg in &command.args {
        argv.push(to_cstring(arg)?);
    }
    let raw_fds = [
        fds.stdin.as_raw_fd(),
        fds.stdout.as_raw_fd(),
        fds.stderr.as_raw_fd(),
        fds.sync.as_raw_fd(),
        sealed.as_raw_fd(),
    ];

    let mut flags = libc::SIGCHLD as libc::c_ulong;
    if namespaces.new_user {
        flags |= libc::CLONE_NEWUSER as libc::c_ulong;
    }
    let mut join = namespaces.join_first;
    match namespaces.pid {
        PidNamespace::Inherit => {}
        PidNamespace::New => flags |= libc::CLONE_NEWPID as libc::c_ulong,
        PidNamespace::Join(namespace) => join.push((namespace, CloneFlags::CLONE_NEWPID)),
    }
    if join.is_empty() {
        return clone_and_exec(&argv, raw_fds, flags);
    }

    // These setns calls change the namespaces of the calling thread, or for pid those of
    // its future children, so a short-lived thread joins and clones there, leaving the
    // caller's threads untouched.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                for (namespace, flag) in &join {
                    setns(namespace, *flag)?;
                }
                clone_and_exec(&argv, raw_fds, flags)
            })
            .join()
            .map_err(|_| io::Error::other("thread joining namespaces for the clone panicked"))?
    })
}

fn to_cstring(value: &OsStr) -> io::Result<CString> {
    CString::new(value.as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{value:?} contains a NUL byte"),
        )
    })
}

/// Returns a sealed memfd holding a copy of `program`, created on first use.
///
/// The seals forbid any write, growth or shrinking, and further seal changes, so a
/// process that opens the init's `/proc/<pid>/exe`, even for writing, cannot change the
/// code that later containers run. The copy costs the program's size in memory once.
pub(crate) fn sealed_program(program: &Path) -> io::Result<Arc<OwnedFd>> {
    let mut sealed = SEALED_PROGRAMS
        .lock()
        .map_err(|_| io::Error::other("lock of the sealed init programs is poisoned"))?;
    if let Some((_, fd)) = sealed.iter().find(|(path, _)| path == program) {
        return Ok(Arc::clone(fd));
    }

    let memfd = memfd_create(
        "rustjail-init",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut copy = File::from(memfd);
    let mut source = File::open(program)?;
    io::copy(&mut source, &mut copy)?;

    let memfd = OwnedFd::from(copy);
    fcntl_add_seals(
        &memfd,
        SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
    )?;
    let fd = Arc::new(above_stdio(memfd)?);
    sealed.push((program.to_path_buf(), Arc::clone(&fd)));
    Ok(fd)
}

/// Clones with `flags` (the exit signal included) and executes the init in the child.
fn clone_and_exec(argv: &[CString], fds: [RawFd; 5], flags: libc::c_ulong) -> io::Result<i32> {
    let mut argv_pointers: Vec<*const libc::c_char> = argv.iter().map(|arg| arg.as_ptr()).collect();
    argv_pointers.push(std::ptr::null());
    // The init reads everything it needs from the sync socket, so it gets no environment.
    let envp_pointers: [*const libc::c_char; 1] = [std::ptr::null()];
    let new_user_namespace = flags & libc::CLONE_NEWUSER as libc::c_ulong != 0;

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
            if new_user_namespace {
                become_namespace_root(fds[3]);
            }
            exec_in_child(argv_pointers.as_ptr(), envp_pointers.as_ptr(), fds)
        }
    }
    Ok(pid as i32)
}

/// Waits for the caller's go-ahead on `sync`, then takes uid and gid 0 of the new user
/// namespace and drops the supplementary groups, which the namespace cannot map. Runs
/// in the freshly cloned child and exits it on any failure.
///
/// Until the maps exist the child's IDs are unmapped in its namespace, and `execve`
/// would then clear its capabilities, so this must come before the exec.
///
/// # Safety
///
/// Call only in a child of `clone` with fork semantics; `sync` is the child's end of the
/// sync socket.
unsafe fn become_namespace_root(sync: RawFd) {
    let mut byte = 0u8;
    loop {
        // SAFETY: read is async-signal-safe and `byte` outlives the call.
        let read = unsafe { libc::read(sync, (&mut byte as *mut u8).cast(), 1) };
        if read == 1 {
            break;
        }
        // SAFETY: __errno_location is async-signal-safe and returns this thread's errno.
        if read < 0 && unsafe { *libc::__errno_location() } == libc::EINTR {
            continue;
        }
        // End of file: the caller gave up on this container.
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(124) };
    }
    if byte != crate::user_namespace::MAPPED {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(124) };
    }

    // Raw system calls, because glibc's wrappers would signal the caller's other threads,
    // which do not exist in this copy of the process.
    // SAFETY: setgroups, setresgid and setresuid only change this process's credentials,
    // and a null list with size 0 is valid for setgroups.
    let failed = unsafe {
        libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) != 0
            || libc::syscall(libc::SYS_setresgid, 0, 0, 0) != 0
            || libc::syscall(libc::SYS_setresuid, 0, 0, 0) != 0
    };
    if failed {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(124) };
    }
}

/// Installs the init's descriptors and executes the sealed program. Runs in the freshly
/// cloned child.
///
/// # Safety
///
/// Call only in a child of `clone` with fork semantics. `argv` and `envp` must be
/// null-terminated arrays of valid C strings. `fds` contains stdin, stdout, stderr, the sync
/// socket and the sealed program, each at least `FIRST_FREE_FD`.
unsafe fn exec_in_child(
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    fds: [RawFd; 5],
) -> ! {
    let [stdin, stdout, stderr, sync, program] = fds;

    // dup2 clears FD_CLOEXEC on the copy, so exactly descriptors 0 to 3 survive execve.
    for (target, source) in [stdin, stdout, stderr, sync].into_iter().enumerate() {
        // SAFETY: dup2 is async-signal-safe and every source is an open descriptor of at
        // least FIRST_FREE_FD, so no earlier dup2 replaced it.
        if unsafe { libc::dup2(source, target as RawFd) } < 0 {
            // SAFETY: _exit is async-signal-safe and does not run the parent's atexit handlers.
            unsafe { libc::_exit(126) };
        }
    }

    // The program stays close-on-exec: execveat reads an ELF binary before it closes the
    // descriptor, and the init must not inherit it.
    // SAFETY: dup3 is async-signal-safe and `program` is an open descriptor above
    // PROGRAM_FD, so the two differ.
    if unsafe { libc::dup3(program, PROGRAM_FD, libc::O_CLOEXEC) } < 0 {
        // SAFETY: _exit is async-signal-safe and does not run the parent's atexit handlers.
        unsafe { libc::_exit(126) };
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

    // NOTE: a close-on-exec descriptor cannot start a `#!` script, because the kernel
    // closes it before the interpreter opens the script, so the init program must be an
    // ELF binary.
    // SAFETY: the caller guarantees valid, null-terminated arguments, and the empty path
    // with AT_EMPTY_PATH makes the kernel execute PROGRAM_FD itself.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            PROGRAM_FD,
            c"".as_ptr(),
            argv,
            envp,
            libc::AT_EMPTY_PATH,
        )
    };
    // SAFETY: as above, _exit is async-signal-safe.
    unsafe { libc::_exit(127) }
}

/// A hook started by [`spawn_hook`]: the helper process that runs it and reports its
/// status.
pub(crate) struct HookChild {
    pub pid: i32,
    /// Refers to the helper even after its pid is reused, and becomes readable on exit.
    pub pidfd: OwnedFd,
}

/// Starts `program` with `argv` and `envp` through a helper process, its stdin, stdout and
/// stderr taken from `stdio`. The helper's exit code is the hook's exit code, or 128
/// plus the number of the signal that killed it.
///
/// The helper is cloned with exit signal 0 instead of SIGCHLD, which makes it a "clone"
/// child: `waitpid(-1, ...)` without `__WALL` or `__WCLONE` never returns it, so a
/// caller's SIGCHLD reaper cannot take its status first. The kernel resets the exit
/// signal to SIGCHLD on `execve`, so the helper never executes anything itself. The hook
/// is the helper's own child, which the helper reaps. It dies with the helper through
/// `PR_SET_PDEATHSIG`, so killing the helper on a timeout kills the hook too.
pub(crate) fn spawn_hook(
    program: &CString,
    argv: &[CString],
    envp: &[CString],
    stdio: [RawFd; 3],
) -> io::Result<HookChild> {
    let mut argv_pointers: Vec<*const libc::c_char> = argv.iter().map(|arg| arg.as_ptr()).collect();
    argv_pointers.push(std::ptr::null());
    let mut envp_pointers: Vec<*const libc::c_char> = envp.iter().map(|var| var.as_ptr()).collect();
    envp_pointers.push(std::ptr::null());
    let mut pidfd: libc::c_int = -1;

    let flags = libc::CLONE_PIDFD as libc::c_ulong;
    // SAFETY: as in clone_and_exec, a clone without CLONE_VM and with a null stack has
    // fork semantics. CLONE_PIDFD makes the kernel write the pidfd to `pidfd`, which
    // outlives the call. The child branch only makes async-signal-safe calls.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            flags,
            0usize,
            &mut pidfd as *mut libc::c_int,
            0usize,
            0usize,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: this is the child of the clone above, and every pointer refers to memory
        // prepared before the clone.
        unsafe {
            run_hook_helper(
                program.as_ptr(),
                argv_pointers.as_ptr(),
                envp_pointers.as_ptr(),
                stdio,
            )
        }
    }
    // SAFETY: the kernel created `pidfd` for this process in the clone, and nothing else
    // owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    Ok(HookChild {
        pid: pid as i32,
        pidfd,
    })
}

/// The helper of [`spawn_hook`]: starts the hook, waits for it and exits with its status.
///
/// # Safety
///
/// Call only in a child of `clone` with fork semantics, with valid C strings and
/// null-terminated arrays, and with `stdio` descriptors of at least 3.
unsafe fn run_hook_helper(
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    stdio: [RawFd; 3],
) -> ! {
    // Handlers copied from the caller must not run here, for example to write to the
    // caller's signal pipe when the hook exits. The hook unblocks the signals again.
    // SAFETY: an all-ones mask is a valid sigset_t, and sigprocmask is async-signal-safe.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::sigprocmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
    }
    // SAFETY: getpid is async-signal-safe.
    let helper = unsafe { libc::getpid() };

    // The helper has copies of every descriptor of the caller, the write end of the
    // hook's stdin among them, and the hook would never read end of file while they are
    // open. Only the hook's stdio stays.
    for (target, source) in stdio.into_iter().enumerate() {
        // SAFETY: dup2 is async-signal-safe, and every source is at least 3, so no earlier
        // dup2 replaced it.
        if unsafe { libc::dup2(source, target as RawFd) } < 0 {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(126) };
        }
    }
    // SAFETY: close_range only closes descriptors of this process.
    let closed = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            0,
        )
    };
    if closed != 0 {
        // SAFETY: as above, _exit is async-signal-safe.
        unsafe { libc::_exit(125) };
    }

    // SAFETY: as above, fork semantics; the child only makes async-signal-safe calls.
    let hook = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if hook < 0 {
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(126) };
    }
    if hook == 0 {
        // SAFETY: the caller's guarantees carry over to this grandchild.
        unsafe { exec_hook(helper, program, argv, envp) }
    }

    // Every signal is blocked, so SIGCHLD and SIGTERM stay pending until sigwaitinfo takes
    // them. SIGTERM is the caller's timeout: the helper kills the hook and still reaps it,
    // so no orphaned hook is left for another process to collect.
    // SAFETY: sigemptyset and sigaddset only write to `signals`, a valid sigset_t.
    let signals = unsafe {
        let mut signals: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut signals);
        libc::sigaddset(&mut signals, libc::SIGCHLD);
        libc::sigaddset(&mut signals, libc::SIGTERM);
        signals
    };
    let mut status: libc::c_int = 0;
    loop {
        // SAFETY: waitpid is async-signal-safe and `status` outlives the call.
        let reaped = unsafe { libc::waitpid(hook as libc::pid_t, &mut status, libc::WNOHANG) };
        if reaped == hook as libc::pid_t {
            break;
        }
        // SAFETY: __errno_location is async-signal-safe and returns this thread's errno.
        if reaped < 0 && unsafe { *libc::__errno_location() } != libc::EINTR {
            // SAFETY: _exit is async-signal-safe.
            unsafe { libc::_exit(126) };
        }
        // SAFETY: sigwaitinfo is async-signal-safe; a null siginfo pointer is allowed.
        let signal = unsafe { libc::sigwaitinfo(&signals, std::ptr::null_mut()) };
        if signal == libc::SIGTERM {
            // SAFETY: kill is async-signal-safe; `hook` is this helper's unreaped child.
            unsafe { libc::kill(hook as libc::pid_t, libc::SIGKILL) };
        }
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        128 + libc::WTERMSIG(status)
    };
    // SAFETY: _exit is async-signal-safe.
    unsafe { libc::_exit(code) }
}

/// Executes the hook with the stdio the helper installed. Runs in the helper's child.
///
/// # Safety
///
/// As for [`run_hook_helper`]; `helper` is the pid of the parent.
unsafe fn exec_hook(
    helper: libc::pid_t,
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
) -> ! {
    // SAFETY: prctl and getppid are async-signal-safe. The check after the prctl catches
    // a helper that died before it took effect.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        );
        if libc::getppid() != helper {
            libc::_exit(126);
        }
    }

    // The caller may ignore SIGPIPE, as the Rust runtime does, and the helper blocked
    // every signal. Both would survive execve.
    // SAFETY: a zeroed sigaction with SIG_DFL installs no handler. sigaction and
    // sigprocmask are async-signal-safe.
    unsafe {
        let mut default: libc::sigaction = std::mem::zeroed();
        default.sa_sigaction = libc::SIG_DFL;
        libc::sigaction(libc::SIGPIPE, &default, std::ptr::null_mut());
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }

    // SAFETY: the caller guarantees valid, null-terminated arguments.
    unsafe { libc::execve(program, argv, envp) };
    // SAFETY: as above, _exit is async-signal-safe.
    unsafe { libc::_exit(127) }
}
