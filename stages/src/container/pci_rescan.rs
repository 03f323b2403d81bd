//! Stage `pci-rescan`: triggers a PCI bus rescan so that devices the host hot-plugged for
//! this container appear before the `devices` stage looks for them.

use slog::warn;

use crate::context::ContainerContext;
use crate::error::StageError;
use crate::stage::{NoUndo, Stage, Undo};

/// Writes `1` to `<sysfs>/bus/pci/rescan`.
#[derive(Debug, Default)]
pub struct PciRescan;

impl Stage<ContainerContext> for PciRescan {
    fn name(&self) -> &'static str {
        "pci-rescan"
    }

    fn apply(&self, ctx: &mut ContainerContext) -> Result<Box<dyn Undo>, StageError> {
        let path = ctx.sandbox.paths.sysfs.join("bus/pci/rescan");

        // A guest without PCI (an MMIO-only machine) has no rescan file, and a failed
        // rescan only matters if a device is missing later, which `devices` reports.
        if let Err(error) = std::fs::write(&path, "1") {
            warn!(ctx.sandbox.logger, "PCI rescan failed";
                "container" => &ctx.id,
                "path" => %path.display(),
                "error" => %error);
        }

        Ok(Box::new(NoUndo))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{test_context, test_sandbox};

    #[test]
    fn rescan_writes_one() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let rescan = test.sandbox.paths.sysfs.join("bus/pci/rescan");
        std::fs::create_dir_all(rescan.parent().unwrap()).unwrap();
        std::fs::write(&rescan, "").unwrap();

        PciRescan
            .apply(&mut test_context(&test.sandbox, "c1"))
            .expect("rescan succeeds");

        assert_eq!(std::fs::read_to_string(&rescan).unwrap(), "1");
        assert!(test.records.lines().is_empty());
    }

    #[test]
    fn missing_rescan_file_only_warns() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());

        let result = PciRescan.apply(&mut test_context(&test.sandbox, "c1"));

        assert!(result.is_ok());
        let lines = test.records.lines();
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].starts_with("WARN PCI rescan failed"), "{lines:?}");
        assert!(lines[0].contains("bus/pci/rescan"), "{lines:?}");
        assert!(!test.sandbox.paths.sysfs.join("bus/pci/rescan").exists());
    }
}
