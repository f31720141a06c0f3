//! Redis settings: the sink, and the connection URL shared with sources.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::config::time::Time;
use crate::config::values::{
    Attempts, Batch, Block, Buffer, ClaimIdle, Count, KeyTtl, Length, NonEmpty, PendingKeys,
    Refusal, Span, Timeout, Until, checked,
};
use crate::config::{ConfigPath, Problem};
use crate::connectors::tls::TlsConfig;
use crate::secret::{Secret, mask_url};
use crate::template::Template;

/// A Redis URL that redis-rs accepts: `redis://[user:password@]host[:port][/db]`,
/// `rediss://` for TLS, `redis+unix:///path`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

/// Shown with its password masked.
impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisUrl({})", mask_url(&self.0))
    }
}

impl RedisUrl {
    /// A URL given outside a config file (command-line arguments).
    pub fn parse(s: &str) -> Result<RedisUrl, String> {
        redis::IntoConnectionInfo::into_connection_info(s)
            .map(|_| RedisUrl(s.to_owned()))
            .map_err(|e| format!("invalid redis url `{}`: {e}", mask_url(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The server and database the URL names: `host:port/db`.
    pub fn server(&self) -> String {
        match redis::IntoConnectionInfo::into_connection_info(self.0.as_str()) {
            Ok(info) => format!("{}/{}", info.addr(), info.redis_settings().db()),
            Err(_) => self.0.clone(),
        }
    }

    /// The database number the URL selects (keyspace channels name it).
    pub fn db(&self) -> i64 {
        redis::IntoConnectionInfo::into_connection_info(self.0.as_str())
            .map(|i| i.redis_settings().db())
            .unwrap_or(0)
    }
}

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(
            d,
            |s: String| match redis::IntoConnectionInfo::into_connection_info(s.as_str()) {
                Ok(_) => Ok(Self(s)),
                Err(e) => Err(Refusal::from(format!(
                    "invalid redis url `{}`: {e}; write e.g. \"redis://127.0.0.1:6379/0\"",
                    mask_url(&s)
                ))),
            },
            |s| Some(Self(s)),
        )
    }
}

/// `type = "redis"` as a sink.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkConfig {
    pub url: RedisUrl,
    /// ACL user (`AUTH username password`); needs `password`.
    pub username: Option<String>,
    /// The password of `username`, or the legacy `requirepass` password
    /// alone. Write `"${VAR}"` or `"${file:/path}"`; never shown.
    pub password: Option<Secret>,
    /// TLS settings for a `rediss://` url: private CA, client certificate.
    pub tls: Option<TlsConfig>,
    /// Which command writes a message.
    pub write: WriteMode,
    /// Key template, e.g. `order:{order_id}` (the channel for `publish`).
    pub key: Template,
    /// Expire the key this long after each write.
    pub ttl: Option<Span<KeyTtl>>,
    /// `hset`: only these payload fields (dotted paths), instead of all.
    pub fields: Option<Vec<String>>,
    /// `zadd`: the score, e.g. `"{amount}"` or `"{timestamp}"`.
    pub score: Option<Template>,
    /// `sadd` / `zadd`: the member (the payload when absent).
    pub member: Option<Template>,
    /// `xadd`: keep about this many entries (`MAXLEN ~`).
    pub maxlen: Option<Count<Length>>,
    /// `xadd`: `envelope` (payload, key and headers as fields) or `json`
    /// (the fields of a JSON object payload).
    #[serde(default)]
    pub stream_fields: StreamFields,
    /// `hset`, `rpush`, `lpush`, `sadd`, `zadd`: replace the key's content
    /// (`DEL` and write in one `MULTI`) instead of adding to it.
    #[serde(default)]
    pub replace: bool,
    /// Commands per pipelined round trip.
    #[serde(default = "default_batch")]
    pub batch_size: Count<Batch>,
    /// How long to wait for Redis to answer a batch before retrying it.
    #[serde(default = "default_timeout")]
    pub timeout: Span<Timeout>,
    /// Write each message at most once, even after a crash: its position in
    /// the source (Kafka partition offset, stream entry id) is recorded in
    /// Redis atomically with the write, and a message at or before the
    /// recorded position is skipped. Needs a `kafka` or `redis-stream`
    /// source.
    #[serde(default)]
    pub exactly_once: bool,
    /// Two-way sync: apply records in the log's order and keep each key's
    /// companion, so that a keyspace source with `sync` does not send
    /// ferry's own writes back and both sides end equal (`set`, or `hset`
    /// with `replace`). Needs an `origin`.
    #[serde(default)]
    pub sync: bool,
    /// With `exactly_once`: the hash that holds the positions. Defaults to
    /// `ferry:positions:<pipeline>:<key>`; keep it stable across restarts
    /// and the same in every ferry process of the consumer group.
    pub positions_key: Option<NonEmpty>,
}

/// How a message becomes a Redis write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// `SET key payload`.
    Set,
    /// `HSET key field value ...` from the fields of a JSON object payload.
    Hset,
    /// `RPUSH key payload`.
    Rpush,
    /// `LPUSH key payload`.
    Lpush,
    /// `SADD key member`.
    Sadd,
    /// `ZADD key score member`.
    Zadd,
    /// `XADD key * ...` with the message as stream fields.
    Xadd,
    /// `PUBLISH channel payload`.
    Publish,
}

impl WriteMode {
    pub fn name(self) -> &'static str {
        match self {
            WriteMode::Set => "set",
            WriteMode::Hset => "hset",
            WriteMode::Rpush => "rpush",
            WriteMode::Lpush => "lpush",
            WriteMode::Sadd => "sadd",
            WriteMode::Zadd => "zadd",
            WriteMode::Xadd => "xadd",
            WriteMode::Publish => "publish",
        }
    }
}

/// How a message is laid out in a stream entry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StreamFields {
    /// `payload`, `key` and `header.NAME` fields: any message, losslessly.
    #[default]
    Envelope,
    /// One field per member of a JSON object payload.
    Json,
}

/// A checked sink configuration: exactly the options that `write` uses.
#[derive(Clone, Debug, PartialEq)]
pub enum WritePlan {
    Set {
        ttl: Option<Duration>,
    },
    Hset {
        fields: Option<Vec<Vec<String>>>,
        replace: bool,
        ttl: Option<Duration>,
    },
    Push {
        left: bool,
        replace: bool,
        ttl: Option<Duration>,
    },
    Sadd {
        member: Option<Template>,
        replace: bool,
        ttl: Option<Duration>,
    },
    Zadd {
        score: Template,
        member: Option<Template>,
        replace: bool,
        ttl: Option<Duration>,
    },
    Xadd {
        maxlen: Option<usize>,
        fields: StreamFields,
        ttl: Option<Duration>,
    },
    Publish,
}

fn default_batch() -> Count<Batch> {
    Count::new(500)
}

fn default_timeout() -> Span<Timeout> {
    Span::new(Duration::from_secs(10))
}

impl RedisSinkConfig {
    /// With `exactly_once`: the name the position keys start with,
    /// `positions_key` or `ferry:positions:<pipeline>:<key>`.
    pub fn positions_base(&self, pipeline: &str) -> String {
        self.positions_key.as_ref().map_or_else(
            || format!("ferry:positions:{pipeline}:{}", self.key),
            ToString::to_string,
        )
    }

    /// Options that do not fit `write`, and options it needs.
    pub fn check(&self, path: &ConfigPath, problems: &mut Vec<Problem>) {
        self.access().check(path, problems);
        use WriteMode::*;
        let mode = self.write;
        let only = |field: &str, set: bool, allowed: &[WriteMode], problems: &mut Vec<Problem>| {
            if set && !allowed.contains(&mode) {
                let names: Vec<_> = allowed
                    .iter()
                    .map(|m| format!("\"{}\"", m.name()))
                    .collect();
                problems.push(
                    Problem::at_path(
                        path.key(field),
                        format!("`{field}` does nothing with `write = \"{}\"`", mode.name()),
                    )
                    .with_help(format!(
                        "it applies to write = {}; remove it",
                        names.join(" or ")
                    )),
                );
            }
        };
        only(
            "ttl",
            self.ttl.is_some(),
            &[Set, Hset, Rpush, Lpush, Sadd, Zadd, Xadd],
            problems,
        );
        only("fields", self.fields.is_some(), &[Hset], problems);
        only("score", self.score.is_some(), &[Zadd], problems);
        only("member", self.member.is_some(), &[Sadd, Zadd], problems);
        only("maxlen", self.maxlen.is_some(), &[Xadd], problems);
        if self.sync && !(mode == Set || (mode == Hset && self.replace && self.fields.is_none())) {
            problems.push(
                Problem::at_path(
                    path.key("sync"),
                    format!(
                        "two-way `sync` writes whole values; `write = \"{}\"`{} does not",
                        mode.name(),
                        if mode == Hset {
                            " without `replace = true`, or with `fields`,"
                        } else {
                            ""
                        }
                    ),
                )
                .with_help("use write = \"set\", or write = \"hset\" with replace = true"),
            );
        }
        if self.sync && self.exactly_once {
            problems.push(
                Problem::at_path(
                    path.key("exactly_once"),
                    "`exactly_once` and two-way `sync` do not combine",
                )
                .with_help(
                    "remove exactly_once: sync writes whole values in the log's order, \
                     so applying a record again changes nothing",
                ),
            );
        }
        if self.positions_key.is_some() && !self.exactly_once {
            problems.push(
                Problem::at_path(
                    path.key("positions_key"),
                    "`positions_key` does nothing without `exactly_once = true`",
                )
                .with_help("add exactly_once = true, or remove it"),
            );
        }
        only(
            "stream_fields",
            self.stream_fields != StreamFields::Envelope,
            &[Xadd],
            problems,
        );
        only(
            "replace",
            self.replace,
            &[Hset, Rpush, Lpush, Sadd, Zadd],
            problems,
        );
        if mode == Zadd && self.score.is_none() {
            problems.push(
                Problem::at_path(path.clone(), "`write = \"zadd\"` needs a `score`")
                    .with_help("e.g. score = \"{amount}\" or score = \"{timestamp}\""),
            );
        }
        if let Some(fields) = &self.fields
            && (fields.is_empty() || fields.iter().any(|f| f.split('.').any(str::is_empty)))
        {
            problems.push(
                Problem::at_path(
                    path.key("fields"),
                    "`fields` needs field names or dotted paths",
                )
                .with_help("e.g. fields = [\"status\", \"customer.id\"]"),
            );
        }
    }

    /// The write plan; call after [`RedisSinkConfig::check`] found nothing.
    pub fn plan(&self) -> WritePlan {
        let ttl = self.ttl.map(|s| s.0);
        let replace = self.replace;
        match self.write {
            WriteMode::Set => WritePlan::Set { ttl },
            WriteMode::Hset => WritePlan::Hset {
                fields: self.fields.as_ref().map(|fs| {
                    fs.iter()
                        .map(|f| f.split('.').map(str::to_owned).collect())
                        .collect()
                }),
                replace,
                ttl,
            },
            WriteMode::Rpush => WritePlan::Push {
                left: false,
                replace,
                ttl,
            },
            WriteMode::Lpush => WritePlan::Push {
                left: true,
                replace,
                ttl,
            },
            WriteMode::Sadd => WritePlan::Sadd {
                member: self.member.clone(),
                replace,
                ttl,
            },
            WriteMode::Zadd => WritePlan::Zadd {
                // `check` refuses zadd without a score.
                score: self
                    .score
                    .clone()
                    .unwrap_or_else(|| Template::parse("{score}").expect("valid template")),
                member: self.member.clone(),
                replace,
                ttl,
            },
            WriteMode::Xadd => WritePlan::Xadd {
                maxlen: self.maxlen.map(Count::get),
                fields: self.stream_fields,
                ttl,
            },
            WriteMode::Publish => WritePlan::Publish,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sink(extra: &str) -> (RedisSinkConfig, Vec<Problem>) {
        let c: RedisSinkConfig = toml::from_str(&format!(
            "url = \"redis://127.0.0.1/2\"\nkey = \"k\"\n{extra}"
        ))
        .unwrap();
        let mut problems = Vec::new();
        c.check(&ConfigPath::root(), &mut problems);
        (c, problems)
    }

    #[test]
    fn a_stream_group_starts_after_the_entry_before_the_one_asked_for() {
        let stream = |extra: &str| -> RedisStreamSourceConfig {
            toml::from_str(&format!(
                "url = \"redis://127.0.0.1\"\nstreams = [\"s\"]\ngroup = \"g\"\n{extra}"
            ))
            .unwrap()
        };
        assert_eq!(stream("").group_start(), "0");
        assert_eq!(stream("start = \"new\"").group_start(), "$");
        assert_eq!(stream("start_id = \"1700-5\"").group_start(), "1700-4");
        assert_eq!(
            stream("start_id = \"1700\"").group_start(),
            "1699-18446744073709551615"
        );
        assert_eq!(stream("start_id = \"0-0\"").group_start(), "0");
        assert_eq!(
            stream("start_time = \"1970-01-01T00:00:01Z\"").group_start(),
            "999-18446744073709551615"
        );
        let bad = toml::from_str::<RedisStreamSourceConfig>(
            "url = \"redis://x\"\nstreams = [\"s\"]\ngroup = \"g\"\nstart_id = \"yesterday\"",
        )
        .unwrap_err();
        assert!(bad.to_string().contains("1714557600000-0"), "{bad}");
    }

    #[test]
    fn options_must_fit_the_write_mode() {
        let (_, p) = sink("write = \"set\"\nscore = \"{a}\"\nmaxlen = 10");
        assert_eq!(p.len(), 2);
        assert!(
            p[0].message
                .contains("`score` does nothing with `write = \"set\"`")
        );
        let (_, p) = sink("write = \"zadd\"");
        assert!(p[0].message.contains("needs a `score`"));
        let (c, p) =
            sink("write = \"zadd\"\nscore = \"{amount}\"\nmember = \"{key}\"\nreplace = true");
        assert!(p.is_empty());
        assert!(matches!(c.plan(), WritePlan::Zadd { replace: true, .. }));
        assert_eq!(c.url.db(), 2);
    }
}

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
    #[serde(default)]
    pub channels: Vec<NonEmpty>,
    #[serde(default)]
    pub patterns: Vec<NonEmpty>,
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

impl RedisPubSubSourceConfig {
    pub fn check(&self, path: &ConfigPath, problems: &mut Vec<Problem>) {
        self.access().check(path, problems);
        if self.channels.is_empty() && self.patterns.is_empty() {
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
        let (ms, seq) = s.trim().split_once('-').unwrap_or((s.trim(), "0"));
        Ok(EntryId(
            ms.parse().map_err(|_| bad())?,
            seq.parse().map_err(|_| bad())?,
        ))
    }

    /// The last id before this one: what `XGROUP CREATE` takes, since a
    /// group delivers the entries after the id it is given.
    pub fn before(self) -> String {
        match self {
            EntryId(0, 0) => "0".to_owned(),
            EntryId(ms, 0) => format!("{}-{}", ms - 1, u64::MAX),
            EntryId(ms, seq) => format!("{ms}-{}", seq - 1),
        }
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
        first.before()
    }

    pub fn check(&self, path: &ConfigPath, problems: &mut Vec<Problem>) {
        self.access().check(path, problems);
        if self.start_id.is_some() && self.start_time.is_some() {
            problems.push(
                Problem::at_path(
                    path.key("start_time"),
                    "`start_id` and `start_time` both say where the group begins",
                )
                .with_help("keep one of them"),
            );
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

/// The connection settings every Redis source and sink has.
macro_rules! redis_access {
    ($($config:ty),*) => {$(
        impl $config {
            pub fn access(&self) -> super::access::RedisAccess {
                super::access::RedisAccess {
                    url: self.url.clone(),
                    username: self.username.clone(),
                    password: self.password.clone(),
                    tls: self.tls.clone(),
                }
            }
        }
    )*};
}

redis_access!(
    RedisSinkConfig,
    RedisStreamSourceConfig,
    RedisListSourceConfig,
    RedisPubSubSourceConfig,
    RedisKeyspaceSourceConfig
);
