//! The Redis sources' settings: streams, lists, pub/sub and keyspace.

use super::*;
use crate::connectors::redis::slots::same_slot;
use crate::position::stream_id;

/// Where a newly created consumer group starts reading a stream.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamStart {
    /// Only entries added after the group was created (`$`).
    New,
    /// Every entry already in the stream (`0`).
    #[default]
    Earliest,
}

/// `type = "redis-stream"`: a consumer in a Redis consumer group.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisStreamSourceConfig {
    pub url: RedisUrl,
    /// ACL user (`AUTH username password`); needs `password`.
    pub username: Option<String>,
    /// The password of `username`, or the legacy `requirepass` password
    /// alone. Write `"${VAR}"` or `"${file:/path}"`; never shown.
    pub password: Option<Secret>,
    /// TLS settings for a `rediss://` url: private CA, client certificate.
    pub tls: Option<TlsConfig>,
    /// Redis Cluster: `url` is any node of the cluster; the others are
    /// found from it, and commands go to the node that owns their slot.
    #[serde(default)]
    pub cluster: bool,
    /// A primary watched by Sentinel: found through the sentinels and
    /// followed when they fail it over. `url` then only gives the
    /// database (and TLS); its host is not used.
    pub sentinel: Option<SentinelConfig>,
    /// Streams to read (one group name for all).
    pub streams: Vec<NonEmpty>,
    /// Consumer group. Several ferry processes in the same group share the
    /// entries: this is how a stream source scales out.
    pub group: NonEmpty,
    /// This consumer's name in the group; must stay the same across
    /// restarts so that ferry re-reads what it had not confirmed. Defaults
    /// to `ferry-<pipeline>-<hostname>`.
    pub consumer: Option<NonEmpty>,
    /// Where the group starts when ferry creates it.
    #[serde(default)]
    pub start: StreamStart,
    /// Instead of `start`: a group ferry creates begins at this entry id
    /// (`1714557600000-0`, or `1714557600000` for its first entry),
    /// inclusive. An existing group keeps its place.
    pub start_id: Option<EntryId>,
    /// Instead of `start`: a group ferry creates begins at the first entry
    /// added at or after this time (RFC 3339 or epoch milliseconds).
    pub start_time: Option<Time>,
    /// With `until = "end"`: end before this entry id (exclusive) rather
    /// than at the end the stream had at start.
    pub end_id: Option<EntryId>,
    /// With `until = "end"`: end before the first entry added at or after
    /// this time (RFC 3339 or epoch milliseconds).
    pub end_time: Option<Time>,
    /// Create the group (and the stream) when missing.
    #[serde(default = "yes")]
    pub create_group: bool,
    /// Entries per read.
    #[serde(default = "default_read_batch")]
    pub batch_size: Count<Batch>,
    /// How long one read waits for new entries.
    #[serde(default = "default_block")]
    pub block: Span<Block>,
    /// Entries pending this long with another consumer are claimed
    /// (`XAUTOCLAIM`): that consumer is presumed dead.
    #[serde(default = "default_claim_idle")]
    pub claim_idle: Span<ClaimIdle>,
    /// An entry delivered this many times without being confirmed goes to
    /// the dead-letter sink instead of being tried again.
    #[serde(default = "default_max_deliveries")]
    pub max_deliveries: Count<Attempts>,
    /// Delete entries every group has acknowledged (`XTRIM MINID`).
    #[serde(default)]
    pub trim: bool,
    /// `forever` (a daemon) or `end`: stop once the group has been given
    /// every entry the streams held when ferry started (a one-off copy).
    #[serde(default)]
    pub until: Until,
}

/// Which end of a list is popped.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListEnd {
    Left,
    /// The oldest element when producers `LPUSH` (a FIFO queue).
    #[default]
    Right,
}

impl ListEnd {
    pub fn name(self) -> &'static str {
        match self {
            ListEnd::Left => "LEFT",
            ListEnd::Right => "RIGHT",
        }
    }
}

/// `type = "redis-list"`: reliable queue consumption through a processing
/// list.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisListSourceConfig {
    pub url: RedisUrl,
    /// ACL user (`AUTH username password`); needs `password`.
    pub username: Option<String>,
    /// The password of `username`, or the legacy `requirepass` password
    /// alone. Write `"${VAR}"` or `"${file:/path}"`; never shown.
    pub password: Option<Secret>,
    /// TLS settings for a `rediss://` url: private CA, client certificate.
    pub tls: Option<TlsConfig>,
    /// Redis Cluster: `url` is any node of the cluster; the others are
    /// found from it, and commands go to the node that owns their slot.
    #[serde(default)]
    pub cluster: bool,
    /// A primary watched by Sentinel: found through the sentinels and
    /// followed when they fail it over. `url` then only gives the
    /// database (and TLS); its host is not used.
    pub sentinel: Option<SentinelConfig>,
    pub list: NonEmpty,
    /// Which end to pop.
    #[serde(default)]
    pub pop: ListEnd,
    /// Where popped elements wait until every sink confirmed them. Defaults
    /// to `<list>:processing:<consumer>`.
    pub processing_list: Option<NonEmpty>,
    /// Names the default processing list; must stay the same across
    /// restarts. Defaults to `ferry-<pipeline>-<hostname>`.
    pub consumer: Option<NonEmpty>,
    #[serde(default = "default_read_batch")]
    pub batch_size: Count<Batch>,
    #[serde(default = "default_block")]
    pub block: Span<Block>,
    /// `forever` (a daemon) or `end`: stop once the list is empty (a
    /// one-off drain).
    #[serde(default)]
    pub until: Until,
}

/// `type = "redis-pubsub"`: at-most-once, as Redis pub/sub itself.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisPubSubSourceConfig {
    pub url: RedisUrl,
    /// ACL user (`AUTH username password`); needs `password`.
    pub username: Option<String>,
    /// The password of `username`, or the legacy `requirepass` password
    /// alone. Write `"${VAR}"` or `"${file:/path}"`; never shown.
    pub password: Option<Secret>,
    /// TLS settings for a `rediss://` url: private CA, client certificate.
    pub tls: Option<TlsConfig>,
    /// Redis Cluster: `url` is any node of the cluster; the others are
    /// found from it, and commands go to the node that owns their slot.
    #[serde(default)]
    pub cluster: bool,
    /// A primary watched by Sentinel: found through the sentinels and
    /// followed when they fail it over. `url` then only gives the
    /// database (and TLS); its host is not used.
    pub sentinel: Option<SentinelConfig>,
    #[serde(default)]
    pub channels: Vec<NonEmpty>,
    #[serde(default)]
    pub patterns: Vec<NonEmpty>,
    /// Sharded pub/sub (`SSUBSCRIBE`, Redis 7, with `cluster = true`): each
    /// channel is read on the shard that owns its slot.
    #[serde(default)]
    pub shard_channels: Vec<NonEmpty>,
    /// Messages held while the pipeline is busy; beyond that new messages
    /// are dropped (and counted in the log), as Redis itself would drop a
    /// slow subscriber.
    #[serde(default = "default_pubsub_buffer")]
    pub buffer: Count<Buffer>,
}

/// `type = "redis-keyspace"`: the current value of keys that change.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisKeyspaceSourceConfig {
    pub url: RedisUrl,
    /// ACL user (`AUTH username password`); needs `password`.
    pub username: Option<String>,
    /// The password of `username`, or the legacy `requirepass` password
    /// alone. Write `"${VAR}"` or `"${file:/path}"`; never shown.
    pub password: Option<Secret>,
    /// TLS settings for a `rediss://` url: private CA, client certificate.
    pub tls: Option<TlsConfig>,
    /// Redis Cluster: `url` is any node of the cluster; the others are
    /// found from it, and commands go to the node that owns their slot.
    #[serde(default)]
    pub cluster: bool,
    /// A primary watched by Sentinel: found through the sentinels and
    /// followed when they fail it over. `url` then only gives the
    /// database (and TLS); its host is not used.
    pub sentinel: Option<SentinelConfig>,
    /// Keys to watch, a Redis glob: `user:*`.
    pub pattern: NonEmpty,
    /// Only these events (`set`, `hset`, `del`, `expired`, ...); all when absent.
    pub events: Option<Vec<NonEmpty>>,
    /// Emit every matching key once at start (and after a reconnect, when
    /// notifications may have been missed).
    #[serde(default = "yes")]
    pub snapshot: bool,
    /// Turn on `notify-keyspace-events` if Redis has it off (`CONFIG SET`);
    /// otherwise ferry refuses to start and says what to set.
    #[serde(default)]
    pub configure_notifications: bool,
    /// Changed keys remembered while the pipeline is busy (a key that
    /// changes twice is read once). Beyond that ferry forgets them and
    /// scans the keyspace again instead, so memory stays bounded.
    #[serde(default = "default_pending_keys")]
    pub max_pending_keys: Count<PendingKeys>,
    /// `snapshot`: a one-off copy. Emit every matching key once and stop,
    /// without subscribing (keyspace notifications are not needed).
    #[serde(default)]
    pub until: KeyspaceUntil,
    /// Two-way sync: read string and hash keys with their companion, so
    /// that writes of a Redis sink with `sync` are not sent back, and mark
    /// each change sent so that the sink holds off older records meanwhile.
    /// Needs an `origin`.
    #[serde(default)]
    pub sync: bool,
}

/// When a keyspace source ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyspaceUntil {
    /// Never: follow changes after the snapshot.
    #[default]
    Forever,
    /// Once the snapshot has been emitted.
    Snapshot,
}

fn yes() -> bool {
    true
}

fn default_read_batch() -> Count<Batch> {
    Count::new(200)
}

fn default_block() -> Span<Block> {
    Span::new(Duration::from_secs(2))
}

fn default_claim_idle() -> Span<ClaimIdle> {
    Span::new(Duration::from_secs(60))
}

fn default_max_deliveries() -> Count<Attempts> {
    Count::new(10)
}

fn default_pubsub_buffer() -> Count<Buffer> {
    Count::new(10_000)
}

fn default_pending_keys() -> Count<PendingKeys> {
    Count::new(100_000)
}

impl RedisListSourceConfig {
    /// The processing list: `processing_list`, or `<list>:processing:<consumer>`.
    /// On a Redis Cluster `LMOVE` needs both lists in one slot, so a list
    /// without a hash tag of its own is wrapped in one: `{<list>}:processing:<consumer>`
    /// (a key named `{x}...` has the slot of `x`).
    pub fn processing(&self, consumer: &str) -> String {
        let list = self.list.as_str();
        match &self.processing_list {
            Some(p) => p.to_string(),
            None if self.cluster && crate::connectors::redis::slots::hash_tag(list).is_none() => {
                format!("{{{list}}}:processing:{consumer}")
            }
            None => format!("{list}:processing:{consumer}"),
        }
    }
}

impl RedisPubSubSourceConfig {
    pub fn check(&self, path: &ConfigPath, problems: &mut Vec<Problem>) {
        self.access().check(path, problems);
        check_mode(self.cluster, &self.sentinel, path, problems);
        if !self.shard_channels.is_empty() && !self.cluster {
            problems.push(
                Problem::at_path(
                    path.key("shard_channels"),
                    "`shard_channels` needs `cluster = true`",
                )
                .with_help(
                    "sharded pub/sub is a Redis Cluster feature; use `channels` on one server",
                ),
            );
        }
        if self.channels.is_empty() && self.patterns.is_empty() && self.shard_channels.is_empty() {
            problems.push(
                Problem::at_path(
                    path.clone(),
                    "no `channels` and no `patterns` to subscribe to",
                )
                .with_help("e.g. channels = [\"orders\"] or patterns = [\"orders.*\"]"),
            );
        }
    }
}

impl RedisKeyspaceSourceConfig {
    pub fn check(&self, path: &ConfigPath, problems: &mut Vec<Problem>) {
        self.access().check(path, problems);
        check_mode(self.cluster, &self.sentinel, path, problems);
        if self.cluster && self.sync {
            problems.push(
                Problem::at_path(
                    path.key("sync"),
                    "two-way `sync` does not run on a Redis Cluster yet",
                )
                .with_help(
                    "its scripts touch companion keys in other slots; use one server or Sentinel",
                ),
            );
        }
        if self.until == KeyspaceUntil::Snapshot && !self.snapshot {
            problems.push(
                Problem::at_path(
                    path.key("until"),
                    "`until = \"snapshot\"` with `snapshot = false` would emit nothing",
                )
                .with_help("remove `snapshot = false`, or remove `until` to follow changes"),
            );
        }
    }
}

/// A Redis stream entry id: `<milliseconds>-<sequence>`, or
/// `<milliseconds>` for the first entry of that millisecond.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EntryId(pub u64, pub u64);

impl EntryId {
    pub fn parse(s: &str) -> Result<EntryId, String> {
        let bad = || format!("invalid stream entry id \"{s}\": write e.g. \"1714557600000-0\"");
        // `<milliseconds>` alone is the first entry of that millisecond.
        let id = s.trim();
        let id = match id.contains('-') {
            true => stream_id(id),
            false => stream_id(&format!("{id}-0")),
        };
        id.map(|(ms, seq)| EntryId(ms, seq)).ok_or_else(bad)
    }

    /// The last id before this one (`None` before the first id there is).
    pub fn before(self) -> Option<EntryId> {
        match self {
            EntryId(0, 0) => None,
            EntryId(ms, 0) => Some(EntryId(ms - 1, u64::MAX)),
            EntryId(ms, seq) => Some(EntryId(ms, seq - 1)),
        }
    }

    /// What `XGROUP CREATE` takes to deliver this entry first, since a
    /// group delivers the entries after the id it is given.
    pub fn group_start(self) -> String {
        self.before()
            .map_or_else(|| "0".to_owned(), |id| id.to_string())
    }
}

impl std::fmt::Display for EntryId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

impl<'de> Deserialize<'de> for EntryId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        EntryId::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl RedisListSourceConfig {
    pub fn check(&self, path: &ConfigPath, problems: &mut Vec<Problem>) {
        self.access().check(path, problems);
        check_mode(self.cluster, &self.sentinel, path, problems);
        if self.cluster
            && let Some(p) = &self.processing_list
            && !same_slot(self.list.as_str(), p.as_str())
        {
            problems.push(
                Problem::at_path(
                    path.key("processing_list"),
                    "on a Redis Cluster, the processing list must be in the slot of `list`",
                )
                .with_help(
                    "elements move between them atomically (LMOVE), which a cluster does only \
                     within one slot: give both the same hash tag, e.g. list = \"{jobs}\" and \
                     processing_list = \"{jobs}:processing\", or leave processing_list out",
                ),
            );
        }
    }
}

impl RedisStreamSourceConfig {
    /// The id a group ferry creates starts after (`XGROUP CREATE`).
    pub fn group_start(&self) -> String {
        let first = match (self.start_id, self.start_time) {
            (Some(id), _) => id,
            (None, Some(t)) => EntryId(u64::try_from(t.millis()).unwrap_or(0), 0),
            (None, None) => {
                return match self.start {
                    StreamStart::New => "$".to_owned(),
                    StreamStart::Earliest => "0".to_owned(),
                };
            }
        };
        first.group_start()
    }

    /// With `end_id` or `end_time`: the first entry id the job does not
    /// read.
    pub fn end_before(&self) -> Option<EntryId> {
        match (self.end_id, self.end_time) {
            (Some(id), _) => Some(id),
            (None, Some(t)) => Some(EntryId(u64::try_from(t.millis()).unwrap_or(0), 0)),
            (None, None) => None,
        }
    }

    pub fn check(&self, path: &ConfigPath, problems: &mut Vec<Problem>) {
        self.access().check(path, problems);
        check_mode(self.cluster, &self.sentinel, path, problems);
        if self.start_id.is_some() && self.start_time.is_some() {
            problems.push(
                Problem::at_path(
                    path.key("start_time"),
                    "`start_id` and `start_time` both say where the group begins",
                )
                .with_help("keep one of them"),
            );
        }
        if self.cluster
            && let Some(first) = self.streams.first()
            && self
                .streams
                .iter()
                .any(|s| !same_slot(first.as_str(), s.as_str()))
        {
            problems.push(
                Problem::at_path(
                    path.key("streams"),
                    "on a Redis Cluster, the streams of one source must share a slot",
                )
                .with_help(
                    "one XREADGROUP reads them all, which a cluster runs only within one slot: \
                     give them a common hash tag (\"{orders}:eu\", \"{orders}:us\"), \
                     or use one source per stream",
                ),
            );
        }
        if self.end_id.is_some() && self.end_time.is_some() {
            problems.push(
                Problem::at_path(
                    path.key("end_time"),
                    "`end_id` and `end_time` both say where to end",
                )
                .with_help("keep one of them"),
            );
        }
        if self.until != Until::End {
            for (field, set) in [
                ("end_id", self.end_id.is_some()),
                ("end_time", self.end_time.is_some()),
            ] {
                if set {
                    problems.push(
                        Problem::at_path(
                            path.key(field),
                            format!("`{field}` needs `until = \"end\"`"),
                        )
                        .with_help("a daemon never ends; add until = \"end\" for a job that does"),
                    );
                }
            }
        }
        if self.streams.is_empty() {
            problems.push(
                Problem::at_path(path.key("streams"), "no streams to read")
                    .with_help("e.g. streams = [\"orders\"]"),
            );
        }
        if self.block.0 >= self.claim_idle.0 {
            problems.push(
                Problem::at_path(
                    path.key("claim_idle"),
                    "`claim_idle` must be longer than `block`",
                )
                .with_help("otherwise entries being read could be claimed from a live consumer"),
            );
        }
    }
}
