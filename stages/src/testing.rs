//! Helpers for unit tests: a sandbox on fake guest paths, a recording mount double and a
//! logger that keeps its records.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nix::mount::MsFlags;

use crate::context::{ContainerContext, Sandbox};
use crate::paths::GuestPaths;
use crate::storage::{Mounter, StorageRegistry};

/// One mount(2) call seen by [`FakeMounter`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountCall {
    pub source: String,
    pub target: PathBuf,
    pub fstype: String,
    pub flags: MsFlags,
    pub data: Option<String>,
}

/// A mount double that records calls. It fails the next `fail_mounts` mount calls and
/// the next `fail_unmounts` unmount calls.
#[derive(Debug, Default)]
pub struct FakeMounter {
    pub mounts: Mutex<Vec<MountCall>>,
    pub unmounts: Mutex<Vec<PathBuf>>,
    /// Number of coming mount calls to fail with ENODEV.
    pub fail_mounts: Mutex<usize>,
    /// Number of coming unmount calls to fail with EBUSY.
    pub fail_unmounts: Mutex<usize>,
}

impl FakeMounter {
    pub fn mount_count(&self) -> usize {
        self.mounts.lock().unwrap().len()
    }

    pub fn unmounted(&self) -> Vec<PathBuf> {
        self.unmounts.lock().unwrap().clone()
    }
}

fn take_failure(counter: &Mutex<usize>) -> bool {
    let mut remaining = counter.lock().unwrap();
    if *remaining == 0 {
        return false;
    }
    *remaining -= 1;
    true
}

impl Mounter for FakeMounter {
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        if take_failure(&self.fail_mounts) {
            return Err(io::Error::from_raw_os_error(libc::ENODEV));
        }
        self.mounts.lock().unwrap().push(MountCall {
            source: source.to_string(),
            target: target.to_path_buf(),
            fstype: fstype.to_string(),
            flags,
            data: data.map(str::to_string),
        });
        Ok(())
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        if take_failure(&self.fail_unmounts) {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        self.unmounts.lock().unwrap().push(target.to_path_buf());
        Ok(())
    }

    /// Returns the targets mounted and not yet unmounted, at or below `path`.
    fn mounts_under(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let mut mounted: Vec<PathBuf> = Vec::new();
        for call in self.mounts.lock().unwrap().iter() {
            if !call.flags.contains(MsFlags::MS_REMOUNT) && !mounted.contains(&call.target) {
                mounted.push(call.target.clone());
            }
        }
        let unmounted = self.unmounts.lock().unwrap();
        Ok(mounted
            .into_iter()
            .filter(|target| target.starts_with(path))
            .filter(|target| {
                let mounts = self
                    .mounts
                    .lock()
                    .unwrap()
                    .iter()
                    .filter(|call| {
                        &call.target == target && !call.flags.contains(MsFlags::MS_REMOUNT)
                    })
                    .count();
                let unmounts = unmounted.iter().filter(|done| *done == target).count();
                mounts > unmounts
            })
            .collect())
    }
}

/// Device timeout for unit tests, short because their devices exist or never will.
pub const TIMEOUT: std::time::Duration = std::time::Duration::from_millis(50);

/// Returns guest paths whose run directory is `run_dir` and whose kernel file systems
/// do not exist, for tests of storages that need no device.
pub fn run_paths(run_dir: &Path) -> GuestPaths {
    let missing = PathBuf::from("/nonexistent/berth-test");
    GuestPaths {
        run_dir: run_dir.to_path_buf(),
        sysfs: missing.join("sys"),
        procfs: missing.join("proc"),
        devfs: missing.join("dev"),
        cgroup_root: missing.join("cgroup"),
        kernel_cmdline: missing.join("cmdline"),
    }
}

/// A slog drain that keeps each record as "LEVEL message key=value ...".
#[derive(Debug, Clone, Default)]
pub struct Records(pub Arc<Mutex<Vec<String>>>);

impl Records {
    pub fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

struct Collect(String);

impl slog::Serializer for Collect {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments) -> slog::Result {
        self.0.push_str(&format!(" {key}={value}"));
        Ok(())
    }
}

impl slog::Drain for Records {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        let mut line = Collect(format!(
            "{} {}",
            record.level().as_short_str(),
            record.msg()
        ));
        let _ = slog::KV::serialize(&record.kv(), record, &mut line);
        let _ = slog::KV::serialize(values, record, &mut line);
        self.0.lock().unwrap().push(line.0);
        Ok(())
    }
}

/// Test sandbox on fake guest paths, with its mount double and log records.
pub struct TestSandbox {
    pub sandbox: Arc<Sandbox>,
    pub mounter: Arc<FakeMounter>,
    pub records: Records,
}

/// Builds a test sandbox on fake guest paths under `root`, without guest hooks.
pub fn test_sandbox(root: &Path) -> TestSandbox {
    test_sandbox_with_hooks(root, None)
}

/// Builds a test sandbox whose guest hook directory is `guest_hooks`.
pub fn test_sandbox_with_hooks(root: &Path, guest_hooks: Option<PathBuf>) -> TestSandbox {
    let mounter = Arc::new(FakeMounter::default());
    let records = Records::default();
    let logger = slog::Logger::root(slog::Fuse(records.clone()), slog::o!());
    let sandbox = Sandbox {
        id: "sandbox-test".to_string(),
        paths: GuestPaths::under(root).expect("create fake guest paths"),
        storages: StorageRegistry::new(mounter.clone()),
        guest_hooks,
        init: rustjail::InitCommand {
            program: PathBuf::from("/nonexistent/init"),
            args: Vec::new(),
        },
        logger,
    };
    TestSandbox {
        sandbox: Arc::new(sandbox),
        mounter,
        records,
    }
}

/// Builds a minimal valid spec whose rootfs is `root_path`.
pub fn test_spec(root_path: &str) -> oci_spec::runtime::Spec {
    let mut spec = oci_spec::runtime::Spec::default();
    let root = oci_spec::runtime::RootBuilder::default()
        .path(root_path)
        .build()
        .expect("build root");
    spec.set_root(Some(root));
    spec
}

/// Builds a container context with no storages and no devices.
pub fn test_context(sandbox: &Arc<Sandbox>, id: &str) -> ContainerContext {
    ContainerContext {
        sandbox: Arc::clone(sandbox),
        id: id.to_string(),
        spec: test_spec("rootfs"),
        storages: Vec::new(),
        devices: Vec::new(),
        container: None,
    }
}
