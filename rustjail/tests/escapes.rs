//! Known container escapes, each tried for real against the launcher. Needs root.

mod common;

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{config, require_root, run, wait_child, writable_root, Bundle, Guard};
use oci_spec::runtime::{Capability, LinuxCapabilitiesBuilder, MountBuilder, Spec};
use rustjail::InitCommand;

/// Returns broad capabilities, `CAP_SYS_PTRACE` and `CAP_SYS_ADMIN` among them, as a
/// privileged container has.
fn all_capabilities() -> oci_spec::runtime::LinuxCapabilities {
    let all: oci_spec::runtime::Capabilities = [
        Capability::SysPtrace,
        Capability::SysAdmin,
        Capability::DacOverride,
        Capability::DacReadSearch,
        Capability::Fowner,
        Capability::Chown,
        Capability::Setuid,
        Capability::Setgid,
        Capability::Kill,
    ]
    .into_iter()
    .collect();
    LinuxCapabilitiesBuilder::default()
        .bounding(all.clone())
        .effective(all.clone())
        .permitted(all)
        .inheritable(oci_spec::runtime::Capabilities::new())
        .ambient(oci_spec::runtime::Capabilities::new())
        .build()
        .unwrap()
}

/// A container process keeps a descriptor of the init's `/proc/1/exe` while the init
/// still runs the launcher, then writes through it once the init executed the user
/// process, as in CVE-2019-5736. The launcher binary on disk must not change.
#[test]
fn container_cannot_overwrite_launcher_binary() {
    require_root();
    let bundle = Bundle::new();
    // A private copy, so a launcher without the protection damages only this file and
    // no other container runs it when the write happens.
    let programs = tempfile::tempdir().unwrap();
    let program = programs.path().join("rustjail-init");
    fs::copy(env!("CARGO_BIN_EXE_rustjail-init"), &program).unwrap();
    fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
    let original = fs::read(&program).unwrap();
    let init = InitCommand {
        program: program.clone(),
        args: Vec::new(),
    };
    let mut spec = bundle.spec(&["sleep", "60"]);
    let mut container_process = spec.process().clone().unwrap();
    container_process.set_capabilities(Some(all_capabilities()));
    container_process.set_no_new_privileges(Some(false));
    spec.set_process(Some(container_process.clone()));
    let mut container_config = config("exe-overwrite", spec);
    container_config.init = init.clone();
    let mut guard = Guard::create(container_config).unwrap();

    let exe = fs::read_link(format!("/proc/{}/exe", guard.container.pid())).unwrap();
    let mut attacker = container_process;
    attacker.set_args(Some(
        [
            "sh",
            "-c",
            "exec 7</proc/1/exe || exit 3; echo opened; read go; \
             echo evil >> /proc/self/fd/7; echo wrote=$?",
        ]
        .iter()
        .map(|arg| arg.to_string())
        .collect(),
    ));
    let mut exec = guard.container.exec(&attacker, &init).unwrap();
    let mut stdin = fs::File::from(exec.take_stdin().unwrap());
    let mut stdout = BufReader::new(fs::File::from(exec.take_stdout().unwrap()));
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "opened\n", "the attacker could not open /proc/1/exe");

    guard.container.start().unwrap();
    writeln!(stdin, "go").unwrap();
    let code = wait_child(exec.pid());
    line.clear();
    stdout.read_line(&mut line).unwrap();

    assert_eq!(code, 0);
    assert!(
        exe.to_string_lossy().starts_with("/memfd:"),
        "the init runs {} instead of a sealed copy",
        exe.display()
    );
    assert!(
        fs::read(&program).unwrap() == original,
        "the container changed the launcher binary ({line:?})"
    );
}

fn with_tmpfs_at(mut spec: Spec, destination: &str) -> Spec {
    let mut mounts = spec.mounts().clone().unwrap();
    mounts.push(
        MountBuilder::default()
            .destination(destination)
            .typ("tmpfs")
            .source("tmpfs")
            .build()
            .unwrap(),
    );
    spec.set_mounts(Some(mounts));
    spec
}

/// Returns a relative path from `from` to `outside` that climbs to `/` with `..`.
fn climbing_path(from: &Path, outside: &Path) -> PathBuf {
    let mut path = PathBuf::new();
    for _ in from.components() {
        path.push("..");
    }
    path.join(outside.strip_prefix("/").unwrap())
}

#[test]
fn relative_symlink_cannot_send_mount_outside_rootfs() {
    require_root();
    let bundle = Bundle::new();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("target");
    fs::create_dir(&target).unwrap();
    fs::create_dir(bundle.rootfs().join("mnt")).unwrap();
    let link = bundle.rootfs().join("mnt/escape");
    symlink(climbing_path(&bundle.rootfs().join("mnt"), &target), &link).unwrap();
    let spec = with_tmpfs_at(
        bundle.spec(&[
            "sh",
            "-c",
            "echo inside > /mnt/escape/file && cat /mnt/escape/file",
        ]),
        "/mnt/escape",
    );

    let output = run("relative-escape", spec);

    assert_eq!(output.stdout, "inside\n", "{output:?}");
    assert_eq!(
        fs::read_dir(&target).unwrap().count(),
        0,
        "the mount landed outside the rootfs"
    );
}

/// Number of mounts below the swapped directory, each one more chance for the race.
const SWAPPED_MOUNTS: usize = 16;

/// Creates tried before the swap test gives up on getting one that succeeds.
const CREATE_ATTEMPTS: usize = 10;

/// Puts the directory back at `swapped` and the symlink at `link` after an interrupted
/// round of swaps, whatever state the round stopped in.
fn restore_swapped_directory(swapped: &Path, parked: &Path, link: &Path) {
    if fs::symlink_metadata(swapped).is_ok_and(|metadata| metadata.file_type().is_symlink()) {
        fs::rename(swapped, link).unwrap();
    }
    if parked.exists() {
        // The init may have created a fresh directory where the swapped one was missing.
        if swapped.is_dir() {
            fs::remove_dir_all(swapped).unwrap();
        }
        fs::rename(parked, swapped).unwrap();
    }
}

/// A thread swaps a directory of the rootfs for a symlink to a host directory and back
/// while the init mounts below it, as in CVE-2021-30465. Whatever the init found, every
/// mount must end up inside the rootfs, where the container can reach it. A race cannot prove
/// the absence of a window, so this is a stress test next to the deterministic ones.
#[test]
fn swapped_symlink_cannot_send_mount_outside_rootfs() {
    require_root();
    let bundle = Bundle::new();
    let outside = tempfile::tempdir().unwrap();
    let swapped = bundle.rootfs().join("swap");
    let parked = bundle.rootfs().join("swap-dir");
    let link = bundle.rootfs().join("swap-link");
    let mut spec = writable_root(bundle.spec(&["true"]));
    for index in 0..SWAPPED_MOUNTS {
        fs::create_dir(outside.path().join(format!("sub{index}"))).unwrap();
        fs::create_dir_all(parked.join(format!("sub{index}"))).unwrap();
        spec = with_tmpfs_at(spec, &format!("/swap/sub{index}"));
    }
    symlink(outside.path(), &link).unwrap();
    fs::rename(&parked, &swapped).unwrap();

    // A create may fail when a component vanishes between two steps of the resolution,
    // which is safe: no container runs. Such a failure is retried, so at least one create
    // succeeds and its mounts are checked.
    let mut created = None;
    for attempt in 0..CREATE_ATTEMPTS {
        let stop = Arc::new(AtomicBool::new(false));
        let swapper = {
            let stop = Arc::clone(&stop);
            let (swapped, parked, link) = (swapped.clone(), parked.clone(), link.clone());
            std::thread::spawn(move || {
                // Bounded, and each round is four renames, so it ends quickly either way.
                for _ in 0..200_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let _ = fs::rename(&swapped, &parked);
                    let _ = fs::rename(&link, &swapped);
                    let _ = fs::rename(&swapped, &link);
                    let _ = fs::rename(&parked, &swapped);
                }
            })
        };
        let result = Guard::create(config("swap-escape", spec.clone()));
        stop.store(true, Ordering::Relaxed);
        swapper.join().unwrap();
        match result {
            Ok(guard) => {
                created = Some(guard);
                break;
            }
            Err(error) => {
                let message = error.to_string();
                assert!(
                    message.contains("resolve destination"),
                    "attempt {attempt}: {message}"
                );
                restore_swapped_directory(&swapped, &parked, &link);
            }
        }
    }
    // On a loaded machine every raced attempt may lose. The race itself then proved its
    // point (nothing landed outside, checked below), and one create without the swapper
    // checks that the mounts still work.
    let guard = match created {
        Some(guard) => guard,
        None => {
            assert_outside_untouched(outside.path());
            Guard::create(config("swap-escape", spec.clone())).expect("create without the race")
        }
    };
    let init_mounts =
        fs::read_to_string(format!("/proc/{}/mountinfo", guard.container.pid())).unwrap();

    let visible = init_mounts
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .filter(|mount_point| mount_point.contains("/sub"))
        .count();
    assert_eq!(
        visible, SWAPPED_MOUNTS,
        "some tmpfs mounts are missing in the container, so they went elsewhere: {init_mounts}"
    );
    assert_outside_untouched(outside.path());
}

/// Asserts that no mount or file reached the host directories behind the swapped link.
fn assert_outside_untouched(outside: &Path) {
    for index in 0..SWAPPED_MOUNTS {
        let sub = outside.join(format!("sub{index}"));
        assert_eq!(fs::read_dir(&sub).unwrap().count(), 0, "{}", sub.display());
    }
}
