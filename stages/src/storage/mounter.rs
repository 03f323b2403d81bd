//! The mount system calls used by storage drivers, behind one trait so that drivers can
//! be tested with a recording or failing double.

use std::io;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// Mount and unmount operations on the guest.
pub trait Mounter: Send + Sync {
    /// Mounts `source` of type `fstype` on `target`, like mount(2).
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()>;

    /// Detaches the mount on `target`.
    fn unmount(&self, target: &Path) -> io::Result<()>;

    /// Returns the mount points at or below `path` in the calling thread's mount
    /// namespace, in mount order.
    fn mounts_under(&self, path: &Path) -> io::Result<Vec<PathBuf>> {
        let table = std::fs::read_to_string("/proc/thread-self/mountinfo")?;
        Ok(mount_points(&table)
            .filter(|mount_point| mount_point.starts_with(path))
            .collect())
    }
}

/// Returns the mount point field of each line of a mountinfo table, with the kernel's
/// octal escapes (`\040` for a space) decoded.
pub fn mount_points(table: &str) -> impl Iterator<Item = PathBuf> + '_ {
    table
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(decode_octal_escapes(field)))
}

fn decode_octal_escapes(field: &str) -> std::ffi::OsString {
    use std::os::unix::ffi::OsStringExt;

    let bytes = field.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        let escape = bytes.get(index + 1..index + 4).filter(|digits| {
            bytes[index] == b'\\' && digits.iter().all(|digit| (b'0'..=b'7').contains(digit))
        });
        match escape {
            Some(digits) => {
                let value = digits
                    .iter()
                    .fold(0u32, |value, digit| value * 8 + u32::from(digit - b'0'));
                decoded.push(value as u8);
                index += 4;
            }
            None => {
                decoded.push(bytes[index]);
                index += 1;
            }
        }
    }
    std::ffi::OsString::from_vec(decoded)
}

/// The real mount(2) and umount2(2).
#[derive(Debug, Default)]
pub struct SystemMounter;

impl Mounter for SystemMounter {
    fn mount(
        &self,
        source: &str,
        target: &Path,
        fstype: &str,
        flags: MsFlags,
        data: Option<&str>,
    ) -> io::Result<()> {
        nix::mount::mount(Some(source), target, Some(fstype), flags, data)?;
        Ok(())
    }

    fn unmount(&self, target: &Path) -> io::Result<()> {
        // A lazy unmount succeeds even while a container still has a file open in the
        // storage, so teardown can remove the directory afterwards.
        nix::mount::umount2(target, MntFlags::MNT_DETACH)?;
        Ok(())
    }
}

/// Mount options split into mount(2) flags and the file-system specific data string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOptions {
    pub flags: MsFlags,
    /// Comma-separated options the kernel passes to the file system, if any.
    pub data: Option<String>,
}

/// Splits options such as `["nodev", "ro", "size=64m"]` into flags and data. Options that
/// are not generic mount flags go to the data string in their original order.
pub fn parse_mount_options(options: &[String]) -> MountOptions {
    let mut flags = MsFlags::empty();
    let mut data = Vec::new();

    for option in options {
        match flag_of(option) {
            Some((flag, true)) => flags.remove(flag),
            Some((flag, false)) => flags.insert(flag),
            None if option.is_empty() => {}
            None => data.push(option.as_str()),
        }
    }

    MountOptions {
        flags,
        data: (!data.is_empty()).then(|| data.join(",")),
    }
}

/// Maps a generic mount option to its flag and whether the option clears the flag.
fn flag_of(option: &str) -> Option<(MsFlags, bool)> {
    let entry = match option {
        "ro" => (MsFlags::MS_RDONLY, false),
        "rw" => (MsFlags::MS_RDONLY, true),
        "nosuid" => (MsFlags::MS_NOSUID, false),
        "suid" => (MsFlags::MS_NOSUID, true),
        "nodev" => (MsFlags::MS_NODEV, false),
        "dev" => (MsFlags::MS_NODEV, true),
        "noexec" => (MsFlags::MS_NOEXEC, false),
        "exec" => (MsFlags::MS_NOEXEC, true),
        "sync" => (MsFlags::MS_SYNCHRONOUS, false),
        "async" => (MsFlags::MS_SYNCHRONOUS, true),
        "dirsync" => (MsFlags::MS_DIRSYNC, false),
        "noatime" => (MsFlags::MS_NOATIME, false),
        "atime" => (MsFlags::MS_NOATIME, true),
        "nodiratime" => (MsFlags::MS_NODIRATIME, false),
        "diratime" => (MsFlags::MS_NODIRATIME, true),
        "relatime" => (MsFlags::MS_RELATIME, false),
        "norelatime" => (MsFlags::MS_RELATIME, true),
        "strictatime" => (MsFlags::MS_STRICTATIME, false),
        "nostrictatime" => (MsFlags::MS_STRICTATIME, true),
        "defaults" => (MsFlags::empty(), false),
        _ => return None,
    };
    Some(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|value| value.to_string()).collect()
    }

    #[test]
    fn options_split_into_flags_and_data() {
        let parsed = parse_mount_options(&strings(&["nodev", "size=64m", "nosuid", "mode=1777"]));

        assert_eq!(parsed.flags, MsFlags::MS_NODEV | MsFlags::MS_NOSUID);
        assert_eq!(parsed.data.as_deref(), Some("size=64m,mode=1777"));
    }

    #[test]
    fn mountinfo_mount_points_decoded() {
        let table = "36 35 98:0 / /mnt/a\\040b rw - ext3 /dev/root rw\n37 35 0:5 / /run rw - tmpfs tmpfs rw\n";

        let points: Vec<PathBuf> = mount_points(table).collect();

        assert_eq!(points, [PathBuf::from("/mnt/a b"), PathBuf::from("/run")]);
    }

    #[test]
    fn later_option_clears_earlier_flag() {
        let parsed = parse_mount_options(&strings(&["ro", "rw", "noexec"]));

        assert_eq!(parsed.flags, MsFlags::MS_NOEXEC);
        assert_eq!(parsed.data, None);
    }
}
