//! Duties of the agent when the kernel starts it as the guest's init (PID 1).
//!
//! An initramfs gives PID 1 empty `/proc`, `/sys` and `/dev` directories, and no
//! console on fds 0 to 2 when the archive lacks a `/dev/console` node. [`prepare`]
//! mounts the kernel filesystems the agent and its containers use and attaches the
//! console, before anything else reads a path under them. A target that already
//! has a mount, such as one an `/init` script made, is left alone.
//!
//! selinuxfs is mounted at `/sys/fs/selinux`, as an init system does, but only when the
//! kernel lists it in `/proc/filesystems`, which it does only when SELinux was enabled
//! at boot. rustjail takes SELinux as enabled when `/sys/fs/selinux/enforce` exists.
//! That file exists as soon as selinuxfs is mounted, before any policy is loaded.
//!
//! The kernel reparents every orphan to PID 1. The reaper already collects every
//! exited child with `waitpid(-1)`, whoever its original parent was, so an orphan
//! needs no extra handling here.
//!
//! The kernel panics when PID 1 exits. After a fatal error or SIGTERM the agent
//! calls [`power_off`] in place of exiting, so the VMM sees a clean power-off and the
//! host can read the reason from the console log.

use std::collections::HashSet;
use std::ffi::CStr;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::mount::MountFlags;
use slog::{error, info, warn, Logger};

/// One filesystem mounted at start-up when its target is not a mount point yet.
struct KernelMount {
    /// Path relative to the root, so that tests can mount under a temporary root.
    target: &'static str,
    fstype: &'static str,
    source: &'static str,
    flags: MountFlags,
    data: &'static CStr,
    /// Mount only when `/proc/filesystems` lists `fstype`, for a filesystem that the
    /// kernel registers only when a boot-time feature is enabled.
    if_registered: bool,
}

/// Hardening shared by every kernel filesystem: no set-user-ID binaries.
const NOSUID: MountFlags = MountFlags::NOSUID;

/// Mounted in this order, because each target lies on a filesystem mounted before it.
const KERNEL_MOUNTS: [KernelMount; 9] = [
    KernelMount {
        target: "proc",
        fstype: "proc",
        source: "proc",
        flags: NOSUID.union(MountFlags::NODEV).union(MountFlags::NOEXEC),
        data: c"",
        if_registered: false,
    },
    KernelMount {
        target: "sys",
        fstype: "sysfs",
        source: "sysfs",
        flags: NOSUID.union(MountFlags::NODEV).union(MountFlags::NOEXEC),
        data: c"",
        if_registered: false,
    },
    KernelMount {
        target: "dev",
        fstype: "devtmpfs",
        source: "devtmpfs",
        flags: NOSUID,
        data: c"mode=0755",
        if_registered: false,
    },
    KernelMount {
        target: "dev/pts",
        fstype: "devpts",
        source: "devpts",
        flags: NOSUID.union(MountFlags::NOEXEC),
        data: c"newinstance,ptmxmode=0666,mode=0620",
        if_registered: false,
    },
    KernelMount {
        target: "dev/shm",
        fstype: "tmpfs",
        source: "shm",
        flags: NOSUID.union(MountFlags::NODEV),
        data: c"mode=1777",
        if_registered: false,
    },
    KernelMount {
        target: "run",
        fstype: "tmpfs",
        source: "tmpfs",
        flags: NOSUID.union(MountFlags::NODEV),
        data: c"mode=0755",
        if_registered: false,
    },
    KernelMount {
        target: "tmp",
        fstype: "tmpfs",
        source: "tmpfs",
        flags: NOSUID.union(MountFlags::NODEV),
        data: c"mode=1777",
        if_registered: false,
    },
    KernelMount {
        target: "sys/fs/cgroup",
        fstype: "cgroup2",
        source: "cgroup2",
        flags: NOSUID.union(MountFlags::NODEV).union(MountFlags::NOEXEC),
        data: c"",
        if_registered: false,
    },
    // Read-write, because loading a policy writes to it.
    KernelMount {
        target: "sys/fs/selinux",
        fstype: "selinuxfs",
        source: "selinuxfs",
        flags: NOSUID.union(MountFlags::NOEXEC),
        data: c"",
        if_registered: true,
    },
];

/// Errors of the start-up steps. None of them stops the agent: each is logged, and a
/// later request that needs the missing piece fails with its own error.
#[derive(Debug, thiserror::Error)]
pub enum Pid1Error {
    #[error("create mount point {path}: {source}")]
    MountPoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("mount {fstype} on {path}: {source}")]
    Mount {
        fstype: &'static str,
        path: PathBuf,
        #[source]
        source: rustix::io::Errno,
    },

    #[error("read mount table {path}: {source}")]
    MountTable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("read the kernel's filesystem types from {path}: {source}")]
    FilesystemTypes {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("route Ctrl-Alt-Del to SIGINT for PID 1: {0}")]
    CtrlAltDel(#[source] rustix::io::Errno),

    #[error("attach console {path} to stdin, stdout and stderr: {source}")]
    Console {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Outcome of [`prepare`], kept until the logger exists.
#[derive(Debug, Default)]
pub struct Prepared {
    /// Mount points that were mounted, in order.
    pub mounted: Vec<PathBuf>,
    /// Mount points that already had a mount and were left alone.
    pub present: Vec<PathBuf>,
    /// Filesystem types that the kernel does not register, such as selinuxfs without
    /// SELinux, each with the mount point left without it.
    pub unregistered: Vec<(&'static str, PathBuf)>,
    pub console_attached: bool,
    pub failures: Vec<Pid1Error>,
}

impl Prepared {
    /// Logs what start-up did, with one error record per failed step.
    pub fn log(&self, logger: &Logger) {
        let list = |paths: &[PathBuf]| {
            paths
                .iter()
                .map(|path| path.display().to_string())
                .collect::<Vec<_>>()
                .join(" ")
        };
        info!(logger, "running as init (PID 1)";
            "mounted" => list(&self.mounted),
            "already_mounted" => list(&self.present),
            "console_attached" => self.console_attached);

        for (fstype, path) in &self.unregistered {
            info!(logger, "kernel filesystem type not registered, mount left out";
                "fstype" => fstype, "path" => %path.display());
        }
        for failure in &self.failures {
            error!(logger, "init start-up step failed"; "error" => %failure);
        }
    }
}

/// Returns whether this process is the init of its PID namespace.
pub fn is_init() -> bool {
    rustix::process::getpid().is_init()
}

/// Prepares the guest for the agent as its init: [`prepare`] on `/`, then makes the
/// kernel turn Ctrl-Alt-Del into SIGINT for PID 1 instead of an immediate reboot. The
/// host can then press Ctrl-Alt-Del (QMP `send-key`) to have the agent remove its
/// containers and power the VM off.
pub fn prepare_guest() -> Prepared {
    let mut prepared = prepare(Path::new("/"));

    if let Err(errno) = rustix::system::reboot(rustix::system::RebootCommand::CadOff) {
        prepared.failures.push(Pid1Error::CtrlAltDel(errno));
    }

    prepared
}

/// Mounts the kernel filesystems under `root` that are missing, then points fds 0 to
/// 2 at `root/dev/console` when stderr is closed. Failures are collected, not
/// returned, so that one missing filesystem does not stop the rest.
pub fn prepare(root: &Path) -> Prepared {
    let mut prepared = Prepared::default();

    mount_kernel_filesystems(root, &mut prepared);

    match attach_console(root) {
        Ok(attached) => prepared.console_attached = attached,
        Err(failure) => prepared.failures.push(failure),
    }

    prepared
}

fn mount_kernel_filesystems(root: &Path, prepared: &mut Prepared) {
    let proc_dir = root.join("proc");
    let mut mounted = HashSet::new();
    // None when /proc/filesystems cannot be read. Every mount is tried then, so that a
    // missing type shows as a failed mount.
    let mut registered: Option<HashSet<String>> = None;

    for mount in &KERNEL_MOUNTS {
        let path = root.join(mount.target);

        // Until proc is mounted there is no mount table to read, so proc itself is
        // recognised by its filesystem type.
        let present = if mount.fstype == "proc" {
            is_procfs(&path)
        } else {
            mounted.contains(&path)
        };
        let unregistered = mount.if_registered
            && registered
                .as_ref()
                .is_some_and(|types| !types.contains(mount.fstype));
        if present {
            prepared.present.push(path);
        } else if unregistered {
            prepared.unregistered.push((mount.fstype, path));
        } else {
            match mount_one(mount, &path) {
                Ok(()) => prepared.mounted.push(path),
                Err(failure) => prepared.failures.push(failure),
            }
        }

        if mount.fstype == "proc" {
            match mount_points(&proc_dir.join("self/mountinfo")) {
                Ok(points) => mounted = points,
                Err(failure) => prepared.failures.push(failure),
            }
            match filesystem_types(&proc_dir.join("filesystems")) {
                Ok(types) => registered = Some(types),
                Err(failure) => prepared.failures.push(failure),
            }
        }
    }
}

fn mount_one(mount: &KernelMount, path: &Path) -> Result<(), Pid1Error> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(path)
        .map_err(|source| Pid1Error::MountPoint {
            path: path.to_path_buf(),
            source,
        })?;

    rustix::mount::mount(mount.source, path, mount.fstype, mount.flags, mount.data).map_err(
        |source| Pid1Error::Mount {
            fstype: mount.fstype,
            path: path.to_path_buf(),
            source,
        },
    )
}

fn is_procfs(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|stat| stat.f_type == rustix::fs::PROC_SUPER_MAGIC)
}

/// Reads the mount points listed in a `mountinfo` file.
fn mount_points(mountinfo: &Path) -> Result<HashSet<PathBuf>, Pid1Error> {
    let text = fs::read_to_string(mountinfo).map_err(|source| Pid1Error::MountTable {
        path: mountinfo.to_path_buf(),
        source,
    })?;

    Ok(parse_mount_points(&text))
}

/// Returns field 5 of each mountinfo line, the mount point, with the kernel's octal
/// escapes (`\040` for a space) decoded.
fn parse_mount_points(mountinfo: &str) -> HashSet<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_octal(field)))
        .collect()
}

/// Reads the filesystem types that the kernel registers from a `filesystems` file.
fn filesystem_types(path: &Path) -> Result<HashSet<String>, Pid1Error> {
    let text = fs::read_to_string(path).map_err(|source| Pid1Error::FilesystemTypes {
        path: path.to_path_buf(),
        source,
    })?;

    Ok(parse_filesystem_types(&text))
}

/// Returns the last field of each line of `/proc/filesystems`, which is the type name.
/// A `nodev` field before it marks types that need no block device.
fn parse_filesystem_types(filesystems: &str) -> HashSet<String> {
    filesystems
        .lines()
        .filter_map(|line| line.split_whitespace().last())
        .map(str::to_string)
        .collect()
}

fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;

    while index < bytes.len() {
        let escape = bytes.get(index + 1..index + 4);
        let value = escape
            .filter(|_| bytes[index] == b'\\')
            .and_then(|digits| std::str::from_utf8(digits).ok())
            .and_then(|digits| u8::from_str_radix(digits, 8).ok());
        match value {
            Some(byte) => {
                out.push(byte);
                index += 4;
            }
            None => {
                out.push(bytes[index]);
                index += 1;
            }
        }
    }

    String::from_utf8_lossy(&out).into_owned()
}

/// Opens `root/dev/console` onto fds 0, 1 and 2 when fd 2 is closed, which happens
/// when the initramfs has no `/dev/console` node for the kernel to open. Returns
/// whether it attached the console.
fn attach_console(root: &Path) -> Result<bool, Pid1Error> {
    // proc is mounted by now. Without it the check cannot be made, and writing to a
    // closed fd 2 only loses log lines, so the console is attached anyway then.
    if root.join("proc/self/fd/2").exists() {
        return Ok(false);
    }

    let path = root.join("dev/console");
    let failed = |source| Pid1Error::Console {
        path: path.clone(),
        source,
    };
    let console = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(&path)
        .map_err(failed)?;

    // dup2 leaves O_CLOEXEC off the new fds, which is what stdio needs, while the
    // File keeps it and is closed at the end of this function.
    nix::unistd::dup2_stdin(&console).map_err(|errno| failed(errno.into()))?;
    nix::unistd::dup2_stdout(&console).map_err(|errno| failed(errno.into()))?;
    nix::unistd::dup2_stderr(&console).map_err(|errno| failed(errno.into()))?;
    Ok(true)
}

/// Flushes the filesystems and powers the VM off. PID 1 must not exit, so this never
/// returns: when the power-off call itself fails, the process sleeps until the VMM
/// stops the VM.
pub fn power_off(logger: &Logger, reason: &str) -> ! {
    info!(logger, "powering off the VM"; "reason" => reason);

    rustix::fs::sync();
    if let Err(errno) = rustix::system::reboot(rustix::system::RebootCommand::PowerOff) {
        error!(logger, "power off failed; waiting for the VMM to stop the VM"; "error" => %errno);
    }

    loop {
        nix::unistd::pause();
        warn!(logger, "signal received while waiting for power-off");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 0:21 / / rw,relatime - rootfs rootfs rw
23 22 0:22 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
24 22 0:5 / /dev rw,nosuid - devtmpfs devtmpfs rw,mode=755
30 22 0:30 / /mnt/my\\040disk rw - ext4 /dev/vda rw
";

    #[test]
    fn mountinfo_lists_mount_points() {
        let points = parse_mount_points(MOUNTINFO);

        assert_eq!(points.len(), 4);
        assert!(points.contains(Path::new("/proc")));
        assert!(points.contains(Path::new("/dev")));
        assert!(points.contains(Path::new("/mnt/my disk")));
        assert!(!points.contains(Path::new("/sys")));
    }

    #[test]
    fn filesystem_types_are_last_fields() {
        let types = parse_filesystem_types("nodev\tsysfs\nnodev\tselinuxfs\n\text4\n\n");

        assert_eq!(types.len(), 3, "{types:?}");
        assert!(types.contains("sysfs"));
        assert!(types.contains("selinuxfs"));
        assert!(types.contains("ext4"));
        assert!(!types.contains("nodev"));
    }

    #[test]
    fn octal_escapes_decode() {
        assert_eq!(unescape_octal("/a\\040b\\011c\\134d"), "/a b\tc\\d");
        assert_eq!(unescape_octal("/plain"), "/plain");
        assert_eq!(unescape_octal("/short\\04"), "/short\\04");
        assert_eq!(unescape_octal("/bad\\09x"), "/bad\\09x");
    }

    #[test]
    fn mounts_follow_their_ancestors() {
        for (index, mount) in KERNEL_MOUNTS.iter().enumerate() {
            for (other_index, other) in KERNEL_MOUNTS.iter().enumerate() {
                let is_ancestor = Path::new(mount.target).starts_with(other.target)
                    && mount.target != other.target;

                assert!(
                    !is_ancestor || other_index < index,
                    "{} is mounted before {}, which lies on it",
                    mount.target,
                    other.target
                );
            }
        }
    }

    /// Runs `prepare` under a temporary root in a private mount namespace, through
    /// `unshare(1)` re-running this test binary, so no mount reaches the machine.
    #[test]
    fn prepare_mounts_missing_filesystems() {
        if let Ok(root) = std::env::var(CHILD_ROOT_VAR) {
            run_prepare_in_child(Path::new(&root));
            return;
        }
        assert!(
            rustix::process::geteuid().is_root(),
            "this test mounts filesystems and needs root"
        );

        let root = tempfile::tempdir().expect("create temporary root");
        let output = std::process::Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--"])
            .arg(std::env::current_exe().expect("test binary path"))
            .args(["--exact", "pid1::tests::prepare_mounts_missing_filesystems"])
            .args(["--nocapture", "--test-threads", "1"])
            .env(CHILD_ROOT_VAR, root.path())
            .output()
            .expect("run unshare");

        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains("1 passed"),
            "child ran no test:\n{stdout}\n{stderr}"
        );
    }

    const CHILD_ROOT_VAR: &str = "BERTH_PID1_TEST_ROOT";

    /// Runs `prepare` under `root` and checks that it mounted every filesystem that this
    /// machine's kernel registers and left out the others, such as selinuxfs on a host
    /// without SELinux.
    fn run_prepare_in_child(root: &Path) {
        let registered =
            filesystem_types(Path::new("/proc/filesystems")).expect("read /proc/filesystems");
        let (expected, left_out): (Vec<&KernelMount>, Vec<&KernelMount>) = KERNEL_MOUNTS
            .iter()
            .partition(|mount| !mount.if_registered || registered.contains(mount.fstype));
        let left_out: Vec<(&str, PathBuf)> = left_out
            .iter()
            .map(|mount| (mount.fstype, root.join(mount.target)))
            .collect();

        let first = prepare(root);
        assert!(first.failures.is_empty(), "{:?}", first.failures);
        assert_eq!(first.mounted.len(), expected.len(), "{first:?}");
        assert_eq!(first.unregistered, left_out);
        assert!(!first.console_attached);

        let table = fs::read_to_string(root.join("proc/self/mountinfo")).expect("mountinfo");
        let points = parse_mount_points(&table);
        for mount in &expected {
            assert!(
                points.contains(&root.join(mount.target)),
                "{} not mounted",
                mount.target
            );
        }
        for (fstype, path) in &left_out {
            assert!(
                !points.contains(path),
                "{fstype} mounted at {}",
                path.display()
            );
        }
        assert!(is_procfs(&root.join("proc")));

        // A second run, as after an /init script that mounted everything, changes nothing.
        let second = prepare(root);
        assert!(second.failures.is_empty(), "{:?}", second.failures);
        assert!(second.mounted.is_empty(), "{second:?}");
        assert_eq!(second.present.len(), expected.len());
        assert_eq!(second.unregistered, left_out);
    }
}
