//! Parsing of the `options` of a spec mount into mount flags, propagation changes and
//! filesystem data.

use nix::mount::MsFlags;

/// The parsed options of one mount.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct MountOptions {
    /// Flags for mount(2), without `MS_BIND` and `MS_REC`.
    pub flags: MsFlags,
    /// `bind` or `rbind` was given.
    pub bind: bool,
    /// `rbind` was given.
    pub recursive: bool,
    /// Propagation changes (`MS_PRIVATE`, `MS_SLAVE | MS_REC`, ...) applied after the mount,
    /// in order.
    pub propagation: Vec<MsFlags>,
    /// Options the kernel passes to the filesystem, such as `mode=755` or `newinstance`.
    pub data: Vec<String>,
}

/// Change of the flags made by one option word.
enum Effect {
    Set(MsFlags),
    Clear(MsFlags),
    Propagation(MsFlags),
}

fn effect(option: &str) -> Option<Effect> {
    use Effect::{Clear, Propagation, Set};
    let effect = match option {
        "defaults" => Clear(MsFlags::empty()),
        "ro" => Set(MsFlags::MS_RDONLY),
        "rw" => Clear(MsFlags::MS_RDONLY),
        "nosuid" => Set(MsFlags::MS_NOSUID),
        "suid" => Clear(MsFlags::MS_NOSUID),
        "nodev" => Set(MsFlags::MS_NODEV),
        "dev" => Clear(MsFlags::MS_NODEV),
        "noexec" => Set(MsFlags::MS_NOEXEC),
        "exec" => Clear(MsFlags::MS_NOEXEC),
        "sync" => Set(MsFlags::MS_SYNCHRONOUS),
        "async" => Clear(MsFlags::MS_SYNCHRONOUS),
        "dirsync" => Set(MsFlags::MS_DIRSYNC),
        "remount" => Set(MsFlags::MS_REMOUNT),
        "mand" => Set(MsFlags::MS_MANDLOCK),
        "nomand" => Clear(MsFlags::MS_MANDLOCK),
        "atime" => Clear(MsFlags::MS_NOATIME),
        "noatime" => Set(MsFlags::MS_NOATIME),
        "diratime" => Clear(MsFlags::MS_NODIRATIME),
        "nodiratime" => Set(MsFlags::MS_NODIRATIME),
        "relatime" => Set(MsFlags::MS_RELATIME),
        "norelatime" => Clear(MsFlags::MS_RELATIME),
        "strictatime" => Set(MsFlags::MS_STRICTATIME),
        "nostrictatime" => Clear(MsFlags::MS_STRICTATIME),
        "private" => Propagation(MsFlags::MS_PRIVATE),
        "rprivate" => Propagation(MsFlags::MS_PRIVATE | MsFlags::MS_REC),
        "shared" => Propagation(MsFlags::MS_SHARED),
        "rshared" => Propagation(MsFlags::MS_SHARED | MsFlags::MS_REC),
        "slave" => Propagation(MsFlags::MS_SLAVE),
        "rslave" => Propagation(MsFlags::MS_SLAVE | MsFlags::MS_REC),
        "unbindable" => Propagation(MsFlags::MS_UNBINDABLE),
        "runbindable" => Propagation(MsFlags::MS_UNBINDABLE | MsFlags::MS_REC),
        _ => return None,
    };
    Some(effect)
}

/// Parses mount options. Words that are not mount flags go to the filesystem as data.
pub(crate) fn parse(options: &[String]) -> MountOptions {
    let mut parsed = MountOptions {
        flags: MsFlags::empty(),
        bind: false,
        recursive: false,
        propagation: Vec::new(),
        data: Vec::new(),
    };
    for option in options {
        match option.as_str() {
            "bind" => parsed.bind = true,
            "rbind" => {
                parsed.bind = true;
                parsed.recursive = true;
            }
            word => match effect(word) {
                Some(Effect::Set(flag)) => parsed.flags |= flag,
                Some(Effect::Clear(flag)) => parsed.flags &= !flag,
                Some(Effect::Propagation(flag)) => parsed.propagation.push(flag),
                None => parsed.data.push(word.to_owned()),
            },
        }
    }
    parsed
}

/// Parses a propagation word from `linux.rootfsPropagation`.
pub(crate) fn propagation(word: &str) -> Option<MsFlags> {
    match effect(word) {
        Some(Effect::Propagation(flag)) => Some(flag),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(options: &[&str]) -> Vec<String> {
        options.iter().map(|option| option.to_string()).collect()
    }

    #[test]
    fn devpts_options_split_into_flags_and_data() {
        let parsed = parse(&words(&[
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ]));

        assert_eq!(parsed.flags, MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC);
        assert_eq!(
            parsed.data,
            ["newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]
        );
        assert!(!parsed.bind);
    }

    #[test]
    fn rbind_with_propagation() {
        let parsed = parse(&words(&["rbind", "ro", "rprivate"]));

        assert!(parsed.bind);
        assert!(parsed.recursive);
        assert_eq!(parsed.flags, MsFlags::MS_RDONLY);
        assert_eq!(parsed.propagation, [MsFlags::MS_PRIVATE | MsFlags::MS_REC]);
    }

    #[test]
    fn later_option_overrides_earlier() {
        let parsed = parse(&words(&["ro", "rw", "nodev", "dev"]));
        assert_eq!(parsed.flags, MsFlags::empty());
    }

    #[test]
    fn rootfs_propagation_words() {
        assert_eq!(
            propagation("rslave"),
            Some(MsFlags::MS_SLAVE | MsFlags::MS_REC)
        );
        assert_eq!(propagation("ro"), None);
        assert_eq!(propagation("bogus"), None);
    }
}
