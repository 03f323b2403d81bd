//! Stage `spawn`: creates the container with rustjail. Its init process waits for
//! StartContainer before it runs the user process.
//!
//! The container is shared as a [`SharedContainer`]: the agent takes it out of
//! `ctx.container` to start, signal and wait on it, and this stage's undo keeps a clone
//! so that RemoveContainer, or a rollback, destroys the same container. Destroying does
//! not reap the init; the agent's reaper does.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use rustjail::{Container, ContainerConfig};

use crate::context::{ContainerContext, SharedContainer};
use crate::error::StageError;
use crate::stage::{Stage, Undo};

/// Creates the container; undo kills its init and removes its cgroup.
#[derive(Debug, Default)]
pub struct Spawn;

/// Parent cgroup of containers whose spec sets no `linux.cgroupsPath`.
const CGROUP_PARENT: &str = "berth";

struct DestroyContainer {
    id: String,
    container: Option<SharedContainer>,
}

impl Stage<ContainerContext> for Spawn {
    fn name(&self) -> &'static str {
        "spawn"
    }

    fn apply(&self, ctx: &mut ContainerContext) -> Result<Box<dyn Undo>, StageError> {
        let rootfs = resolve_rootfs(ctx)?;
        if !rootfs.is_dir() {
            return Err(StageError::invalid(
                "root.path",
                rootfs.display().to_string(),
                "the rootfs does not exist or is not a directory",
            ));
        }

        let config = ContainerConfig {
            id: ctx.id.clone(),
            spec: ctx.spec.clone(),
            cgroup_root: ctx.sandbox.paths.cgroup_root.clone(),
            cgroup_parent: CGROUP_PARENT.to_string(),
            init: ctx.sandbox.init.clone(),
            logger: ctx
                .sandbox
                .logger
                .new(slog::o!("container" => ctx.id.clone())),
        };
        let container = Container::create(config).map_err(|source| StageError::Container {
            container: ctx.id.clone(),
            source: Box::new(source),
        })?;

        let shared = Arc::new(Mutex::new(container));
        ctx.container = Some(Arc::clone(&shared));
        Ok(Box::new(DestroyContainer {
            id: ctx.id.clone(),
            container: Some(shared),
        }))
    }
}

impl Undo for DestroyContainer {
    fn undo(&mut self) -> Result<(), StageError> {
        let Some(container) = self.container.take() else {
            return Ok(());
        };

        // A panic elsewhere while holding the lock does not make destroying unsafe:
        // destroy only kills by the recorded pid and removes the cgroup.
        let mut container = container
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        container.destroy().map_err(|source| StageError::Destroy {
            container: self.id.clone(),
            source: Box::new(source),
        })
    }
}

/// Makes `root.path` absolute, relative to the bundle directory as OCI defines, and
/// writes the result back into the spec because rustjail takes only absolute paths.
fn resolve_rootfs(ctx: &mut ContainerContext) -> Result<PathBuf, StageError> {
    let bundle = ctx.sandbox.paths.bundle_dir(&ctx.id);
    let Some(root) = ctx.spec.root_mut().as_mut() else {
        return Err(StageError::invalid(
            "spec",
            "root",
            "the spec has no root.path",
        ));
    };

    let path = root.path().clone();
    if path.as_os_str().is_empty() {
        return Err(StageError::invalid(
            "root.path",
            "",
            "must name the rootfs directory",
        ));
    }
    let absolute = if path.is_absolute() {
        path
    } else {
        bundle.join(path)
    };
    root.set_path(absolute.clone());
    Ok(absolute)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::testing::{test_context, test_sandbox};

    #[test]
    fn missing_rootfs_is_invalid_argument() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let mut ctx = test_context(&test.sandbox, "c1");

        let error = Spawn
            .apply(&mut ctx)
            .err()
            .expect("missing rootfs rejected");

        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        let expected = test.sandbox.paths.bundle_dir("c1").join("rootfs");
        assert!(
            error.to_string().contains(&expected.display().to_string()),
            "{error}"
        );
        assert!(ctx.container.is_none());
    }

    #[test]
    fn spec_without_root_is_invalid_argument() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let mut ctx = test_context(&test.sandbox, "c1");
        ctx.spec.set_root(None);

        let error = Spawn.apply(&mut ctx).err().expect("missing root rejected");

        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        assert!(error.to_string().contains("root.path"), "{error}");
    }

    #[test]
    fn relative_root_resolved_against_bundle() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let mut ctx = test_context(&test.sandbox, "c1");

        let resolved = resolve_rootfs(&mut ctx).expect("root resolved");

        let expected = test.sandbox.paths.bundle_dir("c1").join("rootfs");
        assert_eq!(resolved, expected);
        assert_eq!(ctx.spec.root().as_ref().unwrap().path(), &expected);
    }
}
