//! Sends the requests a Kata shim sends, loaded from `shared/cases/kata-requests`, to
//! the real agent binary.
//!
//! CreateSandbox requests must succeed, except those that name kernel modules, which an
//! agent started with `--isolate` rejects. CreateContainer requests run with their guest
//! paths moved under the test's run directory. Each must either succeed or fail with
//! INVALID_ARGUMENT or UNIMPLEMENTED, and must leave no bundle, mount or cgroup behind.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::{busybox_rootfs, context, mounts_under, RunningAgent};
use protocols::agent;
use ttrpc::Code;

/// Directory of the request cases, beside the repository checkout.
fn cases_dir() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    for candidate in [
        manifest.join("../../shared/cases/kata-requests"),
        manifest.join("../shared/cases/kata-requests"),
    ] {
        if candidate.is_dir() {
            return candidate;
        }
    }
    panic!(
        "kata-requests cases not found next to {}",
        manifest.display()
    );
}

fn cases(prefix: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(cases_dir())
        .expect("read cases directory")
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| {
            path.file_name()
                .and_then(|name| name.to_str())
                .is_some_and(|name| name.starts_with(prefix) && name.ends_with(".json"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no {prefix} cases");
    files
}

/// Returns every directory under the cgroup mounts, four levels deep.
fn cgroup_tree() -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    let mut pending = vec![(PathBuf::from("/sys/fs/cgroup"), 0)];

    while let Some((dir, depth)) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            if entry.file_type().map(|kind| kind.is_dir()).unwrap_or(false) {
                found.insert(entry.path());
                if depth < 4 {
                    pending.push((entry.path(), depth + 1));
                }
            }
        }
    }

    found
}

fn entries(dir: &Path) -> BTreeSet<PathBuf> {
    let mut found = BTreeSet::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(list) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in list.flatten() {
            // The busybox root file systems are the test's own and stay.
            if entry.file_name() == "rootfs" {
                found.insert(entry.path());
                continue;
            }
            if entry.file_type().map(|kind| kind.is_dir()).unwrap_or(false) {
                pending.push(entry.path());
            }
            found.insert(entry.path());
        }
    }
    found
}

/// Writes the request's program (`/pause`, `/usr/bin/entrypoint.sh`, ...) into the
/// busybox root file system as a shell script that sleeps, so the request can succeed.
fn provide_programs(rootfs: &Path, request: &agent::CreateContainerRequest) {
    use std::os::unix::fs::PermissionsExt;

    let Some(program) = request.OCI.Process.Args.first() else {
        return;
    };
    let path = rootfs.join(program.trim_start_matches('/'));
    if path.exists() || !program.starts_with('/') {
        return;
    }

    std::fs::create_dir_all(path.parent().expect("program directory"))
        .expect("create program directory");
    std::fs::write(&path, "#!/bin/sh\nexec sleep 1000\n").expect("write program");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
        .expect("make program executable");
}

/// Creates the bind mount sources under the run directory that, in a real guest, the
/// shared directory from the host (virtio-fs) and the sandbox's storages provide.
fn provide_bind_sources(request: &agent::CreateContainerRequest, run_dir: &Path) {
    for mount in &request.OCI.Mounts {
        let source = Path::new(&mount.source);
        if mount.type_ == "bind" && source.starts_with(run_dir) && !source.exists() {
            std::fs::create_dir_all(source).expect("create bind source");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kata_sandbox_requests_succeed() {
    let agent = RunningAgent::start();
    let client = agent.client().await;

    for path in cases("CreateSandboxRequest-") {
        let json = std::fs::read_to_string(&path).expect("read case");
        let mut request: agent::CreateSandboxRequest = protocols::parse_request(&json)
            .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        if request.sandbox_id.is_empty() {
            request.sandbox_id = "kata-sandbox".to_string();
        }

        let name = path.display();
        let result = client.create_sandbox(context(), &request).await;

        // An isolated agent must not load modules into the machine's kernel, so a
        // request that names one fails, naming it, and changes nothing.
        if let Some(module) = request.kernel_modules.first() {
            let Err(ttrpc::Error::RpcStatus(status)) = result else {
                panic!("{name}: kernel module request succeeded: {result:?}");
            };
            assert!(
                status.message().contains(&module.name),
                "{name}: {}",
                status.message()
            );
            assert_eq!(
                mounts_under(&agent.run_dir),
                Vec::<String>::new(),
                "{name}: mounts left"
            );
            continue;
        }

        result.unwrap_or_else(|error| panic!("{name}: {error:?}"));
        client
            .destroy_sandbox(context(), &agent::DestroySandboxRequest::new())
            .await
            .unwrap_or_else(|error| panic!("destroy after {name}: {error:?}"));
        assert_eq!(
            mounts_under(&agent.run_dir),
            Vec::<String>::new(),
            "{name}: mounts left"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kata_container_requests_fail_cleanly_or_succeed() {
    let agent = RunningAgent::start();
    let client = agent.client().await;
    let health = agent.health().await;
    let run_dir = agent.run_dir.display().to_string();

    client
        .create_sandbox(
            context(),
            &agent::CreateSandboxRequest {
                sandbox_id: "kata-cases".to_string(),
                ..Default::default()
            },
        )
        .await
        .expect("create sandbox");

    let mut problems = Vec::new();
    for path in cases("CreateContainerRequest-") {
        let name = path
            .file_stem()
            .and_then(|stem| stem.to_str())
            .expect("file name");
        let json = std::fs::read_to_string(&path)
            .expect("read case")
            .replace("/run/kata-containers", &run_dir);
        let mut request: agent::CreateContainerRequest =
            protocols::parse_request(&json).unwrap_or_else(|error| panic!("{name}: {error}"));
        if request.container_id.is_empty() {
            request.container_id = name
                .replace("CreateContainerRequest-", "kata-")
                .replace('_', "-");
        }
        let id = request.container_id.clone();

        let rootfs = PathBuf::from(request.OCI.Root.Path.clone());
        busybox_rootfs(&rootfs);
        provide_programs(&rootfs, &request);
        provide_bind_sources(&request, &agent.run_dir);
        let cgroups_before = cgroup_tree();
        let run_before = entries(&agent.run_dir);
        let mounts_before = mounts_under(&agent.run_dir);

        let result = client.create_container(context(), &request).await;

        match result {
            Ok(_) => {
                client
                    .remove_container(
                        context(),
                        &agent::RemoveContainerRequest {
                            container_id: id.clone(),
                            timeout: 10,
                            ..Default::default()
                        },
                    )
                    .await
                    .unwrap_or_else(|error| panic!("{name}: remove: {error:?}"));
            }
            Err(ttrpc::Error::RpcStatus(status)) => {
                let code = status.code();
                eprintln!("{name}: {code:?}: {}", status.message());
                if code != Code::INVALID_ARGUMENT && code != Code::UNIMPLEMENTED {
                    problems.push(format!("{name}: {code:?}: {}", status.message()));
                }
                assert!(!status.message().is_empty(), "{name}: empty message");
            }
            Err(other) => panic!("{name}: transport error {other:?}"),
        }

        let new_cgroups: Vec<_> = cgroup_tree()
            .difference(&cgroups_before)
            .filter(|dir| {
                let text = dir.display().to_string();
                text.contains(&id) || text.contains("kubepods")
            })
            .cloned()
            .collect();
        assert!(
            new_cgroups.is_empty(),
            "{name}: cgroups left: {new_cgroups:?}"
        );
        let run_after = entries(&agent.run_dir);
        let new_files: Vec<_> = run_after.difference(&run_before).collect();
        assert!(new_files.is_empty(), "{name}: files left: {new_files:?}");
        assert_eq!(
            mounts_under(&agent.run_dir),
            mounts_before,
            "{name}: mounts left"
        );

        health
            .check(context(), &protocols::health::CheckRequest::new())
            .await
            .unwrap_or_else(|error| panic!("{name}: agent stopped serving: {error:?}"));
    }

    assert!(
        problems.is_empty(),
        "requests failed with other codes:\n{}",
        problems.join("\n")
    );
}
