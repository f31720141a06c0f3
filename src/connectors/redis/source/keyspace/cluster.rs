//! The keyspace source on a Redis Cluster: each primary publishes the
//! notifications of its own keys only, so ferry subscribes on every
//! primary, watches the topology (a replica promoted by a failover, a
//! primary added) and, whenever the set of primaries changes, scans again:
//! a change made while no subscription covered its slot is found by the
//! scan, and "the latest value of every key is emitted" still holds.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::task::{AbortHandle, JoinSet};
use tracing::{info, warn};

use super::changes::{Shared, ensure_notifications, listen};
use crate::backoff::Backoff;
use crate::connectors::redis::access::{RedisAccess, connect_node};
use crate::connectors::redis::connection::Cluster;
use crate::error::ConnectorError;

/// How often the primaries are listed again.
const TOPOLOGY_POLL: Duration = Duration::from_secs(1);

/// What one subscription per primary needs.
pub(super) struct Follow {
    pub cluster: Cluster,
    pub access: RedisAccess,
    pub configure: bool,
    pub channel: String,
    pub shared: Arc<Shared>,
    pub snapshot: bool,
}

/// Keeps one subscription per primary until aborted (dropping the task
/// drops its `JoinSet`, which ends the subscriptions).
pub(super) async fn follow(f: Follow, subscribed: tokio::sync::oneshot::Sender<()>) {
    let mut subscribed = Some(subscribed);
    let mut tasks: JoinSet<()> = JoinSet::new();
    let mut listening: HashMap<String, AbortHandle> = HashMap::new();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        let primaries = match f.cluster.primaries().await {
            Ok(p) if !p.is_empty() => p,
            Ok(_) => {
                tokio::time::sleep(backoff.next_delay()).await;
                continue;
            }
            Err(e) => {
                let delay = backoff.next_delay();
                warn!(pipeline = %f.shared.pipeline, "listing the cluster's primaries: {e}; retrying in {delay:?}");
                f.shared.probe.retrying(&e);
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        backoff.reset();
        let mut changed = false;
        listening.retain(|node, task| {
            let keep = primaries.contains(node);
            if !keep {
                info!(pipeline = %f.shared.pipeline, node, "no longer a primary; its subscription ends");
                task.abort();
                changed = true;
            }
            keep
        });
        let mut waits = Vec::new();
        let new: Vec<&String> = primaries
            .iter()
            .filter(|n| !listening.contains_key(*n))
            .collect();
        for node in new {
            match start(&f, node, &mut tasks).await {
                Ok((task, wait)) => {
                    info!(pipeline = %f.shared.pipeline, node, "subscribing to a primary's keyspace notifications");
                    listening.insert(node.clone(), task);
                    waits.push(wait);
                    changed = true;
                }
                Err(e) if e.is_retryable() => {
                    warn!(pipeline = %f.shared.pipeline, node, "{e}; trying again");
                }
                Err(e) => {
                    *f.shared.fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                    f.shared.notify.notify_one();
                    return;
                }
            }
        }
        for wait in waits {
            let _ = tokio::time::timeout(Duration::from_secs(10), wait).await;
        }
        match subscribed.take() {
            Some(tx) => {
                let _ = tx.send(());
            }
            None if changed && f.snapshot => {
                info!(pipeline = %f.shared.pipeline, "the cluster's primaries changed; scanning again for missed changes");
                f.shared.rescan.store(true, Ordering::Relaxed);
                f.shared.notify.notify_one();
            }
            None => {}
        }
        while tasks.try_join_next().is_some() {}
        tokio::time::sleep(TOPOLOGY_POLL).await;
    }
}

/// Checks a primary's notification settings and subscribes to it.
async fn start(
    f: &Follow,
    node: &str,
    tasks: &mut JoinSet<()>,
) -> Result<(AbortHandle, tokio::sync::oneshot::Receiver<()>), ConnectorError> {
    let mut conn = connect_node(&f.access, node, Duration::from_secs(10))?;
    ensure_notifications(&mut conn, f.configure).await?;
    let server = f.access.node_endpoint(node)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tasks.spawn(listen(
        server,
        conn,
        f.configure,
        f.channel.clone(),
        Arc::clone(&f.shared),
        f.snapshot,
        tx,
    ));
    Ok((task, rx))
}
