//! Stages of Berth's CreateContainer and CreateSandbox requests.
//!
//! Each stage does one job and returns a record of what it changed. The [`Pipeline`]
//! runs stages in order and, on the first failure, undoes the completed ones in reverse
//! order. A successful run hands the records to the caller as [`Completed`], so teardown
//! goes through the same undos. The pipelines are built in [`container_pipeline`] and
//! [`sandbox_pipeline`].

pub mod container;
mod context;
pub mod device;
mod error;
mod namespace;
mod paths;
mod pipeline;
mod request;
pub mod sandbox;
mod stage;
pub mod storage;
#[cfg(test)]
mod testing;

pub use container::{container_pipeline, container_stages, ContainerOptions};
pub use context::{ContainerContext, Sandbox, SandboxContext, SharedContainer};
pub use error::{ErrorCode, StageError};
pub use paths::GuestPaths;
pub use pipeline::{Completed, Pipeline, PipelineError, UndoErrors};
pub use request::{ContainerRequest, Device, FsGroup, SandboxRequest, Storage};
pub use sandbox::{sandbox_pipeline, sandbox_stages, ModuleLoader, SandboxOptions};
pub use stage::{NoUndo, Stage, Undo};
pub use storage::{Mounter, StorageRegistry, SystemMounter};
