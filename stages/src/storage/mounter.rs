//! The mount system calls used by storage drivers, behind one trait so that drivers can
//! be tested with a recording or failing double.

use std::io;
use std::path::Path;

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
    fn later_option_clears_earlier_flag() {
        let parsed = parse_mount_options(&strings(&["ro", "rw", "noexec"]));

        assert_eq!(parsed.flags, MsFlags::MS_NOEXEC);
        assert_eq!(parsed.data, None);
    }
}
