//! The caller's side of a container: create, start and destroy.
//!
//! The caller owns the init process. It is the caller's direct child, and the caller
//! reaps it, except when [`Container::create`] fails after the clone: then `create` kills
//! and reaps the init itself.

use std::ffi::OsString;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::signal::{kill, Signal};
use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{pipe2, Pid};
use oci_spec::runtime::{
    ContainerState, Hooks, LinuxNamespaceType, LinuxPersonality, LinuxSeccomp, Spec,
};
use slog::{debug, warn, Logger};

use crate::cgroups::{self, Cgroup, ResctrlGroup};
use crate::error::Error;
use crate::hooks::HookPoint;
use crate::init::idmap;
use crate::net_devices;
use crate::spawn::{above_stdio, spawn_init, ChildFds, CloneNamespaces, PidNamespace};
use crate::sync::{recv_reply, send_fd, send_message, FailureKind, FromInit, InitConfig, ToInit};
use crate::user_namespace::{self, UserNamespaceSetup};

/// How long the caller waits for the init to report ready or to exec the user process.
pub(crate) const INIT_TIMEOUT: Duration = Duration::from_secs(30);

/// How to start the init process: the agent re-executes itself (`/proc/self/exe init`),
/// tests run the `rustjail-init` binary.
#[derive(Debug, Clone)]
pub struct InitCommand {
    pub program: PathBuf,
    pub args: Vec<OsString>,
}

impl InitCommand {
    /// Makes the sealed in-memory copy of the init program now instead of at the first
    /// container. A long-running caller then keeps one descriptor for it from the start,
    /// and the first container pays no copy.
    pub fn prepare(&self) -> Result<(), Error> {
        crate::spawn::sealed_program(&self.program)
            .map(drop)
            .map_err(|source| Error::SealProgram {
                program: self.program.clone(),
                source,
            })
    }
}

/// Everything [`Container::create`] needs.
pub struct ContainerConfig {
    pub id: String,
    /// The OCI spec, with `root.path` already absolute.
    pub spec: Spec,
    /// Mount point of the cgroup hierarchies, `/sys/fs/cgroup` in production.
    pub cgroup_root: PathBuf,
    /// Parent cgroup used when the spec has no `linux.cgroupsPath`, for example `berth`.
    pub cgroup_parent: String,
    pub init: InitCommand,
    pub logger: Logger,
}

/// Options of [`Container::create_with`] beyond the spec. `Default` gives the behaviour
/// of [`Container::create`].
#[derive(Debug, Clone, Default)]
pub struct LaunchOptions {
    /// Enter the rootfs with `MS_MOVE` and `chroot` instead of `pivot_root`, for a caller
    /// whose own root is a ramfs that cannot be pivoted away from. Weaker: a process with
    /// `CAP_SYS_CHROOT` can reach the old root.
    pub no_pivot: bool,
    /// Bundle directory reported to hooks in the OCI state. Defaults to the parent of
    /// `root.path`.
    pub bundle: Option<PathBuf>,
}

/// A created container whose init process waits for [`Container::start`].
///
/// Dropping a `Container` neither kills the init nor removes the cgroup: call
/// [`Container::destroy`].
pub struct Container {
    pub(crate) id: String,
    pub(crate) pid: i32,
    pub(crate) cgroup: Cgroup,
    /// Groups of `linux.intelRdt` in the resctrl filesystem.
    resctrl: ResctrlGroup,
    sync: Option<OwnedFd>,
    stdin: Option<OwnedFd>,
    stdout: Option<OwnedFd>,
    stderr: Option<OwnedFd>,
    terminal: Option<OwnedFd>,
    /// Seccomp profile of the container, which processes started by `exec` get too.
    pub(crate) seccomp: Option<LinuxSeccomp>,
    /// Execution domain of the container, which processes started by `exec` get too.
    pub(crate) personality: Option<LinuxPersonality>,
    /// NUMA memory policy of the container, which processes started by `exec` get too.
    pub(crate) memory_policy: Option<oci_spec::runtime::LinuxMemoryPolicy>,
    pub(crate) hooks: Option<Hooks>,
    pub(crate) bundle: PathBuf,
    pub(crate) annotations: Option<std::collections::HashMap<String, String>>,
    started: bool,
    pub(crate) destroyed: bool,
    /// Spec settings the init left out, such as a label for a disabled security module.
    warnings: Vec<String>,
    pub(crate) logger: Logger,
}

/// The caller's ends of a process's standard streams and sync socket.
pub(crate) struct CallerFds {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub sync: OwnedFd,
}

impl Container {
    /// Creates the container and returns once its init reported ready. Blocks for at most
    /// about [`INIT_TIMEOUT`].
    pub fn create(config: ContainerConfig) -> Result<Container, Error> {
        Container::create_with(config, LaunchOptions::default())
    }

    /// Creates the container as [`Container::create`] does, with `options`.
    ///
    /// The createRuntime and prestart hooks run in the caller's namespaces once the init
    /// exists, and createContainer hooks in the init's namespaces after the mounts. A
    /// failing hook fails create.
    pub fn create_with(
        config: ContainerConfig,
        options: LaunchOptions,
    ) -> Result<Container, Error> {
        let logger = config
            .logger
            .new(slog::o!("container" => config.id.clone()));
        let relative_cgroup = check_spec(&config)?;
        cgroups::check_intel_rdt(&config.spec)?;
        let id_maps = user_namespace::plan(&config.spec)?;
        let net_devices = net_devices::plan(&config.spec)?;
        let idmapped_mounts = idmap::plan(&config.spec)?;
        let join_first = match id_maps {
            Some(_) => user_namespace::join_first(&config.spec)?,
            None => Vec::new(),
        };
        let joined_by_caller = join_first.iter().map(|(kind, _, _)| *kind).collect();
        let namespaces = CloneNamespaces {
            pid: pid_namespace(&config.spec)?,
            new_user: id_maps.is_some(),
            join_first: join_first
                .into_iter()
                .map(|(_, file, flag)| (file, flag))
                .collect(),
        };

        let (caller_fds, child_fds) = open_fds(&config.id)?;
        let pid =
            spawn_init(&config.init, &child_fds, namespaces).map_err(|source| Error::Clone {
                container: config.id.clone(),
                program: config.init.program.clone(),
                source,
            })?;
        // The init has its own copies now. Closing ours lets reads see end of file when
        // the init exits.
        drop(child_fds);
        debug!(logger, "cloned init"; "pid" => pid);

        let linux = config.spec.linux().as_ref();
        let bundle = options.bundle.clone().unwrap_or_else(|| {
            let root = config
                .spec
                .root()
                .as_ref()
                .map(|root| root.path().as_path());
            root.and_then(Path::parent)
                .unwrap_or(Path::new("/"))
                .to_path_buf()
        });
        let mut container = Container {
            id: config.id.clone(),
            pid,
            cgroup: Cgroup::default(),
            resctrl: ResctrlGroup::default(),
            sync: Some(caller_fds.sync),
            stdin: Some(caller_fds.stdin),
            stdout: Some(caller_fds.stdout),
            stderr: Some(caller_fds.stderr),
            terminal: None,
            seccomp: linux.and_then(|linux| linux.seccomp().clone()),
            personality: linux.and_then(|linux| linux.personality().clone()),
            memory_policy: linux.and_then(|linux| linux.memory_policy().clone()),
            hooks: config.spec.hooks().clone(),
            bundle,
            annotations: config.spec.annotations().clone(),
            started: false,
            destroyed: false,
            warnings: Vec::new(),
            logger,
        };
        let plan = SetUpPlan {
            relative_cgroup,
            user_namespace: UserNamespaceSetup {
                id_maps,
                joined_by_caller,
            },
            net_devices,
            idmapped_mounts,
        };
        match container.set_up(config, &options, plan) {
            Ok(()) => Ok(container),
            Err(error) => Err(container.abandon(error)),
        }
    }

    /// Lets the init `execve` the user process and returns once the exec succeeded.
    /// Blocks for at most about [`INIT_TIMEOUT`].
    pub fn start(&mut self) -> Result<(), Error> {
        if self.started {
            return Err(Error::AlreadyStarted(self.id.clone()));
        }
        let Some(sync) = self.sync.take() else {
            return Err(Error::NotRunning(self.id.clone()));
        };
        self.started = true;

        send_message(sync.as_fd(), &ToInit::Start)
            .map_err(|source| self.sync_error("send start to", source))?;

        // The sync socket is close-on-exec in the init, so end of file means the exec
        // succeeded. A message means it failed.
        let deadline = Instant::now() + INIT_TIMEOUT;
        let mut unexpected_terminal = None;
        let reply = self.recv_reply_with_listener(
            sync.as_fd(),
            deadline,
            &mut unexpected_terminal,
            self.pid,
            ContainerState::Created,
        )?;
        match reply {
            Ok(None) => {
                debug!(self.logger, "started user process"; "pid" => self.pid);
                // Poststart hooks run after the user process started, and their failure
                // is logged only: the process runs already.
                self.run_hooks_logged(HookPoint::Poststart, ContainerState::Running);
                Ok(())
            }
            Ok(Some(FromInit::Error { kind, message })) => Err(self.init_error(kind, message)),
            Ok(Some(FromInit::Ready { .. } | FromInit::Terminal | FromInit::SeccompNotify)) => {
                Err(Error::Init {
                    container: self.id.clone(),
                    message: "init reported ready again instead of executing the user process"
                        .to_owned(),
                })
            }
            Err(source) if source.kind() == std::io::ErrorKind::TimedOut => Err(Error::Timeout {
                container: self.id.clone(),
                step: "exec the user process",
                seconds: INIT_TIMEOUT.as_secs(),
            }),
            Err(source) => Err(self.sync_error("receive exec result from", source)),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Pid of the init process as seen by the caller.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Write end of the container's stdin pipe.
    pub fn take_stdin(&mut self) -> Option<OwnedFd> {
        self.stdin.take()
    }

    /// Read end of the container's stdout pipe.
    pub fn take_stdout(&mut self) -> Option<OwnedFd> {
        self.stdout.take()
    }

    /// Read end of the container's stderr pipe.
    pub fn take_stderr(&mut self) -> Option<OwnedFd> {
        self.stderr.take()
    }

    /// Master of the process's pseudo-terminal when the spec sets `process.terminal`.
    /// The stdio pipes are then unused.
    pub fn take_terminal(&mut self) -> Option<OwnedFd> {
        self.terminal.take()
    }

    /// Spec settings that the init left out because the kernel lacks what they need,
    /// such as an AppArmor profile on a kernel without AppArmor. Each was logged at
    /// warn level by `create`.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn cgroup(&self) -> &Cgroup {
        &self.cgroup
    }

    /// Kills the init with SIGKILL and removes the cgroup. Idempotent. It does not reap
    /// the init, which stays the caller's child. The poststop hooks run once, after the
    /// cgroup is removed; their failures are logged only.
    pub fn destroy(&mut self) -> Result<(), Error> {
        // A second SIGKILL could hit a recycled pid once the caller has reaped the init,
        // so the kill happens once.
        if !self.destroyed {
            self.destroyed = true;
            self.sync = None;
            match kill(Pid::from_raw(self.pid), Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(source) => {
                    return Err(Error::Kill {
                        container: self.id.clone(),
                        pid: self.pid,
                        source,
                    })
                }
            }
            debug!(self.logger, "killed init"; "pid" => self.pid);
            let removed = self.remove_groups();
            self.run_hooks_logged(HookPoint::Poststop, ContainerState::Stopped);
            return removed;
        }
        self.remove_groups()
    }

    /// Removes the cgroup and the resctrl groups the container owns, and returns the
    /// first failure.
    fn remove_groups(&mut self) -> Result<(), Error> {
        let cgroup = self.cgroup.remove();
        let resctrl = self.resctrl.remove();
        cgroup.and(resctrl)
    }

    /// Writes the ID maps of a new user namespace, creates the cgroup, moves the init
    /// into it, sends the configuration and waits for ready.
    fn set_up(
        &mut self,
        config: ContainerConfig,
        options: &LaunchOptions,
        plan: SetUpPlan,
    ) -> Result<(), Error> {
        let SetUpPlan {
            relative_cgroup,
            user_namespace,
            net_devices,
            idmapped_mounts,
        } = plan;
        if let (Some(maps), Some(sync)) = (&user_namespace.id_maps, self.sync.as_ref()) {
            user_namespace::write_maps(&self.id, self.pid, maps, sync.as_fd())?;
        }
        let resources = config
            .spec
            .linux()
            .as_ref()
            .and_then(|linux| linux.resources().as_ref());
        self.cgroup = Cgroup::create(
            &config.cgroup_root,
            &relative_cgroup,
            Path::new(&config.cgroup_parent),
            resources,
            &self.logger,
        )?;
        self.cgroup.add_process(self.pid)?;
        self.resctrl = cgroups::join_resctrl(&config.spec, &self.id, self.pid)?;

        let Some(sync) = self.sync.as_ref().map(AsFd::as_fd) else {
            return Err(Error::NotRunning(self.id.clone()));
        };
        // The runtime's own hooks see the init in its cgroup but before its setup.
        self.run_hooks(HookPoint::CreateRuntime, ContainerState::Creating)?;
        self.run_hooks(HookPoint::Prestart, ContainerState::Creating)?;
        // After the hooks, which may create the sources.
        let trees = idmap::open_trees(&self.id, &idmapped_mounts)?;

        let message = ToInit::Config(Box::new(InitConfig {
            container_id: config.id,
            cgroup_dirs: self.cgroup.mount_dirs(&config.cgroup_root),
            spec: config.spec,
            no_pivot: options.no_pivot,
            state: self.state_json(ContainerState::Creating),
            joined_by_caller: user_namespace.joined_by_caller,
            idmapped_trees: trees.len(),
        }));
        send_message(sync, &message)
            .map_err(|source| self.sync_error("send configuration to", source))?;
        for tree in &trees {
            send_fd(sync, tree.as_fd())
                .map_err(|source| self.sync_error("send ID-mapped mount to", source))?;
        }

        let deadline = Instant::now() + INIT_TIMEOUT;
        match recv_reply(sync, deadline, &mut self.terminal) {
            Ok(Some(FromInit::Ready { warnings })) => {
                // The init has its network namespace now, and the user process has not
                // started yet.
                net_devices::move_all(&self.id, self.pid, &net_devices)?;
                debug!(self.logger, "init ready"; "pid" => self.pid);
                for warning in &warnings {
                    warn!(self.logger, "container setting not applied"; "container" => &self.id, "reason" => warning);
                }
                self.warnings = warnings;
                Ok(())
            }
            Ok(Some(FromInit::Error { kind, message })) => Err(self.init_error(kind, message)),
            Ok(Some(FromInit::Terminal | FromInit::SeccompNotify)) | Ok(None) => Err(Error::Init {
                container: self.id.clone(),
                message: "init exited before it reported ready".to_owned(),
            }),
            Err(source) if source.kind() == std::io::ErrorKind::TimedOut => Err(Error::Timeout {
                container: self.id.clone(),
                step: "report ready",
                seconds: INIT_TIMEOUT.as_secs(),
            }),
            Err(source) => Err(self.sync_error("receive ready from", source)),
        }
    }

    /// Kills and reaps the init after a failed create, removes the cgroup and returns the
    /// original error with the init's exit status added when the init died on its own.
    fn abandon(mut self, error: Error) -> Error {
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGKILL);
        // The agent's reaper may reap the init first, so ECHILD is expected.
        let status = waitpid(Pid::from_raw(self.pid), None);
        debug!(self.logger, "reaped init after failed create"; "pid" => self.pid, "status" => ?status);

        self.destroyed = true;
        if let Err(cleanup_error) = self.remove_groups() {
            debug!(self.logger, "remove cgroup after failed create"; "error" => %cleanup_error);
        }

        match (error, status) {
            (Error::Init { container, message }, Ok(WaitStatus::Exited(_, code))) => Error::Init {
                container,
                message: format!("{message} (exit status {code})"),
            },
            (error, _) => error,
        }
    }

    pub(crate) fn init_error(&self, kind: FailureKind, message: String) -> Error {
        match kind {
            FailureKind::ExecutableNotFound { name } => Error::ExecutableNotFound {
                container: self.id.clone(),
                name,
            },
            FailureKind::InvalidSpec => Error::InvalidSpec(message),
            FailureKind::SeccompFlagUnsupported => Error::Unsupported {
                field: "linux.seccomp.flags",
                missing: message,
            },
            FailureKind::System => Error::Init {
                container: self.id.clone(),
                message,
            },
        }
    }

    pub(crate) fn sync_error(&self, operation: &'static str, source: std::io::Error) -> Error {
        Error::Sync {
            container: self.id.clone(),
            operation,
            source,
        }
    }
}

/// Settings of [`Container::set_up`] besides the spec, worked out before the clone.
struct SetUpPlan {
    relative_cgroup: PathBuf,
    user_namespace: UserNamespaceSetup,
    /// Devices to move, as (name in the caller's namespace, name in the container).
    net_devices: Vec<(String, String)>,
    /// Spec mounts to ID-map, whose trees the caller prepares for the init.
    idmapped_mounts: Vec<idmap::IdMappedMount>,
}

/// Checks the parts of the spec that must hold before anything is cloned, and returns
/// the container's cgroup path.
fn check_spec(config: &ContainerConfig) -> Result<PathBuf, Error> {
    let root = config
        .spec
        .root()
        .as_ref()
        .ok_or_else(|| Error::InvalidSpec("spec has no root".to_owned()))?;
    let root_path = root.path();
    if !root_path.is_absolute() {
        return Err(Error::InvalidSpec(format!(
            "root path {} must be absolute",
            root_path.display()
        )));
    }
    if !root_path.is_dir() {
        return Err(Error::RootfsMissing {
            path: root_path.clone(),
        });
    }

    let process = config
        .spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::InvalidSpec("spec has no process".to_owned()))?;
    if process.args().iter().flatten().next().is_none() {
        return Err(Error::InvalidSpec("process.args is empty".to_owned()));
    }
    crate::init::check_cwd(process.cwd()).map_err(Error::InvalidSpec)?;
    crate::init::check_exec_cpu_affinity(process).map_err(Error::InvalidSpec)?;

    let namespaces = config
        .spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.namespaces().clone())
        .unwrap_or_default();
    if !namespaces
        .iter()
        .any(|namespace| namespace.typ() == LinuxNamespaceType::Mount)
    {
        // Without its own mount namespace the init would mount onto the caller's tree.
        return Err(Error::InvalidSpec("spec has no mount namespace".to_owned()));
    }
    let new_uts = namespaces
        .iter()
        .any(|namespace| namespace.typ() == LinuxNamespaceType::Uts);
    if config
        .spec
        .hostname()
        .as_ref()
        .is_some_and(|name| !name.is_empty())
        && !new_uts
    {
        return Err(Error::InvalidSpec(
            "hostname is set but the spec has no uts namespace".to_owned(),
        ));
    }

    cgroups::relative_path(&config.spec, &config.id, &config.cgroup_parent)
}

/// Finds out how the init enters its pid namespace, opening the namespace to join.
fn pid_namespace(spec: &Spec) -> Result<PidNamespace, Error> {
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.namespaces().clone())
        .unwrap_or_default();
    let Some(namespace) = namespaces
        .iter()
        .find(|namespace| namespace.typ() == LinuxNamespaceType::Pid)
    else {
        return Ok(PidNamespace::Inherit);
    };
    let Some(path) = namespace.path() else {
        return Ok(PidNamespace::New);
    };
    let file = File::open(path).map_err(|source| {
        Error::InvalidSpec(format!("open pid namespace {}: {source}", path.display()))
    })?;
    Ok(PidNamespace::Join(file.into()))
}

/// Creates the stdio pipes and the sync socket pair, all close-on-exec.
pub(crate) fn open_fds(id: &str) -> Result<(CallerFds, ChildFds), Error> {
    let prepare = |resource: &'static str| {
        move |source: std::io::Error| Error::Prepare {
            container: id.to_owned(),
            resource,
            source,
        }
    };
    let pipe = || -> std::io::Result<(OwnedFd, OwnedFd)> {
        let (read, write) = pipe2(OFlag::O_CLOEXEC)?;
        Ok((above_stdio(read)?, above_stdio(write)?))
    };

    let (stdin_read, stdin_write) = pipe().map_err(prepare("stdin pipe"))?;
    let (stdout_read, stdout_write) = pipe().map_err(prepare("stdout pipe"))?;
    let (stderr_read, stderr_write) = pipe().map_err(prepare("stderr pipe"))?;
    let (caller_sync, child_sync) = socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(std::io::Error::from)
    .and_then(|(caller, child)| Ok((above_stdio(caller)?, above_stdio(child)?)))
    .map_err(prepare("sync socket"))?;

    let caller = CallerFds {
        stdin: stdin_write,
        stdout: stdout_read,
        stderr: stderr_read,
        sync: caller_sync,
    };
    let child = ChildFds {
        stdin: stdin_read,
        stdout: stdout_write,
        stderr: stderr_write,
        sync: child_sync,
    };
    Ok((caller, child))
}
