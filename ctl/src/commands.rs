//! Subcommands that map to one RPC each. They print the response on stdout.

use std::time::Duration;

use protocols::agent::{CreateSandboxRequest, GuestDetailsResponse};
use protocols::health::health_check_response::ServingStatus;

use crate::bundle::{generate_id, load_bundle};
use crate::cli::{CreateArgs, CreateSandboxArgs, KillArgs, RemoveArgs};
use crate::client::Agent;
use crate::error::Result;
use crate::run::create_container_request;
use crate::signals::parse_signal;

pub async fn check(agent: &Agent) -> Result<()> {
    let response = agent.check().await?;

    let status = match response.status.enum_value() {
        Ok(ServingStatus::SERVING) => "SERVING".to_string(),
        Ok(ServingStatus::NOT_SERVING) => "NOT_SERVING".to_string(),
        Ok(ServingStatus::UNKNOWN) => "UNKNOWN".to_string(),
        Err(number) => format!("unknown status {number}"),
    };
    println!("{status}");
    Ok(())
}

pub async fn version(agent: &Agent) -> Result<()> {
    let response = agent.version().await?;

    println!("agent version: {}", response.agent_version);
    println!("grpc version: {}", response.grpc_version);
    Ok(())
}

pub async fn create_sandbox(agent: &Agent, args: CreateSandboxArgs) -> Result<()> {
    let mut request = CreateSandboxRequest::new();
    request.sandbox_id = args.id.unwrap_or_else(generate_id);
    request.hostname = args.hostname;

    agent.create_sandbox(&request).await?;
    println!("{}", request.sandbox_id);
    Ok(())
}

pub async fn destroy_sandbox(agent: &Agent) -> Result<()> {
    agent.destroy_sandbox().await
}

pub async fn create(agent: &Agent, args: CreateArgs) -> Result<()> {
    let spec = load_bundle(&args.bundle, &args.args)?;
    let request = create_container_request(&args.id, &spec);

    agent.create_container(&request).await?;
    println!("{}", args.id);
    Ok(())
}

pub async fn start(agent: &Agent, container_id: &str) -> Result<()> {
    agent.start_container(container_id).await
}

/// Prints the exit status of the container's main process. The command itself exits
/// with 0 when the RPC succeeds, whatever the status.
pub async fn wait(agent: &Agent, container_id: &str) -> Result<()> {
    let status = agent.wait_process(container_id, container_id).await?;

    println!("{status}");
    Ok(())
}

pub async fn kill(agent: &Agent, args: KillArgs) -> Result<()> {
    let signal = parse_signal(&args.signal)?;
    // An empty exec id addresses every process of the container.
    let exec_id = if args.all { "" } else { args.id.as_str() };

    agent.signal_process(&args.id, exec_id, signal).await
}

pub async fn remove(agent: &Agent, args: RemoveArgs) -> Result<()> {
    let remove_timeout = Duration::from_secs(u64::from(args.remove_timeout));

    agent.remove_container(&args.id, remove_timeout).await
}

pub async fn guest_details(agent: &Agent) -> Result<()> {
    let response = agent.guest_details().await?;

    print!("{}", format_guest_details(&response));
    Ok(())
}

fn format_guest_details(response: &GuestDetailsResponse) -> String {
    let mut text = format!(
        "memory block size: {} bytes\nmemory hotplug probe: {}\n",
        response.mem_block_size_bytes, response.support_mem_hotplug_probe
    );

    if let Some(details) = response.agent_details.as_ref() {
        text += &format!("agent version: {}\n", details.version);
        text += &format!("agent is init: {}\n", details.init_daemon);
        text += &format!("device handlers: {}\n", details.device_handlers.join(", "));
        text += &format!(
            "storage handlers: {}\n",
            details.storage_handlers.join(", ")
        );
        text += &format!("seccomp supported: {}\n", details.supports_seccomp);
        text += &format!("extra features: {}\n", details.extra_features.join(", "));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use protobuf::MessageField;
    use protocols::agent::AgentDetails;

    #[test]
    fn guest_details_lists_agent_details() {
        let mut details = AgentDetails::new();
        details.version = "0.1.0".to_string();
        details.device_handlers = vec!["blk".to_string(), "scsi".to_string()];
        let mut response = GuestDetailsResponse::new();
        response.mem_block_size_bytes = 134217728;
        response.agent_details = MessageField::some(details);

        let text = format_guest_details(&response);

        assert!(
            text.contains("memory block size: 134217728 bytes"),
            "{text}"
        );
        assert!(text.contains("agent version: 0.1.0"), "{text}");
        assert!(text.contains("device handlers: blk, scsi"), "{text}");
    }

    #[test]
    fn guest_details_without_agent_details() {
        let response = GuestDetailsResponse::new();

        let text = format_guest_details(&response);

        assert!(text.contains("memory hotplug probe: false"), "{text}");
        assert!(!text.contains("agent version"), "{text}");
    }
}
