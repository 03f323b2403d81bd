//! Stage `sysctls`: applies the spec's network sysctls (`net.*`) in the agent's network
//! namespace, which the sandbox's containers share, and removes them from the spec so
//! the launcher does not write them again. Other sysctls stay for the launcher.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::context::ContainerContext;
use crate::error::{collect_undo_errors, StageError};
use crate::stage::{Stage, Undo};

/// Writes `net.*` sysctls through `<procfs>/sys`; undo writes the previous values back.
#[derive(Debug, Default)]
pub struct Sysctls;

/// The previous values of the sysctls this stage changed, in write order.
struct Restore {
    previous: Vec<(PathBuf, String)>,
}

impl Stage<ContainerContext> for Sysctls {
    fn name(&self) -> &'static str {
        "sysctls"
    }

    fn apply(&self, ctx: &mut ContainerContext) -> Result<Box<dyn Undo>, StageError> {
        let proc_sys = ctx.sandbox.paths.procfs.join("sys");
        let Some(sysctls) = ctx
            .spec
            .linux_mut()
            .as_mut()
            .and_then(|linux| linux.sysctl_mut().as_mut())
        else {
            return Ok(Box::new(Restore {
                previous: Vec::new(),
            }));
        };

        // Sorted so that the write order, and a failure, do not depend on hash order.
        let mut keys: Vec<String> = sysctls
            .keys()
            .filter(|key| key.starts_with("net."))
            .cloned()
            .collect();
        keys.sort();
        for key in &keys {
            validate_key(key)?;
        }

        let mut restore = Restore {
            previous: Vec::new(),
        };
        for key in &keys {
            let path = proc_sys.join(key.replace('.', "/"));
            if let Err(error) = write_one(key, &path, &sysctls[key], &mut restore) {
                // Leave the namespace as it was; the write error is the one to report.
                let _ = restore.undo();
                return Err(error);
            }
        }

        for key in &keys {
            sysctls.remove(key);
        }
        Ok(Box::new(restore))
    }
}

impl Undo for Restore {
    // NOTE: the sandbox's containers share one network namespace, so removing one
    // container restores values that another container may have set since, or relies on.
    fn undo(&mut self) -> Result<(), StageError> {
        let mut errors = Vec::new();
        while let Some((path, value)) = self.previous.pop() {
            if let Err(error) = write_value(&path, &value) {
                errors.push(StageError::io("restore sysctl", path, error));
            }
        }
        collect_undo_errors(errors)
    }
}

/// Reads the current value of one sysctl, writes the new one and records the old one.
fn write_one(key: &str, path: &Path, value: &str, restore: &mut Restore) -> Result<(), StageError> {
    let previous = match std::fs::read_to_string(path) {
        Ok(previous) => previous.trim_end_matches('\n').to_string(),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            return Err(StageError::invalid(
                "sysctl",
                key,
                format!("the guest kernel has no {}", path.display()),
            ));
        }
        Err(error) => return Err(StageError::io("read sysctl", path, error)),
    };

    write_value(path, value).map_err(|error| StageError::io("write sysctl", path, error))?;
    restore.previous.push((path.to_path_buf(), previous));
    Ok(())
}

fn write_value(path: &Path, value: &str) -> io::Result<()> {
    // Sysctl files exist or the key is unknown, so the file is never created.
    let mut file = OpenOptions::new().write(true).truncate(true).open(path)?;
    file.write_all(value.as_bytes())
}

/// Rejects keys that could name a path outside `/proc/sys/net`.
fn validate_key(key: &str) -> Result<(), StageError> {
    let invalid = |reason: &str| StageError::invalid("sysctl", key, reason);

    if key.contains('/') {
        return Err(invalid("must not contain '/'"));
    }
    if key.contains('\0') {
        return Err(invalid("must not contain a NUL byte"));
    }
    if key.split('.').any(str::is_empty) {
        return Err(invalid("must not contain empty segments"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Arc;

    use oci_spec::runtime::LinuxBuilder;

    use super::*;
    use crate::context::{ContainerContext, Sandbox};
    use crate::error::ErrorCode;
    use crate::testing::{test_context, test_sandbox};

    /// Creates `<procfs>/sys/<key as path>` holding `value` and a newline, as procfs
    /// shows it.
    fn fake_sysctl(sandbox: &Arc<Sandbox>, key: &str, value: &str) -> PathBuf {
        let path = sandbox.paths.procfs.join("sys").join(key.replace('.', "/"));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, format!("{value}\n")).unwrap();
        path
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    fn context_with(sandbox: &Arc<Sandbox>, sysctls: &[(&str, &str)]) -> ContainerContext {
        let map: HashMap<String, String> = sysctls
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect();
        let linux = LinuxBuilder::default().sysctl(map).build().unwrap();
        let mut ctx = test_context(sandbox, "c1");
        ctx.spec.set_linux(Some(linux));
        ctx
    }

    fn spec_keys(ctx: &ContainerContext) -> Vec<String> {
        let sysctls = ctx
            .spec
            .linux()
            .as_ref()
            .unwrap()
            .sysctl()
            .as_ref()
            .unwrap();
        let mut keys: Vec<String> = sysctls.keys().cloned().collect();
        keys.sort();
        keys
    }

    #[test]
    fn net_sysctls_written_and_removed_from_spec() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let forward = fake_sysctl(&test.sandbox, "net.ipv4.ip_forward", "0");
        let somaxconn = fake_sysctl(&test.sandbox, "net.core.somaxconn", "4096");
        let mut ctx = context_with(
            &test.sandbox,
            &[
                ("net.ipv4.ip_forward", "1"),
                ("net.core.somaxconn", "1024"),
                ("kernel.shm_rmid_forced", "1"),
            ],
        );

        Sysctls.apply(&mut ctx).expect("sysctls applied");

        assert_eq!(read(&forward), "1");
        assert_eq!(read(&somaxconn), "1024");
        assert_eq!(spec_keys(&ctx), ["kernel.shm_rmid_forced"]);
    }

    #[test]
    fn undo_restores_previous_values() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let forward = fake_sysctl(&test.sandbox, "net.ipv4.ip_forward", "0");
        let range = fake_sysctl(
            &test.sandbox,
            "net.ipv4.ip_local_port_range",
            "32768\t60999",
        );
        let mut ctx = context_with(
            &test.sandbox,
            &[
                ("net.ipv4.ip_forward", "1"),
                ("net.ipv4.ip_local_port_range", "1024 2048"),
            ],
        );
        let mut undo = Sysctls.apply(&mut ctx).expect("sysctls applied");
        assert_eq!(read(&range), "1024 2048");

        undo.undo().expect("values restored");
        std::fs::write(&forward, "7").unwrap();
        undo.undo().expect("second undo does nothing");

        assert_eq!(read(&range), "32768\t60999");
        assert_eq!(read(&forward), "7");
    }

    #[test]
    fn bad_keys_rejected_before_any_write() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let forward = fake_sysctl(&test.sandbox, "net.ipv4.ip_forward", "0");

        for bad in ["net.ipv4/../../x", "net..x", "net.ipv4.", "net.a\0b"] {
            let mut ctx = context_with(&test.sandbox, &[("net.ipv4.ip_forward", "1"), (bad, "1")]);

            let error = Sysctls.apply(&mut ctx).err().expect("bad key rejected");

            assert_eq!(error.code(), ErrorCode::InvalidArgument, "{bad:?}");
            assert!(error.to_string().contains("invalid sysctl"), "{error}");
            assert_eq!(read(&forward), "0\n", "{bad:?}");
            assert_eq!(spec_keys(&ctx).len(), 2);
        }
    }

    #[test]
    fn partial_failure_restores_written_values() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        // Sorted order writes net.core.somaxconn first, then fails on the missing key.
        let somaxconn = fake_sysctl(&test.sandbox, "net.core.somaxconn", "4096");
        let mut ctx = context_with(
            &test.sandbox,
            &[
                ("net.core.somaxconn", "1024"),
                ("net.ipv4.no_such_key", "1"),
            ],
        );

        let error = Sysctls.apply(&mut ctx).err().expect("missing key fails");

        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        assert!(
            error.to_string().contains("net.ipv4.no_such_key"),
            "{error}"
        );
        assert_eq!(read(&somaxconn), "4096");
        assert_eq!(spec_keys(&ctx).len(), 2);
    }
}
