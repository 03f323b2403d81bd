//! Root filesystem options: sysctls, cgroup mounts and the no-pivot mode. Needs root.

mod common;

use std::collections::HashMap;
use std::fs;

use common::{config, require_root, run, Bundle, Guard};
use oci_spec::runtime::{LinuxMemoryBuilder, LinuxResourcesBuilder, Spec};
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
