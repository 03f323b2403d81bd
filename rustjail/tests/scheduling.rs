//! Scheduling attributes seen from inside a container: scheduler policy and nice, I/O
//! priority, NUMA memory policy, CPU affinity of exec'd processes, and the console size
//! of a terminal. Needs root.

mod common;

use std::fs::{self, File};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::mpsc;

use common::{config, init_command, read_all, received, require_root, wait_child, Bundle, Guard};
use oci_spec::runtime::{
    BoxBuilder, ExecCPUAffinity, IOPriorityClass, LinuxCpuBuilder, LinuxIOPriorityBuilder,
    LinuxMemoryPolicy, LinuxResourcesBuilder, LinuxSchedulerPolicy, MemoryPolicyModeType, Process,
    SchedulerBuilder, Spec,
};
use rustjail::Error;

/// Prints the process's stat line, I/O priority, memory policy lines and CPU list.
const REPORT: &str = "cat /proc/self/stat; ionice; grep -c ' bind:0 ' /proc/self/numa_maps; \
                      grep Cpus_allowed_list /proc/self/status";

/// Returns a bundle whose busybox also links `ionice`.
fn bundle() -> Bundle {
    let bundle = Bundle::new();
    symlink("busybox", bundle.rootfs().join("bin/ionice")).unwrap();
    bundle
}

fn edit_process(spec: &mut Spec, edit: impl FnOnce(&mut Process)) {
    let mut process = spec.process().clone().unwrap();
    edit(&mut process);
    spec.set_process(Some(process));
}

fn with_memory_policy(mut spec: Spec, mode: MemoryPolicyModeType, nodes: &str) -> Spec {
    let mut policy = LinuxMemoryPolicy::default();
    policy.set_mode(mode);
    policy.set_nodes(Some(nodes.to_owned()));
    let mut linux = spec.linux().clone().unwrap();
    linux.set_memory_policy(Some(policy));
    spec.set_linux(Some(linux));
    spec
}

fn scheduler(
    policy: LinuxSchedulerPolicy,
    nice: i32,
    priority: i32,
) -> oci_spec::runtime::Scheduler {
    SchedulerBuilder::default()
        .policy(policy)
        .nice(nice)
        .priority(priority)
        .build()
        .unwrap()
}

fn io_priority(class: IOPriorityClass, priority: i64) -> oci_spec::runtime::LinuxIOPriority {
    LinuxIOPriorityBuilder::default()
        .class(class)
        .priority(priority)
        .build()
        .unwrap()
}

/// Returns an execCPUAffinity with the lists as given, unchecked, as a caller building
/// it with setters could.
fn cpu_affinity(initial: Option<&str>, last: Option<&str>) -> ExecCPUAffinity {
    let mut affinity = ExecCPUAffinity::default();
    affinity.set_initial(initial.map(str::to_owned));
    affinity.set_cpu_affinity_final(last.map(str::to_owned));
    affinity
}

/// What [`REPORT`] printed.
#[derive(Debug)]
struct Report {
    nice: i64,
    rt_priority: u64,
    policy: u64,
    io_priority: String,
    bind_lines: usize,
    cpus: String,
}

fn parse_report(stdout: &str) -> Report {
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
    // Fields after the command name, which may hold spaces, start at field 3 (state).
    let (_, after_name) = lines[0].rsplit_once(") ").expect("stat line");
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |number: usize| fields[number - 3];
    Report {
        nice: field(19).parse().unwrap(),
        rt_priority: field(40).parse().unwrap(),
        policy: field(41).parse().unwrap(),
        io_priority: lines[1].trim().to_owned(),
        bind_lines: lines[2].trim().parse().unwrap(),
        cpus: lines[3]
            .trim_start_matches("Cpus_allowed_list:")
            .trim()
            .to_owned(),
    }
}

fn own_cpus() -> String {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|line| line.starts_with("Cpus_allowed_list:"))
        .unwrap();
    line.trim_start_matches("Cpus_allowed_list:")
        .trim()
        .to_owned()
}

/// Creates and starts a container that sleeps, for processes to exec into.
fn sleeping(test: &str, spec: Spec) -> Guard {
    let mut guard = Guard::create(config(test, spec)).unwrap();
    guard.container.start().unwrap();
    guard
}

/// Runs `process` in the container by exec and returns its stdout and exit code.
fn exec_output(guard: &Guard, process: &Process) -> (String, i32) {
    let mut exec = guard.container.exec(process, &init_command()).unwrap();
    let stdout = read_all(exec.take_stdout().unwrap());
    drop(exec.take_stdin());
    let code = wait_child(exec.pid());
    (received(&stdout), code)
}

#[test]
fn init_gets_scheduling_attributes() {
    require_root();
    let bundle = bundle();
    let mut spec = bundle.spec(&["sh", "-c", REPORT]);
    edit_process(&mut spec, |process| {
        process.set_scheduler(Some(scheduler(LinuxSchedulerPolicy::SchedBatch, 5, 0)));
        process.set_io_priority(Some(io_priority(IOPriorityClass::IoprioClassBe, 6)));
        process.set_exec_cpu_affinity(Some(cpu_affinity(Some("0"), Some("0"))));
    });
    let spec = with_memory_policy(spec, MemoryPolicyModeType::MpolBind, "0");

    let output = Guard::create(config("sched-init", spec)).unwrap().run();

    assert_eq!(output.code, 0, "{output:?}");
    let report = parse_report(&output.stdout);
    assert_eq!(report.policy, libc::SCHED_BATCH as u64, "{report:?}");
    assert_eq!(report.nice, 5, "{report:?}");
    assert_eq!(report.io_priority, "best-effort: prio 6", "{report:?}");
    assert!(report.bind_lines > 0, "no bind:0 mapping: {report:?}");
    // The runtime spec makes execCPUAffinity apply to exec'd processes only.
    assert_eq!(report.cpus, own_cpus(), "{report:?}");
}

#[test]
fn exec_gets_idle_policy_and_final_affinity() {
    require_root();
    let bundle = bundle();
    let spec = with_memory_policy(
        bundle.spec(&["sleep", "60"]),
        MemoryPolicyModeType::MpolBind,
        "0",
    );
    let guard = sleeping("sched-exec", spec.clone());
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(vec!["sh".into(), "-c".into(), REPORT.into()]));
    process.set_scheduler(Some(scheduler(LinuxSchedulerPolicy::SchedIdle, 0, 0)));
    process.set_io_priority(Some(io_priority(IOPriorityClass::IoprioClassIdle, 0)));
    process.set_exec_cpu_affinity(Some(cpu_affinity(Some("0"), Some("1"))));

    let (stdout, code) = exec_output(&guard, &process);

    assert_eq!(code, 0, "{stdout}");
    let report = parse_report(&stdout);
    assert_eq!(report.policy, libc::SCHED_IDLE as u64, "{report:?}");
    assert_eq!(report.io_priority, "idle", "{report:?}");
    assert!(report.bind_lines > 0, "no bind:0 mapping: {report:?}");
    assert_eq!(report.cpus, "1", "{report:?}");
}

#[test]
fn exec_keeps_initial_affinity_without_final() {
    require_root();
    let bundle = bundle();
    let spec = bundle.spec(&["sleep", "60"]);
    let guard = sleeping("sched-initial", spec.clone());
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(vec!["sh".into(), "-c".into(), REPORT.into()]));
    process.set_exec_cpu_affinity(Some(cpu_affinity(Some("1"), None)));

    let (stdout, code) = exec_output(&guard, &process);

    // The container's cpuset has the caller's CPUs, and moving a task between cpusets
    // with the same CPUs leaves its affinity alone, so `initial` is still in effect.
    assert_eq!(code, 0, "{stdout}");
    assert_eq!(parse_report(&stdout).cpus, "1", "{stdout}");
}

/// A cgroup directory the test made, removed on drop once the container's is gone.
struct TestCgroup(PathBuf);

impl Drop for TestCgroup {
    fn drop(&mut self) {
        let _ = fs::remove_dir(&self.0);
    }
}

#[test]
fn fifo_policy_applies_with_realtime_runtime() {
    require_root();
    let bundle = bundle();
    let mut spec = bundle.spec(&["sh", "-c", REPORT]);
    edit_process(&mut spec, |process| {
        process.set_scheduler(Some(scheduler(LinuxSchedulerPolicy::SchedFifo, 0, 10)));
    });
    // With real-time group scheduling, a task gets a real-time policy only in a cpu
    // cgroup with real-time runtime, and a child cgroup gets runtime only from its parent.
    let cpu_root = Path::new("/sys/fs/cgroup/cpu");
    let group_scheduling = cpu_root.join("cpu.rt_runtime_us").exists();
    if group_scheduling {
        let resources = LinuxResourcesBuilder::default()
            .cpu(
                LinuxCpuBuilder::default()
                    .realtime_period(1_000_000u64)
                    .realtime_runtime(10_000i64)
                    .build()
                    .unwrap(),
            )
            .build()
            .unwrap();
        let mut linux = spec.linux().clone().unwrap();
        linux.set_resources(Some(resources));
        spec.set_linux(Some(linux));
    }
    let config = config("sched-fifo", spec);
    let _parent = group_scheduling.then(|| {
        let parent = TestCgroup(cpu_root.join(&config.cgroup_parent));
        fs::create_dir(&parent.0).unwrap();
        fs::write(parent.0.join("cpu.rt_runtime_us"), "20000").unwrap();
        parent
    });

    let output = Guard::create(config).unwrap().run();

    assert_eq!(output.code, 0, "{output:?}");
    let report = parse_report(&output.stdout);
    assert_eq!(report.policy, libc::SCHED_FIFO as u64, "{report:?}");
    assert_eq!(report.rt_priority, 10, "{report:?}");
}

/// A change that makes a spec invalid.
type SpecEdit = fn(&mut Spec);

#[test]
fn invalid_scheduling_fails_create() {
    require_root();
    let bundle = bundle();
    let cases: [(&str, SpecEdit); 5] = [
        ("process.scheduler", |spec| {
            edit_process(spec, |process| {
                process.set_scheduler(Some(scheduler(LinuxSchedulerPolicy::SchedFifo, 0, 0)));
            })
        }),
        ("process.scheduler", |spec| {
            edit_process(spec, |process| {
                process.set_scheduler(Some(scheduler(LinuxSchedulerPolicy::SchedOther, 25, 0)));
            })
        }),
        ("process.ioPriority", |spec| {
            edit_process(spec, |process| {
                process.set_io_priority(Some(io_priority(IOPriorityClass::IoprioClassBe, 8)));
            })
        }),
        ("linux.memoryPolicy", |spec| {
            *spec = with_memory_policy(spec.clone(), MemoryPolicyModeType::MpolBind, "");
        }),
        // Node 1000 exists only on machines with over a thousand NUMA nodes.
        ("linux.memoryPolicy", |spec| {
            *spec = with_memory_policy(spec.clone(), MemoryPolicyModeType::MpolBind, "1000");
        }),
    ];

    for (field, edit) in cases {
        let mut spec = bundle.spec(&["true"]);
        edit(&mut spec);

        let error = Guard::create(config("sched-invalid", spec)).err().unwrap();

        assert!(matches!(error, Error::InvalidSpec(_)), "{field}: {error}");
        assert!(error.to_string().contains(field), "{error}");
    }
}

#[test]
fn malformed_cpu_list_fails_exec() {
    require_root();
    let bundle = bundle();
    let spec = bundle.spec(&["sleep", "60"]);
    let guard = sleeping("sched-cpus", spec.clone());
    let cases = [
        (
            cpu_affinity(Some("1-"), None),
            "process.execCPUAffinity.initial",
            "\"1-\"",
        ),
        (
            cpu_affinity(None, Some("0,,1")),
            "process.execCPUAffinity.final",
            "\"0,,1\"",
        ),
        (
            cpu_affinity(None, Some("9999")),
            "process.execCPUAffinity.final",
            "9999",
        ),
    ];

    for (affinity, field, value) in cases {
        let mut process = spec.process().clone().unwrap();
        process.set_args(Some(vec!["true".into()]));
        process.set_exec_cpu_affinity(Some(affinity));

        let error = guard.container.exec(&process, &init_command()).unwrap_err();

        assert!(matches!(error, Error::InvalidSpec(_)), "{error}");
        assert!(error.to_string().contains(field), "{error}");
        assert!(error.to_string().contains(value), "{error}");
    }
}

/// Reads a terminal master until the slave side is gone, which Linux reports as EIO.
fn read_terminal(master: OwnedFd) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut file = File::from(master);
        let mut text = Vec::new();
        let mut buffer = [0u8; 1024];
        while let Ok(len) = file.read(&mut buffer) {
            if len == 0 {
                break;
            }
            text.extend_from_slice(&buffer[..len]);
        }
        let _ = sender.send(String::from_utf8_lossy(&text).into_owned());
    });
    receiver
}

fn with_terminal(process: &mut Process, height: u64, width: u64) {
    process.set_terminal(Some(true));
    let size = BoxBuilder::default()
        .height(height)
        .width(width)
        .build()
        .unwrap();
    process.set_console_size(Some(size));
}

#[test]
fn console_size_sets_terminal_size() {
    require_root();
    let bundle = bundle();
    let mut spec = bundle.spec(&["stty", "size"]);
    edit_process(&mut spec, |process| with_terminal(process, 40, 132));
    let mut guard = Guard::create(config("console-size", spec)).unwrap();
    let output = read_terminal(guard.container.take_terminal().expect("terminal master"));

    guard.container.start().unwrap();
    let code = guard.wait();
    let output = received(&output);

    assert_eq!(code, 0, "{output}");
    assert_eq!(output.trim_end(), "40 132", "{output:?}");
}

#[test]
fn console_size_sets_exec_terminal_size() {
    require_root();
    let bundle = bundle();
    let spec = bundle.spec(&["sleep", "60"]);
    let guard = sleeping("console-size-exec", spec.clone());
    let mut process = spec.process().clone().unwrap();
    process.set_args(Some(vec!["stty".into(), "size".into()]));
    with_terminal(&mut process, 12, 34);

    let mut exec = guard.container.exec(&process, &init_command()).unwrap();
    let output = read_terminal(exec.take_terminal().expect("terminal master"));
    let code = wait_child(exec.pid());
    let output = received(&output);

    assert_eq!(code, 0, "{output}");
    assert_eq!(output.trim_end(), "12 34", "{output:?}");
}

#[test]
fn oversized_console_fails_create() {
    require_root();
    let bundle = bundle();
    let mut spec = bundle.spec(&["true"]);
    edit_process(&mut spec, |process| with_terminal(process, 70_000, 80));

    let error = Guard::create(config("console-oversized", spec))
        .err()
        .unwrap();

    assert!(matches!(error, Error::InvalidSpec(_)), "{error}");
    assert!(
        error.to_string().contains("process.consoleSize.height"),
        "{error}"
    );
}
