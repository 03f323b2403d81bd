//! Stage `namespaces`: makes the container join the sandbox's shared namespaces.
//!
//! A `uts` or `ipc` entry without a path joins the sandbox's namespace of that type when
//! CreateSandbox created one, and an entry with a path keeps it. When the sandbox has a
//! shared PID namespace, the container joins it, otherwise it gets a PID namespace of
//! its own. Network entries are dropped: the host's namespace paths mean nothing in the
//! guest, and all containers of a sandbox share the guest's network namespace, where
//! the `sysctls` stage writes.

use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType};
use slog::debug;

use crate::context::ContainerContext;
use crate::error::StageError;
use crate::namespace::is_namespace_file;
use crate::stage::{NoUndo, Stage, Undo};

/// Rewrites `linux.namespaces`; the spec belongs to the request, so there is no undo.
#[derive(Debug, Default)]
pub struct Namespaces;

impl Stage<ContainerContext> for Namespaces {
    fn name(&self) -> &'static str {
        "namespaces"
    }

    fn apply(&self, ctx: &mut ContainerContext) -> Result<Box<dyn Undo>, StageError> {
        let shared = |kind: &str| {
            let path = ctx.sandbox.paths.sandbox_namespace(kind);
            is_namespace_file(&path).then_some(path)
        };
        let shared_uts = shared("uts");
        let shared_ipc = shared("ipc");
        let shared_pid = shared("pid");

        let Some(linux) = ctx.spec.linux_mut().as_mut() else {
            return Ok(Box::new(NoUndo));
        };
        let namespaces = linux.namespaces_mut().get_or_insert_with(Vec::new);

        let before = namespaces.len();
        namespaces.retain(|namespace| namespace.typ() != LinuxNamespaceType::Network);
        if namespaces.len() != before {
            debug!(ctx.sandbox.logger, "network namespace entry dropped, the container uses the guest's";
                "container" => &ctx.id);
        }

        for namespace in namespaces.iter_mut() {
            // An empty path means a new namespace; launchers expect no path for that.
            if namespace
                .path()
                .as_ref()
                .is_some_and(|path| path.as_os_str().is_empty())
            {
                namespace.set_path(None);
            }
            let shared = match namespace.typ() {
                LinuxNamespaceType::Uts => &shared_uts,
                LinuxNamespaceType::Ipc => &shared_ipc,
                _ => continue,
            };
            if let (None, Some(path)) = (namespace.path(), shared) {
                namespace.set_path(Some(path.clone()));
            }
        }

        namespaces.retain(|namespace| namespace.typ() != LinuxNamespaceType::Pid);
        namespaces.push(pid_namespace(shared_pid)?);
        Ok(Box::new(NoUndo))
    }
}

fn pid_namespace(shared: Option<std::path::PathBuf>) -> Result<LinuxNamespace, StageError> {
    let mut builder = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Pid);
    if let Some(path) = shared {
        builder = builder.path(path);
    }
    builder
        .build()
        .map_err(|error| StageError::invalid("namespace", "pid", error.to_string()))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use oci_spec::runtime::LinuxBuilder;

    use super::*;
    use crate::namespace::bind;
    use crate::testing::{test_context, test_sandbox};

    fn entry(typ: LinuxNamespaceType, path: Option<&str>) -> LinuxNamespace {
        let mut builder = LinuxNamespaceBuilder::default().typ(typ);
        if let Some(path) = path {
            builder = builder.path(path);
        }
        builder.build().unwrap()
    }

    fn namespaces_of(ctx: &ContainerContext) -> Vec<(LinuxNamespaceType, Option<PathBuf>)> {
        ctx.spec
            .linux()
            .as_ref()
            .unwrap()
            .namespaces()
            .iter()
            .flatten()
            .map(|namespace| (namespace.typ(), namespace.path().clone()))
            .collect()
    }

    fn request_namespaces() -> Vec<LinuxNamespace> {
        vec![
            entry(LinuxNamespaceType::Ipc, Some("")),
            entry(LinuxNamespaceType::Uts, None),
            entry(LinuxNamespaceType::Mount, None),
            entry(LinuxNamespaceType::Network, Some("/run/netns/podns")),
        ]
    }

    #[test]
    fn without_shared_namespaces_pid_is_new() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let mut ctx = test_context(&test.sandbox, "c1");
        let linux = LinuxBuilder::default()
            .namespaces(request_namespaces())
            .build()
            .unwrap();
        ctx.spec.set_linux(Some(linux));

        Namespaces.apply(&mut ctx).expect("namespaces rewritten");

        assert_eq!(
            namespaces_of(&ctx),
            [
                (LinuxNamespaceType::Ipc, None),
                (LinuxNamespaceType::Uts, None),
                (LinuxNamespaceType::Mount, None),
                (LinuxNamespaceType::Pid, None),
            ]
        );
    }

    #[test]
    fn shared_namespaces_joined() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let paths = test.sandbox.paths.clone();

        // Binding namespace files mounts, so the check runs in a private mount namespace.
        let result = std::thread::spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS).expect("unshare (needs root)");
            let mut bound = Vec::new();
            for kind in ["uts", "pid"] {
                let source = PathBuf::from(format!("/proc/thread-self/ns/{kind}"));
                bound.push(bind(&source, &paths.sandbox_namespace(kind)).expect("bind namespace"));
            }
            let mut ctx = test_context(&test.sandbox, "c1");
            let mut namespaces = request_namespaces();
            namespaces.push(entry(LinuxNamespaceType::Pid, None));
            namespaces[0] = entry(LinuxNamespaceType::Ipc, Some("/proc/1/ns/ipc"));
            ctx.spec.set_linux(Some(
                LinuxBuilder::default()
                    .namespaces(namespaces)
                    .build()
                    .unwrap(),
            ));

            Namespaces.apply(&mut ctx).expect("namespaces rewritten");

            for mut namespace in bound.into_iter().rev() {
                namespace.release().expect("namespace file released");
            }
            namespaces_of(&ctx)
        })
        .join()
        .expect("test thread");

        let paths = &test_sandbox(root.path()).sandbox.paths;
        assert_eq!(
            result,
            [
                (
                    LinuxNamespaceType::Ipc,
                    Some(PathBuf::from("/proc/1/ns/ipc"))
                ),
                (
                    LinuxNamespaceType::Uts,
                    Some(paths.sandbox_namespace("uts"))
                ),
                (LinuxNamespaceType::Mount, None),
                (
                    LinuxNamespaceType::Pid,
                    Some(paths.sandbox_namespace("pid"))
                ),
            ]
        );
        assert!(!paths.run_dir.join("sandbox").exists());
    }
}
