//! AMQP source: consumes one queue with manual acknowledgements.
//!
//! A supervisor task owns the connection: it connects, declares the
//! topology, sets the prefetch (`basic.qos`), consumes, and when the
//! connection or channel drops it connects again with backoff. RabbitMQ
//! requeues whatever was delivered on a dead channel and not acknowledged,
//! so nothing is lost; acknowledgements for such deliveries are dropped
//! (they would name delivery tags of a channel that no longer exists).
//!
//! A delivery is acknowledged (`basic.ack`) once every sink confirmed it;
//! when a sink failed it is requeued (`basic.nack`, requeue); a message no
//! sink can take is rejected as configured by `rejected`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use lapin::Acker;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::acks::Tags;
use super::config::{AmqpSourceConfig, RejectMode};
use super::connection;
use super::mapping::delivery_message;
use crate::ack::{Ack, Outcome};
use crate::backoff::Backoff;
use crate::connectors::{Envelope, Source};
use crate::error::ConnectorError;
use crate::observe::Probe;
use crate::values::Until;

/// A delivery's outcome: its session (one per channel), tag and handle.
type AckRequest = (u64, u64, Acker, Outcome);

/// How long a message rejected with `rejected = "requeue"` is held before
/// it goes back to the queue.
const REQUEUE_DELAY: Duration = Duration::from_secs(1);

/// How long a delivered message may wait for a multiple ack behind one
/// still in the pipeline before it is acknowledged on its own.
const STRANDED: Duration = Duration::from_millis(200);

pub struct AmqpSource {
    rx: mpsc::Receiver<Event>,
    stop: CancellationToken,
    supervisor: JoinHandle<()>,
    /// With `until = "end"`: the ready messages in the queue at start.
    expected: Option<u64>,
}

/// What the supervisor hands to `next()`. Deliveries are nearly every
/// event: boxing them to shrink the rare ones would cost an allocation each.
#[allow(clippy::large_enum_variant)]
enum Event {
    Delivery(Envelope),
    Failed(ConnectorError),
    /// `until = "end"`: the queue has no ready message left.
    Drained,
}

/// With `until = "end"`: how long no delivery arrives before ferry asks
/// RabbitMQ whether the queue is empty (checked this often, so after one
/// to two of these).
const IDLE_CHECK: Duration = Duration::from_millis(500);

impl AmqpSource {
    pub async fn open(
        pipeline: &str,
        config: &AmqpSourceConfig,
        probe: &Probe,
    ) -> Result<Self, ConnectorError> {
        // Connect once here, so that a wrong URL or a missing queue is an
        // error at start rather than a retry loop.
        let first = connect(pipeline, config).await?;
        let expected = first.ready.map(u64::from);
        let (tx, rx) = mpsc::channel(config.prefetch.get());
        let stop = CancellationToken::new();
        let supervisor = tokio::spawn(supervise(
            pipeline.to_owned(),
            config.clone(),
            first,
            tx,
            stop.clone(),
            probe.clone(),
        ));
        Ok(Self {
            rx,
            stop,
            supervisor,
            expected,
        })
    }
}

/// Messages ready in the queue (not counting those delivered and not yet
/// acknowledged), from a passive declare.
async fn ready_messages(
    channel: &lapin::Channel,
    config: &AmqpSourceConfig,
) -> Result<u32, ConnectorError> {
    let queue = channel
        .queue_declare(
            config.queue.as_str().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| ConnectorError::amqp(format!("measuring queue `{}`", config.queue), e))?;
    Ok(queue.message_count())
}

struct Session {
    conn: lapin::Connection,
    channel: lapin::Channel,
    consumer: lapin::Consumer,
    /// With `until = "end"`: messages ready before this session consumed.
    ready: Option<u32>,
}

async fn connect(pipeline: &str, config: &AmqpSourceConfig) -> Result<Session, ConnectorError> {
    let (conn, channel) =
        connection::open(&config.access(), &format!("ferry-{pipeline}-source")).await?;
    connection::declare(&channel, &config.declare).await?;
    let prefetch = u16::try_from(config.prefetch.get()).unwrap_or(u16::MAX);
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| ConnectorError::amqp("setting the prefetch", e))?;
    // Measured before consuming: prefetched deliveries no longer count.
    let ready = match config.until {
        Until::End => Some(ready_messages(&channel, config).await?),
        Until::Forever => None,
    };
    let consumer = channel
        .basic_consume(
            config.queue.as_str().into(),
            format!("ferry-{pipeline}").into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| ConnectorError::amqp(format!("consuming queue `{}`", config.queue), e))?;
    info!(pipeline, queue = %config.queue, prefetch, "amqp source consuming");
    Ok(Session {
        conn,
        channel,
        consumer,
        ready,
    })
}

/// Runs sessions until stopped; a fatal error is handed to `next()`.
async fn supervise(
    pipeline: String,
    config: AmqpSourceConfig,
    first: Session,
    tx: mpsc::Sender<Event>,
    stop: CancellationToken,
    probe: Probe,
) {
    let until_end = config.until == Until::End;
    // Said once: `next()` has ended the pipeline's reading by then.
    let mut drained = false;
    let queue: Arc<str> = Arc::from(config.queue.as_str());
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<AckRequest>();
    let acker = tokio::spawn(acknowledge(pipeline.clone(), ack_rx, config.rejected));
    let mut session = Some(first);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut last: Option<Session> = None;
    // Numbers the channels: delivery tags start again on each.
    let mut channel_no = 0u64;
    // Made once: each `stop.cancelled()` registers with the token (a lock)
    // when polled, twice a delivery otherwise.
    let mut cancelled = std::pin::pin!(stop.cancelled());
    while !stop.is_cancelled() {
        channel_no += 1;
        let this_channel = channel_no;
        let mut s = match session.take() {
            Some(s) => s,
            None => {
                let attempt = tokio::select! {
                    a = connect(&pipeline, &config) => a,
                    _ = &mut cancelled => break,
                };
                match attempt {
                    Ok(s) => {
                        info!(pipeline, "amqp source reconnected");
                        probe.up();
                        backoff.reset();
                        s
                    }
                    Err(e) if e.is_retryable() => {
                        let delay = backoff.next_delay();
                        warn!(pipeline, "amqp source: {e}; retrying in {delay:?}");
                        probe.retrying(&e);
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => continue,
                            _ = &mut cancelled => break,
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Event::Failed(e)).await;
                        break;
                    }
                }
            }
        };
        // One timer for the session, not a sleep per delivery: each new
        // sleep registers with the runtime's timer wheel under a lock.
        let mut idle =
            tokio::time::interval_at(tokio::time::Instant::now() + IDLE_CHECK, IDLE_CHECK);
        idle.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // When the last delivery was handed on: idle is the time spent
        // waiting here since, not time spent blocked handing it on.
        let mut last_delivery = std::time::Instant::now();
        loop {
            let delivery = tokio::select! {
                // Deliveries before the tick: with both ready (after a long
                // hand-over to a slow pipeline), a prefetched delivery must
                // not be taken for an empty queue.
                biased;
                _ = &mut cancelled => break,
                d = s.consumer.next() => d,
                _ = idle.tick(), if until_end && !drained => {
                    if last_delivery.elapsed() < IDLE_CHECK {
                        continue;
                    }
                    // Nothing arrived for a while: is the queue empty? The
                    // messages in flight in the pipeline are unacknowledged,
                    // not ready, so they do not count.
                    if matches!(ready_messages(&s.channel, &config).await, Ok(0)) {
                        info!(pipeline, queue = %config.queue, "the queue is empty");
                        drained = true;
                        let _ = tx.send(Event::Drained).await;
                    }
                    continue;
                }
            };
            let delivery = match delivery {
                Some(Ok(d)) => d,
                Some(Err(e)) => {
                    warn!(
                        pipeline,
                        "amqp source: connection lost: {e}; reconnecting (unacknowledged messages are requeued by RabbitMQ)"
                    );
                    probe.retrying(&format!("connection lost: {e}"));
                    break;
                }
                None => {
                    warn!(
                        pipeline,
                        "amqp source: the broker cancelled the consumer; reconnecting"
                    );
                    probe.retrying(&"the broker cancelled the consumer");
                    break;
                }
            };
            let tag = delivery.delivery_tag;
            let (message, handle) = delivery_message(&queue, delivery);
            let acks = ack_tx.clone();
            let ack = Ack::new(move |outcome| {
                let _ = acks.send((this_channel, tag, handle, outcome));
            });
            let sent = tokio::select! {
                sent = tx.send(Event::Delivery(Envelope::new(message, ack))) => sent,
                _ = &mut cancelled => break,
            };
            if sent.is_err() {
                break;
            }
            if until_end {
                last_delivery = std::time::Instant::now();
            }
        }
        if stop.is_cancelled() {
            last = Some(s);
        }
    }
    // Stopping: no new deliveries, let the acknowledgements of the drained
    // pipeline go out, then close (RabbitMQ requeues anything unacknowledged).
    drop(ack_tx);
    if let Some(s) = &last {
        let _ = s
            .channel
            .basic_cancel(s.consumer.tag(), BasicCancelOptions::default())
            .await;
    }
    if tokio::time::timeout(Duration::from_secs(10), acker)
        .await
        .is_err()
    {
        warn!(
            pipeline,
            "amqp acknowledgements still pending after 10s; RabbitMQ will redeliver them"
        );
    }
    if let Some(s) = last {
        let _ = s.channel.close(200, "ferry stopping".into()).await;
        let _ = s.conn.close(200, "ferry stopping".into()).await;
    }
}

/// How long one ack, nack or reject may take to go out. Acks go out one
/// after another, so one that never completes (its connection died with
/// the frame still queued) would hold back every later one, on the new
/// connection too, until the prefetch window is full of unacknowledged
/// deliveries and the consumer stalls. Past this, the channel is taken for
/// dead: RabbitMQ requeues what it held.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

async fn bounded(ack: impl Future<Output = lapin::Result<bool>>) -> Result<bool, String> {
    match tokio::time::timeout(ACK_TIMEOUT, ack).await {
        Ok(r) => r.map_err(|e| e.to_string()),
        Err(_) => Err(format!("no answer from the channel within {ACK_TIMEOUT:?}")),
    }
}

/// Sends acks, nacks and rejects as outcomes come back from the sinks.
/// Acks are gathered: whatever outcomes are waiting are taken at once, and
/// each channel gets one `basic.ack` with `multiple` up to the highest tag
/// below which every delivery is settled ([`Tags`]). Nacks and rejects go
/// one by one. Deliveries still held back behind one in the pipeline at
/// the next tick (every [`STRANDED`]) are acknowledged on their own, so a
/// slow message never holds back the acknowledgements (and prefetch slots)
/// of the rest.
async fn acknowledge(
    pipeline: String,
    mut rx: mpsc::UnboundedReceiver<AckRequest>,
    rejected: Option<RejectMode>,
) {
    let mut channels: BTreeMap<u64, Tags<Acker>> = BTreeMap::new();
    // Delayed requeues report back here once their nack went out.
    let (requeued_tx, mut requeued_rx) = mpsc::unbounded_channel::<(u64, u64)>();
    let mut delayed = 0usize;
    let mut stranded = tokio::time::interval(STRANDED);
    stranded.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut open = true;
    let mut batch = Vec::new();
    while open || delayed > 0 {
        tokio::select! {
            n = rx.recv_many(&mut batch, 4096), if open => {
                if n == 0 {
                    open = false;
                }
            }
            Some((session, tag)) = requeued_rx.recv(), if delayed > 0 => {
                delayed -= 1;
                channels.entry(session).or_default().settled(tag);
            }
            _ = stranded.tick() => {
                for tags in channels.values_mut() {
                    for acker in tags.stranded() {
                        send(&pipeline, bounded(acker.ack(BasicAckOptions::default())).await);
                    }
                }
            }
        }
        for (session, tag, acker, outcome) in batch.drain(..) {
            let tags = channels.entry(session).or_default();
            match (outcome, rejected) {
                (Outcome::Delivered, _) => tags.delivered(tag, acker),
                (Outcome::Rejected, Some(RejectMode::DeadLetter)) => {
                    send(
                        &pipeline,
                        bounded(acker.reject(BasicRejectOptions { requeue: false })).await,
                    );
                    tags.settled(tag);
                }
                // Requeued at once, a message no sink takes would come straight
                // back and spin. Holding it a while keeps its prefetch slot, so
                // the queue's other messages go on meanwhile.
                (Outcome::Rejected, Some(RejectMode::Requeue)) => {
                    tags.waiting(tag);
                    delayed += 1;
                    let pipeline = pipeline.clone();
                    let requeued = requeued_tx.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(REQUEUE_DELAY).await;
                        let nack = BasicNackOptions {
                            requeue: true,
                            ..BasicNackOptions::default()
                        };
                        if let Err(e) = bounded(acker.nack(nack)).await {
                            debug!(
                                pipeline,
                                "amqp requeue not sent ({e}); RabbitMQ requeues it"
                            );
                        }
                        let _ = requeued.send((session, tag));
                    });
                }
                (Outcome::Rejected, _) | (Outcome::Failed, _) => {
                    let nack = BasicNackOptions {
                        requeue: true,
                        ..BasicNackOptions::default()
                    };
                    send(&pipeline, bounded(acker.nack(nack)).await);
                    tags.settled(tag);
                }
            }
        }
        for tags in channels.values_mut() {
            if let Some(acker) = tags.advance() {
                let multiple = BasicAckOptions { multiple: true };
                send(&pipeline, bounded(acker.ack(multiple)).await);
            }
        }
        // A channel's state goes once nothing of it is held; a later
        // delivery on it starts from its lowest tag again, which is
        // right only for a new channel: so keep the latest.
        let latest = channels.keys().next_back().copied();
        channels.retain(|session, tags| Some(*session) == latest || !tags.is_empty());
    }
    // Stopping: what is still held behind a delivery that never came back
    // goes one by one (RabbitMQ would redeliver it otherwise).
    for tags in channels.values_mut() {
        if let Some(acker) = tags.advance() {
            send(
                &pipeline,
                bounded(acker.ack(BasicAckOptions { multiple: true })).await,
            );
        }
        for acker in tags.stranded() {
            send(
                &pipeline,
                bounded(acker.ack(BasicAckOptions::default())).await,
            );
        }
    }
}

/// An acknowledgement that could not be sent: the channel is gone, and
/// RabbitMQ requeued the delivery already.
fn send(pipeline: &str, result: Result<bool, String>) {
    if let Err(e) = result {
        debug!(
            pipeline,
            "amqp acknowledgement not sent ({e}); the message will be redelivered"
        );
    }
}

impl Source for AmqpSource {
    fn expected(&self) -> Option<u64> {
        self.expected
    }

    async fn next(&mut self) -> Result<Option<Envelope>, ConnectorError> {
        match self.rx.recv().await {
            Some(Event::Delivery(envelope)) => Ok(Some(envelope)),
            Some(Event::Failed(e)) => Err(e),
            Some(Event::Drained) => Ok(None),
            None => Err(ConnectorError::Fatal("the amqp consumer stopped".into())),
        }
    }

    async fn close(self) -> Result<(), ConnectorError> {
        self.stop.cancel();
        drop(self.rx);
        let _ = self.supervisor.await;
        Ok(())
    }
}
