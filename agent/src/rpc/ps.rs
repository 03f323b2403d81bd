//! ListProcesses: the processes of a container, as Kata's agent listed them up to
//! Kata 2.0.
//!
//! The container's processes are the pids in its cgroup's `cgroup.procs`,
//! numbered in the agent's PID namespace. Format "json" returns them as a JSON array of numbers. Format
//! "table" runs the guest's `ps` with the request's arguments (`-ef` when there are
//! none), keeps the header line and the lines whose PID column is one of those pids,
//! and returns that text. `ps` runs in the agent's namespaces, not in the container,
//! because the container's root file system may have no `ps`.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;

use protocols::agent::{ListProcessesRequest, ListProcessesResponse};

use super::process::find_container;
use super::Agent;
use crate::error::AgentError;
use crate::reaper::Reaper;
use crate::sandbox::wait_exit;

/// Arguments of `ps` when the request gives none.
const DEFAULT_PS_ARGS: &[&str] = &["-ef"];

/// Returns the container's processes in the requested format.
pub async fn list_processes(
    agent: Arc<Agent>,
    request: ListProcessesRequest,
) -> Result<ListProcessesResponse, AgentError> {
    let container_id = request.container_id.clone();
    let format = match request.format.as_str() {
        "json" => Format::Json,
        "table" => Format::Table,
        other => {
            return Err(AgentError::InvalidProcessListFormat {
                container: container_id,
                format: other.to_string(),
            })
        }
    };

    let handle = find_container(&agent, &container_id).await?;
    let cgroup_paths = {
        let container = handle.lock().await;
        container.ensure_present()?;
        let launcher = container
            .launcher
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        launcher.cgroup().paths().to_vec()
    };
    let pids = container_pids(&container_id, &cgroup_paths)?;

    let process_list = match format {
        Format::Json => serde_json::to_vec(&pids).map_err(|error| AgentError::ProcessList {
            container: container_id.clone(),
            reason: error.to_string(),
        })?,
        Format::Table => {
            let args = if request.args.is_empty() {
                DEFAULT_PS_ARGS.iter().map(|arg| arg.to_string()).collect()
            } else {
                request.args.clone()
            };
            let table = run_ps(agent.reaper.clone(), args).await.map_err(|reason| {
                AgentError::ProcessList {
                    container: container_id.clone(),
                    reason,
                }
            })?;
            filter_table(&table, &pids).map_err(|reason| AgentError::ProcessList {
                container: container_id.clone(),
                reason,
            })?
        }
    };

    let mut response = ListProcessesResponse::new();
    response.process_list = process_list;
    Ok(response)
}

enum Format {
    Json,
    Table,
}

/// Returns the sorted pids listed in `cgroup.procs` of any of the container's cgroup
/// directories; on v1 every hierarchy lists the same processes.
fn container_pids(container_id: &str, cgroup_paths: &[PathBuf]) -> Result<Vec<i32>, AgentError> {
    let mut pids = BTreeSet::new();
    let mut last_error = None;
    let mut read_any = false;

    for dir in cgroup_paths {
        let path = dir.join("cgroup.procs");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                read_any = true;
                pids.extend(
                    text.lines()
                        .filter_map(|line| line.trim().parse::<i32>().ok()),
                );
            }
            Err(source) => last_error = Some((path, source)),
        }
    }

    match (read_any, last_error) {
        (false, Some((path, source))) => Err(AgentError::CgroupProcs {
            container: container_id.to_string(),
            path,
            source,
        }),
        _ => Ok(pids.into_iter().collect()),
    }
}

/// Runs `ps` with `args` and returns its output. Its exit status comes from the
/// reaper, which owns every wait for a child of the agent.
async fn run_ps(reaper: Reaper, args: Vec<String>) -> Result<String, String> {
    let since = reaper.checkpoint();
    let (pid, output, errors) = tokio::task::spawn_blocking(move || {
        let mut child = Command::new("ps")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("run ps: {error}"))?;
        let pid = child.id() as i32;

        // ps closes both pipes when it exits. Its error output is small, so reading
        // stdout to the end first cannot leave ps blocked on a full stderr pipe.
        let mut output = String::new();
        let mut errors = String::new();
        if let Some(mut stdout) = child.stdout.take() {
            let _ = stdout.read_to_string(&mut output);
        }
        if let Some(mut stderr) = child.stderr.take() {
            let _ = stderr.read_to_string(&mut errors);
        }
        // Dropping the Child neither waits for nor kills the process.
        drop(child);
        Ok::<_, String>((pid, output, errors))
    })
    .await
    .map_err(|error| format!("run ps: {error}"))??;

    let status = wait_exit(reaper.register(pid, since))
        .await
        .ok_or_else(|| "the reaper stopped before ps exited".to_string())?;
    if status != 0 {
        return Err(format!("ps exited with status {status}: {}", errors.trim()));
    }
    Ok(output)
}

/// Keeps the header of a `ps` table and the rows whose PID column is in `pids`.
fn filter_table(table: &str, pids: &[i32]) -> Result<Vec<u8>, String> {
    let mut lines = table.lines();
    let header = lines.next().ok_or("ps printed nothing")?;
    let pid_column = header
        .split_whitespace()
        .position(|column| column == "PID")
        .ok_or_else(|| format!("ps output has no PID column: {header:?}"))?;

    let mut filtered = format!("{header}\n");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(pid_column)
            .and_then(|field| field.parse::<i32>().ok());
        if pid.is_some_and(|pid| pids.contains(&pid)) {
            filtered.push_str(line);
            filtered.push('\n');
        }
    }
    Ok(filtered.into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TABLE: &str = "\
UID          PID    PPID  C STIME TTY          TIME CMD
root           1       0  0 10:00 ?        00:00:01 /sbin/init
root         812       1  0 10:01 ?        00:00:00 sleep 100
root         813     812  0 10:01 ?        00:00:00 sh -c x
";

    #[test]
    fn table_keeps_header_and_container_rows() {
        let filtered = filter_table(TABLE, &[812, 813]).expect("filtered");

        let text = String::from_utf8(filtered).expect("utf-8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("UID"), "{text}");
        assert!(lines[1].contains("sleep 100"), "{text}");
        assert!(lines[2].contains("sh -c x"), "{text}");
    }

    #[test]
    fn table_pid_column_found_in_busybox_layout() {
        let table = "PID   USER     TIME  COMMAND\n    1 root      0:01 init\n   42 root      0:00 sleep 5\n";

        let filtered = filter_table(table, &[42]).expect("filtered");

        let text = String::from_utf8(filtered).expect("utf-8");
        assert!(text.contains("sleep 5"), "{text}");
        assert!(!text.contains("init"), "{text}");
    }

    #[test]
    fn table_without_pid_column_rejected() {
        let error = filter_table("USER COMMAND\nroot init\n", &[1]).expect_err("no PID column");

        assert!(error.contains("no PID column"), "{error}");
    }

    #[test]
    fn pids_from_every_hierarchy_merged() {
        let dir = tempfile::tempdir().expect("create temporary directory");
        let first = dir.path().join("memory");
        let second = dir.path().join("pids");
        std::fs::create_dir_all(&first).unwrap();
        std::fs::create_dir_all(&second).unwrap();
        std::fs::write(first.join("cgroup.procs"), "12\n7\n").unwrap();
        std::fs::write(second.join("cgroup.procs"), "7\n").unwrap();

        let pids = container_pids("c1", &[first, second]).expect("pids");

        assert_eq!(pids, [7, 12]);
    }

    #[test]
    fn unreadable_cgroup_reported() {
        let dir = tempfile::tempdir().expect("create temporary directory");

        let error = container_pids("c1", &[dir.path().join("missing")]).expect_err("no procs");

        assert!(error.to_string().contains("cgroup.procs"), "{error}");
    }
}
