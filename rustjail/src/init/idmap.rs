//! ID-mapped bind mounts: `mounts[].uidMappings` and `gidMappings`, and the `idmap` and
//! `ridmap` options.
//!
//! The caller, not the init, prepares each ID-mapped mount, because `mount_setattr` with
//! `MOUNT_ATTR_IDMAP` needs `CAP_SYS_ADMIN` in the user namespace that owns the source's
//! file system, which for a host directory is the initial one. An init in the container's
//! own user namespace lacks that. So the caller clones the source as a detached mount
//! (`open_tree`), ID-maps it through a user namespace that carries the spec's mappings,
//! and sends the descriptors after the configuration, in spec order. The init attaches
//! each one onto its destination, resolved inside the root, with `move_mount`.
//!
//! The mappings are written as the spec gives them, relative to the caller's user
//! namespace. The kernel reads an owner ID stored on disk as a container ID of the
//! mapping and shows the host ID it maps to. With `{containerID 0, hostID 1000, size 1}`,
//! a file stored as owned by 0 appears owned by host uid 1000, and a file that host uid
//! 1000 creates through the mount is stored as owned by 0. Stored IDs outside the mapping
//! appear as the overflow ID (65534), and a process whose IDs are outside it cannot
//! create files there (EOVERFLOW).

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Mount, Spec};
use rustix::fs::{statx, AtFlags, StatxFlags, CWD};
use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};

use super::mount_options;
use super::InitError;
use crate::error::Error;
use crate::user_namespace::{map_lines, write_once};

/// How long the init waits for the trees that follow its configuration.
const RECEIVE_TIMEOUT: Duration = Duration::from_secs(30);

/// The spec field named in errors about ID-mapped mounts.
const FIELD: &str = "mounts[].uidMappings";

/// One spec mount that becomes an ID-mapped bind mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdMappedMount {
    pub destination: PathBuf,
    pub source: PathBuf,
    /// `rbind`: the clone takes the submounts of the source along.
    pub recursive_tree: bool,
    /// `ridmap`: the mapping applies to those submounts too, not only to the top mount.
    pub recursive_mapping: bool,
    pub mapping: Mapping,
}

/// Source of the user namespace that carries a mount's mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Mapping {
    /// A new user namespace with these `uid_map` and `gid_map` contents.
    Maps { uid_map: String, gid_map: String },
    /// The user namespace the container joins, given by path.
    Namespace(PathBuf),
}

/// Returns whether `entry` requests an ID-mapped mount, by a mapping or by the `idmap`
/// or `ridmap` option.
pub(crate) fn is_idmapped(entry: &Mount) -> bool {
    let has = |mappings: &Option<Vec<LinuxIdMapping>>| {
        mappings.as_ref().is_some_and(|list| !list.is_empty())
    };
    let options = entry.options().as_deref().unwrap_or_default();
    has(entry.uid_mappings())
        || has(entry.gid_mappings())
        || options
            .iter()
            .any(|option| option == "idmap" || option == "ridmap")
}

/// Checks the ID-mapped mounts of `spec` and returns them in spec order.
///
/// As in runc, a mapping needs a bind mount and both `uidMappings` and `gidMappings`. The
/// `idmap` or `ridmap` option without mappings takes those of the container's user
/// namespace: the spec's `linux.uidMappings` and `linux.gidMappings` for a new one, the
/// namespace itself for one joined by path.
pub(crate) fn plan(spec: &Spec) -> Result<Vec<IdMappedMount>, Error> {
    let mut planned = Vec::new();
    for entry in spec.mounts().iter().flatten() {
        if is_idmapped(entry) {
            planned.push(plan_mount(spec, entry)?);
        }
    }
    Ok(planned)
}

fn plan_mount(spec: &Spec, entry: &Mount) -> Result<IdMappedMount, Error> {
    let destination = entry.destination().clone();
    let invalid = |reason: String| {
        Error::InvalidSpec(format!(
            "ID-mapped mount {}: {reason}",
            destination.display()
        ))
    };
    let words = entry.options().clone().unwrap_or_default();
    let options = mount_options::parse(&words);
    let kind = entry.typ().as_deref().unwrap_or("");
    if !(options.bind || kind == "bind") {
        return Err(invalid(format!(
            "uidMappings and gidMappings need a bind mount (type \"bind\" or option \
             bind or rbind), but the type is {kind:?}"
        )));
    }
    let source = entry
        .source()
        .clone()
        .ok_or_else(|| invalid("the bind mount has no source".to_owned()))?;

    let uid_mappings = entry.uid_mappings().clone().unwrap_or_default();
    let gid_mappings = entry.gid_mappings().clone().unwrap_or_default();
    let mapping = match (uid_mappings.is_empty(), gid_mappings.is_empty()) {
        (false, false) => Mapping::Maps {
            uid_map: map_lines("uidMappings", &uid_mappings).map_err(invalid)?,
            gid_map: map_lines("gidMappings", &gid_mappings).map_err(invalid)?,
        },
        (true, true) => container_mapping(spec).map_err(invalid)?,
        (false, true) => return Err(invalid("uidMappings needs gidMappings too".to_owned())),
        (true, false) => return Err(invalid("gidMappings needs uidMappings too".to_owned())),
    };

    Ok(IdMappedMount {
        destination,
        source,
        recursive_tree: options.recursive,
        recursive_mapping: words.iter().any(|word| word == "ridmap"),
        mapping,
    })
}

/// Returns the mapping of the container's user namespace, for `idmap` without mappings.
fn container_mapping(spec: &Spec) -> Result<Mapping, String> {
    let linux = spec.linux().as_ref();
    let user_namespace = linux
        .and_then(|linux| linux.namespaces().as_ref())
        .and_then(|namespaces| {
            namespaces
                .iter()
                .find(|namespace| namespace.typ() == LinuxNamespaceType::User)
        })
        .ok_or_else(|| {
            "option idmap or ridmap without uidMappings and gidMappings takes the mappings \
             of the container's user namespace, but the spec has none"
                .to_owned()
        })?;
    if let Some(path) = user_namespace.path() {
        return Ok(Mapping::Namespace(path.clone()));
    }
    let uid_mappings = linux
        .and_then(|linux| linux.uid_mappings().clone())
        .unwrap_or_default();
    let gid_mappings = linux
        .and_then(|linux| linux.gid_mappings().clone())
        .unwrap_or_default();
    Ok(Mapping::Maps {
        uid_map: map_lines("linux.uidMappings", &uid_mappings)?,
        gid_map: map_lines("linux.gidMappings", &gid_mappings)?,
    })
}

/// Clones and ID-maps the source of each planned mount, in order. Runs in the caller,
/// which has `CAP_SYS_ADMIN` over the sources' file systems.
pub(crate) fn open_trees(
    container: &str,
    planned: &[IdMappedMount],
) -> Result<Vec<OwnedFd>, Error> {
    planned
        .iter()
        .map(|mount| {
            open_tree_mapped(mount).map_err(|failure| failure.into_error(container, mount))
        })
        .collect()
}

/// A failed step of preparing one ID-mapped mount.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
struct StepError {
    step: String,
    source: io::Error,
    /// The kernel or the file system lacks ID-mapped mounts.
    unsupported: bool,
}

impl StepError {
    fn new(step: impl Into<String>, source: impl Into<io::Error>) -> StepError {
        StepError {
            step: step.into(),
            source: source.into(),
            unsupported: false,
        }
    }

    fn into_error(self, container: &str, mount: &IdMappedMount) -> Error {
        if self.unsupported {
            return Error::Unsupported {
                field: FIELD,
                missing: format!(
                    "ID-mapped mount {}: source {} on file system {} cannot be ID-mapped \
                     ({self}); ID-mapped mounts need Linux 5.12 or later and a file system \
                     that supports them",
                    mount.destination.display(),
                    mount.source.display(),
                    filesystem_type(&mount.source),
                ),
            };
        }
        Error::IdMappedMount {
            container: container.to_owned(),
            mount: format!(
                "{} from {}",
                mount.destination.display(),
                mount.source.display()
            ),
            step: self.step,
            source: self.source,
        }
    }
}

fn open_tree_mapped(mount: &IdMappedMount) -> Result<OwnedFd, StepError> {
    let namespace = match &mount.mapping {
        Mapping::Maps { uid_map, gid_map } => mapped_user_namespace(uid_map, gid_map)?,
        Mapping::Namespace(path) => File::open(path).map(OwnedFd::from).map_err(|error| {
            StepError::new(format!("open user namespace {}", path.display()), error)
        })?,
    };

    let mut flags = OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC;
    if mount.recursive_tree {
        flags |= OpenTreeFlags::AT_RECURSIVE;
    }
    // NOTE: the source is looked up in the caller's mount namespace, while the init looks
    // up plain bind sources in the container's. They differ only when the spec joins a
    // mount namespace by path.
    let tree = open_tree(CWD, &mount.source, flags).map_err(|errno| StepError {
        unsupported: errno == rustix::io::Errno::NOSYS,
        ..StepError::new("open_tree", errno)
    })?;

    set_idmap(tree.as_fd(), namespace.as_fd(), mount.recursive_mapping).map_err(|error| {
        let unsupported = matches!(
            error.raw_os_error(),
            Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS)
        );
        StepError {
            unsupported,
            ..StepError::new("mount_setattr MOUNT_ATTR_IDMAP", error)
        }
    })?;
    Ok(tree)
}

/// Sets `MOUNT_ATTR_IDMAP` with the user namespace `namespace` on the detached `tree`.
fn set_idmap(tree: BorrowedFd<'_>, namespace: BorrowedFd<'_>, recursive: bool) -> io::Result<()> {
    // rustix 1.1 has no mount_setattr wrapper, so the call is made directly.
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: namespace.as_raw_fd() as u64,
    };
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: the path is a NUL-terminated empty string and `attr` a live mount_attr of
    // the size passed, both outliving the call, which only reads them.
    let result = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Creates a user namespace with `uid_map` and `gid_map` and returns a descriptor of it.
///
/// A helper child is cloned into the new namespace and waits there until the maps are
/// written and the namespace is opened. The descriptor keeps the namespace alive after
/// the helper is killed.
fn mapped_user_namespace(uid_map: &str, gid_map: &str) -> Result<OwnedFd, StepError> {
    let helper = Helper::clone_into_new_user_namespace()
        .map_err(|error| StepError::new("clone a process into a new user namespace", error))?;

    for (file, text) in [("uid_map", uid_map), ("gid_map", gid_map)] {
        let path = format!("/proc/{}/{file}", helper.pid);
        write_once(&path, text).map_err(|error| {
            StepError::new(
                format!(
                    "write \"{}\" to {path}",
                    text.trim_end().replace('\n', ", ")
                ),
                error,
            )
        })?;
    }
    let path = format!("/proc/{}/ns/user", helper.pid);
    let namespace =
        File::open(&path).map_err(|error| StepError::new(format!("open {path}"), error))?;
    Ok(namespace.into())
}

/// A child that does nothing but hold a new user namespace. Dropping it kills and reaps
/// it.
struct Helper {
    pid: i32,
}

impl Helper {
    /// Clones a child into a new user namespace, with exit signal 0 so that a caller's
    /// SIGCHLD reaper calling `waitpid(-1, ...)` without `__WALL` cannot reap it first.
    fn clone_into_new_user_namespace() -> io::Result<Helper> {
        let flags = libc::CLONE_NEWUSER as libc::c_ulong;
        // SAFETY: clone without CLONE_VM and with a null stack has fork semantics, so the
        // child runs on its own copy of the caller's memory. The caller may have other
        // threads, so the child makes only async-signal-safe calls and never returns.
        let pid = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            // SAFETY: prctl and pause are async-signal-safe system calls on no memory of
            // the caller. The parent death signal ends the helper if the caller's thread
            // dies before it kills the helper.
            unsafe {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                loop {
                    libc::pause();
                }
            }
        }
        Ok(Helper { pid: pid as i32 })
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let pid = Pid::from_raw(self.pid);
        // The helper is this process's unreaped child, so its pid cannot be reused yet.
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, Some(WaitPidFlag::__WALL));
    }
}

/// Returns the type of the file system that contains `path`, from the mount table, or
/// "unknown".
fn filesystem_type(path: &Path) -> String {
    let Ok(stat) = statx(CWD, path, AtFlags::empty(), StatxFlags::MNT_ID) else {
        return "unknown".to_owned();
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mount_id = stat.stx_mnt_id.to_string();
    mountinfo
        .lines()
        .find(|line| line.split(' ').next() == Some(mount_id.as_str()))
        .and_then(|line| line.split(" - ").nth(1))
        .and_then(|fields| fields.split(' ').next())
        .unwrap_or("unknown")
        .to_owned()
}

/// The trees the caller sent, in spec order, waiting for `attach_next`.
static TREES: Mutex<VecDeque<OwnedFd>> = Mutex::new(VecDeque::new());

/// Receives the `count` trees that the caller sends after the configuration.
pub(crate) fn receive_trees(sync: BorrowedFd<'_>, count: usize) -> Result<(), InitError> {
    let deadline = Instant::now() + RECEIVE_TIMEOUT;
    let mut trees = TREES
        .lock()
        .map_err(|_| InitError::system("ID-mapped mount queue is poisoned"))?;
    for index in 0..count {
        let tree = crate::sync::recv_fd(sync, deadline).map_err(|error| {
            InitError::system(format!(
                "receive ID-mapped mount {} of {count}: {error}",
                index + 1
            ))
        })?;
        trees.push_back(tree);
    }
    Ok(())
}

/// Attaches the next tree the caller sent onto `target`, the destination resolved inside
/// the root.
pub(crate) fn attach_next(target: &OwnedFd) -> Result<(), String> {
    let tree = TREES
        .lock()
        .map_err(|_| "ID-mapped mount queue is poisoned".to_owned())?
        .pop_front()
        .ok_or("the caller sent no ID-mapped tree for this mount")?;
    move_mount(
        tree.as_fd(),
        "",
        target.as_fd(),
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|errno| format!("move_mount the ID-mapped tree: {errno}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxBuilder, LinuxIdMappingBuilder, LinuxNamespaceBuilder, MountBuilder, SpecBuilder,
    };

    fn mapping(container: u32, host: u32, size: u32) -> LinuxIdMapping {
        LinuxIdMappingBuilder::default()
            .container_id(container)
            .host_id(host)
            .size(size)
            .build()
            .unwrap()
    }

    fn bind(options: &[&str]) -> MountBuilder {
        MountBuilder::default()
            .destination("/data")
            .typ("bind")
            .source("/srv/data")
            .options(
                options
                    .iter()
                    .map(|word| word.to_string())
                    .collect::<Vec<_>>(),
            )
    }

    fn spec_with(mount: Mount, user_namespace: bool) -> Spec {
        let mut linux = LinuxBuilder::default();
        if user_namespace {
            linux = linux
                .namespaces(vec![LinuxNamespaceBuilder::default()
                    .typ(LinuxNamespaceType::User)
                    .build()
                    .unwrap()])
                .uid_mappings(vec![mapping(0, 100_000, 65_536)])
                .gid_mappings(vec![mapping(0, 200_000, 65_536)]);
        }
        SpecBuilder::default()
            .mounts(vec![mount])
            .linux(linux.build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn mappings_become_map_lines() {
        let mount = bind(&["rbind", "ridmap"])
            .uid_mappings(vec![mapping(0, 1000, 1), mapping(1, 100_000, 10)])
            .gid_mappings(vec![mapping(0, 1000, 1)])
            .build()
            .unwrap();

        let planned = plan(&spec_with(mount, false)).unwrap();

        assert_eq!(planned.len(), 1);
        assert!(planned[0].recursive_tree);
        assert!(planned[0].recursive_mapping);
        assert_eq!(
            planned[0].mapping,
            Mapping::Maps {
                uid_map: "0 1000 1\n1 100000 10\n".to_owned(),
                gid_map: "0 1000 1\n".to_owned(),
            }
        );
    }

    #[test]
    fn mount_without_mapping_is_not_planned() {
        let mount = bind(&["rbind"]).build().unwrap();
        assert!(plan(&spec_with(mount, true)).unwrap().is_empty());
    }

    #[test]
    fn idmap_option_takes_user_namespace_mappings() {
        let mount = bind(&["bind", "idmap"]).build().unwrap();

        let planned = plan(&spec_with(mount, true)).unwrap();

        assert!(!planned[0].recursive_mapping);
        assert_eq!(
            planned[0].mapping,
            Mapping::Maps {
                uid_map: "0 100000 65536\n".to_owned(),
                gid_map: "0 200000 65536\n".to_owned(),
            }
        );
    }

    #[test]
    fn idmap_option_without_user_namespace_is_invalid() {
        let mount = bind(&["bind", "idmap"]).build().unwrap();

        let error = plan(&spec_with(mount, false)).unwrap_err();

        assert!(matches!(error, Error::InvalidSpec(_)), "{error}");
        assert!(error.to_string().contains("/data"), "{error}");
    }

    #[test]
    fn non_bind_mount_with_mappings_is_invalid() {
        let mount = MountBuilder::default()
            .destination("/data")
            .typ("tmpfs")
            .source("tmpfs")
            .uid_mappings(vec![mapping(0, 1000, 1)])
            .gid_mappings(vec![mapping(0, 1000, 1)])
            .build()
            .unwrap();

        let error = plan(&spec_with(mount, false)).unwrap_err();

        assert!(matches!(error, Error::InvalidSpec(_)), "{error}");
        let message = error.to_string();
        assert!(message.contains("/data"), "{message}");
        assert!(message.contains("tmpfs"), "{message}");
    }

    #[test]
    fn uid_mappings_without_gid_mappings_are_invalid() {
        // The builder rejects this combination, but a deserialized spec can carry it.
        let mut mount = bind(&["bind"]).build().unwrap();
        mount.set_uid_mappings(Some(vec![mapping(0, 1000, 1)]));

        let error = plan(&spec_with(mount, false)).unwrap_err();

        assert!(error.to_string().contains("gidMappings"), "{error}");
    }

    #[test]
    fn zero_size_mapping_is_invalid() {
        let mount = bind(&["bind"])
            .uid_mappings(vec![mapping(0, 1000, 0)])
            .gid_mappings(vec![mapping(0, 1000, 1)])
            .build()
            .unwrap();

        let error = plan(&spec_with(mount, false)).unwrap_err();

        assert!(
            error
                .to_string()
                .contains("uidMappings[0] (containerID 0, hostID 1000) has size 0"),
            "{error}"
        );
    }
}
