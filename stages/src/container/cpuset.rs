//! Stage `cpuset`: fits `linux.resources.cpu.cpus` and `mems` to the CPUs and memory
//! nodes online in the guest, because the host sizes them for the host and the kernel
//! rejects a cpuset naming an offline CPU.

use std::collections::BTreeSet;
use std::io;
use std::path::Path;

use slog::warn;

use crate::context::ContainerContext;
use crate::error::StageError;
use crate::stage::{NoUndo, Stage, Undo};

/// Intersects the spec's cpuset with the online CPUs and memory nodes.
#[derive(Debug, Default)]
pub struct Cpuset;

/// Largest CPU or node number accepted in a list, so that a range such as `0-4000000000`
/// cannot make the stage allocate without bound. Linux's NR_CPUS is at most 8192.
const MAX_CPU: u32 = 65_535;

impl Stage<ContainerContext> for Cpuset {
    fn name(&self) -> &'static str {
        "cpuset"
    }

    fn apply(&self, ctx: &mut ContainerContext) -> Result<Box<dyn Undo>, StageError> {
        let sysfs = ctx.sandbox.paths.sysfs.clone();
        let logger = ctx
            .sandbox
            .logger
            .new(slog::o!("container" => ctx.id.clone()));
        let Some(cpu) = ctx
            .spec
            .linux_mut()
            .as_mut()
            .and_then(|linux| linux.resources_mut().as_mut())
            .and_then(|resources| resources.cpu_mut().as_mut())
        else {
            return Ok(Box::new(NoUndo));
        };

        let cpus = fit(
            cpu.cpus().as_deref(),
            &sysfs.join("devices/system/cpu/online"),
            "cpus",
            &logger,
        )?;
        let mems = fit(
            cpu.mems().as_deref(),
            &sysfs.join("devices/system/node/online"),
            "mems",
            &logger,
        )?;
        cpu.set_cpus(cpus);
        cpu.set_mems(mems);

        Ok(Box::new(NoUndo))
    }
}

/// Returns `requested` intersected with the list in `online_file`: unchanged when there
/// is no request or the guest does not report the list, `None` when nothing is left.
fn fit(
    requested: Option<&str>,
    online_file: &Path,
    field: &'static str,
    logger: &slog::Logger,
) -> Result<Option<String>, StageError> {
    let Some(requested) = requested.filter(|value| !value.trim().is_empty()) else {
        return Ok(requested.map(str::to_string));
    };
    let requested_set = parse_cpu_list(requested)
        .map_err(|reason| StageError::invalid("linux.resources.cpu list", requested, reason))?;

    // A kernel without NUMA support has no node directory; then the request stays as
    // it is and the kernel checks it.
    let online_text = match std::fs::read_to_string(online_file) {
        Ok(text) => text,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            warn!(logger, "online list missing, cpuset kept as requested";
                "field" => field, "path" => %online_file.display());
            return Ok(Some(requested.to_string()));
        }
        Err(error) => return Err(StageError::io("read", online_file, error)),
    };
    let online = parse_cpu_list(online_text.trim()).map_err(|reason| {
        StageError::invalid(
            "online list",
            online_text.trim(),
            format!("{reason} in {}", online_file.display()),
        )
    })?;

    let intersection: BTreeSet<u32> = requested_set.intersection(&online).copied().collect();
    if intersection.is_empty() {
        warn!(logger, "no requested entry is online, cpuset constraint dropped";
            "field" => field, "requested" => requested, "online" => online_text.trim());
        return Ok(None);
    }
    Ok(Some(format_cpu_list(&intersection)))
}

/// Parses the kernel's list syntax, such as `0-3,5,7-8`, into a set.
pub fn parse_cpu_list(text: &str) -> Result<BTreeSet<u32>, String> {
    let mut set = BTreeSet::new();
    if text.is_empty() {
        return Ok(set);
    }

    for part in text.split(',') {
        let (first, last) = match part.split_once('-') {
            Some((first, last)) => (parse_number(first)?, parse_number(last)?),
            None => {
                let number = parse_number(part)?;
                (number, number)
            }
        };
        if first > last {
            return Err(format!("range {part:?} is reversed"));
        }
        set.extend(first..=last);
    }

    Ok(set)
}

/// Formats a set in the kernel's list syntax, with ranges for consecutive numbers.
pub fn format_cpu_list(set: &BTreeSet<u32>) -> String {
    let mut parts = Vec::new();
    let mut numbers = set.iter().copied().peekable();

    while let Some(first) = numbers.next() {
        let mut last = first;
        while numbers.peek() == Some(&(last + 1)) {
            last += 1;
            numbers.next();
        }
        if first == last {
            parts.push(first.to_string());
        } else {
            parts.push(format!("{first}-{last}"));
        }
    }

    parts.join(",")
}

fn parse_number(text: &str) -> Result<u32, String> {
    let not_a_number = || format!("{text:?} is not a CPU or node number");
    if text.is_empty() || !text.bytes().all(|byte| byte.is_ascii_digit()) {
        return Err(not_a_number());
    }
    let number: u32 = text.parse().map_err(|_| not_a_number())?;
    if number > MAX_CPU {
        return Err(format!("{number} is above the maximum {MAX_CPU}"));
    }
    Ok(number)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use oci_spec::runtime::{LinuxBuilder, LinuxCpuBuilder, LinuxResourcesBuilder};

    use super::*;
    use crate::context::Sandbox;
    use crate::error::ErrorCode;
    use crate::testing::{test_context, test_sandbox, TestSandbox};

    fn set(numbers: &[u32]) -> BTreeSet<u32> {
        numbers.iter().copied().collect()
    }

    fn write_online(sandbox: &Arc<Sandbox>, kind: &str, list: &str) {
        let dir = sandbox.paths.sysfs.join("devices/system").join(kind);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("online"), format!("{list}\n")).unwrap();
    }

    /// Runs the stage on a spec requesting `cpus` and `mems`; returns the result and the
    /// spec's values afterwards.
    fn run(
        test: &TestSandbox,
        cpus: Option<&str>,
        mems: Option<&str>,
    ) -> (Result<(), StageError>, Option<String>, Option<String>) {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(cpus) = cpus {
            cpu = cpu.cpus(cpus);
        }
        if let Some(mems) = mems {
            cpu = cpu.mems(mems);
        }
        let resources = LinuxResourcesBuilder::default()
            .cpu(cpu.build().unwrap())
            .build()
            .unwrap();
        let linux = LinuxBuilder::default()
            .resources(resources)
            .build()
            .unwrap();
        let mut ctx = test_context(&test.sandbox, "c1");
        ctx.spec.set_linux(Some(linux));

        let result = Cpuset.apply(&mut ctx).map(|_| ());

        let cpu = ctx
            .spec
            .linux()
            .as_ref()
            .unwrap()
            .resources()
            .as_ref()
            .unwrap();
        let cpu = cpu.cpu().as_ref().unwrap();
        (result, cpu.cpus().clone(), cpu.mems().clone())
    }

    #[test]
    fn parse_list_ranges_and_singles() {
        assert_eq!(
            parse_cpu_list("0-3,5,7-8").unwrap(),
            set(&[0, 1, 2, 3, 5, 7, 8])
        );
        assert_eq!(parse_cpu_list("4").unwrap(), set(&[4]));
        assert_eq!(parse_cpu_list("").unwrap(), set(&[]));
    }

    #[test]
    fn parse_list_rejects_malformed() {
        for text in ["a", "1-", "-1", "3-1", "1,,2", "+1", "1 ,2", "0-99999999"] {
            assert!(parse_cpu_list(text).is_err(), "{text:?} accepted");
        }
    }

    #[test]
    fn format_list_compresses_ranges() {
        assert_eq!(format_cpu_list(&set(&[0, 1, 2, 3, 5, 7, 8])), "0-3,5,7-8");
        assert_eq!(format_cpu_list(&set(&[2])), "2");
        assert_eq!(format_cpu_list(&set(&[])), "");
    }

    #[test]
    fn keeps_intersection_with_online() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        write_online(&test.sandbox, "cpu", "0-1");
        write_online(&test.sandbox, "node", "0");

        let (result, cpus, mems) = run(&test, Some("0-3"), Some("0-1"));

        assert!(result.is_ok());
        assert_eq!(cpus.as_deref(), Some("0-1"));
        assert_eq!(mems.as_deref(), Some("0"));
    }

    #[test]
    fn empty_intersection_drops_constraint() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        write_online(&test.sandbox, "cpu", "0-1");
        write_online(&test.sandbox, "node", "0");

        let (result, cpus, mems) = run(&test, Some("4-7"), Some("0"));

        assert!(result.is_ok());
        assert_eq!(cpus, None);
        assert_eq!(mems.as_deref(), Some("0"));
        let lines = test.records.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("constraint dropped"), "{lines:?}");
        assert!(lines[0].contains("requested=4-7"), "{lines:?}");
    }

    #[test]
    fn malformed_spec_list_is_invalid_argument() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        write_online(&test.sandbox, "cpu", "0-1");

        let (result, cpus, _) = run(&test, Some("0-x"), None);

        let error = result.expect_err("malformed list rejected");
        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        assert!(error.to_string().contains("\"0-x\""), "{error}");
        assert_eq!(cpus.as_deref(), Some("0-x"));
    }

    #[test]
    fn malformed_online_list_is_invalid_argument() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        write_online(&test.sandbox, "cpu", "0-1,garbage");

        let (result, _, _) = run(&test, Some("0"), None);

        let error = result.expect_err("malformed online list rejected");
        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        assert!(error.to_string().contains("0-1,garbage"), "{error}");
    }

    #[test]
    fn missing_node_list_keeps_mems() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        write_online(&test.sandbox, "cpu", "0-3");

        let (result, cpus, mems) = run(&test, Some("2-5"), Some("0-1"));

        assert!(result.is_ok());
        assert_eq!(cpus.as_deref(), Some("2-3"));
        assert_eq!(mems.as_deref(), Some("0-1"));
    }

    #[test]
    fn spec_without_cpu_unchanged() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let mut ctx = test_context(&test.sandbox, "c1");
        let before = ctx.spec.clone();

        Cpuset.apply(&mut ctx).expect("nothing to fit");

        assert_eq!(ctx.spec, before);
    }
}
