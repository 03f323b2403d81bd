//! Helpers shared by the integration tests: a fake guest whose devices are real loop
//! devices, a busybox root file system, and namespaces private to one test thread.
#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use nix::sched::{unshare, CloneFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};

/// Device timeout for tests whose devices exist before the lookup.
pub const TIMEOUT: Duration = Duration::from_millis(200);

/// A loop device over a file in a temporary directory, detached on drop.
pub struct LoopDevice {
    pub path: PathBuf,
    pub major: u64,
    pub minor: u64,
    _backing: tempfile::TempDir,
}

impl LoopDevice {
    /// Attaches a new 16 MiB file, formatted as ext4 with `content` written into it.
    pub fn ext4(content: &[(&str, &str)]) -> LoopDevice {
        let backing = tempfile::tempdir().unwrap();
        let image = backing.path().join("disk.img");
        fs::File::create(&image).unwrap().set_len(16 << 20).unwrap();
        let staging = backing.path().join("content");
        fs::create_dir(&staging).unwrap();
        for (name, text) in content {
            fs::write(staging.join(name), text).unwrap();
        }
        run(Command::new("mkfs.ext4")
            .args(["-q", "-F", "-d"])
            .arg(&staging)
            .arg(&image));

        let output = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&image)
            .output()
            .expect("run losetup");
        assert!(output.status.success(), "losetup: {output:?}");
        let path = PathBuf::from(String::from_utf8(output.stdout).unwrap().trim());
        let rdev = fs::metadata(&path).unwrap().rdev();
        LoopDevice {
            path,
            major: nix::sys::stat::major(rdev),
            minor: nix::sys::stat::minor(rdev),
            _backing: backing,
        }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.path).status();
    }
}

fn run(command: &mut Command) {
    let output = command.output().expect("run command");
    assert!(output.status.success(), "{command:?}: {output:?}");
}

/// Creates the sysfs directory of the PCI device at `slots` (bridges first), with a
/// `pci_bus` entry in every bridge on the way, and returns it.
pub fn pci_device_dir(sysfs: &Path, slots: &[u8]) -> PathBuf {
    let mut dir = sysfs.join("devices/pci0000:00");
    let mut bus = 0u8;
    for (index, slot) in slots.iter().enumerate() {
        dir.push(format!("0000:{bus:02x}:{slot:02x}.0"));
        fs::create_dir_all(&dir).unwrap();
        if index + 1 < slots.len() {
            bus = index as u8 + 1;
            fs::create_dir_all(dir.join(format!("pci_bus/0000:{bus:02x}"))).unwrap();
        }
    }
    dir
}

/// Shows a virtio-blk disk `name` with the given numbers at PCI `slots` in the fake
/// sysfs, and makes its node in the fake devfs.
pub fn add_virtio_blk(
    sysfs: &Path,
    devfs: &Path,
    slots: &[u8],
    name: &str,
    major: u64,
    minor: u64,
) {
    let block = pci_device_dir(sysfs, slots)
        .join("virtio2/block")
        .join(name);
    fs::create_dir_all(&block).unwrap();
    fs::write(block.join("dev"), format!("{major}:{minor}\n")).unwrap();
    let node = devfs.join(name);
    if !node.exists() {
        mknod(
            &node,
            SFlag::S_IFBLK,
            Mode::from_bits_truncate(0o600),
            makedev(major, minor),
        )
        .expect("mknod needs root");
    }
    assert!(fs::metadata(&node).unwrap().file_type().is_block_device());
}

/// Fills `root` with a busybox root file system.
pub fn busybox_rootfs(root: &Path) {
    let bin = root.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .expect("busybox is installed");
    fs::copy(busybox, bin.join("busybox")).unwrap();
    for applet in ["sh", "sleep", "true", "cat", "ls"] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    for dir in ["proc", "dev", "sys", "tmp", "etc"] {
        fs::create_dir_all(root.join(dir)).unwrap();
    }
}

/// Runs `body` on a thread with private mount and UTS namespaces, so its mounts and
/// hostname never reach this machine; they end with the thread.
pub fn in_private_namespaces<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts and needs root"
        );
        unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS)
            .expect("unshare mount and UTS namespaces");
        body()
    })
    .join()
    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
}

/// Returns the mount points in this thread's mount namespace.
pub fn mount_table() -> Vec<String> {
    let table = fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
    table
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            let fstype = line.split(" - ").nth(1)?.split(' ').next()?;
            Some(format!("{} {} {}", fields.get(4)?, fields.get(2)?, fstype))
        })
        .collect()
}

/// Returns the file system type mounted at `path` in this thread's mount namespace.
pub fn mounted_fstype(path: &Path) -> Option<String> {
    let target = format!("{} ", path.display());
    mount_table()
        .into_iter()
        .rev()
        .find(|line| line.starts_with(&target))
        .and_then(|line| line.rsplit(' ').next().map(str::to_string))
}

/// Returns every path under `dir`, sorted, with each file's content.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        let Ok(entries) = fs::read_dir(&current) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let metadata = fs::symlink_metadata(&path).unwrap();
            if metadata.is_dir() {
                pending.push(path.clone());
                found.push(format!("{}/", path.display()));
            } else if metadata.is_file() && metadata.len() <= 256 {
                let content = fs::read(&path).unwrap_or_default();
                found.push(format!(
                    "{} {}",
                    path.display(),
                    String::from_utf8_lossy(&content)
                ));
            } else if metadata.is_file() {
                found.push(format!("{} ({} bytes)", path.display(), metadata.len()));
            } else {
                found.push(path.display().to_string());
            }
        }
    }
    found.sort();
    found
}

/// Returns the pids of this process's children, from every thread.
pub fn children() -> Vec<i32> {
    let mut pids = Vec::new();
    for task in fs::read_dir("/proc/self/task").unwrap().flatten() {
        let listed = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        pids.extend(
            listed
                .split_whitespace()
                .filter_map(|pid| pid.parse::<i32>().ok()),
        );
    }
    pids.sort();
    pids
}

/// Returns the directories named `name` directly under each cgroup hierarchy.
pub fn cgroup_dirs_named(name: &str) -> Vec<PathBuf> {
    fs::read_dir("/sys/fs/cgroup")
        .unwrap()
        .flatten()
        .map(|hierarchy| hierarchy.path().join(name))
        .filter(|dir| dir.exists())
        .collect()
}

/// Asserts that two listings are equal, printing only the entries that differ.
pub fn assert_same(before: &[String], after: &[String], case: &str) {
    let added: Vec<&String> = after
        .iter()
        .filter(|entry| !before.contains(entry))
        .collect();
    let removed: Vec<&String> = before
        .iter()
        .filter(|entry| !after.contains(entry))
        .collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "{case}: added {added:#?}, removed {removed:#?}"
    );
}

/// Serialises the tests of one binary that compare this process's children.
pub static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
