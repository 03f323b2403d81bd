//! Fault injection. For every stage of both pipelines, a real request that uses all of
//! them fails at that stage, or fails at the last stage while that stage's undo fails.
//! Afterwards the guest must be exactly as it was before the request.
//!
//! The faults come from a wrapper stage defined here, so the mechanism exists only in
//! this test binary. The request spawns a real busybox container, mounts a tmpfs, a
//! local directory, a bind mount, an overlay root file system and ext4 on a loop device
//! behind a fake PCI path, resolves a block device, writes a sysctl in a fake procfs,
//! fits a cpuset and adds a guest hook. Everything runs on one thread with private
//! mount and UTS namespaces. This file contains one test, because other tests' child
//! processes would show up in the process comparison.

// The pipeline's own error type is returned as is, as the agent receives it.
#![allow(clippy::result_large_err)]

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{
    add_virtio_blk, busybox_rootfs, children, in_private_namespaces, mount_table, tree, LoopDevice,
    TIMEOUT,
};
use stages::{
    container_stages, sandbox_stages, ContainerContext, ContainerOptions, ContainerRequest,
    GuestPaths, ModuleLoader, Pipeline, PipelineError, Sandbox, SandboxContext, SandboxOptions,
    SandboxRequest, Stage, StageError, Storage, StorageRegistry, Undo,
};

/// Where the wrapped stage fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// The stage changes the guest, undoes its own change as a failing stage must, and
    /// returns an error.
    Apply,
    /// The stage's undo reverses its change and then reports an error.
    Undo,
}

struct Faulty<C> {
    inner: Box<dyn Stage<C>>,
    fault: Fault,
}

struct FailingUndo {
    inner: Box<dyn Undo>,
    stage: &'static str,
    failed: bool,
}

fn injected(stage: &'static str, step: &str) -> StageError {
    StageError::InvalidArgument {
        kind: "injected fault",
        value: stage.to_string(),
        reason: format!("fault injected in {step}"),
    }
}

impl<C> Stage<C> for Faulty<C> {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn apply(&self, ctx: &mut C) -> Result<Box<dyn Undo>, StageError> {
        let mut undo = self.inner.apply(ctx)?;
        match self.fault {
            Fault::Apply => {
                undo.undo()?;
                Err(injected(self.name(), "apply"))
            }
            Fault::Undo => Ok(Box::new(FailingUndo {
                inner: undo,
                stage: self.name(),
                failed: false,
            })),
        }
    }
}

impl Undo for FailingUndo {
    fn undo(&mut self) -> Result<(), StageError> {
        self.inner.undo()?;
        if self.failed {
            return Ok(());
        }
        self.failed = true;
        Err(injected(self.stage, "undo"))
    }
}

/// Replaces stage `index` of `stages` with a faulty wrapper.
fn wrap<C: 'static>(
    mut stages: Vec<Box<dyn Stage<C>>>,
    index: usize,
    fault: Fault,
) -> Vec<Box<dyn Stage<C>>> {
    let inner = stages.remove(index);
    stages.insert(index, Box::new(Faulty { inner, fault }));
    stages
}

/// A module loader that keeps a balance of loads and unloads.
#[derive(Debug, Default)]
struct CountingLoader(Mutex<i32>);

impl ModuleLoader for CountingLoader {
    fn load(&self, _name: &str, _parameters: &[String]) -> std::io::Result<()> {
        *self.0.lock().unwrap() += 1;
        Ok(())
    }

    fn unload(&self, _name: &str) -> std::io::Result<()> {
        *self.0.lock().unwrap() -= 1;
        Ok(())
    }
}

/// Everything a request may change, as compared before and after.
#[derive(Debug, PartialEq, Eq)]
struct GuestState {
    mounts: Vec<String>,
    cgroups: Vec<String>,
    live_children: Vec<i32>,
    run_dir: Vec<String>,
    sysctl: String,
    resolv_conf: String,
    hostname: String,
    storages: String,
    modules_loaded: i32,
}

/// The fake guest, its devices and the sandbox.
struct Guest {
    root: tempfile::TempDir,
    paths: GuestPaths,
    sandbox: Arc<Sandbox>,
    loader: Arc<CountingLoader>,
    cgroup_parent: String,
    _disks: [LoopDevice; 2],
}

impl Guest {
    fn build() -> Guest {
        let root = tempfile::tempdir().unwrap();
        let mut paths = GuestPaths::under(root.path()).unwrap();
        paths.cgroup_root = PathBuf::from("/sys/fs/cgroup");
        let device_disk = LoopDevice::ext4(&[]);
        let storage_disk = LoopDevice::ext4(&[("data", "on disk")]);
        add_virtio_blk(
            &paths.sysfs,
            &paths.devfs,
            &[2, 1],
            "vdb",
            device_disk.major,
            device_disk.minor,
        );
        add_virtio_blk(
            &paths.sysfs,
            &paths.devfs,
            &[3],
            "vdc",
            storage_disk.major,
            storage_disk.minor,
        );

        write(&paths.procfs.join("sys/net/ipv4/ip_forward"), "0\n");
        write(
            &paths.procfs.join("self/mountinfo"),
            "21 1 254:1 / / rw - ext4 /dev/vda1 rw\n",
        );
        fs::create_dir_all(paths.sysfs.join("dev/block/254:1")).unwrap();
        write(&paths.sysfs.join("devices/system/cpu/online"), "0\n");
        write(&paths.sysfs.join("devices/system/node/online"), "0\n");
        write(&root.path().join("resolv.conf"), "nameserver 192.0.2.1\n");

        let hooks = root.path().join("hooks");
        let hook = hooks.join("prestart/10-check");
        write(&hook, "#!/bin/sh\nexit 0\n");
        fs::set_permissions(&hook, fs::Permissions::from_mode(0o755)).unwrap();
        busybox_rootfs(&root.path().join("image"));
        fs::create_dir(root.path().join("shared-data")).unwrap();

        let sandbox = Arc::new(Sandbox {
            id: "matrix".to_string(),
            paths: paths.clone(),
            storages: StorageRegistry::system(),
            guest_hooks: Some(hooks),
            init: rustjail::InitCommand {
                program: PathBuf::from(env!("CARGO_BIN_EXE_berth-stages-test-init")),
                args: Vec::new(),
            },
            logger: slog::Logger::root(slog::Discard, slog::o!()),
        });
        Guest {
            root,
            paths,
            sandbox,
            loader: Arc::new(CountingLoader::default()),
            cgroup_parent: format!("berth-matrix-{}", std::process::id()),
            _disks: [device_disk, storage_disk],
        }
    }

    fn sandbox_options(&self) -> SandboxOptions {
        SandboxOptions {
            resolv_conf: self.root.path().join("resolv.conf"),
            module_loader: self.loader.clone(),
            device_timeout: TIMEOUT,
        }
    }

    fn sandbox_request(&self) -> SandboxRequest {
        SandboxRequest {
            hostname: "matrix-pod".to_string(),
            storages: vec![storage(
                "ephemeral",
                "",
                &[],
                &self.paths.run_dir.join("sandbox/shm"),
            )],
            dns: vec!["nameserver 10.0.0.2".to_string()],
            guest_hook_path: self
                .sandbox
                .guest_hooks
                .as_ref()
                .unwrap()
                .display()
                .to_string(),
            sandbox_pidns: true,
            kernel_modules: vec!["dummy numdummies=1".to_string()],
        }
    }

    fn container_request(&self) -> ContainerRequest {
        let run = &self.paths.run_dir;
        let lower = self.root.path().join("image");
        let overlay_options = [
            format!("lowerdir={}", lower.display()),
            format!("upperdir={}", run.join("layers/c1/upper").display()),
            format!("workdir={}", run.join("layers/c1/work").display()),
        ];
        let overlay_options: Vec<&str> = overlay_options.iter().map(String::as_str).collect();
        let shared = self.root.path().join("shared-data");
        let storages = vec![
            storage(
                "overlayfs",
                "overlay",
                &overlay_options,
                &run.join("c1/rootfs"),
            ),
            storage("ephemeral", "", &[], &run.join("sandbox/shm")),
            storage("local", "", &["mode=0777"], &run.join("local/c1/vol")),
            storage(
                "bind",
                shared.to_str().unwrap(),
                &["rbind"],
                &run.join("shared/c1-data"),
            ),
            Storage {
                fstype: "ext4".to_string(),
                ..storage("blk", "03", &[], &run.join("sandbox/storage/disk"))
            },
        ];
        let spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "process": {
                "args": ["/bin/sh", "-c", "exit 0"],
                "cwd": "/",
                "user": {"uid": 0, "gid": 0},
                "env": ["PATH=/bin"]
            },
            "root": {"path": "rootfs"},
            "mounts": [{"destination": "/proc", "type": "proc", "source": "proc"}],
            "linux": {
                "cgroupsPath": format!("/{}/c1", self.cgroup_parent),
                "namespaces": [
                    {"type": "mount"},
                    {"type": "uts", "path": ""},
                    {"type": "ipc"},
                    {"type": "network", "path": "/run/netns/podns"}
                ],
                "devices": [{"path": "/dev/data", "type": "b", "major": 8, "minor": 0, "fileMode": 384}],
                "resources": {
                    "devices": [
                        {"allow": false, "access": "rwm"},
                        {"allow": true, "type": "b", "major": 8, "minor": 0, "access": "rw"}
                    ],
                    "cpu": {"cpus": "0-1", "mems": "0"}
                },
                "sysctl": {"net.ipv4.ip_forward": "1"}
            }
        });
        ContainerRequest {
            id: "c1".to_string(),
            spec: serde_json::from_value(spec).expect("spec parses"),
            storages,
            devices: vec![stages::Device {
                id: "02/01".to_string(),
                type_: "blk".to_string(),
                vm_path: String::new(),
                container_path: "/dev/data".to_string(),
                options: Vec::new(),
            }],
        }
    }

    /// Records the guest's state, reaping killed container inits first: in the agent its
    /// reaper does that.
    fn state(&self) -> GuestState {
        reap_zombies();
        GuestState {
            mounts: mount_table(),
            cgroups: self.cgroup_dirs(),
            live_children: children(),
            run_dir: tree(&self.paths.run_dir),
            // procfs shows a value with a newline, whatever was written; the fake file
            // keeps the bytes as written.
            sysctl: fs::read_to_string(self.paths.procfs.join("sys/net/ipv4/ip_forward"))
                .unwrap()
                .trim_end()
                .to_string(),
            resolv_conf: fs::read_to_string(self.root.path().join("resolv.conf"))
                .unwrap_or_default(),
            hostname: nix::unistd::gethostname().unwrap().into_string().unwrap(),
            storages: format!("{:?}", self.sandbox.storages),
            modules_loaded: *self.loader.0.lock().unwrap(),
        }
    }

    fn cgroup_dirs(&self) -> Vec<String> {
        let mut found = Vec::new();
        for hierarchy in fs::read_dir("/sys/fs/cgroup").unwrap().flatten() {
            let parent = hierarchy.path().join(&self.cgroup_parent);
            if parent.exists() {
                found.push(parent.display().to_string());
                found.extend(
                    tree(&parent)
                        .into_iter()
                        .filter(|entry| entry.ends_with('/')),
                );
            }
        }
        found
    }
}

fn write(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn storage(driver: &str, source: &str, options: &[&str], mount_point: &Path) -> Storage {
    Storage {
        driver: driver.to_string(),
        source: source.to_string(),
        options: options.iter().map(|option| option.to_string()).collect(),
        mount_point: mount_point.display().to_string(),
        ..Storage::default()
    }
}

/// Reaps exited children, leaving running ones alone.
fn reap_zombies() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}

/// Checks the error of a run whose stage `failing` failed in apply and, if `undo_failed`
/// names a stage, whose rollback failed there too.
fn check_error(error: &PipelineError, failing: &str, undo_failed: Option<&str>) {
    assert_eq!(error.stage, failing);
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("stage {failing}: ")),
        "{message}"
    );
    let failed_undos: Vec<&str> = error.undo_errors.iter().map(|(name, _)| *name).collect();
    match undo_failed {
        Some(stage) => {
            assert_eq!(failed_undos, [stage], "{message}");
            assert!(
                message.contains(&format!("undo {stage}: invalid injected fault")),
                "{message}"
            );
        }
        None => assert!(failed_undos.is_empty(), "{message}"),
    }
}

fn run_sandbox_case(
    guest: &Guest,
    stages: Vec<Box<dyn Stage<SandboxContext>>>,
) -> Result<stages::Completed, PipelineError> {
    let mut ctx = SandboxContext {
        sandbox: guest.sandbox.clone(),
        request: guest.sandbox_request(),
    };
    Pipeline::new(stages).run(&mut ctx, &guest.sandbox.logger)
}

fn run_container_case(
    guest: &Guest,
    stages: Vec<Box<dyn Stage<ContainerContext>>>,
) -> Result<stages::Completed, PipelineError> {
    let mut ctx = ContainerContext::new(guest.sandbox.clone(), guest.container_request());
    Pipeline::new(stages).run(&mut ctx, &guest.sandbox.logger)
}

/// Runs every fault of one pipeline: for each stage, a failing apply, and a failing
/// undo during the rollback after the last stage fails (or during teardown for the last
/// stage itself). `run` builds the context and runs the stages.
fn matrix<C: 'static>(
    guest: &Guest,
    stages: impl Fn() -> Vec<Box<dyn Stage<C>>>,
    run: impl Fn(&Guest, Vec<Box<dyn Stage<C>>>) -> Result<stages::Completed, PipelineError>,
) -> usize {
    let before = guest.state();
    let names: Vec<&'static str> = stages().iter().map(|stage| stage.name()).collect();
    let last = names.len() - 1;
    let mut cases = 0;

    for (index, name) in names.iter().enumerate() {
        let error = run(guest, wrap(stages(), index, Fault::Apply)).expect_err(name);
        check_error(&error, name, None);
        assert_eq!(guest.state(), before, "after a fault in {name}");
        cases += 1;

        if index < last {
            let failing = wrap(wrap(stages(), index, Fault::Undo), last, Fault::Apply);
            let error = run(guest, failing).expect_err(name);
            check_error(&error, names[last], Some(name));
        } else {
            let mut completed =
                run(guest, wrap(stages(), index, Fault::Undo)).expect("pipeline runs");
            let errors = completed
                .undo_all(&guest.sandbox.logger)
                .expect_err("undo fails");
            let failed: Vec<&str> = errors.0.iter().map(|(name, _)| *name).collect();
            assert_eq!(failed, [*name]);
        }
        assert_eq!(guest.state(), before, "after a failing undo of {name}");
        cases += 1;
    }
    cases
}

/// Checks what a successful request changed: the container's init, cgroup, mounts,
/// sysctl, and the spec written to the bundle.
fn check_created_container(guest: &Guest, before: &GuestState) {
    let during = guest.state();
    assert_eq!(
        during.live_children.len(),
        before.live_children.len() + 1,
        "no container init"
    );
    assert!(!during.cgroups.is_empty(), "no container cgroup");
    assert_eq!(during.sysctl, "1");
    let run = guest.paths.run_dir.display().to_string();
    for (mount_point, fstype) in [
        ("c1/rootfs", "overlay"),
        ("sandbox/storage/disk", "ext4"),
        ("shared/c1-data", "ext4"),
    ] {
        let prefix = format!("{run}/{mount_point} ");
        assert!(
            during
                .mounts
                .iter()
                .any(|line| line.starts_with(&prefix) && line.ends_with(fstype)),
            "{mount_point} not mounted as {fstype}: {:?}",
            during.mounts
        );
    }
    assert!(during.storages.contains("shm\": 2"), "{}", during.storages);

    let config = guest.paths.bundle_dir("c1").join("config.json");
    let spec: serde_json::Value = serde_json::from_slice(&fs::read(config).unwrap()).unwrap();
    let linux = &spec["linux"];
    let disk = &guest._disks[0];
    assert_eq!(linux["devices"][0]["major"], disk.major);
    assert_eq!(linux["devices"][0]["minor"], disk.minor);
    let rules = linux["resources"]["devices"].as_array().unwrap();
    assert_eq!(rules[1]["major"], disk.major);
    assert_eq!(rules.last().unwrap()["major"], 254);
    assert_eq!(rules.last().unwrap()["allow"], false);
    assert_eq!(linux["resources"]["cpu"]["cpus"], "0");
    assert!(linux["sysctl"].get("net.ipv4.ip_forward").is_none());
    let namespaces = linux["namespaces"].to_string();
    for kind in ["uts", "ipc", "pid"] {
        let path = guest.paths.sandbox_namespace(kind).display().to_string();
        assert!(
            namespaces.contains(&path),
            "{kind} not shared: {namespaces}"
        );
    }
    assert!(!namespaces.contains("network"), "{namespaces}");
    assert!(spec["hooks"]["prestart"][0]["path"]
        .as_str()
        .unwrap()
        .ends_with("10-check"));
}

#[test]
fn every_stage_fault_leaves_guest_unchanged() {
    let guest = Guest::build();
    let guest = Arc::new(guest);
    let shared = guest.clone();

    let (sandbox_cases, container_cases) = in_private_namespaces(move || {
        let guest = shared;
        let options = guest.sandbox_options();
        let sandbox_cases = matrix(&guest, || sandbox_stages(&options), run_sandbox_case);

        let mut sandbox =
            run_sandbox_case(&guest, sandbox_stages(&options)).expect("sandbox created");
        let container_options = ContainerOptions {
            device_timeout: TIMEOUT,
        };
        let container_cases = matrix(
            &guest,
            || container_stages(&container_options),
            run_container_case,
        );

        // The request succeeds without faults, and its teardown restores the guest.
        let before = guest.state();
        let mut completed = run_container_case(&guest, container_stages(&container_options))
            .unwrap_or_else(|error| panic!("container created: {error}"));
        check_created_container(&guest, &before);
        completed
            .undo_all(&guest.sandbox.logger)
            .expect("container removed");
        assert_eq!(guest.state(), before);

        sandbox
            .undo_all(&guest.sandbox.logger)
            .expect("sandbox destroyed");
        (sandbox_cases, container_cases)
    });

    assert_eq!(sandbox_cases, 2 * 7);
    assert_eq!(container_cases, 2 * 9);
    assert!(guest.cgroup_dirs().is_empty(), "{:?}", guest.cgroup_dirs());
}
