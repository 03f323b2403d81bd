//! The machine a benchmark ran on, as the report describes it.

use std::path::Path;
use std::process::Command;

use crate::crun::{cgroup_layout, CgroupLayout};

#[derive(Debug, Clone)]
pub struct Machine {
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    pub cgroups: CgroupLayout,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();

        Machine {
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown".to_string()),
            cores: std::thread::available_parallelism().map_or(0, usize::from),
            kernel: rustix::system::uname()
                .release()
                .to_string_lossy()
                .into_owned(),
            cgroups: cgroup_layout(),
        }
    }
}

/// Returns the first `model name` of /proc/cpuinfo.
fn cpu_model(cpuinfo: &str) -> Option<String> {
    cpuinfo
        .lines()
        .find(|line| line.starts_with("model name"))
        .and_then(|line| line.split_once(':'))
        .map(|(_, model)| model.trim().to_string())
}

/// Returns the first line of `PROGRAM --version`, or why there is none.
pub fn program_version(program: &Path) -> String {
    match Command::new(program).arg("--version").output() {
        Ok(output) => String::from_utf8_lossy(&output.stdout)
            .lines()
            .next()
            .unwrap_or("unknown version")
            .to_string(),
        Err(error) => format!("unknown version ({error})"),
    }
}

/// Returns the 1, 5 and 15 minute load averages from /proc/loadavg, or why there are none.
pub fn load_average() -> String {
    match std::fs::read_to_string("/proc/loadavg") {
        Ok(text) => text
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        Err(error) => format!("unknown ({error})"),
    }
}

/// Returns the current UTC time as `YYYY-MM-DD HH:MM:SS UTC`, from `date -u`.
pub fn now_utc() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M:%S UTC"])
        .output()
        .ok()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_string())
        .filter(|text| !text.is_empty())
        .unwrap_or_else(|| "unknown date".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_model_from_cpuinfo() {
        let cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n";
        assert_eq!(cpu_model(cpuinfo).as_deref(), Some("AMD EPYC"));
    }

    #[test]
    fn cpu_model_missing_is_none() {
        assert_eq!(cpu_model("processor\t: 0\n"), None);
    }
}
