//! The init process of a container.
//!
//! [`init_main`] runs in a fresh single-threaded process started by the caller, so unlike
//! the clone in `spawn`, it may allocate and use the standard library. It reads its
//! configuration from fd 3, sets the container up, reports ready, waits for start and
//! becomes the user process by `execve`. Every failure goes back over fd 3 as a message
//! naming the step and the value.

mod capabilities;
mod cgroup_mount;
mod devices;
mod exec;
pub(crate) mod idmap;
mod lsm;
mod memory_policy;
mod mount_options;
mod mounts;
mod namespaces;
mod personality;
mod process;
mod resolve;
mod rootfs;
mod scheduling;
mod seccomp;
mod sysctl;
mod terminal;
mod user;

use std::convert::Infallible;
use std::fmt::Display;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::fcntl::{fcntl, FcntlArg, FdFlag};
use nix::sys::stat::{fstat, SFlag};

use crate::sync::{recv_message, send_message, FailureKind, FromInit, InitConfig, ToInit};

/// Descriptor of the sync socket in the init, installed by the caller's clone.
const SYNC_FD: i32 = 3;

/// Exit status when the init fails before or instead of executing the user process.
const FAILURE_EXIT_CODE: i32 = 127;

/// A failed init step, sent to the caller as [`FromInit::Error`].
#[derive(Debug)]
pub(crate) struct InitError {
    kind: FailureKind,
    message: String,
}

impl InitError {
    pub fn system(message: impl Display) -> InitError {
        InitError {
            kind: FailureKind::System,
            message: message.to_string(),
        }
    }

    pub fn invalid_spec(message: impl Display) -> InitError {
        InitError {
            kind: FailureKind::InvalidSpec,
            message: message.to_string(),
        }
    }
}

/// Returns a closure that turns a cause into an [`InitError`] naming `step`, for
/// `map_err`.
pub(crate) fn failed<E: Display>(step: impl Display) -> impl FnOnce(E) -> InitError {
    move |cause| InitError::system(format!("{step}: {cause}"))
}

/// Returns the sync socket, for steps that report to the caller without being handed it.
pub(crate) fn sync_socket() -> BorrowedFd<'static> {
    // SAFETY: `init_main` owns fd 3, the sync socket, from its start until the process
    // exits or executes the user process, and every caller runs within that time.
    unsafe { BorrowedFd::borrow_raw(SYNC_FD) }
}

/// Runs the hooks of `point` from the init, with `state` changed to `status`.
pub(crate) fn run_hooks(
    point: crate::hooks::HookPoint,
    config: &InitConfig,
    status: &str,
) -> Result<(), InitError> {
    let mut state: serde_json::Value =
        serde_json::from_str(&config.state).unwrap_or(serde_json::Value::Null);
    if let Some(object) = state.as_object_mut() {
        object.insert("status".to_owned(), serde_json::Value::from(status));
    }
    crate::hooks::run_all(point, config.spec.hooks().as_ref(), &state.to_string())
        .map_err(|error| InitError::system(error.to_string()))
}

pub(crate) use scheduling::{check_exec_cpu_affinity, set_initial_cpu_affinity};

/// Checks `process.cwd` as the init will, so the caller can reject it before cloning.
pub(crate) fn check_cwd(cwd: &std::path::Path) -> Result<(), String> {
    process::check_cwd(cwd).map_err(|error| error.message)
}

/// Returns a warning for each label of an exec'd `process` that the init leaves out,
/// because the kernel lacks its security module. The exec'd process sends no ready
/// message to carry them, so the caller works them out from the same `/sys`.
pub(crate) fn exec_label_warnings(process: &oci_spec::runtime::Process) -> Vec<String> {
    lsm::plan_process(Some(process), lsm::Enabled::detect()).warnings
}

/// Runs the container init: reads the configuration from fd 3, sets up the container
/// and `execve`s the user process when the caller starts it. Never returns.
///
/// Call it first thing in `main` of the program named by `InitCommand`, before any
/// thread is started, because joining a mount namespace requires a single thread.
pub fn init_main() -> ! {
    let sync = match take_sync_socket() {
        Ok(sync) => sync,
        Err(message) => {
            eprintln!("rustjail init: {message}");
            std::process::exit(FAILURE_EXIT_CODE);
        }
    };

    let error = match run(sync.as_fd()) {
        Ok(never) => match never {},
        Err(error) => error,
    };
    // The caller may be gone, and then there is no one left to tell.
    let _ = send_message(
        sync.as_fd(),
        &FromInit::Error {
            kind: error.kind,
            message: error.message,
        },
    );
    std::process::exit(FAILURE_EXIT_CODE)
}

/// Takes ownership of fd 3 after checking it is a socket, and marks it close-on-exec so
/// that a successful exec of the user process closes it.
fn take_sync_socket() -> Result<OwnedFd, String> {
    // SAFETY: fd 3 is the sync socket that the caller's clone installed with dup2, and
    // nothing else in this process refers to it. The fstat below rejects a program run by
    // hand with no socket there before the descriptor is used.
    let sync = unsafe { OwnedFd::from_raw_fd(SYNC_FD) };

    let stat = fstat(&sync).map_err(|errno| {
        format!("fd {SYNC_FD} is not open ({errno}); start the init through rustjail")
    })?;
    if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
        std::mem::forget(sync);
        return Err(format!(
            "fd {SYNC_FD} is not the sync socket; start the init through rustjail"
        ));
    }
    fcntl(&sync, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
        .map_err(|errno| format!("set close-on-exec on fd {SYNC_FD}: {errno}"))?;
    Ok(sync)
}

fn run(sync: BorrowedFd<'_>) -> Result<Infallible, InitError> {
    match recv_message::<ToInit>(sync, None).map_err(failed("receive configuration"))? {
        Some(ToInit::Config(config)) => run_container(sync, &config),
        Some(ToInit::Exec(config)) => exec::run(sync, &config),
        Some(ToInit::Start) => Err(InitError::system("received start before the configuration")),
        None => std::process::exit(FAILURE_EXIT_CODE),
    }
}

/// Sets up a new container, reports ready, and executes the user process on start.
fn run_container(sync: BorrowedFd<'_>, config: &InitConfig) -> Result<Infallible, InitError> {
    let spec = &config.spec;
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| InitError::invalid_spec("spec has no process"))?;
    let seccomp = spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.seccomp().as_ref());

    idmap::receive_trees(sync, config.idmapped_trees)?;
    // Joining a mount namespace by path can hide the caller's /sys, so the security
    // modules are looked up first.
    let labels = lsm::plan(spec, lsm::Enabled::detect());
    namespaces::enter(spec, &config.joined_by_caller)?;
    // createContainer hooks run during the rootfs setup and see the new names.
    let name_warnings = process::set_host_names(spec)?;
    rootfs::set_up(spec, config, labels.mount_label.as_deref())?;
    if process.terminal().unwrap_or(false) {
        terminal::set_up(sync, process.console_size())?;
    }
    personality::apply(
        spec.linux()
            .as_ref()
            .and_then(|linux| linux.personality().as_ref()),
    )?;
    let memory_policy = spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.memory_policy().as_ref());
    scheduling::apply(process, memory_policy, scheduling::Target::ContainerInit)?;
    let prepared = process::prepare(process, seccomp)?;

    let ready = FromInit::Ready {
        warnings: labels
            .warnings
            .iter()
            .chain(&name_warnings)
            .cloned()
            .collect(),
    };
    send_message(sync, &ready).map_err(failed("send ready"))?;
    match recv_message::<ToInit>(sync, None).map_err(failed("receive start"))? {
        Some(ToInit::Start) => {}
        Some(ToInit::Config(_) | ToInit::Exec(_)) => {
            return Err(InitError::system(
                "received a second configuration instead of start",
            ))
        }
        // The caller dropped the container before starting it.
        None => std::process::exit(FAILURE_EXIT_CODE),
    }
    run_hooks(crate::hooks::HookPoint::StartContainer, config, "created")?;
    lsm::set_exec_labels(&labels)?;

    Err(process::exec(prepared))
}
