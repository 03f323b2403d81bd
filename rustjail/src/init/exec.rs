//! A process started in a running container: it joins the namespaces of the container's
//! init, then sets up its attributes, AppArmor profile and SELinux label included, as a
//! new container's process does and executes.
//!
//! The caller's clone already placed it in the init's pid namespace, and the caller moved
//! it into the container's cgroup before sending the configuration, so joining the
//! cgroup namespace afterwards gives the container's view.

use std::convert::Infallible;
use std::fs::File;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::MetadataExt;

use nix::sched::{setns, CloneFlags};

use super::{failed, lsm, namespaces, personality, process, scheduling, terminal, InitError};
use crate::sync::ExecConfig;

/// Namespaces joined, in order. User comes late: until then the process has the
/// caller's capabilities, which cover namespaces of the caller's user namespace that the
/// container shares as well as the container's own. Mount goes last, because joining it
/// changes the root and with it the `/proc` the other paths are read from.
const NAMESPACES: &[(&str, CloneFlags)] = &[
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("net", CloneFlags::CLONE_NEWNET),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("time", CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)),
    ("user", CloneFlags::CLONE_NEWUSER),
    ("mnt", CloneFlags::CLONE_NEWNS),
];

/// Joins the container and executes `config.process`. Returns only on failure.
pub(crate) fn run(sync: BorrowedFd<'_>, config: &ExecConfig) -> Result<Infallible, InitError> {
    // The security modules are looked up in the caller's /sys, which joining the mount
    // namespace hides. The caller logs the labels left out, see `exec_label_warnings`.
    let labels = lsm::plan_process(Some(&config.process), lsm::Enabled::detect());
    join_namespaces(config.target_pid)?;
    if config.process.terminal().unwrap_or(false) {
        terminal::set_up(sync, config.process.console_size())?;
    }
    personality::apply(config.personality.as_ref())?;
    scheduling::apply(
        &config.process,
        config.memory_policy.as_ref(),
        scheduling::Target::Exec,
    )?;
    let prepared = process::prepare(&config.process, config.seccomp.as_ref())?;
    lsm::set_exec_labels(&labels)?;

    Err(process::exec(prepared))
}

/// Opens every namespace of `pid` that differs from this process's, then joins them.
/// All are opened first, because after joining the mount namespace `/proc/<pid>` names
/// another process or none.
fn join_namespaces(pid: i32) -> Result<(), InitError> {
    let mut to_join = Vec::new();
    for (name, flag) in NAMESPACES {
        let path = format!("/proc/{pid}/ns/{name}");
        let target = File::open(&path).map_err(failed(format_args!("open {path}")))?;
        let own_path = format!("/proc/self/ns/{name}");
        let own = std::fs::metadata(&own_path).map_err(failed(format_args!("stat {own_path}")))?;
        let theirs = target
            .metadata()
            .map_err(failed(format_args!("stat {path}")))?;
        if (own.dev(), own.ino()) != (theirs.dev(), theirs.ino()) {
            to_join.push((path, target, *flag));
        }
    }

    for (path, target, flag) in to_join {
        setns(&target, flag).map_err(failed(format_args!("join namespace {path}")))?;
        if flag == CloneFlags::CLONE_NEWUSER {
            namespaces::become_root()?;
        }
    }
    Ok(())
}
