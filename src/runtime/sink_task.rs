//! The loop that feeds one sink: batch, prepare, write, retry, confirm.
//!
//! Batches form by themselves: the task takes whatever is waiting in its
//! bounded channel (up to the sink's batch size) after the first message
//! arrives, so a busy pipeline writes large batches and a quiet one writes
//! each message at once.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, warn};

use super::PipelineError;
use super::in_flight::{Confirmed, InFlight, Window};
use super::stats::{SinkStats, Stats};
use crate::ack::{Ack, Outcome};
use crate::backoff::Backoff;
use crate::config::pipeline::RetryConfig;
use crate::connectors::{Confirming, Sink};
use crate::error::{ConnectorError, MessageError};
use crate::message::Message;
use crate::observe::Probe;

/// A message on its way to one sink, with that sink's share of the ack.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub message: Arc<Message>,
    pub ack: Ack,
}

/// Headers ferry adds to a dead-lettered message.
pub(crate) mod dead_letter_headers {
    pub(crate) const ERROR: &str = "ferry.error";
    pub(crate) const PIPELINE: &str = "ferry.pipeline";
    pub(crate) const SINK: &str = "ferry.sink";
    /// Where the message was read (not to be confused with the
    /// loop-protection header `ferry.origin`, which names a deployment).
    pub(crate) const ORIGIN: &str = "ferry.source";
    /// How many times the sink tried to write it.
    pub(crate) const ATTEMPTS: &str = "ferry.attempts";
}

/// Bytes of the payload an error quotes.
const EXCERPT: usize = 80;

/// What names a message in an error, so that it can be found again: where
/// it was read, and what it carries (message id, key, the start of the
/// payload and its length). Where alone is not enough: an AMQP delivery
/// tag changes with every redelivery.
pub(crate) fn identify(message: &Message) -> String {
    let mut out = message.describe_origin();
    if let Some(id) = message.headers.get("amqp.message_id") {
        out.push_str(&format!(" message_id={}", String::from_utf8_lossy(id)));
    }
    if let Some(key) = &message.key {
        out.push_str(&format!(
            " key={}",
            String::from_utf8_lossy(key).escape_debug()
        ));
    }
    match &message.payload {
        None => out.push_str(" (tombstone)"),
        Some(p) => {
            let cut = p.len().min(EXCERPT);
            let excerpt = String::from_utf8_lossy(&p[..cut]);
            let more = if p.len() > cut { "..." } else { "" };
            out.push_str(&format!(
                " payload ({} bytes): {}{more}",
                p.len(),
                excerpt.escape_debug()
            ));
        }
    }
    out
}

/// Where a message goes that cannot be delivered.
#[derive(Clone, Debug)]
pub(crate) enum Rejections {
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
    pub(crate) async fn reject(
        &self,
        pipeline: &str,
        stage: &str,
        delivery: Delivery,
        error: MessageError,
        attempts: u32,
        stats: &Stats,
    ) -> Result<(), PipelineError> {
        let origin = delivery.message.describe_origin();
        match self {
            Rejections::Stop => {
                let origin = identify(&delivery.message);
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
                message
                    .headers
                    .set(h::ATTEMPTS, Bytes::from(attempts.to_string()));
                stats.dead_lettered.add(1);
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
pub(crate) struct SinkTask {
    pub pipeline: String,
    pub sink_name: String,
    pub batch_size: usize,
    /// What may be in flight at once.
    pub window: Window,
    pub retry: RetryConfig,
    pub stats: Arc<Stats>,
    pub metrics: SinkStats,
    /// Told whether writes work, for `/ready`.
    pub probe: Probe,
    /// Where rejected messages go.
    pub rejections: Rejections,
    /// Cancelled when this task fails, so that the source stops reading.
    pub pipeline_stop: CancellationToken,
}

impl SinkTask {
    pub(crate) async fn run<S: Sink>(
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

    async fn reject(
        &self,
        delivery: Delivery,
        e: MessageError,
        attempts: u32,
    ) -> Result<(), PipelineError> {
        self.rejections
            .reject(
                &self.pipeline,
                &self.sink_name,
                delivery,
                e,
                attempts,
                &self.stats,
            )
            .await
    }
    /// Takes batches from the channel and sends them while the window has
    /// room; settles each batch as its confirmations arrive. Messages are
    /// acknowledged only once the sink confirmed them; the source puts
    /// acknowledgements back in order (Kafka offsets, stream ids), so a
    /// later batch confirmed first acknowledges only its own messages.
    async fn feed<S: Sink>(
        &self,
        sink: &mut S,
        rx: &mut mpsc::Receiver<Delivery>,
    ) -> Result<(), PipelineError> {
        let overlaps = sink.overlaps();
        let mut flights = InFlight::default();
        let mut incoming = Vec::with_capacity(self.batch_size);
        let mut open = true;
        loop {
            // How many messages the next batch may take.
            let take = if !overlaps {
                if flights.is_empty() {
                    self.batch_size
                } else {
                    0
                }
            } else if flights.bytes() < self.window.bytes {
                let room = self.window.messages.saturating_sub(flights.messages());
                room.min(self.batch_size)
            } else {
                0
            };
            let room = open && take > 0;
            if !open && flights.is_empty() {
                return Ok(());
            }
            let awaiting = flights.awaiting() > 0;
            tokio::select! {
                biased;
                Some((seq, confirmed)) = flights.next(), if awaiting => {
                    self.settle(sink, &mut flights, seq, confirmed).await?;
                }
                n = rx.recv_many(&mut incoming, take), if room => {
                    if n == 0 {
                        open = false;
                    } else {
                        self.send(sink, &mut flights, &mut incoming).await?;
                    }
                }
            }
        }
    }

    /// Prepares what arrived and sends it as one batch.
    async fn send<S: Sink>(
        &self,
        sink: &mut S,
        flights: &mut InFlight<S::Prepared>,
        incoming: &mut Vec<Delivery>,
    ) -> Result<(), PipelineError> {
        let mut prepared = Vec::with_capacity(incoming.len());
        let mut deliveries = Vec::with_capacity(incoming.len());
        let mut bytes = 0;
        for delivery in incoming.drain(..) {
            match sink.prepare(&delivery.message) {
                Ok(p) => {
                    let m = &delivery.message;
                    bytes += m.payload.as_ref().map_or(0, |p| p.len())
                        + m.key.as_ref().map_or(0, |k| k.len());
                    prepared.push(p);
                    deliveries.push(delivery);
                }
                Err(e) => self.reject(delivery, e, 0).await?,
            }
        }
        if prepared.is_empty() {
            return Ok(());
        }
        let prepared: Arc<[S::Prepared]> = prepared.into();
        // Before `send`: a sink that writes the whole batch there (Redis)
        // would otherwise report its writes as taking no time.
        let sent = Instant::now();
        // A batch that could not even be sent fails like one whose
        // confirmations failed: the same retry writes it again in order.
        let confirming: Confirming = match sink.send(Arc::clone(&prepared)).await {
            Ok(confirming) => confirming,
            Err(e) => Box::pin(std::future::ready(Err(e))),
        };
        flights.push(prepared, deliveries, bytes, sent, confirming);
        Ok(())
    }

    /// A batch's confirmations arrived: its messages are acknowledged (or
    /// set aside); a failed batch is written again, with every batch sent
    /// after it, in order.
    async fn settle<S: Sink>(
        &self,
        sink: &mut S,
        flights: &mut InFlight<S::Prepared>,
        seq: u64,
        confirmed: Confirmed,
    ) -> Result<(), PipelineError> {
        let Some(flight) = flights.get_mut(seq) else {
            return Err(PipelineError::Bug(format!(
                "sink `{}` confirmed a batch it was not waiting for",
                self.sink_name
            )));
        };
        self.metrics
            .write_seconds
            .record(flight.sent.elapsed().as_secs_f64());
        match confirmed {
            Ok(results) => {
                let deliveries = std::mem::take(&mut flight.deliveries);
                flight.settled = true;
                self.confirm(deliveries, results, 1).await?;
                flights.pop_settled();
                Ok(())
            }
            Err(e) if e.is_retryable() => {
                flight.failed = Some(e);
                self.recover(sink, flights).await
            }
            Err(e) => Err(self.fatal(e)),
        }
    }

    /// After a batch failed: waits for every batch still in flight, then
    /// writes the failed ones again one at a time, in the order they were
    /// sent, with each batch sent after the first failure (even a
    /// confirmed one, whose messages are acknowledged already) so that a
    /// retried write never lands after a later one for good.
    async fn recover<S: Sink>(
        &self,
        sink: &mut S,
        flights: &mut InFlight<S::Prepared>,
    ) -> Result<(), PipelineError> {
        while let Some((seq, confirmed)) = flights.next().await {
            let Some(flight) = flights.get_mut(seq) else {
                continue;
            };
            match confirmed {
                Ok(results) => {
                    let deliveries = std::mem::take(&mut flight.deliveries);
                    flight.settled = true;
                    self.confirm(deliveries, results, 1).await?;
                }
                Err(e) if e.is_retryable() => flight.failed = Some(e),
                Err(e) => return Err(self.fatal(e)),
            }
        }
        flights.pop_settled();
        for flight in flights.take_all() {
            if flight.settled {
                // Only for the order: its messages were acknowledged.
                if let Written::GaveUp { error, .. } =
                    self.write_until_done(sink, &flight.prepared, None).await?
                {
                    warn!(pipeline = %self.pipeline, sink = %self.sink_name,
                        "{error}; a confirmed batch was not written again after an earlier one");
                }
                continue;
            }
            match self
                .write_until_done(sink, &flight.prepared, flight.failed)
                .await?
            {
                Written::Done { results, attempts } => {
                    self.confirm(flight.deliveries, results, attempts).await?;
                }
                Written::GaveUp { error, attempts } => {
                    let reason = format!("{error} (gave up after {attempts} attempts)");
                    for delivery in flight.deliveries {
                        self.reject(delivery, MessageError::GaveUp(reason.clone()), attempts)
                            .await?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Acknowledges the confirmed messages of a batch and sets aside the
    /// refused ones.
    async fn confirm(
        &self,
        deliveries: Vec<Delivery>,
        results: Vec<Result<(), MessageError>>,
        attempts: u32,
    ) -> Result<(), PipelineError> {
        if results.len() != deliveries.len() {
            return Err(PipelineError::Bug(format!(
                "sink `{}` returned {} results for {} writes",
                self.sink_name,
                results.len(),
                deliveries.len()
            )));
        }
        self.probe.up();
        let confirmed = results.iter().filter(|r| r.is_ok()).count();
        self.metrics.written.increment(confirmed as u64);
        for (delivery, result) in deliveries.into_iter().zip(results) {
            match result {
                Ok(()) => delivery.ack.delivered(),
                Err(e) => self.reject(delivery, e, attempts).await?,
            }
        }
        Ok(())
    }

    fn fatal(&self, e: ConnectorError) -> PipelineError {
        PipelineError::Sink {
            pipeline: self.pipeline.clone(),
            sink: self.sink_name.clone(),
            source: Box::new(e),
        }
    }

    /// Writes a batch, retrying with backoff and jitter while the error is
    /// retryable (broker down, timeout), up to the configured attempts
    /// (without a limit, until the runtime aborts the task at the end of a
    /// shutdown's drain period). `failed` is the error of a first attempt
    /// made in the window. A fatal error stops the pipeline.
    async fn write_until_done<S: Sink>(
        &self,
        sink: &mut S,
        batch: &Arc<[S::Prepared]>,
        mut failed: Option<ConnectorError>,
    ) -> Result<Written, PipelineError> {
        let mut backoff = Backoff::new(self.retry.initial.0, self.retry.max.0);
        let limit = self
            .retry
            .attempts
            .map(|n| u32::try_from(n.get()).unwrap_or(u32::MAX));
        loop {
            let attempts = backoff.attempts() + 1;
            let written = match failed.take() {
                Some(e) => Err(e),
                None => {
                    let started = Instant::now();
                    let written = sink.write(Arc::clone(batch)).await;
                    self.metrics
                        .write_seconds
                        .record(started.elapsed().as_secs_f64());
                    written
                }
            };
            match written {
                Ok(results) => {
                    if attempts > 1 {
                        warn!(pipeline = %self.pipeline, sink = %self.sink_name,
                            attempts, "write succeeded after retries");
                    }
                    return Ok(Written::Done { results, attempts });
                }
                Err(e) if e.is_retryable() => {
                    self.probe.retrying(&e);
                    // A server refusing every write says nothing about
                    // these messages: it is waited out like an outage.
                    let refusing = matches!(e, ConnectorError::Refusing(_));
                    if !refusing && limit.is_some_and(|limit| attempts >= limit) {
                        warn!(pipeline = %self.pipeline, sink = %self.sink_name,
                            attempts, "{e}; giving up, to the dead-letter sink");
                        return Ok(Written::GaveUp {
                            error: e.to_string(),
                            attempts,
                        });
                    }
                    let delay = backoff.next_delay();
                    warn!(pipeline = %self.pipeline, sink = %self.sink_name,
                        attempt = attempts, "{e}; retrying in {delay:?}");
                    self.metrics.retries.increment(1);
                    tokio::time::sleep(delay).await;
                }
                Err(e) => return Err(self.fatal(e)),
            }
        }
    }
}

/// How a batch write ended.
enum Written {
    Done {
        results: Vec<Result<(), MessageError>>,
        attempts: u32,
    },
    GaveUp {
        error: String,
        attempts: u32,
    },
}

#[cfg(test)]
mod tests;
