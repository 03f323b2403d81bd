//! A caller with a SIGCHLD reaper that calls `waitpid(-1)`, as the agent has, must not
//! take the exit status of a hook process. Needs root. Alone in its test binary, because
//! the reaper thread reaps every other child of the process.

mod common;

use std::sync::mpsc;
use std::time::Duration;

use common::{config, require_root, Bundle};
use nix::sys::wait::waitpid;
use nix::unistd::Pid;
use oci_spec::runtime::{HookBuilder, HooksBuilder};
use rustjail::Container;

#[test]
fn reaper_waiting_for_any_child_skips_hooks() {
    require_root();
    let bundle = Bundle::new();
    let hook = HookBuilder::default()
        .path("/bin/sh")
        .args(vec!["sh".to_owned(), "-c".to_owned(), "exit 0".to_owned()])
        .build()
        .unwrap();
    let mut spec = bundle.spec(&["sleep", "60"]);
    spec.set_hooks(Some(
        HooksBuilder::default()
            .create_runtime(vec![hook.clone(), hook.clone(), hook])
            .build()
            .unwrap(),
    ));
    // A child that exists from the start, so the reaper blocks instead of failing with
    // ECHILD before the first hook. The reaper thread reaps it.
    #[allow(clippy::zombie_processes)]
    let mut helper = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let (sender, reaped) = mpsc::channel();
    std::thread::spawn(move || loop {
        match waitpid(Pid::from_raw(-1), None) {
            Ok(status) => {
                let _ = sender.send(status.pid().map(Pid::as_raw));
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => break,
        }
    });

    let created = Container::create(config("reaper", spec));
    helper.kill().unwrap();
    let mut container = created.unwrap();
    container.destroy().unwrap();
    let mut pids: Vec<i32> = reaped
        .iter()
        .take(2)
        .map(|pid| pid.expect("an exited child"))
        .collect();
    pids.sort();

    let mut expected = vec![helper.id() as i32, container.pid()];
    expected.sort();
    assert_eq!(pids, expected, "the reaper took a hook process");
    assert!(
        reaped.recv_timeout(Duration::from_secs(1)).is_err(),
        "the reaper took a third child"
    );
}
