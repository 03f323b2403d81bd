//! Real containers from a busybox rootfs and the runc default spec. Needs root.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use common::{config, require_root, run, Bundle, Guard};
use oci_spec::runtime::{
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, MountBuilder, Spec,
};
use rustjail::{Container, Error};

fn writable_root(mut spec: Spec) -> Spec {
    let mut root = spec.root().clone().unwrap();
    root.set_readonly(Some(false));
    spec.set_root(Some(root));
    spec
}

fn add_namespace(spec: &mut Spec, kind: LinuxNamespaceType, path: Option<PathBuf>) {
    let mut linux = spec.linux().clone().unwrap();
    let mut namespaces = linux.namespaces().clone().unwrap();
    namespaces.retain(|namespace| namespace.typ() != kind);
    let mut namespace = LinuxNamespaceBuilder::default().typ(kind);
    if let Some(path) = path {
        namespace = namespace.path(path);
    }
    namespaces.push(namespace.build().unwrap());
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));
}

#[test]
fn container_is_send() {
    fn assert_send<T: Send>() {}
    assert_send::<Container>();
}

#[test]
fn echo_output_reaches_stdout() {
    require_root();
    let bundle = Bundle::new();

    let output = run("echo", bundle.spec(&["echo", "hello from berth"]));

    assert_eq!(output.stdout, "hello from berth\n");
    assert_eq!(output.code, 0, "{output:?}");
}

#[test]
fn exit_code_is_returned() {
    require_root();
    let bundle = Bundle::new();

    let output = run(
        "exit-code",
        bundle.spec(&["sh", "-c", "echo oops >&2; exit 7"]),
    );

    assert_eq!(output.code, 7);
    assert_eq!(output.stderr, "oops\n");
}

#[test]
fn hostname_is_set_in_container_only() {
    require_root();
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["hostname"]);
    spec.set_hostname(Some("berth-test".to_owned()));
    let host_before = nix::unistd::gethostname().unwrap();

    let output = run("hostname", spec);

    assert_eq!(output.stdout, "berth-test\n");
    assert_eq!(nix::unistd::gethostname().unwrap(), host_before);
}

#[test]
fn user_and_additional_gids_apply() {
    require_root();
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["id"]);
    let mut process = spec.process().clone().unwrap();
    let mut user = process.user().clone();
    user.set_uid(1000);
    user.set_gid(1001);
    user.set_additional_gids(Some(vec![10, 20]));
    process.set_user(user);
    spec.set_process(Some(process));

    let output = run("user", spec);

    assert_eq!(output.code, 0, "{output:?}");
    assert!(
        output.stdout.starts_with("uid=1000 gid=1001 groups="),
        "{output:?}"
    );
    let groups = output.stdout.trim().rsplit("groups=").next().unwrap();
    assert_eq!(groups.split(',').collect::<Vec<_>>(), ["10", "20"]);
}

#[test]
fn environment_is_passed() {
    require_root();
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["sh", "-c", "echo $GREETING"]);
    let mut process = spec.process().clone().unwrap();
    process.set_env(Some(vec![
        "PATH=/bin".to_owned(),
        "GREETING=hello env".to_owned(),
    ]));
    spec.set_process(Some(process));

    let output = run("env", spec);

    assert_eq!(output.stdout, "hello env\n");
}

#[test]
fn missing_cwd_is_created() {
    require_root();
    let bundle = Bundle::new();
    let mut spec = writable_root(bundle.spec(&["pwd"]));
    let mut process = spec.process().clone().unwrap();
    process.set_cwd(PathBuf::from("/work/deep/dir"));
    spec.set_process(Some(process));

    let output = run("cwd", spec);

    assert_eq!(output.stdout, "/work/deep/dir\n", "{output:?}");
    assert!(bundle.rootfs().join("work/deep/dir").is_dir());
}

#[test]
fn process_is_pid_one() {
    require_root();
    let bundle = Bundle::new();

    let output = run("pid-one", bundle.spec(&["sh", "-c", "echo $$"]));

    assert_eq!(output.stdout, "1\n");
}

#[test]
fn spec_mounts_are_visible() {
    require_root();
    let bundle = Bundle::new();
    let shared = tempfile::tempdir().unwrap();
    fs::write(shared.path().join("file"), "shared content\n").unwrap();
    let mut spec = bundle.spec(&[
        "sh",
        "-c",
        "cat /proc/self/mountinfo; cat /data/file; touch /data/new",
    ]);
    let mut mounts = spec.mounts().clone().unwrap();
    mounts.push(
        MountBuilder::default()
            .destination("/data")
            .typ("bind")
            .source(shared.path())
            .options(vec![
                "rbind".to_owned(),
                "ro".to_owned(),
                "nosuid".to_owned(),
            ])
            .build()
            .unwrap(),
    );
    spec.set_mounts(Some(mounts));

    let output = run("mounts", spec);

    let mount_points: Vec<&str> = output
        .stdout
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .collect();
    for expected in [
        "/",
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/data",
    ] {
        assert!(
            mount_points.contains(&expected),
            "{expected} missing from {mount_points:?}"
        );
    }
    for cgroup in [
        "/sys/fs/cgroup",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/unified",
    ] {
        assert!(
            mount_points.contains(&cgroup),
            "{cgroup} missing from {mount_points:?}"
        );
    }
    let data_line = output
        .stdout
        .lines()
        .find(|line| line.split(' ').nth(4) == Some("/data"))
        .unwrap();
    assert!(
        data_line
            .split(' ')
            .nth(5)
            .unwrap()
            .split(',')
            .any(|option| option == "ro"),
        "{data_line}"
    );
    assert!(output.stdout.contains("shared content\n"));
    assert!(
        output.stderr.contains("Read-only file system"),
        "{output:?}"
    );
    assert!(!shared.path().join("new").exists());
}

#[test]
fn default_devices_and_links_exist() {
    require_root();
    let bundle = Bundle::new();

    let output = run(
        "devices",
        bundle.spec(&["sh", "-c", "stat -c '%n %F %t:%T %a' /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty; readlink /dev/fd; readlink /dev/stdin; readlink /dev/ptmx; echo ok > /dev/null"]),
    );

    assert_eq!(output.code, 0, "{output:?}");
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(lines[0], "/dev/null character special file 1:3 666");
    assert_eq!(lines[1], "/dev/zero character special file 1:5 666");
    assert_eq!(lines[5], "/dev/tty character special file 5:0 666");
    assert_eq!(
        &lines[6..],
        ["/proc/self/fd", "/proc/self/fd/0", "pts/ptmx"]
    );
}

#[test]
fn masked_paths_hide_content() {
    require_root();
    let bundle = Bundle::new();
    fs::write(bundle.rootfs().join("etc/secret"), "secret file\n").unwrap();
    fs::create_dir(bundle.rootfs().join("etc/secret-dir")).unwrap();
    fs::write(
        bundle.rootfs().join("etc/secret-dir/inner"),
        "secret inner\n",
    )
    .unwrap();
    let mut spec = bundle.spec(&[
        "sh",
        "-c",
        "cat /etc/secret; ls -A /etc/secret-dir; stat -c %s /etc/secret",
    ]);
    let mut linux = spec.linux().clone().unwrap();
    let mut masked = linux.masked_paths().clone().unwrap();
    masked.extend([
        "/etc/secret".to_owned(),
        "/etc/secret-dir".to_owned(),
        "/does/not/exist".to_owned(),
    ]);
    linux.set_masked_paths(Some(masked));
    spec.set_linux(Some(linux));

    let output = run("masked", spec);

    assert_eq!(output.code, 0, "{output:?}");
    assert!(!output.stdout.contains("secret"), "{output:?}");
    assert_eq!(output.stdout, "0\n");
}

#[test]
fn readonly_paths_reject_writes() {
    require_root();
    let bundle = Bundle::new();
    fs::create_dir(bundle.rootfs().join("locked")).unwrap();
    let mut spec =
        writable_root(bundle.spec(&["sh", "-c", "touch /locked/file || exit 3; touch /tmp/file"]));
    let mut linux = spec.linux().clone().unwrap();
    let mut readonly = linux.readonly_paths().clone().unwrap();
    readonly.push("/locked".to_owned());
    linux.set_readonly_paths(Some(readonly));
    spec.set_linux(Some(linux));

    let output = run("readonly", spec);

    assert_eq!(output.code, 3, "{output:?}");
    assert!(
        output.stderr.contains("Read-only file system"),
        "{output:?}"
    );
    assert!(!bundle.rootfs().join("locked/file").exists());
}

#[test]
fn readonly_root_rejects_writes() {
    require_root();
    let bundle = Bundle::new();

    let output = run("readonly-root", bundle.spec(&["touch", "/tmp/file"]));

    assert_ne!(output.code, 0, "{output:?}");
    assert!(
        output.stderr.contains("Read-only file system"),
        "{output:?}"
    );
}

fn limited_spec(bundle: &Bundle, args: &[&str]) -> Spec {
    let mut spec = bundle.spec(args);
    let mut linux = spec.linux().clone().unwrap();
    let resources = LinuxResourcesBuilder::default()
        .memory(
            LinuxMemoryBuilder::default()
                .limit(64 * 1024 * 1024)
                .build()
                .unwrap(),
        )
        .pids(LinuxPidsBuilder::default().limit(32).build().unwrap())
        .devices(
            linux
                .resources()
                .clone()
                .unwrap()
                .devices()
                .clone()
                .unwrap(),
        )
        .build()
        .unwrap();
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
    spec
}

fn hierarchy_path<'a>(paths: &'a [PathBuf], hierarchy: &str) -> &'a Path {
    paths
        .iter()
        .find(|path| path.starts_with(Path::new("/sys/fs/cgroup").join(hierarchy)))
        .unwrap_or_else(|| panic!("no {hierarchy} cgroup in {paths:?}"))
}

#[test]
fn memory_and_pids_limits_apply() {
    require_root();
    let bundle = Bundle::new();
    let spec = limited_spec(&bundle, &["cat", "/proc/self/cgroup"]);
    let config = config("limits", spec);
    let relative = format!("/{}/{}", config.cgroup_parent, config.id);
    let mut guard = Guard::create(config).unwrap();

    let paths = guard.container.cgroup().paths().to_vec();
    let memory =
        fs::read_to_string(hierarchy_path(&paths, "memory").join("memory.limit_in_bytes")).unwrap();
    let pids = fs::read_to_string(hierarchy_path(&paths, "pids").join("pids.max")).unwrap();
    let procs = fs::read_to_string(hierarchy_path(&paths, "memory").join("cgroup.procs")).unwrap();
    let output = guard.run();

    assert_eq!(memory.trim(), "67108864");
    assert_eq!(pids.trim(), "32");
    assert_eq!(procs.trim(), guard.container.pid().to_string());
    let line_for = |controller: &str| {
        output
            .stdout
            .lines()
            .find(|line| line.split(':').nth(1) == Some(controller))
            .map(|line| line.rsplit(':').next().unwrap().to_owned())
    };
    assert_eq!(
        line_for("memory").as_deref(),
        Some(relative.as_str()),
        "{output:?}"
    );
    assert_eq!(
        line_for("pids").as_deref(),
        Some(relative.as_str()),
        "{output:?}"
    );
}

#[test]
fn cgroup_namespace_hides_cgroup_path() {
    require_root();
    let bundle = Bundle::new();
    let mut spec = limited_spec(&bundle, &["cat", "/proc/self/cgroup"]);
    add_namespace(&mut spec, LinuxNamespaceType::Cgroup, None);

    let output = run("cgroupns", spec);

    let memory_line = output
        .stdout
        .lines()
        .find(|line| line.split(':').nth(1) == Some("memory"))
        .unwrap();
    assert_eq!(memory_line.rsplit(':').next(), Some("/"), "{output:?}");
}

#[test]
fn cgroup_is_removed_after_destroy() {
    require_root();
    let bundle = Bundle::new();
    let config = config("cgroup-removed", limited_spec(&bundle, &["sleep", "60"]));
    let parent = config.cgroup_parent.clone();
    let mut guard = Guard::create(config).unwrap();
    guard.container.start().unwrap();
    let paths = guard.container.cgroup().paths().to_vec();
    assert!(paths.iter().all(|path| path.is_dir()), "{paths:?}");

    guard.container.destroy().unwrap();
    let code = guard.wait();
    guard.container.destroy().unwrap();

    assert_eq!(code, 128 + libc::SIGKILL);
    for path in &paths {
        assert!(!path.exists(), "{} still exists", path.display());
        assert!(
            !path.parent().unwrap().exists(),
            "parent of {} still exists",
            path.display()
        );
        assert!(path.parent().unwrap().ends_with(&parent));
    }
}

#[test]
fn missing_rootfs_fails_with_path() {
    require_root();
    let bundle = Bundle::new();
    let spec = bundle.spec(&["true"]);
    fs::remove_dir_all(bundle.rootfs()).unwrap();

    let error = Container::create(config("no-rootfs", spec)).err().unwrap();

    assert!(matches!(error, Error::RootfsMissing { .. }), "{error}");
    assert!(error.is_invalid_input());
    assert!(
        error
            .to_string()
            .contains(bundle.rootfs().to_str().unwrap()),
        "{error}"
    );
}

#[test]
fn missing_executable_fails_create() {
    require_root();
    let bundle = Bundle::new();
    let config = config("no-exec", bundle.spec(&["no-such-binary", "arg"]));
    let leaf = Path::new("/sys/fs/cgroup/memory")
        .join(&config.cgroup_parent)
        .join(&config.id);

    let error = Container::create(config).err().unwrap();

    assert!(
        matches!(&error, Error::ExecutableNotFound { name, .. } if name == "no-such-binary"),
        "{error}"
    );
    assert!(error.is_invalid_input());
    assert!(
        error
            .to_string()
            .contains("\"no-such-binary\" not found in $PATH"),
        "{error}"
    );
    assert!(!leaf.exists(), "cgroup {} left behind", leaf.display());
}

#[test]
fn exec_failure_is_reported_at_start() {
    require_root();
    let bundle = Bundle::new();
    let broken = bundle.rootfs().join("bin/broken");
    fs::write(&broken, [0u8, 1, 2, 3]).unwrap();
    fs::set_permissions(&broken, fs::Permissions::from_mode(0o755)).unwrap();
    let mut guard = Guard::create(config("exec-fails", bundle.spec(&["broken"]))).unwrap();

    let error = guard.container.start().unwrap_err();
    let code = guard.wait();

    assert!(matches!(error, Error::Init { .. }), "{error}");
    assert!(error.to_string().contains("/bin/broken"), "{error}");
    assert_eq!(code, 127);
}

#[test]
fn second_start_fails() {
    require_root();
    let bundle = Bundle::new();
    let mut guard = Guard::create(config("start-twice", bundle.spec(&["true"]))).unwrap();

    guard.container.start().unwrap();
    let error = guard.container.start().unwrap_err();

    assert!(matches!(error, Error::AlreadyStarted(_)), "{error}");
    assert_eq!(guard.wait(), 0);
}

#[test]
fn no_caller_fd_leaks_into_container() {
    require_root();
    let bundle = Bundle::new();
    // A descriptor opened without O_CLOEXEC would survive execve unless the launcher
    // closes it.
    let leaky = nix::fcntl::open(
        "/dev/null",
        nix::fcntl::OFlag::O_RDONLY,
        nix::sys::stat::Mode::empty(),
    )
    .unwrap();

    let output = run("fds", bundle.spec(&["ls", "-l", "/proc/self/fd"]));
    drop(leaky);

    // ls keeps the directory it lists open, so that descriptor is left out.
    let open: Vec<&str> = output
        .stdout
        .lines()
        .filter_map(|line| line.split_once(" -> "))
        .filter(|(_, target)| !(target.starts_with("/proc/") && target.ends_with("/fd")))
        .filter_map(|(entry, _)| entry.split_whitespace().last())
        .collect();
    assert_eq!(open, ["0", "1", "2"], "{output:?}");
}

#[test]
fn symlink_cannot_send_mount_outside_rootfs() {
    require_root();
    let bundle = Bundle::new();
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("target");
    fs::create_dir(&target).unwrap();
    fs::create_dir(bundle.rootfs().join("mnt")).unwrap();
    symlink(&target, bundle.rootfs().join("mnt/escape")).unwrap();
    let mut spec = bundle.spec(&[
        "sh",
        "-c",
        "echo inside > /mnt/escape/file && cat /mnt/escape/file",
    ]);
    let mut mounts = spec.mounts().clone().unwrap();
    mounts.push(
        MountBuilder::default()
            .destination("/mnt/escape")
            .typ("tmpfs")
            .source("tmpfs")
            .build()
            .unwrap(),
    );
    spec.set_mounts(Some(mounts));

    let output = run("escape", spec);

    assert_eq!(output.stdout, "inside\n", "{output:?}");
    assert_eq!(
        fs::read_dir(&target).unwrap().count(),
        0,
        "the mount landed outside the rootfs"
    );
    let inside = bundle.rootfs().join(target.strip_prefix("/").unwrap());
    assert!(
        inside.is_dir(),
        "{} was not created inside the rootfs",
        inside.display()
    );
}

#[test]
fn namespaces_are_joined_by_path() {
    require_root();
    let bundle = Bundle::new();
    let mut first_spec = bundle.spec(&["sleep", "60"]);
    first_spec.set_hostname(Some("first".to_owned()));
    let mut first = Guard::create(config("join-first", first_spec)).unwrap();
    first.container.start().unwrap();
    let first_pid = first.container.pid();

    let mut second_spec = bundle.spec(&["sh", "-c", "hostname; echo $$"]);
    second_spec.set_hostname(None);
    for (kind, name) in [
        (LinuxNamespaceType::Pid, "pid"),
        (LinuxNamespaceType::Uts, "uts"),
    ] {
        add_namespace(
            &mut second_spec,
            kind,
            Some(PathBuf::from(format!("/proc/{first_pid}/ns/{name}"))),
        );
    }
    let output = run("join-second", second_spec);

    assert_eq!(output.code, 0, "{output:?}");
    let lines: Vec<&str> = output.stdout.lines().collect();
    assert_eq!(lines[0], "first");
    assert_ne!(
        lines[1], "1",
        "the second container has its own pid namespace"
    );
}

#[test]
fn joined_uts_namespace_keeps_its_hostname() {
    require_root();
    let bundle = Bundle::new();
    let mut first_spec = bundle.spec(&["sleep", "60"]);
    first_spec.set_hostname(Some("first".to_owned()));
    let mut first = Guard::create(config("uts-owner", first_spec)).unwrap();
    first.container.start().unwrap();
    let first_pid = first.container.pid();

    // As a pod's container joins the sandbox's UTS namespace with its own hostname.
    let mut second_spec = bundle.spec(&["hostname"]);
    second_spec.set_hostname(Some("second".to_owned()));
    add_namespace(
        &mut second_spec,
        LinuxNamespaceType::Uts,
        Some(PathBuf::from(format!("/proc/{first_pid}/ns/uts"))),
    );
    let mut second = Guard::create(config("uts-joiner", second_spec)).unwrap();
    let warnings = second.container.warnings().to_vec();
    let output = second.run();

    assert_eq!(output.code, 0, "{output:?}");
    assert_eq!(output.stdout.trim(), "first");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("hostname \"second\" left out"),
        "{warnings:?}"
    );
}
