//! Starting and stopping `berth-agent` for a benchmark, and reading its memory and
//! descriptor counts from /proc.
//!
//! The agent starts as ci/agent.sh starts it: `--isolate` (its own UTS and network
//! namespaces), a fake sysfs and an empty kernel command line in a temporary directory.
//! So it touches neither this machine's hostname, network, PCI bus nor boot parameters.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{BenchError, Result};

/// Log level the agent runs at. Debug records cost time on every RPC, so the
/// benchmark keeps the level an operator would run in production.
pub const LOG_LEVEL: &str = "warn";

/// How long the agent may take to accept its first connection.
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// How long the agent may take to exit after SIGTERM before it gets SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Pause between connection attempts while the agent starts. The agent gives no
/// readiness signal other than accepting, so polling is the event to wait on, and
/// this pause bounds the error it adds to the start-up time.
const CONNECT_POLL_INTERVAL: Duration = Duration::from_micros(100);

/// A running `berth-agent` child. Dropping it stops the agent if it still runs.
pub struct AgentProcess {
    child: Option<Child>,
    program: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    /// Time from spawning the process until a connection to its socket succeeded.
    pub start_up: Duration,
}

/// Memory and descriptor readings of the agent process at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessReading {
    /// Resident set size, in KiB (VmRSS).
    pub rss_kib: u64,
    /// Peak resident set size since the process started, in KiB (VmHWM).
    pub peak_rss_kib: u64,
    /// Anonymous part of the RSS (heap, stacks), in KiB (RssAnon).
    pub rss_anon_kib: u64,
    /// File-backed part of the RSS (the binary's and libraries' pages), in KiB (RssFile).
    pub rss_file_kib: u64,
    /// Threads of the agent process.
    pub threads: u64,
    /// Open file descriptors.
    pub open_fds: usize,
}

impl AgentProcess {
    /// Starts the agent with its state in `work_dir` and waits until it accepts a
    /// connection on `work_dir/agent.sock`.
    pub fn start(program: &Path, work_dir: &Path) -> Result<AgentProcess> {
        let socket = work_dir.join("agent.sock");
        let log = work_dir.join("agent.log");
        let run_dir = work_dir.join("run");
        let sysfs = work_dir.join("sys");
        let cmdline = work_dir.join("cmdline");
        prepare_fake_guest(&run_dir, &sysfs, &cmdline)?;

        let log_file = File::options()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(|source| BenchError::Write {
                path: log.clone(),
                source,
            })?;

        let started = Instant::now();
        let child = Command::new(program)
            .arg("--isolate")
            .arg("--server-addr")
            .arg(format!("unix://{}", socket.display()))
            .arg("--run-dir")
            .arg(&run_dir)
            .arg("--sysfs")
            .arg(&sysfs)
            .arg("--kernel-cmdline")
            .arg(&cmdline)
            .arg("--log-level")
            .arg(LOG_LEVEL)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(|source| BenchError::Spawn {
                program: program.to_path_buf(),
                source,
            })?;

        let mut agent = AgentProcess {
            child: Some(child),
            program: program.to_path_buf(),
            socket,
            log,
            start_up: Duration::ZERO,
        };
        agent.start_up = agent.wait_until_accepting(started)?;
        Ok(agent)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Reads the agent's RSS, peak RSS and open descriptor count from /proc.
    pub fn reading(&self) -> Result<ProcessReading> {
        let pid = self.pid().unwrap_or_default();
        let status_path = PathBuf::from(format!("/proc/{pid}/status"));
        let status = std::fs::read_to_string(&status_path).map_err(|source| BenchError::Read {
            path: status_path.clone(),
            source,
        })?;

        let fd_dir = PathBuf::from(format!("/proc/{pid}/fd"));
        let open_fds = std::fs::read_dir(&fd_dir)
            .map_err(|source| BenchError::Read {
                path: fd_dir.clone(),
                source,
            })?
            .count();

        Ok(ProcessReading {
            rss_kib: status_number(&status, "VmRSS:").unwrap_or_default(),
            peak_rss_kib: status_number(&status, "VmHWM:").unwrap_or_default(),
            rss_anon_kib: status_number(&status, "RssAnon:").unwrap_or_default(),
            rss_file_kib: status_number(&status, "RssFile:").unwrap_or_default(),
            threads: status_number(&status, "Threads:").unwrap_or_default(),
            open_fds,
        })
    }

    /// Sends SIGTERM and waits for the agent to exit, which tears down its sandbox.
    /// After [`STOP_TIMEOUT`] the agent gets SIGKILL and this returns an error.
    pub fn stop(mut self) -> Result<()> {
        let Some(child) = self.child.take() else {
            return Ok(());
        };
        let pid = Pid::from_raw(child.id() as i32);

        // The agent is our own child and not yet reaped, so the PID still names it.
        let _ = kill(pid, Signal::SIGTERM);
        let status = wait_with_timeout(child, STOP_TIMEOUT, &self.program)?;

        if !status.success() {
            return Err(BenchError::CommandFailed {
                command: format!("{} (stopped with SIGTERM)", self.program.display()),
                status,
            });
        }
        Ok(())
    }

    /// Polls the socket until a connection succeeds and returns the time since `started`.
    fn wait_until_accepting(&mut self, started: Instant) -> Result<Duration> {
        loop {
            if UnixStream::connect(&self.socket).is_ok() {
                return Ok(started.elapsed());
            }

            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(BenchError::AgentExited {
                        status,
                        log: self.log.clone(),
                    });
                }
            }

            if started.elapsed() > START_TIMEOUT {
                return Err(BenchError::AgentStartTimedOut {
                    socket: self.socket.clone(),
                    timeout_secs: START_TIMEOUT.as_secs(),
                    log: self.log.clone(),
                });
            }
            std::thread::sleep(CONNECT_POLL_INTERVAL);
        }
    }
}

impl Drop for AgentProcess {
    /// Stops an agent left running by a failed run with SIGTERM first, so that it
    /// unmounts its sandbox's namespace files and removes its containers. SIGKILL
    /// would leave those mounts in the work directory.
    fn drop(&mut self) {
        if let Some(child) = self.child.take() {
            let pid = Pid::from_raw(child.id() as i32);
            // The agent is our own child and not yet reaped, so the PID still names it.
            let _ = kill(pid, Signal::SIGTERM);
            if let Err(error) = wait_with_timeout(child, STOP_TIMEOUT, &self.program) {
                eprintln!("berth-bench: {error}");
            }
        }
    }
}

/// Creates the agent's run directory, a fake sysfs and an empty kernel command line.
/// The fake sysfs has a plain `bus/pci/rescan` file, so the `pci-rescan` stage takes
/// the path it takes in a guest (a write of `1`) instead of logging a warning for a
/// missing file on every container.
fn prepare_fake_guest(run_dir: &Path, sysfs: &Path, cmdline: &Path) -> Result<()> {
    let rescan = sysfs.join("bus/pci/rescan");
    for dir in [run_dir, rescan.parent().unwrap_or(sysfs)] {
        std::fs::create_dir_all(dir).map_err(|source| BenchError::Write {
            path: dir.to_path_buf(),
            source,
        })?;
    }

    for file in [rescan.as_path(), cmdline] {
        std::fs::write(file, "").map_err(|source| BenchError::Write {
            path: file.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}

/// Waits for `child` to exit, sending SIGKILL after `timeout`. The wait runs on its
/// own thread, so the timeout needs no polling.
fn wait_with_timeout(mut child: Child, timeout: Duration, program: &Path) -> Result<ExitStatus> {
    let pid = Pid::from_raw(child.id() as i32);
    let (sender, receiver) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let _ = sender.send(child.wait());
    });

    let waited = match receiver.recv_timeout(timeout) {
        Ok(waited) => waited,
        Err(_) => {
            // Not reaped yet: the waiter thread is still blocked on this child.
            let _ = kill(pid, Signal::SIGKILL);
            let _ = receiver.recv();
            let _ = waiter.join();
            return Err(BenchError::WaitChild {
                program: program.to_path_buf(),
                source: std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "still running {} s after SIGTERM; killed",
                        timeout.as_secs()
                    ),
                ),
            });
        }
    };

    let _ = waiter.join();
    waited.map_err(|source| BenchError::WaitChild {
        program: program.to_path_buf(),
        source,
    })
}

/// Returns the number of a `Name:   1234 kB` or `Name:   3` line of /proc/PID/status.
fn status_number(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|line| line.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str =
        "Name:\tberth-agent\nVmHWM:\t    7012 kB\nVmRSS:\t    6652 kB\nThreads:\t3\n";

    #[test]
    fn status_field_reads_kib() {
        assert_eq!(status_number(STATUS, "VmRSS:"), Some(6652));
        assert_eq!(status_number(STATUS, "VmHWM:"), Some(7012));
    }

    #[test]
    fn status_field_reads_count() {
        assert_eq!(status_number(STATUS, "Threads:"), Some(3));
    }

    #[test]
    fn status_field_missing_is_none() {
        assert_eq!(status_number(STATUS, "VmSwap:"), None);
    }

    #[test]
    fn fake_guest_has_rescan_file() {
        let dir = tempfile::tempdir().unwrap();
        let sysfs = dir.path().join("sys");

        prepare_fake_guest(&dir.path().join("run"), &sysfs, &dir.path().join("cmdline")).unwrap();

        assert!(sysfs.join("bus/pci/rescan").is_file());
        assert!(dir.path().join("run").is_dir());
        assert_eq!(std::fs::read(dir.path().join("cmdline")).unwrap(), b"");
    }
}
