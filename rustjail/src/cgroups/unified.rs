//! `linux.resources.unified`: cgroup v2 files written by name.
//!
//! Each key is a file name in the container's directory of the cgroup2 hierarchy: the
//! whole layout on pure v2, and the `cgroup2` mount next to the v1 controllers on a
//! hybrid layout. The values are written after every other limit, so a key overrides the
//! value a typed field wrote to the same file.

use std::collections::HashMap;
use std::path::Path;

use super::layout::Hierarchy;
use super::resources::{enable_controller, write_file};
use crate::error::Error;

/// Writes each value of `unified` to the file its key names, in key order.
pub(super) fn apply_unified(
    targets: &[(&Hierarchy, &Path)],
    unified: &HashMap<String, String>,
) -> Result<(), Error> {
    if unified.is_empty() {
        return Ok(());
    }
    let Some((hierarchy, directory)) = targets.iter().find(|(hierarchy, _)| hierarchy.unified)
    else {
        return Err(Error::Unsupported {
            field: "linux.resources.unified",
            missing: "no cgroup2 hierarchy is mounted under the cgroup root".to_owned(),
        });
    };

    let mut entries: Vec<(&String, &String)> = unified.iter().collect();
    entries.sort();
    for (key, value) in entries {
        check_key(key)?;

        // A controller's files, such as memory.high, exist only once the parent enables
        // the controller for its children.
        if let Some((controller, _)) = key.split_once('.') {
            if hierarchy.has(controller) {
                enable_controller(&hierarchy.mount_point, directory, controller)?;
            }
        }

        let path = directory.join(key);
        if !path.is_file() {
            return Err(Error::UnifiedKey {
                key: key.clone(),
                reason: format!("{} does not exist", path.display()),
            });
        }
        write_file(&path, value)?;
    }
    Ok(())
}

/// Checks that `key` is a plain file name, so that it cannot reach outside the
/// container's directory.
fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() || key == "." || key == ".." || key.contains('/') || key.contains('\0') {
        return Err(Error::UnifiedKey {
            key: key.to_owned(),
            reason: "must be a file name without \"/\"".to_owned(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// Creates a fake cgroup2 hierarchy with the `memory` controller available and the
    /// container's directory at `leaf`, which has `files`.
    fn fake_v2(files: &[&str]) -> (tempfile::TempDir, Hierarchy) {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.subtree_control"), "").unwrap();
        fs::create_dir(root.path().join("leaf")).unwrap();
        for file in files {
            fs::write(root.path().join("leaf").join(file), "").unwrap();
        }
        let hierarchy = Hierarchy {
            mount_point: root.path().to_path_buf(),
            controllers: vec!["memory".to_owned()],
            unified: true,
        };
        (root, hierarchy)
    }

    fn map(entries: &[(&str, &str)]) -> HashMap<String, String> {
        entries
            .iter()
            .map(|(key, value)| (key.to_string(), value.to_string()))
            .collect()
    }

    #[test]
    fn values_written_and_controller_enabled() {
        let (root, hierarchy) = fake_v2(&["cgroup.max.depth", "memory.high"]);
        let leaf = root.path().join("leaf");
        let unified = map(&[("cgroup.max.depth", "3"), ("memory.high", "1048576")]);

        apply_unified(&[(&hierarchy, &leaf)], &unified).unwrap();

        let read = |path: &Path| fs::read_to_string(path).unwrap();
        assert_eq!(read(&leaf.join("cgroup.max.depth")), "3");
        assert_eq!(read(&leaf.join("memory.high")), "1048576");
        assert_eq!(read(&root.path().join("cgroup.subtree_control")), "+memory");
    }

    #[test]
    fn key_with_slash_is_rejected() {
        let (root, hierarchy) = fake_v2(&["cgroup.max.depth"]);
        let leaf = root.path().join("leaf");

        for key in ["../cgroup.max.depth", "a/b", "..", ""] {
            let error = apply_unified(&[(&hierarchy, &leaf)], &map(&[(key, "1")])).unwrap_err();

            assert!(error.is_invalid_input(), "{error}");
            assert!(error.to_string().contains(&format!("{key:?}")), "{error}");
        }
    }

    #[test]
    fn key_without_file_is_rejected() {
        let (root, hierarchy) = fake_v2(&[]);
        let leaf = root.path().join("leaf");

        let error =
            apply_unified(&[(&hierarchy, &leaf)], &map(&[("cgroup.nope", "1")])).unwrap_err();

        assert!(error.is_invalid_input(), "{error}");
        assert!(error.to_string().contains("\"cgroup.nope\""), "{error}");
        assert!(!leaf.join("cgroup.nope").exists());
    }

    #[test]
    fn v1_only_layout_is_unsupported() {
        let directory = tempfile::tempdir().unwrap();
        let hierarchy = Hierarchy {
            mount_point: directory.path().to_path_buf(),
            controllers: vec!["memory".to_owned()],
            unified: false,
        };

        let error = apply_unified(
            &[(&hierarchy, directory.path())],
            &map(&[("memory.high", "1")]),
        )
        .unwrap_err();

        assert!(error.is_unsupported(), "{error}");
        assert!(
            error.to_string().contains("linux.resources.unified"),
            "{error}"
        );
    }

    #[test]
    fn empty_map_needs_no_cgroup2() {
        let directory = tempfile::tempdir().unwrap();
        let hierarchy = Hierarchy {
            mount_point: directory.path().to_path_buf(),
            controllers: vec!["memory".to_owned()],
            unified: false,
        };

        apply_unified(&[(&hierarchy, directory.path())], &HashMap::new()).unwrap();
    }
}
