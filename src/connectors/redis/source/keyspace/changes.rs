//! The keyspace subscription: which keys changed, kept once each until the
//! source reads them, and the task that keeps the subscription alive.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::connectors::redis::connection::RedisConn;
use crate::connectors::redis::named::Endpoint;
use futures::StreamExt;
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::backoff::Backoff;
use crate::connectors::redis::replies::text;
use crate::connectors::redis::sync;
use crate::error::ConnectorError;
use crate::observe::Probe;
use crate::sync::lock;

/// Keys that changed and wait to be read, oldest first, each once.
#[derive(Debug, Default)]
struct Dirty {
    order: VecDeque<String>,
    events: HashMap<String, String>,
}

/// What the subscription task shares with the source.
pub(super) struct Shared {
    dirty: Mutex<Dirty>,
    pub(super) notify: Notify,
    /// Set when notifications may have been lost: scan again.
    pub(super) rescan: AtomicBool,
    /// Set when the subscription cannot go on (notifications turned off
    /// and ferry may not turn them on).
    pub(super) fatal: Mutex<Option<String>>,
    max_pending: usize,
    pub(super) pipeline: String,
    pub(super) probe: Probe,
}

impl Shared {
    pub(super) fn new(max_pending: usize, pipeline: &str, probe: &Probe) -> Shared {
        Shared {
            dirty: Mutex::new(Dirty::default()),
            notify: Notify::new(),
            rescan: AtomicBool::new(false),
            fatal: Mutex::new(None),
            max_pending,
            pipeline: pipeline.to_owned(),
            probe: probe.clone(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Dirty> {
        lock(&self.dirty)
    }

    pub(super) fn changed(&self, key: String, event: String) {
        if key.starts_with(sync::RESERVED_PREFIX) {
            return;
        }
        let mut dirty = self.lock();
        if let Some(e) = dirty.events.get_mut(&key) {
            *e = event;
            return;
        }
        if dirty.order.len() >= self.max_pending {
            warn!(pipeline = %self.pipeline, max = self.max_pending,
                "too many changed keys waiting; forgetting them and scanning the keyspace again");
            *dirty = Dirty::default();
            self.rescan.store(true, Ordering::Relaxed);
        } else {
            dirty.order.push_back(key.clone());
            dirty.events.insert(key, event);
        }
        drop(dirty);
        self.notify.notify_one();
    }

    pub(super) fn take(&self, n: usize) -> Vec<(String, String)> {
        let mut dirty = self.lock();
        let mut out = Vec::with_capacity(n.min(dirty.order.len()));
        while out.len() < n {
            let Some(key) = dirty.order.pop_front() else {
                break;
            };
            let event = dirty.events.remove(&key).unwrap_or_default();
            out.push((key, event));
        }
        out
    }
}

pub(super) async fn listen(
    server: Endpoint,
    mut cmd: RedisConn,
    configure: bool,
    channel: String,
    shared: Arc<Shared>,
    snapshot: bool,
    subscribed: tokio::sync::oneshot::Sender<()>,
) {
    let mut subscribed = Some(subscribed);
    let prefix_len = channel.find(':').map_or(0, |i| i + 1);
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        // After a reconnect Redis may be a restarted server whose
        // notify-keyspace-events came back from redis.conf: check again.
        if subscribed.is_none() {
            match ensure_notifications(&mut cmd, configure).await {
                Ok(()) => {}
                Err(e) if e.is_retryable() => {
                    let delay = backoff.next_delay();
                    warn!(pipeline = %shared.pipeline, "{e}; retrying in {delay:?}");
                    shared.probe.retrying(&e);
                    tokio::time::sleep(delay).await;
                    continue;
                }
                Err(e) => {
                    *crate::sync::lock(&shared.fatal) = Some(e.to_string());
                    shared.notify.notify_one();
                    return;
                }
            }
        }
        let pubsub = async {
            let mut p = server.pubsub().await?;
            p.psubscribe(&channel).await?;
            Ok::<_, redis::RedisError>(p)
        }
        .await;
        let pubsub = match pubsub {
            Ok(p) => p,
            Err(e) => {
                let delay = backoff.next_delay();
                warn!(pipeline = %shared.pipeline, "keyspace subscription failed: {e}; retrying in {delay:?}");
                shared.probe.retrying(&e);
                tokio::time::sleep(delay).await;
                continue;
            }
        };
        backoff.reset();
        match subscribed.take() {
            Some(tx) => {
                let _ = tx.send(());
            }
            None => {
                shared.probe.up();
                if snapshot {
                    info!(pipeline = %shared.pipeline, "keyspace subscription restored; scanning again for missed changes");
                    shared.rescan.store(true, Ordering::Relaxed);
                    shared.notify.notify_one();
                }
            }
        }
        let mut messages = pubsub.into_on_message();
        while let Some(msg) = messages.next().await {
            let name = msg.get_channel_name();
            let key = name.get(prefix_len..).unwrap_or_default().to_owned();
            let event = String::from_utf8_lossy(msg.get_payload_bytes()).into_owned();
            shared.changed(key, event);
        }
        warn!(pipeline = %shared.pipeline, "keyspace subscription lost; reconnecting");
        shared.probe.retrying(&"keyspace subscription lost");
    }
}

/// Checks that Redis publishes keyspace notifications for every event
/// class; turns them on when allowed to.
pub(super) async fn ensure_notifications(
    conn: &mut RedisConn,
    configure: bool,
) -> Result<(), ConnectorError> {
    let reply: redis::Value = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(conn)
        .await
        .map_err(|e| ConnectorError::redis("reading notify-keyspace-events", e))?;
    let flags = match &reply {
        redis::Value::Array(kv) => kv.get(1).and_then(text),
        redis::Value::Map(kv) => kv.first().and_then(|(_, v)| text(v)),
        _ => None,
    }
    .unwrap_or_default();
    if notifications_enabled(&flags) {
        return Ok(());
    }
    let wanted = format!("{flags}KA");
    if !configure {
        return Err(ConnectorError::Fatal(format!(
            "Redis does not publish keyspace notifications (notify-keyspace-events = \"{flags}\"); \
             run `CONFIG SET notify-keyspace-events {wanted}` (or set it in redis.conf), \
             or add `configure_notifications = true` to the source to let ferry do it"
        )));
    }
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg(&wanted)
        .query_async::<()>(conn)
        .await
        .map_err(|e| ConnectorError::Fatal(format!(
            "cannot turn on keyspace notifications (CONFIG SET notify-keyspace-events {wanted}): {e}"
        )))?;
    info!(flags = wanted, "turned on redis keyspace notifications");
    Ok(())
}

/// Whether `notify-keyspace-events` flags include keyspace events of every
/// class (`K` and `A`, or `K` and each class letter).
pub(crate) fn notifications_enabled(flags: &str) -> bool {
    flags.contains('K') && (flags.contains('A') || "g$lshzxt".chars().all(|c| flags.contains(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notification_flags_must_cover_every_class() {
        assert!(notifications_enabled("KA"));
        assert!(notifications_enabled("AKE"));
        assert!(notifications_enabled("Kg$lshzxt"));
        assert!(!notifications_enabled(""));
        assert!(!notifications_enabled("EA"));
        assert!(!notifications_enabled("K$"));
    }

    #[test]
    fn a_key_that_changes_twice_waits_once_and_an_overflow_asks_for_a_rescan() {
        let shared = Shared::new(2, "p", &Probe::detached("p", "source"));
        shared.changed("a".into(), "set".into());
        shared.changed("a".into(), "del".into());
        shared.changed("b".into(), "set".into());
        assert_eq!(
            shared.take(10),
            vec![("a".into(), "del".into()), ("b".into(), "set".into())]
        );
        shared.changed("a".into(), "set".into());
        shared.changed("b".into(), "set".into());
        shared.changed("c".into(), "set".into());
        assert!(shared.rescan.load(Ordering::Relaxed));
        assert!(shared.take(10).is_empty());
    }
}
