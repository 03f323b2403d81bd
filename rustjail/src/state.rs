//! The OCI state of a container, and the hooks the caller runs with it.

use oci_spec::runtime::{ContainerState, StateBuilder};
use slog::warn;

use crate::container::Container;
use crate::error::Error;
use crate::hooks::{self, HookPoint};

/// Version of the runtime spec the state claims, the one oci-spec 0.10 implements.
const OCI_VERSION: &str = "1.2.0";

impl Container {
    /// Returns the OCI state in JSON, as hooks read it on stdin.
    pub(crate) fn state_json(&self, status: ContainerState) -> String {
        let mut builder = StateBuilder::default()
            .version(OCI_VERSION)
            .id(self.id.clone())
            .status(status)
            .pid(self.pid)
            .bundle(self.bundle.clone());
        if let Some(annotations) = &self.annotations {
            builder = builder.annotations(annotations.clone());
        }
        // The builder fails only on a missing field, and every field is set above. Should
        // the state still not serialize, the hook runs with an empty document.
        builder
            .build()
            .ok()
            .and_then(|state| serde_json::to_string(&state).ok())
            .unwrap_or_default()
    }

    /// Runs the hooks of `point` in the caller's namespaces.
    pub(crate) fn run_hooks(&self, point: HookPoint, status: ContainerState) -> Result<(), Error> {
        hooks::run_all(point, self.hooks.as_ref(), &self.state_json(status)).map_err(|source| {
            Error::Hook {
                container: self.id.clone(),
                source,
            }
        })
    }

    /// Runs the hooks of a point whose failure cannot undo anything (poststart,
    /// poststop), logging the failure.
    pub(crate) fn run_hooks_logged(&self, point: HookPoint, status: ContainerState) {
        if let Err(error) = self.run_hooks(point, status) {
            warn!(self.logger, "hook failed"; "point" => point.name(), "error" => %error);
        }
    }
}
