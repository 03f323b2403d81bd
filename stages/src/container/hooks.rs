//! Stage `hooks`: adds the sandbox's guest hooks to the spec and writes the final spec
//! as `config.json` into the container's bundle directory, where OCI hooks read it.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use oci_spec::runtime::{Hook, HookBuilder, Hooks as OciHooks};
use slog::warn;

use crate::context::ContainerContext;
use crate::error::StageError;
use crate::stage::{Stage, Undo};

/// Adds guest hooks and writes the bundle; undo removes the bundle directory.
#[derive(Debug, Default)]
pub struct Hooks;

/// Name of the spec file in a bundle directory.
const CONFIG_FILE: &str = "config.json";

/// The bundle directory this stage wrote to, and whether it created the directory.
struct RemoveBundle {
    bundle: Option<PathBuf>,
    created_dir: bool,
    written: bool,
}

impl Stage<ContainerContext> for Hooks {
    fn name(&self) -> &'static str {
        "hooks"
    }

    fn apply(&self, ctx: &mut ContainerContext) -> Result<Box<dyn Undo>, StageError> {
        validate_container_id(&ctx.id)?;

        if let Some(hooks_dir) = ctx.sandbox.guest_hooks.clone() {
            add_guest_hooks(ctx, &hooks_dir)?;
        }

        let run_dir = &ctx.sandbox.paths.run_dir;
        fs::create_dir_all(run_dir)
            .map_err(|error| StageError::io("create run directory", run_dir, error))?;

        // A storage may have created the bundle directory already, for the rootfs
        // mounted at `<bundle>/rootfs`.
        let bundle = ctx.sandbox.paths.bundle_dir(&ctx.id);
        let created_dir = match fs::create_dir(&bundle) {
            Ok(()) => true,
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && bundle.is_dir() => false,
            Err(error) => return Err(StageError::io("create bundle directory", bundle, error)),
        };

        let mut undo = RemoveBundle {
            bundle: Some(bundle.clone()),
            created_dir,
            written: true,
        };
        if let Err(error) = write_config(&bundle, &ctx.spec) {
            // Nothing was written when config.json already existed, so there is nothing
            // of this stage's to remove except a directory it created.
            undo.written = false;
            let _ = undo.undo();
            return Err(error);
        }
        Ok(Box::new(undo))
    }
}

impl Undo for RemoveBundle {
    fn undo(&mut self) -> Result<(), StageError> {
        let Some(bundle) = self.bundle.take() else {
            return Ok(());
        };
        // Only a directory this stage created is removed whole, because it contains nothing but
        // the config and what hooks wrote. The storages were mounted before this stage ran.
        let (path, result) = if self.created_dir {
            (bundle.clone(), fs::remove_dir_all(&bundle))
        } else if self.written {
            let config = bundle.join(CONFIG_FILE);
            let result = fs::remove_file(&config);
            (config, result)
        } else {
            return Ok(());
        };
        match result {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(StageError::io("remove", path, error)),
        }
    }
}

/// Rejects ids that are not a single plain path segment, because the id names the
/// bundle directory.
fn validate_container_id(id: &str) -> Result<(), StageError> {
    let valid = !id.is_empty()
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'-' | b'.'));
    if valid {
        Ok(())
    } else {
        Err(StageError::invalid(
            "container id",
            id,
            "must be non-empty and contain only letters, digits, '_', '-' and '.'",
        ))
    }
}

/// Appends the executables of `prestart`, `poststart` and `poststop` under `hooks_dir`
/// to the spec's hooks of the same name, each list sorted by file name.
fn add_guest_hooks(ctx: &mut ContainerContext, hooks_dir: &Path) -> Result<(), StageError> {
    if !hooks_dir.is_dir() {
        warn!(ctx.sandbox.logger, "guest hook directory missing, no guest hooks added";
            "container" => &ctx.id, "path" => %hooks_dir.display());
        return Ok(());
    }

    let prestart = scan_hooks(&hooks_dir.join("prestart"))?;
    let poststart = scan_hooks(&hooks_dir.join("poststart"))?;
    let poststop = scan_hooks(&hooks_dir.join("poststop"))?;

    let hooks = ctx.spec.hooks_mut().get_or_insert_with(OciHooks::default);
    extend(hooks.prestart_mut(), prestart);
    extend(hooks.poststart_mut(), poststart);
    extend(hooks.poststop_mut(), poststop);
    Ok(())
}

fn extend(list: &mut Option<Vec<Hook>>, hooks: Vec<Hook>) {
    if !hooks.is_empty() {
        list.get_or_insert_with(Vec::new).extend(hooks);
    }
}

/// Returns a hook for each executable regular file in `dir`, sorted by name. A missing
/// directory has no hooks.
pub(crate) fn scan_hooks(dir: &Path) -> Result<Vec<Hook>, StageError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(StageError::io("read hook directory", dir, error)),
    };

    let mut paths = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| StageError::io("read hook directory", dir, error))?;
        let path = entry.path();
        let metadata =
            fs::metadata(&path).map_err(|error| StageError::io("inspect hook", &path, error))?;
        if metadata.is_file() && metadata.permissions().mode() & 0o111 != 0 {
            paths.push(path);
        }
    }
    paths.sort();

    paths.into_iter().map(|path| hook_for(&path)).collect()
}

fn hook_for(path: &Path) -> Result<Hook, StageError> {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    HookBuilder::default()
        .path(path)
        .args(vec![name])
        .build()
        .map_err(|error| {
            StageError::io(
                "add hook",
                path,
                io::Error::new(io::ErrorKind::InvalidInput, error),
            )
        })
}

/// Writes `spec` as `config.json` in `bundle`, readable only by root because it contains the
/// container's environment.
fn write_config(bundle: &Path, spec: &oci_spec::runtime::Spec) -> Result<(), StageError> {
    let path = bundle.join(CONFIG_FILE);
    let json = serde_json::to_vec(spec).map_err(|error| {
        StageError::io(
            "serialize spec for",
            &path,
            io::Error::new(io::ErrorKind::InvalidData, error),
        )
    })?;

    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|error| match error.kind() {
            io::ErrorKind::AlreadyExists => StageError::AlreadyExists {
                kind: "container config",
                path: path.clone(),
            },
            _ => StageError::io("create", &path, error),
        })?;
    file.write_all(&json)
        .map_err(|error| StageError::io("write", &path, error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;
    use crate::testing::{test_context, test_sandbox, test_sandbox_with_hooks};

    fn write_file(path: &Path, mode: u32) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, "#!/bin/sh\n").unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    fn hook_paths(hooks: &Option<Vec<Hook>>) -> Vec<PathBuf> {
        hooks
            .iter()
            .flatten()
            .map(|hook| hook.path().clone())
            .collect()
    }

    #[test]
    fn guest_hooks_added_sorted_and_config_written() {
        let root = tempfile::tempdir().unwrap();
        let hooks_dir = root.path().join("hooks");
        write_file(&hooks_dir.join("prestart/20-net"), 0o755);
        write_file(&hooks_dir.join("prestart/10-mount"), 0o700);
        write_file(&hooks_dir.join("prestart/30-notes.txt"), 0o644);
        write_file(&hooks_dir.join("poststop/cleanup"), 0o755);
        let test = test_sandbox_with_hooks(root.path(), Some(hooks_dir.clone()));
        let mut ctx = test_context(&test.sandbox, "c1");

        Hooks.apply(&mut ctx).expect("hooks stage succeeds");

        let hooks = ctx.spec.hooks().as_ref().expect("hooks set");
        assert_eq!(
            hook_paths(hooks.prestart()),
            [
                hooks_dir.join("prestart/10-mount"),
                hooks_dir.join("prestart/20-net")
            ]
        );
        assert_eq!(
            hook_paths(hooks.poststop()),
            [hooks_dir.join("poststop/cleanup")]
        );
        assert!(hooks.poststart().is_none());
        let first = &hooks.prestart().as_ref().unwrap()[0];
        assert_eq!(first.args().as_deref(), Some(&["10-mount".to_string()][..]));

        let config = test.sandbox.paths.bundle_dir("c1").join("config.json");
        let written = oci_spec::runtime::Spec::load(&config).expect("config.json parses");
        assert_eq!(written, ctx.spec);
        let mode = fs::metadata(&config).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn without_guest_hooks_spec_hooks_unchanged() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let mut ctx = test_context(&test.sandbox, "c1");
        let before = ctx.spec.hooks().clone();

        Hooks.apply(&mut ctx).expect("hooks stage succeeds");

        assert_eq!(ctx.spec.hooks(), &before);
        assert!(test
            .sandbox
            .paths
            .bundle_dir("c1")
            .join("config.json")
            .is_file());
    }

    #[test]
    fn undo_removes_bundle_directory() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let mut ctx = test_context(&test.sandbox, "c1");
        let mut undo = Hooks.apply(&mut ctx).expect("hooks stage succeeds");
        let bundle = test.sandbox.paths.bundle_dir("c1");
        fs::write(bundle.join("state"), "written by a hook").unwrap();

        undo.undo().expect("bundle removed");
        fs::create_dir(&bundle).unwrap();
        undo.undo().expect("second undo does nothing");

        assert!(
            bundle.is_dir(),
            "second undo removed a directory it did not create"
        );
        assert!(!bundle.join("config.json").exists());
    }

    #[test]
    fn existing_config_is_already_exists() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let bundle = test.sandbox.paths.bundle_dir("c1");
        fs::create_dir_all(&bundle).unwrap();
        fs::write(bundle.join("config.json"), "{}").unwrap();

        let error = Hooks
            .apply(&mut test_context(&test.sandbox, "c1"))
            .err()
            .expect("existing config rejected");

        assert_eq!(error.code(), ErrorCode::AlreadyExists);
        assert!(
            error.to_string().contains(&bundle.display().to_string()),
            "{error}"
        );
        assert_eq!(
            fs::read_to_string(bundle.join("config.json")).unwrap(),
            "{}"
        );
    }

    #[test]
    fn existing_bundle_directory_kept_by_undo() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let bundle = test.sandbox.paths.bundle_dir("c1");
        fs::create_dir_all(bundle.join("rootfs")).unwrap();
        let mut ctx = test_context(&test.sandbox, "c1");

        let mut undo = Hooks.apply(&mut ctx).expect("bundle directory reused");
        assert!(bundle.join("config.json").is_file());
        undo.undo().expect("config removed");

        assert!(bundle.join("rootfs").is_dir());
        assert!(!bundle.join("config.json").exists());
    }

    #[test]
    fn path_like_container_id_rejected() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());

        for id in ["", ".", "..", "../escape", "a/b"] {
            let error = Hooks
                .apply(&mut test_context(&test.sandbox, id))
                .err()
                .expect("bad id rejected");

            assert_eq!(error.code(), ErrorCode::InvalidArgument, "{id:?}");
        }
        assert!(!root.path().join("escape").exists());
    }
}
