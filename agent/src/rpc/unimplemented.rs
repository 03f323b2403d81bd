//! Builds the `AgentService` implementation, in which every method the agent does
//! not serve returns UNIMPLEMENTED with the method's name.
//!
//! The generated trait's default methods return NOT_FOUND with a generic text, which
//! a shim cannot tell apart from a missing container, so each one is overridden.
//! The whole impl block comes from one macro because `#[async_trait]` must see the
//! expanded methods.

/// Expands to `#[async_trait] impl AgentService for Service`, with the `served`
/// methods as written and one UNIMPLEMENTED method per `unimplemented` line.
#[macro_export]
macro_rules! agent_service_impl {
    (
        served { $($served:item)* }
        unimplemented { $($method:ident($request:ty) -> $response:ty = $name:literal;)* }
    ) => {
        #[async_trait::async_trait]
        impl protocols::agent_ttrpc::AgentService for Service {
            $($served)*

            $(
                async fn $method(
                    &self,
                    _ctx: &ttrpc::r#async::TtrpcContext,
                    _req: $request,
                ) -> ttrpc::Result<$response> {
                    self.serve($name, RequestIds::none(), |_agent, _logger| async {
                        Err(AgentError::Unimplemented { method: $name })
                    })
                    .await
                }
            )*
        }
    };
}
