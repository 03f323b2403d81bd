//! The CreateSandbox pipeline. [`sandbox_pipeline`] is the one place that lists its
//! stages and their order.
//!
//! NOTE: DNS, kernel modules, the guest-hook scan, shared UTS and IPC namespaces and the
//! shared PID namespace are not stages yet. Request fields for them have no effect.

mod hostname;
mod storages;

pub use hostname::Hostname;
pub use storages::SandboxStorages;

use crate::context::SandboxContext;
use crate::pipeline::Pipeline;

/// Builds the pipeline that sets up the sandbox.
pub fn sandbox_pipeline() -> Pipeline<SandboxContext> {
    Pipeline::new(vec![Box::new(Hostname), Box::new(SandboxStorages)])
}

#[cfg(test)]
mod tests {
    use nix::sched::{unshare, CloneFlags};

    use super::*;
    use crate::context::SandboxContext;
    use crate::request::{SandboxRequest, Storage};
    use crate::testing::test_sandbox;

    fn current_hostname() -> String {
        nix::unistd::gethostname().unwrap().into_string().unwrap()
    }

    /// Runs the sandbox pipeline on a thread with its own UTS namespace, so the hostname
    /// change never reaches this machine. Returns the hostname before the run, after
    /// it, and after `undo_all` (if the run succeeded), and the error, if any.
    fn run_in_private_uts(
        mut ctx: SandboxContext,
    ) -> (String, String, Option<String>, Option<String>) {
        std::thread::spawn(move || {
            unshare(CloneFlags::CLONE_NEWUTS).expect("unshare UTS namespace (needs root)");
            let logger = ctx.sandbox.logger.clone();
            let before = current_hostname();
            match sandbox_pipeline().run(&mut ctx, &logger) {
                Ok(mut completed) => {
                    let during = current_hostname();
                    completed.undo_all(&logger).expect("sandbox torn down");
                    (before, during, Some(current_hostname()), None)
                }
                Err(error) => (before, current_hostname(), None, Some(error.to_string())),
            }
        })
        .join()
        .expect("test thread panicked")
    }

    fn storage(driver: &str, mount_point: &std::path::Path) -> Storage {
        Storage {
            driver: driver.to_string(),
            mount_point: mount_point.display().to_string(),
            ..Storage::default()
        }
    }

    #[test]
    fn sandbox_set_up_and_torn_down() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let mount_point = test.sandbox.paths.sandbox_storage_dir().join("shm");
        let ctx = SandboxContext {
            sandbox: test.sandbox.clone(),
            request: SandboxRequest {
                hostname: "pod-1".to_string(),
                storages: vec![storage("ephemeral", &mount_point)],
                ..SandboxRequest::default()
            },
        };

        let (before, during, after, error) = run_in_private_uts(ctx);

        assert_eq!(error, None);
        assert_eq!(during, "pod-1");
        assert_eq!(after, Some(before));
        assert_eq!(test.mounter.mount_count(), 1);
        assert_eq!(test.mounter.unmounted(), std::slice::from_ref(&mount_point));
        assert!(!mount_point.exists());
    }

    #[test]
    fn storage_failure_restores_hostname() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let mount_point = test.sandbox.paths.sandbox_storage_dir().join("data");
        let ctx = SandboxContext {
            sandbox: test.sandbox.clone(),
            request: SandboxRequest {
                hostname: "pod-2".to_string(),
                storages: vec![storage("9p", &mount_point)],
                ..SandboxRequest::default()
            },
        };

        let (before, after_failure, _, error) = run_in_private_uts(ctx);

        let error = error.expect("9p is not implemented");
        assert!(
            error.starts_with("stage storages: storage driver \"9p\""),
            "{error}"
        );
        assert_eq!(after_failure, before);
    }

    #[test]
    fn sandbox_pipeline_order() {
        assert_eq!(sandbox_pipeline().stage_names(), ["hostname", "storages"]);
    }
}
