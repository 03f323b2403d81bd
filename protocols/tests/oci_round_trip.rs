// SPDX-License-Identifier: Apache-2.0

//! Round trips of a full OCI spec through both conversions: protobuf to
//! oci-spec and back, and oci-spec to protobuf and back.

use std::collections::HashMap;

use protobuf::reflect::{ReflectFieldRef, ReflectValueRef};
use protobuf::{MessageDyn, MessageField};
use protocols::oci::linux_syscall::ErrnoRet;
use protocols::oci::*;
use protocols::{spec_from_oci, spec_to_oci};

fn some<T>(value: T) -> MessageField<T> {
    MessageField::some(value)
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|item| item.to_string()).collect()
}

fn hook(path: &str, timeout: i64) -> Hook {
    Hook {
        Path: path.to_string(),
        Args: strings(&[path, "--flag"]),
        Env: strings(&["HOOK=1"]),
        Timeout: timeout,
        ..Default::default()
    }
}

fn throttle(rate: u64) -> LinuxThrottleDevice {
    LinuxThrottleDevice {
        Major: 8,
        Minor: 16,
        Rate: rate,
        ..Default::default()
    }
}

fn full_process() -> Process {
    // Capability names are sorted because oci-spec keeps them in a set and
    // the reverse conversion lists them in name order.
    let caps = strings(&["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]);

    Process {
        Terminal: true,
        ConsoleSize: some(Box {
            Height: 24,
            Width: 80,
            ..Default::default()
        }),
        User: some(User {
            UID: 1000,
            GID: 1001,
            AdditionalGids: vec![5, 10],
            Username: "app".to_string(),
            ..Default::default()
        }),
        Args: strings(&["/bin/sh", "-c", "exit 0"]),
        Env: strings(&["PATH=/usr/bin:/bin", "TERM=xterm"]),
        Cwd: "/work".to_string(),
        Capabilities: some(LinuxCapabilities {
            Bounding: caps.clone(),
            Effective: caps.clone(),
            Inheritable: strings(&["CAP_KILL"]),
            Permitted: caps,
            Ambient: strings(&["CAP_NET_BIND_SERVICE"]),
            ..Default::default()
        }),
        Rlimits: vec![POSIXRlimit {
            Type: "RLIMIT_NOFILE".to_string(),
            Hard: 4096,
            Soft: 1024,
            ..Default::default()
        }],
        NoNewPrivileges: true,
        ApparmorProfile: "berth-default".to_string(),
        OOMScoreAdj: -500,
        SelinuxLabel: "system_u:system_r:container_t:s0".to_string(),
        ..Default::default()
    }
}

fn full_resources() -> LinuxResources {
    LinuxResources {
        Devices: vec![LinuxDeviceCgroup {
            Allow: true,
            Type: "c".to_string(),
            Major: 1,
            Minor: 3,
            Access: "rwm".to_string(),
            ..Default::default()
        }],
        Memory: some(LinuxMemory {
            Limit: 536_870_912,
            Reservation: 268_435_456,
            Swap: 1_073_741_824,
            Kernel: -1,
            KernelTCP: 65_536,
            Swappiness: 60,
            DisableOOMKiller: true,
            ..Default::default()
        }),
        CPU: some(LinuxCPU {
            Shares: 1024,
            Quota: 50_000,
            Period: 100_000,
            RealtimeRuntime: 950,
            RealtimePeriod: 1000,
            Cpus: "0-1".to_string(),
            Mems: "0".to_string(),
            ..Default::default()
        }),
        Pids: some(LinuxPids {
            Limit: 128,
            ..Default::default()
        }),
        BlockIO: some(LinuxBlockIO {
            Weight: 500,
            LeafWeight: 300,
            WeightDevice: vec![LinuxWeightDevice {
                Major: 8,
                Minor: 1,
                Weight: 200,
                LeafWeight: 100,
                ..Default::default()
            }],
            ThrottleReadBpsDevice: vec![throttle(1_000_000)],
            ThrottleWriteBpsDevice: vec![throttle(2_000_000)],
            ThrottleReadIOPSDevice: vec![throttle(300)],
            ThrottleWriteIOPSDevice: vec![throttle(400)],
            ..Default::default()
        }),
        HugepageLimits: vec![LinuxHugepageLimit {
            Pagesize: "2MB".to_string(),
            Limit: 209_715_200,
            ..Default::default()
        }],
        Network: some(LinuxNetwork {
            ClassID: 0x0010_0001,
            Priorities: vec![LinuxInterfacePriority {
                Name: "eth0".to_string(),
                Priority: 5,
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn full_seccomp() -> LinuxSeccomp {
    LinuxSeccomp {
        DefaultAction: "SCMP_ACT_ERRNO".to_string(),
        Architectures: strings(&["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"]),
        Flags: strings(&["SECCOMP_FILTER_FLAG_LOG"]),
        Syscalls: vec![LinuxSyscall {
            Names: strings(&["personality"]),
            Action: "SCMP_ACT_ALLOW".to_string(),
            ErrnoRet: Some(ErrnoRet::Errnoret(1)),
            Args: vec![LinuxSeccompArg {
                Index: 1,
                Value: 8,
                ValueTwo: 255,
                Op: "SCMP_CMP_MASKED_EQ".to_string(),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn full_linux() -> Linux {
    let mapping = |host: u32| LinuxIDMapping {
        HostID: host,
        ContainerID: 1,
        Size: 65_536,
        ..Default::default()
    };

    Linux {
        UIDMappings: vec![mapping(100_000)],
        GIDMappings: vec![mapping(200_000)],
        Sysctl: HashMap::from([("net.ipv4.ip_forward".to_string(), "1".to_string())]),
        Resources: some(full_resources()),
        CgroupsPath: "/berth/container-1".to_string(),
        Namespaces: vec![
            LinuxNamespace {
                Type: "pid".to_string(),
                Path: "/proc/1/ns/pid".to_string(),
                ..Default::default()
            },
            LinuxNamespace {
                Type: "network".to_string(),
                Path: "/var/run/netns/sandbox".to_string(),
                ..Default::default()
            },
            LinuxNamespace {
                Type: "mount".to_string(),
                Path: "/proc/1/ns/mnt".to_string(),
                ..Default::default()
            },
        ],
        Devices: vec![LinuxDevice {
            Path: "/dev/fuse".to_string(),
            Type: "c".to_string(),
            Major: 10,
            Minor: 229,
            FileMode: 0o666,
            UID: 1000,
            GID: 1001,
            ..Default::default()
        }],
        Seccomp: some(full_seccomp()),
        RootfsPropagation: "rslave".to_string(),
        MaskedPaths: strings(&["/proc/kcore"]),
        ReadonlyPaths: strings(&["/proc/sys"]),
        MountLabel: "system_u:object_r:container_file_t:s0".to_string(),
        IntelRdt: some(LinuxIntelRdt {
            L3CacheSchema: "L3:0=ff".to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn full_proto_spec() -> Spec {
    Spec {
        Version: "1.1.0".to_string(),
        Process: some(full_process()),
        Root: some(Root {
            Path: "/run/berth/rootfs".to_string(),
            Readonly: true,
            ..Default::default()
        }),
        Hostname: "box".to_string(),
        Mounts: vec![Mount {
            destination: "/proc".to_string(),
            source: "proc".to_string(),
            type_: "proc".to_string(),
            options: strings(&["nosuid", "noexec"]),
            ..Default::default()
        }],
        Hooks: some(Hooks {
            Prestart: vec![hook("/hooks/prestart", 1)],
            Poststart: vec![hook("/hooks/poststart", 2)],
            Poststop: vec![hook("/hooks/poststop", 3)],
            CreateRuntime: vec![hook("/hooks/create-runtime", 4)],
            CreateContainer: vec![hook("/hooks/create-container", 5)],
            StartContainer: vec![hook("/hooks/start-container", 6)],
            ..Default::default()
        }),
        Annotations: HashMap::from([("io.berth.test".to_string(), "yes".to_string())]),
        Linux: some(full_linux()),
        ..Default::default()
    }
}

/// Collects the path of every field left at its default value, walking
/// nested messages and every element of repeated fields. Solaris and
/// Windows are skipped because the conversion ignores them.
fn default_fields(message: &dyn MessageDyn, path: &str, found: &mut Vec<String>) {
    let descriptor = message.descriptor_dyn();
    for field in descriptor.fields() {
        if matches!(field.name(), "Solaris" | "Windows") {
            continue;
        }
        let field_path = format!("{path}.{}", field.name());

        match field.get_reflect(message) {
            ReflectFieldRef::Optional(value) => match value.value() {
                None => found.push(field_path),
                Some(ReflectValueRef::Message(nested)) => {
                    default_fields(&*nested, &field_path, found)
                }
                Some(value) if is_default(&value) => found.push(field_path),
                Some(_) => {}
            },
            ReflectFieldRef::Repeated(items) => {
                if items.is_empty() {
                    found.push(field_path.clone());
                }
                for index in 0..items.len() {
                    if let ReflectValueRef::Message(nested) = items.get(index) {
                        default_fields(&*nested, &format!("{field_path}[{index}]"), found);
                    }
                }
            }
            ReflectFieldRef::Map(entries) => {
                if entries.is_empty() {
                    found.push(field_path);
                }
            }
        }
    }
}

fn is_default(value: &ReflectValueRef) -> bool {
    match value {
        ReflectValueRef::U32(number) => *number == 0,
        ReflectValueRef::U64(number) => *number == 0,
        ReflectValueRef::I32(number) => *number == 0,
        ReflectValueRef::I64(number) => *number == 0,
        ReflectValueRef::F32(number) => *number == 0.0,
        ReflectValueRef::F64(number) => *number == 0.0,
        ReflectValueRef::Bool(flag) => !flag,
        ReflectValueRef::String(text) => text.is_empty(),
        ReflectValueRef::Bytes(bytes) => bytes.is_empty(),
        ReflectValueRef::Enum(_, number) => *number == 0,
        ReflectValueRef::Message(_) => false,
    }
}

#[test]
fn proto_fixture_sets_every_field() {
    let mut unset = Vec::new();

    default_fields(&full_proto_spec(), "Spec", &mut unset);

    assert!(
        unset.is_empty(),
        "fields left at their default value: {unset:#?}"
    );
}

#[test]
fn proto_to_oci_and_back_is_identity() {
    let original = full_proto_spec();

    let converted = spec_to_oci(&original).unwrap();
    let back = spec_from_oci(&converted);

    assert_eq!(back, original);
}

#[test]
fn proto_conversion_reaches_expected_oci_values() {
    let converted = spec_to_oci(&full_proto_spec()).unwrap();

    let expected: oci_spec::runtime::Spec = serde_json::from_str(FULL_CONFIG_JSON).unwrap();
    assert_eq!(converted, expected);
}

#[test]
fn oci_to_proto_and_back_is_identity() {
    let original: oci_spec::runtime::Spec = serde_json::from_str(FULL_CONFIG_JSON).unwrap();

    let converted = spec_from_oci(&original);
    let back = spec_to_oci(&converted).unwrap();

    assert_eq!(back, original);
}

/// A `config.json` that sets every field the Kata protobuf can carry, with
/// the same values as `full_proto_spec`, written independently of the
/// conversion code.
const FULL_CONFIG_JSON: &str = r#"{
  "ociVersion": "1.1.0",
  "process": {
    "terminal": true,
    "consoleSize": {"height": 24, "width": 80},
    "user": {"uid": 1000, "gid": 1001, "additionalGids": [5, 10], "username": "app"},
    "args": ["/bin/sh", "-c", "exit 0"],
    "env": ["PATH=/usr/bin:/bin", "TERM=xterm"],
    "cwd": "/work",
    "capabilities": {
      "bounding": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "effective": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "inheritable": ["CAP_KILL"],
      "permitted": ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"],
      "ambient": ["CAP_NET_BIND_SERVICE"]
    },
    "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 4096, "soft": 1024}],
    "noNewPrivileges": true,
    "apparmorProfile": "berth-default",
    "oomScoreAdj": -500,
    "selinuxLabel": "system_u:system_r:container_t:s0"
  },
  "root": {"path": "/run/berth/rootfs", "readonly": true},
  "hostname": "box",
  "mounts": [{"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec"]}],
  "hooks": {
    "prestart": [{"path": "/hooks/prestart", "args": ["/hooks/prestart", "--flag"], "env": ["HOOK=1"], "timeout": 1}],
    "poststart": [{"path": "/hooks/poststart", "args": ["/hooks/poststart", "--flag"], "env": ["HOOK=1"], "timeout": 2}],
    "poststop": [{"path": "/hooks/poststop", "args": ["/hooks/poststop", "--flag"], "env": ["HOOK=1"], "timeout": 3}],
    "createRuntime": [{"path": "/hooks/create-runtime", "args": ["/hooks/create-runtime", "--flag"], "env": ["HOOK=1"], "timeout": 4}],
    "createContainer": [{"path": "/hooks/create-container", "args": ["/hooks/create-container", "--flag"], "env": ["HOOK=1"], "timeout": 5}],
    "startContainer": [{"path": "/hooks/start-container", "args": ["/hooks/start-container", "--flag"], "env": ["HOOK=1"], "timeout": 6}]
  },
  "annotations": {"io.berth.test": "yes"},
  "linux": {
    "uidMappings": [{"hostID": 100000, "containerID": 1, "size": 65536}],
    "gidMappings": [{"hostID": 200000, "containerID": 1, "size": 65536}],
    "sysctl": {"net.ipv4.ip_forward": "1"},
    "resources": {
      "devices": [{"allow": true, "type": "c", "major": 1, "minor": 3, "access": "rwm"}],
      "memory": {
        "limit": 536870912, "reservation": 268435456, "swap": 1073741824,
        "kernel": -1, "kernelTCP": 65536, "swappiness": 60, "disableOOMKiller": true
      },
      "cpu": {
        "shares": 1024, "quota": 50000, "period": 100000,
        "realtimeRuntime": 950, "realtimePeriod": 1000, "cpus": "0-1", "mems": "0"
      },
      "pids": {"limit": 128},
      "blockIO": {
        "weight": 500,
        "leafWeight": 300,
        "weightDevice": [{"major": 8, "minor": 1, "weight": 200, "leafWeight": 100}],
        "throttleReadBpsDevice": [{"major": 8, "minor": 16, "rate": 1000000}],
        "throttleWriteBpsDevice": [{"major": 8, "minor": 16, "rate": 2000000}],
        "throttleReadIOPSDevice": [{"major": 8, "minor": 16, "rate": 300}],
        "throttleWriteIOPSDevice": [{"major": 8, "minor": 16, "rate": 400}]
      },
      "hugepageLimits": [{"pageSize": "2MB", "limit": 209715200}],
      "network": {"classID": 1048577, "priorities": [{"name": "eth0", "priority": 5}]}
    },
    "cgroupsPath": "/berth/container-1",
    "namespaces": [
      {"type": "pid", "path": "/proc/1/ns/pid"},
      {"type": "network", "path": "/var/run/netns/sandbox"},
      {"type": "mount", "path": "/proc/1/ns/mnt"}
    ],
    "devices": [{"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438, "uid": 1000, "gid": 1001}],
    "seccomp": {
      "defaultAction": "SCMP_ACT_ERRNO",
      "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64"],
      "flags": ["SECCOMP_FILTER_FLAG_LOG"],
      "syscalls": [{
        "names": ["personality"],
        "action": "SCMP_ACT_ALLOW",
        "errnoRet": 1,
        "args": [{"index": 1, "value": 8, "valueTwo": 255, "op": "SCMP_CMP_MASKED_EQ"}]
      }]
    },
    "rootfsPropagation": "rslave",
    "maskedPaths": ["/proc/kcore"],
    "readonlyPaths": ["/proc/sys"],
    "mountLabel": "system_u:object_r:container_file_t:s0",
    "intelRdt": {"l3CacheSchema": "L3:0=ff"}
  }
}"#;
