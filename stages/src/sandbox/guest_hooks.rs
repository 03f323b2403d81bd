//! Stage `guest-hooks`: checks the guest hook directory that CreateSandbox names and
//! logs the hooks found, which the container `hooks` stage adds to every container.
//!
//! A missing directory is logged and accepted, as Kata's agent does, because the host
//! names a path inside the guest image that the image may not have.

use std::path::Path;

use slog::{info, warn};

use crate::container::hooks::scan_hooks;
use crate::context::SandboxContext;
use crate::error::StageError;
use crate::stage::{NoUndo, Stage, Undo};

/// Scans `prestart`, `poststart` and `poststop` under the guest hook path.
#[derive(Debug, Default)]
pub struct GuestHooks;

impl Stage<SandboxContext> for GuestHooks {
    fn name(&self) -> &'static str {
        "guest-hooks"
    }

    fn apply(&self, ctx: &mut SandboxContext) -> Result<Box<dyn Undo>, StageError> {
        let requested = ctx.request.guest_hook_path.as_str();
        if requested.is_empty() {
            return Ok(Box::new(NoUndo));
        }
        let path = Path::new(requested);
        if !path.is_absolute() {
            return Err(StageError::invalid(
                "guest hook path",
                requested,
                "must be an absolute path",
            ));
        }
        if ctx.sandbox.guest_hooks.as_deref() != Some(path) {
            // The container stage reads the path from the sandbox, so a request the
            // sandbox was not built from would silently add no hooks.
            return Err(StageError::invalid(
                "guest hook path",
                requested,
                "differs from the sandbox's guest hook path",
            ));
        }

        if !path.is_dir() {
            warn!(ctx.sandbox.logger, "guest hook directory missing, containers get no guest hooks";
                "path" => requested);
            return Ok(Box::new(NoUndo));
        }
        for point in ["prestart", "poststart", "poststop"] {
            let hooks = scan_hooks(&path.join(point))?;
            info!(ctx.sandbox.logger, "guest hooks found";
                "point" => point, "count" => hooks.len(), "path" => requested);
        }
        Ok(Box::new(NoUndo))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::error::ErrorCode;
    use crate::request::SandboxRequest;
    use crate::testing::{test_sandbox_with_hooks, TestSandbox};

    fn run(test: &TestSandbox, requested: &str) -> Result<Box<dyn Undo>, StageError> {
        let mut ctx = SandboxContext {
            sandbox: test.sandbox.clone(),
            request: SandboxRequest {
                guest_hook_path: requested.to_string(),
                ..SandboxRequest::default()
            },
        };
        GuestHooks.apply(&mut ctx)
    }

    #[test]
    fn hooks_counted_per_point() {
        let root = tempfile::tempdir().unwrap();
        let hooks = root.path().join("hooks");
        std::fs::create_dir_all(hooks.join("prestart")).unwrap();
        let hook = hooks.join("prestart/10-net");
        std::fs::write(&hook, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
        let test = test_sandbox_with_hooks(root.path(), Some(hooks.clone()));

        run(&test, hooks.to_str().unwrap()).expect("hooks scanned");

        let lines = test.records.lines();
        assert!(
            lines[0].contains("point=prestart") && lines[0].contains("count=1"),
            "{lines:?}"
        );
        assert!(
            lines[1].contains("point=poststart") && lines[1].contains("count=0"),
            "{lines:?}"
        );
    }

    #[test]
    fn missing_directory_only_warns() {
        let root = tempfile::tempdir().unwrap();
        let path = "/attacker/controlled/path";
        let test = test_sandbox_with_hooks(root.path(), Some(path.into()));

        run(&test, path).expect("missing directory accepted");

        assert!(test.records.lines()[0].starts_with("WARN guest hook directory missing"));
    }

    #[test]
    fn relative_or_mismatched_path_rejected() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox_with_hooks(root.path(), Some("/usr/share/oci/hooks".into()));

        for requested in ["hooks", "/other/hooks"] {
            let error = run(&test, requested).err().expect(requested);

            assert_eq!(error.code(), ErrorCode::InvalidArgument, "{requested}");
        }
    }
}
