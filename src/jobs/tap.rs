//! `ferry tap`: prints what flows through a topic, stream, exchange or a
//! running pipeline's source, live, without acknowledging or disturbing
//! anything: Kafka partitions are assigned, not joined as a group, and
//! nothing is committed; Redis streams are read with `XREAD` (no group);
//! RabbitMQ messages are copied to a temporary queue bound to the
//! exchange (deleted when the tap ends), so the real queue keeps them all.
//! For a pipeline, each message is also run through the pipeline's router
//! to show where it would go.

use std::fmt::Write as _;
use std::sync::Arc;

use futures::StreamExt;
use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;

use super::read::{Begin, KafkaReader, StreamReader};
use crate::config::{Config, PipelineConfig};
use crate::connectors::SourceConfig;
use crate::connectors::amqp::access::AmqpAccess;
use crate::connectors::amqp::mapping::delivery_message;
use crate::connectors::kafka::oauth::BearerToken;
use crate::connectors::kafka::security;
use crate::connectors::redis::access::RedisAccess;
use crate::message::Message;
use crate::runtime::router::{Plan, Router};
use crate::steps::jq::{Variables, payload_value};
use crate::steps::{Jq, truthy};
use crate::values::time::Time;

/// What to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `kafka://BROKERS/TOPIC[,TOPIC...]`
    Kafka {
        brokers: String,
        topics: Vec<String>,
    },
    /// `redis://HOST:PORT/DB?stream=NAME[,NAME...]`
    Stream { url: String, streams: Vec<String> },
    /// `amqp://USER:PASS@HOST:PORT/VHOST?exchange=NAME&routing_key=KEY`
    Exchange {
        url: String,
        exchange: String,
        routing_key: String,
    },
}

impl Target {
    pub fn parse(s: &str) -> Result<Target, String> {
        if let Some(rest) = s.strip_prefix("kafka://") {
            let (brokers, topics) = rest
                .split_once('/')
                .filter(|(b, t)| !b.is_empty() && !t.is_empty())
                .ok_or_else(|| format!("`{s}`: write kafka://BROKERS/TOPIC"))?;
            return Ok(Target::Kafka {
                brokers: brokers.to_owned(),
                topics: topics.split(',').map(str::to_owned).collect(),
            });
        }
        let (base, query) = s.split_once('?').unwrap_or((s, ""));
        let params: Vec<(&str, &str)> =
            query.split('&').filter_map(|p| p.split_once('=')).collect();
        let param = |name: &str| params.iter().find(|(k, _)| *k == name).map(|(_, v)| *v);
        let rest = |skip: &[&str]| {
            let kept: Vec<String> = params
                .iter()
                .filter(|(k, _)| !skip.contains(k))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            if kept.is_empty() {
                base.to_owned()
            } else {
                format!("{base}?{}", kept.join("&"))
            }
        };
        if s.starts_with("redis://") || s.starts_with("rediss://") {
            let stream = param("stream").ok_or_else(|| {
                format!("`{s}`: name the stream: redis://HOST:PORT/DB?stream=NAME")
            })?;
            return Ok(Target::Stream {
                url: rest(&["stream"]),
                streams: stream.split(',').map(str::to_owned).collect(),
            });
        }
        if s.starts_with("amqp://") || s.starts_with("amqps://") {
            let exchange = param("exchange").ok_or_else(|| {
                format!("`{s}`: name the exchange: amqp://.../VHOST?exchange=NAME&routing_key=#")
            })?;
            return Ok(Target::Exchange {
                url: rest(&["exchange", "routing_key"]),
                exchange: exchange.to_owned(),
                routing_key: param("routing_key").unwrap_or("#").to_owned(),
            });
        }
        Err(format!(
            "`{s}`: tap kafka://BROKERS/TOPIC, redis://HOST:PORT/DB?stream=NAME, \
             amqp://HOST/VHOST?exchange=NAME, or a pipeline with --config"
        ))
    }

    /// The target a pipeline's source reads from.
    pub fn of_pipeline(pipeline: &PipelineConfig) -> Result<(Target, Login), String> {
        match &pipeline.source {
            SourceConfig::Kafka(c) => Ok((
                Target::Kafka {
                    brokers: c.brokers.to_string(),
                    topics: c.topics.iter().map(ToString::to_string).collect(),
                },
                Login {
                    kafka_options: c
                        .options
                        .clone()
                        .into_iter()
                        .chain(
                            security::properties(c.tls.as_ref(), c.sasl.as_ref())
                                .into_iter()
                                .map(|(k, v)| (k.to_owned(), v)),
                        )
                        .collect(),
                    kafka_bearer: BearerToken::of(c.sasl.as_ref()),
                    ..Login::default()
                },
            )),
            SourceConfig::RedisStream(c) => Ok((
                Target::Stream {
                    url: c.url.as_str().to_owned(),
                    streams: c.streams.iter().map(ToString::to_string).collect(),
                },
                Login {
                    redis: Some(c.access()),
                    ..Login::default()
                },
            )),
            SourceConfig::Amqp(c) => {
                let binding = c
                    .declare
                    .bindings
                    .iter()
                    .find(|b| b.queue.as_str() == c.queue.as_str())
                    .ok_or_else(|| {
                        format!(
                            "pipeline `{}` reads queue `{}`, which its config binds to no \
                             exchange; tap the exchange itself (amqp://...?exchange=NAME)",
                            pipeline.name, c.queue
                        )
                    })?;
                Ok((
                    Target::Exchange {
                        url: c.url.as_str().to_owned(),
                        exchange: binding.exchange.to_string(),
                        routing_key: binding.routing_key.clone(),
                    },
                    Login {
                        amqp: Some(c.access()),
                        ..Login::default()
                    },
                ))
            }
            other => Err(format!(
                "pipeline `{}` reads a {} source; tap reads kafka, redis-stream and amqp \
                 sources (a list cannot be read without taking its elements)",
                pipeline.name,
                other.kind()
            )),
        }
    }
}

/// How a pipeline's source logs in, beyond what its URL says: its
/// `options`, `tls` and `sasl` (Kafka), its `username`, `password` and `tls`
/// (Redis, RabbitMQ). A target given as a URL has only the URL.
#[derive(Clone, Debug, Default)]
pub struct Login {
    kafka_options: std::collections::BTreeMap<String, String>,
    kafka_bearer: Option<BearerToken>,
    redis: Option<RedisAccess>,
    amqp: Option<AmqpAccess>,
}

/// How a tap shows messages.
pub struct Tap {
    pub filter: Option<Jq>,
    /// Stop after this many messages shown.
    pub count: Option<u64>,
    pub begin: Begin,
    /// For a pipeline: its router, and its sinks' names.
    pub router: Option<(Router, Vec<String>)>,
}

/// `earliest`, `latest` or a time.
pub fn parse_begin(s: &str) -> Result<Begin, String> {
    match s {
        "earliest" | "beginning" => Ok(Begin::Earliest),
        "latest" | "now" => Ok(Begin::Latest),
        t => Time::parse(t)
            .map(Begin::At)
            .map_err(|e| format!("{e}; or `earliest` or `latest`")),
    }
}

impl Tap {
    /// For a pipeline of `config`: its source, and where its router sends
    /// each message.
    pub fn for_pipeline(config: &Config, pipeline: &PipelineConfig) -> (Router, Vec<String>) {
        let names = pipeline
            .sinks
            .iter()
            .enumerate()
            .map(|(i, s)| s.id(i))
            .collect();
        (Router::new(config, pipeline), names)
    }

    fn wanted(&self, message: &Message) -> bool {
        let Some(filter) = &self.filter else {
            return true;
        };
        let Ok(value) = payload_value(message) else {
            return false;
        };
        filter
            .run_alone(value, &Variables::of(message))
            .is_ok_and(|out| out.first().is_some_and(truthy))
    }

    /// Shows `message` if it passes the filter: 1 if shown, 0 if not,
    /// `None` when the reader of the output went away (`| head`).
    fn show(
        &self,
        message: &Message,
        out: &mut impl std::io::Write,
    ) -> Result<Option<u64>, String> {
        if !self.wanted(message) {
            return Ok(Some(0));
        }
        let routes = self
            .router
            .as_ref()
            .map(|(router, names)| route(router, names, message));
        let written = out
            .write_all(render(message, routes.as_deref()).as_bytes())
            .and_then(|()| out.flush());
        match written {
            Ok(()) => Ok(Some(1)),
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(None),
            Err(e) => Err(format!("cannot write the output: {e}")),
        }
    }

    /// Follows `target` until `count` messages were shown or the process
    /// is stopped.
    pub async fn run(&self, target: &Target, login: &Login) -> Result<u64, String> {
        let mut stdout = std::io::stdout();
        let mut shown = 0;
        let done = |shown: u64| self.count.is_some_and(|n| shown >= n);
        match target {
            Target::Kafka { brokers, topics } => {
                let mut reader = KafkaReader::open(
                    brokers,
                    topics,
                    &login.kafka_options,
                    login.kafka_bearer.clone(),
                    self.begin,
                    false,
                )
                .await?;
                tracing::info!(
                    ?topics,
                    "tapping kafka (partitions assigned, no group, no commits)"
                );
                while !done(shown) {
                    let Some(m) = reader.next().await? else { break };
                    let Some(n) = self.show(&m, &mut stdout)? else {
                        break;
                    };
                    shown += n;
                }
            }
            Target::Stream { url, streams } => {
                let access = match &login.redis {
                    Some(access) => access.clone(),
                    None => RedisAccess::from_url(url)?,
                };
                let mut reader = StreamReader::open(&access, streams, self.begin, false).await?;
                tracing::info!(?streams, "tapping redis streams (XREAD, no group)");
                while !done(shown) {
                    let Some(m) = reader.next().await? else { break };
                    let Some(n) = self.show(&m, &mut stdout)? else {
                        break;
                    };
                    shown += n;
                }
            }
            Target::Exchange {
                url,
                exchange,
                routing_key,
            } => {
                let access = match &login.amqp {
                    Some(access) => access.clone(),
                    None => AmqpAccess::from_url(url)?,
                };
                let (_conn, channel) =
                    crate::connectors::amqp::connection::open(&access, "ferry-tap")
                        .await
                        .map_err(|e| e.to_string())?;
                // A queue of the tap's own: exclusive, so RabbitMQ deletes it
                // with the connection, and the real queues lose nothing.
                let queue = channel
                    .queue_declare(
                        "".into(),
                        QueueDeclareOptions {
                            exclusive: true,
                            auto_delete: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| format!("amqp: declaring the tap's queue: {e}"))?;
                channel
                    .queue_bind(
                        queue.name().clone(),
                        exchange.as_str().into(),
                        routing_key.as_str().into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| format!("amqp: binding to exchange `{exchange}`: {e}"))?;
                let mut consumer = channel
                    .basic_consume(
                        queue.name().clone(),
                        "ferry-tap".into(),
                        BasicConsumeOptions {
                            no_ack: true,
                            ..BasicConsumeOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| format!("amqp: consuming the tap's queue: {e}"))?;
                let name: Arc<str> = Arc::from(queue.name().as_str());
                tracing::info!(exchange, routing_key, queue = %name, "tapping amqp exchange through a temporary queue");
                while !done(shown) {
                    let Some(delivery) = consumer.next().await else {
                        break;
                    };
                    let delivery = delivery.map_err(|e| format!("amqp: {e}"))?;
                    let (m, _acker) = delivery_message(&name, delivery);
                    let Some(n) = self.show(&m, &mut stdout)? else {
                        break;
                    };
                    shown += n;
                }
            }
        }
        Ok(shown)
    }
}

/// Where the router sends a message: `→ orders-db, emails`.
fn route(router: &Router, names: &[String], message: &Message) -> String {
    let name = |i: &usize| {
        names
            .get(*i)
            .cloned()
            .unwrap_or_else(|| format!("sinks[{i}]"))
    };
    match router.plan(message.clone(), &|| false) {
        Err(refused) => format!("→ dead letter: {}", refused.error),
        Ok(Plan::Dropped(why)) => format!("→ dropped: {why}"),
        Ok(Plan::Interrupted) => "→ interrupted".to_owned(),
        Ok(Plan::Echo(_, sinks)) => format!(
            "→ echo, to the sync sinks {}",
            sinks.iter().map(name).collect::<Vec<_>>().join(", ")
        ),
        Ok(Plan::Deliver(plan)) if plan.is_empty() => "→ filtered out".to_owned(),
        Ok(Plan::Deliver(plan)) => plan
            .iter()
            .map(|(_, sinks)| match sinks.is_empty() {
                true => "→ no route matched".to_owned(),
                false => format!(
                    "→ {}",
                    sinks.iter().map(name).collect::<Vec<_>>().join(", ")
                ),
            })
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// A message as the tap prints it: origin, time and key on the first line,
/// then headers, then the payload.
pub fn render(message: &Message, routes: Option<&str>) -> String {
    let mut s = String::new();
    let _ = write!(s, "{}", message.origin);
    if let Some(t) = message.timestamp {
        let _ = write!(s, "  {}", Time(t));
    }
    if let Some(k) = &message.key {
        let _ = write!(s, "  key={}", String::from_utf8_lossy(k));
    }
    s.push('\n');
    if !message.headers.is_empty() {
        let headers: Vec<String> = message
            .headers
            .iter()
            .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
            .collect();
        let _ = writeln!(s, "  headers: {}", headers.join(" "));
    }
    match &message.payload {
        None => s.push_str("  (tombstone)\n"),
        Some(p) => {
            let _ = writeln!(s, "  {}", String::from_utf8_lossy(p));
        }
    }
    if let Some(routes) = routes {
        let _ = writeln!(s, "  {routes}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Origin;

    #[test]
    fn targets_are_named_by_url() {
        assert_eq!(
            Target::parse("kafka://b:9092/orders,refunds").unwrap(),
            Target::Kafka {
                brokers: "b:9092".into(),
                topics: vec!["orders".into(), "refunds".into()]
            }
        );
        assert_eq!(
            Target::parse("redis://h:6379/1?stream=orders").unwrap(),
            Target::Stream {
                url: "redis://h:6379/1".into(),
                streams: vec!["orders".into()]
            }
        );
        assert_eq!(
            Target::parse("amqp://guest:guest@h:5672/%2f?exchange=shop").unwrap(),
            Target::Exchange {
                url: "amqp://guest:guest@h:5672/%2f".into(),
                exchange: "shop".into(),
                routing_key: "#".into()
            }
        );
        assert!(Target::parse("redis://h").unwrap_err().contains("?stream="));
        assert!(Target::parse("file:x").unwrap_err().contains("--config"));
    }

    #[test]
    fn a_message_shows_its_origin_time_key_headers_and_payload() {
        let mut m = Message::from_payload(r#"{"order_id":"o1"}"#);
        m.key = Some("o1".into());
        m.timestamp = Some(1_714_557_600_250);
        m.headers.set("ferry.hops", "1");
        m.origin = Origin::Kafka {
            topic: "orders".into(),
            partition: 2,
            offset: 41,
        };
        assert_eq!(
            render(&m, Some("→ orders-db")),
            "kafka topic=orders partition=2 offset=41  2024-05-01T10:00:00.250Z  key=o1\n  \
             headers: ferry.hops=1\n  {\"order_id\":\"o1\"}\n  → orders-db\n"
        );
    }

    #[test]
    fn a_filter_shows_only_matching_messages() {
        let tap = Tap {
            filter: Some(Jq::compile(".status == \"paid\"").unwrap()),
            count: None,
            begin: Begin::Latest,
            router: None,
        };
        assert!(tap.wanted(&Message::from_payload(r#"{"status":"paid"}"#)));
        assert!(!tap.wanted(&Message::from_payload(r#"{"status":"new"}"#)));
        assert!(!tap.wanted(&Message::from_payload("not json")));
    }
}
