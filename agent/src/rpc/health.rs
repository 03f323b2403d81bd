//! `grpc.Health`: liveness and version checks.

use protocols::health::{
    health_check_response::ServingStatus, CheckRequest, HealthCheckResponse, VersionCheckResponse,
};
use ttrpc::r#async::TtrpcContext;

/// Version of the Kata agent API this agent speaks, sent as `grpc_version`.
pub const API_VERSION: &str = "0.0.1";

/// The `grpc.Health` implementation.
pub struct HealthService;

#[async_trait::async_trait]
impl protocols::health_ttrpc::Health for HealthService {
    async fn check(
        &self,
        _ctx: &TtrpcContext,
        _req: CheckRequest,
    ) -> ttrpc::Result<HealthCheckResponse> {
        let mut response = HealthCheckResponse::new();
        response.status = ServingStatus::SERVING.into();
        Ok(response)
    }

    async fn version(
        &self,
        _ctx: &TtrpcContext,
        _req: CheckRequest,
    ) -> ttrpc::Result<VersionCheckResponse> {
        let mut response = VersionCheckResponse::new();
        response.agent_version = env!("CARGO_PKG_VERSION").to_string();
        response.grpc_version = API_VERSION.to_string();
        Ok(response)
    }
}
