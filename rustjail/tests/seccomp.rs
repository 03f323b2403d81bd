//! Seccomp profiles seen from inside a container. Needs root.

mod common;

use std::fs::File;
use std::io::{IoSliceMut, Read};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use common::{
    config, init_command, read_all, received, require_root, run, wait_child, writable_root, Bundle,
    Guard,
};
use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags, ScmpSyscall};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use oci_spec::runtime::{
    Arch, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompFilterFlag, LinuxSeccompOperator, LinuxSyscallBuilder, Spec,
};
use rustjail::{Container, Error};

/// How long the listener waits for a connection or a notification.
const LISTENER_TIMEOUT: Duration = Duration::from_secs(30);

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

/// Returns a profile that allows everything but `mkdir`, which it sends to a listener.
fn notify_on_mkdir(listener_path: Option<PathBuf>, metadata: Option<&str>) -> LinuxSeccomp {
    let mut builder = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![native_arch()])
        .syscalls(vec![LinuxSyscallBuilder::default()
            .names(vec!["mkdir".to_owned(), "mkdirat".to_owned()])
            .action(LinuxSeccompAction::ScmpActNotify)
            .build()
            .unwrap()]);
    if let Some(path) = listener_path {
        builder = builder.listener_path(path);
    }
    if let Some(metadata) = metadata {
        builder = builder.listener_metadata(metadata.to_owned());
    }
    builder.build().unwrap()
}

/// A seccomp agent: a unix socket in a temporary directory that receives container
/// process states with their notify fds.
struct Agent {
    directory: tempfile::TempDir,
    socket: UnixListener,
}

/// One connection of the runtime: the container process state and the notify fd.
struct Received {
    state: serde_json::Value,
    notify: OwnedFd,
}

impl Agent {
    fn new() -> Agent {
        let directory = tempfile::tempdir().unwrap();
        let socket = UnixListener::bind(directory.path().join("agent.sock")).unwrap();
        socket.set_nonblocking(true).unwrap();
        Agent { directory, socket }
    }

    fn path(&self) -> PathBuf {
        self.directory.path().join("agent.sock")
    }

    /// Accepts the next connection and reads the state and the fd sent with it.
    fn receive(&self) -> Received {
        wait_readable(self.socket.as_fd().as_raw_fd(), "a listener connection");
        let (stream, _) = self.socket.accept().unwrap();
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(LISTENER_TIMEOUT)).unwrap();

        let mut first = vec![0u8; 64 * 1024];
        let mut control = nix::cmsg_space!([RawFd; 1]);
        let (length, notify) = {
            let mut buffers = [IoSliceMut::new(&mut first)];
            let message = recvmsg::<()>(
                stream.as_raw_fd(),
                &mut buffers,
                Some(&mut control),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )
            .unwrap();
            let mut fds = Vec::new();
            for cmsg in message.cmsgs().unwrap() {
                if let ControlMessageOwned::ScmRights(received) = cmsg {
                    fds.extend(received);
                }
            }
            assert_eq!(fds.len(), 1, "exactly one fd comes with the state");
            // SAFETY: the kernel installed this fd in the test process with the message,
            // and nothing else owns it.
            (message.bytes, unsafe { OwnedFd::from_raw_fd(fds[0]) })
        };
        let mut payload = first[..length].to_vec();
        // The runtime closes the connection after one state.
        (&stream).read_to_end(&mut payload).unwrap();

        Received {
            state: serde_json::from_slice(&payload).unwrap(),
            notify,
        }
    }
}

/// Waits until `fd` is readable, at most [`LISTENER_TIMEOUT`].
fn wait_readable(fd: RawFd, description: &str) {
    // SAFETY: the caller's fd stays open for this call.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let mut fds = [PollFd::new(borrowed, PollFlags::POLLIN)];
    let timeout = PollTimeout::try_from(LISTENER_TIMEOUT.as_millis() as i32).unwrap();
    let ready = poll(&mut fds, timeout).unwrap();
    assert_eq!(ready, 1, "timed out waiting for {description}");
}

/// Receives the next notification on `notify`, checks that it is for mkdir, and responds
/// with `answer`.
fn answer_mkdir(notify: &OwnedFd, answer: impl FnOnce(u64) -> ScmpNotifResp) -> u32 {
    wait_readable(notify.as_raw_fd(), "a seccomp notification");
    let request = ScmpNotifReq::receive(notify.as_raw_fd()).unwrap();
    let mkdir = [
        ScmpSyscall::from_name("mkdir").unwrap(),
        ScmpSyscall::from_name("mkdirat").unwrap(),
    ];
    assert!(mkdir.contains(&request.data.syscall), "{request:?}");
    answer(request.id).respond(notify.as_raw_fd()).unwrap();
    request.pid
}

/// Runs an agent thread that receives one connection, responds to the first mkdir with
/// EDQUOT and to the second with success, and returns the state and the notifying pids.
fn spawn_agent(agent: Agent) -> JoinHandle<(serde_json::Value, Vec<u32>)> {
    std::thread::spawn(move || {
        let received = agent.receive();
        let denied = answer_mkdir(&received.notify, |id| {
            ScmpNotifResp::new_error(id, -libc::EDQUOT, ScmpNotifRespFlags::empty())
        });
        let faked = answer_mkdir(&received.notify, |id| {
            ScmpNotifResp::new_val(id, 0, ScmpNotifRespFlags::empty())
        });
        (received.state, vec![denied, faked])
    })
}

#[test]
fn notify_fd_reaches_listener_with_state() {
    require_root();
    let bundle = Bundle::new();
    let agent = Agent::new();
    let seccomp = notify_on_mkdir(Some(agent.path()), Some("agent-metadata"));
    let spec = with_seccomp(
        writable_root(bundle.spec(&[
            "sh",
            "-c",
            "mkdir /tmp/denied; echo denied=$?; mkdir /tmp/faked; echo faked=$?",
        ])),
        seccomp,
    );
    let agent = spawn_agent(agent);

    let mut guard = Guard::create(config("seccomp-notify", spec)).unwrap();
    let output = guard.run();
    let (state, pids) = agent.join().unwrap();

    assert_eq!(output.stdout, "denied=1\nfaked=0\n", "{output:?}");
    assert!(
        output.stderr.to_lowercase().contains("quota exceeded"),
        "{output:?}"
    );
    assert!(!bundle.rootfs().join("tmp/denied").exists());
    assert!(
        !bundle.rootfs().join("tmp/faked").exists(),
        "the agent faked success"
    );
    let pid = guard.container.pid();
    assert_eq!(state["ociVersion"], "1.2.0", "{state}");
    assert_eq!(state["fds"], serde_json::json!(["seccompFd"]), "{state}");
    assert_eq!(state["pid"], pid, "{state}");
    assert_eq!(state["metadata"], "agent-metadata", "{state}");
    assert_eq!(state["state"]["id"], guard.container.id(), "{state}");
    assert_eq!(state["state"]["status"], "created", "{state}");
    assert_eq!(state["state"]["pid"], pid, "{state}");
    assert!(
        pids.iter().all(|notifying| *notifying as i32 != pid),
        "mkdir runs in a child of the shell, not in pid {pid}: {pids:?}"
    );
}

#[test]
fn exec_process_sends_own_notify_fd() {
    require_root();
    let bundle = Bundle::new();
    let agent = Agent::new();
    let seccomp = notify_on_mkdir(Some(agent.path()), None);
    let spec = with_seccomp(writable_root(bundle.spec(&["sleep", "60"])), seccomp);
    let (sender, receiver) = mpsc::channel();
    let agent_thread = std::thread::spawn(move || {
        // The container's own process connects first and calls no mkdir.
        let container = agent.receive();
        let exec = agent.receive();
        let denied = answer_mkdir(&exec.notify, |id| {
            ScmpNotifResp::new_error(id, -libc::EDQUOT, ScmpNotifRespFlags::empty())
        });
        sender.send((container.state, exec.state, denied)).unwrap();
    });

    let mut guard = Guard::create(config("seccomp-notify-exec", spec.clone())).unwrap();
    guard.container.start().unwrap();
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(vec!["mkdir".to_owned(), "/tmp/exec".to_owned()]));
    let mut exec = guard.container.exec(&process, &init_command()).unwrap();
    let stderr = read_all(exec.take_stderr().unwrap());
    drop(exec.take_stdin());
    let code = wait_child(exec.pid());
    let stderr = received(&stderr);
    let (container_state, exec_state, denied_pid) =
        receiver.recv_timeout(LISTENER_TIMEOUT).unwrap();
    agent_thread.join().unwrap();

    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.to_lowercase().contains("quota exceeded"), "{stderr}");
    assert!(!bundle.rootfs().join("tmp/exec").exists());
    assert_eq!(
        container_state["state"]["status"], "created",
        "{container_state}"
    );
    assert_eq!(exec_state["pid"], exec.pid(), "{exec_state}");
    assert_eq!(denied_pid as i32, exec.pid());
    assert_eq!(exec_state["state"]["status"], "running", "{exec_state}");
    assert_eq!(
        exec_state["state"]["pid"],
        guard.container.pid(),
        "{exec_state}"
    );
    assert!(exec_state.get("metadata").is_none(), "{exec_state}");
}

#[test]
fn missing_listener_fails_start() {
    require_root();
    let bundle = Bundle::new();
    let directory = tempfile::tempdir().unwrap();
    let path = directory.path().join("nobody-listens.sock");
    let spec = with_seccomp(
        bundle.spec(&["true"]),
        notify_on_mkdir(Some(path.clone()), None),
    );

    let mut guard = Guard::create(config("seccomp-no-listener", spec)).unwrap();
    let error = guard.container.start().unwrap_err();

    assert!(matches!(error, Error::SeccompListener { .. }), "{error}");
    assert!(
        error.to_string().contains(&path.display().to_string()),
        "{error}"
    );
}

#[test]
fn notify_without_listener_path_is_rejected() {
    require_root();
    let bundle = Bundle::new();
    let spec = with_seccomp(bundle.spec(&["true"]), notify_on_mkdir(None, None));

    let error = Container::create(config("seccomp-notify-no-path", spec))
        .err()
        .unwrap();

    assert!(matches!(error, Error::InvalidSpec(_)), "{error}");
    assert!(error.to_string().contains("listenerPath"), "{error}");
}

#[test]
fn notify_as_default_action_is_rejected() {
    require_root();
    let bundle = Bundle::new();
    let seccomp = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActNotify)
        .listener_path(bundle.directory.path().join("agent.sock"))
        .build()
        .unwrap();
    let spec = with_seccomp(bundle.spec(&["true"]), seccomp);

    let error = Container::create(config("seccomp-notify-default", spec))
        .err()
        .unwrap();

    assert!(matches!(error, Error::InvalidSpec(_)), "{error}");
    assert!(error.to_string().contains("SCMP_ACT_NOTIFY"), "{error}");
}

#[test]
fn listener_metadata_without_path_is_rejected() {
    require_root();
    let bundle = Bundle::new();
    let seccomp = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .listener_metadata("orphan".to_owned())
        .build()
        .unwrap();
    let spec = with_seccomp(bundle.spec(&["true"]), seccomp);

    let error = Container::create(config("seccomp-metadata", spec))
        .err()
        .unwrap();

    assert!(matches!(error, Error::InvalidSpec(_)), "{error}");
    assert!(error.to_string().contains("listenerMetadata"), "{error}");
}

/// Returns a profile that denies mkdir with EPERM and sets `flags`.
fn deny_mkdir_with_flags(flags: Vec<LinuxSeccompFilterFlag>) -> LinuxSeccomp {
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![native_arch()])
        .flags(flags)
        .syscalls(vec![LinuxSyscallBuilder::default()
            .names(vec!["mkdir".to_owned(), "mkdirat".to_owned()])
            .action(LinuxSeccompAction::ScmpActErrno)
            .build()
            .unwrap()])
        .build()
        .unwrap()
}

/// Reads `field` from /proc/self/status of a container with `seccomp`.
fn status_field(bundle: &Bundle, seccomp: LinuxSeccomp, field: &str) -> String {
    let script = format!("grep '^{field}:' /proc/self/status | cut -f2");
    let output = run(
        "seccomp-status",
        with_seccomp(bundle.spec(&["sh", "-c", &script]), seccomp),
    );
    assert_eq!(output.code, 0, "{output:?}");
    output.stdout.trim().to_owned()
}

#[test]
fn filter_flags_load_with_filter() {
    require_root();
    let bundle = Bundle::new();
    let flags = vec![
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync,
        LinuxSeccompFilterFlag::SeccompFilterFlagLog,
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow,
    ];

    let mode = status_field(&bundle, deny_mkdir_with_flags(flags.clone()), "Seccomp");
    let with_flag = status_field(
        &bundle,
        deny_mkdir_with_flags(flags),
        "Speculation_Store_Bypass",
    );
    let without_flag = status_field(
        &bundle,
        deny_mkdir_with_flags(Vec::new()),
        "Speculation_Store_Bypass",
    );

    assert_eq!(mode, "2", "the filter is loaded");
    // With spec_store_bypass_disable=seccomp (the default of older kernels) a filter
    // forces the mitigation unless SPEC_ALLOW is set. Under the prctl default both read
    // the same.
    assert_ne!(
        with_flag, "thread force mitigated",
        "without flag: {without_flag}"
    );
    if !std::fs::read_to_string("/sys/devices/system/cpu/vulnerabilities/spec_store_bypass")
        .unwrap_or_default()
        .contains("seccomp")
    {
        assert_eq!(with_flag, without_flag);
    }
}

/// Returns every kernel log record written after `kmsg` was opened at its end that
/// contains `needle`, waiting at most [`LISTENER_TIMEOUT`] for the first one.
fn kernel_records(kmsg: &File, needle: &str) -> Vec<String> {
    let deadline = std::time::Instant::now() + LISTENER_TIMEOUT;
    let mut found = Vec::new();
    let mut buffer = vec![0u8; 8192];
    while found.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no kernel log record with {needle:?} in time"
        );
        wait_readable(kmsg.as_raw_fd(), "a kernel log record");
        loop {
            match (&*kmsg).read(&mut buffer) {
                Ok(length) => {
                    let record = String::from_utf8_lossy(&buffer[..length]).into_owned();
                    if record.contains(needle) {
                        found.push(record);
                    }
                }
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => break,
                // A record overwritten before it was read; the next read goes on.
                Err(error) if error.raw_os_error() == Some(libc::EPIPE) => continue,
                Err(error) => panic!("read /dev/kmsg: {error}"),
            }
        }
    }
    found
}

#[test]
fn log_flag_writes_audit_record() {
    require_root();
    let bundle = Bundle::new();
    let kmsg = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .unwrap();
    // Reading starts at the end, so only records of this test's containers count.
    nix::unistd::lseek(kmsg.as_fd(), 0, nix::unistd::Whence::SeekEnd).unwrap();
    let mkdir = ["sh", "-c", "exec mkdir /tmp/logged"];

    let mut silent = Guard::create(config(
        "seccomp-unlogged",
        with_seccomp(
            writable_root(bundle.spec(&mkdir)),
            deny_mkdir_with_flags(Vec::new()),
        ),
    ))
    .unwrap();
    let silent_output = silent.run();
    let mut logged = Guard::create(config(
        "seccomp-logged",
        with_seccomp(
            writable_root(bundle.spec(&mkdir)),
            deny_mkdir_with_flags(vec![LinuxSeccompFilterFlag::SeccompFilterFlagLog]),
        ),
    ))
    .unwrap();
    let logged_output = logged.run();
    // kauditd writes records in order, so once the logged container's record is there,
    // one for the first container would be there too.
    let records = kernel_records(&kmsg, "type=1326");

    assert_ne!(silent_output.code, 0, "{silent_output:?}");
    assert_ne!(logged_output.code, 0, "{logged_output:?}");
    let with_pid = |pid: i32| {
        records
            .iter()
            .filter(|record| record.contains(&format!(" pid={pid} ")))
            .count()
    };
    assert!(with_pid(logged.container.pid()) >= 1, "{records:?}");
    assert_eq!(with_pid(silent.container.pid()), 0, "{records:?}");
}

#[test]
fn wait_killable_recv_needs_libseccomp_2_6() {
    require_root();
    let bundle = Bundle::new();
    let seccomp = deny_mkdir_with_flags(vec![
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv,
    ]);
    let spec = with_seccomp(bundle.spec(&["true"]), seccomp);
    let version = libseccomp::ScmpVersion::current().unwrap();

    let result = Guard::create(config("seccomp-waitkill", spec));

    if (version.major, version.minor) >= (2, 6) {
        let mut guard = result.unwrap();
        assert_eq!(guard.run().code, 0);
    } else {
        let error = result.err().unwrap();
        assert!(error.is_unsupported(), "{error}");
        assert!(
            error
                .to_string()
                .contains("SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"),
            "{error}"
        );
    }
}
