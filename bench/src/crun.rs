//! Runs `crun run` for the comparison, from one thread that lives in a private mount
//! namespace.
//!
//! crun 1.8 (Debian 12) rejects the hybrid cgroup layout, where a cgroup2 file system
//! is mounted at /sys/fs/cgroup/unified beside the v1 controllers. Running each crun
//! through `unshare -m sh -c 'umount ... && crun ...'` would add the cost of unshare
//! and a shell to every crun run. Instead one thread enters a private mount namespace
//! once, unmounts the cgroup2 mount there, and starts every crun itself. This works
//! because a child inherits the mount namespace of the thread that forks it. The machine's mounts are
//! never changed, because the namespace is private and dies with the thread.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};
use tokio::sync::{mpsc, oneshot};

use crate::error::{BenchError, Result};

/// Mount point of the cgroup2 file system in the hybrid layout.
const HYBRID_UNIFIED_MOUNT: &str = "/sys/fs/cgroup/unified";

/// A request to the runner thread: run a container with this id, send back the time.
type Job = (String, oneshot::Sender<Result<Duration>>);

/// A thread that runs `crun run` on request, inside a private mount namespace.
pub struct CrunRunner {
    jobs: Option<mpsc::Sender<Job>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CrunRunner {
    /// Starts the runner thread and waits until its mount namespace is ready. crun
    /// keeps its state under `state_dir` and runs `bundle`.
    pub fn start(crun: &Path, bundle: &Path, state_dir: &Path) -> Result<CrunRunner> {
        let (jobs, mut receiver) = mpsc::channel::<Job>(1);
        let (ready_sender, ready) = std::sync::mpsc::channel();
        let command = CrunCommand {
            crun: crun.to_path_buf(),
            bundle: bundle.to_path_buf(),
            state_dir: state_dir.to_path_buf(),
        };

        let thread = std::thread::spawn(move || {
            let entered = enter_private_mount_namespace();
            let failed = entered.is_err();
            let _ = ready_sender.send(entered);
            if failed {
                return;
            }

            while let Some((id, reply)) = receiver.blocking_recv() {
                let _ = reply.send(command.run(&id));
            }
        });

        match ready.recv() {
            Ok(Ok(())) => Ok(CrunRunner {
                jobs: Some(jobs),
                thread: Some(thread),
            }),
            Ok(Err(error)) => {
                let _ = thread.join();
                Err(error)
            }
            Err(_) => Err(BenchError::CrunRunnerStopped),
        }
    }

    /// Runs one container named `id` to its end and returns how long `crun run` took.
    pub async fn run(&self, id: String) -> Result<Duration> {
        let (reply, result) = oneshot::channel();
        let jobs = self.jobs.as_ref().ok_or(BenchError::CrunRunnerStopped)?;

        jobs.send((id, reply))
            .await
            .map_err(|_| BenchError::CrunRunnerStopped)?;
        result.await.map_err(|_| BenchError::CrunRunnerStopped)?
    }
}

impl Drop for CrunRunner {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct CrunCommand {
    crun: PathBuf,
    bundle: PathBuf,
    state_dir: PathBuf,
}

impl CrunCommand {
    /// Runs `crun run` and returns its wall time. The container's stdio is /dev/null,
    /// as the Berth containers' output is never read either.
    fn run(&self, id: &str) -> Result<Duration> {
        let started = Instant::now();
        let status = Command::new(&self.crun)
            .arg("--root")
            .arg(&self.state_dir)
            .arg("run")
            .arg("--bundle")
            .arg(&self.bundle)
            .arg(id)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map_err(|source| BenchError::Spawn {
                program: self.crun.clone(),
                source,
            })?;
        let elapsed = started.elapsed();

        if !status.success() {
            return Err(BenchError::CommandFailed {
                command: format!(
                    "{} run --bundle {} {id}",
                    self.crun.display(),
                    self.bundle.display()
                ),
                status,
            });
        }
        Ok(elapsed)
    }
}

/// Moves the calling thread into a new mount namespace with private propagation and,
/// in the hybrid layout, unmounts the cgroup2 mount there.
fn enter_private_mount_namespace() -> Result<()> {
    let failed = |operation| move |source| BenchError::MountNamespace { operation, source };

    unshare(CloneFlags::CLONE_NEWNS).map_err(failed("unshare(CLONE_NEWNS)"))?;

    // Private propagation keeps the unmount below from reaching the machine's namespace.
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(failed("make / private"))?;

    if cgroup_layout() == CgroupLayout::Hybrid {
        umount2(HYBRID_UNIFIED_MOUNT, MntFlags::MNT_DETACH)
            .map_err(failed("unmount /sys/fs/cgroup/unified"))?;
    }
    Ok(())
}

/// Layout of the cgroup file systems on this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupLayout {
    /// Only cgroup2, at /sys/fs/cgroup.
    Unified,
    /// v1 controllers, with cgroup2 at /sys/fs/cgroup/unified.
    Hybrid,
    /// Only v1 controllers.
    Legacy,
}

impl CgroupLayout {
    pub fn describe(self) -> &'static str {
        match self {
            CgroupLayout::Unified => "v2 (unified)",
            CgroupLayout::Hybrid => "hybrid (v1 controllers, v2 at /sys/fs/cgroup/unified)",
            CgroupLayout::Legacy => "v1",
        }
    }
}

/// Reads the cgroup layout of the calling thread's mount namespace from mountinfo.
pub fn cgroup_layout() -> CgroupLayout {
    let mountinfo = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap_or_default();
    layout_from_mountinfo(&mountinfo)
}

fn layout_from_mountinfo(mountinfo: &str) -> CgroupLayout {
    let mut unified_at_root = false;
    let mut unified_below = false;

    for line in mountinfo.lines() {
        // Fields: id parent major:minor root mount-point options ... - fstype source ...
        let mount_point = line.split_whitespace().nth(4).unwrap_or_default();
        let fs_type = line
            .split_once(" - ")
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .unwrap_or_default();
        if fs_type != "cgroup2" {
            continue;
        }
        if mount_point == "/sys/fs/cgroup" {
            unified_at_root = true;
        } else if mount_point == HYBRID_UNIFIED_MOUNT {
            unified_below = true;
        }
    }

    match (unified_at_root, unified_below) {
        (true, _) => CgroupLayout::Unified,
        (false, true) => CgroupLayout::Hybrid,
        (false, false) => CgroupLayout::Legacy,
    }
}

/// Times `unshare -m --propagation private sh -c 'umount /sys/fs/cgroup/unified'`, the
/// per-run cost a crun run would carry if each run made its own mount namespace the
/// way a shell user on this machine has to. It is reported, never added to crun's time.
pub fn time_unshare_wrapper() -> Result<Duration> {
    let started = Instant::now();
    let status = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!("umount {HYBRID_UNIFIED_MOUNT}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|source| BenchError::Spawn {
            program: PathBuf::from("unshare"),
            source,
        })?;
    let elapsed = started.elapsed();

    if !status.success() {
        return Err(BenchError::CommandFailed {
            command: format!(
                "unshare -m --propagation private sh -c 'umount {HYBRID_UNIFIED_MOUNT}'"
            ),
            status,
        });
    }
    Ok(elapsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 1 0:22 / /sys rw,nosuid - sysfs sysfs rw
30 25 0:26 / /sys/fs/cgroup ro - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
";

    #[test]
    fn hybrid_layout_detected() {
        assert_eq!(layout_from_mountinfo(HYBRID), CgroupLayout::Hybrid);
    }

    #[test]
    fn unified_layout_detected() {
        let mountinfo = "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        assert_eq!(layout_from_mountinfo(mountinfo), CgroupLayout::Unified);
    }

    #[test]
    fn legacy_layout_detected() {
        let mountinfo = "32 30 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(layout_from_mountinfo(mountinfo), CgroupLayout::Legacy);
    }

    #[test]
    fn private_namespace_leaves_machine_mounts() {
        // Needs root (CAP_SYS_ADMIN) for unshare(CLONE_NEWNS), as every test of Berth does.
        let before = cgroup_layout();

        let inside = std::thread::spawn(|| {
            enter_private_mount_namespace().expect("enter private mount namespace");
            cgroup_layout()
        })
        .join()
        .unwrap();

        assert_ne!(inside, CgroupLayout::Hybrid);
        assert_eq!(cgroup_layout(), before);
    }
}
