//! Sharded pub/sub on a Redis Cluster (`SSUBSCRIBE`, Redis 7): a shard
//! channel lives in one slot and its messages stay on the shard that owns
//! it. redis-rs's cluster connection (RESP3) subscribes on the owning node
//! and subscribes again by itself after a disconnection or a failover; its
//! pushes arrive here and are handed to the source like plain pub/sub
//! messages (at-most-once, as sharded pub/sub itself).

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use redis::{PushKind, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::pubsub::forward;
use crate::connectors::redis::access::{RedisAccess, connect};
use crate::connectors::redis::connection::RedisConn;
use crate::connectors::redis::replies::text;
use crate::error::ConnectorError;
use crate::message::{Message, Origin};

/// Subscribes to `channels` and forwards their messages to `tx` until the
/// task is aborted.
pub(crate) async fn spawn(
    pipeline: &str,
    access: &RedisAccess,
    channels: Vec<String>,
    tx: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
) -> Result<JoinHandle<()>, ConnectorError> {
    let refused = |e| ConnectorError::redis("subscribing to shard channels (SSUBSCRIBE)", e);
    // Every node as a seed, as for the other cluster connections.
    let seeds = match connect(access, Duration::from_secs(10))? {
        RedisConn::Cluster(cluster) => cluster.seeds().await.map_err(refused)?,
        _ => vec![access.endpoint()?.client.get_connection_info().clone()],
    };
    let (push_tx, mut pushes) = mpsc::unbounded_channel();
    let client = access
        .cluster_settings()?
        .builder(seeds, Duration::from_secs(10))
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(push_tx)
        .build()
        .map_err(refused)?;
    let mut conn = client.get_async_connection().await.map_err(refused)?;
    conn.ssubscribe(&channels).await.map_err(refused)?;
    info!(pipeline, ?channels, "redis sharded pub/sub subscribed");
    let pipeline = pipeline.to_owned();
    Ok(tokio::spawn(async move {
        // Held by the task: the subscription lives as long as it.
        let mut conn = conn;
        while let Some(push) = pushes.recv().await {
            if push.kind == PushKind::SUnsubscribe {
                // The server dropped the subscription: its slot moved (a
                // failover, a migration). Subscribe again where it lives
                // now; redis-rs follows the redirect.
                let channel = push.data.first().and_then(text).unwrap_or_default();
                warn!(
                    pipeline,
                    channel,
                    "redis shard channel moved; subscribing again (messages meanwhile are missed)"
                );
                let mut delay = Duration::from_millis(100);
                while let Err(e) = conn.ssubscribe(&channel).await {
                    warn!(pipeline, channel, "SSUBSCRIBE: {e}; retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
                info!(pipeline, channel, "redis shard channel subscribed again");
                continue;
            }
            if push.kind != PushKind::SMessage {
                continue;
            }
            let (Some(channel), Some(Value::BulkString(payload))) =
                (push.data.first().and_then(text), push.data.get(1))
            else {
                continue;
            };
            let message = Message {
                payload: Some(Bytes::copy_from_slice(payload)),
                origin: Origin::RedisChannel { channel },
                timestamp: Some(crate::clock::now_ms()),
                ..Message::default()
            };
            if !forward(&pipeline, &tx, &dropped, message) {
                return;
            }
        }
    }))
}
