//! Stage `storages`: provides the container's storages, sharing any that the sandbox or
//! another container already provided at the same mount point.

use crate::context::ContainerContext;
use std::time::Duration;

use crate::device::wait::DEFAULT_DEVICE_TIMEOUT;
use crate::error::StageError;
use crate::stage::{Stage, Undo};
use crate::storage::acquire_storages;

/// Takes a reference to each request storage; undo drops them.
#[derive(Debug)]
pub struct Storages {
    /// How long to wait for each block device to appear.
    pub device_timeout: Duration,
}

impl Default for Storages {
    fn default() -> Self {
        Storages {
            device_timeout: DEFAULT_DEVICE_TIMEOUT,
        }
    }
}

impl Stage<ContainerContext> for Storages {
    fn name(&self) -> &'static str {
        "storages"
    }

    fn apply(&self, ctx: &mut ContainerContext) -> Result<Box<dyn Undo>, StageError> {
        let references = acquire_storages(&ctx.sandbox, &ctx.storages, self.device_timeout)?;
        Ok(Box::new(references))
    }
}
