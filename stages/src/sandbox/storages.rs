//! Stage `storages` of the sandbox: provides the sandbox's storages in the same registry
//! the containers use, so a container naming the same mount point shares the mount.

use crate::context::SandboxContext;
use crate::error::StageError;
use crate::stage::{Stage, Undo};
use crate::storage::acquire_storages;

/// Takes a reference to each sandbox storage; undo drops them.
#[derive(Debug, Default)]
pub struct SandboxStorages;

impl Stage<SandboxContext> for SandboxStorages {
    fn name(&self) -> &'static str {
        "storages"
    }

    fn apply(&self, ctx: &mut SandboxContext) -> Result<Box<dyn Undo>, StageError> {
        let references = acquire_storages(&ctx.sandbox, &ctx.request.storages)?;
        Ok(Box::new(references))
    }
}
