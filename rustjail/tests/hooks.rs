//! The OCI hooks of real containers: their order, namespaces, input and failures. Needs
//! root.

mod common;

use std::fs;
use std::path::Path;
use std::time::Instant;

use common::{config, require_root, writable_root, Bundle, Guard};
use oci_spec::runtime::{Hook, HookBuilder, HooksBuilder, Spec};
use rustjail::{Container, Error};

/// Returns a hook that runs `script` with the host's or the container's `/bin/sh`.
fn shell_hook(script: &str) -> Hook {
    HookBuilder::default()
        .path("/bin/sh")
        .args(vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()])
        .env(vec!["GREETING=hello hook".to_owned()])
        .build()
        .unwrap()
}

/// Returns a hook that appends its point, the hostname in its UTS namespace, and the
/// state's `status` to `log`.
fn logging_hook(point: &str, log: &Path) -> Hook {
    shell_hook(&format!(
        "state=$(cat); status=${{state#*\\\"status\\\":\\\"}}; \
         echo \"{point} $(hostname) ${{status%%\\\"*}} $GREETING\" >> {}",
        log.display()
    ))
}

fn with_hooks(mut spec: Spec, hooks: oci_spec::runtime::Hooks) -> Spec {
    spec.set_hooks(Some(hooks));
    spec
}

#[test]
#[allow(deprecated)]
fn hooks_run_in_order_with_state() {
    require_root();
    let bundle = Bundle::new();
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("hooks.log");
    let hooks = HooksBuilder::default()
        .create_runtime(vec![logging_hook("createRuntime", &log)])
        .prestart(vec![logging_hook("prestart", &log)])
        .create_container(vec![logging_hook("createContainer", &log)])
        .start_container(vec![shell_hook("cat > /tmp/start-state")])
        .poststart(vec![logging_hook("poststart", &log)])
        .poststop(vec![logging_hook("poststop", &log)])
        .build()
        .unwrap();
    let mut spec = with_hooks(writable_root(bundle.spec(&["true"])), hooks);
    spec.set_hostname(Some("hooked".to_owned()));
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let mut guard = Guard::create(config("hooks", spec)).unwrap();
    let id = guard.container.id().to_owned();

    let output = guard.run();
    guard.container.destroy().unwrap();

    assert_eq!(output.code, 0, "{output:?}");
    let lines: Vec<String> = fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        lines,
        [
            format!("createRuntime {host} creating hello hook"),
            format!("prestart {host} creating hello hook"),
            "createContainer hooked creating hello hook".to_owned(),
            format!("poststart {host} running hello hook"),
            format!("poststop {host} stopped hello hook"),
        ]
    );
    let start_state = fs::read_to_string(bundle.rootfs().join("tmp/start-state")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&start_state).unwrap();
    assert_eq!(state["id"], id.as_str());
    assert_eq!(state["status"], "created");
    assert_eq!(state["bundle"], bundle.directory.path().to_str().unwrap());
    assert!(state["pid"].as_i64().unwrap() > 0);
}

#[test]
#[allow(deprecated)]
fn failing_prestart_hook_fails_create() {
    require_root();
    let bundle = Bundle::new();
    let hooks = HooksBuilder::default()
        .prestart(vec![shell_hook("echo broken >&2; exit 3")])
        .build()
        .unwrap();
    let config = config("hook-fails", with_hooks(bundle.spec(&["true"]), hooks));
    let leaf = Path::new("/sys/fs/cgroup/memory")
        .join(&config.cgroup_parent)
        .join(&config.id);

    let error = Container::create(config).err().unwrap();

    assert!(matches!(error, Error::Hook { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("prestart hook /bin/sh"), "{message}");
    assert!(message.contains("status 3: broken"), "{message}");
    assert!(!leaf.exists(), "cgroup {} left behind", leaf.display());
}

#[test]
fn failing_create_container_hook_fails_create() {
    require_root();
    let bundle = Bundle::new();
    let hooks = HooksBuilder::default()
        .create_container(vec![shell_hook("exit 4")])
        .build()
        .unwrap();

    let error = Container::create(config(
        "hook-in-init",
        with_hooks(bundle.spec(&["true"]), hooks),
    ))
    .err()
    .unwrap();

    assert!(matches!(error, Error::Init { .. }), "{error}");
    assert!(
        error.to_string().contains("createContainer hook"),
        "{error}"
    );
}

#[test]
fn hook_past_timeout_is_killed() {
    require_root();
    let bundle = Bundle::new();
    let mut hook = shell_hook("exec sleep 30");
    hook.set_timeout(Some(1));
    let hooks = HooksBuilder::default()
        .create_runtime(vec![hook])
        .build()
        .unwrap();
    let started = Instant::now();

    let error = Container::create(config(
        "hook-timeout",
        with_hooks(bundle.spec(&["true"]), hooks),
    ))
    .err()
    .unwrap();

    assert!(error.to_string().contains("timed out after 1 s"), "{error}");
    assert!(started.elapsed().as_secs() < 10);
}
