//! Stage `storages` of the sandbox: provides the sandbox's storages in the same registry
//! the containers use, so a container naming the same mount point shares the mount.

use crate::context::SandboxContext;
use std::time::Duration;

use crate::device::wait::DEFAULT_DEVICE_TIMEOUT;
use crate::error::StageError;
use crate::stage::{Stage, Undo};
use crate::storage::acquire_storages;

/// Takes a reference to each sandbox storage; undo drops them.
#[derive(Debug)]
pub struct SandboxStorages {
    /// How long to wait for each block device to appear.
    pub device_timeout: Duration,
}

impl Default for SandboxStorages {
    fn default() -> Self {
        SandboxStorages {
            device_timeout: DEFAULT_DEVICE_TIMEOUT,
        }
    }
}

impl Stage<SandboxContext> for SandboxStorages {
    fn name(&self) -> &'static str {
        "storages"
    }

    fn apply(&self, ctx: &mut SandboxContext) -> Result<Box<dyn Undo>, StageError> {
        let references =
            acquire_storages(&ctx.sandbox, &ctx.request.storages, self.device_timeout)?;
        Ok(Box::new(references))
    }
}
