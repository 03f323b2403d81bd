//! `linux.netDevices`: a device of the caller's network namespace moved into the
//! container's, renamed, with its address, and up. Each test works in a network
//! namespace of its own thread, so the machine's network is never touched. Needs root
//! and `ip` from iproute2.

mod common;

use std::collections::HashMap;
use std::process::Command;

use common::{config, require_root, Bundle, Guard};
use nix::sched::{unshare, CloneFlags};
use oci_spec::runtime::{LinuxNetDevice, LinuxNetDeviceBuilder, Spec};
use rustjail::Container;

/// Moves the calling test thread into a new network namespace and adds a veth pair there,
/// `name` with address `address` and its peer `p<name>`. The namespace, and the devices
/// with it, go away with the thread. Veth rather than dummy, because kernels without the
/// dummy module are common in VMs.
fn private_network_with_device(name: &str, address: &str) {
    unshare(CloneFlags::CLONE_NEWNET).expect("unshare a network namespace for this thread");
    let peer = format!("p{name}");
    for args in [
        vec!["link", "add", name, "type", "veth", "peer", "name", &peer],
        vec!["addr", "add", address, "dev", name],
    ] {
        let status = Command::new("ip").args(&args).status().expect("run ip");
        assert!(status.success(), "ip {args:?} failed");
    }
}

fn with_net_devices(mut spec: Spec, devices: &[(&str, Option<&str>)]) -> Spec {
    let map: HashMap<String, LinuxNetDevice> = devices
        .iter()
        .map(|(host, name)| {
            let mut builder = LinuxNetDeviceBuilder::default();
            if let Some(name) = name {
                builder = builder.name(name.to_string());
            }
            (host.to_string(), builder.build().unwrap())
        })
        .collect();
    let mut linux = spec.linux().clone().unwrap();
    linux.set_net_devices(Some(map));
    spec.set_linux(Some(linux));
    spec
}

/// Returns whether the calling thread's network namespace has interface `name`.
fn has_interface(name: &str) -> bool {
    Command::new("ip")
        .args(["link", "show", name])
        .output()
        .expect("run ip")
        .status
        .success()
}

#[test]
fn device_moves_renamed_with_address_and_up() {
    require_root();
    std::thread::spawn(|| {
        private_network_with_device("berth-veth0", "10.99.0.1/24");
        let bundle = Bundle::new();
        let spec = with_net_devices(
            bundle.spec(&[
                "sh",
                "-c",
                "ip -o -4 addr show dev ctr0; ip -o link show dev ctr0",
            ]),
            &[("berth-veth0", Some("ctr0"))],
        );

        let mut guard = Guard::create(config("netdev", spec)).unwrap();
        let output = guard.run();

        assert_eq!(output.code, 0, "{output:?}");
        assert!(output.stdout.contains("inet 10.99.0.1/24"), "{output:?}");
        let link = output.stdout.lines().nth(1).unwrap_or_default();
        assert!(link.contains(" ctr0"), "{output:?}");
        assert!(link.contains(",UP,") || link.contains("<UP,"), "{link}");
        assert!(
            !has_interface("berth-veth0"),
            "the device left the caller's namespace"
        );
    })
    .join()
    .unwrap();
}

#[test]
fn device_keeps_its_name_without_one() {
    require_root();
    std::thread::spawn(|| {
        private_network_with_device("berth-keep0", "10.98.0.1/24");
        let bundle = Bundle::new();
        let spec = with_net_devices(
            bundle.spec(&["ip", "-o", "-4", "addr", "show", "dev", "berth-keep0"]),
            &[("berth-keep0", None)],
        );

        let mut guard = Guard::create(config("netdev-keep", spec)).unwrap();
        let output = guard.run();

        assert_eq!(output.code, 0, "{output:?}");
        assert!(output.stdout.contains("berth-keep0"), "{output:?}");
        assert!(output.stdout.contains("inet 10.98.0.1/24"), "{output:?}");
        assert!(!has_interface("berth-keep0"));
    })
    .join()
    .unwrap();
}

#[test]
fn taken_or_missing_device_fails_create() {
    require_root();
    std::thread::spawn(|| {
        private_network_with_device("berth-taken0", "10.97.0.1/24");
        let bundle = Bundle::new();
        let cases = [
            (("berth-taken0", Some("lo")), "berth-taken0 (as lo)"),
            (("berth-absent0", None), "berth-absent0"),
        ];

        for ((host, name), expected) in cases {
            let spec = with_net_devices(bundle.spec(&["true"]), &[(host, name)]);
            let config = config("netdev-bad", spec);
            let cgroup = std::path::Path::new("/sys/fs/cgroup/pids").join(&config.cgroup_parent);

            let error = Container::create(config).err().expect("create fails");

            assert!(error.is_invalid_input(), "{error}");
            assert!(error.to_string().contains(expected), "{error}");
            assert!(
                !cgroup.exists(),
                "no cgroup is left at {}",
                cgroup.display()
            );
        }
        assert!(
            has_interface("berth-taken0"),
            "a refused device stays where it was"
        );
    })
    .join()
    .unwrap();
}

#[test]
fn net_devices_need_a_network_namespace() {
    require_root();
    let bundle = Bundle::new();
    let mut spec = with_net_devices(bundle.spec(&["true"]), &[("eth0", Some("ctr0"))]);
    let mut linux = spec.linux().clone().unwrap();
    let namespaces = linux
        .namespaces()
        .clone()
        .unwrap()
        .into_iter()
        .filter(|namespace| namespace.typ() != oci_spec::runtime::LinuxNamespaceType::Network)
        .collect();
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));

    let error = Container::create(config("netdev-nons", spec))
        .err()
        .expect("create fails");

    assert!(error.is_invalid_input(), "{error}");
    assert!(error.to_string().contains("linux.netDevices"), "{error}");
}
