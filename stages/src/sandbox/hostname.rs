//! Stage `hostname`: sets the hostname in the agent's UTS namespace, which the sandbox's
//! containers share.

use crate::context::SandboxContext;
use crate::error::StageError;
use crate::stage::{NoUndo, Stage, Undo};

/// Sets the requested hostname; undo restores the previous one.
#[derive(Debug, Default)]
pub struct Hostname;

/// Maximum hostname length in bytes that Linux accepts (HOST_NAME_MAX).
const MAX_HOSTNAME_LEN: usize = 64;

struct RestoreHostname {
    previous: Option<String>,
}

impl Stage<SandboxContext> for Hostname {
    fn name(&self) -> &'static str {
        "hostname"
    }

    fn apply(&self, ctx: &mut SandboxContext) -> Result<Box<dyn Undo>, StageError> {
        let hostname = ctx.request.hostname.as_str();
        if hostname.is_empty() {
            return Ok(Box::new(NoUndo));
        }
        validate_hostname(hostname)?;

        let previous = nix::unistd::gethostname().map_err(|source| StageError::System {
            operation: "get hostname before setting",
            value: hostname.to_string(),
            source,
        })?;
        let previous = previous.to_string_lossy().into_owned();

        nix::unistd::sethostname(hostname).map_err(|source| StageError::System {
            operation: "set hostname",
            value: hostname.to_string(),
            source,
        })?;

        Ok(Box::new(RestoreHostname {
            previous: Some(previous),
        }))
    }
}

impl Undo for RestoreHostname {
    fn undo(&mut self) -> Result<(), StageError> {
        let Some(previous) = self.previous.take() else {
            return Ok(());
        };
        nix::unistd::sethostname(&previous).map_err(|source| StageError::System {
            operation: "restore hostname",
            value: previous,
            source,
        })
    }
}

fn validate_hostname(hostname: &str) -> Result<(), StageError> {
    if hostname.len() > MAX_HOSTNAME_LEN {
        return Err(StageError::invalid(
            "hostname",
            hostname,
            format!("must be at most {MAX_HOSTNAME_LEN} bytes"),
        ));
    }
    if hostname.contains('\0') {
        return Err(StageError::invalid(
            "hostname",
            hostname,
            "must not contain a NUL byte",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use nix::sched::{unshare, CloneFlags};

    use super::*;
    use crate::error::ErrorCode;
    use crate::request::SandboxRequest;
    use crate::testing::test_sandbox;

    /// Runs `body` on a new thread that first moves into its own UTS namespace, so the
    /// hostname changes never reach this machine. The namespace ends with the thread.
    fn in_private_uts<T: Send + 'static>(body: impl FnOnce() -> T + Send + 'static) -> T {
        std::thread::spawn(move || {
            unshare(CloneFlags::CLONE_NEWUTS).expect("unshare UTS namespace (needs root)");
            body()
        })
        .join()
        .expect("test thread panicked")
    }

    fn context(root: &std::path::Path, hostname: &str) -> SandboxContext {
        SandboxContext {
            sandbox: test_sandbox(root).sandbox,
            request: SandboxRequest {
                hostname: hostname.to_string(),
                ..SandboxRequest::default()
            },
        }
    }

    fn current() -> String {
        nix::unistd::gethostname().unwrap().into_string().unwrap()
    }

    #[test]
    fn hostname_set_and_restored() {
        let root = tempfile::tempdir().unwrap();
        let mut ctx = context(root.path(), "berth-pod");

        let (original, during, after, after_second) = in_private_uts(move || {
            let original = current();
            let mut undo = Hostname.apply(&mut ctx).expect("hostname set");
            let during = current();
            undo.undo().expect("hostname restored");
            let after = current();
            nix::unistd::sethostname("changed-later").unwrap();
            undo.undo().expect("second undo does nothing");
            (original, during, after, current())
        });

        assert_eq!(during, "berth-pod");
        assert_eq!(after, original);
        assert_eq!(after_second, "changed-later");
    }

    #[test]
    fn empty_hostname_changes_nothing() {
        let root = tempfile::tempdir().unwrap();
        let mut ctx = context(root.path(), "");

        let (before, after) = in_private_uts(move || {
            let before = current();
            Hostname.apply(&mut ctx).expect("nothing to set");
            (before, current())
        });

        assert_eq!(before, after);
    }

    #[test]
    fn too_long_hostname_rejected() {
        let root = tempfile::tempdir().unwrap();
        let mut ctx = context(root.path(), &"h".repeat(65));

        // Validation fails before any system call, so no namespace is needed.
        let error = Hostname
            .apply(&mut ctx)
            .err()
            .expect("long hostname rejected");

        assert_eq!(error.code(), ErrorCode::InvalidArgument);
    }
}
