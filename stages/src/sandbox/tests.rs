//! The sandbox pipeline as a whole, on a thread with its own UTS and mount namespaces so
//! that the hostname and the namespace bind mounts never reach this machine.

use std::fs;
use std::path::Path;
use std::sync::Arc;

use nix::sched::{setns, unshare, CloneFlags};

use super::kernel_modules::testing::FakeLoader;
use super::pid_namespace::is_running;
use super::*;
use crate::namespace::is_namespace_file;
use crate::request::{SandboxRequest, Storage};
use crate::testing::{test_sandbox_with_hooks, TestSandbox, TIMEOUT};

/// What the test observes while the sandbox exists and after its teardown.
#[derive(Debug, Default)]
struct Observed {
    hostname_before: String,
    hostname_during: String,
    shared_uts_hostname: String,
    namespace_files: Vec<bool>,
    holder_running_during: bool,
    hostname_after: String,
    holder_running_after: bool,
    error: Option<String>,
    second_undo_ok: bool,
}

fn hostname() -> String {
    nix::unistd::gethostname().unwrap().into_string().unwrap()
}

/// Returns the hostname inside the UTS namespace bound at `path`, read on a thread that
/// joins it.
fn hostname_in(path: &Path) -> String {
    let file = fs::File::open(path).unwrap();
    std::thread::spawn(move || {
        setns(&file, CloneFlags::CLONE_NEWUTS).unwrap();
        hostname()
    })
    .join()
    .unwrap()
}

/// Returns the pid of the process whose PID namespace is bound at `path`, found among
/// this process's children.
fn holder_pid(path: &Path) -> Option<i32> {
    use std::os::unix::fs::MetadataExt;

    let target = fs::metadata(path).ok()?.ino();
    let children = fs::read_to_string(format!(
        "/proc/{}/task/{}/children",
        std::process::id(),
        std::process::id()
    ))
    .unwrap_or_default();
    let mut candidates: Vec<i32> = children
        .split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .collect();
    for task in fs::read_dir("/proc/self/task").unwrap().flatten() {
        let listed = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        candidates.extend(
            listed
                .split_whitespace()
                .filter_map(|pid| pid.parse::<i32>().ok()),
        );
    }
    candidates.into_iter().find(|pid| {
        fs::metadata(format!("/proc/{pid}/ns/pid")).is_ok_and(|metadata| metadata.ino() == target)
    })
}

/// Serialises the tests that run the sandbox pipeline. Each may start a PID namespace
/// holder as a child of this test process, and the leak counts below would see the
/// holder of a test running in parallel.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static PIPELINE_TESTS: std::sync::Mutex<()> = std::sync::Mutex::new(());
    PIPELINE_TESTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn run(test: &TestSandbox, options: SandboxOptions, request: SandboxRequest) -> Observed {
    let sandbox = test.sandbox.clone();
    std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWNS)
            .expect("unshare UTS and mount namespaces (needs root)");
        let logger = sandbox.logger.clone();
        let paths = sandbox.paths.clone();
        let mut observed = Observed {
            hostname_before: hostname(),
            ..Observed::default()
        };
        let mut ctx = SandboxContext { sandbox, request };

        let mut completed = match Pipeline::new(sandbox_stages(&options)).run(&mut ctx, &logger) {
            Ok(completed) => completed,
            Err(error) => {
                observed.error = Some(error.to_string());
                observed.hostname_after = hostname();
                return observed;
            }
        };

        observed.hostname_during = hostname();
        observed.namespace_files = ["uts", "ipc", "pid"]
            .iter()
            .map(|kind| is_namespace_file(&paths.sandbox_namespace(kind)))
            .collect();
        observed.shared_uts_hostname = hostname_in(&paths.sandbox_namespace("uts"));
        let holder = holder_pid(&paths.sandbox_namespace("pid"));
        observed.holder_running_during = holder.is_some_and(is_running);

        completed.undo_all(&logger).expect("sandbox torn down");
        observed.second_undo_ok = completed.undo_all(&logger).is_ok();
        observed.hostname_after = hostname();
        observed.holder_running_after = holder.is_some_and(is_running);
        observed
    })
    .join()
    .expect("test thread panicked")
}

fn options(root: &Path, loader: Arc<FakeLoader>) -> SandboxOptions {
    SandboxOptions {
        resolv_conf: root.join("resolv.conf"),
        module_loader: loader,
        device_timeout: TIMEOUT,
    }
}

fn full_request(test: &TestSandbox, hooks: &Path) -> SandboxRequest {
    let mount_point = test.sandbox.paths.sandbox_storage_dir().join("shm");
    SandboxRequest {
        hostname: "pod-1".to_string(),
        storages: vec![Storage {
            driver: "ephemeral".to_string(),
            mount_point: mount_point.display().to_string(),
            ..Storage::default()
        }],
        dns: vec!["nameserver 10.0.0.2".to_string()],
        guest_hook_path: hooks.display().to_string(),
        sandbox_pidns: true,
        kernel_modules: vec!["dummy numdummies=1".to_string()],
    }
}

#[test]
fn sandbox_set_up_and_torn_down() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let hooks = root.path().join("hooks");
    fs::create_dir_all(hooks.join("prestart")).unwrap();
    fs::write(root.path().join("resolv.conf"), "nameserver 192.0.2.1\n").unwrap();
    let test = test_sandbox_with_hooks(root.path(), Some(hooks.clone()));
    let loader = Arc::new(FakeLoader::default());
    let request = full_request(&test, &hooks);

    let observed = run(&test, options(root.path(), loader.clone()), request);

    assert_eq!(observed.error, None);
    assert_eq!(observed.hostname_during, "pod-1");
    assert_eq!(observed.shared_uts_hostname, "pod-1");
    assert_eq!(observed.namespace_files, [true, true, true]);
    assert!(
        observed.holder_running_during,
        "no PID namespace holder found"
    );
    assert_eq!(observed.hostname_after, observed.hostname_before);
    assert!(!observed.holder_running_after, "holder still running");
    assert!(observed.second_undo_ok);
    assert_eq!(
        *loader.calls.lock().unwrap(),
        ["load dummy numdummies=1", "unload dummy"]
    );
    assert_eq!(
        fs::read_to_string(root.path().join("resolv.conf")).unwrap(),
        "nameserver 192.0.2.1\n"
    );
    assert_eq!(test.mounter.mount_count(), 1);
    assert!(!test.sandbox.paths.run_dir.join("sandbox").exists());
}

#[test]
fn storage_failure_rolls_back_everything() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let test = test_sandbox_with_hooks(root.path(), Some(root.path().join("hooks")));
    let loader = Arc::new(FakeLoader::default());
    let mut request = full_request(&test, &root.path().join("hooks"));
    request.storages[0].driver = "image_guest_pull".to_string();

    let observed = run(&test, options(root.path(), loader.clone()), request);

    let error = observed.error.expect("image_guest_pull is not implemented");
    assert!(
        error.starts_with("stage storages: invalid storage driver \"image_guest_pull\""),
        "{error}"
    );
    assert_eq!(observed.hostname_after, observed.hostname_before);
    assert!(!root.path().join("resolv.conf").exists());
    assert_eq!(
        *loader.calls.lock().unwrap(),
        ["load dummy numdummies=1", "unload dummy"]
    );
    assert!(!test.sandbox.paths.run_dir.join("sandbox").exists());
    assert_eq!(zombie_or_live_children_in_new_pid_namespaces(), 0);
}

#[test]
fn failing_module_named() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let test = test_sandbox_with_hooks(root.path(), None);
    let loader = Arc::new(FakeLoader {
        failing: Some("evil.ko".to_string()),
        ..FakeLoader::default()
    });
    let request = SandboxRequest {
        kernel_modules: vec!["evil.ko".to_string()],
        ..SandboxRequest::default()
    };

    let observed = run(&test, options(root.path(), loader), request);

    let error = observed.error.expect("module load fails");
    assert!(
        error.starts_with("stage kernel-modules: load kernel module evil.ko"),
        "{error}"
    );
}

#[test]
fn sandbox_pipeline_order() {
    assert_eq!(
        sandbox_pipeline().stage_names(),
        [
            "hostname",
            "dns",
            "kernel-modules",
            "guest-hooks",
            "shared-namespaces",
            "pid-namespace",
            "storages"
        ]
    );
}

/// Counts this process's children that are PID 1 of their own namespace, which only
/// a leaked holder would be.
fn zombie_or_live_children_in_new_pid_namespaces() -> usize {
    let own = fs::read_link("/proc/self/ns/pid").unwrap();
    let mut count = 0;
    for task in fs::read_dir("/proc/self/task").unwrap().flatten() {
        let listed = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in listed.split_whitespace() {
            if fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|ns| ns != own) {
                count += 1;
            }
        }
    }
    count
}
