//! The seccomp filter of `linux.seccomp`, compiled with libseccomp.
//!
//! The filter is compiled before the init reports ready, so a bad profile fails create,
//! and loaded just before `execve` (see `process::exec`). Syscall names this
//! architecture does not know are skipped, as profiles list syscalls of several
//! architectures.

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{
    LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompFilterFlag, LinuxSeccompOperator,
};
use serde::Serialize;

use super::{failed, InitError};

/// Errno of an `SCMP_ACT_ERRNO` or `SCMP_ACT_TRACE` without `errnoRet`, as runtimes use.
const DEFAULT_ERRNO: i32 = libc::EPERM;

/// Compiles the profile into a filter that is not loaded yet.
pub(crate) fn compile(profile: &LinuxSeccomp) -> Result<ScmpFilterContext, InitError> {
    let default_errno = profile
        .default_errno_ret()
        .map_or(DEFAULT_ERRNO, |errno| errno as i32);
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

    for rule in profile.syscalls().iter().flatten() {
        let errno = rule.errno_ret().map_or(DEFAULT_ERRNO, |errno| errno as i32);
        let rule_action = action(rule.action(), Some(errno))?;
        if rule_action == default_action {
            // libseccomp rejects a rule that repeats the default action, and it changes
            // nothing.
            continue;
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
        }
    }
    Ok(filter)
}

/// Loads a compiled filter into this process.
pub(crate) fn load(filter: &ScmpFilterContext) -> Result<(), InitError> {
    filter.load().map_err(failed("load the seccomp filter"))
}

fn action(action: LinuxSeccompAction, errno: Option<i32>) -> Result<ScmpAction, InitError> {
    let name = oci_name(&action)?;
    if action == LinuxSeccompAction::ScmpActNotify {
        return Err(InitError::invalid_spec(
            "seccomp action SCMP_ACT_NOTIFY needs a listener socket, which is not supported",
        ));
    }
    ScmpAction::from_str(&name, errno)
        .map_err(|error| InitError::invalid_spec(format!("seccomp action {name}: {error}")))
}

fn set_flag(filter: &mut ScmpFilterContext, flag: LinuxSeccompFilterFlag) -> Result<(), InitError> {
    let result = match flag {
        LinuxSeccompFilterFlag::SeccompFilterFlagLog => filter.set_ctl_log(true),
        LinuxSeccompFilterFlag::SeccompFilterFlagTsync => filter.set_ctl_tsync(true),
        LinuxSeccompFilterFlag::SeccompFilterFlagSpecAllow => filter.set_ctl_ssb(true),
        LinuxSeccompFilterFlag::SeccompFilterFlagWaitKillableRecv => filter.set_ctl_waitkill(true),
    };
    result
        .map(drop)
        .map_err(failed(format_args!("set seccomp flag {flag:?}")))
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
    use oci_spec::runtime::LinuxSeccompArgBuilder;

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
