//! Stage `kernel-modules`: loads the kernel modules the request names, with their
//! parameters. A module that fails to load fails the request, naming it.
//!
//! Each request entry is a module name, optionally followed by its parameters,
//! separated by spaces: `virtio_vsock`, `nf_conntrack hashsize=4096`. Module names
//! contain no spaces, so the split is unambiguous.

use std::io;
use std::path::PathBuf;
use std::process::Command;

use crate::context::SandboxContext;
use crate::error::{collect_undo_errors, StageError};
use crate::stage::{Stage, Undo};
use std::sync::Arc;

/// Loads and unloads kernel modules. Tests supply a fake.
pub trait ModuleLoader: Send + Sync {
    /// Loads `name` with `parameters` (each `key=value`).
    fn load(&self, name: &str, parameters: &[String]) -> io::Result<()>;

    /// Unloads `name`.
    fn unload(&self, name: &str) -> io::Result<()>;
}

/// Loads modules with `modprobe`, which also loads their dependencies.
#[derive(Debug, Default)]
pub struct Modprobe;

impl ModuleLoader for Modprobe {
    fn load(&self, name: &str, parameters: &[String]) -> io::Result<()> {
        run_modprobe(
            Command::new("modprobe")
                .arg("--")
                .arg(name)
                .args(parameters),
        )
    }

    fn unload(&self, name: &str) -> io::Result<()> {
        run_modprobe(Command::new("modprobe").arg("-r").arg("--").arg(name))
    }
}

fn run_modprobe(command: &mut Command) -> io::Result<()> {
    let output = command.output()?;
    if output.status.success() {
        return Ok(());
    }
    let message = String::from_utf8_lossy(&output.stderr).trim().to_string();
    Err(io::Error::other(format!(
        "modprobe {}: {message}",
        output.status
    )))
}

/// Loads each requested module that is not loaded yet; undo unloads those, in reverse.
pub struct KernelModules {
    pub loader: Arc<dyn ModuleLoader>,
}

struct UnloadModules {
    loader: Arc<dyn ModuleLoader>,
    loaded: Vec<String>,
}

impl Stage<SandboxContext> for KernelModules {
    fn name(&self) -> &'static str {
        "kernel-modules"
    }

    fn apply(&self, ctx: &mut SandboxContext) -> Result<Box<dyn Undo>, StageError> {
        let mut modules = Vec::with_capacity(ctx.request.kernel_modules.len());
        for entry in &ctx.request.kernel_modules {
            modules.push(parse_entry(entry)?);
        }

        let proc_modules = ctx.sandbox.paths.procfs.join("modules");
        let already = loaded_modules(&proc_modules)?;
        let mut undo = UnloadModules {
            loader: Arc::clone(&self.loader),
            loaded: Vec::new(),
        };

        for (name, parameters) in modules {
            // /proc/modules spells names with '_' where modprobe also accepts '-'.
            if already.contains(&name.replace('-', "_")) {
                continue;
            }
            if let Err(source) = self.loader.load(&name, &parameters) {
                let _ = undo.undo();
                return Err(StageError::Io {
                    operation: "load kernel module",
                    path: PathBuf::from(&name),
                    source,
                });
            }
            undo.loaded.push(name);
        }

        Ok(Box::new(undo))
    }
}

impl Undo for UnloadModules {
    fn undo(&mut self) -> Result<(), StageError> {
        let mut errors = Vec::new();
        while let Some(name) = self.loaded.pop() {
            if let Err(source) = self.loader.unload(&name) {
                errors.push(StageError::Io {
                    operation: "unload kernel module",
                    path: PathBuf::from(name),
                    source,
                });
            }
        }
        collect_undo_errors(errors)
    }
}

/// Splits an entry into the module name and its parameters, rejecting anything that
/// `modprobe` would read as an option.
fn parse_entry(entry: &str) -> Result<(String, Vec<String>), StageError> {
    let mut words = entry.split_whitespace();
    let name = words.next().unwrap_or_default();
    let valid_name = !name.is_empty()
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'));
    if !valid_name {
        return Err(StageError::invalid(
            "kernel module",
            entry,
            "the name must be letters, digits, '_', '-' or '.', not starting with '-'",
        ));
    }

    let parameters: Vec<String> = words.map(str::to_string).collect();
    if let Some(bad) = parameters
        .iter()
        .find(|parameter| parameter.starts_with('-'))
    {
        return Err(StageError::invalid(
            "kernel module parameter",
            bad,
            format!("parameters of {name} must have the form key=value"),
        ));
    }
    Ok((name.to_string(), parameters))
}

/// Returns the names in `/proc/modules`; none when the kernel has no module support.
fn loaded_modules(path: &std::path::Path) -> Result<Vec<String>, StageError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(text
            .lines()
            .filter_map(|line| line.split(' ').next())
            .map(str::to_string)
            .collect()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(error) => Err(StageError::io("read", path, error)),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    use std::sync::Mutex;

    use super::*;

    /// A module loader that records calls and fails to load one chosen name.
    #[derive(Debug, Default)]
    pub struct FakeLoader {
        pub calls: Mutex<Vec<String>>,
        pub failing: Option<String>,
    }

    impl ModuleLoader for FakeLoader {
        fn load(&self, name: &str, parameters: &[String]) -> io::Result<()> {
            if self.failing.as_deref() == Some(name) {
                return Err(io::Error::other(format!("module {name} not found")));
            }
            let mut call = format!("load {name}");
            for parameter in parameters {
                call.push(' ');
                call.push_str(parameter);
            }
            self.calls.lock().unwrap().push(call);
            Ok(())
        }

        fn unload(&self, name: &str) -> io::Result<()> {
            self.calls.lock().unwrap().push(format!("unload {name}"));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::FakeLoader;
    use super::*;
    use crate::error::ErrorCode;
    use crate::request::SandboxRequest;
    use crate::testing::test_sandbox;

    fn run(
        root: &std::path::Path,
        loader: Arc<FakeLoader>,
        modules: &[&str],
    ) -> Result<Box<dyn Undo>, StageError> {
        let mut ctx = SandboxContext {
            sandbox: test_sandbox(root).sandbox,
            request: SandboxRequest {
                kernel_modules: modules.iter().map(|entry| entry.to_string()).collect(),
                ..SandboxRequest::default()
            },
        };
        let procfs = ctx.sandbox.paths.procfs.clone();
        std::fs::write(procfs.join("modules"), "virtio_vsock 40960 0 - Live 0x0\n").unwrap();
        KernelModules { loader }.apply(&mut ctx)
    }

    fn calls(loader: &FakeLoader) -> Vec<String> {
        loader.calls.lock().unwrap().clone()
    }

    #[test]
    fn modules_loaded_with_parameters_and_unloaded() {
        let root = tempfile::tempdir().unwrap();
        let loader = Arc::new(FakeLoader::default());

        let mut undo = run(
            root.path(),
            loader.clone(),
            &[
                "nf_conntrack hashsize=4096",
                "virtio-vsock",
                "dummy numdummies=2",
            ],
        )
        .expect("modules loaded");
        undo.undo().expect("modules unloaded");
        undo.undo().expect("second undo does nothing");

        // virtio-vsock was loaded before, so it is neither loaded nor unloaded.
        assert_eq!(
            calls(&loader),
            [
                "load nf_conntrack hashsize=4096",
                "load dummy numdummies=2",
                "unload dummy",
                "unload nf_conntrack"
            ]
        );
    }

    #[test]
    fn failing_module_named_and_earlier_unloaded() {
        let root = tempfile::tempdir().unwrap();
        let loader = Arc::new(FakeLoader {
            failing: Some("evil.ko".to_string()),
            ..FakeLoader::default()
        });

        let error = run(root.path(), loader.clone(), &["dummy", "evil.ko"])
            .err()
            .expect("load fails");

        assert_eq!(error.code(), ErrorCode::Internal);
        assert!(
            error.to_string().contains("load kernel module evil.ko"),
            "{error}"
        );
        assert_eq!(calls(&loader), ["load dummy", "unload dummy"]);
    }

    #[test]
    fn option_like_entries_rejected() {
        let root = tempfile::tempdir().unwrap();

        for entry in ["-r", "", "mod/../x", "dummy --force"] {
            let loader = Arc::new(FakeLoader::default());

            let error = run(root.path(), loader.clone(), &[entry])
                .err()
                .expect(entry);

            assert_eq!(error.code(), ErrorCode::InvalidArgument, "{entry:?}");
            assert!(calls(&loader).is_empty());
        }
    }
}
