//! Process attributes of the container and the final `execve` of the user process.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::signal::{signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{access, chdir, execve, setgroups, setresgid, setresuid, AccessFlags, Gid, Uid};
use oci_spec::runtime::{PosixRlimitType, Process, Spec};
use rustix::process::{setrlimit, Resource, Rlimit};

use super::{failed, InitError};
use crate::sync::FailureKind;

/// Search path used when the container's environment has no `PATH`.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// File mode creation mask when `process.user.umask` is not set.
const DEFAULT_UMASK: u32 = 0o022;

/// The user process, ready to execute.
pub(crate) struct Prepared {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    umask: u32,
}

/// Sets hostname, rlimits, working directory and user, then finds the executable. Runs
/// after `pivot_root`, so every path is inside the container.
pub(crate) fn prepare(spec: &Spec) -> Result<Prepared, InitError> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| InitError::invalid_spec("spec has no process"))?;
    let args = process.args().clone().unwrap_or_default();
    let env = process.env().clone().unwrap_or_default();
    let Some(name) = args.first() else {
        return Err(InitError::invalid_spec("process.args is empty"));
    };

    set_host_names(spec)?;
    set_rlimits(process)?;
    enter_working_directory(process.cwd())?;
    switch_user(process)?;
    if process.no_new_privileges().unwrap_or(false) {
        rustix::thread::set_no_new_privs(true).map_err(failed("set no_new_privileges"))?;
    }

    let program = find_executable(name, &env)?;
    Ok(Prepared {
        program: to_cstring(program.as_os_str().as_bytes(), "executable path")?,
        argv: args
            .iter()
            .map(|arg| to_cstring(arg.as_bytes(), "process.args"))
            .collect::<Result<_, _>>()?,
        envp: env
            .iter()
            .map(|entry| to_cstring(entry.as_bytes(), "process.env"))
            .collect::<Result<_, _>>()?,
        umask: process.user().umask().unwrap_or(DEFAULT_UMASK),
    })
}

/// Replaces the init with the user process. Returns only on failure.
pub(crate) fn exec(prepared: Prepared) -> InitError {
    if let Err(error) = reset_signals() {
        return error;
    }
    umask(Mode::from_bits_truncate(prepared.umask));

    let errno = match execve(&prepared.program, &prepared.argv, &prepared.envp) {
        Ok(never) => match never {},
        Err(errno) => errno,
    };
    InitError::system(format!("exec {:?}: {errno}", prepared.program))
}

fn set_host_names(spec: &Spec) -> Result<(), InitError> {
    if let Some(hostname) = spec.hostname().as_deref().filter(|name| !name.is_empty()) {
        rustix::system::sethostname(hostname.as_bytes())
            .map_err(failed(format_args!("set hostname {hostname:?}")))?;
    }
    if let Some(domainname) = spec.domainname().as_deref().filter(|name| !name.is_empty()) {
        rustix::system::setdomainname(domainname.as_bytes())
            .map_err(failed(format_args!("set domainname {domainname:?}")))?;
    }
    Ok(())
}

fn set_rlimits(process: &Process) -> Result<(), InitError> {
    for rlimit in process.rlimits().iter().flatten() {
        let limit = |value: u64| (value != u64::MAX).then_some(value);
        let new = Rlimit {
            current: limit(rlimit.soft()),
            maximum: limit(rlimit.hard()),
        };
        setrlimit(resource(rlimit.typ()), new).map_err(failed(format_args!(
            "set rlimit {:?} to soft {} hard {}",
            rlimit.typ(),
            rlimit.soft(),
            rlimit.hard()
        )))?;
    }
    Ok(())
}

fn resource(kind: PosixRlimitType) -> Resource {
    match kind {
        PosixRlimitType::RlimitCpu => Resource::Cpu,
        PosixRlimitType::RlimitFsize => Resource::Fsize,
        PosixRlimitType::RlimitData => Resource::Data,
        PosixRlimitType::RlimitStack => Resource::Stack,
        PosixRlimitType::RlimitCore => Resource::Core,
        PosixRlimitType::RlimitRss => Resource::Rss,
        PosixRlimitType::RlimitNproc => Resource::Nproc,
        PosixRlimitType::RlimitNofile => Resource::Nofile,
        PosixRlimitType::RlimitMemlock => Resource::Memlock,
        PosixRlimitType::RlimitAs => Resource::As,
        PosixRlimitType::RlimitLocks => Resource::Locks,
        PosixRlimitType::RlimitSigpending => Resource::Sigpending,
        PosixRlimitType::RlimitMsgqueue => Resource::Msgqueue,
        PosixRlimitType::RlimitNice => Resource::Nice,
        PosixRlimitType::RlimitRtprio => Resource::Rtprio,
        PosixRlimitType::RlimitRttime => Resource::Rttime,
    }
}

/// Changes into `process.cwd`, creating it when missing, as runc does for images whose
/// working directory is not in the image.
fn enter_working_directory(cwd: &Path) -> Result<(), InitError> {
    if !cwd.is_absolute() {
        return Err(InitError::invalid_spec(format!(
            "process.cwd {} must be absolute",
            cwd.display()
        )));
    }
    std::fs::create_dir_all(cwd).map_err(failed(format_args!(
        "create working directory {}",
        cwd.display()
    )))?;
    chdir(cwd).map_err(failed(format_args!(
        "change to working directory {}",
        cwd.display()
    )))
}

/// Sets the supplementary groups, then the gid, then the uid, because after the uid
/// changes the process may no longer have the right to change its groups.
fn switch_user(process: &Process) -> Result<(), InitError> {
    let user = process.user();
    let groups: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .copied()
        .map(Gid::from_raw)
        .collect();
    let gid = Gid::from_raw(user.gid());
    let uid = Uid::from_raw(user.uid());

    setgroups(&groups).map_err(failed(format_args!(
        "set additional gids {:?}",
        user.additional_gids().as_deref().unwrap_or_default()
    )))?;
    setresgid(gid, gid, gid).map_err(failed(format_args!("set gid {gid}")))?;
    setresuid(uid, uid, uid).map_err(failed(format_args!("set uid {uid}")))
}

/// Finds `name` as `execvp` does: a name with a slash is used as is, others are looked
/// up in the `PATH` of the container's environment.
fn find_executable(name: &str, env: &[String]) -> Result<PathBuf, InitError> {
    let not_found = || InitError {
        kind: FailureKind::ExecutableNotFound {
            name: name.to_owned(),
        },
        message: format!("executable {name:?} not found in $PATH"),
    };

    if name.contains('/') {
        let path = PathBuf::from(name);
        return if is_executable(&path) {
            Ok(path)
        } else {
            Err(not_found())
        };
    }

    let search_path = env
        .iter()
        .rev()
        .find_map(|entry| entry.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    search_path
        .split(':')
        .map(|directory| {
            if directory.is_empty() {
                Path::new(".")
            } else {
                Path::new(directory)
            }
            .join(name)
        })
        .find(|candidate| is_executable(candidate))
        .ok_or_else(not_found)
}

fn is_executable(path: &Path) -> bool {
    path.metadata().is_ok_and(|metadata| metadata.is_file())
        && access(path, AccessFlags::X_OK).is_ok()
}

/// Unblocks every signal and restores default handling, because the mask and ignored
/// signals survive `execve`, and the Rust runtime of the init ignores SIGPIPE.
fn reset_signals() -> Result<(), InitError> {
    sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None)
        .map_err(failed("unblock signals"))?;

    for sig in Signal::iterator().filter(|sig| !matches!(sig, Signal::SIGKILL | Signal::SIGSTOP)) {
        // SAFETY: SIG_DFL installs no handler, so no code of this process can run
        // asynchronously as a result.
        unsafe { signal(sig, SigHandler::SigDfl) }
            .map_err(failed(format_args!("reset handler of {sig}")))?;
    }
    Ok(())
}

fn to_cstring(bytes: &[u8], field: &str) -> Result<CString, InitError> {
    CString::new(bytes).map_err(|_| {
        InitError::invalid_spec(format!(
            "{field} contains a NUL byte: {:?}",
            String::from_utf8_lossy(bytes)
        ))
    })
}
