//! A container in a user namespace of its own, created through the agent from the ID
//! mappings of a Kata `CreateContainer` request. Needs root.

mod common;

use std::os::unix::fs::{lchown, PermissionsExt};
use std::path::Path;

use common::{
    busybox_rootfs, cgroup_dirs_named, code_of, container_request, context, RunningAgent,
};
use protocols::agent;
use protocols::oci::LinuxIDMapping;
use ttrpc::Code;

/// First host ID of the range mapped into the container.
const HOST_BASE: u32 = 300_000;
const RANGE: u32 = 65_536;

/// Makes `rootfs` belong to the mapped root, as an image unpacked for a user namespace
/// does, and lets the mapped root reach it through the agent's directory.
fn map_rootfs(agent_dir: &Path, rootfs: &Path) {
    std::fs::set_permissions(agent_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    chown_tree(rootfs);
}

fn chown_tree(path: &Path) {
    lchown(path, Some(HOST_BASE), Some(HOST_BASE)).unwrap();
    if std::fs::symlink_metadata(path).unwrap().is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path());
        }
    }
}

/// Adds a new user namespace with container IDs from `container_id` mapped to
/// HOST_BASE.
fn add_user_namespace(request: &mut agent::CreateContainerRequest, container_id: u32) {
    let linux = request
        .OCI
        .mut_or_insert_default()
        .Linux
        .mut_or_insert_default();
    linux.Namespaces.push(protocols::oci::LinuxNamespace {
        Type: "user".to_string(),
        ..Default::default()
    });
    let mapping = LinuxIDMapping {
        ContainerID: container_id,
        HostID: HOST_BASE,
        Size: RANGE,
        ..Default::default()
    };
    linux.UIDMappings = vec![mapping.clone()];
    linux.GIDMappings = vec![mapping];
}

async fn read_init_stdout(client: &protocols::agent_ttrpc::AgentServiceClient, id: &str) -> String {
    let mut output = Vec::new();
    loop {
        let request = agent::ReadStreamRequest {
            container_id: id.to_string(),
            len: 4096,
            ..Default::default()
        };
        let response = client
            .read_stdout(context(), &request)
            .await
            .expect("read stdout");
        if response.data.is_empty() {
            return String::from_utf8_lossy(&output).into_owned();
        }
        output.extend_from_slice(&response.data);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_id_mappings_create_user_namespace() {
    let agent = RunningAgent::start();
    let rootfs = agent.dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    map_rootfs(agent.dir.path(), &rootfs);
    let client = agent.client().await;
    let id = format!("userns-{}", std::process::id());
    let mut request = container_request(
        &id,
        &rootfs,
        &[
            "sh",
            "-c",
            "cat /proc/self/uid_map /proc/self/gid_map; touch /tmp/created",
        ],
    );
    add_user_namespace(&mut request, 0);

    client
        .create_container(context(), &request)
        .await
        .expect("create container");
    let start = agent::StartContainerRequest {
        container_id: id.clone(),
        ..Default::default()
    };
    client
        .start_container(context(), &start)
        .await
        .expect("start container");
    let stdout = read_init_stdout(&client, &id).await;
    let wait = agent::WaitProcessRequest {
        container_id: id.clone(),
        ..Default::default()
    };
    let status = client
        .wait_process(context(), &wait)
        .await
        .expect("wait process")
        .status;
    let remove = agent::RemoveContainerRequest {
        container_id: id.clone(),
        timeout: 10,
        ..Default::default()
    };
    client
        .remove_container(context(), &remove)
        .await
        .expect("remove container");

    assert_eq!(status, 0, "{stdout}");
    let lines: Vec<String> = stdout
        .lines()
        .map(|line| line.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert_eq!(
        lines,
        [
            format!("0 {HOST_BASE} {RANGE}"),
            format!("0 {HOST_BASE} {RANGE}")
        ]
    );
    let created = std::fs::metadata(rootfs.join("tmp/created")).unwrap();
    assert_eq!(std::os::unix::fs::MetadataExt::uid(&created), HOST_BASE);
    assert_eq!(cgroup_dirs_named(&id), Vec::<std::path::PathBuf>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mapping_without_container_root_is_invalid_argument() {
    let agent = RunningAgent::start();
    let rootfs = agent.dir.path().join("rootfs");
    busybox_rootfs(&rootfs);
    let client = agent.client().await;
    let id = format!("userns-bad-{}", std::process::id());
    let mut request = container_request(&id, &rootfs, &["true"]);
    add_user_namespace(&mut request, 1);

    let (code, message) = code_of(client.create_container(context(), &request).await);

    assert_eq!(code, Code::INVALID_ARGUMENT, "{message}");
    assert!(message.contains("linux.uidMappings"), "{message}");
    assert!(message.contains("does not map ID 0"), "{message}");
    assert_eq!(cgroup_dirs_named(&id), Vec::<std::path::PathBuf>::new());
    let health = agent.health().await;
    health
        .check(context(), &protocols::health::CheckRequest::default())
        .await
        .expect("the agent keeps serving");
}
