//! GetGuestDetails: memory hotplug facts and what this agent supports.

use std::path::Path;

use protocols::agent::{AgentDetails, GuestDetailsRequest, GuestDetailsResponse};

/// Storage drivers the agent can mount, as reported to the shim.
// NOTE: keep in step with the storages stage; only these two drivers are listed as
// supported until the others have tests against fake guest paths.
const STORAGE_HANDLERS: [&str; 2] = ["ephemeral", "local"];

/// Builds the GetGuestDetails response from the guest's sysfs.
pub fn guest_details(
    paths: &stages::GuestPaths,
    request: &GuestDetailsRequest,
) -> GuestDetailsResponse {
    let memory = paths.sysfs.join("devices/system/memory");
    let mut response = GuestDetailsResponse::new();

    if request.mem_block_size {
        response.mem_block_size_bytes =
            read_block_size(&memory.join("block_size_bytes")).unwrap_or(0);
    }

    if request.mem_hotplug_probe {
        response.support_mem_hotplug_probe = memory.join("probe").exists();
    }

    response.agent_details = protobuf::MessageField::some(agent_details());
    response
}

fn agent_details() -> AgentDetails {
    let mut details = AgentDetails::new();
    details.version = env!("CARGO_PKG_VERSION").to_string();
    details.init_daemon = std::process::id() == 1;
    // NOTE: no device handler is listed while the devices stage has none for real guests.
    details.device_handlers = Vec::new();
    details.storage_handlers = STORAGE_HANDLERS
        .iter()
        .map(|name| name.to_string())
        .collect();
    // The launcher always links libseccomp, so support depends on the kernel only.
    // Kata's runtime drops a container's seccomp profile when this is false.
    details.supports_seccomp = kernel_has_seccomp(Path::new("/proc/self/status"));
    details
}

/// Reports whether the kernel has seccomp filters: `/proc/<pid>/status` shows a
/// `Seccomp` line only when it is built with them.
fn kernel_has_seccomp(status: &Path) -> bool {
    std::fs::read_to_string(status)
        .map(|text| text.lines().any(|line| line.starts_with("Seccomp:")))
        .unwrap_or(false)
}

/// Reads the memory block size, which sysfs prints in hexadecimal without a `0x` prefix.
fn read_block_size(path: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let digits = text.trim().trim_start_matches("0x");
    u64::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seccomp_support_read_from_status() {
        let root = tempfile::tempdir().expect("tempdir");
        let with = root.path().join("with");
        let without = root.path().join("without");
        std::fs::write(&with, "Name:\tberth\nSeccomp:\t0\nSeccomp_filters:\t0\n").unwrap();
        std::fs::write(&without, "Name:\tberth\nNoNewPrivs:\t0\n").unwrap();

        assert!(kernel_has_seccomp(&with));
        assert!(!kernel_has_seccomp(&without));
        assert!(!kernel_has_seccomp(&root.path().join("missing")));
    }

    #[test]
    fn block_size_from_fake_sysfs() {
        let root = tempfile::tempdir().expect("tempdir");
        let paths = stages::GuestPaths::under(root.path()).expect("fake guest");
        let memory = paths.sysfs.join("devices/system/memory");
        std::fs::create_dir_all(&memory).expect("memory dir");
        std::fs::write(memory.join("block_size_bytes"), "8000000\n").expect("block size");
        std::fs::write(memory.join("probe"), "").expect("probe");
        let request = GuestDetailsRequest {
            mem_block_size: true,
            mem_hotplug_probe: true,
            ..Default::default()
        };

        let response = guest_details(&paths, &request);

        assert_eq!(response.mem_block_size_bytes, 0x800_0000);
        assert!(response.support_mem_hotplug_probe);
        let details = response.agent_details.as_ref().expect("agent details");
        assert_eq!(details.storage_handlers, vec!["ephemeral", "local"]);
        assert!(details.supports_seccomp, "this kernel has seccomp");
    }

    #[test]
    fn block_size_zero_without_sysfs_file() {
        let root = tempfile::tempdir().expect("tempdir");
        let paths = stages::GuestPaths::under(root.path()).expect("fake guest");
        let request = GuestDetailsRequest {
            mem_block_size: true,
            mem_hotplug_probe: true,
            ..Default::default()
        };

        let response = guest_details(&paths, &request);

        assert_eq!(response.mem_block_size_bytes, 0);
        assert!(!response.support_mem_hotplug_probe);
    }
}
