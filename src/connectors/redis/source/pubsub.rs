//! Redis pub/sub source: `SUBSCRIBE` / `PSUBSCRIBE`.
//!
//! At-most-once, like pub/sub itself: a message published while ferry is
//! disconnected or stopped is never seen, and there is nothing to
//! acknowledge. A background task keeps the subscription alive
//! (reconnecting with backoff) and hands messages over through a bounded
//! buffer; when the pipeline falls that far behind, new messages are
//! dropped and counted in the log, instead of growing memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::ack::Ack;
use crate::backoff::Backoff;
use crate::connectors::redis::access::{RedisAccess, connect};
use crate::connectors::redis::config::RedisPubSubSourceConfig;
use crate::connectors::redis::connection::RedisConn;
use crate::connectors::redis::named::Endpoint;
use crate::connectors::{Envelope, Source};
use crate::error::ConnectorError;
use crate::message::{Message, Origin};
use crate::observe::Probe;

pub struct RedisPubSubSource {
    rx: mpsc::Receiver<Message>,
    /// The subscription tasks: channels and patterns, shard channels.
    tasks: Vec<JoinHandle<()>>,
    dropped: Arc<AtomicU64>,
}

impl RedisPubSubSource {
    pub async fn open(
        pipeline: &str,
        config: &RedisPubSubSourceConfig,
        probe: &Probe,
    ) -> Result<Self, ConnectorError> {
        let access = config.access();
        let (tx, rx) = mpsc::channel(config.buffer.get());
        let dropped = Arc::new(AtomicU64::new(0));
        let mut tasks = Vec::new();
        if !config.shard_channels.is_empty() {
            let channels = config
                .shard_channels
                .iter()
                .map(ToString::to_string)
                .collect();
            tasks.push(
                super::sharded::spawn(
                    pipeline,
                    &access,
                    channels,
                    tx.clone(),
                    Arc::clone(&dropped),
                )
                .await?,
            );
        }
        if config.channels.is_empty() && config.patterns.is_empty() {
            return Ok(Self { rx, tasks, dropped });
        }
        let conn = connect(&access, Duration::from_secs(10))?;
        let subscription = Subscription {
            access,
            conn,
            channels: config.channels.iter().map(ToString::to_string).collect(),
            patterns: config.patterns.iter().map(ToString::to_string).collect(),
        };
        // Subscribe once here, so that an unreachable server is retried by
        // the runtime's open loop and reported as not ready.
        let first = subscription
            .subscribe()
            .await
            .map_err(|e| ConnectorError::redis("subscribing", e))?;
        info!(pipeline, channels = ?subscription.channels, patterns = ?subscription.patterns,
            "redis pub/sub subscribed");
        tasks.push(tokio::spawn(subscribe_forever(
            pipeline.to_owned(),
            subscription,
            first,
            tx,
            Arc::clone(&dropped),
            probe.clone(),
        )));
        Ok(Self { rx, tasks, dropped })
    }
}

/// What to subscribe to, and where.
struct Subscription {
    access: RedisAccess,
    /// Finds the servers: the primary the sentinels name, a cluster's nodes.
    conn: RedisConn,
    channels: Vec<String>,
    patterns: Vec<String>,
}

impl Subscription {
    /// Where a subscription hears every message: the server; the current
    /// primary under Sentinel; any node of a cluster (a cluster passes every
    /// `PUBLISH` to all its nodes), tried in turn.
    async fn servers(&self) -> Result<Vec<Endpoint>, redis::RedisError> {
        let refused = |e: ConnectorError| {
            redis::RedisError::from((redis::ErrorKind::Client, "opening a node", e.to_string()))
        };
        match &self.conn {
            RedisConn::Single(_) | RedisConn::Named(_) => {
                Ok(vec![self.access.endpoint().map_err(refused)?])
            }
            RedisConn::Sentinel(s) => Ok(vec![Endpoint::plain(s.primary_client().await?)]),
            RedisConn::Cluster(c) => c
                .primaries()
                .await?
                .iter()
                .map(|node| self.access.node_endpoint(node).map_err(refused))
                .collect(),
        }
    }

    async fn subscribe(&self) -> Result<redis::aio::PubSub, redis::RedisError> {
        let mut last = None;
        for server in self.servers().await? {
            match self.subscribe_at(&server).await {
                Ok(p) => return Ok(p),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Client, "no server to subscribe to"))
        }))
    }

    async fn subscribe_at(
        &self,
        server: &Endpoint,
    ) -> Result<redis::aio::PubSub, redis::RedisError> {
        let mut pubsub = server.pubsub().await?;
        if !self.channels.is_empty() {
            pubsub.subscribe(&self.channels).await?;
        }
        if !self.patterns.is_empty() {
            pubsub.psubscribe(&self.patterns).await?;
        }
        Ok(pubsub)
    }
}

/// Forwards messages, and subscribes again when the connection drops,
/// until the source is closed.
async fn subscribe_forever(
    pipeline: String,
    subscription: Subscription,
    first: redis::aio::PubSub,
    tx: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
    probe: Probe,
) {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    let mut next = Some(first);
    loop {
        let pubsub = match next.take() {
            Some(p) => p,
            None => match subscription.subscribe().await {
                Ok(p) => {
                    info!(pipeline, "redis pub/sub subscribed again");
                    probe.up();
                    backoff.reset();
                    p
                }
                Err(e) => {
                    let delay = backoff.next_delay();
                    warn!(
                        pipeline,
                        "redis pub/sub: cannot subscribe: {e}; retrying in {delay:?}"
                    );
                    probe.retrying(&e);
                    tokio::time::sleep(delay).await;
                    continue;
                }
            },
        };
        let mut stream = pubsub.into_on_message();
        while let Some(msg) = stream.next().await {
            let message = Message {
                payload: Some(Bytes::copy_from_slice(msg.get_payload_bytes())),
                origin: Origin::RedisChannel {
                    channel: msg.get_channel_name().to_owned(),
                },
                timestamp: Some(crate::clock::now_ms()),
                ..Message::default()
            };
            if !forward(&pipeline, &tx, &dropped, message) {
                return;
            }
        }
        warn!(
            pipeline,
            "redis pub/sub connection lost; messages published meanwhile are missed; reconnecting"
        );
        probe.retrying(&"connection lost");
    }
}

/// Hands a message to the source; when the pipeline is that far behind,
/// drops it and counts it. `false` once the source is gone.
pub(super) fn forward(
    pipeline: &str,
    tx: &mpsc::Sender<Message>,
    dropped: &AtomicU64,
    message: Message,
) -> bool {
    match tx.try_send(message) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            let n = dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                warn!(
                    pipeline,
                    dropped = n,
                    "redis pub/sub: the pipeline is behind; \
                    messages dropped (pub/sub is at-most-once)"
                );
            }
            true
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

impl Source for RedisPubSubSource {
    /// Endless: pub/sub has no end.
    fn expected(&self) -> Option<u64> {
        None
    }

    async fn next(&mut self) -> Result<Option<Envelope>, ConnectorError> {
        match self.rx.recv().await {
            Some(message) => Ok(Some(Envelope::new(message, Ack::none()))),
            None => Err(ConnectorError::Fatal(
                "the redis pub/sub task stopped".into(),
            )),
        }
    }

    async fn close(self) -> Result<(), ConnectorError> {
        for task in self.tasks {
            task.abort();
        }
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped > 0 {
            warn!(
                dropped,
                "redis pub/sub messages were dropped while the pipeline was behind"
            );
        }
        Ok(())
    }
}
