//! Detection of the cgroup hierarchies mounted under a cgroup root.
//!
//! Pure cgroup v2 mounts one `cgroup2` filesystem at the root itself. The v1 and hybrid
//! layouts mount one `cgroup` filesystem per controller group in a directory below the
//! root, and hybrid adds a `cgroup2` mount (usually `unified`) next to them.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::Error;

/// The v1 controllers the launcher creates a directory in. `name=systemd` is a named
/// hierarchy without a controller, which systemd expects every process to be in.
const V1_CONTROLLERS: &[&str] = &[
    "cpu",
    "cpuacct",
    "cpuset",
    "memory",
    "devices",
    "freezer",
    "blkio",
    "pids",
    "hugetlb",
    "net_cls",
    "net_prio",
    "rdma",
    "name=systemd",
];

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    pub mount_point: PathBuf,
    /// v1 controllers of the mount (`name=systemd` for the named hierarchy), or the
    /// controllers listed in `cgroup.controllers` for a v2 mount.
    pub controllers: Vec<String>,
    pub unified: bool,
}

impl Hierarchy {
    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|name| name == controller)
    }
}

/// Finds the hierarchies under `root` from the caller's mount table.
pub(crate) fn detect(root: &Path) -> Result<Vec<Hierarchy>, Error> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|source| Error::Cgroup {
        operation: "read mount table",
        path: PathBuf::from("/proc/self/mountinfo"),
        source,
    })?;
    detect_in(root, &mountinfo)
}

/// Finds the hierarchies under `root` in the text of a `mountinfo` file.
pub(crate) fn detect_in(root: &Path, mountinfo: &str) -> Result<Vec<Hierarchy>, Error> {
    let mounts: Vec<CgroupMount> = mountinfo.lines().filter_map(parse_cgroup_mount).collect();

    if let Some(mount) = mounts
        .iter()
        .find(|mount| mount.unified && mount.mount_point == root)
    {
        return Ok(vec![unified_hierarchy(&mount.mount_point)?]);
    }

    let mut hierarchies = Vec::new();
    for mount in mounts
        .iter()
        .filter(|mount| mount.mount_point.parent() == Some(root))
    {
        if hierarchies
            .iter()
            .any(|known: &Hierarchy| known.mount_point == mount.mount_point)
        {
            continue;
        }
        if mount.unified {
            hierarchies.push(unified_hierarchy(&mount.mount_point)?);
            continue;
        }
        let controllers: Vec<String> = mount
            .options
            .iter()
            .filter(|option| V1_CONTROLLERS.contains(&option.as_str()))
            .cloned()
            .collect();
        if !controllers.is_empty() {
            hierarchies.push(Hierarchy {
                mount_point: mount.mount_point.clone(),
                controllers,
                unified: false,
            });
        }
    }
    if !hierarchies.is_empty() {
        return Ok(hierarchies);
    }

    // A cgroup2 directory that is not a mount point of its own, as a test's fake root.
    if root.join("cgroup.controllers").is_file() {
        return Ok(vec![unified_hierarchy(root)?]);
    }
    Err(Error::Cgroup {
        operation: "find cgroup hierarchies under",
        path: root.to_path_buf(),
        source: io::Error::new(io::ErrorKind::NotFound, "no cgroup or cgroup2 mount found"),
    })
}

fn unified_hierarchy(mount_point: &Path) -> Result<Hierarchy, Error> {
    let path = mount_point.join("cgroup.controllers");
    let text = fs::read_to_string(&path).map_err(|source| Error::Cgroup {
        operation: "read",
        path,
        source,
    })?;
    Ok(Hierarchy {
        mount_point: mount_point.to_path_buf(),
        controllers: text.split_whitespace().map(str::to_owned).collect(),
        unified: true,
    })
}

struct CgroupMount {
    mount_point: PathBuf,
    options: Vec<String>,
    unified: bool,
}

/// Parses one `mountinfo` line (see proc(5)) and keeps it when it is a cgroup mount.
fn parse_cgroup_mount(line: &str) -> Option<CgroupMount> {
    let (before, after) = line.split_once(" - ")?;
    let mount_point = before.split(' ').nth(4)?;
    let mut after = after.split(' ');
    let filesystem = after.next()?;
    let _source = after.next()?;
    let super_options = after.next().unwrap_or("");

    let unified = match filesystem {
        "cgroup2" => true,
        "cgroup" => false,
        _ => return None,
    };
    Some(CgroupMount {
        mount_point: PathBuf::from(unescape(mount_point)),
        options: super_options.split(',').map(str::to_owned).collect(),
        unified,
    })
}

/// Decodes the octal escapes (`\040` for a space) the kernel writes in mount points.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escape = bytes.get(index + 1..index + 4);
        if bytes[index] == b'\\' {
            if let Some(code) = escape
                .and_then(|digits| std::str::from_utf8(digits).ok())
                .and_then(|digits| u8::from_str_radix(digits, 8).ok())
            {
                out.push(code);
                index += 4;
                continue;
            }
        }
        out.push(bytes[index]);
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
42 31 0:39 / /sys/fs/cgroup/net_cls rw,relatime - cgroup cgroup rw,net_cls
50 23 0:40 / /other/cgroup rw,relatime - cgroup cgroup rw,memory
";

    #[test]
    fn v1_mounts_under_root_are_hierarchies() {
        let hierarchies = detect_in(Path::new("/sys/fs/cgroup"), HYBRID).unwrap();

        let mount_points: Vec<_> = hierarchies
            .iter()
            .map(|h| h.mount_point.to_str().unwrap())
            .collect();
        assert_eq!(
            mount_points,
            [
                "/sys/fs/cgroup/cpu,cpuacct",
                "/sys/fs/cgroup/cpuset",
                "/sys/fs/cgroup/systemd",
                "/sys/fs/cgroup/net_cls"
            ]
        );
        assert_eq!(hierarchies[0].controllers, ["cpu", "cpuacct"]);
        assert_eq!(hierarchies[2].controllers, ["name=systemd"]);
        assert_eq!(hierarchies[3].controllers, ["net_cls"]);
        assert!(hierarchies.iter().all(|h| !h.unified));
    }

    #[test]
    fn root_without_cgroup_mounts_is_rejected() {
        let root = tempfile::tempdir().unwrap();

        let error = detect_in(root.path(), HYBRID).unwrap_err();

        assert!(
            error.to_string().contains(root.path().to_str().unwrap()),
            "{error}"
        );
    }

    #[test]
    fn directory_with_controllers_file_is_unified() {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();

        let hierarchies = detect_in(root.path(), HYBRID).unwrap();

        assert_eq!(hierarchies.len(), 1);
        assert!(hierarchies[0].unified);
        assert_eq!(hierarchies[0].controllers, ["cpu", "memory", "pids"]);
    }

    #[test]
    fn escaped_mount_point_is_decoded() {
        assert_eq!(unescape(r"/sys/fs/cgroup/a\040b"), "/sys/fs/cgroup/a b");
        assert_eq!(unescape(r"/plain\"), r"/plain\");
    }
}
