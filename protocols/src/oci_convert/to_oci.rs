// SPDX-License-Identifier: Apache-2.0

//! Protobuf `oci::Spec` to `oci_spec::runtime::Spec`. Every setter of the
//! target is called, even with `None`, because oci-spec's `Default`
//! implementations fill in a sample container (`sh`, default mounts and
//! capabilities) that must not leak into a converted spec.

use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::path::PathBuf;

use oci_spec::runtime as spec;
use protobuf::{Message, MessageField};

use super::{parse_name, ConvertError};
use crate::oci as pb;

/// Converts the spec a shim sent into an oci-spec `Spec`.
pub fn spec_to_oci(from: &pb::Spec) -> Result<spec::Spec, ConvertError> {
    let mut to = spec::Spec::default();

    to.set_version(from.Version.clone());
    to.set_process(present(&from.Process).map(process).transpose()?);
    to.set_root(present(&from.Root).map(root));
    to.set_hostname(text(&from.Hostname));
    to.set_domainname(None);
    to.set_mounts(list(from.Mounts.iter().map(mount).collect()));
    to.set_hooks(present(&from.Hooks).map(hooks));
    to.set_annotations(map(&from.Annotations));
    to.set_linux(present(&from.Linux).map(linux).transpose()?);
    to.set_solaris(None);
    to.set_windows(None);
    to.set_vm(None);
    to.set_zos(None);

    Ok(to)
}

fn process(from: &pb::Process) -> Result<spec::Process, ConvertError> {
    let mut to = spec::Process::default();

    to.set_terminal(nonzero(from.Terminal));
    to.set_console_size(present(&from.ConsoleSize).map(console_size).transpose()?);
    to.set_user(from.User.as_ref().map(user).unwrap_or_default());
    to.set_args(list(from.Args.clone()));
    to.set_command_line(None);
    to.set_env(list(from.Env.clone()));
    to.set_cwd(PathBuf::from(&from.Cwd));
    to.set_capabilities(present(&from.Capabilities).map(capabilities).transpose()?);
    to.set_rlimits(list(rlimits(&from.Rlimits)?));
    to.set_no_new_privileges(nonzero(from.NoNewPrivileges));
    to.set_apparmor_profile(text(&from.ApparmorProfile));
    to.set_oom_score_adj(narrow::<i32, _>(
        nonzero(from.OOMScoreAdj),
        "process.oomScoreAdj",
        "i32",
    )?);
    to.set_selinux_label(text(&from.SelinuxLabel));
    to.set_io_priority(None);
    to.set_scheduler(None);
    to.set_exec_cpu_affinity(None);

    Ok(to)
}

fn console_size(from: &pb::Box) -> Result<spec::Box, ConvertError> {
    spec::BoxBuilder::default()
        .height(u64::from(from.Height))
        .width(u64::from(from.Width))
        .build()
        .map_err(built("process.consoleSize"))
}

fn user(from: &pb::User) -> spec::User {
    let mut to = spec::User::default();
    to.set_uid(from.UID);
    to.set_gid(from.GID);
    to.set_umask(None);
    to.set_additional_gids(list(from.AdditionalGids.clone()));
    to.set_username(text(&from.Username));
    to
}

fn capabilities(from: &pb::LinuxCapabilities) -> Result<spec::LinuxCapabilities, ConvertError> {
    let mut to = spec::LinuxCapabilities::default();
    to.set_bounding(capability_set(&from.Bounding, "bounding")?);
    to.set_effective(capability_set(&from.Effective, "effective")?);
    to.set_inheritable(capability_set(&from.Inheritable, "inheritable")?);
    to.set_permitted(capability_set(&from.Permitted, "permitted")?);
    to.set_ambient(capability_set(&from.Ambient, "ambient")?);
    Ok(to)
}

fn capability_set(names: &[String], set: &str) -> Result<Option<spec::Capabilities>, ConvertError> {
    let mut capabilities = HashSet::new();
    for (index, name) in names.iter().enumerate() {
        let field = || format!("process.capabilities.{set}[{index}]");
        capabilities.insert(parse_name::<spec::Capability>(field, name, "capability")?);
    }
    Ok(set_or_none(capabilities))
}

fn rlimits(from: &[pb::POSIXRlimit]) -> Result<Vec<spec::PosixRlimit>, ConvertError> {
    let mut limits = Vec::with_capacity(from.len());
    for (index, limit) in from.iter().enumerate() {
        let field = || format!("process.rlimits[{index}].type");
        let to = spec::PosixRlimitBuilder::default()
            .typ(parse_name::<spec::PosixRlimitType>(
                field,
                &limit.Type,
                "rlimit type",
            )?)
            .hard(limit.Hard)
            .soft(limit.Soft)
            .build()
            .map_err(built(&format!("process.rlimits[{index}]")))?;
        limits.push(to);
    }
    Ok(limits)
}

fn root(from: &pb::Root) -> spec::Root {
    let mut to = spec::Root::default();
    to.set_path(PathBuf::from(&from.Path));
    to.set_readonly(nonzero(from.Readonly));
    to
}

fn mount(from: &pb::Mount) -> spec::Mount {
    let mut to = spec::Mount::default();
    to.set_destination(PathBuf::from(&from.destination));
    to.set_typ(text(&from.type_));
    to.set_source(text(&from.source).map(PathBuf::from));
    to.set_options(list(from.options.clone()));
    to.set_uid_mappings(None);
    to.set_gid_mappings(None);
    to
}

fn hooks(from: &pb::Hooks) -> spec::Hooks {
    let convert = |hooks: &[pb::Hook]| list(hooks.iter().map(hook).collect());

    let mut to = spec::Hooks::default();
    to.set_prestart(convert(&from.Prestart));
    to.set_create_runtime(convert(&from.CreateRuntime));
    to.set_create_container(convert(&from.CreateContainer));
    to.set_start_container(convert(&from.StartContainer));
    to.set_poststart(convert(&from.Poststart));
    to.set_poststop(convert(&from.Poststop));
    to
}

fn hook(from: &pb::Hook) -> spec::Hook {
    let mut to = spec::Hook::default();
    to.set_path(PathBuf::from(&from.Path));
    to.set_args(list(from.Args.clone()));
    to.set_env(list(from.Env.clone()));
    to.set_timeout(nonzero(from.Timeout));
    to
}

fn linux(from: &pb::Linux) -> Result<spec::Linux, ConvertError> {
    let mut to = spec::Linux::default();

    to.set_net_devices(None);
    to.set_uid_mappings(list(id_mappings(&from.UIDMappings, "linux.uidMappings")?));
    to.set_gid_mappings(list(id_mappings(&from.GIDMappings, "linux.gidMappings")?));
    to.set_sysctl(map(&from.Sysctl));
    to.set_resources(present(&from.Resources).map(resources).transpose()?);
    to.set_cgroups_path(text(&from.CgroupsPath).map(PathBuf::from));
    to.set_namespaces(list(namespaces(&from.Namespaces)?));
    to.set_devices(list(devices(&from.Devices)?));
    to.set_seccomp(present(&from.Seccomp).map(seccomp).transpose()?);
    to.set_rootfs_propagation(text(&from.RootfsPropagation));
    to.set_masked_paths(list(from.MaskedPaths.clone()));
    to.set_readonly_paths(list(from.ReadonlyPaths.clone()));
    to.set_mount_label(text(&from.MountLabel));
    to.set_intel_rdt(present(&from.IntelRdt).map(intel_rdt));
    to.set_memory_policy(None);
    to.set_personality(None);
    to.set_time_offsets(None);

    Ok(to)
}

fn id_mappings(
    from: &[pb::LinuxIDMapping],
    field: &str,
) -> Result<Vec<spec::LinuxIdMapping>, ConvertError> {
    from.iter()
        .enumerate()
        .map(|(index, mapping)| {
            spec::LinuxIdMappingBuilder::default()
                .host_id(mapping.HostID)
                .container_id(mapping.ContainerID)
                .size(mapping.Size)
                .build()
                .map_err(built(&format!("{field}[{index}]")))
        })
        .collect()
}

fn namespaces(from: &[pb::LinuxNamespace]) -> Result<Vec<spec::LinuxNamespace>, ConvertError> {
    let mut namespaces = Vec::with_capacity(from.len());
    for (index, namespace) in from.iter().enumerate() {
        // oci-spec's TryFrom also takes the kernel's short names ("mnt", "net").
        let typ = spec::LinuxNamespaceType::try_from(namespace.Type.as_str()).map_err(|_| {
            ConvertError::UnknownName {
                field: format!("linux.namespaces[{index}].type"),
                value: namespace.Type.clone(),
                kind: "namespace type",
            }
        })?;

        let mut to = spec::LinuxNamespace::default();
        to.set_typ(typ);
        to.set_path(text(&namespace.Path).map(PathBuf::from));
        namespaces.push(to);
    }
    Ok(namespaces)
}

fn devices(from: &[pb::LinuxDevice]) -> Result<Vec<spec::LinuxDevice>, ConvertError> {
    let mut devices = Vec::with_capacity(from.len());
    for (index, device) in from.iter().enumerate() {
        let field = || format!("linux.devices[{index}].type");
        let mut to = spec::LinuxDevice::default();
        to.set_path(PathBuf::from(&device.Path));
        to.set_typ(parse_name(field, &device.Type, "device type")?);
        to.set_major(device.Major);
        to.set_minor(device.Minor);
        to.set_file_mode(nonzero(device.FileMode));
        to.set_uid(nonzero(device.UID));
        to.set_gid(nonzero(device.GID));
        devices.push(to);
    }
    Ok(devices)
}

fn resources(from: &pb::LinuxResources) -> Result<spec::LinuxResources, ConvertError> {
    let mut to = spec::LinuxResources::default();

    to.set_devices(list(device_rules(&from.Devices)?));
    to.set_memory(present(&from.Memory).map(memory));
    to.set_cpu(present(&from.CPU).map(cpu));
    to.set_pids(present(&from.Pids).map(pids));
    to.set_block_io(present(&from.BlockIO).map(block_io).transpose()?);
    to.set_hugepage_limits(list(hugepage_limits(&from.HugepageLimits)?));
    to.set_network(present(&from.Network).map(network));
    to.set_rdma(None);
    to.set_unified(None);

    Ok(to)
}

/// Converts device cgroup rules. A major or minor of 0 or less is the
/// wildcard `*`, because Kata's Go runtime copies a nil OCI number into the
/// protobuf as 0 and Kata's own agent reads it back as "any".
// NOTE: this also turns a real minor 0 (such as `b 8:0`) into `b 8:*`; the
// wire format cannot tell the two apart.
fn device_rules(
    from: &[pb::LinuxDeviceCgroup],
) -> Result<Vec<spec::LinuxDeviceCgroup>, ConvertError> {
    let mut rules = Vec::with_capacity(from.len());
    for (index, rule) in from.iter().enumerate() {
        let field = || format!("linux.resources.devices[{index}].type");
        let typ = if rule.Type.is_empty() {
            None
        } else {
            Some(parse_name(field, &rule.Type, "device type")?)
        };

        let mut to = spec::LinuxDeviceCgroup::default();
        to.set_allow(rule.Allow);
        to.set_typ(typ);
        to.set_major(Some(rule.Major).filter(|major| *major > 0));
        to.set_minor(Some(rule.Minor).filter(|minor| *minor > 0));
        to.set_access(text(&rule.Access));
        rules.push(to);
    }
    Ok(rules)
}

fn memory(from: &pb::LinuxMemory) -> spec::LinuxMemory {
    let mut to = spec::LinuxMemory::default();
    to.set_limit(nonzero(from.Limit));
    to.set_reservation(nonzero(from.Reservation));
    to.set_swap(nonzero(from.Swap));
    to.set_kernel(nonzero(from.Kernel));
    to.set_kernel_tcp(nonzero(from.KernelTCP));
    // NOTE: a swappiness of 0 ("avoid swapping") arrives as None, because
    // proto3 cannot tell it from an unset field.
    to.set_swappiness(nonzero(from.Swappiness));
    to.set_disable_oom_killer(nonzero(from.DisableOOMKiller));
    to.set_use_hierarchy(None);
    to.set_check_before_update(None);
    to
}

fn cpu(from: &pb::LinuxCPU) -> spec::LinuxCpu {
    let mut to = spec::LinuxCpu::default();
    to.set_shares(nonzero(from.Shares));
    to.set_quota(nonzero(from.Quota));
    to.set_idle(None);
    to.set_burst(None);
    to.set_period(nonzero(from.Period));
    to.set_realtime_runtime(nonzero(from.RealtimeRuntime));
    to.set_realtime_period(nonzero(from.RealtimePeriod));
    to.set_cpus(text(&from.Cpus));
    to.set_mems(text(&from.Mems));
    to
}

fn pids(from: &pb::LinuxPids) -> spec::LinuxPids {
    let mut to = spec::LinuxPids::default();
    to.set_limit(from.Limit);
    to
}

fn block_io(from: &pb::LinuxBlockIO) -> Result<spec::LinuxBlockIo, ConvertError> {
    let mut to = spec::LinuxBlockIo::default();

    to.set_weight(narrow(
        nonzero(from.Weight),
        "linux.resources.blockIO.weight",
        "u16",
    )?);
    to.set_leaf_weight(narrow(
        nonzero(from.LeafWeight),
        "linux.resources.blockIO.leafWeight",
        "u16",
    )?);
    to.set_weight_device(list(weight_devices(&from.WeightDevice)?));
    to.set_throttle_read_bps_device(list(throttle_devices(
        &from.ThrottleReadBpsDevice,
        "linux.resources.blockIO.throttleReadBpsDevice",
    )?));
    to.set_throttle_write_bps_device(list(throttle_devices(
        &from.ThrottleWriteBpsDevice,
        "linux.resources.blockIO.throttleWriteBpsDevice",
    )?));
    to.set_throttle_read_iops_device(list(throttle_devices(
        &from.ThrottleReadIOPSDevice,
        "linux.resources.blockIO.throttleReadIOPSDevice",
    )?));
    to.set_throttle_write_iops_device(list(throttle_devices(
        &from.ThrottleWriteIOPSDevice,
        "linux.resources.blockIO.throttleWriteIOPSDevice",
    )?));

    Ok(to)
}

fn weight_devices(
    from: &[pb::LinuxWeightDevice],
) -> Result<Vec<spec::LinuxWeightDevice>, ConvertError> {
    let mut devices = Vec::with_capacity(from.len());
    for (index, device) in from.iter().enumerate() {
        let field = format!("linux.resources.blockIO.weightDevice[{index}]");
        let weight = narrow::<u16, _>(nonzero(device.Weight), &format!("{field}.weight"), "u16")?;
        let leaf_weight = narrow::<u16, _>(
            nonzero(device.LeafWeight),
            &format!("{field}.leafWeight"),
            "u16",
        )?;

        let mut builder = spec::LinuxWeightDeviceBuilder::default()
            .major(device.Major)
            .minor(device.Minor);
        if let Some(weight) = weight {
            builder = builder.weight(weight);
        }
        if let Some(leaf_weight) = leaf_weight {
            builder = builder.leaf_weight(leaf_weight);
        }
        devices.push(builder.build().map_err(built(&field))?);
    }
    Ok(devices)
}

fn throttle_devices(
    from: &[pb::LinuxThrottleDevice],
    field: &str,
) -> Result<Vec<spec::LinuxThrottleDevice>, ConvertError> {
    from.iter()
        .enumerate()
        .map(|(index, device)| {
            spec::LinuxThrottleDeviceBuilder::default()
                .major(device.Major)
                .minor(device.Minor)
                .rate(device.Rate)
                .build()
                .map_err(built(&format!("{field}[{index}]")))
        })
        .collect()
}

fn hugepage_limits(
    from: &[pb::LinuxHugepageLimit],
) -> Result<Vec<spec::LinuxHugepageLimit>, ConvertError> {
    let mut limits = Vec::with_capacity(from.len());
    for (index, limit) in from.iter().enumerate() {
        let field = format!("linux.resources.hugepageLimits[{index}].limit");
        let mut to = spec::LinuxHugepageLimit::default();
        to.set_page_size(limit.Pagesize.clone());
        to.set_limit(narrow::<i64, _>(Some(limit.Limit), &field, "i64")?.unwrap_or_default());
        limits.push(to);
    }
    Ok(limits)
}

fn network(from: &pb::LinuxNetwork) -> spec::LinuxNetwork {
    let priorities = from
        .Priorities
        .iter()
        .map(|priority| {
            let mut to = spec::LinuxInterfacePriority::default();
            to.set_name(priority.Name.clone());
            to.set_priority(priority.Priority);
            to
        })
        .collect();

    let mut to = spec::LinuxNetwork::default();
    to.set_class_id(nonzero(from.ClassID));
    to.set_priorities(list(priorities));
    to
}

fn seccomp(from: &pb::LinuxSeccomp) -> Result<spec::LinuxSeccomp, ConvertError> {
    let mut architectures = Vec::with_capacity(from.Architectures.len());
    for (index, name) in from.Architectures.iter().enumerate() {
        let field = || format!("linux.seccomp.architectures[{index}]");
        architectures.push(parse_name::<spec::Arch>(
            field,
            name,
            "seccomp architecture",
        )?);
    }

    let mut flags = Vec::with_capacity(from.Flags.len());
    for (index, name) in from.Flags.iter().enumerate() {
        let field = || format!("linux.seccomp.flags[{index}]");
        flags.push(parse_name::<spec::LinuxSeccompFilterFlag>(
            field,
            name,
            "seccomp flag",
        )?);
    }

    let mut syscalls = Vec::with_capacity(from.Syscalls.len());
    for (index, syscall) in from.Syscalls.iter().enumerate() {
        syscalls.push(seccomp_syscall(
            syscall,
            &format!("linux.seccomp.syscalls[{index}]"),
        )?);
    }

    let field = || "linux.seccomp.defaultAction".to_string();
    let mut to = spec::LinuxSeccomp::default();
    to.set_default_action(parse_name(field, &from.DefaultAction, "seccomp action")?);
    to.set_default_errno_ret(None);
    to.set_architectures(list(architectures));
    to.set_flags(list(flags));
    to.set_listener_path(None);
    to.set_listener_metadata(None);
    to.set_syscalls(list(syscalls));
    Ok(to)
}

fn seccomp_syscall(
    from: &pb::LinuxSyscall,
    path: &str,
) -> Result<spec::LinuxSyscall, ConvertError> {
    let mut args = Vec::with_capacity(from.Args.len());
    for (index, arg) in from.Args.iter().enumerate() {
        let arg_path = format!("{path}.args[{index}]");
        let index = narrow::<usize, _>(Some(arg.Index), &format!("{arg_path}.index"), "usize")?
            .unwrap_or_default();
        let op = parse_name::<spec::LinuxSeccompOperator>(
            || format!("{arg_path}.op"),
            &arg.Op,
            "seccomp operator",
        )?;

        let mut builder = spec::LinuxSeccompArgBuilder::default()
            .index(index)
            .value(arg.Value)
            .op(op);
        if let Some(value_two) = nonzero(arg.ValueTwo) {
            builder = builder.value_two(value_two);
        }
        args.push(builder.build().map_err(built(&arg_path))?);
    }

    let errno_ret = from
        .ErrnoRet
        .as_ref()
        .map(|pb::linux_syscall::ErrnoRet::Errnoret(errno)| *errno);

    let mut to = spec::LinuxSyscall::default();
    to.set_names(from.Names.clone());
    to.set_action(parse_name(
        || format!("{path}.action"),
        &from.Action,
        "seccomp action",
    )?);
    to.set_errno_ret(errno_ret);
    to.set_args(list(args));
    Ok(to)
}

fn intel_rdt(from: &pb::LinuxIntelRdt) -> spec::LinuxIntelRdt {
    let mut to = spec::LinuxIntelRdt::default();
    to.set_l3_cache_schema(text(&from.L3CacheSchema));
    to
}

/// Returns the `map_err` adapter for an oci-spec builder of `field`.
fn built(field: &str) -> impl FnOnce(oci_spec::OciSpecError) -> ConvertError + '_ {
    move |source| ConvertError::Build {
        field: field.to_string(),
        source,
    }
}

/// Returns the message when it is set to something other than all defaults.
fn present<T: Message + PartialEq>(field: &MessageField<T>) -> Option<&T> {
    field
        .as_ref()
        .filter(|message| *message != T::default_instance())
}

fn text(value: &str) -> Option<String> {
    (!value.is_empty()).then(|| value.to_string())
}

fn nonzero<T: Default + PartialEq>(value: T) -> Option<T> {
    (value != T::default()).then_some(value)
}

fn list<T>(items: Vec<T>) -> Option<Vec<T>> {
    (!items.is_empty()).then_some(items)
}

fn set_or_none<T: Eq + Hash>(items: HashSet<T>) -> Option<HashSet<T>> {
    (!items.is_empty()).then_some(items)
}

fn map(entries: &HashMap<String, String>) -> Option<HashMap<String, String>> {
    (!entries.is_empty()).then(|| entries.clone())
}

/// Converts a wider protobuf integer into oci-spec's narrower type, naming
/// the field when the value does not fit.
fn narrow<T, F>(
    value: Option<F>,
    field: &str,
    target: &'static str,
) -> Result<Option<T>, ConvertError>
where
    T: TryFrom<F>,
    F: Copy + ToString,
{
    value
        .map(|wide| {
            T::try_from(wide).map_err(|_| ConvertError::OutOfRange {
                field: field.to_string(),
                value: wide.to_string(),
                target,
            })
        })
        .transpose()
}
