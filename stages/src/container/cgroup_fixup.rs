//! Stage `cgroup-fixup`: denies the container read and write access to the block device
//! that backs the guest's root file system, so that a container allowed all devices
//! cannot open the guest's own disk. `mknod` stays allowed, because nested runtimes
//! create device nodes they never open.

use std::io;
use std::path::Path;
use std::sync::OnceLock;

use oci_spec::runtime::{LinuxDeviceCgroupBuilder, LinuxDeviceType, LinuxResources};
use slog::warn;

use crate::context::ContainerContext;
use crate::device::parse_numbers;
use crate::error::StageError;
use crate::stage::{NoUndo, Stage, Undo};
use crate::storage::mount_points;

/// Appends a deny rule for the guest root's block device to `linux.resources.devices`.
#[derive(Debug, Default)]
pub struct CgroupFixup {
    /// The guest root's block device, or None when root is not a block device. The guest
    /// root never changes while the agent runs, and generating the kernel's mount table
    /// was most of this stage's cost per container, so it is read once.
    root_device: OnceLock<Option<(u64, u64)>>,
}

impl Stage<ContainerContext> for CgroupFixup {
    fn name(&self) -> &'static str {
        "cgroup-fixup"
    }

    fn apply(&self, ctx: &mut ContainerContext) -> Result<Box<dyn Undo>, StageError> {
        let device = match self.root_device.get() {
            Some(device) => *device,
            None => match find_root_block_device(ctx)? {
                Lookup::Found(device) => *self.root_device.get_or_init(|| device),
                Lookup::NoMountTable => None,
            },
        };
        let Some((major, minor)) = device else {
            return Ok(Box::new(NoUndo));
        };

        let rule = LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .typ(LinuxDeviceType::B)
            .major(major as i64)
            .minor(minor as i64)
            .access("rw")
            .build()
            .map_err(|error| {
                StageError::invalid("device rule", format!("{major}:{minor}"), error.to_string())
            })?;

        // Device rules apply in order and a later rule wins, so the deny goes last,
        // where no allow-all rule from the spec can follow and re-open the device.
        let linux = ctx.spec.linux_mut().get_or_insert_with(Default::default);
        let resources = linux
            .resources_mut()
            .get_or_insert_with(LinuxResources::default);
        resources
            .devices_mut()
            .get_or_insert_with(Vec::new)
            .push(rule);
        Ok(Box::new(NoUndo))
    }
}

/// Outcome of looking for the guest root's block device.
enum Lookup {
    /// The mount table was read: the device, or None when root is not a block device.
    Found(Option<(u64, u64)>),
    /// The mount table is missing, so nothing is known and nothing is cached.
    NoMountTable,
}

fn find_root_block_device(ctx: &ContainerContext) -> Result<Lookup, StageError> {
    let paths = &ctx.sandbox.paths;
    let mountinfo = paths.procfs.join("self/mountinfo");
    let table = match std::fs::read_to_string(&mountinfo) {
        Ok(table) => table,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            warn!(ctx.sandbox.logger, "mount table missing, guest root device not denied";
                "container" => &ctx.id, "path" => %mountinfo.display());
            return Ok(Lookup::NoMountTable);
        }
        Err(error) => return Err(StageError::io("read", mountinfo, error)),
    };

    let Some((major, minor)) = root_device(&table, &mountinfo)? else {
        return Ok(Lookup::Found(None));
    };
    // Only numbers that sysfs lists as a block device name a disk. A tmpfs or overlay
    // root has anonymous numbers that no device cgroup rule can match.
    if !paths
        .sysfs
        .join(format!("dev/block/{major}:{minor}"))
        .exists()
    {
        return Ok(Lookup::Found(None));
    }
    Ok(Lookup::Found(Some((major, minor))))
}

/// Returns the major and minor numbers of the file system mounted on `/`, from the last
/// (topmost) mount there.
fn root_device(table: &str, source: &Path) -> Result<Option<(u64, u64)>, StageError> {
    let mut found = None;
    for (line, mount_point) in table.lines().zip(mount_points(table)) {
        if mount_point != Path::new("/") {
            continue;
        }
        let field = line.split(' ').nth(2).unwrap_or_default();
        let numbers = parse_numbers(field).ok_or_else(|| {
            StageError::invalid(
                "mount table entry",
                line,
                format!("expected MAJOR:MINOR in field 3 of {}", source.display()),
            )
        })?;
        found = Some(numbers);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use oci_spec::runtime::{LinuxBuilder, LinuxResourcesBuilder};

    use super::*;
    use crate::error::ErrorCode;
    use crate::testing::{test_context, test_sandbox, TestSandbox};

    const TABLE: &str = "21 1 0:2 / / rw - rootfs rootfs rw\n\
                         22 21 254:1 / / rw,relatime - ext4 /dev/vda1 rw\n\
                         23 22 0:21 / /proc rw - proc proc rw\n";

    fn fake_guest(test: &TestSandbox, table: &str, block_devices: &[&str]) {
        let paths = &test.sandbox.paths;
        fs::create_dir_all(paths.procfs.join("self")).unwrap();
        fs::write(paths.procfs.join("self/mountinfo"), table).unwrap();
        for numbers in block_devices {
            fs::create_dir_all(paths.sysfs.join("dev/block").join(numbers)).unwrap();
        }
    }

    fn rules(ctx: &ContainerContext) -> Vec<String> {
        let linux = ctx.spec.linux().as_ref();
        let resources = linux.and_then(|linux| linux.resources().as_ref());
        resources
            .and_then(|resources| resources.devices().clone())
            .unwrap_or_default()
            .iter()
            .map(|rule| {
                format!(
                    "{} {} {}:{} {}",
                    if rule.allow() { "allow" } else { "deny" },
                    rule.typ()
                        .map(|typ| typ.as_str().to_string())
                        .unwrap_or_default(),
                    rule.major().map(|n| n.to_string()).unwrap_or("*".into()),
                    rule.minor().map(|n| n.to_string()).unwrap_or("*".into()),
                    rule.access().clone().unwrap_or_default()
                )
            })
            .collect()
    }

    #[test]
    fn deny_rule_follows_allow_all() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        fake_guest(&test, TABLE, &["254:1"]);
        let mut ctx = test_context(&test.sandbox, "c1");
        let allow_all = LinuxDeviceCgroupBuilder::default()
            .allow(true)
            .access("rwm")
            .build()
            .unwrap();
        let resources = LinuxResourcesBuilder::default()
            .devices(vec![allow_all])
            .build()
            .unwrap();
        ctx.spec.set_linux(Some(
            LinuxBuilder::default()
                .resources(resources)
                .build()
                .unwrap(),
        ));

        CgroupFixup::default().apply(&mut ctx).expect("rule added");

        assert_eq!(rules(&ctx), ["allow  *:* rwm", "deny b 254:1 rw"]);
    }

    #[test]
    fn spec_without_resources_gets_rule() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        fake_guest(&test, TABLE, &["254:1"]);
        let mut ctx = test_context(&test.sandbox, "c1");

        CgroupFixup::default().apply(&mut ctx).expect("rule added");

        assert_eq!(rules(&ctx), ["deny b 254:1 rw"]);
    }

    #[test]
    fn root_device_read_once_per_stage() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        fake_guest(&test, TABLE, &["254:1"]);
        let stage = CgroupFixup::default();
        let mut first = test_context(&test.sandbox, "c1");
        stage.apply(&mut first).expect("rule added");
        std::fs::remove_file(test.sandbox.paths.procfs.join("self/mountinfo")).unwrap();
        let mut second = test_context(&test.sandbox, "c2");

        stage
            .apply(&mut second)
            .expect("rule added from the cached device");

        assert_eq!(rules(&second), ["deny b 254:1 rw"]);
    }

    #[test]
    fn root_not_block_device_adds_nothing() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        fake_guest(&test, "21 1 0:2 / / rw - tmpfs rootfs rw\n", &["254:1"]);
        let mut ctx = test_context(&test.sandbox, "c1");
        let before = ctx.spec.clone();

        CgroupFixup::default()
            .apply(&mut ctx)
            .expect("nothing to deny");

        assert_eq!(ctx.spec, before);
    }

    #[test]
    fn malformed_mount_table_rejected() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        fake_guest(&test, "21 1 x / / rw - ext4 /dev/vda rw\n", &[]);
        let mut ctx = test_context(&test.sandbox, "c1");

        let error = CgroupFixup::default()
            .apply(&mut ctx)
            .err()
            .expect("bad table");

        assert_eq!(error.code(), ErrorCode::InvalidArgument);
    }

    #[test]
    fn missing_mount_table_only_warns() {
        let root = tempfile::tempdir().unwrap();
        let test = test_sandbox(root.path());
        let mut ctx = test_context(&test.sandbox, "c1");

        CgroupFixup::default().apply(&mut ctx).expect("skipped");

        assert!(rules(&ctx).is_empty());
        assert!(test.records.lines()[0].contains("mount table missing"));
    }
}
