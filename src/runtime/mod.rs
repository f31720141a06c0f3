//! Runs the pipelines of a config until they finish or ferry is told to stop.

pub(crate) mod in_flight;
pub(crate) mod pipeline;
pub(crate) mod router;
pub mod shutdown;
pub(crate) mod sink_task;
pub(crate) mod stats;

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::error;

use crate::config::Config;
use crate::error::{ConnectorError, MessageError};
use crate::observe::Health;
pub use stats::Totals;

/// How a pipeline failed.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("pipeline `{pipeline}`: cannot open {role}: {source}")]
    Open {
        pipeline: String,
        role: String,
        #[source]
        source: Box<ConnectorError>,
    },
    #[error("pipeline `{pipeline}`: source failed: {source}")]
    Source {
        pipeline: String,
        #[source]
        source: Box<ConnectorError>,
    },
    #[error("pipeline `{pipeline}`: {sink} failed: {source}")]
    Sink {
        pipeline: String,
        sink: String,
        #[source]
        source: Box<ConnectorError>,
    },
    #[error(
        "pipeline `{pipeline}`: {sink} cannot take the message from {origin}: {error}; \
         no `dead_letter` sink is configured, so the pipeline stopped rather than drop it \
         (add a [pipeline.dead_letter] sink to set such messages aside and keep going)"
    )]
    Undeliverable {
        pipeline: String,
        sink: String,
        origin: String,
        error: Box<MessageError>,
    },
    /// This part stopped because another part of the pipeline failed.
    #[error("stopped because another part of the pipeline failed")]
    Stopped,
    #[error("internal error: {0}")]
    Bug(String),
}

/// Settings of a run that do not belong to the config file.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// After a stop is requested, how long sinks may take to write what is
    /// in flight before it is abandoned (and later read again).
    pub drain_timeout: Duration,
    /// How often each pipeline logs its progress.
    pub progress_every: Duration,
    /// Where each source and sink reports its state (for `/ready`).
    pub health: Arc<Health>,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            drain_timeout: Duration::from_secs(30),
            progress_every: Duration::from_secs(10),
            health: Health::new(),
        }
    }
}

/// Runs every pipeline of `config` concurrently. When one fails, the
/// others are stopped gracefully and the failures are returned.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    options: RunOptions,
) -> Result<Vec<(String, Totals)>, Vec<PipelineError>> {
    let mut handles = Vec::new();
    let routers: Vec<router::Router> = config
        .pipelines
        .iter()
        .map(|p| router::Router::new(&config, p))
        .collect();
    for (p, router) in config.pipelines.into_iter().zip(routers) {
        let name = p.name.to_string();
        let shutdown = shutdown.clone();
        let options = options.clone();
        handles.push((
            name,
            tokio::spawn(async move {
                let result = pipeline::run_pipeline(p, router, shutdown.clone(), options).await;
                if let Err(e) = &result {
                    error!("{e}");
                    shutdown.cancel();
                }
                result
            }),
        ));
    }
    let mut totals = Vec::new();
    let mut errors = Vec::new();
    for (name, handle) in handles {
        match handle.await {
            Ok(Ok(t)) => totals.push((name, t)),
            Ok(Err(e)) => errors.push(e),
            Err(e) => errors.push(PipelineError::Bug(format!(
                "pipeline `{name}` panicked: {e}"
            ))),
        }
    }
    if errors.is_empty() {
        Ok(totals)
    } else {
        Err(errors)
    }
}
