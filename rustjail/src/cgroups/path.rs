//! The container's path inside each cgroup hierarchy.

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Spec;

use crate::error::Error;

/// Returns the cgroup path of the container relative to each hierarchy's root.
///
/// `linux.cgroupsPath` wins when set. An absolute or relative path is taken relative to
/// the hierarchy root. The systemd form `slice:prefix:name` has no systemd to hand it to
/// in the guest, so it becomes the directory path `slice/prefix-name` (`slice/name` when
/// the prefix is empty). Without a cgroups path the result is `parent/id`.
pub(crate) fn relative_path(spec: &Spec, id: &str, parent: &str) -> Result<PathBuf, Error> {
    let configured = spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.cgroups_path().clone());

    let path = match configured {
        Some(path) if !path.as_os_str().is_empty() => from_spec(&path)?,
        _ => {
            if id.is_empty() || id.contains('/') {
                return Err(Error::InvalidSpec(format!(
                    "container id {id:?} cannot name a cgroup directory"
                )));
            }
            Path::new(parent.trim_matches('/')).join(id)
        }
    };
    check_relative(&path)?;
    Ok(path)
}

fn from_spec(path: &Path) -> Result<PathBuf, Error> {
    let text = path.to_string_lossy();
    let fields: Vec<&str> = text.split(':').collect();
    match fields.as_slice() {
        [slice, prefix, name] if !text.starts_with('/') => {
            let leaf = if prefix.is_empty() {
                name.to_string()
            } else {
                format!("{prefix}-{name}")
            };
            Ok(Path::new(slice).join(leaf))
        }
        _ => Ok(path.strip_prefix("/").unwrap_or(path).to_path_buf()),
    }
}

fn check_relative(path: &Path) -> Result<(), Error> {
    let only_normal = path
        .components()
        .all(|component| matches!(component, Component::Normal(_)));
    if path.as_os_str().is_empty() || !only_normal {
        return Err(Error::InvalidSpec(format!(
            "cgroups path {} must name a directory below the hierarchy root without . or ..",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, SpecBuilder};

    fn spec_with_path(path: Option<&str>) -> Spec {
        let mut linux = LinuxBuilder::default();
        if let Some(path) = path {
            linux = linux.cgroups_path(PathBuf::from(path));
        }
        SpecBuilder::default()
            .linux(linux.build().unwrap())
            .build()
            .unwrap()
    }

    #[test]
    fn default_path_is_parent_and_id() {
        let path = relative_path(&spec_with_path(None), "c1", "berth").unwrap();
        assert_eq!(path, Path::new("berth/c1"));
    }

    #[test]
    fn absolute_path_is_relative_to_root() {
        let path =
            relative_path(&spec_with_path(Some("/kubepods/pod1/c1")), "c1", "berth").unwrap();
        assert_eq!(path, Path::new("kubepods/pod1/c1"));
    }

    #[test]
    fn systemd_path_becomes_directories() {
        let path =
            relative_path(&spec_with_path(Some("system.slice:kata:c1")), "c1", "berth").unwrap();
        assert_eq!(path, Path::new("system.slice/kata-c1"));
    }

    #[test]
    fn dot_dot_in_path_is_rejected() {
        let error =
            relative_path(&spec_with_path(Some("/a/../../etc")), "c1", "berth").unwrap_err();
        assert!(error.is_invalid_input(), "{error}");
    }

    #[test]
    fn id_with_slash_is_rejected() {
        let error = relative_path(&spec_with_path(None), "a/b", "berth").unwrap_err();
        assert!(error.is_invalid_input(), "{error}");
    }
}
