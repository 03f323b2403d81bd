//! Plain request types. The agent converts the protobuf messages into these once, so the
//! stages can be tested without a server.

use oci_spec::runtime::Spec;

/// A file system the guest must provide: the protobuf `Storage` message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Storage {
    /// How to provide it: `ephemeral`, `local`, `virtio-fs`, `blk`, ...
    pub driver: String,
    pub driver_options: Vec<String>,
    pub source: String,
    pub fstype: String,
    /// Mount options such as `nodev` or `size=64m`; `mode=0777` for the `local` driver.
    pub options: Vec<String>,
    /// Absolute guest path inside the run directory.
    pub mount_point: String,
    pub fs_group: Option<FsGroup>,
}

/// Group ownership to apply to a storage's root: the protobuf `FSGroup` message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FsGroup {
    pub group_id: u32,
    /// Changes ownership only when the root's group differs from `group_id`.
    pub change_policy_on_root_mismatch: bool,
}

/// A host device passed to the guest: the protobuf `Device` message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Device {
    pub id: String,
    /// Device type: `blk`, `mmioblk`, `scsi`, `nvdimm`, `vfio`, ...
    pub type_: String,
    pub vm_path: String,
    pub container_path: String,
    pub options: Vec<String>,
}

/// The inputs of CreateContainer.
#[derive(Debug, Clone)]
pub struct ContainerRequest {
    pub id: String,
    pub spec: Spec,
    pub storages: Vec<Storage>,
    pub devices: Vec<Device>,
}

/// The inputs of CreateSandbox.
#[derive(Debug, Clone, Default)]
pub struct SandboxRequest {
    /// Hostname to set in the sandbox's UTS namespace; empty keeps the current one.
    pub hostname: String,
    pub storages: Vec<Storage>,
    /// Lines for `/etc/resolv.conf`. Not applied yet.
    pub dns: Vec<String>,
    /// Directory of guest hooks. Not scanned yet.
    pub guest_hook_path: String,
    /// Whether containers share one PID namespace. Not applied yet.
    pub sandbox_pidns: bool,
    pub kernel_modules: Vec<String>,
}
