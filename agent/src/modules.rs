//! Kernel module loaders for the sandbox pipeline's `kernel-modules` stage.
//!
//! The stage's default loader waits for `modprobe` with `std::process`, which
//! races the agent's reaper: whichever reaps first takes the exit status from the
//! other. [`ReapedModprobe`] starts `modprobe` the same way but takes its exit
//! status from the reaper. [`ModulesDisabled`] is used with `--isolate`, because an
//! agent that runs outside a guest must not load modules into the machine's kernel.

use std::io::{self, Read};
use std::path::PathBuf;
use std::process::{Command, Stdio};

use crate::reaper::Reaper;
use crate::sandbox::wait_exit;

/// Runs `modprobe` and waits for it through the reaper.
pub struct ReapedModprobe {
    program: PathBuf,
    reaper: Reaper,
    runtime: tokio::runtime::Handle,
}

impl ReapedModprobe {
    /// Creates a loader that runs `modprobe` from PATH and waits on `runtime`, where
    /// the reaper task runs.
    pub fn new(reaper: Reaper, runtime: tokio::runtime::Handle) -> ReapedModprobe {
        ReapedModprobe {
            program: PathBuf::from("modprobe"),
            reaper,
            runtime,
        }
    }

    /// Runs modprobe with `args` and returns an error with its stderr when it fails.
    /// Called from the pipeline's blocking thread, never from a runtime worker.
    fn run(&self, args: &[&str]) -> io::Result<()> {
        let since = self.reaper.checkpoint();
        let mut child = Command::new(&self.program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let receiver = self.reaper.register(child.id() as i32, since);

        let mut message = String::new();
        if let Some(mut stderr) = child.stderr.take() {
            // modprobe's stderr closes when it exits, so this read ends.
            let _ = stderr.read_to_string(&mut message);
        }

        // Dropping the Child neither waits for nor kills the process.
        drop(child);
        let status = self
            .runtime
            .block_on(wait_exit(receiver))
            .ok_or_else(|| io::Error::other("the reaper stopped before modprobe exited"))?;

        if status == 0 {
            return Ok(());
        }
        Err(io::Error::other(format!(
            "modprobe exited with status {status}: {}",
            message.trim()
        )))
    }
}

impl stages::ModuleLoader for ReapedModprobe {
    fn load(&self, name: &str, parameters: &[String]) -> io::Result<()> {
        let mut args = vec!["--", name];
        args.extend(parameters.iter().map(String::as_str));
        self.run(&args)
    }

    fn unload(&self, name: &str) -> io::Result<()> {
        self.run(&["-r", "--", name])
    }
}

/// Rejects every module, for an agent started with `--isolate`.
pub struct ModulesDisabled;

impl stages::ModuleLoader for ModulesDisabled {
    fn load(&self, name: &str, _parameters: &[String]) -> io::Result<()> {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("loading kernel module {name:?} is disabled by --isolate, which keeps the machine's kernel unchanged"),
        ))
    }

    fn unload(&self, _name: &str) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stages::ModuleLoader;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::Arc;

    fn fake_modprobe(dir: &std::path::Path, script: &str) -> PathBuf {
        let path = dir.join("modprobe");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("write fake modprobe");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("make fake modprobe executable");
        path
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn modprobe_status_comes_from_reaper() {
        let _serial = crate::reaper::TEST_REAPER_LOCK.lock().await;
        let dir = tempfile::tempdir().expect("tempdir");
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let reaper = Reaper::start(logger).expect("start reaper");
        let succeeds = dir.path().join("ok");
        let fails = dir.path().join("bad");
        std::fs::create_dir_all(&succeeds).expect("dir");
        std::fs::create_dir_all(&fails).expect("dir");

        let loader = Arc::new(ReapedModprobe {
            program: fake_modprobe(&succeeds, "exit 0"),
            reaper: reaper.clone(),
            runtime: tokio::runtime::Handle::current(),
        });
        let ok = tokio::task::spawn_blocking(move || loader.load("dummy", &["a=1".to_string()]))
            .await
            .expect("blocking task");
        assert!(ok.is_ok(), "{ok:?}");

        let loader = Arc::new(ReapedModprobe {
            program: fake_modprobe(&fails, "echo \"module $2 not found\" >&2; exit 1"),
            reaper,
            runtime: tokio::runtime::Handle::current(),
        });
        let error = tokio::task::spawn_blocking(move || loader.load("dummy", &[]))
            .await
            .expect("blocking task")
            .expect_err("failing modprobe");
        let message = error.to_string();
        assert!(message.contains("status 1"), "{message}");
        assert!(message.contains("module dummy not found"), "{message}");
    }

    #[test]
    fn isolated_loader_names_module() {
        let error = ModulesDisabled
            .load("evil.ko", &[])
            .expect_err("loading is disabled");

        assert!(error.to_string().contains("\"evil.ko\""), "{error}");
    }
}
