//! The spec's AppArmor and SELinux labels: applied when the kernel has the security
//! module enabled, otherwise left out with a warning, as runc does. The init has no
//! logger, so the warnings go back to the caller with the ready message.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use oci_spec::runtime::{Process, Spec};

use super::{failed, InitError};

/// The labelling security modules that the kernel has enabled.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Enabled {
    pub apparmor: bool,
    pub selinux: bool,
}

impl Enabled {
    /// Reads the kernel's state from `/sys`. Runs before the init changes its root,
    /// while the caller's `/sys` is still visible.
    pub fn detect() -> Enabled {
        detect_in(Path::new("/sys"))
    }
}

fn detect_in(sys: &Path) -> Enabled {
    let apparmor = std::fs::read_to_string(sys.join("module/apparmor/parameters/enabled"))
        .is_ok_and(|text| text.trim() == "Y");
    // selinuxfs is mounted only when SELinux is enabled, in enforcing or permissive mode.
    let selinux = sys.join("fs/selinux/enforce").is_file();
    Enabled { apparmor, selinux }
}

/// The labels the init applies, and a warning for each label it leaves out.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Labels {
    pub apparmor_profile: Option<String>,
    pub selinux_label: Option<String>,
    pub mount_label: Option<String>,
    pub warnings: Vec<String>,
}

/// Decides which labels of `spec` apply on a kernel with `enabled` modules.
pub(crate) fn plan(spec: &Spec, enabled: Enabled) -> Labels {
    let mut labels = plan_process(spec.process().as_ref(), enabled);

    let mount_label = non_empty(
        spec.linux()
            .as_ref()
            .and_then(|linux| linux.mount_label().as_ref()),
    );
    labels.mount_label = keep_if(
        mount_label,
        enabled.selinux,
        "linux.mountLabel",
        "SELinux",
        &mut labels.warnings,
    );
    labels
}

/// Decides which labels of `process` apply on a kernel with `enabled` modules. A process
/// started by exec gets these too, but no mount label, because it mounts nothing.
pub(crate) fn plan_process(process: Option<&Process>, enabled: Enabled) -> Labels {
    let mut labels = Labels::default();

    let profile = non_empty(process.and_then(|process| process.apparmor_profile().as_ref()));
    labels.apparmor_profile = keep_if(
        profile,
        enabled.apparmor,
        "process.apparmorProfile",
        "AppArmor",
        &mut labels.warnings,
    );

    let label = non_empty(process.and_then(|process| process.selinux_label().as_ref()));
    labels.selinux_label = keep_if(
        label,
        enabled.selinux,
        "process.selinuxLabel",
        "SELinux",
        &mut labels.warnings,
    );
    labels
}

/// Treats an empty label as no label.
fn non_empty(value: Option<&String>) -> Option<String> {
    value.filter(|text| !text.is_empty()).cloned()
}

fn keep_if(
    value: Option<String>,
    enabled: bool,
    field: &str,
    module: &str,
    warnings: &mut Vec<String>,
) -> Option<String> {
    let value = value?;
    if enabled {
        return Some(value);
    }
    warnings.push(format!(
        "{field} {value:?} ignored: {module} is not enabled in the kernel"
    ));
    None
}

/// Adds the SELinux `context=` option for `label` to the data of a new mount, quoted
/// because a label with categories contains commas.
pub(crate) fn mount_data(data: &str, label: &str) -> String {
    let context = format!("context=\"{label}\"");
    if data.is_empty() {
        context
    } else {
        format!("{data},{context}")
    }
}

/// Sets the labels that the next `execve` gives the process. Runs after the last hook,
/// because a hook's helper, forked later, would inherit them and run its hook under them.
pub(crate) fn set_exec_labels(labels: &Labels) -> Result<(), InitError> {
    if let Some(profile) = &labels.apparmor_profile {
        // Newer kernels also offer AppArmor's own attribute directory, which stays
        // AppArmor's when another module owns the shared files.
        let path = ["/proc/self/attr/apparmor/exec", "/proc/self/attr/exec"]
            .into_iter()
            .find(|path| Path::new(path).exists())
            .unwrap_or("/proc/self/attr/exec");
        write_attribute(path, &format!("exec {profile}"))?;
    }
    if let Some(label) = &labels.selinux_label {
        write_attribute("/proc/self/attr/exec", label)?;
    }
    Ok(())
}

/// Writes `value` in one `write`, as the kernel takes an attribute from a single call.
fn write_attribute(path: &str, value: &str) -> Result<(), InitError> {
    let write = || -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)?;
        let written = file.write(value.as_bytes())?;
        if written != value.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("the kernel took {written} of {} bytes", value.len()),
            ));
        }
        Ok(())
    };
    write().map_err(failed(format_args!("write {value:?} to {path}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxBuilder, ProcessBuilder, SpecBuilder};

    fn spec_with_labels() -> Spec {
        SpecBuilder::default()
            .process(
                ProcessBuilder::default()
                    .apparmor_profile("berth-default")
                    .selinux_label("system_u:system_r:container_t:s0:c1,c2")
                    .build()
                    .unwrap(),
            )
            .linux(
                LinuxBuilder::default()
                    .mount_label("system_u:object_r:container_file_t:s0:c1,c2")
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap()
    }

    #[test]
    fn labels_without_modules_become_warnings() {
        let labels = plan(&spec_with_labels(), Enabled::default());

        assert_eq!(labels.apparmor_profile, None);
        assert_eq!(labels.selinux_label, None);
        assert_eq!(labels.mount_label, None);
        assert_eq!(labels.warnings.len(), 3, "{:?}", labels.warnings);
        assert!(labels.warnings[0].contains("process.apparmorProfile"));
        assert!(labels.warnings[0].contains("AppArmor"));
        assert!(labels.warnings[2].contains("linux.mountLabel"));
    }

    #[test]
    fn labels_with_modules_are_kept() {
        let enabled = Enabled {
            apparmor: true,
            selinux: true,
        };

        let labels = plan(&spec_with_labels(), enabled);

        assert_eq!(labels.apparmor_profile.as_deref(), Some("berth-default"));
        assert!(labels.selinux_label.is_some());
        assert!(labels.mount_label.is_some());
        assert!(labels.warnings.is_empty());
    }

    #[test]
    fn exec_process_labels_follow_modules() {
        let spec = spec_with_labels();
        let process = spec.process().as_ref();
        let enabled = Enabled {
            apparmor: true,
            selinux: false,
        };

        let labels = plan_process(process, enabled);

        assert_eq!(labels.apparmor_profile.as_deref(), Some("berth-default"));
        assert_eq!(labels.selinux_label, None);
        assert_eq!(labels.mount_label, None);
        assert_eq!(labels.warnings.len(), 1, "{:?}", labels.warnings);
        assert!(labels.warnings[0].contains("process.selinuxLabel"));
    }

    #[test]
    fn empty_profile_is_no_profile() {
        let process = ProcessBuilder::default()
            .apparmor_profile("")
            .build()
            .unwrap();

        let labels = plan_process(Some(&process), Enabled::default());

        assert_eq!(labels.apparmor_profile, None);
        assert!(labels.warnings.is_empty(), "{:?}", labels.warnings);
    }

    #[test]
    fn modules_are_detected_from_sysfs_files() {
        let sys = tempfile::tempdir().unwrap();
        let parameters = sys.path().join("module/apparmor/parameters");
        std::fs::create_dir_all(&parameters).unwrap();
        std::fs::write(parameters.join("enabled"), "Y\n").unwrap();

        let enabled = detect_in(sys.path());

        assert!(enabled.apparmor);
        assert!(!enabled.selinux);
        std::fs::write(parameters.join("enabled"), "N\n").unwrap();
        assert!(!detect_in(sys.path()).apparmor);
    }

    #[test]
    fn mount_label_is_quoted_in_mount_data() {
        assert_eq!(
            mount_data("mode=755", "system_u:object_r:t:s0:c1,c2"),
            "mode=755,context=\"system_u:object_r:t:s0:c1,c2\""
        );
        assert_eq!(mount_data("", "l"), "context=\"l\"");
    }
}
