//! Binds the ttRPC server, serves until SIGTERM or SIGINT, then shuts down cleanly.
//!
//! Shutdown order: stop accepting connections and close the open ones, kill and
//! reap every container and run its undos, undo the sandbox pipeline, and remove
//! the socket file, so a stopped agent leaves nothing of its own behind.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use slog::{error, info, warn, Logger};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Mutex;

use crate::config::Config;
use crate::modules::{ModulesDisabled, ReapedModprobe};
use crate::reaper::{Reaper, ReaperError};
use crate::rpc::{self, Agent, HealthService, Service};
use crate::sandbox::Sandbox;

/// Errors that stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Reaper(#[from] ReaperError),

    #[error("install {signal} handler: {source}")]
    Signal {
        signal: &'static str,
        #[source]
        source: std::io::Error,
    },

    #[error("prepare socket path {path}: {source}")]
    SocketPath {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("listen on {address}: {source}")]
    Bind {
        address: String,
        #[source]
        source: ttrpc::Error,
    },

    #[error("start serving on {address}: {source}")]
    Start {
        address: String,
        #[source]
        source: ttrpc::Error,
    },
}

/// Serves requests until SIGTERM or SIGINT, then tears everything down.
pub async fn run(config: Config, logger: Logger) -> Result<(), ServerError> {
    let mut sigterm = signal(SignalKind::terminate()).map_err(|source| ServerError::Signal {
        signal: "SIGTERM",
        source,
    })?;
    let mut sigint = signal(SignalKind::interrupt()).map_err(|source| ServerError::Signal {
        signal: "SIGINT",
        source,
    })?;

    let reaper = Reaper::start(logger.clone())?;
    let agent = Arc::new(new_agent(&config, reaper, &logger));
    info!(logger, "agent configured";
        "isolate" => config.isolate,
        "run_dir" => %config.guest_paths.run_dir.display(),
        "resolv_conf" => %config.resolv_conf.display(),
        "device_timeout_s" => config.device_timeout.as_secs());
    for param in &config.ignored_params {
        warn!(logger, "kernel parameter not supported, ignored"; "parameter" => param);
    }

    let socket_path = socket_file(&config.server_addr);
    if let Some(path) = &socket_path {
        prepare_socket_path(path)?;
    }

    let address = config.server_addr.to_ttrpc_string();
    let service = Service::new(agent.clone());
    let mut server = ttrpc::r#async::Server::new()
        .bind(&address)
        .map_err(|source| ServerError::Bind {
            address: config.server_addr_text.clone(),
            source,
        })?
        .register_service(protocols::agent_ttrpc::create_agent_service(Arc::new(
            service,
        )))
        .register_service(protocols::health_ttrpc::create_health(Arc::new(
            HealthService,
        )));
    server.start().await.map_err(|source| ServerError::Start {
        address: config.server_addr_text.clone(),
        source,
    })?;
    info!(logger, "agent serving"; "address" => &config.server_addr_text);

    let received = tokio::select! {
        _ = sigterm.recv() => "SIGTERM",
        _ = sigint.recv() => "SIGINT",
    };
    info!(logger, "shutting down"; "signal" => received);

    if let Err(failure) = server.shutdown().await {
        error!(logger, "stop ttRPC server failed"; "error" => %failure);
    }

    if let Err(failure) = rpc::tear_down_everything(&agent, &logger).await {
        error!(logger, "teardown at shutdown failed"; "error" => %failure);
    }

    if let Some(path) = &socket_path {
        if let Err(failure) = std::fs::remove_file(path) {
            error!(logger, "remove socket file failed"; "path" => %path.display(), "error" => %failure);
        }
    }

    info!(logger, "agent stopped");
    Ok(())
}

fn new_agent(config: &Config, reaper: Reaper, logger: &Logger) -> Agent {
    let init = rustjail::InitCommand {
        program: PathBuf::from("/proc/self/exe"),
        args: vec!["init".into()],
    };
    // Sealing the init copy at start-up keeps the agent's descriptor count constant from
    // the first request on. A failure here is not fatal, because CreateContainer retries
    // the copy and reports the error for that container.
    if let Err(error) = init.prepare() {
        slog::warn!(logger, "sealed copy of the init program not made"; "error" => %error);
    }
    let shared = rpc::shared_sandbox(&config.guest_paths, &init, "", "", logger);

    let module_loader: Arc<dyn stages::ModuleLoader> = if config.isolate {
        Arc::new(ModulesDisabled)
    } else {
        Arc::new(ReapedModprobe::new(
            reaper.clone(),
            tokio::runtime::Handle::current(),
        ))
    };
    let sandbox_options = stages::SandboxOptions {
        resolv_conf: config.resolv_conf.clone(),
        module_loader,
        device_timeout: config.device_timeout,
    };
    let container_options = stages::ContainerOptions {
        device_timeout: config.device_timeout,
    };

    Agent {
        sandbox: Mutex::new(Sandbox::new(shared)),
        reaper,
        paths: config.guest_paths.clone(),
        init,
        logger: logger.clone(),
        container_pipeline: stages::Pipeline::new(stages::container_stages(&container_options)),
        sandbox_pipeline: stages::Pipeline::new(stages::sandbox_stages(&sandbox_options)),
    }
}

/// Returns the file a unix path address creates.
fn socket_file(address: &protocols::Address) -> Option<PathBuf> {
    match address {
        protocols::Address::Unix(path) => Some(path.clone()),
        _ => None,
    }
}

/// Creates the socket's parent directory and removes a socket left by an earlier run.
/// Anything at the path that is not a socket is kept, and bind then reports it.
fn prepare_socket_path(path: &Path) -> Result<(), ServerError> {
    let failed = |source| ServerError::SocketPath {
        path: path.to_path_buf(),
        source,
    };

    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(failed)?;
    }

    match std::fs::symlink_metadata(path) {
        Ok(metadata) if std::os::unix::fs::FileTypeExt::is_socket(&metadata.file_type()) => {
            std::fs::remove_file(path).map_err(failed)
        }
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(error) => Err(failed(error)),
    }
}
