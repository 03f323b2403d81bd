//! The requests a Kata shim sends, from `shared/cases/kata-requests`, through the real
//! pipelines with fake guest paths.
//!
//! Every CreateSandbox request must succeed and its teardown restore the guest. Every
//! CreateContainer request must succeed, or fail with INVALID_ARGUMENT or UNIMPLEMENTED
//! naming the unsupported value, which the test derives from the request itself. Either
//! way, nothing may be left behind.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{
    add_virtio_blk, assert_same, busybox_rootfs, children, in_private_namespaces, mount_table,
    tree, LoopDevice, TIMEOUT,
};
use protocols::agent;
use stages::{
    container_stages, sandbox_stages, ContainerContext, ContainerOptions, ContainerRequest,
    ErrorCode, GuestPaths, ModuleLoader, Pipeline, Sandbox, SandboxContext, SandboxOptions,
    SandboxRequest, StorageRegistry,
};

fn cases_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    [
        manifest.join("../../shared/cases/kata-requests"),
        manifest.join("../shared/cases/kata-requests"),
    ]
    .into_iter()
    .find(|dir| dir.is_dir())
    .expect("kata-requests cases next to the workspace")
}

fn cases(prefix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(cases_dir())
        .unwrap()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with(prefix)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no {prefix} cases");
    files
}

/// Accepts every module, keeping the names, because the cases name modules such as
/// `evil.ko` that this machine must never load.
#[derive(Debug, Default)]
struct RecordingLoader(Mutex<Vec<String>>);

impl ModuleLoader for RecordingLoader {
    fn load(&self, name: &str, _parameters: &[String]) -> std::io::Result<()> {
        self.0.lock().unwrap().push(format!("load {name}"));
        Ok(())
    }

    fn unload(&self, name: &str) -> std::io::Result<()> {
        self.0.lock().unwrap().push(format!("unload {name}"));
        Ok(())
    }
}

fn sandbox(paths: &GuestPaths, guest_hooks: &str) -> Arc<Sandbox> {
    Arc::new(Sandbox {
        id: "kata-cases".to_string(),
        paths: paths.clone(),
        storages: StorageRegistry::system(),
        guest_hooks: (!guest_hooks.is_empty()).then(|| guest_hooks.into()),
        init: rustjail::InitCommand {
            program: PathBuf::from(env!("CARGO_BIN_EXE_berth-stages-test-init")),
            args: Vec::new(),
        },
        logger: slog::Logger::root(slog::Discard, slog::o!()),
    })
}

/// Converts a request as the agent does, with module parameters appended to the name.
fn sandbox_request(request: &agent::CreateSandboxRequest) -> SandboxRequest {
    SandboxRequest {
        hostname: request.hostname.clone(),
        storages: request.storages.iter().map(storage).collect(),
        dns: request.dns.clone(),
        guest_hook_path: request.guest_hook_path.clone(),
        sandbox_pidns: request.sandbox_pidns,
        kernel_modules: request
            .kernel_modules
            .iter()
            .map(|module| {
                let mut entry = module.name.clone();
                for parameter in &module.parameters {
                    entry.push(' ');
                    entry.push_str(parameter);
                }
                entry
            })
            .collect(),
    }
}

fn storage(message: &agent::Storage) -> stages::Storage {
    stages::Storage {
        driver: message.driver.clone(),
        driver_options: message.driver_options.clone(),
        source: message.source.clone(),
        fstype: message.fstype.clone(),
        options: message.options.clone(),
        mount_point: message.mount_point.clone(),
        fs_group: message.fs_group.as_ref().map(|group| stages::FsGroup {
            group_id: group.group_id,
            change_policy_on_root_mismatch: group.group_change_policy.value()
                == protocols::types::FSGroupChangePolicy::OnRootMismatch as i32,
        }),
    }
}

fn device(message: &agent::Device) -> stages::Device {
    stages::Device {
        id: message.id.clone(),
        type_: message.type_.clone(),
        vm_path: message.vm_path.clone(),
        container_path: message.container_path.clone(),
        options: message.options.clone(),
    }
}

#[test]
fn kata_sandbox_requests_succeed_and_tear_down() {
    let _serial = common::SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    in_private_namespaces(|| {
        for path in cases("CreateSandboxRequest-") {
            let root = tempfile::tempdir().unwrap();
            let paths = GuestPaths::under(root.path()).unwrap();
            let json = fs::read_to_string(&path).unwrap();
            let message: agent::CreateSandboxRequest = protocols::parse_request(&json)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            let loader = Arc::new(RecordingLoader::default());
            let options = SandboxOptions {
                resolv_conf: root.path().join("resolv.conf"),
                module_loader: loader.clone(),
                device_timeout: TIMEOUT,
            };
            let sandbox = sandbox(&paths, &message.guest_hook_path);
            let mounts_before = mount_table();
            let children_before = children();
            let mut ctx = SandboxContext {
                sandbox: sandbox.clone(),
                request: sandbox_request(&message),
            };

            let mut completed = Pipeline::new(sandbox_stages(&options))
                .run(&mut ctx, &sandbox.logger)
                .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
            if message.sandbox_pidns {
                assert_eq!(
                    children().len(),
                    children_before.len() + 1,
                    "{}",
                    path.display()
                );
            }
            completed
                .undo_all(&sandbox.logger)
                .expect("sandbox torn down");

            assert_eq!(mount_table(), mounts_before, "{}", path.display());
            assert_eq!(children(), children_before, "{}", path.display());
            assert!(tree(&paths.run_dir).is_empty(), "{}", path.display());
            let calls = loader.0.lock().unwrap().clone();
            let loads = calls.iter().filter(|call| call.starts_with("load")).count();
            assert_eq!(loads, message.kernel_modules.len(), "{}", path.display());
            assert_eq!(calls.len(), 2 * loads, "{}: {calls:?}", path.display());
        }
    });
}

/// The outcome a container request must have, read from the request.
#[derive(Debug, PartialEq, Eq)]
enum Expected {
    Success,
    /// Fails with the code, and the message names the value.
    Failure(ErrorCode, String),
}

fn expected(message: &agent::CreateContainerRequest) -> Expected {
    if let Some(storage) = message
        .storages
        .iter()
        .find(|storage| storage.driver == "image_guest_pull")
    {
        return Expected::Failure(ErrorCode::InvalidArgument, format!("{:?}", storage.driver));
    }
    if let Some(option) = message
        .storages
        .iter()
        .flat_map(|storage| storage.driver_options.first())
        .next()
    {
        return Expected::Failure(ErrorCode::Unimplemented, format!("{option:?}"));
    }
    Expected::Success
}

/// Creates what a real guest would have for `message`: the rootfs with its program,
/// the sources of the spec's bind mounts, and the sysctl files.
fn provide_guest(message: &agent::CreateContainerRequest, paths: &GuestPaths) {
    let rootfs = PathBuf::from(&message.OCI.Root.Path);
    if !rootfs.exists() {
        busybox_rootfs(&rootfs);
    }
    if let Some(program) = message
        .OCI
        .Process
        .Args
        .first()
        .filter(|program| program.starts_with('/'))
    {
        let path = rootfs.join(program.trim_start_matches('/'));
        if !path.exists() {
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, "#!/bin/sh\nexec sleep 1000\n").unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
    }
    for mount in &message.OCI.Mounts {
        let source = Path::new(&mount.source);
        if mount.type_ == "bind" && source.starts_with(&paths.run_dir) && !source.exists() {
            fs::create_dir_all(source).unwrap();
        }
    }
    for key in message.OCI.Linux.Sysctl.keys() {
        let file = paths.procfs.join("sys").join(key.replace('.', "/"));
        fs::create_dir_all(file.parent().unwrap()).unwrap();
        fs::write(file, "0\n").unwrap();
    }
}

/// Runs one container request; returns its outcome as an [`Expected`] value and the
/// error message.
fn run_container(
    sandbox: &Arc<Sandbox>,
    message: &agent::CreateContainerRequest,
    cgroup_parent: &str,
) -> (Result<(), (ErrorCode, String)>, Option<stages::Completed>) {
    let mut spec = match protocols::spec_to_oci(&message.OCI) {
        Ok(spec) => spec,
        // The agent reports a spec that does not convert as INVALID_ARGUMENT.
        Err(error) => return (Err((ErrorCode::InvalidArgument, error.to_string())), None),
    };
    // Each case gets a cgroup under the test's own parent.
    if let Some(linux) = spec.linux_mut().as_mut() {
        linux.set_cgroups_path(Some(PathBuf::from(format!(
            "/{cgroup_parent}/{}",
            message.container_id
        ))));
    }
    let request = ContainerRequest {
        id: message.container_id.clone(),
        spec,
        storages: message.storages.iter().map(storage).collect(),
        devices: message.devices.iter().map(device).collect(),
    };
    let mut ctx = ContainerContext::new(sandbox.clone(), request);
    let options = ContainerOptions {
        device_timeout: TIMEOUT,
    };
    match Pipeline::new(container_stages(&options)).run(&mut ctx, &sandbox.logger) {
        Ok(completed) => (Ok(()), Some(completed)),
        Err(error) => (Err((error.code(), error.to_string())), None),
    }
}

#[test]
fn kata_container_requests_succeed_or_fail_cleanly() {
    let _serial = common::SERIAL
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let disk = LoopDevice::ext4(&[]);
    let (major, minor) = (disk.major, disk.minor);
    let cgroup_parent = format!("berth-kata-cases-{}", std::process::id());

    let outcomes = in_private_namespaces(move || {
        let root = tempfile::tempdir().unwrap();
        let mut paths = GuestPaths::under(root.path()).unwrap();
        paths.cgroup_root = PathBuf::from("/sys/fs/cgroup");
        // The devices the cases name by PCI path.
        for slot in 0..4u8 {
            add_virtio_blk(
                &paths.sysfs,
                &paths.devfs,
                &[slot, slot],
                &format!("vd{}", (b'b' + slot) as char),
                major,
                minor,
            );
        }
        let sandbox = sandbox(&paths, "");
        let run_dir = paths.run_dir.display().to_string();
        let mut outcomes = Vec::new();

        for path in cases("CreateContainerRequest-") {
            let name = path.file_stem().unwrap().to_string_lossy().into_owned();
            let json = fs::read_to_string(&path)
                .unwrap()
                .replace("/run/kata-containers", &run_dir);
            let mut message: agent::CreateContainerRequest =
                protocols::parse_request(&json).unwrap_or_else(|error| panic!("{name}: {error}"));
            if message.container_id.is_empty() {
                message.container_id = name
                    .replace("CreateContainerRequest-", "kata-")
                    .replace('_', "-");
            }
            provide_guest(&message, &paths);
            let files_before = tree(&paths.run_dir);
            let mounts_before = mount_table();
            let children_before = children();

            let (result, completed) = run_container(&sandbox, &message, &cgroup_parent);
            if let Some(mut completed) = completed {
                completed
                    .undo_all(&sandbox.logger)
                    .unwrap_or_else(|error| panic!("{name}: {error}"));
            }
            reap_exited_children();

            assert_same(&mounts_before, &mount_table(), &name);
            assert_eq!(children(), children_before, "{name}");
            // The launcher creates default device nodes inside a rootfs whose /dev is not
            // a mount, as runc does; the rootfs content is the container's own.
            let outside_rootfs = |files: Vec<String>| -> Vec<String> {
                files
                    .into_iter()
                    .filter(|entry| !entry.contains("/rootfs/"))
                    .collect()
            };
            assert_same(
                &outside_rootfs(files_before),
                &outside_rootfs(tree(&paths.run_dir)),
                &name,
            );
            assert_eq!(format!("{:?}", sandbox.storages), "{}", "{name}");
            outcomes.push((name, expected(&message), result));
        }
        outcomes
    });

    let mut successes = 0;
    for (name, expected, result) in &outcomes {
        match (expected, result) {
            (Expected::Success, Ok(())) => successes += 1,
            (Expected::Failure(code, value), Err((actual, message))) => {
                assert_eq!(actual, code, "{name}: {message}");
                assert!(
                    message.contains(value.as_str()),
                    "{name}: {message} does not name {value}"
                );
            }
            // A spec that does not convert is the remaining kind of unsupported input.
            (Expected::Success, Err((ErrorCode::InvalidArgument, message)))
                if message.contains("$(default_caps)") => {}
            (expected, result) => panic!("{name}: expected {expected:?}, got {result:?}"),
        }
    }
    assert!(
        successes >= 4,
        "only {successes} cases succeeded: {outcomes:?}"
    );
    assert!(
        common::cgroup_dirs_named(&format!("berth-kata-cases-{}", std::process::id())).is_empty()
    );
    drop(disk);
}

fn reap_exited_children() {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        if status == WaitStatus::StillAlive {
            break;
        }
    }
}
