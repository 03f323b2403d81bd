//! GetOOMEvent and the per-container watchers that feed it.
//!
//! Each container gets one watcher task when it is created, aborted when it is torn
//! down. The watcher sends the container's id to a queue shared by the sandbox
//! whenever its memory cgroup reports an OOM, and GetOOMEvent takes one id off the
//! queue, waiting while it is empty.
//!
//! cgroup v1: an eventfd registered for `memory.oom_control` through
//! `cgroup.event_control`; the kernel signals it at each OOM and once more when the
//! cgroup is removed. cgroup v2: inotify on `memory.events`, and an event whenever its
//! `oom_kill` counter grows.

use std::fs::{self, File};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::eventfd::{EfdFlags, EventFd};
use protocols::agent::{GetOOMEventRequest, OOMEvent};
use rustix::fs::inotify;
use slog::{debug, warn, Logger};
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, Mutex};
use tokio::task::AbortHandle;

use super::terminal::register_fd;
use super::Agent;
use crate::error::AgentError;

/// Maximum number of OOM events waiting for GetOOMEvent; newer ones are dropped.
const QUEUE_MAX: usize = 256;

/// Errors of starting an OOM watcher.
#[derive(Debug, thiserror::Error)]
pub enum OomWatchError {
    #[error("no memory cgroup among {0:?}")]
    NoMemoryCgroup(Vec<PathBuf>),

    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The sandbox's queue of container ids whose cgroup reported an OOM.
pub struct OomEvents {
    sender: mpsc::Sender<String>,
    receiver: Mutex<mpsc::Receiver<String>>,
}

impl OomEvents {
    pub fn new() -> OomEvents {
        let (sender, receiver) = mpsc::channel(QUEUE_MAX);
        OomEvents {
            sender,
            receiver: Mutex::new(receiver),
        }
    }

    /// Waits for the next event and returns its container id.
    async fn next(&self) -> Option<String> {
        self.receiver.lock().await.recv().await
    }
}

impl Default for OomEvents {
    fn default() -> Self {
        OomEvents::new()
    }
}

/// Waits for the next OOM of any container and returns the container's id.
pub async fn get_oom_event(
    agent: Arc<Agent>,
    _request: GetOOMEventRequest,
) -> Result<OOMEvent, AgentError> {
    let events = agent.sandbox.lock().await.oom_events.clone();

    // The sandbox keeps a sender in `events`, so the queue never closes while it is used.
    let container_id = events.next().await.ok_or_else(|| AgentError::Task {
        operation: "get OOM event",
        reason: "the OOM event queue closed".to_string(),
    })?;

    let mut event = OOMEvent::new();
    event.container_id = container_id;
    Ok(event)
}

/// Memory cgroup files a watcher reads.
enum MemoryCgroup {
    V1(PathBuf),
    V2(PathBuf),
}

/// Starts the watcher of container `container_id`, whose cgroup directories are
/// `cgroup_paths`. Must run on the agent's tokio runtime.
pub fn watch(
    container_id: &str,
    cgroup_paths: &[PathBuf],
    events: &OomEvents,
    logger: &Logger,
) -> Result<AbortHandle, OomWatchError> {
    let memory = find_memory_cgroup(cgroup_paths)?;
    let sender = events.sender.clone();
    let id = container_id.to_string();
    let logger = logger.clone();

    let task = match memory {
        MemoryCgroup::V1(dir) => {
            let notifier = register_v1(&dir)?;
            tokio::spawn(watch_v1(notifier, dir, id, sender, logger))
        }
        MemoryCgroup::V2(dir) => {
            let notifier = register_v2(&dir)?;
            tokio::spawn(watch_v2(notifier, dir, id, sender, logger))
        }
    };
    Ok(task.abort_handle())
}

fn find_memory_cgroup(cgroup_paths: &[PathBuf]) -> Result<MemoryCgroup, OomWatchError> {
    if let Some(dir) = cgroup_paths
        .iter()
        .find(|dir| dir.join("memory.oom_control").is_file())
    {
        return Ok(MemoryCgroup::V1(dir.clone()));
    }

    cgroup_paths
        .iter()
        .find(|dir| dir.join("memory.events").is_file())
        .map(|dir| MemoryCgroup::V2(dir.clone()))
        .ok_or_else(|| OomWatchError::NoMemoryCgroup(cgroup_paths.to_vec()))
}

/// A registered v1 eventfd, with the `memory.oom_control` file it watches.
struct V1Notifier {
    eventfd: AsyncFd<OwnedFd>,
    _oom_control: File,
}

fn register_v1(dir: &Path) -> Result<V1Notifier, OomWatchError> {
    let io_error = |operation, path: PathBuf| {
        move |source| OomWatchError::Io {
            operation,
            path,
            source,
        }
    };

    let eventfd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(|errno| io_error("create eventfd for", dir.to_path_buf())(errno.into()))?;
    let eventfd = OwnedFd::from(eventfd);

    let control_path = dir.join("memory.oom_control");
    let oom_control = File::open(&control_path).map_err(io_error("open", control_path))?;

    // The line names both descriptors by number in this process.
    let registration = format!("{} {}", eventfd.as_raw_fd(), oom_control.as_raw_fd());
    let event_control = dir.join("cgroup.event_control");
    fs::write(&event_control, registration)
        .map_err(io_error("register OOM eventfd in", event_control))?;

    let eventfd = register_fd(eventfd).map_err(io_error("poll eventfd of", dir.to_path_buf()))?;
    Ok(V1Notifier {
        eventfd,
        _oom_control: oom_control,
    })
}

async fn watch_v1(
    notifier: V1Notifier,
    dir: PathBuf,
    container_id: String,
    sender: mpsc::Sender<String>,
    logger: Logger,
) {
    let mut queue = Queue::new(sender, container_id, logger.clone());

    loop {
        let mut counter = [0u8; 8];
        let read = match notifier.eventfd.readable().await {
            Ok(mut ready) => ready.try_io(|fd| {
                rustix::io::read(fd.get_ref(), &mut counter[..]).map_err(io::Error::from)
            }),
            Err(error) => Ok(Err(error)),
        };

        match read {
            Ok(Ok(_)) => {}
            Err(_would_block) => continue,
            Ok(Err(error)) if error.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(error)) => {
                warn!(logger, "OOM watcher stopped"; "error" => %error);
                return;
            }
        }

        // The kernel signals the eventfd once more when it removes the cgroup.
        if !dir.exists() {
            debug!(logger, "OOM watcher ended with its cgroup");
            return;
        }
        queue.push();
    }
}

/// An inotify watch on `memory.events` and the `oom_kill` count last seen.
struct V2Notifier {
    inotify: AsyncFd<OwnedFd>,
    oom_kills: u64,
}

fn register_v2(dir: &Path) -> Result<V2Notifier, OomWatchError> {
    let events_path = dir.join("memory.events");
    let io_error = |operation| {
        let path = events_path.clone();
        move |source| OomWatchError::Io {
            operation,
            path,
            source,
        }
    };

    let fd = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
        .map_err(|errno| io_error("create inotify instance for")(errno.into()))?;
    inotify::add_watch(&fd, &events_path, inotify::WatchFlags::MODIFY)
        .map_err(|errno| io_error("watch")(errno.into()))?;

    // Counting starts after the watch exists, so no change between the two is missed.
    let oom_kills = read_oom_kills(&events_path).map_err(io_error("read"))?;
    let inotify = register_fd(fd).map_err(io_error("poll inotify instance for"))?;
    Ok(V2Notifier { inotify, oom_kills })
}

async fn watch_v2(
    mut notifier: V2Notifier,
    dir: PathBuf,
    container_id: String,
    sender: mpsc::Sender<String>,
    logger: Logger,
) {
    let events_path = dir.join("memory.events");
    let mut queue = Queue::new(sender, container_id, logger.clone());

    loop {
        // The events themselves carry nothing needed: any change means "read again".
        let mut buffer = [0u8; 4096];
        let read = match notifier.inotify.readable().await {
            Ok(mut ready) => ready.try_io(|fd| {
                rustix::io::read(fd.get_ref(), &mut buffer[..]).map_err(io::Error::from)
            }),
            Err(error) => Ok(Err(error)),
        };
        match read {
            Ok(Ok(_)) => {}
            Err(_would_block) => continue,
            Ok(Err(error)) if error.kind() == io::ErrorKind::Interrupted => continue,
            Ok(Err(error)) => {
                warn!(logger, "OOM watcher stopped"; "error" => %error);
                return;
            }
        }

        let oom_kills = match read_oom_kills(&events_path) {
            Ok(count) => count,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                debug!(logger, "OOM watcher ended with its cgroup");
                return;
            }
            Err(error) => {
                warn!(logger, "OOM watcher stopped"; "error" => %error);
                return;
            }
        };
        if oom_kills > notifier.oom_kills {
            queue.push();
        }
        notifier.oom_kills = oom_kills;
    }
}

/// Returns the `oom_kill` counter of a v2 `memory.events` file, 0 when it is absent.
fn read_oom_kills(path: &Path) -> io::Result<u64> {
    let text = fs::read_to_string(path)?;
    Ok(parse_oom_kills(&text))
}

fn parse_oom_kills(text: &str) -> u64 {
    text.lines()
        .filter_map(|line| line.split_once(' '))
        .find(|(key, _)| *key == "oom_kill")
        .and_then(|(_, value)| value.trim().parse().ok())
        .unwrap_or(0)
}

/// One container's side of the event queue. A full queue drops the event and logs
/// only the first drop of each run of drops, because a container can OOM in a loop.
struct Queue {
    sender: mpsc::Sender<String>,
    container_id: String,
    logger: Logger,
    dropping: bool,
}

impl Queue {
    fn new(sender: mpsc::Sender<String>, container_id: String, logger: Logger) -> Queue {
        Queue {
            sender,
            container_id,
            logger,
            dropping: false,
        }
    }

    fn push(&mut self) {
        debug!(self.logger, "OOM event");
        match self.sender.try_send(self.container_id.clone()) {
            Ok(()) => self.dropping = false,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if !self.dropping {
                    warn!(self.logger, "OOM event queue full, dropping events";
                        "capacity" => QUEUE_MAX);
                }
                self.dropping = true;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kill_counter_parsed() {
        let text = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";

        assert_eq!(parse_oom_kills(text), 2);
    }

    #[test]
    fn oom_kill_counter_missing_is_zero() {
        assert_eq!(parse_oom_kills("low 0\nhigh 0\n"), 0);
    }

    #[test]
    fn memory_cgroup_v1_preferred() {
        let dir = tempfile::tempdir().expect("create temporary directory");
        let v1 = dir.path().join("memory");
        let v2 = dir.path().join("unified");
        fs::create_dir_all(&v1).unwrap();
        fs::create_dir_all(&v2).unwrap();
        fs::write(v1.join("memory.oom_control"), "oom_kill_disable 0\n").unwrap();
        fs::write(v2.join("memory.events"), "oom_kill 0\n").unwrap();

        let found = find_memory_cgroup(&[v2.clone(), v1.clone()]).expect("memory cgroup");

        assert!(matches!(found, MemoryCgroup::V1(path) if path == v1));
        let only_v2 = find_memory_cgroup(std::slice::from_ref(&v2)).expect("v2 memory cgroup");
        assert!(matches!(only_v2, MemoryCgroup::V2(path) if path == v2));
    }

    #[test]
    fn no_memory_cgroup_is_an_error() {
        let dir = tempfile::tempdir().expect("create temporary directory");

        let result = find_memory_cgroup(&[dir.path().to_path_buf()]);

        assert!(matches!(result, Err(OomWatchError::NoMemoryCgroup(_))));
    }
}
