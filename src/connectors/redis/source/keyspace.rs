//! Redis keyspace source: the current value of every key that changes.
//!
//! ferry subscribes to `__keyspace@<db>__:<pattern>` and, for each changed
//! key, reads its current value by its type and emits it (a deleted or
//! expired key is a tombstone). Notifications only say *that* a key
//! changed, so a burst of changes to one key is read once: changed keys wait
//! in a set that remembers the latest event.
//!
//! Notifications are fire-and-forget: anything that happened while ferry
//! was disconnected is lost. So ferry first subscribes, then (with
//! `snapshot`) scans every matching key, and scans again after each
//! reconnect; the result is that every key's latest value is emitted at
//! least once, even though single events can be missed. When more changed
//! keys pile up than `max_pending_keys`, ferry forgets them and scans again
//! instead, which bounds memory.
//!
//! Message: key = the Redis key; payload = the value (a string as is; hash
//! as a JSON object; list and set as JSON arrays; sorted set as a JSON
//! object of member -> score; stream as `{"length", "last_id", "last_entry"}`);
//! headers `redis.event` and `redis.type`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::ack::Ack;
use crate::connectors::redis::config::{KeyspaceUntil, RedisKeyspaceSourceConfig};
use crate::connectors::redis::mapping::{parse_entries, text};
use crate::connectors::redis::sink::connect;
use crate::connectors::redis::sync;
use crate::connectors::{Envelope, Source};
use crate::error::ConnectorError;
use crate::message::{Headers, Message, Origin};
use crate::observe::Probe;
use crate::runtime::backoff::Backoff;

/// Header naming the keyspace event (`set`, `hset`, `del`, `expired`,
/// `snapshot` for keys found by a scan).
pub const EVENT_HEADER: &str = "redis.event";
/// Header naming the key's type (`string`, `hash`, ..., `none` if deleted).
pub const TYPE_HEADER: &str = "redis.type";

const READ_BATCH: usize = 100;
const SCAN_COUNT: usize = 500;

/// Keys that changed and wait to be read, oldest first, each once.
#[derive(Debug, Default)]
struct Dirty {
    order: VecDeque<String>,
    events: HashMap<String, String>,
}

struct Shared {
    dirty: Mutex<Dirty>,
    notify: Notify,
    /// Set when notifications may have been lost: scan again.
    rescan: AtomicBool,
    /// Set when the subscription cannot go on (notifications turned off
    /// and ferry may not turn them on).
    fatal: Mutex<Option<String>>,
    max_pending: usize,
    pipeline: String,
    probe: Probe,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Dirty> {
        self.dirty.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn changed(&self, key: String, event: String) {
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

    fn take(&self, n: usize) -> Vec<(String, String)> {
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

pub struct RedisKeyspaceSource {
    pipeline: String,
    cmd: ConnectionManager,
    /// With `sync`: the script that reads a key with its companion.
    sync: Option<redis::Script>,
    shared: Arc<Shared>,
    /// The subscription task; none for a one-off snapshot.
    listener: Option<JoinHandle<()>>,
    pattern: String,
    events: Option<HashSet<String>>,
    snapshot: bool,
    /// `until = "snapshot"`: end once the scan's keys are emitted.
    once: bool,
    /// With `once` and the pattern `*`: the keys in the database at start.
    expected: Option<u64>,
    /// The SCAN cursor while a scan is under way.
    scan: Option<u64>,
    scanned: VecDeque<String>,
    ready: VecDeque<Envelope>,
}

impl RedisKeyspaceSource {
    pub async fn open(
        pipeline: &str,
        config: &RedisKeyspaceSourceConfig,
        probe: &Probe,
    ) -> Result<Self, ConnectorError> {
        let mut cmd = connect(&config.access(), Duration::from_secs(10))?;
        let once = config.until == KeyspaceUntil::Snapshot;
        if !once {
            ensure_notifications(&mut cmd, config.configure_notifications).await?;
        }
        let client = config.access().client()?;
        let channel = format!("__keyspace@{}__:{}", config.url.db(), config.pattern);
        let shared = Arc::new(Shared {
            dirty: Mutex::new(Dirty::default()),
            notify: Notify::new(),
            rescan: AtomicBool::new(false),
            fatal: Mutex::new(None),
            max_pending: config.max_pending_keys.get(),
            pipeline: pipeline.to_owned(),
            probe: probe.clone(),
        });
        let listener = if once {
            None
        } else {
            let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
            let listener = tokio::spawn(listen(
                client,
                cmd.clone(),
                config.configure_notifications,
                channel.clone(),
                Arc::clone(&shared),
                config.snapshot,
                subscribed_tx,
            ));
            // Subscribe before scanning, so no change falls between the two.
            let _ = tokio::time::timeout(Duration::from_secs(10), subscribed_rx).await;
            Some(listener)
        };
        // Every key of the database: its size is the job's size.
        let expected = if once && config.pattern.as_str() == "*" {
            let n: u64 = redis::cmd("DBSIZE")
                .query_async(&mut cmd)
                .await
                .map_err(|e| ConnectorError::redis("counting keys", e))?;
            Some(n)
        } else {
            None
        };
        info!(
            pipeline,
            channel,
            snapshot = config.snapshot,
            once,
            "redis keyspace source ready"
        );
        Ok(Self {
            pipeline: pipeline.to_owned(),
            cmd,
            sync: config
                .sync
                .then(|| redis::Script::new(sync::OBSERVE_SCRIPT)),
            shared,
            listener,
            pattern: config.pattern.to_string(),
            events: config
                .events
                .as_ref()
                .map(|es| es.iter().map(ToString::to_string).collect()),
            snapshot: config.snapshot,
            once,
            expected,
            scan: config.snapshot.then_some(0),
            scanned: VecDeque::new(),
            ready: VecDeque::new(),
        })
    }

    fn err(&self, what: &str, e: redis::RedisError) -> ConnectorError {
        ConnectorError::redis(format!("{what} ({})", self.pattern), e)
    }

    async fn scan_page(&mut self, cursor: u64) -> Result<(), ConnectorError> {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&self.pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(&mut self.cmd)
            .await
            .map_err(|e| self.err("scanning keys", e))?;
        self.scanned.extend(keys);
        self.scan = (next != 0).then_some(next);
        if next == 0 {
            info!(pipeline = %self.pipeline, pattern = %self.pattern, "keyspace scan finished");
        }
        Ok(())
    }

    /// Reads the current values of `keys` and queues them to be emitted.
    async fn read(&mut self, keys: Vec<(String, String)>) -> Result<(), ConnectorError> {
        let keys = keys
            .into_iter()
            .filter(|(key, _)| !key.starts_with(sync::RESERVED_PREFIX))
            .collect();
        let plain = match self.sync.clone() {
            Some(script) => self.read_synced(&script, keys).await?,
            None => keys,
        };
        self.read_plain(plain).await
    }

    /// With `sync`: reads keys with their companions (one pipelined round
    /// trip); returns the keys of types sync does not handle.
    async fn read_synced(
        &mut self,
        script: &redis::Script,
        keys: Vec<(String, String)>,
    ) -> Result<Vec<(String, String)>, ConnectorError> {
        let changes: Vec<String> = keys.iter().map(|_| sync::change_id()).collect();
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        for ((key, _), change) in keys.iter().zip(&changes) {
            pipe.add_command(sync::observe_call(script.get_hash(), key, change));
        }
        let replies: Vec<redis::RedisResult<redis::Value>> = pipe
            .query_async(&mut self.cmd)
            .await
            .map_err(|e| self.err("reading keys with their companions", e))?;
        if replies
            .iter()
            .any(|r| r.as_ref().is_err_and(|e| e.code() == Some("NOSCRIPT")))
        {
            // A restarted or flushed server forgot the script: load it and
            // read these keys again.
            script
                .load_async(&mut self.cmd)
                .await
                .map_err(|e| self.err("loading the sync script", e))?;
            for (key, event) in keys {
                self.shared.changed(key, event);
            }
            return Ok(Vec::new());
        }
        let mut plain = Vec::new();
        for (((key, event), change), reply) in keys.into_iter().zip(changes).zip(replies) {
            match observed(reply) {
                Observed::Other => plain.push((key, event)),
                Observed::Unchanged => {
                    debug!(pipeline = %self.pipeline, key, event, "ferry's own write, or no change; not emitted");
                }
                Observed::Changed(kind, value) => {
                    let payload = encode_value(&kind, &value);
                    self.emit(key, event, kind, payload, Some(change));
                }
            }
        }
        Ok(plain)
    }

    /// Reads the current values of `keys` (two pipelined round trips).
    async fn read_plain(&mut self, keys: Vec<(String, String)>) -> Result<(), ConnectorError> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut types = redis::pipe();
        for (key, _) in &keys {
            types.cmd("TYPE").arg(key);
        }
        let types: Vec<String> = types
            .query_async(&mut self.cmd)
            .await
            .map_err(|e| self.err("reading key types", e))?;
        let mut reads = redis::pipe();
        reads.ignore_errors();
        for ((key, _), kind) in keys.iter().zip(&types) {
            match kind.as_str() {
                "string" => reads.cmd("GET").arg(key),
                "hash" => reads.cmd("HGETALL").arg(key),
                "list" => reads.cmd("LRANGE").arg(key).arg(0).arg(-1),
                "set" => reads.cmd("SMEMBERS").arg(key),
                "zset" => reads
                    .cmd("ZRANGE")
                    .arg(key)
                    .arg(0)
                    .arg(-1)
                    .arg("WITHSCORES"),
                "stream" => reads.cmd("XINFO").arg("STREAM").arg(key),
                _ => reads.cmd("EXISTS").arg(key),
            };
        }
        let values: Vec<redis::RedisResult<redis::Value>> = reads
            .query_async(&mut self.cmd)
            .await
            .map_err(|e| self.err("reading values", e))?;
        for (((key, event), kind), value) in keys.into_iter().zip(types).zip(values) {
            let value = match value {
                Ok(v) => v,
                // The key changed type in between: read it again later.
                Err(_) => {
                    self.shared.changed(key, event);
                    continue;
                }
            };
            let payload = encode_value(&kind, &value);
            self.emit(key, event, kind, payload, None);
        }
        Ok(())
    }

    /// Queues the message for a key's value (`None`: it is gone), with the
    /// id of the change when it is sent for a two-way sync.
    fn emit(
        &mut self,
        key: String,
        event: String,
        kind: String,
        payload: Option<Bytes>,
        change: Option<String>,
    ) {
        let mut headers = Headers::new();
        headers.push(EVENT_HEADER, event.clone());
        headers.push(TYPE_HEADER, kind);
        if let Some(change) = change {
            headers.push(sync::CHANGE_HEADER, change);
        }
        let message = Message {
            key: Some(Bytes::from(key.clone())),
            payload,
            headers,
            timestamp: Some(crate::clock::now_ms()),
            origin: Origin::RedisKeyspace { key, event },
            ..Message::default()
        };
        self.ready.push_back(Envelope::new(message, Ack::none()));
    }

    fn wanted(&self, event: &str) -> bool {
        event == "snapshot" || self.events.as_ref().is_none_or(|es| es.contains(event))
    }
}

/// The value of a key as a payload; `None` (a tombstone) if it is gone.
pub fn encode_value(kind: &str, value: &redis::Value) -> Option<Bytes> {
    use serde_json::{Map, Value as J};
    let strings = |v: &redis::Value| -> Vec<String> {
        match v {
            redis::Value::Array(items) | redis::Value::Set(items) => {
                items.iter().filter_map(text).collect()
            }
            _ => Vec::new(),
        }
    };
    let pairs = |v: &redis::Value| -> Vec<(String, String)> {
        match v {
            redis::Value::Map(kv) => kv
                .iter()
                .filter_map(|(k, v)| Some((text(k)?, text(v).or_else(|| double(v))?)))
                .collect(),
            _ => strings(v)
                .chunks(2)
                .filter_map(|kv| Some((kv.first()?.clone(), kv.get(1)?.clone())))
                .collect(),
        }
    };
    let json = match kind {
        "string" => {
            return match value {
                redis::Value::BulkString(b) => Some(Bytes::copy_from_slice(b)),
                redis::Value::Nil => None,
                other => text(other).map(Bytes::from),
            };
        }
        "hash" => J::Object(
            pairs(value)
                .into_iter()
                .map(|(k, v)| (k, J::String(v)))
                .collect(),
        ),
        "list" => J::Array(strings(value).into_iter().map(J::String).collect()),
        "set" => {
            let mut members = strings(value);
            members.sort();
            J::Array(members.into_iter().map(J::String).collect())
        }
        "zset" => J::Object(
            pairs(value)
                .into_iter()
                .map(|(m, s)| {
                    let score = s.parse::<f64>().ok().and_then(serde_json::Number::from_f64);
                    (m, score.map_or(J::String(s), J::Number))
                })
                .collect(),
        ),
        "stream" => {
            let info: HashMap<String, &redis::Value> = match value {
                redis::Value::Map(kv) => {
                    kv.iter().filter_map(|(k, v)| Some((text(k)?, v))).collect()
                }
                redis::Value::Array(flat) => flat
                    .chunks(2)
                    .filter_map(|kv| Some((text(&kv[0])?, kv.get(1)?)))
                    .collect(),
                _ => HashMap::new(),
            };
            let mut out = Map::new();
            if let Some(n) = info.get("length").and_then(|v| text(v)) {
                out.insert(
                    "length".into(),
                    n.parse::<u64>().map_or(J::String(n), J::from),
                );
            }
            if let Some(id) = info.get("last-generated-id").and_then(|v| text(v)) {
                out.insert("last_id".into(), J::String(id));
            }
            let last = info
                .get("last-entry")
                .and_then(|v| parse_entries(&redis::Value::Array(vec![(*v).clone()])).ok())
                .and_then(|mut e| e.pop())
                .and_then(|e| e.fields);
            if let Some(fields) = last {
                let entry = fields
                    .into_iter()
                    .map(|(f, v)| (f, J::String(String::from_utf8_lossy(&v).into_owned())))
                    .collect();
                out.insert("last_entry".into(), J::Object(entry));
            }
            J::Object(out)
        }
        _ => return None,
    };
    Some(Bytes::from(json.to_string()))
}

/// What the sync observe script found for a key.
#[derive(Debug, PartialEq)]
enum Observed {
    /// A type sync does not handle: read it the usual way.
    Other,
    /// The value ferry last wrote or sent: nothing to emit.
    Unchanged,
    /// A change made in Redis: its type and value.
    Changed(String, redis::Value),
}

/// Reads the observe script's reply (`{type, status, value}`); anything
/// unexpected is read again the usual way.
fn observed(reply: redis::RedisResult<redis::Value>) -> Observed {
    let Ok(redis::Value::Array(parts)) = reply else {
        return Observed::Other;
    };
    let kind = parts.first().and_then(text).unwrap_or_default();
    match parts.get(1) {
        Some(redis::Value::Int(0)) => Observed::Unchanged,
        Some(redis::Value::Int(1)) => {
            Observed::Changed(kind, parts.get(2).cloned().unwrap_or(redis::Value::Nil))
        }
        _ => Observed::Other,
    }
}

fn double(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::Double(d) => Some(d.to_string()),
        _ => None,
    }
}

/// Keeps the keyspace subscription alive; marks a rescan after every
/// reconnect, since notifications sent meanwhile are lost.
async fn listen(
    client: redis::Client,
    mut cmd: ConnectionManager,
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
                    *shared.fatal.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
                    shared.notify.notify_one();
                    return;
                }
            }
        }
        let pubsub = async {
            let mut p = client.get_async_pubsub().await?;
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
async fn ensure_notifications(
    conn: &mut ConnectionManager,
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
pub fn notifications_enabled(flags: &str) -> bool {
    flags.contains('K') && (flags.contains('A') || "g$lshzxt".chars().all(|c| flags.contains(c)))
}

impl Source for RedisKeyspaceSource {
    async fn next(&mut self) -> Result<Option<Envelope>, ConnectorError> {
        loop {
            if let Some(envelope) = self.ready.pop_front() {
                return Ok(Some(envelope));
            }
            if let Some(e) = self
                .shared
                .fatal
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
            {
                return Err(ConnectorError::Fatal(e));
            }
            if self.snapshot
                && self.shared.rescan.swap(false, Ordering::Relaxed)
                && self.scan.is_none()
            {
                self.scan = Some(0);
            }
            // Changes first, then the scan, so fresh events are not stuck
            // behind a large keyspace.
            let mut keys: Vec<(String, String)> = self
                .shared
                .take(READ_BATCH)
                .into_iter()
                .filter(|(_, e)| self.wanted(e))
                .collect();
            while keys.len() < READ_BATCH {
                let Some(key) = self.scanned.pop_front() else {
                    break;
                };
                keys.push((key, "snapshot".into()));
            }
            if !keys.is_empty() {
                self.read(keys).await?;
                continue;
            }
            if let Some(cursor) = self.scan {
                self.scan_page(cursor).await?;
                continue;
            }
            if self.once {
                return Ok(None);
            }
            self.shared.notify.notified().await;
        }
    }

    fn expected(&self) -> Option<u64> {
        self.expected
    }

    async fn close(self) -> Result<(), ConnectorError> {
        if let Some(listener) = self.listener {
            listener.abort();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> redis::Value {
        redis::Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn values_are_encoded_by_type() {
        let enc = |kind, v| encode_value(kind, &v).map(|b| String::from_utf8(b.to_vec()).unwrap());
        assert_eq!(enc("string", bulk("hello")).as_deref(), Some("hello"));
        assert_eq!(enc("string", redis::Value::Nil), None);
        assert_eq!(enc("none", redis::Value::Int(0)), None);
        let hash = redis::Value::Array(vec![bulk("name"), bulk("ada"), bulk("age"), bulk("36")]);
        assert_eq!(
            enc("hash", hash).as_deref(),
            Some(r#"{"name":"ada","age":"36"}"#)
        );
        let set = redis::Value::Array(vec![bulk("b"), bulk("a")]);
        assert_eq!(enc("set", set).as_deref(), Some(r#"["a","b"]"#));
        let zset = redis::Value::Array(vec![bulk("x"), bulk("1.5")]);
        assert_eq!(enc("zset", zset).as_deref(), Some(r#"{"x":1.5}"#));
        let list = redis::Value::Array(vec![bulk("1"), bulk("2")]);
        assert_eq!(enc("list", list).as_deref(), Some(r#"["1","2"]"#));
    }

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
        let shared = Shared {
            dirty: Mutex::new(Dirty::default()),
            notify: Notify::new(),
            rescan: AtomicBool::new(false),
            fatal: Mutex::new(None),
            max_pending: 2,
            pipeline: "p".into(),
            probe: Probe::detached("p", "source"),
        };
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
