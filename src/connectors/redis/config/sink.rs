//! `type = "redis"` as a sink: what `write` does, its options and their checks.

use super::*;

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
    /// Redis Cluster: `url` is any node of the cluster; the others are
    /// found from it, and commands go to the node that owns their slot.
    #[serde(default)]
    pub cluster: bool,
    /// A primary watched by Sentinel: found through the sentinels and
    /// followed when they fail it over. `url` then only gives the
    /// database (and TLS); its host is not used.
    pub sentinel: Option<SentinelConfig>,
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
    /// Confirm a batch only once this many replicas have it (`WAIT`), so
    /// that a failover right after the write cannot lose it.
    pub wait_replicas: Option<Count<Replicas>>,
    /// How long `WAIT` waits for `wait_replicas`.
    #[serde(default = "default_wait_timeout")]
    pub wait_timeout: Span<Timeout>,
    /// When fewer replicas confirm in time: `retry` the batch (the
    /// default), or `fail` its messages (to the dead-letter sink).
    #[serde(default)]
    pub replicas_missing: ReplicasMissing,
    /// Pause writing while Redis's `used_memory` is at or above this
    /// percentage of its `maxmemory` (checked every 100 ms, and before
    /// every batch when near it; when `maxmemory` is set); resume when memory frees up.
    pub max_memory_percent: Option<Count<Percent>>,
}

/// Replicas a write may wait for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Replicas;
impl Limit for Replicas {
    const MIN: u64 = 1;
    const MAX: u64 = 64;
    const WHY: &'static str = "WAIT counts replicas of the one primary that took the write";
}

/// A share of `maxmemory`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Percent;
impl Limit for Percent {
    const MIN: u64 = 1;
    const MAX: u64 = 100;
    const WHY: &'static str = "a percentage of maxmemory";
}

/// What `wait_replicas` does when fewer replicas confirm in time.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReplicasMissing {
    /// Write the batch again (with the sink's retry backoff).
    #[default]
    Retry,
    /// Count its messages as failed: they go to the dead-letter sink.
    Fail,
}

fn default_wait_timeout() -> Span<Timeout> {
    Span::new(Duration::from_secs(1))
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
        match (
            &self.positions_key,
            self.cluster.then(|| self.key_tag()).flatten(),
        ) {
            (Some(k), _) => k.to_string(),
            // The data's hash tag first, so positions share its slot.
            (None, Some(tag)) => format!("ferry:positions:{{{tag}}}:{pipeline}:{}", self.key),
            (None, None) => format!("ferry:positions:{pipeline}:{}", self.key),
        }
    }

    /// The hash tag every key `key` renders starts with, when its literal
    /// beginning has one: `{{orders}}:{id}` renders `{orders}:...`.
    pub fn key_tag(&self) -> Option<&str> {
        crate::connectors::redis::slots::hash_tag(self.key.literal_prefix())
    }

    /// What a Redis Cluster asks of the keys: a script's keys share a slot.
    fn check_cluster(&self, path: &ConfigPath, problems: &mut Vec<Problem>) {
        if !self.cluster {
            return;
        }
        if self.sync {
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
        if !self.exactly_once {
            return;
        }
        let Some(tag) = self.key_tag() else {
            problems.push(
                Problem::at_path(
                    path.key("key"),
                    "on a Redis Cluster, `exactly_once` needs every key in the slot of its positions",
                )
                .with_help(
                    "the position and the data are written by one script, which a cluster runs only \
                     on keys of one slot: begin `key` with a hash tag written as literal text, \
                     e.g. key = \"{{orders}}:{order_id}\" (keys `{orders}:...`, all in one slot)",
                ),
            );
            return;
        };
        if let Some(k) = &self.positions_key
            && crate::connectors::redis::slots::hash_tag(&k.to_string()) != Some(tag)
        {
            problems.push(
                Problem::at_path(
                    path.key("positions_key"),
                    format!("on a Redis Cluster, `positions_key` must carry the hash tag of `key` ({{{tag}}})"),
                )
                .with_help(format!("e.g. positions_key = \"ferry:positions:{{{tag}}}\"")),
            );
        }
    }

    /// Options that do not fit `write`, and options it needs.
    pub fn check(&self, path: &ConfigPath, problems: &mut Vec<Problem>) {
        self.access().check(path, problems);
        check_mode(self.cluster, &self.sentinel, path, problems);
        self.check_cluster(path, problems);
        if self.wait_replicas.is_some() && self.wait_timeout.0 >= self.timeout.0 {
            problems.push(
                Problem::at_path(
                    path.key("wait_timeout"),
                    "`wait_timeout` must be shorter than `timeout`",
                )
                .with_help("WAIT's reply would otherwise arrive after the sink gave up on it"),
            );
        }
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
    fn exactly_once_on_a_cluster_needs_a_hash_tag_shared_with_the_positions() {
        let (_, p) = sink("write = \"set\"\ncluster = true\nexactly_once = true");
        assert!(
            p.iter()
                .any(|p| p.message.contains("needs every key in the slot")),
            "{p:?}"
        );
        assert!(
            p.iter().any(|p| p.message.contains("only database 0")),
            "{p:?}"
        );
        let c: RedisSinkConfig = toml::from_str(
            "url = \"redis://127.0.0.1\"\nkey = \"{{orders}}:{id}\"\nwrite = \"set\"\ncluster = true\nexactly_once = true",
        )
        .unwrap();
        let mut p = Vec::new();
        c.check(&ConfigPath::root(), &mut p);
        assert!(p.is_empty(), "{p:?}");
        let base = c.positions_base("p");
        assert!(base.starts_with("ferry:positions:{orders}:p:"), "{base}");
        assert!(crate::connectors::redis::slots::same_slot(
            &base,
            "{orders}:42"
        ));
        let c: RedisSinkConfig = toml::from_str(
            "url = \"redis://127.0.0.1\"\nkey = \"{{orders}}:{id}\"\nwrite = \"set\"\ncluster = true\nexactly_once = true\npositions_key = \"pos\"",
        )
        .unwrap();
        let mut p = Vec::new();
        c.check(&ConfigPath::root(), &mut p);
        assert!(p[0].message.contains("must carry the hash tag"), "{p:?}");
    }

    #[test]
    fn a_cluster_refuses_sentinel_alongside_and_keys_that_cannot_share_a_slot() {
        let (_, p) =
            sink("cluster = true\nsentinel = { primary = \"m\", nodes = [] }\nwrite = \"set\"");
        let messages: Vec<_> = p.iter().map(|p| p.message.as_str()).collect();
        assert!(
            messages
                .iter()
                .any(|m| m.contains("`cluster = true` and `sentinel` together")),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.contains("needs at least one sentinel")),
            "{messages:?}"
        );
        let problems = |toml: &str| {
            let c: RedisStreamSourceConfig = toml::from_str(toml).unwrap();
            let mut p = Vec::new();
            c.check(&ConfigPath::root(), &mut p);
            p.into_iter().map(|p| p.message).collect::<Vec<_>>()
        };
        let base = "url = \"redis://127.0.0.1\"\ngroup = \"g\"\ncluster = true\n";
        let apart = problems(&format!("{base}streams = [\"eu\", \"us\"]"));
        assert!(
            apart.iter().any(|m| m.contains("must share a slot")),
            "{apart:?}"
        );
        assert!(problems(&format!("{base}streams = [\"{{o}}:eu\", \"{{o}}:us\"]")).is_empty());
        let list = |extra: &str| -> RedisListSourceConfig {
            toml::from_str(&format!(
                "url = \"redis://127.0.0.1\"\nlist = \"jobs\"\n{extra}"
            ))
            .unwrap()
        };
        assert_eq!(
            list("cluster = true").processing("c"),
            "{jobs}:processing:c"
        );
        assert_eq!(list("").processing("c"), "jobs:processing:c");
        let mut p = Vec::new();
        list("cluster = true\nprocessing_list = \"other\"").check(&ConfigPath::root(), &mut p);
        assert!(
            p[0].message.contains("processing list must be in the slot"),
            "{p:?}"
        );
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
