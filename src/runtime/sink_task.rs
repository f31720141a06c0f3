//! The loop that feeds one sink: batch, prepare, write, retry, confirm.
//!
//! Batches form by themselves: the task takes whatever is waiting in its
//! bounded channel (up to the sink's batch size) after the first message
//! arrives, so a busy pipeline writes large batches and a quiet one writes
//! each message at once.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::PipelineError;
use super::backoff::Backoff;
use super::stats::Stats;
use crate::ack::{Ack, Outcome};
use crate::connectors::Sink;
use crate::error::MessageError;
use crate::message::Message;

/// A message on its way to one sink, with that sink's share of the ack.
#[derive(Debug)]
pub struct Delivery {
    pub message: Arc<Message>,
    pub ack: Ack,
}

/// Headers ferry adds to a dead-lettered message.
pub mod dead_letter_headers {
    pub const ERROR: &str = "ferry.error";
    pub const PIPELINE: &str = "ferry.pipeline";
    pub const SINK: &str = "ferry.sink";
    pub const ORIGIN: &str = "ferry.origin";
}

/// Where a message goes that cannot be delivered.
#[derive(Clone, Debug)]
pub enum Rejections {
    /// To the dead-letter sink, with the reason in headers.
    DeadLetterSink(mpsc::Sender<Delivery>),
    /// Back to the source, which has its own dead-lettering (AMQP).
    Source,
    /// Nowhere: the pipeline stops rather than drop it.
    Stop,
}

impl Rejections {
    /// Sets `delivery` aside because of `error`, raised at `stage` (a
    /// sink's name, or "source").
    pub async fn reject(
        &self,
        pipeline: &str,
        stage: &str,
        delivery: Delivery,
        error: MessageError,
        stats: &Stats,
    ) -> Result<(), PipelineError> {
        let origin = delivery.message.describe_origin();
        match self {
            Rejections::Stop => {
                error!(pipeline, stage, %origin, "{error}");
                Err(PipelineError::Undeliverable {
                    pipeline: pipeline.to_owned(),
                    sink: stage.to_owned(),
                    origin,
                    error: Box::new(error),
                })
            }
            Rejections::Source => {
                warn!(pipeline, stage, %origin, "{error}; rejected to the source");
                delivery.ack.complete(Outcome::Rejected);
                Ok(())
            }
            Rejections::DeadLetterSink(dead_letter) => {
                warn!(pipeline, stage, %origin, "{error}; sent to the dead-letter sink");
                let mut message = Message::clone(&delivery.message);
                use dead_letter_headers as h;
                message
                    .headers
                    .set(h::ERROR, Bytes::from(error.to_string()));
                message
                    .headers
                    .set(h::PIPELINE, Bytes::from(pipeline.to_owned()));
                message.headers.set(h::SINK, Bytes::from(stage.to_owned()));
                message.headers.set(h::ORIGIN, Bytes::from(origin));
                Stats::add(&stats.dead_lettered, 1);
                dead_letter
                    .send(Delivery {
                        message: Arc::new(message),
                        ack: delivery.ack,
                    })
                    .await
                    .map_err(|_| PipelineError::Stopped)
            }
        }
    }
}

/// Everything a sink task needs besides the sink.
pub struct SinkTask {
    pub pipeline: String,
    pub sink_name: String,
    pub batch_size: usize,
    pub stats: Arc<Stats>,
    /// Where rejected messages go.
    pub rejections: Rejections,
    /// Cancelled when this task fails, so that the source stops reading.
    pub pipeline_stop: CancellationToken,
}

const RETRY_INITIAL: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

impl SinkTask {
    pub async fn run<S: Sink>(
        self,
        mut sink: S,
        mut rx: mpsc::Receiver<Delivery>,
    ) -> Result<(), PipelineError> {
        let result = self.feed(&mut sink, &mut rx).await;
        if result.is_err() {
            self.pipeline_stop.cancel();
        }
        result
    }

    async fn reject(&self, delivery: Delivery, e: MessageError) -> Result<(), PipelineError> {
        self.rejections
            .reject(&self.pipeline, &self.sink_name, delivery, e, &self.stats)
            .await
    }
    async fn feed<S: Sink>(
        &self,
        sink: &mut S,
        rx: &mut mpsc::Receiver<Delivery>,
    ) -> Result<(), PipelineError> {
        let mut incoming = Vec::with_capacity(self.batch_size);
        let mut prepared = Vec::with_capacity(self.batch_size);
        let mut pending = Vec::with_capacity(self.batch_size);
        loop {
            if rx.recv_many(&mut incoming, self.batch_size).await == 0 {
                return Ok(());
            }
            for delivery in incoming.drain(..) {
                match sink.prepare(&delivery.message) {
                    Ok(p) => {
                        prepared.push(p);
                        pending.push(delivery);
                    }
                    Err(e) => self.reject(delivery, e).await?,
                }
            }
            if prepared.is_empty() {
                continue;
            }
            let results = self.write_until_done(sink, &prepared).await?;
            prepared.clear();
            if results.len() != pending.len() {
                return Err(PipelineError::Bug(format!(
                    "sink `{}` returned {} results for {} writes",
                    self.sink_name,
                    results.len(),
                    pending.len()
                )));
            }
            for (delivery, result) in pending.drain(..).zip(results) {
                match result {
                    Ok(()) => delivery.ack.delivered(),
                    Err(e) => self.reject(delivery, e).await?,
                }
            }
        }
    }

    /// Writes a batch, retrying with backoff while the error is retryable
    /// (broker down, timeout). Gives up only on a fatal error, or when the
    /// runtime aborts the task at the end of a shutdown's drain period.
    async fn write_until_done<S: Sink>(
        &self,
        sink: &mut S,
        batch: &[S::Prepared],
    ) -> Result<Vec<Result<(), MessageError>>, PipelineError> {
        let mut backoff = Backoff::new(RETRY_INITIAL, RETRY_MAX);
        loop {
            match sink.write(batch).await {
                Ok(results) => {
                    if backoff.attempts() > 0 {
                        warn!(pipeline = %self.pipeline, sink = %self.sink_name,
                            attempts = backoff.attempts() + 1, "write succeeded after retries");
                    }
                    return Ok(results);
                }
                Err(e) if e.is_retryable() => {
                    let delay = backoff.next_delay();
                    warn!(pipeline = %self.pipeline, sink = %self.sink_name,
                        attempt = backoff.attempts(), "{e}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    return Err(PipelineError::Sink {
                        pipeline: self.pipeline.clone(),
                        sink: self.sink_name.clone(),
                        source: Box::new(e),
                    });
                }
            }
        }
    }
}
