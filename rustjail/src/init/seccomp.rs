//! The seccomp filter of `linux.seccomp`, compiled with libseccomp.
//!
//! The filter is compiled before the init reports ready, so a bad profile fails create,
//! and loaded just before `execve` (see `process::exec`). Syscall names this
//! architecture does not know are skipped, as profiles list syscalls of several
//! architectures.
//!
//! A profile with `SCMP_ACT_NOTIFY` rules gets a notify fd when it is loaded. The init
//! passes it to the caller over the sync socket ([`FromInit::SeccompNotify`]), and the
//! caller sends it on to `listenerPath`, in whose mount namespace that path lies. The
//! init makes these calls after loading, so a profile cannot notify on them.

use std::os::fd::BorrowedFd;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use serde::Serialize;

use super::{failed, InitError};
use crate::sync::{send_fd, send_message, FailureKind, FromInit};

/// Errno of an `SCMP_ACT_ERRNO` or `SCMP_ACT_TRACE` without `errnoRet`, as runtimes use.
const DEFAULT_ERRNO: i32 = libc::EPERM;

/// Syscalls the init makes after loading the filter to pass the notify fd: `send` of
/// the announcing message is `sendto`, and the fd goes with `sendmsg`. Notifying on them
/// would stop the init until a listener responds, and no listener has the fd yet.
const SYSCALLS_PASSING_NOTIFY_FD: &[&str] = &["sendto", "sendmsg"];

/// A compiled filter that is not loaded yet.
pub(crate) struct Filter {
    context: ScmpFilterContext,
    /// The filter has `SCMP_ACT_NOTIFY` rules, so loading it creates a notify fd.
    notifies: bool,
}

/// Compiles the profile into a filter that is not loaded yet.
pub(crate) fn compile(profile: &LinuxSeccomp) -> Result<Filter, InitError> {
    check_listener(profile)?;
    let default_errno = profile
        .default_errno_ret()
        .map_or(DEFAULT_ERRNO, |errno| errno as i32);
    if profile.default_action() == LinuxSeccompAction::ScmpActNotify {
        return Err(InitError::invalid_spec(
            "linux.seccomp.defaultAction SCMP_ACT_NOTIFY is not supported: the init's own \
             calls between loading the filter and execve would wait for a listener that \
             has no notify fd yet; notify on the syscalls of interest instead",
        ));
    }
    let default_action = action(profile.default_action(), Some(default_errno))?;
    let mut filter =
        ScmpFilterContext::new(default_action).map_err(failed("create the seccomp filter"))?;

    // By default libseccomp sets no_new_privileges when it loads a filter. The spec's
    // process.noNewPrivileges decides that instead.
    filter
        .set_ctl_nnp(false)
        .map_err(failed("leave no_new_privileges to the spec"))?;
    for architecture in profile.architectures().iter().flatten() {
        let name = oci_name(architecture)?;
        let parsed: ScmpArch = name.parse().map_err(|_| {
            InitError::invalid_spec(format!("linux.seccomp.architectures: unknown {name}"))
        })?;
        filter
            .add_arch(parsed)
            .map_err(failed(format_args!("add seccomp architecture {name}")))?;
    }
    for flag in profile.flags().iter().flatten() {
        set_flag(&mut filter, *flag)?;
    }

    let mut notifies = false;
    for rule in profile.syscalls().iter().flatten() {
        let errno = rule.errno_ret().map_or(DEFAULT_ERRNO, |errno| errno as i32);
        let rule_action = action(rule.action(), Some(errno))?;
        if rule_action == default_action {
            // libseccomp rejects a rule that repeats the default action, and it changes
            // nothing.
            continue;
        }
        if rule_action == ScmpAction::Notify {
            check_notified_names(rule.names())?;
        }
        let conditions = conditions(rule.args().as_deref().unwrap_or_default())?;
        for name in rule.names() {
            let Ok(syscall) = ScmpSyscall::from_name(name) else {
                continue;
            };
            for condition in &conditions {
                filter
                    .add_rule_conditional(rule_action, syscall, condition)
                    .map_err(failed(format_args!("add seccomp rule for {name}")))?;
            }
            notifies |= rule_action == ScmpAction::Notify;
        }
    }
    Ok(Filter {
        context: filter,
        notifies,
    })
}

/// Loads a compiled filter into this process, and passes its notify fd, if it has one,
/// to the caller over the sync socket.
pub(crate) fn load(filter: &Filter) -> Result<(), InitError> {
    filter
        .context
        .load()
        .map_err(failed("load the seccomp filter"))?;
    if filter.notifies {
        send_notify_fd(&filter.context, super::sync_socket())?;
    }
    Ok(())
}

/// Sends the notify fd of the loaded filter. The fd stays open in the init until
/// `execve`, which closes it because the kernel creates it close-on-exec.
fn send_notify_fd(context: &ScmpFilterContext, sync: BorrowedFd<'_>) -> Result<(), InitError> {
    let raw = context
        .get_notify_fd()
        .map_err(failed("get the seccomp notify fd"))?;
    // SAFETY: libseccomp returned the notify fd that the kernel created for the filter
    // loaded above. libseccomp keeps it open for the life of the process, and it is used
    // only within this function.
    let notify = unsafe { BorrowedFd::borrow_raw(raw) };

    send_message(sync, &FromInit::SeccompNotify)
        .map_err(failed("announce the seccomp notify fd to the caller"))?;
    send_fd(sync, notify).map_err(failed(format_args!(
        "send seccomp notify fd {raw} to the caller"
    )))
}

/// Checks that `SCMP_ACT_NOTIFY` has a listener and that `listenerMetadata` comes only
/// with `listenerPath`, as the runtime spec requires.
fn check_listener(profile: &LinuxSeccomp) -> Result<(), InitError> {
    let has_path = profile
        .listener_path()
        .as_ref()
        .is_some_and(|path| !path.as_os_str().is_empty());
    if profile.listener_metadata().is_some() && !has_path {
        return Err(InitError::invalid_spec(
            "linux.seccomp.listenerMetadata is set without linux.seccomp.listenerPath",
        ));
    }

    let notifies = profile
        .syscalls()
        .iter()
        .flatten()
        .any(|rule| rule.action() == LinuxSeccompAction::ScmpActNotify);
    if notifies && !has_path {
        return Err(InitError::invalid_spec(
            "seccomp action SCMP_ACT_NOTIFY needs linux.seccomp.listenerPath, the unix \
             socket that receives the notify fd",
        ));
    }
    Ok(())
}

fn check_notified_names(names: &[String]) -> Result<(), InitError> {
    match names
        .iter()
        .find(|name| SYSCALLS_PASSING_NOTIFY_FD.contains(&name.as_str()))
    {
        Some(name) => Err(InitError::invalid_spec(format!(
            "seccomp action SCMP_ACT_NOTIFY on {name} is not supported: the init calls \
             {name} after loading the filter to pass the notify fd to the runtime"
        ))),
        None => Ok(()),
    }
}

fn action(action: LinuxSeccompAction, errno: Option<i32>) -> Result<ScmpAction, InitError> {
    let name = oci_name(&action)?;
    ScmpAction::from_str(&name, errno)
        .map_err(|error| InitError::invalid_spec(format!("seccomp action {name}: {error}")))
}

/// Sets the libseccomp attribute of `flag`. libseccomp checks that the kernel has the
/// flag, so a flag this machine lacks fails here, at create.
fn set_flag(filter: &mut ScmpFilterContext, flag: LinuxSeccompFilterFlag) -> Result<(), InitError> {
    let result = match flag {
        LinuxSeccompFilterFlag::SeccompFilterFlagLog => filter.set_ctl_log(true),
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync => filter.set_ctl_tsync(true),
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => filter.set_ctl_ssb(true),
        // Needs libseccomp 2.6 and Linux 5.19.
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => filter.set_ctl_waitkill(true),
    };
    result.map(drop).map_err(|cause| InitError {
        kind: FailureKind::SeccompFlagUnsupported,
        message: format!(
            "seccomp flag {} cannot be applied: {cause}",
            oci_name(&flag).unwrap_or_else(|_| format!("{flag:?}"))
        ),
    })
}

/// Turns a rule's argument checks into sets of conditions, one libseccomp rule per set.
/// Checks on distinct arguments must all hold, so they form one set. When one argument
/// is checked more than once, each check is its own rule and any of them matches,
/// because one libseccomp rule cannot test an argument twice.
fn conditions(args: &[LinuxSeccompArg]) -> Result<Vec<Vec<ScmpArgCompare>>, InitError> {
    let compares = args.iter().map(compare).collect::<Result<Vec<_>, _>>()?;
    let mut indices: Vec<usize> = args.iter().map(|arg| arg.index()).collect();
    indices.sort_unstable();
    indices.dedup();

    if indices.len() == args.len() {
        Ok(vec![compares])
    } else {
        Ok(compares.into_iter().map(|compare| vec![compare]).collect())
    }
}

fn compare(arg: &LinuxSeccompArg) -> Result<ScmpArgCompare, InitError> {
    let index = u32::try_from(arg.index())
        .ok()
        .filter(|index| *index < 6)
        .ok_or_else(|| {
            InitError::invalid_spec(format!(
                "seccomp argument index {} is not between 0 and 5",
                arg.index()
            ))
        })?;
    let (operator, datum) = match arg.op() {
        LinuxSeccompOperator::ScmpCmpNe => (ScmpCompareOp::NotEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpLt => (ScmpCompareOp::Less, arg.value()),
        LinuxSeccompOperator::ScmpCmpLe => (ScmpCompareOp::LessOrEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpEq => (ScmpCompareOp::Equal, arg.value()),
        LinuxSeccompOperator::ScmpCmpGe => (ScmpCompareOp::GreaterEqual, arg.value()),
        LinuxSeccompOperator::ScmpCmpGt => (ScmpCompareOp::Greater, arg.value()),
        // In the OCI form `value` is the mask and `valueTwo` the value compared with.
        LinuxSeccompOperator::ScmpCmpMaskedEq => (
            ScmpCompareOp::MaskedEqual(arg.value()),
            arg.value_two().unwrap_or(0),
        ),
    };
    Ok(ScmpArgCompare::new(index, operator, datum))
}

/// Returns the OCI spelling of an enum value, such as `SCMP_ARCH_X86_64`.
fn oci_name<T: Serialize + std::fmt::Debug>(value: &T) -> Result<String, InitError> {
    serde_json::to_value(value)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .ok_or_else(|| InitError::invalid_spec(format!("{value:?} has no OCI name")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSyscallBuilder};

    fn arg(index: usize, op: LinuxSeccompOperator, value: u64) -> LinuxSeccompArg {
        LinuxSeccompArgBuilder::default()
            .index(index)
            .op(op)
            .value(value)
            .build()
            .unwrap()
    }

    #[test]
    fn distinct_arguments_form_one_rule() {
        let args = [
            arg(0, LinuxSeccompOperator::ScmpCmpEq, 1),
            arg(1, LinuxSeccompOperator::ScmpCmpNe, 2),
        ];

        let sets = conditions(&args).unwrap();

        assert_eq!(sets.len(), 1);
        assert_eq!(sets[0].len(), 2);
    }

    #[test]
    fn repeated_argument_splits_rules() {
        let args = [
            arg(0, LinuxSeccompOperator::ScmpCmpEq, 1),
            arg(0, LinuxSeccompOperator::ScmpCmpEq, 2),
        ];

        let sets = conditions(&args).unwrap();

        assert_eq!(sets.len(), 2);
    }

    #[test]
    fn argument_index_above_five_is_rejected() {
        let error = compare(&arg(6, LinuxSeccompOperator::ScmpCmpEq, 1)).unwrap_err();

        assert!(error.message.contains("index 6"), "{}", error.message);
    }

    fn profile_with(
        flags: Vec<LinuxSeccompFilterFlag>,
        notified: &[&str],
        listener: Option<&str>,
    ) -> LinuxSeccomp {
        let mut builder = LinuxSeccompBuilder::default()
            .default_action(LinuxSeccompAction::ScmpActAllow)
            .flags(flags);
        if !notified.is_empty() {
            builder = builder.syscalls(vec![LinuxSyscallBuilder::default()
                .names(
                    notified
                        .iter()
                        .map(|name| name.to_string())
                        .collect::<Vec<_>>(),
                )
                .action(LinuxSeccompAction::ScmpActNotify)
                .build()
                .unwrap()]);
        }
        if let Some(path) = listener {
            builder = builder.listener_path(path);
        }
        builder.build().unwrap()
    }

    #[test]
    fn flags_set_libseccomp_attributes() {
        let flags = vec![
            LinuxSeccompFilterFlag::SeccompFilterFlagTsync,
            LinuxSeccompFilterFlag::SeccompFilterFlagLog,
            LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow,
        ];

        let with = compile(&profile_with(flags, &[], None)).unwrap();
        let without = compile(&profile_with(Vec::new(), &[], None)).unwrap();

        assert!(with.context.get_ctl_tsync().unwrap());
        assert!(with.context.get_ctl_log().unwrap());
        assert!(with.context.get_ctl_ssb().unwrap());
        assert!(!without.context.get_ctl_tsync().unwrap());
        assert!(!without.context.get_ctl_log().unwrap());
        assert!(!without.context.get_ctl_ssb().unwrap());
    }

    #[test]
    fn notify_rule_marks_filter_as_notifying() {
        let notifying = compile(&profile_with(Vec::new(), &["mkdir"], Some("/run/agent"))).unwrap();
        let unknown_only = compile(&profile_with(
            Vec::new(),
            &["no_such_syscall"],
            Some("/run/agent"),
        ))
        .unwrap();

        assert!(notifying.notifies);
        assert!(!unknown_only.notifies);
    }

    #[test]
    fn notify_on_fd_passing_syscall_is_rejected() {
        for name in ["sendto", "sendmsg"] {
            let error = compile(&profile_with(Vec::new(), &[name], Some("/run/agent")))
                .err()
                .unwrap();

            assert!(
                matches!(error.kind, FailureKind::InvalidSpec),
                "{}",
                error.message
            );
            assert!(error.message.contains(name), "{}", error.message);
        }
    }

    #[test]
    fn notify_without_listener_is_invalid() {
        let error = compile(&profile_with(Vec::new(), &["mkdir"], None))
            .err()
            .unwrap();

        assert!(matches!(error.kind, FailureKind::InvalidSpec));
        assert!(error.message.contains("listenerPath"), "{}", error.message);
    }

    #[test]
    fn oci_names_match_libseccomp() {
        assert_eq!(
            oci_name(&LinuxSeccompAction::ScmpActErrno).unwrap(),
            "SCMP_ACT_ERRNO"
        );
        assert_eq!(
            action(LinuxSeccompAction::ScmpActErrno, Some(1)).unwrap(),
            ScmpAction::Errno(1)
        );
    }
}
