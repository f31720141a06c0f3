//! Sources and sinks, one folder per system, and the contracts they keep.
//!
//! The set of connectors is closed: [`SourceConfig`] and [`SinkConfig`] are
//! enums with one variant per connector, so adding one means adding a
//! variant, and the compiler lists every place that must learn about it.

pub mod amqp;
pub mod diagnose;
pub mod generate;
pub mod kafka;
pub mod redis;
pub mod tls;
pub(crate) mod tls_client;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Deserialize;

use crate::ack::Ack;
use crate::error::{ConnectorError, MessageError};
use crate::message::{Coordinate, Message};
use crate::observe::Probe;
use crate::position::Settled;
use crate::problem::{ConfigPath, Problem};
use crate::template::Template;
use crate::values::Until;

/// A message and the handle that acknowledges it to its source.
#[derive(Debug)]
pub struct Envelope {
    pub message: Message,
    pub ack: Ack,
    /// Set by a source that decided on its own that the message must not
    /// be delivered (a Redis Stream entry delivered too many times): the
    /// runtime sends it straight to the dead-letter sink with this reason.
    pub dead_letter: Option<String>,
}

impl Envelope {
    pub fn new(message: Message, ack: Ack) -> Self {
        Self {
            message,
            ack,
            dead_letter: None,
        }
    }
}

/// Where a pipeline reads.
///
/// A source hands out messages with an [`Ack`] each and acts on their
/// outcome: commit, XACK, basic.ack only for [`crate::ack::Outcome::Delivered`],
/// and make failed ones available again. It must never acknowledge a
/// message before its ack says so.
pub trait Source: Send {
    /// The next message; `Ok(None)` when a finite source is exhausted.
    /// Must be cancel-safe: the runtime drops this future on shutdown.
    fn next(&mut self) -> impl Future<Output = Result<Option<Envelope>, ConnectorError>> + Send;

    /// For a finite source: how many messages it expects to deliver in
    /// all, when known at open (a Kafka copy with `until = "end"`, a
    /// generator with a `count`). Shown as progress; never enforced.
    fn expected(&self) -> Option<u64>;

    /// Called once the pipeline has drained (every handed-out message
    /// acknowledged or the drain timed out): commit what was confirmed and
    /// disconnect.
    fn close(self) -> impl Future<Output = Result<(), ConnectorError>> + Send;
}

/// What waits for the confirmations of one batch a sink has sent: one
/// result per write, or an error for the whole batch (which the runtime
/// then writes again). Owns everything it needs, so that several batches
/// can be in flight at once.
pub type Confirming =
    Pin<Box<dyn Future<Output = Result<Vec<Result<(), MessageError>>, ConnectorError>> + Send>>;

/// Where a pipeline writes.
///
/// `prepare` turns a message into the system's write (rendering key
/// templates, checking the payload); it is pure and its errors belong to
/// the message. `send` hands a batch of prepared writes to the target
/// system and returns without waiting for it: the [`Confirming`] future
/// resolves once the system confirmed every write (delivery reports,
/// publisher confirms, pipelined replies), with one result per write.
/// Batches reach the system in the order they were sent, so the runtime
/// keeps several in flight while earlier ones wait for confirmation.
pub trait Sink: Send + 'static {
    type Prepared: Send + Sync + 'static;

    fn prepare(&self, message: &Message) -> Result<Self::Prepared, MessageError>;

    fn send(
        &mut self,
        batch: Arc<[Self::Prepared]>,
    ) -> impl Future<Output = Result<Confirming, ConnectorError>> + Send;

    /// Whether a batch may be sent before the previous one is confirmed.
    /// `false` for writes whose order must survive a retry that the target
    /// would skip (`exactly_once`, `sync`: a batch written again after a
    /// later one was confirmed would not restore the order).
    fn overlaps(&self) -> bool {
        true
    }

    /// Sends a batch and waits for its confirmations.
    fn write(
        &mut self,
        batch: Arc<[Self::Prepared]>,
    ) -> impl Future<Output = Result<Vec<Result<(), MessageError>>, ConnectorError>> + Send {
        async move { self.send(batch).await?.await }
    }
}

/// A source's settings, as written in the config (`type = "..."`, which
/// the config loader lifts into this enum's tag).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SourceConfig {
    Kafka(kafka::KafkaSourceConfig),
    #[serde(rename = "redis-stream")]
    RedisStream(redis::RedisStreamSourceConfig),
    #[serde(rename = "redis-list")]
    RedisList(redis::RedisListSourceConfig),
    #[serde(rename = "redis-pubsub")]
    RedisPubSub(redis::RedisPubSubSourceConfig),
    #[serde(rename = "redis-keyspace")]
    RedisKeyspace(redis::RedisKeyspaceSourceConfig),
    Amqp(amqp::AmqpSourceConfig),
    Generate(generate::GenerateConfig),
}

impl SourceConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            SourceConfig::Kafka(_) => "kafka",
            SourceConfig::RedisStream(_) => "redis-stream",
            SourceConfig::RedisList(_) => "redis-list",
            SourceConfig::RedisPubSub(_) => "redis-pubsub",
            SourceConfig::RedisKeyspace(_) => "redis-keyspace",
            SourceConfig::Amqp(_) => "amqp",
            SourceConfig::Generate(_) => "generate",
        }
    }

    /// A short human name: `kafka topics `orders` (group g)`.
    pub fn describe(&self) -> String {
        let list = |names: Vec<String>| {
            names
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let job = |end: bool| if end { ", until the end" } else { "" };
        match self {
            SourceConfig::Kafka(c) => format!(
                "kafka topics {} (group {}){}",
                list(c.topics.iter().map(ToString::to_string).collect()),
                c.group,
                job(c.until == Until::End)
            ),
            SourceConfig::RedisStream(c) => format!(
                "redis streams {} (group {}){}",
                list(c.streams.iter().map(ToString::to_string).collect()),
                c.group,
                job(c.until == Until::End)
            ),
            SourceConfig::RedisList(c) => {
                format!("redis list `{}`{}", c.list, job(c.until == Until::End))
            }
            SourceConfig::RedisPubSub(c) => format!(
                "redis pub/sub {}",
                list(
                    c.channels
                        .iter()
                        .chain(&c.patterns)
                        .map(ToString::to_string)
                        .collect()
                )
            ),
            SourceConfig::RedisKeyspace(c) => format!(
                "redis keys matching `{}`{}",
                c.pattern,
                job(c.until == redis::config::KeyspaceUntil::Snapshot)
            ),
            SourceConfig::Amqp(c) => {
                format!("amqp queue `{}`{}", c.queue, job(c.until == Until::End))
            }
            SourceConfig::Generate(c) => match c.count {
                Some(n) => format!("{n} generated orders"),
                None => "generated orders".to_owned(),
            },
        }
    }

    /// Whether the source is one side of a two-way sync (a keyspace source
    /// with `sync`).
    pub fn syncs(&self) -> bool {
        matches!(self, SourceConfig::RedisKeyspace(c) if c.sync)
    }

    /// Whether a new consumer group starts at the end of the log, skipping
    /// whatever was written while it joined (a Kafka source with `start =
    /// "latest"`).
    pub fn skips_records_while_joining(&self) -> bool {
        matches!(self, SourceConfig::Kafka(c) if c.start == kafka::config::StartFrom::Latest)
    }

    /// Source coordinates its messages carry, for checking key templates.
    pub fn coordinates(&self) -> &'static [Coordinate] {
        use Coordinate as C;
        match self {
            SourceConfig::Kafka(_) => &[C::Source, C::Topic, C::Partition, C::Offset],
            SourceConfig::RedisStream(_) => &[C::Source, C::Stream, C::EntryId],
            SourceConfig::RedisList(_) => &[C::Source, C::List],
            SourceConfig::RedisPubSub(_) => &[C::Source, C::Channel],
            SourceConfig::RedisKeyspace(_) => &[C::Source, C::KeyspaceEvent],
            SourceConfig::Amqp(_) => &[C::Source, C::Queue, C::Exchange, C::RoutingKey],
            SourceConfig::Generate(_) => &[],
        }
    }

    /// Whether the source dead-letters rejected messages itself when the
    /// pipeline has no dead-letter sink (AMQP `basic.reject`).
    pub fn rejects_natively(&self) -> bool {
        match self {
            SourceConfig::Amqp(c) => c.rejected.is_some(),
            SourceConfig::Kafka(_)
            | SourceConfig::RedisStream(_)
            | SourceConfig::RedisList(_)
            | SourceConfig::RedisPubSub(_)
            | SourceConfig::RedisKeyspace(_)
            | SourceConfig::Generate(_) => false,
        }
    }

    pub fn check(&self, path: &ConfigPath, problems: &mut Vec<Problem>) {
        match self {
            SourceConfig::Kafka(c) => c.check(path, problems),
            SourceConfig::RedisStream(c) => c.check(path, problems),
            SourceConfig::RedisPubSub(c) => c.check(path, problems),
            SourceConfig::Amqp(c) => c.check(path, problems),
            SourceConfig::RedisKeyspace(c) => c.check(path, problems),
            SourceConfig::RedisList(c) => c.check(path, problems),
            SourceConfig::Generate(_) => {}
        }
    }
}

/// A sink's settings, as written in the config (`type = "..."`).
#[derive(Clone, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SinkConfig {
    Redis(redis::RedisSinkConfig),
    Kafka(kafka::KafkaSinkConfig),
    Amqp(amqp::AmqpSinkConfig),
}

impl SinkConfig {
    /// Opens the sink these settings describe (see [`AnySink::open`]).
    pub async fn open(
        &self,
        pipeline: &str,
        probe: &Probe,
        settled: &Arc<Settled>,
    ) -> Result<AnySink, ConnectorError> {
        AnySink::open(pipeline, self, probe, settled).await
    }

    pub fn kind(&self) -> &'static str {
        match self {
            SinkConfig::Redis(_) => "redis",
            SinkConfig::Kafka(_) => "kafka",
            SinkConfig::Amqp(_) => "amqp",
        }
    }

    /// Whether the sink is one side of a two-way sync (a Redis sink with
    /// `sync`): it takes the echoes of its deployment's own changes.
    pub fn syncs(&self) -> bool {
        matches!(self, SinkConfig::Redis(c) if c.sync)
    }

    /// Messages per write batch.
    pub fn batch_size(&self) -> usize {
        match self {
            SinkConfig::Redis(c) => c.batch_size.get(),
            SinkConfig::Kafka(c) => c.batch_size.get(),
            SinkConfig::Amqp(c) => c.batch_size.get(),
        }
    }

    /// A short human name: `redis set order:{order_id}`, `kafka topic orders`.
    pub fn describe(&self) -> String {
        match self {
            SinkConfig::Redis(c) => format!("redis {} {}", c.write.name(), c.key),
            SinkConfig::Kafka(c) => format!("kafka topic {}", c.topic),
            // The default exchange delivers to the queue the key names.
            SinkConfig::Amqp(c) if c.exchange.is_empty() => {
                format!("amqp queue {}", c.routing_key)
            }
            SinkConfig::Amqp(c) => format!(
                "amqp exchange `{}` routing key {}",
                c.exchange, c.routing_key
            ),
        }
    }

    /// The templates of this sink, with the field each is written in.
    pub fn templates(&self) -> Vec<(&'static str, &Template)> {
        match self {
            SinkConfig::Redis(c) => std::iter::once(("key", &c.key))
                .chain(c.score.iter().map(|t| ("score", t)))
                .chain(c.member.iter().map(|t| ("member", t)))
                .collect(),
            SinkConfig::Kafka(c) => c.key.iter().map(|k| ("key", k)).collect(),
            SinkConfig::Amqp(c) => vec![("routing_key", &c.routing_key)],
        }
    }

    pub fn check(&self, path: &ConfigPath, source: &SourceConfig, problems: &mut Vec<Problem>) {
        for (field, template) in self.templates() {
            for c in template.coordinates() {
                if !source.coordinates().contains(&c) {
                    problems.push(
                        Problem::at_path(
                            path.key(field),
                            format!(
                                "`{{{}}}` is not available: messages from a {} source have no {}",
                                c.name(),
                                source.kind(),
                                c.name()
                            ),
                        )
                        .with_help("use payload fields (`{field}`), `{key}` or `{header.NAME}`"),
                    );
                }
            }
        }
        if let SinkConfig::Redis(c) = self
            && c.exactly_once
            && !matches!(
                source,
                SourceConfig::Kafka(_) | SourceConfig::RedisStream(_)
            )
        {
            problems.push(
                Problem::at_path(
                    path.key("exactly_once"),
                    format!(
                        "`exactly_once` needs messages with a position in their source; \
                         messages from a {} source have none",
                        source.kind()
                    ),
                )
                .with_help("use it with a `kafka` or `redis-stream` source, or remove it"),
            );
        }
        match self {
            SinkConfig::Redis(c) => c.check(path, problems),
            SinkConfig::Kafka(c) => c.check(path, problems),
            SinkConfig::Amqp(c) => c.check(path, problems),
        }
    }
}

/// An open sink of any kind. The runtime drives every kind the same way
/// through [`SinkRunner`], so it never names one. One per sink, made once:
/// the size of its largest variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum AnySink {
    Redis(redis::RedisSink),
    Kafka(kafka::KafkaSink),
    Amqp(amqp::sink::AmqpSink),
}

/// What to do with an open sink, whatever its kind: a generic method, so
/// each kind gets its own code and no write goes through a box.
pub trait SinkRunner {
    type Output;
    fn run<S: Sink>(self, sink: S) -> Self::Output;
}

impl AnySink {
    /// Opens the sink. `settled` is the pipeline's settled source positions
    /// (used by a Redis sink with `exactly_once`).
    pub async fn open(
        pipeline: &str,
        config: &SinkConfig,
        probe: &Probe,
        settled: &Arc<Settled>,
    ) -> Result<Self, ConnectorError> {
        Ok(match config {
            SinkConfig::Redis(c) => {
                AnySink::Redis(redis::RedisSink::open(pipeline, c, probe, settled).await?)
            }
            SinkConfig::Kafka(c) => {
                AnySink::Kafka(kafka::KafkaSink::open(pipeline, c, probe).await?)
            }
            SinkConfig::Amqp(c) => AnySink::Amqp(amqp::sink::AmqpSink::open(pipeline, c).await?),
        })
    }

    /// Hands the sink, as its own type, to `runner`.
    pub fn run<R: SinkRunner>(self, runner: R) -> R::Output {
        match self {
            AnySink::Redis(s) => runner.run(s),
            AnySink::Kafka(s) => runner.run(s),
            AnySink::Amqp(s) => runner.run(s),
        }
    }
}

/// An open source of any kind. One per pipeline, made once: the size of
/// its largest variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum AnySource {
    Kafka(kafka::KafkaSource),
    RedisStream(redis::source::stream::RedisStreamSource),
    RedisList(redis::source::list::RedisListSource),
    RedisPubSub(redis::source::pubsub::RedisPubSubSource),
    RedisKeyspace(redis::source::keyspace::RedisKeyspaceSource),
    Amqp(amqp::source::AmqpSource),
    Generate(generate::GenerateSource),
}

impl AnySource {
    /// Opens the source. Sources that reconnect on their own, in a
    /// background task, report what they see to `probe`.
    pub async fn open(
        pipeline: &str,
        config: &SourceConfig,
        probe: &Probe,
        settled: &Arc<Settled>,
    ) -> Result<Self, ConnectorError> {
        use redis::source::*;
        Ok(match config {
            SourceConfig::Kafka(c) => {
                AnySource::Kafka(kafka::KafkaSource::open(pipeline, c, probe, settled).await?)
            }
            SourceConfig::RedisStream(c) => AnySource::RedisStream(
                stream::RedisStreamSource::open(pipeline, c, probe, settled).await?,
            ),
            SourceConfig::RedisList(c) => {
                AnySource::RedisList(list::RedisListSource::open(pipeline, c, probe).await?)
            }
            SourceConfig::RedisPubSub(c) => {
                AnySource::RedisPubSub(pubsub::RedisPubSubSource::open(pipeline, c, probe).await?)
            }
            SourceConfig::RedisKeyspace(c) => AnySource::RedisKeyspace(
                keyspace::RedisKeyspaceSource::open(pipeline, c, probe).await?,
            ),
            SourceConfig::Amqp(c) => {
                AnySource::Amqp(amqp::source::AmqpSource::open(pipeline, c, probe).await?)
            }
            SourceConfig::Generate(c) => AnySource::Generate(generate::GenerateSource::open(c)),
        })
    }
}

impl Source for AnySource {
    async fn next(&mut self) -> Result<Option<Envelope>, ConnectorError> {
        match self {
            AnySource::Kafka(s) => s.next().await,
            AnySource::RedisStream(s) => s.next().await,
            AnySource::RedisList(s) => s.next().await,
            AnySource::RedisPubSub(s) => s.next().await,
            AnySource::RedisKeyspace(s) => s.next().await,
            AnySource::Amqp(s) => s.next().await,
            AnySource::Generate(s) => s.next().await,
        }
    }

    fn expected(&self) -> Option<u64> {
        match self {
            AnySource::Kafka(s) => s.expected(),
            AnySource::Generate(s) => s.expected(),
            AnySource::RedisKeyspace(s) => s.expected(),
            AnySource::RedisStream(s) => s.expected(),
            AnySource::RedisList(s) => s.expected(),
            AnySource::RedisPubSub(s) => s.expected(),
            AnySource::Amqp(s) => s.expected(),
        }
    }

    async fn close(self) -> Result<(), ConnectorError> {
        match self {
            AnySource::Kafka(s) => s.close().await,
            AnySource::RedisStream(s) => s.close().await,
            AnySource::RedisList(s) => s.close().await,
            AnySource::RedisPubSub(s) => s.close().await,
            AnySource::RedisKeyspace(s) => s.close().await,
            AnySource::Amqp(s) => s.close().await,
            AnySource::Generate(s) => s.close().await,
        }
    }
}
