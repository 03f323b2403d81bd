//! User and time namespaces and the execution domain: created, joined by path, entered
//! by exec, and observed from inside the container. Needs root.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::user_namespace::{id_mapping, map_bundle, with_user_namespace, HOST_BASE, RANGE};
use common::{
    config, init_command, read_all, received, require_root, run, wait_child, writable_root, Bundle,
    Guard,
};
use oci_spec::runtime::{
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPersonalityBuilder, LinuxPersonalityDomain,
    LinuxTimeOffset, Process, Spec,
};
use rustjail::Container;

/// Adds a namespace of `kind`, new or joined at `path`, replacing one of that kind.
fn set_namespace(spec: &mut Spec, kind: LinuxNamespaceType, path: Option<PathBuf>) {
    let mut linux = spec.linux().clone().unwrap();
    let mut namespaces = linux.namespaces().clone().unwrap_or_default();
    namespaces.retain(|namespace| namespace.typ() != kind);
    let mut builder = LinuxNamespaceBuilder::default().typ(kind);
    if let Some(path) = path {
        builder = builder.path(path);
    }
    namespaces.push(builder.build().unwrap());
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));
}

fn process(spec: &Spec, args: &[&str]) -> Process {
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(args.iter().map(|arg| arg.to_string()).collect()));
    process
}

/// Runs `args` in the running `container` and returns its stdout and exit code.
fn exec(container: &Container, spec: &Spec, args: &[&str]) -> (String, i32) {
    let mut exec = container
        .exec(&process(spec, args), &init_command())
        .unwrap();
    let stdout = read_all(exec.take_stdout().unwrap());
    drop(exec.take_stdin());
    let code = wait_child(exec.pid());
    (received(&stdout), code)
}

#[test]
fn user_namespace_maps_container_root_to_host_range() {
    require_root();
    let bundle = Bundle::new();
    map_bundle(&bundle);
    let spec = writable_root(with_user_namespace(bundle.spec(&[
        "sh",
        "-c",
        "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; \
         grep CapEff /proc/self/status; touch /tmp/made-inside; hostname",
    ])));

    let output = run("userns", spec);

    assert_eq!(output.code, 0, "{output:?}");
    let lines: Vec<String> = output
        .stdout
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(lines[0], "0");
    assert_eq!(lines[1], "0");
    assert_eq!(lines[2], format!("0 {HOST_BASE} {RANGE}"));
    assert_eq!(lines[3], format!("0 {HOST_BASE} {RANGE}"));
    assert_ne!(
        lines[4], "CapEff: 0000000000000000",
        "root of the namespace keeps its capabilities"
    );
    let created = fs::metadata(bundle.rootfs().join("tmp/made-inside")).unwrap();
    assert_eq!(
        (created.uid(), created.gid()),
        (HOST_BASE, HOST_BASE),
        "a file made by the container's root belongs to the mapped host IDs"
    );
}

#[test]
fn exec_and_second_container_join_user_namespace() {
    require_root();
    let bundle = Bundle::new();
    map_bundle(&bundle);
    let first_spec = with_user_namespace(bundle.spec(&["sleep", "60"]));
    let mut first = Guard::create(config("userns-first", first_spec.clone())).unwrap();
    first.container.start().unwrap();
    let first_pid = first.container.pid();

    let (exec_stdout, exec_code) = exec(
        &first.container,
        &first_spec,
        &[
            "sh",
            "-c",
            "id -u; cat /proc/self/uid_map; readlink /proc/self/ns/user",
        ],
    );

    let own_namespace = fs::read_link(format!("/proc/{first_pid}/ns/user")).unwrap();
    assert_eq!(exec_code, 0, "{exec_stdout}");
    let lines: Vec<&str> = exec_stdout.lines().collect();
    assert_eq!(lines[0], "0");
    assert_eq!(
        lines[1].split_whitespace().collect::<Vec<_>>(),
        ["0", &HOST_BASE.to_string(), &RANGE.to_string()]
    );
    assert_eq!(Path::new(lines[2]), own_namespace);

    // A second container joins the first one's user, pid and network namespaces by path
    // and creates its own mount, ipc and uts namespaces, which then belong to that user
    // namespace.
    let mut second_spec = bundle.spec(&["sh", "-c", "readlink /proc/self/ns/user; id -u"]);
    for (kind, name) in [
        (LinuxNamespaceType::User, "user"),
        (LinuxNamespaceType::Pid, "pid"),
        (LinuxNamespaceType::Network, "net"),
    ] {
        let path = PathBuf::from(format!("/proc/{first_pid}/ns/{name}"));
        set_namespace(&mut second_spec, kind, Some(path));
    }
    let second = run("userns-second", second_spec);

    assert_eq!(second.code, 0, "{second:?}");
    let lines: Vec<&str> = second.stdout.lines().collect();
    assert_eq!(Path::new(lines[0]), own_namespace);
    assert_eq!(lines[1], "0");
}

#[test]
fn bad_id_mappings_are_rejected() {
    require_root();
    let bundle = Bundle::new();
    let mut no_root = with_user_namespace(bundle.spec(&["true"]));
    let mut linux = no_root.linux().clone().unwrap();
    linux.set_uid_mappings(Some(vec![id_mapping(1, HOST_BASE, 10)]));
    no_root.set_linux(Some(linux));
    let mut no_namespace = bundle.spec(&["true"]);
    let mut linux = no_namespace.linux().clone().unwrap();
    linux.set_uid_mappings(Some(vec![id_mapping(0, HOST_BASE, 10)]));
    no_namespace.set_linux(Some(linux));

    for (spec, expected) in [
        (no_root, "does not map ID 0"),
        (no_namespace, "the spec has no user namespace"),
    ] {
        let config = config("userns-bad", spec);
        let cgroup = Path::new("/sys/fs/cgroup/pids").join(&config.cgroup_parent);

        let error = Container::create(config).err().expect("create fails");

        assert!(error.is_invalid_input(), "{error}");
        assert!(error.to_string().contains(expected), "{error}");
        assert!(
            !cgroup.exists(),
            "no cgroup is left at {}",
            cgroup.display()
        );
    }
}

#[test]
fn time_namespace_offsets_boot_clock() {
    require_root();
    let bundle = Bundle::new();
    let offset_seconds: i64 = 10_000_000;
    let mut spec = bundle.spec(&["sleep", "60"]);
    set_namespace(&mut spec, LinuxNamespaceType::Time, None);
    let offset: LinuxTimeOffset = serde_json::from_value(serde_json::json!({
        "secs": offset_seconds,
        "nanosecs": 0
    }))
    .unwrap();
    let mut linux = spec.linux().clone().unwrap();
    linux.set_time_offsets(Some(
        [
            ("boottime".to_owned(), offset.clone()),
            ("monotonic".to_owned(), offset),
        ]
        .into(),
    ));
    spec.set_linux(Some(linux));
    let mut guard = Guard::create(config("timens", spec.clone())).unwrap();
    guard.container.start().unwrap();

    let (stdout, code) = exec(&guard.container, &spec, &["cat", "/proc/uptime"]);
    let host_uptime = fs::read_to_string("/proc/uptime").unwrap();

    assert_eq!(code, 0, "{stdout}");
    let seconds = |text: &str| -> f64 { text.split_whitespace().next().unwrap().parse().unwrap() };
    let shift = seconds(&stdout) - seconds(&host_uptime);
    assert!(
        (offset_seconds as f64 - 60.0..=offset_seconds as f64 + 1.0).contains(&shift),
        "uptime inside {stdout:?}, on the host {host_uptime:?}"
    );
    let init_namespace = fs::read_link(format!("/proc/{}/ns/time", guard.container.pid())).unwrap();
    assert_ne!(init_namespace, fs::read_link("/proc/self/ns/time").unwrap());
}

#[test]
fn time_offsets_without_time_namespace_are_rejected() {
    require_root();
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["true"]);
    let offset: LinuxTimeOffset = serde_json::from_value(serde_json::json!({"secs": 5})).unwrap();
    let mut linux = spec.linux().clone().unwrap();
    linux.set_time_offsets(Some([("boottime".to_owned(), offset)].into()));
    spec.set_linux(Some(linux));

    let error = Container::create(config("timens-bad", spec))
        .err()
        .expect("create fails");

    assert!(error.is_invalid_input(), "{error}");
    assert!(error.to_string().contains("linux.timeOffsets"), "{error}");
}

#[test]
fn linux32_personality_applies_to_exec_too() {
    require_root();
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["sh", "-c", "uname -m; sleep 60"]);
    let mut linux = spec.linux().clone().unwrap();
    linux.set_personality(Some(
        LinuxPersonalityBuilder::default()
            .domain(LinuxPersonalityDomain::PerLinux32)
            .build()
            .unwrap(),
    ));
    spec.set_linux(Some(linux));
    let mut guard = Guard::create(config("personality", spec.clone())).unwrap();
    let stdout = read_all(guard.container.take_stdout().unwrap());
    guard.container.start().unwrap();

    let (exec_stdout, code) = exec(&guard.container, &spec, &["uname", "-m"]);
    guard.container.destroy().unwrap();
    guard.wait();

    assert_eq!(code, 0, "{exec_stdout}");
    assert_eq!(exec_stdout.trim(), "i686");
    assert_eq!(received(&stdout).trim(), "i686");
}

#[test]
fn personality_flags_are_rejected() {
    require_root();
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["true"]);
    let mut linux = spec.linux().clone().unwrap();
    linux.set_personality(Some(
        LinuxPersonalityBuilder::default()
            .domain(LinuxPersonalityDomain::PerLinux)
            .flags(vec!["ADDR_NO_RANDOMIZE".to_owned()])
            .build()
            .unwrap(),
    ));
    spec.set_linux(Some(linux));

    let error = Container::create(config("personality-bad", spec))
        .err()
        .expect("create fails");

    assert!(error.is_invalid_input(), "{error}");
    assert!(error.to_string().contains("ADDR_NO_RANDOMIZE"), "{error}");
}

#[test]
fn user_namespace_joins_caller_owned_namespaces() {
    require_root();
    let bundle = Bundle::new();
    map_bundle(&bundle);
    let mut sandbox_spec = bundle.spec(&["sleep", "60"]);
    sandbox_spec.set_hostname(Some("sandbox".to_owned()));
    let mut sandbox = Guard::create(config("userns-sandbox", sandbox_spec)).unwrap();
    sandbox.container.start().unwrap();
    let sandbox_pid = sandbox.container.pid();

    // As the agent does for a pod, the container shares the sandbox's uts, ipc and
    // network namespaces, which belong to the caller's user namespace, not to the
    // container's. The kernel then refuses a new sysfs, and the caller's /sys is bound.
    let mut spec = with_user_namespace(bundle.spec(&["sleep", "60"]));
    spec.set_hostname(None);
    // The kernel mounts mqueue only for an ipc namespace of the mounting user namespace.
    let mut mounts = spec.mounts().clone().unwrap();
    mounts.retain(|mount| mount.destination() != Path::new("/dev/mqueue"));
    spec.set_mounts(Some(mounts));
    for (kind, name) in [
        (LinuxNamespaceType::Uts, "uts"),
        (LinuxNamespaceType::Ipc, "ipc"),
        (LinuxNamespaceType::Network, "net"),
    ] {
        let path = PathBuf::from(format!("/proc/{sandbox_pid}/ns/{name}"));
        set_namespace(&mut spec, kind, Some(path));
    }
    let mut guard = Guard::create(config("userns-shared", spec.clone())).unwrap();
    guard.container.start().unwrap();

    let (stdout, code) = exec(
        &guard.container,
        &spec,
        &[
            "sh",
            "-c",
            "hostname; readlink /proc/self/ns/ipc; id -u; test -d /sys/kernel && echo sys",
        ],
    );

    assert_eq!(code, 0, "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], "sandbox");
    let sandbox_ipc = fs::read_link(format!("/proc/{sandbox_pid}/ns/ipc")).unwrap();
    assert_eq!(Path::new(lines[1]), sandbox_ipc);
    assert_eq!(lines[2], "0");
    assert_eq!(lines[3], "sys");
    let container_user = fs::read_link(format!("/proc/{}/ns/user", guard.container.pid())).unwrap();
    assert_ne!(container_user, fs::read_link("/proc/self/ns/user").unwrap());
}

#[test]
fn user_namespace_cannot_join_mount_namespace() {
    require_root();
    let bundle = Bundle::new();
    let mut spec = with_user_namespace(bundle.spec(&["true"]));
    set_namespace(
        &mut spec,
        LinuxNamespaceType::Mount,
        Some(PathBuf::from("/proc/self/ns/mnt")),
    );

    let error = Container::create(config("userns-mnt", spec))
        .err()
        .expect("create fails");

    assert!(error.is_invalid_input(), "{error}");
    assert!(
        error
            .to_string()
            .contains("Mount namespace /proc/self/ns/mnt"),
        "{error}"
    );
}
