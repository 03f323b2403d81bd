//! Conversion of request messages into the plain types the stages take.

use protocols::agent;

use crate::error::AgentError;

/// Converts a CreateContainer request, checking the parts every container needs.
pub fn container_request(
    request: &agent::CreateContainerRequest,
) -> Result<stages::ContainerRequest, AgentError> {
    let container = request.container_id.clone();

    let Some(message) = request.OCI.as_ref() else {
        return Err(AgentError::MissingSpec { container });
    };

    if message.Process.is_none() {
        return Err(AgentError::MissingProcess { container });
    }

    let spec = protocols::spec_to_oci(message).map_err(|error| AgentError::InvalidSpec {
        container: container.clone(),
        reason: error.to_string(),
    })?;

    if spec.process().is_none() {
        return Err(AgentError::MissingProcess { container });
    }

    Ok(stages::ContainerRequest {
        id: container,
        spec,
        storages: request.storages.iter().map(storage).collect(),
        devices: request.devices.iter().map(device).collect(),
    })
}

/// Converts a CreateSandbox request.
pub fn sandbox_request(request: &agent::CreateSandboxRequest) -> stages::SandboxRequest {
    stages::SandboxRequest {
        hostname: request.hostname.clone(),
        storages: request.storages.iter().map(storage).collect(),
        dns: request.dns.clone(),
        guest_hook_path: request.guest_hook_path.clone(),
        sandbox_pidns: request.sandbox_pidns,
        kernel_modules: request.kernel_modules.iter().map(kernel_module).collect(),
    }
}

/// Formats a module as the kernel-modules stage reads it: the name, then each parameter,
/// separated by spaces.
fn kernel_module(message: &agent::KernelModule) -> String {
    let mut words = vec![message.name.as_str()];
    words.extend(message.parameters.iter().map(String::as_str));
    words.join(" ")
}

fn storage(message: &agent::Storage) -> stages::Storage {
    stages::Storage {
        driver: message.driver.clone(),
        driver_options: message.driver_options.clone(),
        source: message.source.clone(),
        fstype: message.fstype.clone(),
        options: message.options.clone(),
        mount_point: message.mount_point.clone(),
        fs_group: message.fs_group.as_ref().map(|group| stages::FsGroup {
            group_id: group.group_id,
            change_policy_on_root_mismatch: group.group_change_policy.value()
                == protocols::types::FSGroupChangePolicy::OnRootMismatch as i32,
        }),
    }
}

fn device(message: &agent::Device) -> stages::Device {
    stages::Device {
        id: message.id.clone(),
        type_: message.type_.clone(),
        vm_path: message.vm_path.clone(),
        container_path: message.container_path.clone(),
        options: message.options.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_spec_is_invalid_argument() {
        let request = agent::CreateContainerRequest {
            container_id: "c1".to_string(),
            ..Default::default()
        };

        let error = container_request(&request).expect_err("no spec");

        assert_eq!(error.code(), ttrpc::Code::INVALID_ARGUMENT);
        assert!(error.to_string().contains("c1"), "{error}");
    }

    #[test]
    fn missing_process_is_invalid_argument() {
        let mut request = agent::CreateContainerRequest {
            container_id: "c2".to_string(),
            ..Default::default()
        };
        request.OCI = protobuf::MessageField::some(protocols::oci::Spec::default());

        let error = container_request(&request).expect_err("no process");

        assert_eq!(error.code(), ttrpc::Code::INVALID_ARGUMENT);
        assert!(error.to_string().contains("no process"), "{error}");
    }

    #[test]
    fn kernel_module_keeps_parameters() {
        let mut request = agent::CreateSandboxRequest::new();
        request.kernel_modules.push(agent::KernelModule {
            name: "nf_conntrack".to_string(),
            parameters: vec![
                "hashsize=4096".to_string(),
                "expect_hashsize=64".to_string(),
            ],
            ..Default::default()
        });

        let converted = sandbox_request(&request);

        assert_eq!(
            converted.kernel_modules,
            vec!["nf_conntrack hashsize=4096 expect_hashsize=64"]
        );
    }

    #[test]
    fn storage_fields_carry_over() {
        let mut message = agent::Storage {
            driver: "local".to_string(),
            driver_options: vec!["a=b".to_string()],
            source: "src".to_string(),
            fstype: "tmpfs".to_string(),
            options: vec!["mode=0777".to_string()],
            mount_point: "/run/x".to_string(),
            ..Default::default()
        };
        let mut group = agent::FSGroup {
            group_id: 7,
            ..Default::default()
        };
        group.group_change_policy = protocols::types::FSGroupChangePolicy::OnRootMismatch.into();
        message.fs_group = protobuf::MessageField::some(group);

        let converted = storage(&message);

        assert_eq!(converted.driver, "local");
        assert_eq!(converted.driver_options, vec!["a=b"]);
        assert_eq!(converted.source, "src");
        assert_eq!(converted.fstype, "tmpfs");
        assert_eq!(converted.options, vec!["mode=0777"]);
        assert_eq!(converted.mount_point, "/run/x");
        assert_eq!(
            converted.fs_group,
            Some(stages::FsGroup {
                group_id: 7,
                change_policy_on_root_mismatch: true
            })
        );
    }
}
