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
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::connectors::redis::connection::RedisConn;
use bytes::Bytes;
use tokio::task::JoinHandle;
use tracing::{debug, info};

use crate::ack::Ack;
use crate::connectors::redis::access::{RedisAccess, connect, connect_node};
use crate::connectors::redis::config::{KeyspaceUntil, RedisKeyspaceSourceConfig};
use crate::connectors::redis::key_value::{Observed, encode_value, observed, read_command};
use crate::connectors::redis::named::Endpoint;
use crate::connectors::redis::sync;
use crate::connectors::{Envelope, Source};
use crate::error::ConnectorError;
use crate::message::{Headers, Message, Origin};
use crate::observe::Probe;

mod changes;
mod cluster;
mod read;

pub(crate) use changes::notifications_enabled;
use changes::{Shared, ensure_notifications, listen};

/// Header naming the keyspace event (`set`, `hset`, `del`, `expired`,
/// `snapshot` for keys found by a scan).
pub(crate) const EVENT_HEADER: &str = "redis.event";
/// Header naming the key's type (`string`, `hash`, ..., `none` if deleted).
pub(crate) const TYPE_HEADER: &str = "redis.type";

const READ_BATCH: usize = 100;
const SCAN_COUNT: usize = 500;

pub struct RedisKeyspaceSource {
    pipeline: String,
    cmd: RedisConn,
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
    /// The scan under way.
    scan: Option<Scan>,
    /// On a cluster: how to reach each primary for a scan.
    access: Option<Box<RedisAccess>>,
    scanned: VecDeque<String>,
    /// The type of the last key read: the read sent with the next keys'
    /// `TYPE`s.
    likely: String,
    /// The next keys' read, sent while the last ones are emitted.
    ahead: Option<read::Ahead>,
    ready: VecDeque<Envelope>,
    /// With `sync`: the change ids of keys whose read with the script may
    /// have run without its reply arriving (at most one batch).
    unsettled: HashMap<String, String>,
}

/// A scan of the keyspace: the nodes still to scan (fetched when the scan
/// starts: every primary on a cluster) and the cursor on the first.
#[derive(Default)]
struct Scan {
    nodes: Option<VecDeque<RedisConn>>,
    cursor: u64,
}

impl RedisKeyspaceSource {
    pub async fn open(
        pipeline: &str,
        config: &RedisKeyspaceSourceConfig,
        probe: &Probe,
    ) -> Result<Self, ConnectorError> {
        let mut cmd = connect(&config.access(), Duration::from_secs(10))?;
        let once = config.until == KeyspaceUntil::Snapshot;
        let channel = format!("__keyspace@{}__:{}", config.url.db(), config.pattern);
        let shared = Arc::new(Shared::new(config.max_pending_keys.get(), pipeline, probe));
        let listener = if once {
            None
        } else if let RedisConn::Cluster(cluster) = &cmd {
            let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
            let follow = cluster::Follow {
                cluster: cluster.clone(),
                access: config.access(),
                configure: config.configure_notifications,
                channel: channel.clone(),
                shared: Arc::clone(&shared),
                snapshot: config.snapshot,
            };
            let listener = tokio::spawn(cluster::follow(follow, subscribed_tx));
            // Subscribe on every primary before scanning.
            let _ = tokio::time::timeout(Duration::from_secs(20), subscribed_rx).await;
            Some(listener)
        } else {
            ensure_notifications(&mut cmd, config.configure_notifications).await?;
            let server = match &cmd {
                RedisConn::Sentinel(s) => s
                    .primary_client()
                    .await
                    .map(Endpoint::plain)
                    .map_err(|e| ConnectorError::redis("asking the sentinels", e))?,
                _ => config.access().endpoint()?,
            };
            let (subscribed_tx, subscribed_rx) = tokio::sync::oneshot::channel();
            let listener = tokio::spawn(listen(
                server,
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
        let access = cmd.is_cluster().then(|| Box::new(config.access()));
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
            scan: config.snapshot.then(Scan::default),
            access,
            scanned: VecDeque::new(),
            likely: "string".to_owned(),
            ahead: None,
            ready: VecDeque::new(),
            unsettled: HashMap::new(),
        })
    }

    fn err(&self, what: &str, e: redis::RedisError) -> ConnectorError {
        ConnectorError::redis(format!("{what} ({})", self.pattern), e)
    }

    /// One page of the scan: `SCAN` on the server, or on each primary in
    /// turn on a cluster (a cluster's keys are spread over its primaries).
    async fn scan_page(&mut self) -> Result<(), ConnectorError> {
        let Some(mut scan) = self.scan.take() else {
            return Ok(());
        };
        if scan.nodes.is_none() {
            scan.nodes = Some(match &self.access {
                Some(access) => {
                    let RedisConn::Cluster(cluster) = &self.cmd else {
                        return Ok(());
                    };
                    let primaries = match cluster.primaries().await {
                        Ok(p) => p,
                        Err(e) => {
                            self.scan = Some(scan);
                            return Err(self.err("listing the cluster's primaries", e));
                        }
                    };
                    let mut nodes = VecDeque::new();
                    for node in primaries {
                        nodes.push_back(connect_node(access, &node, Duration::from_secs(10))?);
                    }
                    nodes
                }
                None => VecDeque::from([self.cmd.clone()]),
            });
        }
        let Some(mut node) = scan.nodes.as_ref().and_then(|n| n.front().cloned()) else {
            info!(pipeline = %self.pipeline, pattern = %self.pattern, "keyspace scan finished");
            return Ok(());
        };
        let reply: redis::RedisResult<(u64, Vec<String>)> = redis::cmd("SCAN")
            .arg(scan.cursor)
            .arg("MATCH")
            .arg(&self.pattern)
            .arg("COUNT")
            .arg(SCAN_COUNT)
            .query_async(&mut node)
            .await;
        let (next, keys) = match reply {
            Ok(r) => r,
            Err(e) => {
                // On a cluster the node may have failed over: list the
                // primaries again and scan them all from the start.
                self.scan = Some(if self.access.is_some() {
                    Scan::default()
                } else {
                    scan
                });
                return Err(self.err("scanning keys", e));
            }
        };
        self.scanned.extend(keys);
        scan.cursor = next;
        if next == 0
            && let Some(nodes) = scan.nodes.as_mut()
        {
            nodes.pop_front();
            if nodes.is_empty() {
                info!(pipeline = %self.pipeline, pattern = %self.pattern, "keyspace scan finished");
                return Ok(());
            }
        }
        self.scan = Some(scan);
        Ok(())
    }

    /// Reads the current values of `keys` and queues them to be emitted.
    /// Keys whose read failed wait to be read again: a reply lost on a cut
    /// connection loses no key.
    async fn read(&mut self, keys: Vec<(String, String)>) -> Result<(), ConnectorError> {
        let keys: Vec<_> = keys
            .into_iter()
            .filter(|(key, _)| !key.starts_with(sync::RESERVED_PREFIX))
            .collect();
        let plain = match self.sync.clone() {
            Some(script) => match self.read_synced(&script, &keys).await {
                Ok(plain) => plain,
                Err(e) => {
                    self.put_back(keys);
                    return Err(e);
                }
            },
            None => keys,
        };
        // A failed read has put back the keys it did not emit.
        self.read_plain(plain).await
    }

    fn put_back(&self, keys: Vec<(String, String)>) {
        for (key, event) in keys {
            self.shared.changed(key, event);
        }
    }

    /// With `sync`: reads keys with their companions (one pipelined round
    /// trip); returns the keys of types sync does not handle.
    ///
    /// The script records what it saw, so a read whose reply was lost would
    /// find nothing new the next time: a key read again after a failure
    /// keeps its change id, which makes the script report the change again.
    async fn read_synced(
        &mut self,
        script: &redis::Script,
        keys: &[(String, String)],
    ) -> Result<Vec<(String, String)>, ConnectorError> {
        let changes: Vec<String> = keys
            .iter()
            .map(|(key, _)| self.unsettled.remove(key).unwrap_or_else(sync::change_id))
            .collect();
        for ((key, _), change) in keys.iter().zip(&changes) {
            self.unsettled.insert(key.clone(), change.clone());
        }
        let calls: Vec<redis::Cmd> = keys
            .iter()
            .zip(&changes)
            .map(|((key, _), change)| sync::observe_call(script.get_hash(), key, change))
            .collect();
        let replies = self
            .cmd
            .run(&calls, false)
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
            self.put_back(keys.to_vec());
            return Ok(Vec::new());
        }
        let mut plain = Vec::new();
        for (((key, event), change), reply) in keys.iter().zip(changes).zip(replies) {
            self.unsettled.remove(key);
            match observed(reply) {
                Observed::Other => plain.push((key.clone(), event.clone())),
                Observed::Unchanged => {
                    debug!(pipeline = %self.pipeline, key, event, "ferry's own write, or no change; not emitted");
                }
                Observed::Changed(kind, value) => {
                    let payload = encode_value(&kind, value);
                    self.emit(key.clone(), event.clone(), kind, payload, Some(change));
                }
            }
        }
        Ok(plain)
    }

    /// Reads the current values of `keys` and waits for them (see
    /// [`read`]). Keys not emitted when it fails wait to be read again.
    async fn read_plain(&mut self, keys: Vec<(String, String)>) -> Result<(), ConnectorError> {
        if keys.is_empty() {
            return Ok(());
        }
        let ahead = read::send(&self.cmd, keys, self.likely.clone());
        self.finish(ahead).await
    }

    /// Sends the next keys' read ahead, if there are keys and none is on
    /// its way (not with `sync`, whose reads record what they saw).
    fn read_ahead(&mut self) {
        if self.ahead.is_some() || self.sync.is_some() {
            return;
        }
        let keys = self.next_keys();
        if !keys.is_empty() {
            self.ahead = Some(read::send(&self.cmd, keys, self.likely.clone()));
        }
    }

    /// Emits what a read sent ahead brought, reading the keys of another
    /// type than guessed again. Keys not emitted when it fails wait to be
    /// read again.
    async fn finish(&mut self, ahead: read::Ahead) -> Result<(), ConnectorError> {
        let read::Ahead {
            keys,
            guessed,
            replies,
        } = ahead;
        let replies = match replies.await {
            Ok(Ok(replies)) => replies,
            Ok(Err(e)) => {
                self.put_back(keys);
                return Err(self.err("reading keys", e));
            }
            Err(e) => {
                self.put_back(keys);
                return Err(ConnectorError::Retry(format!("reading keys: {e}")));
            }
        };
        let sorted = match read::sort(keys, guessed, replies) {
            Ok(sorted) => sorted,
            Err((keys, e)) => {
                self.put_back(keys);
                return Err(self.err("reading key types", e));
            }
        };
        self.likely = sorted.likely;
        for (key, event, kind, value) in sorted.read {
            self.emit_read(key, event, kind, value);
        }
        if sorted.again.is_empty() {
            return Ok(());
        }
        let reads: Vec<redis::Cmd> = sorted
            .again
            .iter()
            .map(|(key, _, kind)| read_command(kind, key))
            .collect();
        let values = match self.cmd.run(&reads, false).await {
            Ok(values) => values,
            Err(e) => {
                // The keys of the first round trip are emitted: only the
                // others wait to be read again.
                for (key, event, _) in sorted.again {
                    self.shared.changed(key, event);
                }
                return Err(self.err("reading values", e));
            }
        };
        for ((key, event, kind), value) in sorted.again.into_iter().zip(values) {
            self.emit_read(key, event, kind, value);
        }
        Ok(())
    }

    /// Emits the value read for a key of type `kind`; a read that failed
    /// (the key changed type in between) is done again later.
    fn emit_read(
        &mut self,
        key: String,
        event: String,
        kind: String,
        value: redis::RedisResult<redis::Value>,
    ) {
        match value {
            Ok(value) => {
                let payload = encode_value(&kind, value);
                self.emit(key, event, kind, payload, None);
            }
            Err(_) => self.shared.changed(key, event),
        }
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

    /// The next keys to read: changes first, then the scan's, so fresh
    /// events are not stuck behind a large keyspace.
    fn next_keys(&mut self) -> Vec<read::Changed> {
        let mut keys: Vec<read::Changed> = self
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
        keys
    }

    fn wanted(&self, event: &str) -> bool {
        event == "snapshot" || self.events.as_ref().is_none_or(|es| es.contains(event))
    }
}

/// Keeps the keyspace subscription alive; marks a rescan after every
/// reconnect, since notifications sent meanwhile are lost.
impl Source for RedisKeyspaceSource {
    async fn next(&mut self) -> Result<Option<Envelope>, ConnectorError> {
        loop {
            if let Some(envelope) = self.ready.pop_front() {
                self.read_ahead();
                return Ok(Some(envelope));
            }
            if let Some(e) = crate::sync::lock(&self.shared.fatal).take() {
                return Err(ConnectorError::Fatal(e));
            }
            // A rescan asked for while a scan runs waits for it to end: the
            // running scan's cursor may be past keys whose changes were lost.
            if self.snapshot
                && self.scan.is_none()
                && self.shared.rescan.swap(false, Ordering::Relaxed)
            {
                self.scan = Some(Scan::default());
            }
            if let Some(ahead) = self.ahead.take() {
                self.finish(ahead).await?;
                continue;
            }
            let keys = self.next_keys();
            if !keys.is_empty() {
                self.read(keys).await?;
                continue;
            }
            if self.scan.is_some() {
                self.scan_page().await?;
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
        if let Some(ahead) = self.ahead {
            ahead.replies.abort();
        }
        Ok(())
    }
}
