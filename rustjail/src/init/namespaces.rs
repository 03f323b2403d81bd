//! Namespaces of the init: join the ones given by path, then create the others.
//!
//! The pid namespace is not handled here: the caller's clone already placed the init in
//! it. A new user namespace comes from that clone too, and then the caller has also
//! joined the uts, ipc, net and cgroup namespaces given by path, which the init could
//! not join from inside the new user namespace. The init skips namespaces it is in
//! already.
//!
//! Namespaces given by path are joined before a user namespace given by path, while the
//! init still has the caller's capabilities, so that it can join namespaces the
//! container shares with the caller's user namespace. New namespaces are created last
//! and belong to the init's user namespace by then. The cgroup namespace is created after
//! the caller moved the init into its cgroup, so the container's view of cgroups starts
//! at its own cgroup.
//!
//! A new time namespace applies to the init's children and, through `execve`, to the
//! user process, not to the init itself. Its clock offsets are written before that.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use nix::sched::{setns, unshare, CloneFlags};
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, LinuxTimeOffset, Spec};

use super::{failed, InitError};

/// The clocks a time namespace can offset, by their names in the spec.
const OFFSET_CLOCKS: &[&str] = &["monotonic", "boottime"];

/// A namespace given by path, opened before any is joined, because joining a mount
/// namespace changes which files the remaining paths name.
struct ToJoin {
    kind: LinuxNamespaceType,
    path: PathBuf,
    file: File,
    flag: CloneFlags,
}

/// Joins and creates the namespaces the spec lists, except pid and those in
/// `joined_by_caller`, which the caller joined before the clone.
pub(crate) fn enter(spec: &Spec, joined_by_caller: &[LinuxNamespaceType]) -> Result<(), InitError> {
    let linux = spec.linux().as_ref();
    let namespaces = linux
        .and_then(|linux| linux.namespaces().clone())
        .unwrap_or_default();
    let offsets = linux
        .and_then(|linux| linux.time_offsets().clone())
        .unwrap_or_default();
    check_time_offsets(&namespaces, &offsets)?;

    let mut to_join = Vec::new();
    let mut new_namespaces = CloneFlags::empty();
    for namespace in &namespaces {
        let Some(flag) = clone_flag(namespace.typ()) else {
            continue;
        };
        match namespace.path() {
            Some(_) if joined_by_caller.contains(&namespace.typ()) => {}
            Some(path) => {
                if let Some(join) = open_unless_entered(namespace.typ(), path, flag)? {
                    to_join.push(join);
                }
            }
            // The caller's clone created it.
            None if flag == CloneFlags::CLONE_NEWUSER => {}
            None => new_namespaces |= flag,
        }
    }

    // Mount after the others, and user last, as the module comment explains.
    to_join.sort_by_key(|join| match join.flag {
        CloneFlags::CLONE_NEWNS => 1,
        CloneFlags::CLONE_NEWUSER => 2,
        _ => 0,
    });
    for join in &to_join {
        setns(&join.file, join.flag).map_err(failed(format_args!(
            "join {:?} namespace {}",
            join.kind,
            join.path.display()
        )))?;
        if join.flag == CloneFlags::CLONE_NEWUSER {
            become_root()?;
        }
    }

    unshare(new_namespaces)
        .map_err(failed(format_args!("create namespaces {new_namespaces:?}")))?;
    if new_namespaces.contains(time_flag()) {
        write_time_offsets(&offsets)?;
    }
    Ok(())
}

/// Opens the namespace at `path`, or returns `None` when the init is in it already.
fn open_unless_entered(
    kind: LinuxNamespaceType,
    path: &Path,
    flag: CloneFlags,
) -> Result<Option<ToJoin>, InitError> {
    let file = File::open(path).map_err(|cause| {
        InitError::invalid_spec(format!(
            "open {kind:?} namespace {}: {cause}",
            path.display()
        ))
    })?;
    let theirs = file
        .metadata()
        .map_err(failed(format_args!("stat namespace {}", path.display())))?;
    let own_path = format!("/proc/self/ns/{}", proc_name(kind));
    let own = std::fs::metadata(&own_path).map_err(failed(format_args!("stat {own_path}")))?;
    if (own.dev(), own.ino()) == (theirs.dev(), theirs.ino()) {
        return Ok(None);
    }
    Ok(Some(ToJoin {
        kind,
        path: path.to_path_buf(),
        file,
        flag,
    }))
}

/// Name of the namespace's file under `/proc/<pid>/ns`.
fn proc_name(kind: LinuxNamespaceType) -> &'static str {
    match kind {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Time => "time",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
    }
}

/// Takes uid and gid 0 of the user namespace just joined and drops the supplementary
/// groups. The init's own IDs are not mapped there, and files it creates, such as mount
/// points on a tmpfs of the container, need an owner the namespace can name.
pub(crate) fn become_root() -> Result<(), InitError> {
    let root_uid = nix::unistd::Uid::from_raw(0);
    let root_gid = nix::unistd::Gid::from_raw(0);
    nix::unistd::setgroups(&[])
        .map_err(failed("drop supplementary groups in the user namespace"))?;
    nix::unistd::setresgid(root_gid, root_gid, root_gid)
        .map_err(failed("become gid 0 of the user namespace"))?;
    nix::unistd::setresuid(root_uid, root_uid, root_uid)
        .map_err(failed("become uid 0 of the user namespace"))
}

/// Returns the clone flag of each namespace [`enter`] handles.
fn clone_flag(kind: LinuxNamespaceType) -> Option<CloneFlags> {
    match kind {
        LinuxNamespaceType::Mount => Some(CloneFlags::CLONE_NEWNS),
        LinuxNamespaceType::Uts => Some(CloneFlags::CLONE_NEWUTS),
        LinuxNamespaceType::Ipc => Some(CloneFlags::CLONE_NEWIPC),
        LinuxNamespaceType::Network => Some(CloneFlags::CLONE_NEWNET),
        LinuxNamespaceType::Cgroup => Some(CloneFlags::CLONE_NEWCGROUP),
        LinuxNamespaceType::Time => Some(time_flag()),
        LinuxNamespaceType::User => Some(CloneFlags::CLONE_NEWUSER),
        LinuxNamespaceType::Pid => None,
    }
}

/// `CLONE_NEWTIME`, which nix does not name.
fn time_flag() -> CloneFlags {
    CloneFlags::from_bits_retain(libc::CLONE_NEWTIME)
}

/// Offsets need a time namespace of the container's own, and each names a clock that a
/// time namespace can shift.
fn check_time_offsets(
    namespaces: &[LinuxNamespace],
    offsets: &HashMap<String, LinuxTimeOffset>,
) -> Result<(), InitError> {
    if offsets.is_empty() {
        return Ok(());
    }
    let new_time_namespace = namespaces
        .iter()
        .any(|namespace| namespace.typ() == LinuxNamespaceType::Time && namespace.path().is_none());
    if !new_time_namespace {
        return Err(InitError::invalid_spec(
            "linux.timeOffsets needs a new time namespace in linux.namespaces",
        ));
    }
    for (clock, offset) in offsets {
        if !OFFSET_CLOCKS.contains(&clock.as_str()) {
            return Err(InitError::invalid_spec(format!(
                "linux.timeOffsets names clock {clock:?}; only monotonic and boottime can be offset"
            )));
        }
        if offset.nanosecs().unwrap_or(0) >= 1_000_000_000 {
            return Err(InitError::invalid_spec(format!(
                "linux.timeOffsets.{clock}.nanosecs is {}, above 999999999",
                offset.nanosecs().unwrap_or(0)
            )));
        }
    }
    Ok(())
}

/// Writes the clock offsets of the time namespace the init's children enter. The kernel
/// takes them only before any process is in that namespace, which is the case until
/// `execve`.
fn write_time_offsets(offsets: &HashMap<String, LinuxTimeOffset>) -> Result<(), InitError> {
    for (clock, offset) in offsets {
        let line = format!(
            "{clock} {} {}\n",
            offset.secs().unwrap_or(0),
            offset.nanosecs().unwrap_or(0)
        );
        std::fs::write("/proc/self/timens_offsets", &line).map_err(failed(format_args!(
            "write time offset {:?} to /proc/self/timens_offsets",
            line.trim_end()
        )))?;
    }
    Ok(())
}
