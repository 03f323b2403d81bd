//! Block I/O and hugetlb limits: `blkio` on v1, `io` on v2, `hugetlb` on both.

use std::path::Path;

use oci_spec::runtime::{LinuxBlockIo, LinuxHugepageLimit, LinuxThrottleDevice};

use super::layout::Hierarchy;
use super::resources::{find, write_controller_file, write_supported_file};
use crate::error::Error;

/// Applies `linux.resources.blockIO` to the blkio (v1) or io (v2) controller.
pub(super) fn apply_block_io(
    targets: &[(&Hierarchy, &Path)],
    block_io: &LinuxBlockIo,
) -> Result<(), Error> {
    let v1 = targets
        .iter()
        .find(|(hierarchy, _)| !hierarchy.unified && hierarchy.has("blkio"));
    match v1 {
        Some((hierarchy, directory)) => apply_blkio_v1(hierarchy, directory, block_io),
        None => {
            let (hierarchy, directory) = find(targets, "io")?;
            apply_io_v2(hierarchy, directory, block_io)
        }
    }
}

/// The throttle fields of `blockIO` with their v1 file and v2 `io.max` key.
const THROTTLES: [(&str, &str, &str); 4] = [
    (
        "linux.resources.blockIO.throttleReadBpsDevice",
        "blkio.throttle.read_bps_device",
        "rbps",
    ),
    (
        "linux.resources.blockIO.throttleWriteBpsDevice",
        "blkio.throttle.write_bps_device",
        "wbps",
    ),
    (
        "linux.resources.blockIO.throttleReadIOPSDevice",
        "blkio.throttle.read_iops_device",
        "riops",
    ),
    (
        "linux.resources.blockIO.throttleWriteIOPSDevice",
        "blkio.throttle.write_iops_device",
        "wiops",
    ),
];

/// Returns the devices of each throttle field, in the order of [`THROTTLES`].
fn throttle_devices(block_io: &LinuxBlockIo) -> [&Option<Vec<LinuxThrottleDevice>>; 4] {
    [
        block_io.throttle_read_bps_device(),
        block_io.throttle_write_bps_device(),
        block_io.throttle_read_iops_device(),
        block_io.throttle_write_iops_device(),
    ]
}

/// Returns the v1 files for the weight and the per-device weights: the BFQ scheduler's
/// when the kernel has them, otherwise the CFQ names, which kernels since 5.0 lack.
fn v1_weight_files(directory: &Path) -> (&'static str, &'static str) {
    if directory.join("blkio.bfq.weight").exists() {
        ("blkio.bfq.weight", "blkio.bfq.weight_device")
    } else {
        ("blkio.weight", "blkio.weight_device")
    }
}

/// Writes the v1 weights and throttles. Every file is checked first, because a kernel
/// without a scheduler that has proportional weights has no weight file, and the spec's
/// weight must then fail instead of being dropped.
fn apply_blkio_v1(
    hierarchy: &Hierarchy,
    directory: &Path,
    block_io: &LinuxBlockIo,
) -> Result<(), Error> {
    let write = |field: &'static str, file: &str, value: &str| {
        write_supported_file(hierarchy, directory, "blkio", field, file, value)
    };
    let (weight_file, weight_device_file) = v1_weight_files(directory);

    if let Some(weight) = block_io.weight() {
        write(
            "linux.resources.blockIO.weight",
            weight_file,
            &check_weight(weight)?.to_string(),
        )?;
    }
    if let Some(weight) = block_io.leaf_weight() {
        write(
            "linux.resources.blockIO.leafWeight",
            "blkio.leaf_weight",
            &check_weight(weight)?.to_string(),
        )?;
    }
    for device in block_io.weight_device().iter().flatten() {
        let number = format!("{}:{}", device.major(), device.minor());
        if let Some(weight) = device.weight() {
            write(
                "linux.resources.blockIO.weightDevice",
                weight_device_file,
                &format!("{number} {}", check_weight(weight)?),
            )?;
        }
        if let Some(weight) = device.leaf_weight() {
            write(
                "linux.resources.blockIO.weightDevice.leafWeight",
                "blkio.leaf_weight_device",
                &format!("{number} {}", check_weight(weight)?),
            )?;
        }
    }

    for ((field, file, _), devices) in THROTTLES.into_iter().zip(throttle_devices(block_io)) {
        for device in devices.iter().flatten() {
            write(
                field,
                file,
                &format!("{}:{} {}", device.major(), device.minor(), device.rate()),
            )?;
        }
    }
    Ok(())
}

fn apply_io_v2(
    hierarchy: &Hierarchy,
    directory: &Path,
    block_io: &LinuxBlockIo,
) -> Result<(), Error> {
    let write = |field: &'static str, file: &str, value: &str| {
        write_supported_file(hierarchy, directory, "io", field, file, value)
    };

    if let Some(weight) = block_io.weight() {
        write(
            "linux.resources.blockIO.weight",
            "io.weight",
            &format!("default {}", blkio_to_io_weight(check_weight(weight)?)),
        )?;
    }
    for device in block_io.weight_device().iter().flatten() {
        if let Some(weight) = device.weight() {
            let weight = blkio_to_io_weight(check_weight(weight)?);
            write(
                "linux.resources.blockIO.weightDevice",
                "io.weight",
                &format!("{}:{} {weight}", device.major(), device.minor()),
            )?;
        }
    }
    // NOTE: v2 has no leaf weight, so leafWeight is ignored there, as runc does. Weights
    // go to `io.weight` only, never to BFQ's `io.bfq.weight`.

    for ((field, _, key), devices) in THROTTLES.into_iter().zip(throttle_devices(block_io)) {
        for device in devices.iter().flatten() {
            write(field, "io.max", &io_max_line(device, key))?;
        }
    }
    Ok(())
}

/// Formats one `io.max` line; a rate of 0 removes the limit.
fn io_max_line(device: &LinuxThrottleDevice, key: &str) -> String {
    let rate = match device.rate() {
        0 => "max".to_owned(),
        rate => rate.to_string(),
    };
    format!("{}:{} {key}={rate}", device.major(), device.minor())
}

/// Checks a v1 blkio weight, which the kernel takes from 10 to 1000.
fn check_weight(weight: u16) -> Result<u16, Error> {
    if (10..=1000).contains(&weight) {
        Ok(weight)
    } else {
        Err(Error::CgroupValue {
            key: "blockIO.weight",
            value: weight.to_string(),
            reason: "must be between 10 and 1000".to_owned(),
        })
    }
}

/// Maps a blkio weight (10 to 1000) linearly onto the io.weight range (1 to 10000).
fn blkio_to_io_weight(weight: u16) -> u64 {
    1 + (u64::from(weight) - 10) * 9999 / 990
}

/// Applies `linux.resources.hugepageLimits`.
pub(super) fn apply_hugepages(
    targets: &[(&Hierarchy, &Path)],
    limits: &[LinuxHugepageLimit],
) -> Result<(), Error> {
    if limits.is_empty() {
        return Ok(());
    }
    let (hierarchy, directory) = find(targets, "hugetlb")?;

    for limit in limits {
        let size = limit.page_size();
        if size.is_empty() || !size.chars().all(|letter| letter.is_ascii_alphanumeric()) {
            return Err(Error::CgroupValue {
                key: "hugepageLimits.pageSize",
                value: size.clone(),
                reason: "must be a size such as 2MB or 1GB".to_owned(),
            });
        }
        let file = if hierarchy.unified {
            format!("hugetlb.{size}.max")
        } else {
            format!("hugetlb.{size}.limit_in_bytes")
        };
        let value = match limit.limit() {
            -1 if hierarchy.unified => "max".to_owned(),
            bytes => bytes.to_string(),
        };
        write_controller_file(hierarchy, directory, "hugetlb", &file, &value)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{
        LinuxBlockIoBuilder, LinuxHugepageLimitBuilder, LinuxThrottleDeviceBuilder,
        LinuxWeightDeviceBuilder,
    };
    use std::fs;

    /// Creates a fake hierarchy in a temporary directory, with the container's directory
    /// at `leaf`.
    fn fake(unified: bool, controller: &str) -> (tempfile::TempDir, Hierarchy) {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join("leaf")).unwrap();
        let files: &[&str] = match controller {
            "blkio" => &[
                "blkio.weight",
                "blkio.weight_device",
                "blkio.throttle.read_bps_device",
                "blkio.throttle.write_iops_device",
            ],
            "io" => &["io.weight", "io.max"],
            _ => &[],
        };
        for file in files {
            fs::write(root.path().join("leaf").join(file), "").unwrap();
        }
        if unified {
            fs::write(root.path().join("cgroup.subtree_control"), controller).unwrap();
        }
        let hierarchy = Hierarchy {
            mount_point: root.path().to_path_buf(),
            controllers: vec![controller.to_owned()],
            unified,
        };
        (root, hierarchy)
    }

    fn throttle(rate: u64) -> LinuxThrottleDevice {
        LinuxThrottleDeviceBuilder::default()
            .major(8)
            .minor(0)
            .rate(rate)
            .build()
            .unwrap()
    }

    fn block_io() -> LinuxBlockIo {
        LinuxBlockIoBuilder::default()
            .weight(500u16)
            .weight_device(vec![LinuxWeightDeviceBuilder::default()
                .major(8)
                .minor(0)
                .weight(1000u16)
                .build()
                .unwrap()])
            .throttle_read_bps_device(vec![throttle(1_048_576)])
            .throttle_write_iops_device(vec![throttle(0)])
            .build()
            .unwrap()
    }

    #[test]
    fn blkio_v1_writes_weights_and_throttles() {
        let (root, hierarchy) = fake(false, "blkio");
        let leaf = root.path().join("leaf");

        apply_block_io(&[(&hierarchy, &leaf)], &block_io()).unwrap();

        let read = |file: &str| fs::read_to_string(leaf.join(file)).unwrap();
        assert_eq!(read("blkio.weight"), "500");
        assert_eq!(read("blkio.weight_device"), "8:0 1000");
        assert_eq!(read("blkio.throttle.read_bps_device"), "8:0 1048576");
        assert_eq!(read("blkio.throttle.write_iops_device"), "8:0 0");
    }

    #[test]
    fn io_v2_converts_weights_and_limits() {
        let (root, hierarchy) = fake(true, "io");
        let leaf = root.path().join("leaf");

        apply_block_io(&[(&hierarchy, &leaf)], &block_io()).unwrap();

        let read = |file: &str| fs::read_to_string(leaf.join(file)).unwrap();
        // Each write replaces the fake file; the kernel keeps one line per device.
        assert_eq!(read("io.weight"), "8:0 10000");
        assert_eq!(read("io.max"), "8:0 wiops=max");
        assert_eq!(blkio_to_io_weight(500), 4950);
        assert_eq!(blkio_to_io_weight(10), 1);
    }

    #[test]
    fn bfq_weight_files_are_preferred() {
        let (root, hierarchy) = fake(false, "blkio");
        let leaf = root.path().join("leaf");
        for file in ["blkio.bfq.weight", "blkio.bfq.weight_device"] {
            fs::write(leaf.join(file), "").unwrap();
        }

        apply_block_io(&[(&hierarchy, &leaf)], &block_io()).unwrap();

        let read = |file: &str| fs::read_to_string(leaf.join(file)).unwrap();
        assert_eq!(read("blkio.bfq.weight"), "500");
        assert_eq!(read("blkio.bfq.weight_device"), "8:0 1000");
        assert_eq!(read("blkio.weight"), "");
    }

    #[test]
    fn missing_weight_file_is_unsupported() {
        let (root, hierarchy) = fake(false, "blkio");
        let leaf = root.path().join("leaf");
        fs::remove_file(leaf.join("blkio.weight")).unwrap();

        let error = apply_block_io(&[(&hierarchy, &leaf)], &block_io()).unwrap_err();

        assert!(error.is_unsupported(), "{error}");
        let message = error.to_string();
        assert!(
            message.contains("linux.resources.blockIO.weight "),
            "{message}"
        );
        assert!(
            message.contains(leaf.join("blkio.weight").to_str().unwrap()),
            "{message}"
        );
    }

    #[test]
    fn weight_out_of_range_is_rejected() {
        let (root, hierarchy) = fake(false, "blkio");
        let leaf = root.path().join("leaf");
        let block_io = LinuxBlockIoBuilder::default().weight(5u16).build().unwrap();

        let error = apply_block_io(&[(&hierarchy, &leaf)], &block_io).unwrap_err();

        assert!(error.is_invalid_input(), "{error}");
    }

    #[test]
    fn hugetlb_files_differ_by_version() {
        let limit = LinuxHugepageLimitBuilder::default()
            .page_size("2MB")
            .limit(4_194_304)
            .build()
            .unwrap();
        for (unified, file) in [
            (false, "hugetlb.2MB.limit_in_bytes"),
            (true, "hugetlb.2MB.max"),
        ] {
            let (root, hierarchy) = fake(unified, "hugetlb");
            let leaf = root.path().join("leaf");

            apply_hugepages(&[(&hierarchy, &leaf)], std::slice::from_ref(&limit)).unwrap();

            assert_eq!(fs::read_to_string(leaf.join(file)).unwrap(), "4194304");
        }
    }

    #[test]
    fn page_size_with_path_is_rejected() {
        let (root, hierarchy) = fake(true, "hugetlb");
        let leaf = root.path().join("leaf");
        let limit = LinuxHugepageLimitBuilder::default()
            .page_size("../x")
            .limit(1)
            .build()
            .unwrap();

        let error = apply_hugepages(&[(&hierarchy, &leaf)], &[limit]).unwrap_err();

        assert!(error.is_invalid_input(), "{error}");
    }
}
