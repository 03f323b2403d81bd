// SPDX-License-Identifier: Apache-2.0

//! `oci_spec::runtime::Spec` to protobuf `oci::Spec`, the reverse of
//! `to_oci`: `None` becomes the field's default value, and a section that is
//! `None` stays an unset message.

use std::path::Path;

use oci_spec::runtime as spec;
use protobuf::MessageField;

use super::name_of;
use crate::oci as pb;

/// Converts an oci-spec `Spec` into the protobuf message the agent API
/// carries. Fields the protobuf has no place for are dropped; the module
/// documentation lists them.
pub fn spec_from_oci(from: &spec::Spec) -> pb::Spec {
    pb::Spec {
        Version: from.version().clone(),
        Process: message(from.process().as_ref().map(process)),
        Root: message(from.root().as_ref().map(root)),
        Hostname: from.hostname().clone().unwrap_or_default(),
        Mounts: from.mounts().iter().flatten().map(mount).collect(),
        Hooks: message(from.hooks().as_ref().map(hooks)),
        Annotations: from.annotations().clone().unwrap_or_default(),
        Linux: message(from.linux().as_ref().map(linux)),
        ..Default::default()
    }
}

fn process(from: &spec::Process) -> pb::Process {
    pb::Process {
        Terminal: from.terminal().unwrap_or_default(),
        ConsoleSize: message(from.console_size().map(console_size)),
        User: message(Some(user(from.user()))),
        Args: from.args().clone().unwrap_or_default(),
        Env: from.env().clone().unwrap_or_default(),
        Cwd: path_text(from.cwd()),
        Capabilities: message(from.capabilities().as_ref().map(capabilities)),
        Rlimits: from.rlimits().iter().flatten().map(rlimit).collect(),
        NoNewPrivileges: from.no_new_privileges().unwrap_or_default(),
        ApparmorProfile: from.apparmor_profile().clone().unwrap_or_default(),
        OOMScoreAdj: from.oom_score_adj().map(i64::from).unwrap_or_default(),
        SelinuxLabel: from.selinux_label().clone().unwrap_or_default(),
        ..Default::default()
    }
}

// NOTE: a console wider or taller than u32::MAX cells is clamped, because
// the protobuf `Box` has 32-bit sizes and this conversion cannot fail.
fn console_size(from: spec::Box) -> pb::Box {
    pb::Box {
        Height: u32::try_from(from.height()).unwrap_or(u32::MAX),
        Width: u32::try_from(from.width()).unwrap_or(u32::MAX),
        ..Default::default()
    }
}

fn user(from: &spec::User) -> pb::User {
    pb::User {
        UID: from.uid(),
        GID: from.gid(),
        AdditionalGids: from.additional_gids().clone().unwrap_or_default(),
        Username: from.username().clone().unwrap_or_default(),
        ..Default::default()
    }
}

fn capabilities(from: &spec::LinuxCapabilities) -> pb::LinuxCapabilities {
    pb::LinuxCapabilities {
        Bounding: capability_names(from.bounding()),
        Effective: capability_names(from.effective()),
        Inheritable: capability_names(from.inheritable()),
        Permitted: capability_names(from.permitted()),
        Ambient: capability_names(from.ambient()),
        ..Default::default()
    }
}

/// Lists a capability set by name. oci-spec keeps a `HashSet`, so the names
/// are sorted to make the output independent of hashing order.
fn capability_names(set: &Option<spec::Capabilities>) -> Vec<String> {
    let mut names: Vec<String> = set.iter().flatten().map(name_of).collect();
    names.sort();
    names
}

fn rlimit(from: &spec::PosixRlimit) -> pb::POSIXRlimit {
    pb::POSIXRlimit {
        Type: name_of(&from.typ()),
        Hard: from.hard(),
        Soft: from.soft(),
        ..Default::default()
    }
}

fn root(from: &spec::Root) -> pb::Root {
    pb::Root {
        Path: path_text(from.path()),
        Readonly: from.readonly().unwrap_or_default(),
        ..Default::default()
    }
}

fn mount(from: &spec::Mount) -> pb::Mount {
    pb::Mount {
        destination: path_text(from.destination()),
        source: from.source().as_deref().map(path_text).unwrap_or_default(),
        type_: from.typ().clone().unwrap_or_default(),
        options: from.options().clone().unwrap_or_default(),
        ..Default::default()
    }
}

fn hooks(from: &spec::Hooks) -> pb::Hooks {
    let convert = |hooks: &Option<Vec<spec::Hook>>| hooks.iter().flatten().map(hook).collect();

    pb::Hooks {
        Prestart: convert(from.prestart()),
        Poststart: convert(from.poststart()),
        Poststop: convert(from.poststop()),
        CreateRuntime: convert(from.create_runtime()),
        CreateContainer: convert(from.create_container()),
        StartContainer: convert(from.start_container()),
        ..Default::default()
    }
}

fn hook(from: &spec::Hook) -> pb::Hook {
    pb::Hook {
        Path: path_text(from.path()),
        Args: from.args().clone().unwrap_or_default(),
        Env: from.env().clone().unwrap_or_default(),
        Timeout: from.timeout().unwrap_or_default(),
        ..Default::default()
    }
}

fn linux(from: &spec::Linux) -> pb::Linux {
    pb::Linux {
        UIDMappings: from
            .uid_mappings()
            .iter()
            .flatten()
            .map(id_mapping)
            .collect(),
        GIDMappings: from
            .gid_mappings()
            .iter()
            .flatten()
            .map(id_mapping)
            .collect(),
        Sysctl: from.sysctl().clone().unwrap_or_default(),
        Resources: message(from.resources().as_ref().map(resources)),
        CgroupsPath: from
            .cgroups_path()
            .as_deref()
            .map(path_text)
            .unwrap_or_default(),
        Namespaces: from.namespaces().iter().flatten().map(namespace).collect(),
        Devices: from.devices().iter().flatten().map(device).collect(),
        Seccomp: message(from.seccomp().as_ref().map(seccomp)),
        RootfsPropagation: from.rootfs_propagation().clone().unwrap_or_default(),
        MaskedPaths: from.masked_paths().clone().unwrap_or_default(),
        ReadonlyPaths: from.readonly_paths().clone().unwrap_or_default(),
        MountLabel: from.mount_label().clone().unwrap_or_default(),
        IntelRdt: message(from.intel_rdt().as_ref().map(intel_rdt)),
        ..Default::default()
    }
}

fn id_mapping(from: &spec::LinuxIdMapping) -> pb::LinuxIDMapping {
    pb::LinuxIDMapping {
        HostID: from.host_id(),
        ContainerID: from.container_id(),
        Size: from.size(),
        ..Default::default()
    }
}

fn namespace(from: &spec::LinuxNamespace) -> pb::LinuxNamespace {
    pb::LinuxNamespace {
        Type: name_of(&from.typ()),
        Path: from.path().as_deref().map(path_text).unwrap_or_default(),
        ..Default::default()
    }
}

fn device(from: &spec::LinuxDevice) -> pb::LinuxDevice {
    pb::LinuxDevice {
        Path: path_text(from.path()),
        Type: name_of(&from.typ()),
        Major: from.major(),
        Minor: from.minor(),
        FileMode: from.file_mode().unwrap_or_default(),
        UID: from.uid().unwrap_or_default(),
        GID: from.gid().unwrap_or_default(),
        ..Default::default()
    }
}

fn resources(from: &spec::LinuxResources) -> pb::LinuxResources {
    pb::LinuxResources {
        Devices: from.devices().iter().flatten().map(device_rule).collect(),
        Memory: message(from.memory().as_ref().map(memory)),
        CPU: message(from.cpu().as_ref().map(cpu)),
        Pids: message(from.pids().as_ref().map(|pids| pb::LinuxPids {
            Limit: pids.limit(),
            ..Default::default()
        })),
        BlockIO: message(from.block_io().as_ref().map(block_io)),
        HugepageLimits: from
            .hugepage_limits()
            .iter()
            .flatten()
            .map(hugepage_limit)
            .collect(),
        Network: message(from.network().as_ref().map(network)),
        ..Default::default()
    }
}

/// Converts a device cgroup rule; the wildcard `*` (None) becomes 0, the
/// number Kata's runtime sends for it.
fn device_rule(from: &spec::LinuxDeviceCgroup) -> pb::LinuxDeviceCgroup {
    pb::LinuxDeviceCgroup {
        Allow: from.allow(),
        Type: from.typ().map(|typ| name_of(&typ)).unwrap_or_default(),
        Major: from.major().unwrap_or_default(),
        Minor: from.minor().unwrap_or_default(),
        Access: from.access().clone().unwrap_or_default(),
        ..Default::default()
    }
}

fn memory(from: &spec::LinuxMemory) -> pb::LinuxMemory {
    pb::LinuxMemory {
        Limit: from.limit().unwrap_or_default(),
        Reservation: from.reservation().unwrap_or_default(),
        Swap: from.swap().unwrap_or_default(),
        Kernel: from.kernel().unwrap_or_default(),
        KernelTCP: from.kernel_tcp().unwrap_or_default(),
        Swappiness: from.swappiness().unwrap_or_default(),
        DisableOOMKiller: from.disable_oom_killer().unwrap_or_default(),
        ..Default::default()
    }
}

fn cpu(from: &spec::LinuxCpu) -> pb::LinuxCPU {
    pb::LinuxCPU {
        Shares: from.shares().unwrap_or_default(),
        Quota: from.quota().unwrap_or_default(),
        Period: from.period().unwrap_or_default(),
        RealtimeRuntime: from.realtime_runtime().unwrap_or_default(),
        RealtimePeriod: from.realtime_period().unwrap_or_default(),
        Cpus: from.cpus().clone().unwrap_or_default(),
        Mems: from.mems().clone().unwrap_or_default(),
        ..Default::default()
    }
}

fn block_io(from: &spec::LinuxBlockIo) -> pb::LinuxBlockIO {
    let throttle = |devices: &Option<Vec<spec::LinuxThrottleDevice>>| {
        devices.iter().flatten().map(throttle_device).collect()
    };

    pb::LinuxBlockIO {
        Weight: from.weight().map(u32::from).unwrap_or_default(),
        LeafWeight: from.leaf_weight().map(u32::from).unwrap_or_default(),
        WeightDevice: from
            .weight_device()
            .iter()
            .flatten()
            .map(weight_device)
            .collect(),
        ThrottleReadBpsDevice: throttle(from.throttle_read_bps_device()),
        ThrottleWriteBpsDevice: throttle(from.throttle_write_bps_device()),
        ThrottleReadIOPSDevice: throttle(from.throttle_read_iops_device()),
        ThrottleWriteIOPSDevice: throttle(from.throttle_write_iops_device()),
        ..Default::default()
    }
}

fn weight_device(from: &spec::LinuxWeightDevice) -> pb::LinuxWeightDevice {
    pb::LinuxWeightDevice {
        Major: from.major(),
        Minor: from.minor(),
        Weight: from.weight().map(u32::from).unwrap_or_default(),
        LeafWeight: from.leaf_weight().map(u32::from).unwrap_or_default(),
        ..Default::default()
    }
}

fn throttle_device(from: &spec::LinuxThrottleDevice) -> pb::LinuxThrottleDevice {
    pb::LinuxThrottleDevice {
        Major: from.major(),
        Minor: from.minor(),
        Rate: from.rate(),
        ..Default::default()
    }
}

// NOTE: a negative hugepage limit becomes 0 because the protobuf field is unsigned and this conversion cannot fail.
fn hugepage_limit(from: &spec::LinuxHugepageLimit) -> pb::LinuxHugepageLimit {
    pb::LinuxHugepageLimit {
        Pagesize: from.page_size().clone(),
        Limit: u64::try_from(from.limit()).unwrap_or_default(),
        ..Default::default()
    }
}

fn network(from: &spec::LinuxNetwork) -> pb::LinuxNetwork {
    let priorities =
        from.priorities()
            .iter()
            .flatten()
            .map(|priority| pb::LinuxInterfacePriority {
                Name: priority.name().clone(),
                Priority: priority.priority(),
                ..Default::default()
            });

    pb::LinuxNetwork {
        ClassID: from.class_id().unwrap_or_default(),
        Priorities: priorities.collect(),
        ..Default::default()
    }
}

fn seccomp(from: &spec::LinuxSeccomp) -> pb::LinuxSeccomp {
    pb::LinuxSeccomp {
        DefaultAction: name_of(&from.default_action()),
        Architectures: from.architectures().iter().flatten().map(name_of).collect(),
        Flags: from.flags().iter().flatten().map(name_of).collect(),
        Syscalls: from
            .syscalls()
            .iter()
            .flatten()
            .map(seccomp_syscall)
            .collect(),
        ..Default::default()
    }
}

fn seccomp_syscall(from: &spec::LinuxSyscall) -> pb::LinuxSyscall {
    let args = from.args().iter().flatten().map(|arg| pb::LinuxSeccompArg {
        // usize is at most 64 bits on every target Rust supports.
        Index: arg.index() as u64,
        Value: arg.value(),
        ValueTwo: arg.value_two().unwrap_or_default(),
        Op: name_of(&arg.op()),
        ..Default::default()
    });

    pb::LinuxSyscall {
        Names: from.names().clone(),
        Action: name_of(&from.action()),
        ErrnoRet: from.errno_ret().map(pb::linux_syscall::ErrnoRet::Errnoret),
        Args: args.collect(),
        ..Default::default()
    }
}

fn intel_rdt(from: &spec::LinuxIntelRdt) -> pb::LinuxIntelRdt {
    pb::LinuxIntelRdt {
        L3CacheSchema: from.l3_cache_schema().clone().unwrap_or_default(),
        ..Default::default()
    }
}

fn message<T>(value: Option<T>) -> MessageField<T> {
    MessageField::from_option(value)
}

fn path_text(path: &Path) -> String {
    path.to_string_lossy().into_owned()
}
