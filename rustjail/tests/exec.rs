//! Processes started in a running container with `Container::exec`, and the terminal of
//! a container process. Needs root.

mod common;

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;

use common::{config, init_command, read_all, received, require_root, wait_child, Bundle, Guard};
use oci_spec::runtime::{Process, Spec};
use rustjail::{resize_terminal, Error};

/// Returns the container's process with `args` instead of its own.
fn process(spec: &Spec, args: &[&str]) -> Process {
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(args.iter().map(|arg| arg.to_string()).collect()));
    process
}

/// Creates and starts a container that sleeps, for processes to exec into.
fn sleeping(test: &str, bundle: &Bundle) -> (Guard, Spec) {
    let mut spec = bundle.spec(&["sleep", "60"]);
    spec.set_hostname(Some("exec-host".to_owned()));
    let mut guard = Guard::create(config(test, spec.clone())).unwrap();
    guard.container.start().unwrap();
    (guard, spec)
}

#[test]
fn exec_joins_namespaces_cgroup_and_user() {
    require_root();
    let bundle = Bundle::new();
    let (guard, spec) = sleeping("exec-id", &bundle);
    let mut process = process(
        &spec,
        &[
            "sh",
            "-c",
            "id -u; hostname; echo $$; cat /proc/self/cgroup",
        ],
    );
    let mut user = process.user().clone();
    user.set_uid(1000);
    user.set_gid(1000);
    process.set_user(user);

    let mut exec = guard.container.exec(&process, &init_command()).unwrap();
    let stdout = read_all(exec.take_stdout().unwrap());
    drop(exec.take_stdin());
    let code = wait_child(exec.pid());
    let stdout = received(&stdout);

    assert_eq!(code, 0, "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "1000");
    assert_eq!(lines[1], "exec-host");
    assert_ne!(lines[2], "1", "exec process is not the container's pid 1");
    let cgroup = guard.container.cgroup().paths()[0].clone();
    let relative = cgroup
        .components()
        .rev()
        .take(2)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect::<std::path::PathBuf>();
    assert!(
        stdout.contains(&format!(":/{}\n", relative.display())),
        "{stdout} lacks cgroup {}",
        relative.display()
    );
}

#[test]
fn exec_leaks_no_caller_fd() {
    require_root();
    let bundle = Bundle::new();
    let (guard, spec) = sleeping("exec-fds", &bundle);
    // Opened without O_CLOEXEC, so only the launcher can keep it out of the container.
    let leaky = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();

    let mut exec = guard
        .container
        .exec(
            &process(&spec, &["ls", "-l", "/proc/self/fd"]),
            &init_command(),
        )
        .unwrap();
    let stdout = read_all(exec.take_stdout().unwrap());
    drop(exec.take_stdin());
    wait_child(exec.pid());
    let stdout = received(&stdout);
    drop(leaky);

    let open: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.split_once(" -> "))
        .filter(|(_, target)| !(target.starts_with("/proc/") && target.ends_with("/fd")))
        .filter_map(|(entry, _)| entry.split_whitespace().last())
        .collect();
    assert_eq!(open, ["0", "1", "2"], "{stdout}");
}

#[test]
fn exec_rejects_cwd_through_proc_fd() {
    require_root();
    let bundle = Bundle::new();
    let (guard, spec) = sleeping("exec-cwd", &bundle);
    let mut process = process(&spec, &["pwd"]);
    process.set_cwd("/proc/1/fd/3".into());

    let error = guard.container.exec(&process, &init_command()).unwrap_err();

    assert!(matches!(error, Error::InvalidSpec(_)), "{error}");
    assert!(error.to_string().contains("/proc/1/fd/3"), "{error}");
}

#[test]
fn exec_with_missing_executable_fails() {
    require_root();
    let bundle = Bundle::new();
    let (guard, spec) = sleeping("exec-missing", &bundle);

    let error = guard
        .container
        .exec(&process(&spec, &["no-such-tool"]), &init_command())
        .unwrap_err();

    assert!(matches!(error, Error::ExecutableNotFound { .. }), "{error}");
}

/// Reads a terminal master until the slave side is gone, which Linux reports as EIO.
fn read_terminal(master: std::os::fd::OwnedFd) -> std::sync::mpsc::Receiver<String> {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut file = File::from(master);
        let mut text = Vec::new();
        let mut buffer = [0u8; 1024];
        while let Ok(len) = file.read(&mut buffer) {
            if len == 0 {
                break;
            }
            text.extend_from_slice(&buffer[..len]);
        }
        let _ = sender.send(String::from_utf8_lossy(&text).into_owned());
    });
    receiver
}

#[test]
fn terminal_is_controlling_and_resizable() {
    require_root();
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["sh", "-c", "tty; stty size"]);
    let mut process = spec.process().clone().unwrap();
    process.set_terminal(Some(true));
    spec.set_process(Some(process));
    let mut guard = Guard::create(config("terminal", spec)).unwrap();
    let master = guard.container.take_terminal().expect("terminal master");

    resize_terminal(master.as_fd(), 33, 111).unwrap();
    let output = read_terminal(master);
    guard.container.start().unwrap();
    let code = guard.wait();
    let output = received(&output);

    assert_eq!(code, 0, "{output}");
    let lines: Vec<&str> = output.lines().map(str::trim_end).collect();
    assert_eq!(lines[0], "/dev/pts/0", "{output:?}");
    assert_eq!(lines[1], "33 111", "{output:?}");
}

#[test]
fn exec_gets_its_own_terminal() {
    require_root();
    let bundle = Bundle::new();
    let (guard, spec) = sleeping("exec-terminal", &bundle);
    let mut process = process(&spec, &["sh", "-c", "tty; stty size"]);
    process.set_terminal(Some(true));

    let mut exec = guard.container.exec(&process, &init_command()).unwrap();
    let master = exec.take_terminal().expect("terminal master");
    resize_terminal(master.as_fd(), 10, 20).unwrap();
    let output = read_terminal(master);
    let code = wait_child(exec.pid());
    let output = received(&output);

    assert_eq!(code, 0, "{output}");
    assert!(output.starts_with("/dev/pts/"), "{output:?}");
}
