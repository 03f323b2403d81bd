//! Start-up configuration of the agent.
//!
//! Each setting is taken from the first source that has it, in this order:
//! a command-line flag, an environment variable, an `agent.*` parameter on the
//! kernel command line, and finally the built-in default. Kata's agent reads
//! the same environment variables and kernel parameters, so a guest image made
//! for it configures Berth unchanged.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;

/// Address served when no source names one: vsock on port 1024, any CID.
pub const DEFAULT_SERVER_ADDR: &str = "vsock://-1:1024";

/// Environment variable that sets the server address.
pub const ENV_SERVER_ADDR: &str = "KATA_AGENT_SERVER_ADDR";

/// Environment variable that sets the log level.
pub const ENV_LOG_LEVEL: &str = "KATA_AGENT_LOG_LEVEL";

/// Environment variable that turns on `--isolate` when set to `1` or `true`.
pub const ENV_ISOLATE: &str = "BERTH_ISOLATE";

/// Kernel command line parameter that sets the server address.
const CMDLINE_SERVER_ADDR: &str = "agent.server_addr";

/// Kernel command line parameter that sets the log level.
const CMDLINE_LOG_LEVEL: &str = "agent.log";

/// Kernel command line parameter that sets how many seconds the agent waits for a
/// hot-plugged device, as in Kata's agent.
const CMDLINE_HOTPLUG_TIMEOUT: &str = "agent.hotplug_timeout";

/// Prefix of every agent parameter on the kernel command line.
const CMDLINE_PREFIX: &str = "agent.";

const AFTER_HELP: &str = "\
Sources, highest priority first: flags, then the environment \
(KATA_AGENT_SERVER_ADDR, KATA_AGENT_LOG_LEVEL, BERTH_ISOLATE=1), then the kernel \
command line (agent.server_addr=, agent.log=), then the defaults. \
agent.hotplug_timeout=SECONDS, read from the kernel command line only, sets how long \
a request waits for a hot-plugged device (default 3). Other agent.* parameters of \
Kata's agent are logged as ignored.

--isolate moves the agent into new UTS and network namespaces before it starts, so an \
agent run outside a guest (tests, demos, benchmarks) can never change the machine's \
hostname, network or sysctls. It also keeps the machine's /etc/resolv.conf (see \
--resolv-conf) and rejects CreateSandbox requests that name kernel modules. Abstract unix sockets (unix://@name) belong to a network \
namespace, so an isolated agent is reachable from outside only on a path socket \
(unix:///path).";

/// Command-line flags of `berth-agent`.
#[derive(Debug, Parser)]
#[command(
    name = "berth-agent",
    version,
    about = "Guest agent for VM sandboxes that serves the Kata Containers agent API over ttRPC",
    after_help = AFTER_HELP
)]
pub struct Flags {
    /// Address to serve: vsock://CID:PORT, unix:///path or unix://@abstract-name
    /// [default: vsock://-1:1024]
    #[arg(long, value_name = "ADDRESS")]
    pub server_addr: Option<String>,

    /// Log level: trace, debug, info, warn, error or critical [default: info]
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// File with the kernel command line, read for agent.* parameters
    #[arg(long, value_name = "PATH", default_value = "/proc/cmdline")]
    pub kernel_cmdline: PathBuf,

    /// Directory for sandbox and container state (bundles, shared mounts)
    #[arg(long, value_name = "DIR", default_value = "/run/kata-containers")]
    pub run_dir: PathBuf,

    /// Root of the cgroup file system where container cgroups are created
    #[arg(long, value_name = "DIR", default_value = "/sys/fs/cgroup")]
    pub cgroup_root: PathBuf,

    /// Mount point of sysfs
    #[arg(long, value_name = "DIR", default_value = "/sys")]
    pub sysfs: PathBuf,

    /// Mount point of procfs
    #[arg(long, value_name = "DIR", default_value = "/proc")]
    pub procfs: PathBuf,

    /// Mount point of devfs
    #[arg(long, value_name = "DIR", default_value = "/dev")]
    pub devfs: PathBuf,

    /// Resolver file that CreateSandbox's DNS entries replace
    /// [default: /etc/resolv.conf, or RUN_DIR/resolv.conf with --isolate]
    #[arg(long, value_name = "PATH")]
    pub resolv_conf: Option<PathBuf>,

    /// Run in new UTS and network namespaces (also BERTH_ISOLATE=1); see below
    #[arg(long)]
    pub isolate: bool,
}

/// Log levels accepted by `--log-level`, `KATA_AGENT_LOG_LEVEL` and `agent.log=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

impl LogLevel {
    /// Parses a level name; `warning` is accepted as Kata's agent accepts it.
    pub fn parse(name: &str) -> Option<LogLevel> {
        match name {
            "trace" => Some(LogLevel::Trace),
            "debug" => Some(LogLevel::Debug),
            "info" => Some(LogLevel::Info),
            "warn" | "warning" => Some(LogLevel::Warn),
            "error" => Some(LogLevel::Error),
            "critical" => Some(LogLevel::Critical),
            _ => None,
        }
    }

    /// Returns the matching slog level.
    pub fn to_slog(self) -> slog::Level {
        match self {
            LogLevel::Trace => slog::Level::Trace,
            LogLevel::Debug => slog::Level::Debug,
            LogLevel::Info => slog::Level::Info,
            LogLevel::Warn => slog::Level::Warning,
            LogLevel::Error => slog::Level::Error,
            LogLevel::Critical => slog::Level::Critical,
        }
    }
}

/// Errors that stop the agent before it serves anything.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("read kernel command line {path}: {source}")]
    ReadCmdline {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("server address from {origin}: {source}")]
    InvalidAddress {
        origin: Origin,
        #[source]
        source: protocols::AddressError,
    },

    #[error("server address {value:?} from {origin}: hvsock addresses are for clients on the host, the agent listens on vsock://")]
    HostOnlyAddress { value: String, origin: Origin },

    #[error(
        "invalid log level {value:?} from {origin}: expected trace, debug, info, warn, error or critical"
    )]
    InvalidLogLevel { value: String, origin: Origin },

    #[error(
        "invalid {CMDLINE_HOTPLUG_TIMEOUT} value {value:?} on the kernel command line: expected a whole number of seconds from 1 to 3600"
    )]
    InvalidHotplugTimeout { value: String },
}

/// Source of a setting, named in error messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Flag,
    Environment,
    KernelCmdline,
    Default,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = match self {
            Origin::Flag => "the command line flag",
            Origin::Environment => "the environment",
            Origin::KernelCmdline => "the kernel command line",
            Origin::Default => "the default",
        };
        f.write_str(text)
    }
}

/// Settings resolved from all sources.
#[derive(Debug, Clone)]
pub struct Config {
    pub server_addr: protocols::Address,
    pub server_addr_text: String,
    pub log_level: LogLevel,
    pub guest_paths: stages::GuestPaths,
    /// Whether the agent runs outside a guest, in its own UTS and network namespaces.
    pub isolate: bool,
    pub resolv_conf: PathBuf,
    /// How long a request waits for a block or PCI device to appear in the guest.
    pub device_timeout: Duration,
    /// `agent.*` kernel parameters that Berth does not support, to be logged.
    pub ignored_params: Vec<String>,
}

/// Values read from the environment; kept apart so tests need not set process variables.
#[derive(Debug, Default, Clone)]
pub struct Environment {
    pub server_addr: Option<String>,
    pub log_level: Option<String>,
}

impl Environment {
    /// Reads the agent's variables from the process environment; empty values count as unset.
    pub fn from_process() -> Environment {
        let read = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());

        Environment {
            server_addr: read(ENV_SERVER_ADDR),
            log_level: read(ENV_LOG_LEVEL),
        }
    }
}

/// Returns whether `BERTH_ISOLATE` turns isolation on.
pub fn isolate_from_env() -> bool {
    matches!(
        std::env::var(ENV_ISOLATE).as_deref(),
        Ok("1") | Ok("true") | Ok("yes")
    )
}

/// `agent.*` parameters found on the kernel command line.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KernelParams {
    pub server_addr: Option<String>,
    pub log_level: Option<String>,
    pub hotplug_timeout: Option<String>,
    /// Other `agent.*` parameters, such as Kata's `agent.debug_console`, word by word.
    pub unsupported: Vec<String>,
}

impl KernelParams {
    /// Reads and parses the kernel command line file at `path`.
    pub fn read(path: &Path) -> Result<KernelParams, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadCmdline {
            path: path.to_path_buf(),
            source,
        })?;

        Ok(KernelParams::parse(&text))
    }

    /// Parses a kernel command line; when a parameter repeats, the last one wins as in Linux.
    pub fn parse(cmdline: &str) -> KernelParams {
        let mut params = KernelParams::default();

        for word in split_cmdline(cmdline) {
            let Some((key, value)) = word.split_once('=') else {
                if word.starts_with(CMDLINE_PREFIX) {
                    params.unsupported.push(word);
                }
                continue;
            };

            match key {
                CMDLINE_SERVER_ADDR => params.server_addr = Some(value.to_string()),
                CMDLINE_LOG_LEVEL => params.log_level = Some(value.to_string()),
                CMDLINE_HOTPLUG_TIMEOUT => params.hotplug_timeout = Some(value.to_string()),
                _ if key.starts_with(CMDLINE_PREFIX) => params.unsupported.push(word),
                _ => {}
            }
        }

        params
    }
}

/// Splits a kernel command line into words; double quotes group spaces and are removed.
fn split_cmdline(cmdline: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;

    for c in cmdline.chars() {
        match c {
            '"' => quoted = !quoted,
            c if c.is_whitespace() && !quoted => {
                if !word.is_empty() {
                    words.push(std::mem::take(&mut word));
                }
            }
            c => word.push(c),
        }
    }

    if !word.is_empty() {
        words.push(word);
    }

    words
}

/// Picks the first value present, in priority order, and returns its source with it.
fn pick(
    flag: Option<&str>,
    env: Option<&str>,
    cmdline: Option<&str>,
    default: &str,
) -> (String, Origin) {
    if let Some(value) = flag {
        return (value.to_string(), Origin::Flag);
    }

    if let Some(value) = env {
        return (value.to_string(), Origin::Environment);
    }

    if let Some(value) = cmdline {
        return (value.to_string(), Origin::KernelCmdline);
    }

    (default.to_string(), Origin::Default)
}

impl Config {
    /// Resolves every setting from the flags, the environment and the kernel command line.
    pub fn resolve(
        flags: &Flags,
        env: &Environment,
        kernel: &KernelParams,
    ) -> Result<Config, ConfigError> {
        let (addr_text, addr_origin) = pick(
            flags.server_addr.as_deref(),
            env.server_addr.as_deref(),
            kernel.server_addr.as_deref(),
            DEFAULT_SERVER_ADDR,
        );
        let server_addr = addr_text.parse::<protocols::Address>().map_err(|source| {
            ConfigError::InvalidAddress {
                origin: addr_origin,
                source,
            }
        })?;
        if let protocols::Address::HybridVsock { .. } = server_addr {
            return Err(ConfigError::HostOnlyAddress {
                value: addr_text,
                origin: addr_origin,
            });
        }

        let (level_text, level_origin) = pick(
            flags.log_level.as_deref(),
            env.log_level.as_deref(),
            kernel.log_level.as_deref(),
            "info",
        );
        let log_level =
            LogLevel::parse(&level_text).ok_or_else(|| ConfigError::InvalidLogLevel {
                value: level_text.clone(),
                origin: level_origin,
            })?;

        let resolv_conf = match (&flags.resolv_conf, flags.isolate) {
            (Some(path), _) => path.clone(),
            (None, true) => flags.run_dir.join("resolv.conf"),
            (None, false) => PathBuf::from("/etc/resolv.conf"),
        };

        let device_timeout = match &kernel.hotplug_timeout {
            Some(value) => parse_hotplug_timeout(value)?,
            None => stages::device::wait::DEFAULT_DEVICE_TIMEOUT,
        };

        Ok(Config {
            server_addr,
            server_addr_text: addr_text,
            log_level,
            guest_paths: guest_paths(flags),
            isolate: flags.isolate,
            resolv_conf,
            device_timeout,
            ignored_params: kernel.unsupported.clone(),
        })
    }
}

/// Parses `agent.hotplug_timeout`: whole seconds, as Kata's agent reads it. The upper
/// bound keeps a typo from making a request for a missing device hang for hours.
fn parse_hotplug_timeout(value: &str) -> Result<Duration, ConfigError> {
    match value.parse::<u64>() {
        Ok(seconds @ 1..=3600) => Ok(Duration::from_secs(seconds)),
        _ => Err(ConfigError::InvalidHotplugTimeout {
            value: value.to_string(),
        }),
    }
}

fn guest_paths(flags: &Flags) -> stages::GuestPaths {
    stages::GuestPaths {
        run_dir: flags.run_dir.clone(),
        sysfs: flags.sysfs.clone(),
        procfs: flags.procfs.clone(),
        devfs: flags.devfs.clone(),
        cgroup_root: flags.cgroup_root.clone(),
        kernel_cmdline: flags.kernel_cmdline.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags(args: &[&str]) -> Flags {
        let mut argv = vec!["berth-agent"];
        argv.extend_from_slice(args);
        Flags::try_parse_from(argv).expect("flags parse")
    }

    fn env(addr: Option<&str>, level: Option<&str>) -> Environment {
        Environment {
            server_addr: addr.map(str::to_string),
            log_level: level.map(str::to_string),
        }
    }

    #[test]
    fn cmdline_finds_agent_params() {
        let params = KernelParams::parse(
            "console=ttyS0 agent.server_addr=unix:///run/a.sock quiet agent.log=debug\n",
        );

        assert_eq!(params.server_addr.as_deref(), Some("unix:///run/a.sock"));
        assert_eq!(params.log_level.as_deref(), Some("debug"));
    }

    #[test]
    fn cmdline_last_repeat_wins() {
        let params = KernelParams::parse("agent.log=debug agent.log=error");

        assert_eq!(params.log_level.as_deref(), Some("error"));
    }

    #[test]
    fn cmdline_quotes_group_words() {
        let params = KernelParams::parse(r#"foo="a b" agent.log="warn" bar"#);

        assert_eq!(params.log_level.as_deref(), Some("warn"));
        assert_eq!(split_cmdline(r#"foo="a b" bar"#), vec!["foo=a b", "bar"]);
    }

    #[test]
    fn cmdline_ignores_look_alikes() {
        let params = KernelParams::parse("xagent.log=debug agent.logx=debug agent.log");

        assert_eq!(params.log_level, None);
        assert_eq!(params.server_addr, None);
        assert_eq!(params.unsupported, ["agent.logx=debug", "agent.log"]);
    }

    #[test]
    fn cmdline_collects_unsupported_agent_params() {
        let params = KernelParams::parse(
            "quiet agent.debug_console agent.container_pipe_size=4096 systemd.unit=x agent.log=info",
        );

        assert_eq!(
            params.unsupported,
            ["agent.debug_console", "agent.container_pipe_size=4096"]
        );
        assert_eq!(params.log_level.as_deref(), Some("info"));
    }

    #[test]
    fn hotplug_timeout_from_cmdline() {
        let resolve = |cmdline: &str| {
            Config::resolve(&flags(&[]), &env(None, None), &KernelParams::parse(cmdline))
        };

        let config = resolve("agent.hotplug_timeout=15").expect("timeout resolves");
        assert_eq!(config.device_timeout, Duration::from_secs(15));

        let config = resolve("").expect("default resolves");
        assert_eq!(
            config.device_timeout,
            stages::device::wait::DEFAULT_DEVICE_TIMEOUT
        );

        for bad in ["0", "-1", "3s", "", "3601"] {
            let error = resolve(&format!("agent.hotplug_timeout={bad}"))
                .expect_err("bad timeout is rejected");
            assert!(error.to_string().contains(&format!("{bad:?}")), "{error}");
        }
    }

    #[test]
    fn defaults_apply_without_sources() {
        let config = Config::resolve(&flags(&[]), &env(None, None), &KernelParams::default())
            .expect("defaults resolve");

        assert_eq!(config.server_addr_text, DEFAULT_SERVER_ADDR);
        assert_eq!(config.log_level, LogLevel::Info);
        assert_eq!(
            config.guest_paths.run_dir,
            Path::new("/run/kata-containers")
        );
        assert_eq!(
            config.guest_paths.kernel_cmdline,
            Path::new("/proc/cmdline")
        );
    }

    #[test]
    fn flag_beats_env_beats_cmdline() {
        let kernel = KernelParams::parse("agent.server_addr=unix:///k.sock agent.log=error");
        let all = flags(&["--server-addr", "unix:///f.sock", "--log-level", "trace"]);
        let none = flags(&[]);
        let from_env = env(Some("unix:///e.sock"), Some("debug"));

        let config = Config::resolve(&all, &from_env, &kernel).expect("flags resolve");
        assert_eq!(config.server_addr_text, "unix:///f.sock");
        assert_eq!(config.log_level, LogLevel::Trace);

        let config = Config::resolve(&none, &from_env, &kernel).expect("env resolves");
        assert_eq!(config.server_addr_text, "unix:///e.sock");
        assert_eq!(config.log_level, LogLevel::Debug);

        let config = Config::resolve(&none, &env(None, None), &kernel).expect("cmdline resolves");
        assert_eq!(config.server_addr_text, "unix:///k.sock");
        assert_eq!(config.log_level, LogLevel::Error);
    }

    #[test]
    fn bad_address_names_value_and_origin() {
        let error = Config::resolve(
            &flags(&[]),
            &env(Some("tcp:/nowhere"), None),
            &KernelParams::default(),
        )
        .expect_err("bad address is rejected");

        let message = error.to_string();
        assert!(message.contains("\"tcp:/nowhere\""), "{message}");
        assert!(message.contains("the environment"), "{message}");
    }

    #[test]
    fn hybrid_vsock_is_rejected() {
        let error = Config::resolve(
            &flags(&["--server-addr", "hvsock:///run/vm.sock:1024"]),
            &env(None, None),
            &KernelParams::default(),
        )
        .expect_err("hvsock is rejected");

        assert!(error.to_string().contains("hvsock"), "{error}");
    }

    #[test]
    fn bad_level_names_value_and_origin() {
        let kernel = KernelParams::parse("agent.log=loud");

        let error = Config::resolve(&flags(&[]), &env(None, None), &kernel)
            .expect_err("bad level is rejected");

        let message = error.to_string();
        assert!(message.contains("\"loud\""), "{message}");
        assert!(message.contains("kernel command line"), "{message}");
    }

    #[test]
    fn guest_paths_follow_flags() {
        let config = Config::resolve(
            &flags(&[
                "--run-dir",
                "/t/run",
                "--sysfs",
                "/t/sys",
                "--procfs",
                "/t/proc",
                "--devfs",
                "/t/dev",
                "--cgroup-root",
                "/t/cg",
                "--kernel-cmdline",
                "/t/cmdline",
            ]),
            &env(None, None),
            &KernelParams::default(),
        )
        .expect("paths resolve");

        let paths = &config.guest_paths;
        assert_eq!(paths.run_dir, Path::new("/t/run"));
        assert_eq!(paths.sysfs, Path::new("/t/sys"));
        assert_eq!(paths.procfs, Path::new("/t/proc"));
        assert_eq!(paths.devfs, Path::new("/t/dev"));
        assert_eq!(paths.cgroup_root, Path::new("/t/cg"));
        assert_eq!(paths.kernel_cmdline, Path::new("/t/cmdline"));
    }

    #[test]
    fn resolv_conf_stays_private_when_isolated() {
        let resolve = |args: &[&str]| {
            Config::resolve(&flags(args), &env(None, None), &KernelParams::default())
                .expect("resolves")
                .resolv_conf
        };

        assert_eq!(resolve(&[]), Path::new("/etc/resolv.conf"));
        assert_eq!(
            resolve(&["--isolate", "--run-dir", "/t/run"]),
            Path::new("/t/run/resolv.conf")
        );
        assert_eq!(
            resolve(&["--isolate", "--resolv-conf", "/t/r.conf"]),
            Path::new("/t/r.conf")
        );
    }

    #[test]
    fn log_level_names() {
        for (name, level) in [
            ("trace", LogLevel::Trace),
            ("debug", LogLevel::Debug),
            ("info", LogLevel::Info),
            ("warn", LogLevel::Warn),
            ("warning", LogLevel::Warn),
            ("error", LogLevel::Error),
            ("critical", LogLevel::Critical),
        ] {
            assert_eq!(LogLevel::parse(name), Some(level), "{name}");
        }
        assert_eq!(LogLevel::parse("INFO"), None);
    }
}
