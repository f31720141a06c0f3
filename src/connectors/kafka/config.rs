//! Kafka source and sink settings, and the librdkafka configuration built
//! from them.

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::Deserialize;

use super::security::{self, SaslConfig};
use crate::connectors::tls::TlsConfig;
use crate::problem::{ConfigPath, Problem};
use crate::template::Template;
pub use crate::values::Until;
use crate::values::time::Time;
use crate::values::{
    Batch, CommitInterval, Count, Linger, NonEmpty, Partitions, PrefetchKbytes, Replicas, Span,
    TopicName,
};

/// `type = "kafka"` as a source.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: NonEmpty,
    /// Topics to consume.
    pub topics: Vec<TopicName>,
    /// Consumer group. Several ferry processes with the same group share the
    /// partitions: this is how ferry scales out.
    pub group: NonEmpty,
    /// Where to begin on a partition the group has no committed offset for.
    #[serde(default)]
    pub start: StartFrom,
    /// Instead of `start`, for a partition the group has no committed
    /// offset for: begin at the first record at or after this time (RFC
    /// 3339 or epoch milliseconds; Kafka's offsets-for-times). The group's
    /// offsets are set to it before joining, so a second run resumes.
    pub start_time: Option<Time>,
    /// Instead of `start`, per partition: `{ "orders/0" = 1200 }`, or
    /// `{ "0" = 1200 }` with one topic. Partitions not named use `start`.
    #[serde(default)]
    pub start_offsets: PartitionOffsets,
    /// With `until = "end"`: end before the first record at or after this
    /// time rather than at the end offsets of the start.
    pub end_time: Option<Time>,
    /// With `until = "end"`: per partition, the offset to end before
    /// (exclusive), like `start_offsets`.
    #[serde(default)]
    pub end_offsets: PartitionOffsets,
    /// How often confirmed offsets are committed.
    #[serde(default = "default_commit_interval")]
    pub commit_interval: Span<CommitInterval>,
    /// `forever` (a daemon) or `end`: stop once every partition has been
    /// read up to the end it had when ferry started (a one-off copy).
    #[serde(default)]
    pub until: Until,
    /// Upper bound, in KiB, of records librdkafka fetches ahead of the
    /// pipeline. Together with the pipeline's bounded buffers this bounds
    /// memory however large the backlog in Kafka is. librdkafka counts
    /// compressed bytes, so very compressible records can take a multiple
    /// of this once decompressed.
    #[serde(default = "default_prefetch")]
    pub prefetch_kbytes: Count<PrefetchKbytes>,
    /// TLS: `tls = {}` for the system's CAs, or `{ ca = ..., cert = ..., key = ... }`.
    pub tls: Option<TlsConfig>,
    /// SASL authentication: PLAIN, SCRAM-SHA-256/512 or OAUTHBEARER (OIDC).
    pub sasl: Option<SaslConfig>,
    /// Extra librdkafka settings (security, timeouts), passed as they are.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StartFrom {
    /// The oldest record still in the partition.
    #[default]
    Earliest,
    /// Only records produced after ferry joined.
    Latest,
    /// Refuse to start a partition without a committed offset.
    Committed,
}

/// Offsets per partition: keys `topic/partition`, or a bare partition
/// number that applies to every topic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionOffsets(BTreeMap<(Option<String>, i32), i64>);

impl PartitionOffsets {
    /// Parses one `topic/partition` or `partition` key.
    fn key(k: &str) -> Result<(Option<String>, i32), String> {
        let (topic, partition) = match k.rsplit_once('/') {
            Some((t, p)) => (Some(TopicName::parse(t)?.to_string()), p),
            None => (None, k),
        };
        let partition = partition.parse::<i32>().ok().filter(|p| *p >= 0);
        partition.map(|p| (topic, p)).ok_or_else(|| {
            format!("invalid partition \"{k}\": write \"topic/partition\" or a partition number, e.g. \"orders/0\"")
        })
    }

    pub fn from_pairs(
        pairs: impl IntoIterator<Item = (String, i64)>,
    ) -> Result<PartitionOffsets, String> {
        let mut map = BTreeMap::new();
        for (k, offset) in pairs {
            if offset < 0 {
                return Err(format!("offset of \"{k}\" must be 0 or more, not {offset}"));
            }
            map.insert(Self::key(&k)?, offset);
        }
        Ok(PartitionOffsets(map))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The offset given for a partition: by `topic/partition`, else by the
    /// bare partition number.
    pub fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.0
            .get(&(Some(topic.to_owned()), partition))
            .or_else(|| self.0.get(&(None, partition)))
            .copied()
    }

    /// Topics named that are not in `topics`.
    fn unknown_topics<'a>(&'a self, topics: &'a [TopicName]) -> impl Iterator<Item = &'a str> {
        self.0
            .keys()
            .filter_map(|(t, _)| t.as_deref())
            .filter(|t| !topics.iter().any(|known| known.as_str() == *t))
    }
}

impl<'de> Deserialize<'de> for PartitionOffsets {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = BTreeMap::<String, i64>::deserialize(d)?;
        PartitionOffsets::from_pairs(raw).map_err(serde::de::Error::custom)
    }
}

fn default_commit_interval() -> Span<CommitInterval> {
    Span::new(std::time::Duration::from_secs(1))
}

fn default_prefetch() -> Count<PrefetchKbytes> {
    Count::new(8 * 1024)
}

/// Settings ferry sets itself because its guarantees depend on them.
const CONSUMER_MANAGED: &[(&str, &str)] = &[
    (
        "enable.auto.commit",
        "ferry commits offsets itself, only once every sink confirmed",
    ),
    (
        "enable.auto.offset.store",
        "ferry stores offsets itself, only once every sink confirmed",
    ),
    ("group.id", "use `group`"),
    ("bootstrap.servers", "use `brokers`"),
    ("auto.offset.reset", "use `start`"),
    ("queued.max.messages.kbytes", "use `prefetch_kbytes`"),
];

const ALWAYS_ACKS_ALL: &str = "ferry always produces with acks=all: the idempotent producer needs \
     every in-sync replica, and a record is not lost when a broker dies";

const PRODUCER_MANAGED: &[(&str, &str)] = &[
    (
        "enable.idempotence",
        "ferry always uses the idempotent producer",
    ),
    ("bootstrap.servers", "use `brokers`"),
    ("compression.type", "use `compression`"),
    ("compression.codec", "use `compression`"),
    ("linger.ms", "use `linger`"),
    ("queue.buffering.max.ms", "use `linger`"),
    ("acks", ALWAYS_ACKS_ALL),
    ("partitioner", "use `partitioner`"),
    ("request.required.acks", ALWAYS_ACKS_ALL),
];

fn check_options(
    options: &BTreeMap<String, String>,
    managed: &[(&str, &str)],
    path: &ConfigPath,
    problems: &mut Vec<Problem>,
) {
    for key in options.keys() {
        if let Some((_, why)) = managed.iter().find(|(k, _)| k == key) {
            problems.push(
                Problem::at_path(
                    path.key("options").key(key),
                    format!("`{key}` cannot be set in `options`"),
                )
                .with_help(*why),
            );
        }
    }
}

impl KafkaSourceConfig {
    pub fn check(&self, path: &ConfigPath, problems: &mut Vec<Problem>) {
        if self.topics.is_empty() {
            problems.push(
                Problem::at_path(path.key("topics"), "no topics to consume")
                    .with_help("write e.g. topics = [\"orders\"]"),
            );
        }
        check_options(&self.options, CONSUMER_MANAGED, path, problems);
        security::check(
            self.tls.as_ref(),
            self.sasl.as_ref(),
            &self.options,
            path,
            problems,
        );
        if self.start_time.is_some() && !self.start_offsets.is_empty() {
            problems.push(
                Problem::at_path(
                    path.key("start_offsets"),
                    "`start_time` and `start_offsets` both say where to begin",
                )
                .with_help("keep one of them"),
            );
        }
        for (field, offsets) in [
            ("start_offsets", &self.start_offsets),
            ("end_offsets", &self.end_offsets),
        ] {
            for topic in offsets.unknown_topics(&self.topics) {
                problems.push(
                    Problem::at_path(
                        path.key(field),
                        format!("topic `{topic}` is not one of `topics`"),
                    )
                    .with_help("name partitions as \"topic/partition\" of a consumed topic"),
                );
            }
        }
        let ends = self.end_time.is_some() || !self.end_offsets.is_empty();
        if ends && self.until != Until::End {
            let field = if self.end_time.is_some() {
                "end_time"
            } else {
                "end_offsets"
            };
            problems.push(
                Problem::at_path(
                    path.key(field),
                    format!("`{field}` needs `until = \"end\"`"),
                )
                .with_help("a daemon never ends; add until = \"end\" for a job that does"),
            );
        }
        if self.end_time.is_some() && !self.end_offsets.is_empty() {
            problems.push(
                Problem::at_path(
                    path.key("end_offsets"),
                    "`end_time` and `end_offsets` both say where to end",
                )
                .with_help("keep one of them"),
            );
        }
    }

    /// Whether the job ends before the end offsets it finds at start.
    pub fn has_explicit_end(&self) -> bool {
        self.end_time.is_some() || !self.end_offsets.is_empty()
    }

    /// The librdkafka consumer configuration.
    pub fn client_config(&self, client_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.as_str())
            .set("group.id", self.group.as_str())
            .set("client.id", client_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set(
                "auto.offset.reset",
                match self.start {
                    StartFrom::Earliest => "earliest",
                    StartFrom::Latest => "latest",
                    StartFrom::Committed => "error",
                },
            )
            .set(
                "queued.max.messages.kbytes",
                self.prefetch_kbytes.get().to_string(),
            )
            .set(
                "enable.partition.eof",
                if self.until == Until::End {
                    "true"
                } else {
                    "false"
                },
            )
            // Consumer lag for the metrics endpoint, and broker liveness.
            .set("statistics.interval.ms", "5000")
            // How long a broker may hold a fetch that found too little.
            // Apache Kafka answers as soon as a record is there, so this
            // only bounds idle fetches; a broker that holds every fetch to
            // the end of the wait (tansu) makes it the latency and, set
            // low, costs throughput. Measured there (docs/performance.md,
            // Kafka -> Redis at 1 KB): 10 ms: 0.71-0.73 of a plain
            // consumer, p50 25 ms; 100 ms: 2.0, p50 185 ms; librdkafka's
            // 500 ms: 0.98, p50 413 ms. `options` can lower it for latency.
            .set("fetch.wait.max.ms", "100")
            // How long librdkafka waits before it fetches again once the
            // prefetch (`prefetch_kbytes`) was full: 1 s by default, longer
            // than a slow sink takes to drain 8 MB, so the pipeline ran dry
            // for 350-430 ms about once a second behind RabbitMQ. Measured
            // (Kafka -> RabbitMQ, 1 KB): 1000 ms: 11.2k/s; 50 ms: 15.2k/s;
            // 10 ms: 15.0k/s. Each wait is one timer per partition.
            .set("fetch.queue.backoff.ms", "20");
        if let Some(tls) = &self.tls {
            tls.warn_if_insecure(client_id, "kafka");
        }
        security::apply(&mut c, self.tls.as_ref(), self.sasl.as_ref());
        for (k, v) in &self.options {
            c.set(k, v);
        }
        c
    }
}

/// `type = "kafka"` as a sink.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    pub brokers: NonEmpty,
    pub topic: TopicName,
    /// Record key; by default the message's own key. Records with the same
    /// key go to the same partition.
    pub key: Option<Template>,
    #[serde(default)]
    pub compression: Compression,
    /// How keyed records are spread over partitions. The default matches
    /// the Java client, so ferry and Java producers agree on where a key goes.
    #[serde(default)]
    pub partitioner: Partitioner,
    /// How long the producer waits to fill a batch.
    #[serde(default = "default_linger")]
    pub linger: Span<Linger>,
    /// Messages ferry hands to the producer before waiting for their
    /// delivery reports.
    #[serde(default = "default_sink_batch")]
    pub batch_size: Count<Batch>,
    /// Create the topic at start if it does not exist.
    pub create_topic: Option<CreateTopic>,
    /// TLS: `tls = {}` for the system's CAs, or `{ ca = ..., cert = ..., key = ... }`.
    pub tls: Option<TlsConfig>,
    /// SASL authentication: PLAIN, SCRAM-SHA-256/512 or OAUTHBEARER (OIDC).
    pub sasl: Option<SaslConfig>,
    /// Extra librdkafka settings, passed as they are.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// How the producer picks a partition for a record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Partitioner {
    /// murmur2 of the key, like the Java client; keyless records spread.
    #[default]
    Murmur2,
    /// CRC32 of the key (librdkafka's own default).
    Consistent,
    /// Any partition.
    Random,
}

impl Partitioner {
    fn librdkafka_name(self) -> &'static str {
        match self {
            Partitioner::Murmur2 => "murmur2_random",
            Partitioner::Consistent => "consistent_random",
            Partitioner::Random => "random",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTopic {
    pub partitions: Count<Partitions>,
    #[serde(default = "one")]
    pub replication: Count<Replicas>,
    /// Topic settings, e.g. `{ "cleanup.policy" = "compact" }` for a
    /// changelog whose tombstones delete keys.
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

fn one<L: crate::values::Limit>() -> Count<L> {
    Count::new(1)
}

fn default_linger() -> Span<Linger> {
    Span::new(std::time::Duration::from_millis(5))
}

fn default_sink_batch() -> Count<Batch> {
    Count::new(1000)
}

impl KafkaSinkConfig {
    pub fn check(&self, path: &ConfigPath, problems: &mut Vec<Problem>) {
        check_options(&self.options, PRODUCER_MANAGED, path, problems);
        security::check(
            self.tls.as_ref(),
            self.sasl.as_ref(),
            &self.options,
            path,
            problems,
        );
    }

    /// The librdkafka producer configuration.
    pub fn client_config(&self, client_id: &str) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.as_str())
            .set("client.id", client_id)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", self.compression.name())
            .set("partitioner", self.partitioner.librdkafka_name())
            .set("linger.ms", self.linger.0.as_millis().to_string())
            // Broker liveness for the sink's health (see `sink::SinkContext`).
            .set("statistics.interval.ms", "1000");
        if let Some(tls) = &self.tls {
            tls.warn_if_insecure(client_id, "kafka");
        }
        security::apply(&mut c, self.tls.as_ref(), self.sasl.as_ref());
        for (k, v) in &self.options {
            c.set(k, v);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(extra: &str) -> KafkaSourceConfig {
        toml::from_str(&format!(
            "brokers = \"127.0.0.1:9092\"\ntopics = [\"orders\"]\ngroup = \"g\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn a_full_prefetch_is_fetched_again_soon_unless_options_say_otherwise() {
        let c = source("").client_config("ferry-test");
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("20"));
        let c = source("options = { \"fetch.queue.backoff.ms\" = \"5\" }").client_config("t");
        assert_eq!(c.get("fetch.queue.backoff.ms"), Some("5"));
    }

    #[test]
    fn the_consumer_never_commits_on_its_own() {
        let c = source("start = \"latest\"").client_config("ferry-test");
        assert_eq!(c.get("enable.auto.commit"), Some("false"));
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("auto.offset.reset"), Some("latest"));
        assert_eq!(c.get("queued.max.messages.kbytes"), Some("8192"));
    }

    #[test]
    fn options_that_would_break_guarantees_are_refused() {
        let c = source(
            "options = { \"enable.auto.commit\" = \"true\", \"security.protocol\" = \"ssl\" }",
        );
        let mut problems = Vec::new();
        c.check(&ConfigPath::root(), &mut problems);
        assert_eq!(problems.len(), 1);
        assert!(problems[0].message.contains("enable.auto.commit"));
        assert_eq!(c.client_config("x").get("security.protocol"), Some("ssl"));
    }

    #[test]
    fn a_refused_producer_option_points_at_a_setting_that_exists() {
        let c: KafkaSinkConfig = toml::from_str(
            "brokers = \"b\"\ntopic = \"t\"\noptions = { acks = \"1\", \"linger.ms\" = \"5\" }",
        )
        .unwrap();
        let mut problems = Vec::new();
        c.check(&ConfigPath::root(), &mut problems);
        let helps: Vec<&str> = problems.iter().filter_map(|p| p.help.as_deref()).collect();
        assert_eq!(helps.len(), 2, "{problems:?}");
        assert!(
            helps
                .iter()
                .any(|h| h.contains("always produces with acks=all")),
            "{helps:?}"
        );
        // Every `use X` names a sink setting.
        let fields = ["brokers", "compression", "linger", "partitioner"];
        for (_, why) in PRODUCER_MANAGED {
            if let Some(named) = why.strip_prefix("use `") {
                let name = named.trim_end_matches('`');
                assert!(fields.contains(&name), "{why}");
            }
        }
        assert!(
            toml::from_str::<KafkaSinkConfig>("brokers = \"b\"\ntopic = \"t\"\nacks = \"all\"")
                .is_err()
        );
    }

    fn problems(extra: &str) -> Vec<String> {
        let mut problems = Vec::new();
        source(extra).check(&ConfigPath::root(), &mut problems);
        problems.into_iter().map(|p| p.message).collect()
    }

    #[test]
    fn start_and_end_positions_are_checked_settings() {
        let c = source(
            "start_time = \"2024-05-01T10:00:00Z\"\nuntil = \"end\"\nend_offsets = { \"orders/1\" = 40, \"2\" = 7 }",
        );
        assert_eq!(c.start_time, Some(Time(1_714_557_600_000)));
        assert_eq!(c.end_offsets.get("orders", 1), Some(40));
        assert_eq!(c.end_offsets.get("orders", 2), Some(7), "a bare partition");
        assert_eq!(c.end_offsets.get("orders", 0), None);
        assert!(c.has_explicit_end());
        assert!(problems("start_time = 1714557600000").is_empty());

        let bad = toml::from_str::<KafkaSourceConfig>(
            "brokers = \"b\"\ntopics = [\"t\"]\ngroup = \"g\"\nstart_offsets = { \"t/x\" = 1 }",
        )
        .unwrap_err();
        assert!(bad.to_string().contains("\"orders/0\""), "{bad}");
        let negative = toml::from_str::<KafkaSourceConfig>(
            "brokers = \"b\"\ntopics = [\"t\"]\ngroup = \"g\"\nstart_offsets = { \"0\" = -1 }",
        )
        .unwrap_err();
        assert!(negative.to_string().contains("0 or more"), "{negative}");
    }

    #[test]
    fn contradicting_or_useless_positions_are_problems() {
        assert!(
            problems("start_time = 1\nstart_offsets = { \"0\" = 1 }")[0]
                .contains("both say where to begin")
        );
        assert!(problems("end_time = 1")[0].contains("needs `until = \"end\"`"));
        assert!(problems("start_offsets = { \"other/0\" = 1 }")[0].contains("`other`"));
    }
}
