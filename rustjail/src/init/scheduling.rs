//! CPU and I/O scheduling of the user process: `process.scheduler`,
//! `process.ioPriority` and `process.execCPUAffinity`, with `linux.memoryPolicy` from
//! [`super::memory_policy`].
//!
//! The init applies them before it switches to the container user, so the runtime's
//! privileges cover real-time policies and negative nice values, and `execve` keeps them.
//! Every field is checked before the first one is applied, so a bad value fails without
//! side effects. `execCPUAffinity` applies to processes started by exec only, as the
//! runtime spec defines it: the caller sets `initial` before it moves the new process into the
//! container's cgroup, and the process sets `final` here, after the move.

use oci_spec::runtime::{
    ExecCPUAffinity, IOPriorityClass, LinuxIOPriority, LinuxMemoryPolicy, LinuxSchedulerFlag,
    LinuxSchedulerPolicy, Process, Scheduler,
};
use rustix::process::Pid;
use rustix::thread::{sched_setaffinity, CpuSet};

use super::memory_policy::MemoryPolicy;
use super::InitError;
use crate::error::Error;

/// `IOPRIO_WHO_PROCESS` of `linux/ioprio.h`: the `who` argument is a thread id.
const IOPRIO_WHO_PROCESS: libc::c_int = 1;

/// Bits below the class in an I/O priority value, `IOPRIO_CLASS_SHIFT` of
/// `linux/ioprio.h`.
const IOPRIO_CLASS_SHIFT: u32 = 13;

/// Lowest priority level within an I/O class. 0 is the highest.
const IOPRIO_MAX_LEVEL: i64 = 7;

/// Size of `struct sched_attr` with the utilization clamps, `SCHED_ATTR_SIZE_VER1`.
const SCHED_ATTR_SIZE: u32 = 56;

/// The process the attributes are for.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// The user process of a new container, which ignores `execCPUAffinity`.
    ContainerInit,
    /// A process started in a running container by exec.
    Exec,
}

/// `struct sched_attr` of sched_setattr(2).
#[repr(C)]
#[derive(Debug, Default)]
struct SchedAttr {
    size: u32,
    sched_policy: u32,
    sched_flags: u64,
    sched_nice: i32,
    sched_priority: u32,
    sched_runtime: u64,
    sched_deadline: u64,
    sched_period: u64,
    sched_util_min: u32,
    sched_util_max: u32,
}

/// The checked attributes, ready to apply.
struct Plan {
    final_cpus: Option<(String, CpuSet)>,
    memory_policy: Option<MemoryPolicy>,
    io_priority: Option<(String, libc::c_int)>,
    scheduler: Option<(String, SchedAttr)>,
}

/// Checks the scheduling fields of `process` and `memory_policy`, then applies them to
/// this process: CPU affinity first, because the kernel rejects most affinity changes
/// of a `SCHED_DEADLINE` task, then the memory policy, the I/O priority and the
/// scheduler.
pub(crate) fn apply(
    process: &Process,
    memory_policy: Option<&LinuxMemoryPolicy>,
    target: Target,
) -> Result<(), InitError> {
    let final_cpus = match (target, process.exec_cpu_affinity()) {
        (Target::Exec, Some(affinity)) => final_cpu_list(affinity)?,
        _ => None,
    };
    let plan = Plan {
        final_cpus,
        memory_policy: memory_policy.map(MemoryPolicy::from_spec).transpose()?,
        io_priority: process
            .io_priority()
            .as_ref()
            .map(io_priority)
            .transpose()?,
        scheduler: process.scheduler().as_ref().map(sched_attr).transpose()?,
    };

    if let Some((text, cpus)) = &plan.final_cpus {
        sched_setaffinity(None, cpus)
            .map_err(|errno| affinity_error("process.execCPUAffinity.final", text, errno.into()))?;
    }
    if let Some(policy) = &plan.memory_policy {
        policy.apply()?;
    }
    if let Some((text, value)) = plan.io_priority {
        set_io_priority(&text, value)?;
    }
    if let Some((text, attr)) = &plan.scheduler {
        set_scheduler(text, attr)?;
    }
    Ok(())
}

/// Checks both lists of `process.execCPUAffinity` in the caller, before anything is
/// cloned. The init could not report a malformed list as such, because oci-spec already
/// fails to deserialize the configuration that carries it.
pub(crate) fn check_exec_cpu_affinity(process: &Process) -> Result<(), String> {
    let Some(affinity) = process.exec_cpu_affinity() else {
        return Ok(());
    };
    let lists = [
        ("process.execCPUAffinity.initial", affinity.initial()),
        (
            "process.execCPUAffinity.final",
            affinity.cpu_affinity_final(),
        ),
    ];
    for (field, text) in lists {
        if let Some(text) = text.as_deref().filter(|text| !text.is_empty()) {
            cpu_set(field, text)?;
        }
    }
    Ok(())
}

/// Restricts process `pid`, started by exec and not yet in the container's cgroup, to
/// the CPUs of `process.execCPUAffinity.initial`. Runs in the caller.
pub(crate) fn set_initial_cpu_affinity(
    container: &str,
    pid: i32,
    process: &Process,
) -> Result<(), Error> {
    let Some(text) = process
        .exec_cpu_affinity()
        .as_ref()
        .and_then(|affinity| affinity.initial().as_deref())
        .filter(|text| !text.is_empty())
    else {
        return Ok(());
    };
    let field = "process.execCPUAffinity.initial";
    let cpus = cpu_set(field, text).map_err(Error::InvalidSpec)?;
    let system_error = |source| Error::Prepare {
        container: container.to_owned(),
        resource: "initial CPU affinity of the exec process",
        source,
    };
    // Pid 0 would name the caller itself.
    let Some(pid) = Pid::from_raw(pid) else {
        return Err(system_error(std::io::Error::from_raw_os_error(libc::ESRCH)));
    };

    sched_setaffinity(Some(pid), &cpus).map_err(|errno| {
        let source = std::io::Error::from(errno);
        if errno == rustix::io::Errno::INVAL {
            Error::InvalidSpec(invalid_cpus_message(field, text, &source))
        } else {
            system_error(source)
        }
    })
}

/// Parses a list such as `0-3,7` into its numbers, each below `limit`. `field` names the
/// spec field in the error.
pub(crate) fn parse_list(field: &str, text: &str, limit: usize) -> Result<Vec<usize>, String> {
    let malformed = || format!("{field} {text:?} is not a list such as \"0-3,7\"");
    let number = |digits: &str| -> Result<usize, String> {
        if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
            return Err(malformed());
        }
        let value: usize = digits.parse().map_err(|_| malformed())?;
        if value >= limit {
            return Err(format!(
                "{field} {text:?}: {value} is out of range, the maximum is {}",
                limit - 1
            ));
        }
        Ok(value)
    };

    let mut numbers = Vec::new();
    for item in text.split(',') {
        let (first, last) = match item.split_once('-') {
            Some((first, last)) => (number(first)?, number(last)?),
            None => {
                let value = number(item)?;
                (value, value)
            }
        };
        if first > last {
            return Err(format!(
                "{field} {text:?}: range {item} ends before it starts"
            ));
        }
        numbers.extend(first..=last);
    }
    Ok(numbers)
}

fn cpu_set(field: &str, text: &str) -> Result<CpuSet, String> {
    let mut cpus = CpuSet::new();
    for cpu in parse_list(field, text, CpuSet::MAX_CPU)? {
        cpus.set(cpu);
    }
    Ok(cpus)
}

/// Returns the `final` CPU list, or `None` when it is missing or empty, which the spec
/// says leaves the affinity to the kernel.
fn final_cpu_list(affinity: &ExecCPUAffinity) -> Result<Option<(String, CpuSet)>, InitError> {
    let Some(text) = affinity
        .cpu_affinity_final()
        .as_deref()
        .filter(|text| !text.is_empty())
    else {
        return Ok(None);
    };
    let cpus = cpu_set("process.execCPUAffinity.final", text).map_err(InitError::invalid_spec)?;
    Ok(Some((text.to_owned(), cpus)))
}

fn invalid_cpus_message(field: &str, text: &str, source: &std::io::Error) -> String {
    format!(
        "{field} {text:?} contains no CPU that is online and allowed by the container's \
         cpuset: {source}"
    )
}

fn affinity_error(field: &str, text: &str, source: std::io::Error) -> InitError {
    if source.raw_os_error() == Some(libc::EINVAL) {
        InitError::invalid_spec(invalid_cpus_message(field, text, &source))
    } else {
        InitError::system(format!("set {field} {text:?}: {source}"))
    }
}

/// Checks `process.ioPriority` and returns its description and ioprio_set(2) value.
fn io_priority(spec: &LinuxIOPriority) -> Result<(String, libc::c_int), InitError> {
    let level = spec.priority();
    let text = format!("{} level {level}", spec.class());
    if !(0..=IOPRIO_MAX_LEVEL).contains(&level) {
        return Err(InitError::invalid_spec(format!(
            "process.ioPriority {text}: the level must be 0 to {IOPRIO_MAX_LEVEL}"
        )));
    }
    let class = match spec.class() {
        IOPriorityClass::IoprioClassRt => 1,
        IOPriorityClass::IoprioClassBe => 2,
        IOPriorityClass::IoprioClassIdle => 3,
    };
    // The level was checked to be 0 to 7, so it fits.
    let value = (class << IOPRIO_CLASS_SHIFT) | level as libc::c_int;
    Ok((text, value))
}

fn set_io_priority(text: &str, value: libc::c_int) -> Result<(), InitError> {
    // SAFETY: ioprio_set takes three integers and changes only the I/O priority of this
    // thread, the only one of the init.
    let result = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, value) };
    if result != 0 {
        let source = std::io::Error::last_os_error();
        return Err(InitError::system(format!(
            "set process.ioPriority {text}: {source}"
        )));
    }
    Ok(())
}

/// Checks `process.scheduler` and returns its description and `struct sched_attr`.
/// Combinations the kernel would reject for a plain reason are rejected here with
/// that reason, and the kernel checks the rest, such as the `SCHED_DEADLINE` timing.
fn sched_attr(spec: &Scheduler) -> Result<(String, SchedAttr), InitError> {
    let policy = *spec.policy();
    let nice = spec.nice().unwrap_or(0);
    let priority = spec.priority().unwrap_or(0);
    let flags = spec.flags().clone().unwrap_or_default();
    let runtime = spec.runtime().unwrap_or(0);
    let deadline = spec.deadline().unwrap_or(0);
    let period = spec.period().unwrap_or(0);
    let text = format!(
        "{policy} nice {nice} priority {priority} flags {flags:?} runtime {runtime} \
         deadline {deadline} period {period}"
    );
    let invalid =
        |reason: &str| InitError::invalid_spec(format!("process.scheduler {text}: {reason}"));

    let real_time = matches!(
        policy,
        LinuxSchedulerPolicy::SchedFifo | LinuxSchedulerPolicy::SchedRr
    );
    if policy == LinuxSchedulerPolicy::SchedIso {
        return Err(invalid("Linux does not implement SCHED_ISO"));
    }
    if !(-20..=19).contains(&nice) {
        return Err(invalid("nice must be -20 to 19"));
    }
    if real_time && !(1..=99).contains(&priority) {
        return Err(invalid(
            "SCHED_FIFO and SCHED_RR need a priority of 1 to 99",
        ));
    }
    if !real_time && priority != 0 {
        return Err(invalid("only SCHED_FIFO and SCHED_RR take a priority"));
    }
    if policy != LinuxSchedulerPolicy::SchedDeadline && (runtime, deadline, period) != (0, 0, 0) {
        return Err(invalid(
            "only SCHED_DEADLINE takes runtime, deadline and period",
        ));
    }

    let attr = SchedAttr {
        size: SCHED_ATTR_SIZE,
        sched_policy: policy_number(policy),
        sched_flags: flags
            .iter()
            .map(|flag| flag_bits(*flag))
            .fold(0, |all, bit| all | bit),
        sched_nice: nice,
        // Checked above to be 0 to 99.
        sched_priority: priority as u32,
        sched_runtime: runtime,
        sched_deadline: deadline,
        sched_period: period,
        // NOTE: the spec has no utilization clamp values, so with
        // SCHED_FLAG_UTIL_CLAMP_MIN or _MAX the clamp becomes 0.
        sched_util_min: 0,
        sched_util_max: 0,
    };
    Ok((text, attr))
}

fn policy_number(policy: LinuxSchedulerPolicy) -> u32 {
    let number = match policy {
        LinuxSchedulerPolicy::SchedOther => libc::SCHED_OTHER,
        LinuxSchedulerPolicy::SchedFifo => libc::SCHED_FIFO,
        LinuxSchedulerPolicy::SchedRr => libc::SCHED_RR,
        LinuxSchedulerPolicy::SchedBatch => libc::SCHED_BATCH,
        // Rejected before, as Linux reserves the number without implementing it.
        LinuxSchedulerPolicy::SchedIso => 4,
        LinuxSchedulerPolicy::SchedIdle => libc::SCHED_IDLE,
        LinuxSchedulerPolicy::SchedDeadline => 6,
    };
    number as u32
}

fn flag_bits(flag: LinuxSchedulerFlag) -> u64 {
    let bits = match flag {
        LinuxSchedulerFlag::SchedResetOnFork => libc::SCHED_FLAG_RESET_ON_FORK,
        LinuxSchedulerFlag::SchedFlagReclaim => libc::SCHED_FLAG_RECLAIM,
        LinuxSchedulerFlag::SchedFlagDLOverrun => libc::SCHED_FLAG_DL_OVERRUN,
        LinuxSchedulerFlag::SchedFlagKeepPolicy => libc::SCHED_FLAG_KEEP_POLICY,
        LinuxSchedulerFlag::SchedFlagKeepParams => libc::SCHED_FLAG_KEEP_PARAMS,
        LinuxSchedulerFlag::SchedFlagUtilClampMin => libc::SCHED_FLAG_UTIL_CLAMP_MIN,
        LinuxSchedulerFlag::SchedFlagUtilClampMax => libc::SCHED_FLAG_UTIL_CLAMP_MAX,
    };
    bits as u64
}

/// Calls sched_setattr(2), which neither nix nor rustix wrap. The kernel rejects a
/// real-time policy with EPERM when the container's cpu cgroup has no real-time runtime
/// (`linux.resources.cpu.realtimeRuntime`) on a kernel with real-time group scheduling.
fn set_scheduler(text: &str, attr: &SchedAttr) -> Result<(), InitError> {
    // SAFETY: attr points to a live, initialized struct sched_attr whose size field
    // matches its layout, and the kernel only reads it. Pid 0 is this thread, the only
    // one of the init.
    let result = unsafe {
        libc::syscall(
            libc::SYS_sched_setattr,
            0 as libc::pid_t,
            attr as *const SchedAttr,
            0 as libc::c_uint,
        )
    };
    if result == 0 {
        return Ok(());
    }

    let source = std::io::Error::last_os_error();
    match source.raw_os_error() {
        Some(libc::EINVAL) => Err(InitError::invalid_spec(format!(
            "process.scheduler {text}: the kernel rejects the combination: {source}"
        ))),
        Some(libc::EPERM) => Err(InitError::system(format!(
            "set process.scheduler {text}: {source}; a real-time policy needs \
             linux.resources.cpu.realtimeRuntime when the kernel has real-time group \
             scheduling"
        ))),
        _ => Err(InitError::system(format!(
            "set process.scheduler {text}: {source}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_expand_ranges() {
        assert_eq!(parse_list("f", "0-2,5", 8).unwrap(), [0, 1, 2, 5]);
        assert_eq!(parse_list("f", "3", 8).unwrap(), [3]);
    }

    #[test]
    fn malformed_lists_name_field_and_value() {
        for text in ["", "1-", "-1", "a", "1,,2", "0-1 ", "3-1", "8"] {
            let message = parse_list("process.execCPUAffinity.final", text, 8).unwrap_err();
            assert!(
                message.contains("process.execCPUAffinity.final"),
                "{message}"
            );
            assert!(message.contains(&format!("{text:?}")), "{message}");
        }
    }

    #[test]
    fn sched_attr_matches_kernel_layout() {
        assert_eq!(std::mem::size_of::<SchedAttr>(), SCHED_ATTR_SIZE as usize);
    }
}
