//! Storages: file systems the guest provides for the sandbox and its containers.
//!
//! Invariant: each mount point has at most one entry in the [`StorageRegistry`], and the
//! entry's mount and directories exist while its reference count is above zero, or
//! while a failed teardown left them behind (see [`StorageRegistry::release`]).

mod driver;
mod fs_group;
mod mounter;
mod provide;
mod registry;
mod undo;

pub use driver::{parse_mode, validate_mount_point};
pub use mounter::{mount_points, parse_mount_options, MountOptions, Mounter, SystemMounter};
pub use registry::StorageRegistry;

pub(crate) use undo::acquire_storages;
