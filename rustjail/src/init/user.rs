//! The user of the container process, resolved against the container's own
//! `/etc/passwd` and `/etc/group`. Runs after `pivot_root`, so those are the image's files.

use std::fs;
use std::io;
use std::path::Path;

use oci_spec::runtime::User;

use super::{failed, InitError};

/// The ids the process runs with and its home directory.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// Home directory from the passwd entry of `uid`, when there is one.
    pub home: Option<String>,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Resolves `user`. `username` ("name", "uid", "name:group" or "uid:gid") wins over the
/// numeric `uid` and `gid`. A user given by name also gets the groups that list it as a
/// member, after `additionalGids`.
pub(crate) fn resolve(user: &User) -> Result<ResolvedUser, InitError> {
    let passwd = read_passwd(Path::new("/etc/passwd"))?;
    let groups = read_group(Path::new("/etc/group"))?;
    resolve_with(user, &passwd, &groups)
}

fn resolve_with(
    user: &User,
    passwd: &[PasswdEntry],
    groups: &[GroupEntry],
) -> Result<ResolvedUser, InitError> {
    let mut additional_gids = user.additional_gids().clone().unwrap_or_default();
    let username = user.username().as_deref().filter(|name| !name.is_empty());

    let (uid, mut gid, member_name) = match username {
        None => (user.uid(), user.gid(), None),
        Some(username) => {
            let (user_part, _) = username.split_once(':').unwrap_or((username, ""));
            match user_part.parse::<u32>() {
                Ok(uid) => (uid, user.gid(), None),
                Err(_) => {
                    let entry = passwd
                        .iter()
                        .find(|entry| entry.name == user_part)
                        .ok_or_else(|| {
                            InitError::invalid_spec(format!(
                                "user {user_part:?} of process.user.username not found in \
                                 /etc/passwd of the container"
                            ))
                        })?;
                    (entry.uid, entry.gid, Some(user_part))
                }
            }
        }
    };

    if let Some((_, group_part)) = username.and_then(|name| name.split_once(':')) {
        gid = match group_part.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                groups
                    .iter()
                    .find(|entry| entry.name == group_part)
                    .ok_or_else(|| {
                        InitError::invalid_spec(format!(
                            "group {group_part:?} of process.user.username not found in \
                             /etc/group of the container"
                        ))
                    })?
                    .gid
            }
        };
    }

    if let Some(name) = member_name {
        for group in groups {
            let is_member = group.members.iter().any(|member| member == name);
            if is_member && !additional_gids.contains(&group.gid) {
                additional_gids.push(group.gid);
            }
        }
    }

    let home = passwd
        .iter()
        .find(|entry| entry.uid == uid)
        .map(|entry| entry.home.clone())
        .filter(|home| !home.is_empty());
    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home,
    })
}

/// Reads `name:password:uid:gid:gecos:home:shell` lines. A missing file is empty, as in
/// images without one. Malformed lines are skipped.
fn read_passwd(path: &Path) -> Result<Vec<PasswdEntry>, InitError> {
    let text = read_optional(path)?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let [name, _, uid, gid, _, home, ..] = fields.as_slice() else {
                return None;
            };
            Some(PasswdEntry {
                name: name.to_string(),
                uid: uid.parse().ok()?,
                gid: gid.parse().ok()?,
                home: home.to_string(),
            })
        })
        .collect())
}

/// Reads `name:password:gid:member,member` lines, skipping malformed ones.
fn read_group(path: &Path) -> Result<Vec<GroupEntry>, InitError> {
    let text = read_optional(path)?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let [name, _, gid, members, ..] = fields.as_slice() else {
                return None;
            };
            Some(GroupEntry {
                name: name.to_string(),
                gid: gid.parse().ok()?,
                members: members
                    .split(',')
                    .filter(|member| !member.is_empty())
                    .map(str::to_owned)
                    .collect(),
            })
        })
        .collect())
}

fn read_optional(path: &Path) -> Result<String, InitError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(text),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(String::new()),
        Err(error) => Err(failed(format_args!("read {}", path.display()))(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::UserBuilder;

    fn database() -> (Vec<PasswdEntry>, Vec<GroupEntry>) {
        let dir = tempfile::tempdir().unwrap();
        fs::write(
            dir.path().join("passwd"),
            "root:x:0:0:root:/root:/bin/sh\nbroken line\nalice:x:1000:1000::/home/alice:/bin/sh\n",
        )
        .unwrap();
        fs::write(
            dir.path().join("group"),
            "root:x:0:\nalice:x:1000:\nwheel:x:10:bob,alice\nstaff:x:50:\n",
        )
        .unwrap();
        (
            read_passwd(&dir.path().join("passwd")).unwrap(),
            read_group(&dir.path().join("group")).unwrap(),
        )
    }

    fn user(username: Option<&str>, uid: u32, gid: u32) -> User {
        let mut builder = UserBuilder::default().uid(uid).gid(gid);
        if let Some(username) = username {
            builder = builder.username(username);
        }
        builder.build().unwrap()
    }

    #[test]
    fn name_resolves_ids_groups_and_home() {
        let (passwd, groups) = database();

        let resolved = resolve_with(&user(Some("alice"), 0, 0), &passwd, &groups).unwrap();

        assert_eq!(resolved.uid, 1000);
        assert_eq!(resolved.gid, 1000);
        assert_eq!(resolved.additional_gids, [10]);
        assert_eq!(resolved.home.as_deref(), Some("/home/alice"));
    }

    #[test]
    fn name_with_group_name_sets_gid() {
        let (passwd, groups) = database();

        let resolved = resolve_with(&user(Some("alice:staff"), 0, 0), &passwd, &groups).unwrap();

        assert_eq!(resolved.gid, 50);
    }

    #[test]
    fn numeric_username_needs_no_entry() {
        let (passwd, groups) = database();

        let resolved = resolve_with(&user(Some("4242:7"), 0, 0), &passwd, &groups).unwrap();

        assert_eq!((resolved.uid, resolved.gid), (4242, 7));
        assert_eq!(resolved.home, None);
    }

    #[test]
    fn unknown_name_is_invalid_spec() {
        let (passwd, groups) = database();

        let error = resolve_with(&user(Some("mallory"), 0, 0), &passwd, &groups).unwrap_err();

        assert!(error.message.contains("\"mallory\""), "{}", error.message);
    }

    #[test]
    fn unknown_group_is_invalid_spec() {
        let (passwd, groups) = database();

        let error = resolve_with(&user(Some("alice:nogroup"), 0, 0), &passwd, &groups).unwrap_err();

        assert!(error.message.contains("\"nogroup\""), "{}", error.message);
    }

    #[test]
    fn numeric_ids_find_home_by_uid() {
        let (passwd, groups) = database();

        let resolved = resolve_with(&user(None, 0, 0), &passwd, &groups).unwrap();

        assert_eq!(resolved.home.as_deref(), Some("/root"));
        assert!(resolved.additional_gids.is_empty());
    }
}
