//! The CreateSandbox pipeline. [`sandbox_stages`] is the one place that lists its
//! stages and their order. DestroySandbox runs the undos of a completed run.

mod dns;
mod guest_hooks;
mod hostname;
mod kernel_modules;
mod pid_namespace;
mod shared_namespaces;
mod storages;

pub use dns::Dns;
pub use guest_hooks::GuestHooks;
pub use hostname::Hostname;
pub use kernel_modules::{KernelModules, Modprobe, ModuleLoader};
pub use pid_namespace::PidNamespace;
pub use shared_namespaces::SharedNamespaces;
pub use storages::SandboxStorages;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::context::SandboxContext;
use crate::device::wait::DEFAULT_DEVICE_TIMEOUT;
use crate::pipeline::Pipeline;
use crate::stage::Stage;

/// Settings of the sandbox pipeline's stages.
#[derive(Clone)]
pub struct SandboxOptions {
    /// The guest's resolver configuration, which the `dns` stage replaces.
    pub resolv_conf: PathBuf,
    pub module_loader: Arc<dyn ModuleLoader>,
    /// How long the storages stage waits for each block device.
    pub device_timeout: Duration,
}

impl Default for SandboxOptions {
    fn default() -> Self {
        SandboxOptions {
            resolv_conf: PathBuf::from("/etc/resolv.conf"),
            module_loader: Arc::new(Modprobe),
            device_timeout: DEFAULT_DEVICE_TIMEOUT,
        }
    }
}

/// Builds the pipeline that sets up the sandbox, with the guest's real resolver
/// configuration and `modprobe`.
pub fn sandbox_pipeline() -> Pipeline<SandboxContext> {
    Pipeline::new(sandbox_stages(&SandboxOptions::default()))
}

/// Returns the stages of the sandbox pipeline in run order.
pub fn sandbox_stages(options: &SandboxOptions) -> Vec<Box<dyn Stage<SandboxContext>>> {
    vec![
        Box::new(Hostname),
        Box::new(Dns {
            resolv_conf: options.resolv_conf.clone(),
        }),
        Box::new(KernelModules {
            loader: Arc::clone(&options.module_loader),
        }),
        Box::new(GuestHooks),
        Box::new(SharedNamespaces),
        Box::new(PidNamespace),
        Box::new(SandboxStorages {
            device_timeout: options.device_timeout,
        }),
    ]
}

#[cfg(test)]
mod tests;
