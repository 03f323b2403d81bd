//! Storage drivers and the checks on a storage before anything is created.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::error::StageError;
use crate::request::{FsGroup, Storage};
use crate::storage::mounter::{parse_mount_options, Mounter};

/// Driver of a tmpfs mounted at the mount point.
pub(crate) const EPHEMERAL: &str = "ephemeral";
/// Driver of a plain directory at the mount point.
pub(crate) const LOCAL: &str = "local";

/// Driver input, checked and parsed before anything on the guest changes.
#[derive(Debug)]
pub(crate) enum Plan {
    Ephemeral { source: String, fstype: String },
    Local { mode: u32 },
}

/// The mount and directories a driver created, so that teardown removes exactly those.
#[derive(Debug, Default)]
pub(crate) struct Created {
    pub mounted: bool,
    /// Directories this storage created, parents first.
    pub dirs: Vec<PathBuf>,
}

/// Checks that `mount_point` is an absolute, normalised path strictly inside `run_dir`
/// and that no existing directory on the way is a symbolic link, which could send the
/// mount elsewhere.
pub fn validate_mount_point(mount_point: &str, run_dir: &Path) -> Result<PathBuf, StageError> {
    let invalid = |reason: &str| StageError::invalid("mount point", mount_point, reason);

    if !mount_point.starts_with('/') {
        return Err(invalid("must be an absolute path"));
    }
    if mount_point.len() > 1 && mount_point.ends_with('/') {
        return Err(invalid("must not end with '/'"));
    }
    if mount_point.contains("//") {
        return Err(invalid("must not contain empty path segments"));
    }
    let path = PathBuf::from(mount_point);
    let normal = path
        .components()
        .all(|component| matches!(component, Component::RootDir | Component::Normal(_)));
    if !normal || mount_point.split('/').any(|segment| segment == ".") {
        return Err(invalid("must not contain '.' or '..' segments"));
    }
    let relative = match path.strip_prefix(run_dir) {
        Ok(relative) if !relative.as_os_str().is_empty() => relative.to_path_buf(),
        _ => {
            let reason = format!("must be inside {}", run_dir.display());
            return Err(invalid(&reason));
        }
    };

    let mut current = run_dir.to_path_buf();
    for component in relative.components() {
        current.push(component);
        match fs::symlink_metadata(&current) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                let reason = format!("{} is a symbolic link", current.display());
                return Err(invalid(&reason));
            }
            Ok(_) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => break,
            Err(error) => return Err(StageError::io("inspect", current, error)),
        }
    }

    Ok(path)
}

/// Parses an octal permission mode such as `0777` or `1777`.
pub fn parse_mode(value: &str) -> Result<u32, StageError> {
    let invalid = |reason: &str| StageError::invalid("mode", value, reason);

    // from_str_radix alone would also accept a leading '+'.
    if value.is_empty() || !value.bytes().all(|byte| matches!(byte, b'0'..=b'7')) {
        return Err(invalid("must be an octal number such as 0755"));
    }
    let mode = u32::from_str_radix(value, 8)
        .map_err(|_| invalid("must be an octal number such as 0755"))?;
    if mode > 0o7777 {
        return Err(invalid("must be at most 07777"));
    }
    Ok(mode)
}

/// Checks the driver and its options and returns what to do for `storage`.
pub(crate) fn plan(storage: &Storage) -> Result<Plan, StageError> {
    match storage.driver.as_str() {
        EPHEMERAL => Ok(Plan::Ephemeral {
            source: non_empty_or(&storage.source, "tmpfs"),
            fstype: non_empty_or(&storage.fstype, "tmpfs"),
        }),
        LOCAL => {
            let mode = match option_value(&storage.options, "mode") {
                Some(value) => parse_mode(value)?,
                None => 0o755,
            };
            Ok(Plan::Local { mode })
        }
        "" => Err(StageError::invalid(
            "storage driver",
            "",
            format!("storage for {} names no driver", storage.mount_point),
        )),
        other => Err(StageError::Unimplemented {
            kind: "storage driver",
            value: other.to_string(),
            reason: format!(
                "storage for {} needs it, but only {EPHEMERAL} and {LOCAL} are implemented",
                storage.mount_point
            ),
        }),
    }
}

/// Creates the mount point and provides the storage there. On failure, removes what it
/// created and returns the error.
pub(crate) fn provide(
    mounter: &dyn Mounter,
    storage: &Storage,
    plan: &Plan,
    mount_point: &Path,
) -> Result<Created, StageError> {
    let mut created = Created::default();

    let result = create_dirs(mount_point, &mut created.dirs)
        .and_then(|()| apply_plan(mounter, storage, plan, mount_point, &mut created))
        .and_then(|()| apply_fs_group(storage.fs_group, mount_point));

    match result {
        Ok(()) => Ok(created),
        Err(error) => {
            // The storage never became usable, so a failed cleanup step only leaves an
            // empty directory or an unused tmpfs behind; the original error matters more.
            let _ = remove(mounter, mount_point, &created);
            Err(error)
        }
    }
}

/// Unmounts what [`provide`] mounted and removes the directories it created. Parents that
/// other storages still use are kept.
pub(crate) fn remove(
    mounter: &dyn Mounter,
    mount_point: &Path,
    created: &Created,
) -> Result<(), StageError> {
    if created.mounted {
        mounter
            .unmount(mount_point)
            .map_err(|source| StageError::Unmount {
                target: mount_point.to_path_buf(),
                source,
            })?;
    }

    for dir in created.dirs.iter().rev() {
        let result = if dir == mount_point {
            fs::remove_dir_all(dir)
        } else {
            fs::remove_dir(dir)
        };
        match result {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) if error.kind() == io::ErrorKind::DirectoryNotEmpty => {}
            Err(error) => return Err(StageError::io("remove directory", dir, error)),
        }
    }

    Ok(())
}

fn apply_plan(
    mounter: &dyn Mounter,
    storage: &Storage,
    plan: &Plan,
    mount_point: &Path,
    created: &mut Created,
) -> Result<(), StageError> {
    match plan {
        Plan::Ephemeral { source, fstype } => {
            let options = parse_mount_options(&storage.options);
            mounter
                .mount(
                    source,
                    mount_point,
                    fstype,
                    options.flags,
                    options.data.as_deref(),
                )
                .map_err(|error| StageError::Mount {
                    source_name: source.clone(),
                    target: mount_point.to_path_buf(),
                    source: error,
                })?;
            created.mounted = true;
            Ok(())
        }
        Plan::Local { mode } => {
            // mkdir applies the umask, so the requested mode is set explicitly afterwards.
            fs::set_permissions(mount_point, fs::Permissions::from_mode(*mode))
                .map_err(|error| StageError::io("set mode of", mount_point, error))
        }
    }
}

/// Gives the storage's root directory to the requested group, with the set-group-ID bit
/// so new files inherit it, and group read/write access.
fn apply_fs_group(fs_group: Option<FsGroup>, mount_point: &Path) -> Result<(), StageError> {
    let Some(fs_group) = fs_group else {
        return Ok(());
    };

    let metadata =
        fs::metadata(mount_point).map_err(|error| StageError::io("inspect", mount_point, error))?;
    if fs_group.change_policy_on_root_mismatch && metadata.gid() == fs_group.group_id {
        return Ok(());
    }

    // NOTE: only the root directory is changed. That covers a fresh tmpfs or a new
    // directory; drivers that expose existing content (block devices) need a walk.
    let gid = nix::unistd::Gid::from_raw(fs_group.group_id);
    nix::unistd::chown(mount_point, None, Some(gid))
        .map_err(|errno| StageError::io("change group of", mount_point, io::Error::from(errno)))?;
    let mode = (metadata.mode() & 0o7777) | 0o2070;
    fs::set_permissions(mount_point, fs::Permissions::from_mode(mode))
        .map_err(|error| StageError::io("set mode of", mount_point, error))
}

/// Creates `path` and its missing parents, recording each directory created.
fn create_dirs(path: &Path, created: &mut Vec<PathBuf>) -> Result<(), StageError> {
    let mut missing = Vec::new();
    let mut current = path;
    while !current.exists() {
        missing.push(current.to_path_buf());
        match current.parent() {
            Some(parent) => current = parent,
            None => break,
        }
    }

    for dir in missing.into_iter().rev() {
        match fs::create_dir(&dir) {
            Ok(()) => created.push(dir),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {}
            Err(error) => return Err(StageError::io("create directory", dir, error)),
        }
    }

    if !path.is_dir() {
        let error = io::Error::new(
            io::ErrorKind::AlreadyExists,
            "exists and is not a directory",
        );
        return Err(StageError::io("use mount point", path, error));
    }
    Ok(())
}

/// Returns the value of the first `key=value` option.
fn option_value<'a>(options: &'a [String], key: &str) -> Option<&'a str> {
    options.iter().find_map(|option| {
        let (name, value) = option.split_once('=')?;
        (name == key).then_some(value)
    })
}

fn non_empty_or(value: &str, default: &str) -> String {
    if value.is_empty() {
        default.to_string()
    } else {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn mount_point_inside_run_dir_accepted() {
        let run = tempfile::tempdir().unwrap();
        let mount_point = run.path().join("sandbox/storage/MDAvMDA=");

        let validated = validate_mount_point(mount_point.to_str().unwrap(), run.path());

        assert_eq!(validated.unwrap(), mount_point);
    }

    #[test]
    fn bad_mount_points_rejected() {
        let run = tempfile::tempdir().unwrap();
        let base = run.path().display().to_string();
        let cases = [
            "relative/dir".to_string(),
            String::new(),
            format!("{base}/a/../b"),
            format!("{base}/a/./b"),
            format!("{base}//a"),
            format!("{base}/a/"),
            format!("{base}/.."),
            base.clone(),
            "/etc/x".to_string(),
            format!("{base}-sibling/x"),
        ];

        for mount_point in cases {
            let error = validate_mount_point(&mount_point, run.path())
                .expect_err(&format!("{mount_point:?} accepted"));

            assert_eq!(error.code(), ErrorCode::InvalidArgument);
            assert!(
                error.to_string().contains(&format!("{mount_point:?}")),
                "{error}"
            );
        }
    }

    #[test]
    fn symlink_on_the_way_rejected() {
        let run = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), run.path().join("link")).unwrap();
        let mount_point = run.path().join("link/storage");

        let error = validate_mount_point(mount_point.to_str().unwrap(), run.path())
            .expect_err("symlink accepted");

        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        assert!(error.to_string().contains("symbolic link"), "{error}");
        assert!(!outside.path().join("storage").exists());
    }

    #[test]
    fn mode_parsed_as_octal() {
        assert_eq!(parse_mode("0777").unwrap(), 0o777);
        assert_eq!(parse_mode("750").unwrap(), 0o750);
        assert_eq!(parse_mode("1777").unwrap(), 0o1777);
    }

    #[test]
    fn bad_modes_rejected() {
        for value in ["", "0789", "rwx", "-1", "+755", "077777", "0x1ff"] {
            let error = parse_mode(value).expect_err(&format!("{value:?} accepted"));

            assert_eq!(error.code(), ErrorCode::InvalidArgument);
        }
    }

    #[test]
    fn unknown_driver_named_in_error() {
        let storage = Storage {
            driver: "image_guest_pull".to_string(),
            mount_point: "/run/kata-containers/c1/rootfs".to_string(),
            ..Storage::default()
        };

        let error = plan(&storage).expect_err("driver not implemented");

        assert_eq!(error.code(), ErrorCode::Unimplemented);
        assert!(
            error.to_string().contains("\"image_guest_pull\""),
            "{error}"
        );
    }

    #[test]
    fn local_bad_mode_option_rejected() {
        let storage = Storage {
            driver: LOCAL.to_string(),
            options: vec!["mode=0999".to_string()],
            ..Storage::default()
        };

        let error = plan(&storage).expect_err("bad mode rejected");

        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        assert!(error.to_string().contains("\"0999\""), "{error}");
    }
}
