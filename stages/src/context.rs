//! The sandbox-level state the stages share, and the contexts the pipelines run on.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use oci_spec::runtime::Spec;

use crate::paths::GuestPaths;
use crate::request::{ContainerRequest, Device, SandboxRequest, Storage};
use crate::storage::StorageRegistry;

/// A created container shared between its owner and the spawn stage's undo record, so
/// the undo can still destroy the container after the agent took it out of the context.
pub type SharedContainer = Arc<Mutex<rustjail::Container>>;

/// Sandbox-level resources. The agent owns it behind an `Arc`.
pub struct Sandbox {
    pub id: String,
    pub paths: GuestPaths,
    /// Reference-counted storage mounts, shared by the sandbox and its containers.
    pub storages: StorageRegistry,
    /// Directory with `prestart`, `poststart` and `poststop` hook subdirectories.
    pub guest_hooks: Option<PathBuf>,
    /// Command rustjail runs as a container's init process.
    pub init: rustjail::InitCommand,
    pub logger: slog::Logger,
}

/// The state the container pipeline works on.
pub struct ContainerContext {
    pub sandbox: Arc<Sandbox>,
    pub id: String,
    /// The spec as the stages rewrite it; spawn uses the final version.
    pub spec: Spec,
    pub storages: Vec<Storage>,
    pub devices: Vec<Device>,
    /// Set by the spawn stage.
    pub container: Option<SharedContainer>,
}

/// The state the sandbox pipeline works on.
pub struct SandboxContext {
    pub sandbox: Arc<Sandbox>,
    pub request: SandboxRequest,
}

impl ContainerContext {
    /// Creates the context for one CreateContainer request.
    pub fn new(sandbox: Arc<Sandbox>, request: ContainerRequest) -> Self {
        ContainerContext {
            sandbox,
            id: request.id,
            spec: request.spec,
            storages: request.storages,
            devices: request.devices,
            container: None,
        }
    }
}
