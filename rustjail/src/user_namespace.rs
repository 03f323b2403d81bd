//! User namespaces from the caller's side: checking the spec's ID mappings, and writing
//! them for an init cloned into a new user namespace.
//!
//! The init waits right after the clone, before it executes anything, until the caller
//! has written its `uid_map` and `gid_map` and sent it one byte ([`MAPPED`]) over the
//! sync socket. It then becomes uid and gid 0 of the namespace, so it executes the init
//! program as the namespace's root and keeps its capabilities there. The namespaces the
//! init creates afterwards belong to the new user namespace.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::sched::CloneFlags;
use nix::sys::socket::{send, MsgFlags};
use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

use crate::error::Error;

/// The byte the caller sends once the maps are written.
pub(crate) const MAPPED: u8 = b'M';

/// Maximum number of lines in one map file, the kernel's limit since Linux 4.15.
const MAX_MAP_LINES: usize = 340;

/// The `uid_map` and `gid_map` contents of a new user namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IdMaps {
    pub uid_map: String,
    pub gid_map: String,
}

/// User namespace work of [`crate::Container::create`] after the clone.
pub(crate) struct UserNamespaceSetup {
    /// The maps to write, for a new user namespace.
    pub id_maps: Option<IdMaps>,
    /// The namespaces [`join_first`] returned, which the init must not join again.
    pub joined_by_caller: Vec<LinuxNamespaceType>,
}

/// Checks the user namespace settings of `spec` and returns the maps to write when the
/// spec creates a user namespace.
///
/// A new user namespace needs both mappings, and both must map ID 0 of the container,
/// because the init sets the container up as root of the namespace. A namespace joined
/// by path, or none, takes no mappings.
pub(crate) fn plan(spec: &Spec) -> Result<Option<IdMaps>, Error> {
    let linux = spec.linux().as_ref();
    let user_namespace = linux
        .and_then(|linux| linux.namespaces().as_ref())
        .and_then(|namespaces| {
            namespaces
                .iter()
                .find(|namespace| namespace.typ() == LinuxNamespaceType::User)
        });
    let uid_mappings = linux
        .and_then(|linux| linux.uid_mappings().clone())
        .unwrap_or_default();
    let gid_mappings = linux
        .and_then(|linux| linux.gid_mappings().clone())
        .unwrap_or_default();

    let creates = user_namespace.is_some_and(|namespace| namespace.path().is_none());
    if !creates {
        if !uid_mappings.is_empty() || !gid_mappings.is_empty() {
            let reason = match user_namespace {
                Some(_) => "the user namespace is joined by path",
                None => "the spec has no user namespace",
            };
            return Err(Error::InvalidSpec(format!(
                "linux.uidMappings and linux.gidMappings must be empty: {reason}"
            )));
        }
        return Ok(None);
    }

    Ok(Some(IdMaps {
        uid_map: map_text("linux.uidMappings", &uid_mappings)?,
        gid_map: map_text("linux.gidMappings", &gid_mappings)?,
    }))
}

/// Opens the namespaces given by path that the caller joins before cloning into a new
/// user namespace (see `CloneNamespaces::join_first`). From inside the new user
/// namespace the init could not join them, because they belong to another user
/// namespace, over which it has no capabilities.
///
/// Mount and time namespaces can only be joined by a single-threaded process, so the
/// caller cannot join them first, and a spec that joins one of them while creating a
/// user namespace is rejected.
pub(crate) fn join_first(
    spec: &Spec,
) -> Result<Vec<(LinuxNamespaceType, OwnedFd, CloneFlags)>, Error> {
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|linux| linux.namespaces().clone())
        .unwrap_or_default();

    let mut joined = Vec::new();
    for namespace in &namespaces {
        let Some(path) = namespace.path() else {
            continue;
        };
        let flag = match namespace.typ() {
            LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
            LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
            LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
            LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            // The pid namespace has its own way in, see `PidNamespace::Join`.
            LinuxNamespaceType::Pid | LinuxNamespaceType::User => continue,
            kind @ (LinuxNamespaceType::Mount | LinuxNamespaceType::Time) => {
                return Err(Error::InvalidSpec(format!(
                    "the {kind:?} namespace {} cannot be joined by a container that creates \
                     its own user namespace",
                    path.display()
                )))
            }
        };
        let file = File::open(path).map_err(|source| {
            Error::InvalidSpec(format!(
                "open {:?} namespace {}: {source}",
                namespace.typ(),
                path.display()
            ))
        })?;
        joined.push((namespace.typ(), OwnedFd::from(file), flag));
    }
    Ok(joined)
}

/// Writes `maps` for the init `pid`, then sends the init the go-ahead byte.
pub(crate) fn write_maps(
    container: &str,
    pid: i32,
    maps: &IdMaps,
    sync: BorrowedFd<'_>,
) -> Result<(), Error> {
    for (file, text) in [("uid_map", &maps.uid_map), ("gid_map", &maps.gid_map)] {
        let path = format!("/proc/{pid}/{file}");
        write_once(&path, text).map_err(|source| Error::IdMap {
            container: container.to_owned(),
            path: path.clone().into(),
            map: text.trim_end().replace('\n', ", "),
            source,
        })?;
    }

    send(sync.as_raw_fd(), &[MAPPED], MsgFlags::MSG_NOSIGNAL).map_err(|errno| Error::Sync {
        container: container.to_owned(),
        operation: "send the user namespace go-ahead to",
        source: errno.into(),
    })?;
    Ok(())
}

/// Writes `text` to `path` in a single write(2), as the map files require.
pub(crate) fn write_once(path: &str, text: &str) -> std::io::Result<()> {
    let mut file = OpenOptions::new().write(true).open(path)?;
    let written = file.write(text.as_bytes())?;
    if written != text.len() {
        return Err(std::io::Error::other(format!(
            "short write: {written} of {} bytes",
            text.len()
        )));
    }
    Ok(())
}

/// Checks `mappings` of a new user namespace, which must map ID 0 of the container, and
/// formats them as lines of a map file.
fn map_text(field: &str, mappings: &[LinuxIdMapping]) -> Result<String, Error> {
    let text = map_lines(field, mappings).map_err(Error::InvalidSpec)?;
    if !mappings.iter().any(|mapping| mapping.container_id() == 0) {
        return Err(Error::InvalidSpec(format!(
            "{field} does not map ID 0 of the container, which the init needs to set it up"
        )));
    }
    Ok(text)
}

/// Checks `mappings` as the kernel will (1 to 340 ranges, none empty, none past the
/// last ID, none overlapping) and formats them as lines of a map file. The error names
/// `field` and the entry.
pub(crate) fn map_lines(field: &str, mappings: &[LinuxIdMapping]) -> Result<String, String> {
    if mappings.is_empty() {
        return Err(format!("{field} is empty"));
    }
    if mappings.len() > MAX_MAP_LINES {
        return Err(format!(
            "{field} has {} entries; the kernel takes at most {MAX_MAP_LINES}",
            mappings.len()
        ));
    }

    let ranges: Vec<(u64, u64, u64)> = mappings
        .iter()
        .map(|mapping| {
            (
                u64::from(mapping.container_id()),
                u64::from(mapping.host_id()),
                u64::from(mapping.size()),
            )
        })
        .collect();
    for (index, &(container, host, size)) in ranges.iter().enumerate() {
        if size == 0 {
            return Err(format!(
                "{field}[{index}] (containerID {container}, hostID {host}) has size 0"
            ));
        }
        if container + size > 1 << 32 || host + size > 1 << 32 {
            return Err(format!(
                "{field}[{index}] (containerID {container}, hostID {host}, size {size}) \
                 runs past ID 4294967295"
            ));
        }
        let overlapping = ranges[..index]
            .iter()
            .position(|&(other, other_host, other_size)| {
                overlaps(container, size, other, other_size)
                    || overlaps(host, size, other_host, other_size)
            });
        if let Some(other) = overlapping {
            return Err(format!("{field}[{index}] overlaps {field}[{other}]"));
        }
    }

    Ok(ranges
        .iter()
        .map(|(container, host, size)| format!("{container} {host} {size}\n"))
        .collect())
}

fn overlaps(start: u64, size: u64, other_start: u64, other_size: u64) -> bool {
    start < other_start + other_size && other_start < start + size
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxBuilder, LinuxIdMappingBuilder, LinuxNamespaceBuilder, SpecBuilder,
    };

    fn mapping(container: u32, host: u32, size: u32) -> LinuxIdMapping {
        LinuxIdMappingBuilder::default()
            .container_id(container)
            .host_id(host)
            .size(size)
            .build()
            .unwrap()
    }

    fn spec(
        user: Option<Option<&str>>,
        uids: Vec<LinuxIdMapping>,
        gids: Vec<LinuxIdMapping>,
    ) -> Spec {
        let mut namespaces = vec![LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Mount)
            .build()
            .unwrap()];
        if let Some(path) = user {
            let mut builder = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::User);
            if let Some(path) = path {
                builder = builder.path(path);
            }
            namespaces.push(builder.build().unwrap());
        }
        let linux = LinuxBuilder::default()
            .namespaces(namespaces)
            .uid_mappings(uids)
            .gid_mappings(gids)
            .build()
            .unwrap();
        SpecBuilder::default().linux(linux).build().unwrap()
    }

    #[test]
    fn new_namespace_maps_are_formatted_line_by_line() {
        let spec = spec(
            Some(None),
            vec![mapping(0, 100_000, 1000), mapping(1000, 200_000, 10)],
            vec![mapping(0, 100_000, 65536)],
        );

        let maps = plan(&spec).unwrap().unwrap();

        assert_eq!(maps.uid_map, "0 100000 1000\n1000 200000 10\n");
        assert_eq!(maps.gid_map, "0 100000 65536\n");
    }

    #[test]
    fn mappings_without_new_namespace_are_rejected() {
        let none = spec(None, vec![mapping(0, 1000, 1)], vec![]);
        let joined = spec(
            Some(Some("/proc/1/ns/user")),
            vec![],
            vec![mapping(0, 1, 1)],
        );

        for spec in [none, joined] {
            let error = plan(&spec).unwrap_err();
            assert!(error.is_invalid_input(), "{error}");
            assert!(error.to_string().contains("must be empty"), "{error}");
        }
    }

    #[test]
    fn bad_mappings_name_the_field_and_entry() {
        let cases = [
            (vec![], "linux.uidMappings is empty"),
            (vec![mapping(0, 1000, 0)], "linux.uidMappings[0]"),
            (
                vec![mapping(0, 1000, 10), mapping(5, 5000, 10)],
                "linux.uidMappings[1] overlaps linux.uidMappings[0]",
            ),
            (vec![mapping(1, 1000, 10)], "does not map ID 0"),
            (vec![mapping(0, u32::MAX, 2)], "runs past ID"),
        ];
        for (uids, expected) in cases {
            let spec = spec(Some(None), uids, vec![mapping(0, 1000, 1)]);

            let error = plan(&spec).unwrap_err();

            assert!(error.to_string().contains(expected), "{error}");
        }
    }
}
