//! Control of a running container through its cgroup: pause, resume, statistics and
//! live resource updates.

use oci_spec::runtime::LinuxResources;
use slog::debug;

use crate::cgroups::CgroupStats;
use crate::container::Container;
use crate::error::Error;

impl Container {
    /// Freezes every process of the container and returns once the kernel reports the
    /// cgroup frozen, within about 5 seconds.
    pub fn pause(&self) -> Result<(), Error> {
        self.cgroup.set_frozen(true)?;
        debug!(self.logger, "paused");
        Ok(())
    }

    /// Thaws the container frozen by [`Container::pause`].
    pub fn resume(&self) -> Result<(), Error> {
        self.cgroup.set_frozen(false)?;
        debug!(self.logger, "resumed");
        Ok(())
    }

    /// Reports whether the container is paused. Processes of a paused container neither
    /// run nor die, so a caller that kills them must resume the container too.
    pub fn is_paused(&self) -> Result<bool, Error> {
        self.cgroup.is_frozen()
    }

    /// Reads the usage statistics of the container's cgroup.
    pub fn stats(&self) -> Result<CgroupStats, Error> {
        self.cgroup.stats()
    }

    /// Applies new limits to the running container.
    pub fn update(&self, resources: &LinuxResources) -> Result<(), Error> {
        self.cgroup.update(resources, &self.logger)?;
        debug!(self.logger, "updated resources");
        Ok(())
    }
}
