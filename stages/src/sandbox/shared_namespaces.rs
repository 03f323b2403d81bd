//! Stage `shared-namespaces`: creates the UTS and IPC namespaces that the sandbox's
//! containers share, and keeps them alive by binding their files at
//! `<run_dir>/sandbox/ns/uts` and `ipc`.
//!
//! A short-lived thread unshares the two namespaces, so the agent's own threads stay
//! where they are. The new UTS namespace starts as a copy of the caller's, and so has
//! the hostname the `hostname` stage set.

use std::path::PathBuf;

use nix::sched::{unshare, CloneFlags};

use crate::context::SandboxContext;
use crate::error::{collect_undo_errors, StageError};
use crate::namespace::{bind, BoundNamespace};
use crate::stage::{Stage, Undo};

/// Creates and binds the shared UTS and IPC namespaces; undo unbinds them.
#[derive(Debug, Default)]
pub struct SharedNamespaces;

struct ReleaseNamespaces(Vec<BoundNamespace>);

impl Stage<SandboxContext> for SharedNamespaces {
    fn name(&self) -> &'static str {
        "shared-namespaces"
    }

    fn apply(&self, ctx: &mut SandboxContext) -> Result<Box<dyn Undo>, StageError> {
        let targets = [
            ("uts", ctx.sandbox.paths.sandbox_namespace("uts")),
            ("ipc", ctx.sandbox.paths.sandbox_namespace("ipc")),
        ];

        let bound = std::thread::scope(|scope| {
            scope
                .spawn(|| bind_new_namespaces(&targets))
                .join()
                .unwrap_or_else(|_| {
                    Err(StageError::invalid(
                        "shared namespaces",
                        "uts, ipc",
                        "the thread creating them panicked",
                    ))
                })
        })?;
        Ok(Box::new(ReleaseNamespaces(bound)))
    }
}

/// Runs on its own thread: moves the thread into new UTS and IPC namespaces and binds
/// their files. The namespaces outlive the thread through the bind mounts.
fn bind_new_namespaces(targets: &[(&str, PathBuf)]) -> Result<Vec<BoundNamespace>, StageError> {
    unshare(CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC).map_err(|source| {
        StageError::System {
            operation: "create shared namespaces",
            value: "uts, ipc".to_string(),
            source,
        }
    })?;

    let mut bound = ReleaseNamespaces(Vec::new());
    for (kind, target) in targets {
        let source = PathBuf::from(format!("/proc/thread-self/ns/{kind}"));
        match bind(&source, target) {
            Ok(namespace) => bound.0.push(namespace),
            Err(error) => {
                let _ = bound.undo();
                return Err(error);
            }
        }
    }
    Ok(std::mem::take(&mut bound.0))
}

impl Undo for ReleaseNamespaces {
    fn undo(&mut self) -> Result<(), StageError> {
        let mut errors = Vec::new();
        for namespace in self.0.iter_mut().rev() {
            if let Err(error) = namespace.release() {
                errors.push(error);
            }
        }
        self.0.clear();
        collect_undo_errors(errors)
    }
}
