//! Stage `storages`: provides the container's storages, sharing any that the sandbox or
//! another container already provided at the same mount point.

use crate::context::ContainerContext;
use crate::error::StageError;
use crate::stage::{Stage, Undo};
use crate::storage::acquire_storages;

/// Takes a reference to each request storage; undo drops them.
#[derive(Debug, Default)]
pub struct Storages;

impl Stage<ContainerContext> for Storages {
    fn name(&self) -> &'static str {
        "storages"
    }

    fn apply(&self, ctx: &mut ContainerContext) -> Result<Box<dyn Undo>, StageError> {
        let references = acquire_storages(&ctx.sandbox, &ctx.storages)?;
        Ok(Box::new(references))
    }
}
