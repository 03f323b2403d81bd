//! PCI paths: the slot of each bridge from the root complex down to a device, written
//! as `02/01`, and their place in the guest's sysfs.
//!
//! Under `<sysfs>/devices/pci0000:00`, slot `SS` of bus `BUS` is the directory
//! `BUS:SS.0`. A bridge's directory contains `pci_bus/<domain:bus>` naming the bus behind
//! it, so each step of the path reads one such entry to find the next bus.

use std::fs;
use std::path::{Path, PathBuf};

use crate::error::StageError;

/// The highest slot number on a PCI bus.
const MAX_SLOT: u8 = 0x1f;

/// Maximum number of slots in a PCI path, far above the bridge depth a hypervisor builds.
const MAX_DEPTH: usize = 16;

/// The root bus, where every PCI path starts.
const ROOT_BUS: &str = "0000:00";

/// A parsed PCI path: device slots from the root complex, function 0 each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciPath(Vec<u8>);

impl PciPath {
    /// Parses a path such as `02/01`: one to sixteen hexadecimal slots of one or two
    /// digits, each at most `1f`, separated by `/`.
    pub fn parse(text: &str) -> Result<PciPath, StageError> {
        let invalid = |reason: &str| StageError::invalid("PCI path", text, reason);

        let mut slots = Vec::new();
        for part in text.split('/') {
            if part.is_empty() || part.len() > 2 || !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(invalid(
                    "each slot must be one or two hexadecimal digits, as in 02/01",
                ));
            }
            let slot = u8::from_str_radix(part, 16)
                .map_err(|_| invalid("each slot must be a hexadecimal number"))?;
            if slot > MAX_SLOT {
                return Err(invalid("a slot number must be at most 1f"));
            }
            slots.push(slot);
        }
        if slots.len() > MAX_DEPTH {
            return Err(invalid("the path has more than 16 slots"));
        }

        Ok(PciPath(slots))
    }

    /// Returns the sysfs directory of the device, following each bridge's `pci_bus`
    /// entry. Returns `Ok(None)` while a bridge on the way has not appeared yet, so the
    /// caller can wait for it.
    pub fn sysfs_dir(&self, sysfs: &Path) -> Result<Option<PathBuf>, StageError> {
        let mut dir = sysfs.join("devices").join("pci0000:00");
        let mut bus = ROOT_BUS.to_string();

        for (index, slot) in self.0.iter().enumerate() {
            dir.push(format!("{bus}:{slot:02x}.0"));
            if !dir.is_dir() {
                return Ok(None);
            }
            if index + 1 == self.0.len() {
                break;
            }

            let Some(next) = bridge_bus(&dir)? else {
                return Ok(None);
            };
            bus = next;
        }

        Ok(Some(dir))
    }
}

impl std::fmt::Display for PciPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let slots: Vec<String> = self.0.iter().map(|slot| format!("{slot:02x}")).collect();
        f.write_str(&slots.join("/"))
    }
}

/// Returns the bus behind the bridge at `bridge`, from its single `pci_bus` entry.
fn bridge_bus(bridge: &Path) -> Result<Option<String>, StageError> {
    let pci_bus = bridge.join("pci_bus");
    let entries = match fs::read_dir(&pci_bus) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(StageError::io("read bridge buses", pci_bus, error)),
    };

    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| StageError::io("read bridge buses", &pci_bus, error))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    match names.len() {
        0 => Ok(None),
        1 => Ok(names.pop()),
        _ => Err(StageError::invalid(
            "PCI bridge",
            bridge.display().to_string(),
            format!(
                "expected one bus in {}, found {}",
                pci_bus.display(),
                names.join(", ")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    #[test]
    fn parse_accepts_slots() {
        assert_eq!(PciPath::parse("02/01").unwrap(), PciPath(vec![2, 1]));
        assert_eq!(PciPath::parse("1f").unwrap(), PciPath(vec![0x1f]));
        assert_eq!(PciPath::parse("0a/3").unwrap().to_string(), "0a/03");
    }

    #[test]
    fn parse_rejects_malformed() {
        for text in [
            "",
            "/",
            "02/",
            "20",
            "002",
            "g1",
            "02//01",
            "invalid-source",
            "+1",
        ] {
            let error = PciPath::parse(text).expect_err(text);

            assert_eq!(error.code(), ErrorCode::InvalidArgument, "{text:?}");
        }
        let deep = vec!["01"; 17].join("/");
        assert!(PciPath::parse(&deep).is_err());
    }

    #[test]
    fn sysfs_dir_follows_bridge_bus() {
        let sysfs = tempfile::tempdir().unwrap();
        let bridge = sysfs.path().join("devices/pci0000:00/0000:00:02.0");
        fs::create_dir_all(bridge.join("pci_bus/0000:01")).unwrap();
        let device = bridge.join("0000:01:01.0");
        fs::create_dir_all(&device).unwrap();

        let found = PciPath::parse("02/01").unwrap().sysfs_dir(sysfs.path());

        assert_eq!(found.unwrap(), Some(device));
    }

    #[test]
    fn sysfs_dir_missing_is_none() {
        let sysfs = tempfile::tempdir().unwrap();
        let bridge = sysfs.path().join("devices/pci0000:00/0000:00:02.0");
        fs::create_dir_all(&bridge).unwrap();

        let path = PciPath::parse("02/01").unwrap();

        assert_eq!(path.sysfs_dir(sysfs.path()).unwrap(), None);
        assert_eq!(
            PciPath::parse("03")
                .unwrap()
                .sysfs_dir(sysfs.path())
                .unwrap(),
            None
        );
    }

    #[test]
    fn bridge_with_two_buses_rejected() {
        let sysfs = tempfile::tempdir().unwrap();
        let bridge = sysfs.path().join("devices/pci0000:00/0000:00:02.0");
        fs::create_dir_all(bridge.join("pci_bus/0000:01")).unwrap();
        fs::create_dir_all(bridge.join("pci_bus/0000:02")).unwrap();

        let error = PciPath::parse("02/01")
            .unwrap()
            .sysfs_dir(sysfs.path())
            .expect_err("ambiguous bridge");

        assert!(
            error.to_string().contains("0000:01, 0000:02")
                || error.to_string().contains("0000:02, 0000:01"),
            "{error}"
        );
    }
}
