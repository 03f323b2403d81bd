//! Loading an OCI bundle for the agent, and generating container ids.
//!
//! The agent runs in another mount namespace (or another machine), so the spec it
//! receives must name the root filesystem by an absolute path.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use oci_spec::runtime::{Root, Spec};

use crate::error::{Error, Result};

/// Root filesystem directory, relative to the bundle, when config.json names none.
const DEFAULT_ROOTFS: &str = "rootfs";

/// Reads `bundle/config.json`, resolves `root.path` against the bundle to an absolute
/// path, and replaces `process.args` with `args` unless `args` is empty.
pub fn load_bundle(bundle: &Path, args: &[String]) -> Result<Spec> {
    load(bundle, None, args)
}

/// Reads `bundle/config.json` like [`load_bundle`], but for a bundle whose root
/// filesystem is in the guest under the absolute path `guest_bundle`, such as the
/// `/bundle` a VM image carries. `root.path` becomes `guest_bundle/root.path` (an
/// absolute `root.path` is kept) and is not checked on this machine, because only the
/// guest can see it.
pub fn load_guest_bundle(bundle: &Path, guest_bundle: &Path, args: &[String]) -> Result<Spec> {
    load(bundle, Some(guest_bundle), args)
}

fn load(bundle: &Path, guest_bundle: Option<&Path>, args: &[String]) -> Result<Spec> {
    let config_path = bundle.join("config.json");

    let text = std::fs::read(&config_path).map_err(|source| Error::ReadConfig {
        path: config_path.clone(),
        source,
    })?;
    let mut spec: Spec = serde_json::from_slice(&text).map_err(|source| Error::ParseConfig {
        path: config_path.clone(),
        source,
    })?;

    let rootfs = match guest_bundle {
        Some(guest_bundle) => guest_bundle.join(configured_rootfs(spec.root().as_ref())),
        None => resolve_rootfs(bundle, spec.root().as_ref())?,
    };
    let readonly = spec.root().as_ref().and_then(|root| root.readonly());
    let mut root = Root::default();
    root.set_path(rootfs).set_readonly(readonly);
    spec.set_root(Some(root));

    let Some(process) = spec.process_mut().as_mut() else {
        return Err(Error::MissingProcess { path: config_path });
    };
    if !args.is_empty() {
        process.set_args(Some(args.to_vec()));
    }

    Ok(spec)
}

/// Returns the root filesystem of the bundle as an absolute path with symlinks
/// resolved, and fails when it does not exist or is not a directory.
fn resolve_rootfs(bundle: &Path, root: Option<&Root>) -> Result<PathBuf> {
    let path = bundle.join(configured_rootfs(root));

    let absolute = std::fs::canonicalize(&path).map_err(|source| Error::Rootfs {
        path: path.clone(),
        source,
    })?;
    if !absolute.is_dir() {
        return Err(Error::Rootfs {
            path,
            source: std::io::Error::other("not a directory"),
        });
    }

    Ok(absolute)
}

/// Returns `root.path` as config.json gives it, or the default when it names none.
fn configured_rootfs(root: Option<&Root>) -> PathBuf {
    root.map_or_else(|| PathBuf::from(DEFAULT_ROOTFS), |root| root.path().clone())
}

/// Generates a container id, `berth-<pid>-<nanoseconds since the epoch>`, which uses
/// only `[A-Za-z0-9._-]` and differs between runs of `berth`.
pub fn generate_id() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_nanos());

    format!("berth-{}-{nanos}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const MINIMAL_CONFIG: &str = r#"{
        "ociVersion": "1.0.2",
        "process": { "cwd": "/", "args": ["sh", "-c", "echo hi"], "user": { "uid": 0, "gid": 0 } },
        "root": { "path": "rootfs", "readonly": true }
    }"#;

    fn write_bundle(config: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("rootfs")).unwrap();
        fs::write(dir.path().join("config.json"), config).unwrap();
        dir
    }

    #[test]
    fn bundle_rootfs_becomes_absolute() {
        let bundle = write_bundle(MINIMAL_CONFIG);

        let spec = load_bundle(bundle.path(), &[]).unwrap();

        let root = spec.root().as_ref().unwrap();
        let expected = fs::canonicalize(bundle.path().join("rootfs")).unwrap();
        assert_eq!(root.path(), &expected);
        assert!(root.path().is_absolute());
        assert_eq!(root.readonly(), Some(true));
    }

    #[test]
    fn bundle_rootfs_defaults_when_root_missing() {
        let bundle = write_bundle(
            r#"{ "ociVersion": "1.0.2", "process": { "cwd": "/", "args": ["true"], "user": { "uid": 0, "gid": 0 } } }"#,
        );

        let spec = load_bundle(bundle.path(), &[]).unwrap();

        let expected = fs::canonicalize(bundle.path().join("rootfs")).unwrap();
        assert_eq!(spec.root().as_ref().unwrap().path(), &expected);
    }

    #[test]
    fn guest_bundle_rootfs_not_checked_locally() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("config.json"), MINIMAL_CONFIG).unwrap();

        let spec = load_guest_bundle(dir.path(), Path::new("/bundle"), &[]).unwrap();

        let root = spec.root().as_ref().unwrap();
        assert_eq!(root.path(), Path::new("/bundle/rootfs"));
        assert_eq!(root.readonly(), Some(true));
    }

    #[test]
    fn guest_bundle_keeps_absolute_rootfs() {
        let dir = tempfile::tempdir().unwrap();
        let config = MINIMAL_CONFIG.replace(r#""path": "rootfs""#, r#""path": "/images/busybox""#);
        fs::write(dir.path().join("config.json"), config).unwrap();
        let args = vec!["true".to_string()];

        let spec = load_guest_bundle(dir.path(), Path::new("/bundle"), &args).unwrap();

        assert_eq!(
            spec.root().as_ref().unwrap().path(),
            Path::new("/images/busybox")
        );
        assert_eq!(
            spec.process().as_ref().unwrap().args().as_ref().unwrap(),
            &args
        );
    }

    #[test]
    fn guest_bundle_still_needs_config() {
        let dir = tempfile::tempdir().unwrap();

        let error = load_guest_bundle(dir.path(), Path::new("/bundle"), &[]).unwrap_err();

        assert!(matches!(error, Error::ReadConfig { .. }));
    }

    #[test]
    fn bundle_args_replaced_when_given() {
        let bundle = write_bundle(MINIMAL_CONFIG);
        let args = vec!["sh".to_string(), "-c".to_string(), "exit 3".to_string()];

        let spec = load_bundle(bundle.path(), &args).unwrap();

        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.args().as_ref().unwrap(), &args);
    }

    #[test]
    fn bundle_args_kept_when_none_given() {
        let bundle = write_bundle(MINIMAL_CONFIG);

        let spec = load_bundle(bundle.path(), &[]).unwrap();

        let process = spec.process().as_ref().unwrap();
        assert_eq!(process.args().as_ref().unwrap(), &["sh", "-c", "echo hi"]);
    }

    #[test]
    fn missing_config_names_path() {
        let dir = tempfile::tempdir().unwrap();

        let error = load_bundle(dir.path(), &[]).unwrap_err();

        let config_path = dir.path().join("config.json");
        assert!(matches!(error, Error::ReadConfig { .. }));
        assert!(
            error
                .to_string()
                .contains(&config_path.display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn invalid_config_names_path() {
        let bundle = write_bundle("{ not json");

        let error = load_bundle(bundle.path(), &[]).unwrap_err();

        assert!(matches!(error, Error::ParseConfig { .. }));
        assert!(error.to_string().contains("config.json"), "{error}");
    }

    #[test]
    fn missing_rootfs_names_path() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("config.json"), MINIMAL_CONFIG).unwrap();

        let error = load_bundle(dir.path(), &[]).unwrap_err();

        let rootfs = dir.path().join("rootfs");
        assert!(matches!(error, Error::Rootfs { .. }));
        assert!(
            error.to_string().contains(&rootfs.display().to_string()),
            "{error}"
        );
    }

    #[test]
    fn rootfs_that_is_a_file_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("config.json"), MINIMAL_CONFIG).unwrap();
        fs::write(dir.path().join("rootfs"), "").unwrap();

        let error = load_bundle(dir.path(), &[]).unwrap_err();

        assert!(error.to_string().contains("not a directory"), "{error}");
    }

    #[test]
    fn config_without_process_is_rejected() {
        let bundle = write_bundle(r#"{ "ociVersion": "1.0.2", "root": { "path": "rootfs" } }"#);

        let error = load_bundle(bundle.path(), &[]).unwrap_err();

        assert!(matches!(error, Error::MissingProcess { .. }));
    }

    #[test]
    fn generated_id_uses_allowed_characters() {
        let id = generate_id();

        assert!(id.starts_with("berth-"), "{id}");
        assert!(
            id.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')),
            "{id}"
        );
    }

    #[test]
    fn generated_ids_differ() {
        let first = generate_id();
        let second = generate_id();

        assert_ne!(first, second);
    }
}
