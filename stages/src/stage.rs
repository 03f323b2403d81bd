//! The stage contract: `apply` changes the guest and returns a record of exactly what it
//! changed, and that record's `undo` reverses it.

use crate::error::StageError;

/// One step of a pipeline over a context `C`.
pub trait Stage<C>: Send + Sync {
    /// Stage name used in logs, timings and error messages, such as `storages`.
    fn name(&self) -> &'static str;

    /// Applies the stage to `ctx`. On failure the stage has already reversed its own
    /// partial work, so the caller only undoes the stages that completed before it.
    fn apply(&self, ctx: &mut C) -> Result<Box<dyn Undo>, StageError>;
}

/// The record of what one stage changed.
pub trait Undo: Send {
    /// Reverses the recorded changes, best effort: it attempts every step even when one
    /// fails, and returns every failure. A second call does nothing.
    fn undo(&mut self) -> Result<(), StageError>;
}

/// The record of a stage that changed nothing the guest keeps.
#[derive(Debug, Default)]
pub struct NoUndo;

impl Undo for NoUndo {
    fn undo(&mut self) -> Result<(), StageError> {
        Ok(())
    }
}
