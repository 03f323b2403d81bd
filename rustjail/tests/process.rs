//! Process attributes seen from inside a container: capabilities, user, OOM score,
//! umask, rlimits and the default environment. Needs root.

mod common;

use std::fmt;
use std::fs;
use std::sync::{Arc, Mutex};

use common::{config, require_root, run, Bundle, Guard};
use oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilitiesBuilder, PosixRlimitBuilder, PosixRlimitType,
    Process, Spec,
};
use rustjail::{Container, Error};

fn edit_process(spec: &mut Spec, edit: impl FnOnce(&mut Process)) {
    let mut process = spec.process().clone().unwrap();
    edit(&mut process);
    spec.set_process(Some(process));
}

/// Returns the value of `field` (such as `CapEff`) in a /proc/self/status dump.
fn status_field(status: &str, field: &str) -> u64 {
    let line = status
        .lines()
        .find(|line| line.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} missing from {status}"));
    u64::from_str_radix(line.split_whitespace().nth(1).unwrap(), 16).unwrap()
}

fn mask(capabilities: &[u32]) -> u64 {
    capabilities.iter().map(|bit| 1u64 << bit).sum()
}

const CAP_KILL: u32 = 5;
const CAP_NET_BIND_SERVICE: u32 = 10;
const CAP_AUDIT_WRITE: u32 = 29;

#[test]
fn root_gets_only_spec_capabilities() {
    require_root();
    let bundle = Bundle::new();

    let output = run("caps-root", bundle.spec(&["cat", "/proc/self/status"]));

    assert_eq!(output.code, 0, "{output:?}");
    let expected = mask(&[CAP_KILL, CAP_NET_BIND_SERVICE, CAP_AUDIT_WRITE]);
    for field in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(status_field(&output.stdout, field), expected, "{field}");
    }
    assert_eq!(status_field(&output.stdout, "CapInh"), 0);
}

#[test]
fn missing_capabilities_mean_none() {
    require_root();
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["cat", "/proc/self/status"]);
    edit_process(&mut spec, |process| {
        process.set_capabilities(None);
    });

    let output = run("caps-none", spec);

    for field in ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"] {
        assert_eq!(status_field(&output.stdout, field), 0, "{field}");
    }
}

#[test]
fn ambient_capability_survives_setuid() {
    require_root();
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["cat", "/proc/self/status"]);
    let set = || -> Capabilities { [Capability::NetBindService].into_iter().collect() };
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(set())
        .effective(set())
        .permitted(set())
        .inheritable(set())
        .ambient(set())
        .build()
        .unwrap();
    edit_process(&mut spec, |process| {
        process.set_capabilities(Some(capabilities));
        let mut user = process.user().clone();
        user.set_uid(1000);
        user.set_gid(1000);
        process.set_user(user);
    });

    let output = run("caps-ambient", spec);

    assert_eq!(output.code, 0, "{output:?}");
    let expected = mask(&[CAP_NET_BIND_SERVICE]);
    assert_eq!(status_field(&output.stdout, "CapAmb"), expected);
    assert_eq!(status_field(&output.stdout, "CapEff"), expected);
    assert_eq!(status_field(&output.stdout, "CapBnd"), expected);
}

#[test]
fn oom_score_umask_and_rlimits_apply() {
    require_root();
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&[
        "sh",
        "-c",
        "cat /proc/self/oom_score_adj; umask; ulimit -n; ulimit -c",
    ]);
    edit_process(&mut spec, |process| {
        process.set_oom_score_adj(Some(512));
        let mut user = process.user().clone();
        user.set_umask(Some(0o077));
        process.set_user(user);
        process.set_rlimits(Some(vec![
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitNofile)
                .soft(512u64)
                .hard(600u64)
                .build()
                .unwrap(),
            PosixRlimitBuilder::default()
                .typ(PosixRlimitType::RlimitCore)
                .soft(0u64)
                .hard(0u64)
                .build()
                .unwrap(),
        ]));
    });

    let output = run("oom-umask", spec);

    assert_eq!(output.code, 0, "{output:?}");
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(lines, ["512", "0077", "512", "0"]);
}

#[test]
fn username_resolves_in_container_files() {
    require_root();
    let bundle = Bundle::new();
    let etc = bundle.rootfs().join("etc");
    fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1001::/home/alice:/bin/sh\n",
    )
    .unwrap();
    fs::write(
        etc.join("group"),
        "root:x:0:\nalice:x:1001:\nwheel:x:10:bob,alice\nstaff:x:50:\n",
    )
    .unwrap();
    let mut spec = bundle.spec(&["sh", "-c", "id -u; id -g; id -G; echo $HOME"]);
    edit_process(&mut spec, |process| {
        let mut user = process.user().clone();
        user.set_username(Some("alice".to_owned()));
        process.set_user(user);
    });

    let output = run("username", spec);

    assert_eq!(output.code, 0, "{output:?}");
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(lines[0], "1000");
    assert_eq!(lines[1], "1001");
    assert_eq!(lines[2].split(' ').collect::<Vec<_>>(), ["1001", "10"]);
    assert_eq!(lines[3], "/home/alice");
}

#[test]
fn username_with_unknown_name_fails_create() {
    require_root();
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["true"]);
    edit_process(&mut spec, |process| {
        let mut user = process.user().clone();
        user.set_username(Some("nobody-here".to_owned()));
        process.set_user(user);
    });

    let error = Container::create(config("bad-username", spec))
        .err()
        .unwrap();

    assert!(matches!(error, Error::InvalidSpec(_)), "{error}");
    assert!(error.to_string().contains("nobody-here"), "{error}");
}

#[test]
fn path_and_home_default_when_missing() {
    require_root();
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["sh", "-c", "echo $PATH; echo $HOME"]);
    edit_process(&mut spec, |process| {
        process.set_env(Some(vec!["TERM=xterm".to_owned()]));
    });

    let output = run("default-env", spec);

    assert_eq!(
        output.stdout, "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n/\n",
        "{output:?}"
    );
}

#[test]
fn cwd_through_proc_fd_is_rejected() {
    require_root();
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["pwd"]);
    edit_process(&mut spec, |process| {
        process.set_cwd("/proc/self/fd/7".into());
    });

    let error = Container::create(config("cwd-proc-fd", spec))
        .err()
        .unwrap();

    assert!(matches!(error, Error::InvalidSpec(_)), "{error}");
    assert!(error.to_string().contains("/proc/self/fd/7"), "{error}");
}

#[test]
fn no_new_privileges_shows_in_status() {
    require_root();
    let bundle = Bundle::new();
    let spec_with = |no_new_privileges: bool| {
        let mut spec = bundle.spec(&["cat", "/proc/self/status"]);
        edit_process(&mut spec, |process| {
            process.set_no_new_privileges(Some(no_new_privileges));
        });
        spec
    };

    let set = run("nnp-set", spec_with(true));
    let unset = run("nnp-unset", spec_with(false));

    assert_eq!(status_field(&set.stdout, "NoNewPrivs"), 1, "{set:?}");
    assert_eq!(status_field(&unset.stdout, "NoNewPrivs"), 0, "{unset:?}");
}

/// A slog drain that keeps the message and key-value text of every warning.
#[derive(Clone, Default)]
struct Warnings(Arc<Mutex<Vec<String>>>);

impl slog::Drain for Warnings {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        if record.level() == slog::Level::Warning {
            let mut text = TextSerializer(record.msg().to_string());
            let _ = slog::KV::serialize(&record.kv(), record, &mut text);
            self.0.lock().unwrap().push(text.0);
        }
        Ok(())
    }
}

struct TextSerializer(String);

impl slog::Serializer for TextSerializer {
    fn emit_arguments(&mut self, key: slog::Key, value: &fmt::Arguments) -> slog::Result {
        self.0.push_str(&format!(" {key}={value}"));
        Ok(())
    }
}

#[test]
fn apparmor_profile_without_apparmor_warns_and_runs() {
    require_root();
    let apparmor = fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|text| text.trim() == "Y");
    if apparmor {
        // The profile would be applied, and a test cannot load one into the kernel.
        eprintln!("skipped: AppArmor is enabled on this machine");
        return;
    }
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["echo", "ran"]);
    edit_process(&mut spec, |process| {
        process.set_apparmor_profile(Some("berth-test-profile".to_owned()));
    });
    let logged = Warnings::default();
    let mut config = config("apparmor", spec);
    config.logger = slog::Logger::root(slog::Fuse(logged.clone()), slog::o!());

    let mut guard = Guard::create(config).unwrap();
    let warnings = guard.container.warnings().to_vec();
    let output = guard.run();

    assert_eq!(output.stdout, "ran\n", "{output:?}");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("process.apparmorProfile"),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("berth-test-profile"), "{warnings:?}");
    let logged = logged.0.lock().unwrap();
    assert!(
        logged
            .iter()
            .any(|line| line.contains("berth-test-profile")),
        "{logged:?}"
    );
}
