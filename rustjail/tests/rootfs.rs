//! Root filesystem options: sysctls, cgroup mounts, propagation, atime options, the
//! domainname and the no-pivot mode. Needs root.

mod common;

use std::collections::HashMap;
use std::fs;

use common::{config, require_root, run, Bundle, Guard};
use oci_spec::runtime::{LinuxMemoryBuilder, LinuxResourcesBuilder, Mount, MountBuilder, Spec};
use rustjail::{Container, Error, LaunchOptions};

fn with_sysctl(mut spec: Spec, pairs: &[(&str, &str)]) -> Spec {
    let sysctl: HashMap<String, String> = pairs
        .iter()
        .map(|(key, value)| (key.to_string(), value.to_string()))
        .collect();
    let mut linux = spec.linux().clone().unwrap();
    linux.set_sysctl(Some(sysctl));
    spec.set_linux(Some(linux));
    spec
}

#[test]
fn sysctls_apply_inside_container_namespaces() {
    require_root();
    let bundle = Bundle::new();
    let spec = with_sysctl(
        bundle.spec(&[
            "cat",
            "/proc/sys/net/ipv4/ip_forward",
            "/proc/sys/kernel/shmmni",
        ]),
        &[("net.ipv4.ip_forward", "1"), ("kernel.shmmni", "1234")],
    );
    let host_shmmni = fs::read_to_string("/proc/sys/kernel/shmmni").unwrap();
    let host_forward = fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();

    let output = run("sysctl", spec);

    assert_eq!(output.stdout, "1\n1234\n", "{output:?}");
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/shmmni").unwrap(),
        host_shmmni
    );
    assert_eq!(
        fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_forward
    );
}

#[test]
fn global_sysctl_is_rejected() {
    require_root();
    let bundle = Bundle::new();
    let spec = with_sysctl(bundle.spec(&["true"]), &[("vm.swappiness", "1")]);

    let error = Container::create(config("sysctl-global", spec))
        .err()
        .unwrap();

    assert!(matches!(error, Error::InvalidSpec(_)), "{error}");
    assert!(error.to_string().contains("vm.swappiness"), "{error}");
}

#[test]
fn cgroup_mount_shows_own_cgroup_read_only() {
    require_root();
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&[
        "sh",
        "-c",
        "cat /sys/fs/cgroup/memory/memory.limit_in_bytes; \
         echo 1 > /sys/fs/cgroup/memory/memory.limit_in_bytes",
    ]);
    let mut linux = spec.linux().clone().unwrap();
    linux.set_resources(Some(
        LinuxResourcesBuilder::default()
            .memory(
                LinuxMemoryBuilder::default()
                    .limit(48 * 1024 * 1024)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap(),
    ));
    spec.set_linux(Some(linux));

    let output = run("cgroup-mount", spec);

    assert_eq!(
        output.stdout,
        format!("{}\n", 48 * 1024 * 1024),
        "{output:?}"
    );
    assert!(
        output.stderr.contains("Read-only file system"),
        "{output:?}"
    );
}

#[test]
fn no_pivot_mode_runs_container() {
    require_root();
    let bundle = Bundle::new();
    let marker = bundle.rootfs().join("etc/marker");
    fs::write(&marker, "inside the rootfs\n").unwrap();
    let options = LaunchOptions {
        no_pivot: true,
        ..LaunchOptions::default()
    };
    let mut guard = Guard::create_with(
        config(
            "no-pivot",
            bundle.spec(&["sh", "-c", "cat /etc/marker; echo $$"]),
        ),
        options,
    )
    .unwrap();

    let output = guard.run();

    assert_eq!(output.code, 0, "{output:?}");
    assert_eq!(output.stdout, "inside the rootfs\n1\n");
}

/// One line of /proc/self/mountinfo: the mount point, its options and the optional
/// propagation fields (`shared:N`, `master:N`).
struct MountLine {
    options: Vec<String>,
    propagation: Vec<String>,
}

/// Finds the last mount at `mount_point` in a mountinfo dump, the one on top.
fn mount_line(mountinfo: &str, mount_point: &str) -> MountLine {
    let line = mountinfo
        .lines()
        .rev()
        .find(|line| line.split(' ').nth(4) == Some(mount_point))
        .unwrap_or_else(|| panic!("no mount at {mount_point} in {mountinfo}"));
    let fields: Vec<&str> = line.split(' ').collect();
    let separator = fields.iter().position(|field| *field == "-").unwrap();
    MountLine {
        options: fields[5].split(',').map(str::to_owned).collect(),
        propagation: fields[6..separator].iter().map(|f| f.to_string()).collect(),
    }
}

fn tmpfs(destination: &str, options: &[&str]) -> Mount {
    MountBuilder::default()
        .destination(destination)
        .typ("tmpfs")
        .source("tmpfs")
        .options(
            options
                .iter()
                .map(|option| option.to_string())
                .collect::<Vec<_>>(),
        )
        .build()
        .unwrap()
}

fn with_rootfs_propagation(mut spec: Spec, propagation: &str) -> Spec {
    let mut linux = spec.linux().clone().unwrap();
    linux.set_rootfs_propagation(Some(propagation.to_owned()));
    spec.set_linux(Some(linux));
    spec
}

#[test]
fn rootfs_propagation_shows_in_mountinfo() {
    require_root();
    let bundle = Bundle::new();
    let cat = bundle.spec(&["cat", "/proc/self/mountinfo"]);

    let shared = run(
        "propagation-shared",
        with_rootfs_propagation(cat.clone(), "shared"),
    );
    let private = run(
        "propagation-private",
        with_rootfs_propagation(cat, "private"),
    );

    let shared_root = mount_line(&shared.stdout, "/");
    assert!(
        shared_root
            .propagation
            .iter()
            .any(|field| field.starts_with("shared:")),
        "{shared:?}"
    );
    assert!(
        mount_line(&private.stdout, "/").propagation.is_empty(),
        "{private:?}"
    );
}

#[test]
fn mount_propagation_and_atime_options_show_in_mountinfo() {
    require_root();
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["cat", "/proc/self/mountinfo"]);
    let mut mounts = spec.mounts().clone().unwrap();
    mounts.extend([
        tmpfs("/shared", &["shared"]),
        // The bind of a shared mount joins its peer group, and `slave` then makes it
        // receive from that group only.
        MountBuilder::default()
            .destination("/slave")
            .typ("bind")
            .source(bundle.rootfs().join("shared"))
            .options(vec!["bind".to_owned(), "slave".to_owned()])
            .build()
            .unwrap(),
        tmpfs("/private", &["private"]),
        tmpfs("/noatime", &["noatime"]),
        tmpfs("/nodiratime", &["nodiratime"]),
        tmpfs("/strictatime", &["noatime", "strictatime"]),
    ]);
    spec.set_mounts(Some(mounts));

    let output = run("mount-flags", spec);

    assert_eq!(output.code, 0, "{output:?}");
    let has = |mount_point: &str, prefix: &str| {
        mount_line(&output.stdout, mount_point)
            .propagation
            .iter()
            .any(|field| field.starts_with(prefix))
    };
    assert!(has("/shared", "shared:"), "{output:?}");
    assert!(has("/slave", "master:"), "{output:?}");
    assert!(!has("/slave", "shared:"), "{output:?}");
    assert!(mount_line(&output.stdout, "/private")
        .propagation
        .is_empty());
    let options = |mount_point: &str| mount_line(&output.stdout, mount_point).options;
    assert!(options("/noatime").contains(&"noatime".to_owned()));
    assert!(options("/nodiratime").contains(&"nodiratime".to_owned()));
    let strict = options("/strictatime");
    assert!(
        !strict.contains(&"noatime".to_owned()) && !strict.contains(&"relatime".to_owned()),
        "{strict:?}"
    );
}

#[test]
fn domainname_is_set_in_container_only() {
    require_root();
    let bundle = Bundle::new();
    let mut spec = bundle.spec(&["cat", "/proc/sys/kernel/domainname"]);
    spec.set_domainname(Some("berth.test".to_owned()));
    let host_domainname = fs::read_to_string("/proc/sys/kernel/domainname").unwrap();

    let output = run("domainname", spec);

    assert_eq!(output.stdout, "berth.test\n", "{output:?}");
    assert_eq!(
        fs::read_to_string("/proc/sys/kernel/domainname").unwrap(),
        host_domainname
    );
}
