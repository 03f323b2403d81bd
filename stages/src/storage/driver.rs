//! Storage drivers: the checks on a storage and the plan of what to mount, made before
//! anything on the guest changes.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use nix::mount::MsFlags;

use crate::error::StageError;
use crate::request::Storage;
use crate::storage::mounter::parse_mount_options;

/// Driver of a tmpfs mounted at the mount point.
pub(crate) const EPHEMERAL: &str = "ephemeral";
/// Driver of a plain directory at the mount point.
pub(crate) const LOCAL: &str = "local";

/// The drivers this agent implements, for error messages.
const DRIVERS: &str =
    "ephemeral, local, bind, virtio-fs, 9p, blk, mmioblk, scsi, nvdimm, overlayfs";

/// Driver input, checked and parsed before anything on the guest changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Mount a file system that needs no device: tmpfs, virtio-fs, 9p.
    Mount {
        source: String,
        fstype: String,
        flags: MsFlags,
        data: Option<String>,
    },
    /// Create a directory with exactly this mode.
    Local { mode: u32 },
    /// Bind-mount an existing guest path.
    Bind { source: PathBuf, flags: MsFlags },
    /// Mount the file system on a block device found by `locator`.
    Block {
        locator: BlockLocator,
        fstype: String,
        flags: MsFlags,
        data: Option<String>,
    },
    /// Mount an overlay file system, creating its upper and work directories if needed.
    Overlay {
        upper_and_work: Option<(PathBuf, PathBuf)>,
        flags: MsFlags,
        data: String,
    },
}

/// The locator a block storage uses for its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BlockLocator {
    Pci(String),
    Scsi(String),
    GuestPath(String),
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
    let driver = storage.driver.as_str();
    if !is_implemented(driver) {
        return Err(unsupported_driver(storage));
    }
    if let Some(option) = storage.driver_options.first() {
        return Err(StageError::Unimplemented {
            kind: "storage driver option",
            value: option.clone(),
            reason: format!("storage for {} needs it", storage.mount_point),
        });
    }

    let options = parse_mount_options(&storage.options);
    match driver {
        EPHEMERAL => Ok(Plan::Mount {
            source: non_empty_or(&storage.source, "tmpfs"),
            fstype: non_empty_or(&storage.fstype, "tmpfs"),
            flags: options.flags,
            data: options.data,
        }),
        LOCAL => {
            let mode = match option_value(&storage.options, "mode") {
                Some(value) => parse_mode(value)?,
                None => 0o755,
            };
            Ok(Plan::Local { mode })
        }
        "bind" => plan_bind(storage, options.flags),
        "virtio-fs" => Ok(Plan::Mount {
            source: required(&storage.source, "source", storage)?.to_string(),
            fstype: "virtiofs".to_string(),
            flags: options.flags,
            data: options.data,
        }),
        "9p" => Ok(Plan::Mount {
            source: required(&storage.source, "source", storage)?.to_string(),
            fstype: "9p".to_string(),
            flags: options.flags,
            data: Some(with_virtio_transport(options.data)),
        }),
        "blk" | "mmioblk" | "scsi" | "nvdimm" => plan_block(storage, options.flags, options.data),
        _ => plan_overlay(storage, options.flags, options.data),
    }
}

fn is_implemented(driver: &str) -> bool {
    matches!(
        driver,
        EPHEMERAL
            | LOCAL
            | "bind"
            | "virtio-fs"
            | "9p"
            | "blk"
            | "mmioblk"
            | "scsi"
            | "nvdimm"
            | "overlayfs"
    )
}

fn unsupported_driver(storage: &Storage) -> StageError {
    let reason = if storage.driver.is_empty() {
        format!("storage for {} names no driver", storage.mount_point)
    } else {
        format!(
            "storage for {} needs it, but this agent implements only {DRIVERS}",
            storage.mount_point
        )
    };
    StageError::invalid("storage driver", &storage.driver, reason)
}

fn plan_bind(storage: &Storage, flags: MsFlags) -> Result<Plan, StageError> {
    let source = required(&storage.source, "source", storage)?;
    let source = absolute_path("bind source", source)?;

    let mut bind_flags = MsFlags::MS_BIND | (flags & !MsFlags::MS_RDONLY);
    if storage.options.iter().any(|option| option == "rbind") {
        bind_flags |= MsFlags::MS_REC;
    }
    // Read-only takes a second, remounting call, which `provide` makes when the flags
    // contain MS_RDONLY.
    bind_flags |= flags & MsFlags::MS_RDONLY;
    Ok(Plan::Bind {
        source,
        flags: bind_flags,
    })
}

fn plan_block(storage: &Storage, flags: MsFlags, data: Option<String>) -> Result<Plan, StageError> {
    let source = required(&storage.source, "source", storage)?.to_string();
    let fstype = required(&storage.fstype, "fstype", storage)?.to_string();

    let locator = match storage.driver.as_str() {
        "blk" if source.starts_with("/dev/") => BlockLocator::GuestPath(source),
        "blk" => BlockLocator::Pci(source),
        "scsi" => BlockLocator::Scsi(source),
        _ => BlockLocator::GuestPath(source),
    };
    Ok(Plan::Block {
        locator,
        fstype,
        flags,
        data,
    })
}

fn plan_overlay(
    storage: &Storage,
    flags: MsFlags,
    data: Option<String>,
) -> Result<Plan, StageError> {
    let lower = option_value(&storage.options, "lowerdir").ok_or_else(|| {
        StageError::invalid(
            "overlayfs options",
            storage.options.join(","),
            "lowerdir= is required",
        )
    })?;
    for dir in lower.split(':') {
        absolute_path("overlayfs lowerdir", dir)?;
    }

    let upper = option_value(&storage.options, "upperdir");
    let work = option_value(&storage.options, "workdir");
    let upper_and_work = match (upper, work) {
        (Some(upper), Some(work)) => Some((
            absolute_path("overlayfs upperdir", upper)?,
            absolute_path("overlayfs workdir", work)?,
        )),
        (None, None) => None,
        _ => {
            return Err(StageError::invalid(
                "overlayfs options",
                storage.options.join(","),
                "upperdir= and workdir= must be given together",
            ))
        }
    };

    Ok(Plan::Overlay {
        upper_and_work,
        flags,
        data: data.unwrap_or_default(),
    })
}

/// Adds `trans=virtio` to 9p options unless they name a transport, because the guest
/// reaches 9p shares only over virtio.
fn with_virtio_transport(data: Option<String>) -> String {
    match data {
        Some(data) if data.split(',').any(|option| option.starts_with("trans=")) => data,
        Some(data) => format!("trans=virtio,{data}"),
        None => "trans=virtio".to_string(),
    }
}

fn required<'a>(
    value: &'a str,
    field: &'static str,
    storage: &Storage,
) -> Result<&'a str, StageError> {
    if value.is_empty() {
        return Err(StageError::invalid(
            "storage",
            &storage.mount_point,
            format!("the {} driver needs a {field}", storage.driver),
        ));
    }
    Ok(value)
}

/// Checks that `value` is an absolute path without `.` or `..` segments.
fn absolute_path(kind: &'static str, value: &str) -> Result<PathBuf, StageError> {
    let path = PathBuf::from(value);
    let normal = path
        .components()
        .all(|component| matches!(component, Component::RootDir | Component::Normal(_)));
    if !value.starts_with('/') || !normal || value.split('/').any(|segment| segment == ".") {
        return Err(StageError::invalid(
            kind,
            value,
            "must be an absolute path without '.' or '..' segments",
        ));
    }
    Ok(path)
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

        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        assert!(
            error.to_string().contains("\"image_guest_pull\""),
            "{error}"
        );
    }

    fn storage(driver: &str, source: &str, fstype: &str, options: &[&str]) -> Storage {
        Storage {
            driver: driver.to_string(),
            source: source.to_string(),
            fstype: fstype.to_string(),
            options: options.iter().map(|option| option.to_string()).collect(),
            mount_point: "/run/kata-containers/sandbox/storage/x".to_string(),
            ..Storage::default()
        }
    }

    #[test]
    fn driver_option_is_unimplemented() {
        let mut blk = storage("blk", "00/00", "ext4", &[]);
        blk.driver_options = vec!["encryption_key=ephemeral".to_string()];

        let error = plan(&blk).expect_err("encryption not supported");

        assert_eq!(error.code(), ErrorCode::Unimplemented);
        assert!(
            error.to_string().contains("\"encryption_key=ephemeral\""),
            "{error}"
        );
    }

    #[test]
    fn block_drivers_locate_devices() {
        let cases = [
            ("blk", "02/01", BlockLocator::Pci("02/01".to_string())),
            (
                "blk",
                "/dev/vdb",
                BlockLocator::GuestPath("/dev/vdb".to_string()),
            ),
            (
                "mmioblk",
                "/dev/vdc",
                BlockLocator::GuestPath("/dev/vdc".to_string()),
            ),
            ("scsi", "0:1", BlockLocator::Scsi("0:1".to_string())),
            (
                "nvdimm",
                "/dev/pmem0",
                BlockLocator::GuestPath("/dev/pmem0".to_string()),
            ),
        ];

        for (driver, source, expected) in cases {
            let planned = plan(&storage(
                driver,
                source,
                "ext4",
                &["ro", "noatime", "errors=remount-ro"],
            ));

            let Ok(Plan::Block {
                locator,
                fstype,
                flags,
                data,
            }) = planned
            else {
                panic!("{driver}: {planned:?}");
            };
            assert_eq!(locator, expected);
            assert_eq!(fstype, "ext4");
            assert_eq!(flags, MsFlags::MS_RDONLY | MsFlags::MS_NOATIME);
            assert_eq!(data.as_deref(), Some("errors=remount-ro"));
        }
        let error = plan(&storage("blk", "02/01", "", &[])).expect_err("no fstype");
        assert_eq!(error.code(), ErrorCode::InvalidArgument);
        assert!(error.to_string().contains("fstype"), "{error}");
    }

    #[test]
    fn nine_p_gets_virtio_transport() {
        let planned = plan(&storage(
            "9p",
            "kataShared",
            "9p",
            &["nodev", "version=9p2000.L"],
        ))
        .unwrap();

        let Plan::Mount {
            fstype,
            data,
            flags,
            ..
        } = planned
        else {
            panic!("{planned:?}");
        };
        assert_eq!(fstype, "9p");
        assert_eq!(flags, MsFlags::MS_NODEV);
        assert_eq!(data.as_deref(), Some("trans=virtio,version=9p2000.L"));
    }

    #[test]
    fn bind_flags_from_options() {
        let planned = plan(&storage(
            "bind",
            "/srv/data",
            "",
            &["rbind", "ro", "nosuid"],
        ))
        .unwrap();

        assert_eq!(
            planned,
            Plan::Bind {
                source: PathBuf::from("/srv/data"),
                flags: MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID,
            }
        );
        for bad in ["relative", "/a/../b", ""] {
            let error = plan(&storage("bind", bad, "", &[])).expect_err(bad);
            assert_eq!(error.code(), ErrorCode::InvalidArgument, "{bad}");
        }
    }

    #[test]
    fn overlay_options_checked() {
        let planned = plan(&storage(
            "overlayfs",
            "overlay",
            "overlay",
            &["lowerdir=/l1:/l2", "upperdir=/u", "workdir=/w"],
        ))
        .unwrap();

        assert_eq!(
            planned,
            Plan::Overlay {
                upper_and_work: Some((PathBuf::from("/u"), PathBuf::from("/w"))),
                flags: MsFlags::empty(),
                data: "lowerdir=/l1:/l2,upperdir=/u,workdir=/w".to_string(),
            }
        );
        for options in [
            &["upperdir=/u", "workdir=/w"][..],
            &["lowerdir=/l", "upperdir=/u"][..],
            &["lowerdir=relative"][..],
        ] {
            let error = plan(&storage("overlayfs", "overlay", "overlay", options))
                .expect_err(&format!("{options:?}"));
            assert_eq!(error.code(), ErrorCode::InvalidArgument, "{options:?}");
        }
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
