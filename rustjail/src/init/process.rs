//! Process attributes of the container and the final `execve` of the user process.
//!
//! The order matters: the OOM score and rlimits need the init's privileges, the bounding
//! set shrinks before the user switch, and the other capability sets, no_new_privileges
//! and seccomp come last, right before `execve` (see [`exec`]).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::sys::signal::{signal, sigprocmask, SigHandler, SigSet, SigmaskHow, Signal};
use nix::sys::stat::{umask, Mode};
use nix::unistd::{access, chdir, execve, setgroups, setresgid, setresuid, AccessFlags, Gid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, LinuxSeccomp, PosixRlimitType, Process, Spec};
use rustix::process::{setrlimit, Resource, Rlimit};

use super::capabilities::{self, CapabilitySets};
use super::user::{self, ResolvedUser};
use super::{failed, seccomp, InitError};
use crate::sync::FailureKind;

/// Search path when the container's environment has no `PATH`, the one runc sets.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// File mode creation mask when `process.user.umask` is not set.
const DEFAULT_UMASK: u32 = 0o022;

/// The user process, ready to execute.
pub(crate) struct Prepared {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    umask: u32,
    capabilities: CapabilitySets,
    no_new_privileges: bool,
    seccomp: Option<seccomp::Filter>,
}

/// Sets the OOM score, rlimits, user and working directory, then finds the executable
/// and compiles the seccomp filter. Runs inside the container's mount namespace and root,
/// so every path is the container's.
pub(crate) fn prepare(
    process: &Process,
    seccomp_profile: Option<&LinuxSeccomp>,
) -> Result<Prepared, InitError> {
    let args = process.args().clone().unwrap_or_default();
    let Some(name) = args.first() else {
        return Err(InitError::invalid_spec("process.args is empty"));
    };
    check_cwd(process.cwd())?;
    let capability_sets = CapabilitySets::from_spec(process.capabilities().as_ref())?;

    if let Some(score) = process.oom_score_adj() {
        set_oom_score_adj(score)?;
    }
    set_rlimits(process)?;
    let resolved = user::resolve(process.user())?;
    create_working_directory(process.cwd())?;

    capabilities::drop_bounding(&capability_sets)?;
    capabilities::keep_across_setuid(true)?;
    switch_user(&resolved)?;
    capabilities::keep_across_setuid(false)?;
    enter_working_directory(process.cwd())?;

    let env = with_default_env(process.env().clone().unwrap_or_default(), &resolved);
    let program = find_executable(name, &env)?;
    let seccomp = seccomp_profile.map(seccomp::compile).transpose()?;
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
        capabilities: capability_sets,
        no_new_privileges: process.no_new_privileges().unwrap_or(false),
        seccomp,
    })
}

/// Writes the OOM score adjustment. Lowering the score below the inherited minimum needs
/// `CAP_SYS_RESOURCE`. A runtime without it, on a restricted host, keeps the inherited
/// score, which only makes the container easier to kill. In a guest VM the agent has
/// every capability, so this fallback does not apply there.
fn set_oom_score_adj(score: i32) -> Result<(), InitError> {
    match std::fs::write("/proc/self/oom_score_adj", score.to_string()) {
        Ok(()) => Ok(()),
        Err(error) if error.raw_os_error() == Some(libc::EACCES) && score < 0 => Ok(()),
        Err(error) => Err(failed(format_args!("set oom_score_adj to {score}"))(error)),
    }
}

/// Replaces the init with the user process. Returns only on failure.
pub(crate) fn exec(prepared: Prepared) -> InitError {
    match finish(&prepared) {
        Ok(()) => {}
        Err(error) => return error,
    }

    let errno = match execve(&prepared.program, &prepared.argv, &prepared.envp) {
        Ok(never) => match never {},
        Err(errno) => errno,
    };
    InitError::system(format!("exec {:?}: {errno}", prepared.program))
}

/// Resets signals, sets the umask and capabilities, and loads the seccomp filter, the last
/// steps before `execve`. Loading a filter without no_new_privileges needs
/// `CAP_SYS_ADMIN`, so such a filter goes in before the capabilities drop, and then the
/// profile must allow the remaining setup calls. With no_new_privileges the filter is
/// the very last step.
fn finish(prepared: &Prepared) -> Result<(), InitError> {
    reset_signals()?;
    umask(Mode::from_bits_truncate(prepared.umask));
    close_on_exec_above_stdio()?;

    let filter = prepared.seccomp.as_ref();
    if let Some(filter) = filter.filter(|_| !prepared.no_new_privileges) {
        seccomp::load(filter)?;
    }
    capabilities::apply(&prepared.capabilities)?;
    if prepared.no_new_privileges {
        rustix::thread::set_no_new_privs(true).map_err(failed("set no_new_privileges"))?;
        if let Some(filter) = filter {
            seccomp::load(filter)?;
        }
    }
    Ok(())
}

/// Marks every descriptor above stdio close-on-exec, so that none of the init's, opened
/// by a library or inherited, reaches the user process.
fn close_on_exec_above_stdio() -> Result<(), InitError> {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors of
    // this process and closes none.
    let result = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC as libc::c_uint,
        )
    };
    if result != 0 {
        return Err(failed("mark descriptors above stdio close-on-exec")(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Sets the hostname and domain name when the container has a UTS namespace of its own,
/// and returns a warning for each name it leaves out because the UTS namespace is joined
/// by path. A joined namespace belongs to a sandbox or another container, whose names a
/// container must not change, as in Kata's agent.
pub(crate) fn set_host_names(spec: &Spec) -> Result<Vec<String>, InitError> {
    let joined_uts = spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.namespaces().as_ref())
        .and_then(|namespaces| {
            namespaces
                .iter()
                .find(|namespace| namespace.typ() == LinuxNamespaceType::Uts)
        })
        .and_then(|namespace| namespace.path().as_ref());
    let names = [
        ("hostname", spec.hostname().as_deref()),
        ("domainname", spec.domainname().as_deref()),
    ];

    let mut warnings = Vec::new();
    for (field, name) in names {
        let Some(name) = name.filter(|name| !name.is_empty()) else {
            continue;
        };
        if let Some(path) = joined_uts {
            warnings.push(format!(
                "{field} {name:?} left out: the UTS namespace is joined from {}",
                path.display()
            ));
            continue;
        }
        let set = match field {
            "hostname" => rustix::system::sethostname(name.as_bytes()),
            _ => rustix::system::setdomainname(name.as_bytes()),
        };
        set.map_err(failed(format_args!("set {field} {name:?}")))?;
    }
    Ok(warnings)
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

/// Rejects a relative `process.cwd` and one that goes through `/proc/<pid>/fd`, where
/// a descriptor of the runtime could lead outside the container's root.
pub(crate) fn check_cwd(cwd: &Path) -> Result<(), InitError> {
    if !cwd.is_absolute() {
        return Err(InitError::invalid_spec(format!(
            "process.cwd {} must be absolute",
            cwd.display()
        )));
    }
    let names: Vec<&std::ffi::OsStr> = cwd
        .components()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(name),
            _ => None,
        })
        .collect();
    let through_fd = names.windows(3).any(|window| {
        window[0] == "proc" && matches!(window[2].to_str(), Some("fd" | "cwd" | "root"))
    });
    if through_fd {
        return Err(InitError::invalid_spec(format!(
            "process.cwd {} goes through a /proc descriptor link, which could lead outside \
             the container; use a path inside the container",
            cwd.display()
        )));
    }
    Ok(())
}

/// Creates `process.cwd` when missing, as runc does for images whose working directory
/// is not in the image. Runs before the user switch, so root creates it.
fn create_working_directory(cwd: &Path) -> Result<(), InitError> {
    std::fs::create_dir_all(cwd).map_err(failed(format_args!(
        "create working directory {}",
        cwd.display()
    )))
}

/// Changes into `process.cwd` as the container user, and checks that the result lies
/// inside the container's root: the kernel reports a directory outside it as
/// unreachable, and then `getcwd` fails.
fn enter_working_directory(cwd: &Path) -> Result<(), InitError> {
    chdir(cwd).map_err(failed(format_args!(
        "change to working directory {}",
        cwd.display()
    )))?;
    match nix::unistd::getcwd() {
        Ok(path) if path.is_absolute() => Ok(()),
        Ok(path) => Err(InitError::invalid_spec(format!(
            "working directory {} is outside the container ({})",
            cwd.display(),
            path.display()
        ))),
        Err(errno) => Err(InitError::invalid_spec(format!(
            "working directory {} is outside the container: {errno}",
            cwd.display()
        ))),
    }
}

/// Sets the supplementary groups, then the gid, then the uid, because after the uid
/// changes the process may no longer have the right to change its groups.
fn switch_user(user: &ResolvedUser) -> Result<(), InitError> {
    let groups: Vec<Gid> = user
        .additional_gids
        .iter()
        .copied()
        .map(Gid::from_raw)
        .collect();
    let gid = Gid::from_raw(user.gid);
    let uid = Uid::from_raw(user.uid);

    setgroups(&groups).map_err(failed(format_args!(
        "set additional gids {:?}",
        user.additional_gids
    )))?;
    setresgid(gid, gid, gid).map_err(failed(format_args!("set gid {gid}")))?;
    setresuid(uid, uid, uid).map_err(failed(format_args!("set uid {uid}")))
}

/// Adds `PATH` and `HOME` when the spec leaves them out: `PATH` as runc sets it, `HOME`
/// from the user's passwd entry or `/`.
fn with_default_env(mut env: Vec<String>, user: &ResolvedUser) -> Vec<String> {
    let has = |env: &[String], key: &str| {
        env.iter()
            .any(|entry| entry.split_once('=').is_some_and(|(name, _)| name == key))
    };
    if !has(&env, "PATH") {
        env.push(format!("PATH={DEFAULT_PATH}"));
    }
    if !has(&env, "HOME") {
        env.push(format!("HOME={}", user.home.as_deref().unwrap_or("/")));
    }
    env
}

/// Finds `name` as `execvp` does: a name with a slash is used as is, others are looked
/// up in the `PATH` of the container's environment.
fn find_executable(name: &str, env: &[String]) -> Result<PathBuf, InitError> {
    let not_found = || InitError {
        kind: FailureKind::ExecutableNotFound {
            name: name.to_owned(),
        },
        message: format!(
            "executable {name:?} not found {}",
            crate::error::searched_in(name)
        ),
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
