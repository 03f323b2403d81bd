//! The execution domain of the user process (`linux.personality`), which survives
//! `execve`.

use oci_spec::runtime::{LinuxPersonality, LinuxPersonalityDomain};

use super::InitError;

/// `PER_LINUX` and `PER_LINUX32` of `<linux/personality.h>`, which the libc crate does
/// not name.
const PER_LINUX: libc::c_ulong = 0x0000;
const PER_LINUX32: libc::c_ulong = 0x0008;

/// Sets the execution domain of `personality`. `LINUX32` makes `uname` report a 32-bit
/// machine, as `linux32` does. The spec defines no flags, so any flag is rejected.
pub(crate) fn apply(personality: Option<&LinuxPersonality>) -> Result<(), InitError> {
    let Some(personality) = personality else {
        return Ok(());
    };
    if let Some(flag) = personality.flags().iter().flatten().next() {
        return Err(InitError::invalid_spec(format!(
            "linux.personality.flags has {flag:?}; the runtime spec defines no flags"
        )));
    }

    let persona = match personality.domain() {
        LinuxPersonalityDomain::PerLinux => PER_LINUX,
        LinuxPersonalityDomain::PerLinux32 => PER_LINUX32,
    };
    // SAFETY: personality(2) only changes this process's execution domain and takes no
    // pointers.
    let previous = unsafe { libc::personality(persona) };
    if previous < 0 {
        return Err(InitError::system(format!(
            "set personality {}: {}",
            personality.domain(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}
