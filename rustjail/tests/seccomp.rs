//! Seccomp profiles seen from inside a container. Needs root.

mod common;

use common::{config, require_root, run, writable_root, Bundle};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscallBuilder, Spec,
};
use rustjail::{Container, Error};

fn with_seccomp(mut spec: Spec, seccomp: LinuxSeccomp) -> Spec {
    let mut linux = spec.linux().clone().unwrap();
    linux.set_seccomp(Some(seccomp));
    spec.set_linux(Some(linux));
    spec
}

fn native_arch() -> Arch {
    if cfg!(target_arch = "aarch64") {
        Arch::ScmpArchAarch64
    } else {
        Arch::ScmpArchX86_64
    }
}

/// Allows everything except mkdir (EPERM through errnoRet) and `kill(pid, 0)` (EACCES
/// through an argument condition), while `kill(pid, SIGCONT)` stays allowed.
fn profile() -> LinuxSeccomp {
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![native_arch()])
        .syscalls(vec![
            LinuxSyscallBuilder::default()
                .names(vec!["mkdir".to_owned(), "mkdirat".to_owned()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(libc::EPERM as u32)
                .build()
                .unwrap(),
            LinuxSyscallBuilder::default()
                .names(vec!["kill".to_owned()])
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(libc::EACCES as u32)
                .args(vec![LinuxSeccompArgBuilder::default()
                    .index(1usize)
                    .op(LinuxSeccompOperator::ScmpCmpEq)
                    .value(0u64)
                    .build()
                    .unwrap()])
                .build()
                .unwrap(),
            LinuxSyscallBuilder::default()
                .names(vec!["no_such_syscall_anywhere".to_owned()])
                .action(LinuxSeccompAction::ScmpActKillProcess)
                .build()
                .unwrap(),
        ])
        .build()
        .unwrap()
}

#[test]
fn profile_blocks_syscalls_with_errno_and_conditions() {
    require_root();
    let bundle = Bundle::new();
    let spec = with_seccomp(
        writable_root(bundle.spec(&[
            "sh",
            "-c",
            "mkdir /tmp/new; echo mkdir=$?; kill -0 $$; echo zero=$?; kill -CONT $$; echo cont=$?",
        ])),
        profile(),
    );

    let output = run("seccomp", spec);

    assert_eq!(output.stdout, "mkdir=1\nzero=1\ncont=0\n", "{output:?}");
    assert!(
        output.stderr.contains("Operation not permitted"),
        "{output:?}"
    );
    assert!(output.stderr.contains("Permission denied"), "{output:?}");
    assert!(!bundle.rootfs().join("tmp/new").exists());
}

#[test]
fn default_errno_applies_to_unlisted_syscalls() {
    require_root();
    let bundle = Bundle::new();
    // Everything is denied with ENOSYS except what busybox needs to run `mkdir`, so mkdir
    // itself gets the default errno.
    let allowed: Vec<String> = [
        "execve",
        "brk",
        "arch_prctl",
        "set_tid_address",
        "exit_group",
        "getuid",
        "geteuid",
        "write",
        "writev",
        "rt_sigaction",
        "rt_sigprocmask",
        "ioctl",
        "uname",
        "mmap",
        "munmap",
        "read",
        "close",
        "fstat",
        "newfstatat",
        "prlimit64",
        "getpid",
        "getrandom",
        "set_robust_list",
        "rseq",
        "mprotect",
        "umask",
    ]
    .iter()
    .map(|name| name.to_string())
    .collect();
    let seccomp = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActErrno)
        .default_errno_ret(libc::ENOSYS as u32)
        .syscalls(vec![LinuxSyscallBuilder::default()
            .names(allowed)
            .action(LinuxSeccompAction::ScmpActAllow)
            .build()
            .unwrap()])
        .build()
        .unwrap();
    let mut spec = with_seccomp(
        writable_root(bundle.spec(&["mkdir", "/tmp/denied"])),
        seccomp,
    );
    let mut process = spec.process().clone().unwrap();
    process.set_no_new_privileges(Some(true));
    spec.set_process(Some(process));

    let output = run("seccomp-default", spec);

    assert_ne!(output.code, 0, "{output:?}");
    assert!(
        output.stderr.contains("Function not implemented"),
        "{output:?}"
    );
    assert!(!bundle.rootfs().join("tmp/denied").exists());
}

#[test]
fn notify_action_is_rejected() {
    require_root();
    let bundle = Bundle::new();
    let seccomp = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActNotify)
        .build()
        .unwrap();
    let spec = with_seccomp(bundle.spec(&["true"]), seccomp);

    let error = Container::create(config("seccomp-notify", spec))
        .err()
        .unwrap();

    assert!(matches!(error, Error::InvalidSpec(_)), "{error}");
    assert!(error.to_string().contains("SCMP_ACT_NOTIFY"), "{error}");
}
