//! Stage `cgroup-fixup`.
//!
//! NOTE: it passes the spec through unchanged. The rule that denies the container the
//! block device backing the guest root file system is not implemented yet.

use crate::context::ContainerContext;
use crate::error::StageError;
use crate::stage::{NoUndo, Stage, Undo};

/// Leaves the spec's cgroup settings as they are, for now.
#[derive(Debug, Default)]
pub struct CgroupFixup;

impl Stage<ContainerContext> for CgroupFixup {
    fn name(&self) -> &'static str {
        "cgroup-fixup"
    }

    fn apply(&self, _ctx: &mut ContainerContext) -> Result<Box<dyn Undo>, StageError> {
        Ok(Box::new(NoUndo))
    }
}
