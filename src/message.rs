//! ferry's own message: what every source produces and every sink consumes.
//!
//! A message is deliberately close to a Kafka record (key, payload, headers,
//! timestamp) because that is the richest of the three systems; AMQP
//! deliveries and Redis entries map onto it without loss (see each
//! connector's `mapping.rs`). `origin` says where the message was read, so
//! that logs, dead letters and key templates can name it.

use std::fmt;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

/// One unit of data moving through a pipeline.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Message {
    /// Partitioning / identity key (Kafka key, AMQP routing key, Redis key).
    pub key: Option<Bytes>,
    /// The body. `None` is a tombstone: "this key was deleted".
    pub payload: Option<Bytes>,
    /// Ordered, possibly repeated header names with byte values.
    pub headers: Headers,
    /// Milliseconds since the Unix epoch, when the source system knows it.
    pub timestamp: Option<i64>,
    /// Where the message was read from.
    pub origin: Origin,
    /// Which of the messages steps made from one source message this is
    /// (a `map` may split one into several): 0, 1, ... With `origin`, it
    /// names the message exactly, for sinks that skip what they already
    /// wrote (`exactly_once`).
    pub part: u32,
    /// The message came back to the deployment it left (its `ferry.origin`
    /// is this pipeline's): only a two-way sync's Redis sink takes it, to
    /// learn that its own change made it through the log.
    pub echo: bool,
    /// The payload parsed as JSON, computed once on first use and shared by
    /// every sink the message is routed to. Only ever read through
    /// [`Message::json`], which ignores it if the payload was replaced.
    pub json: JsonCache,
}

impl Message {
    /// A message with a payload and nothing else, for tests and generators.
    pub fn from_payload(payload: impl Into<Bytes>) -> Self {
        Self {
            payload: Some(payload.into()),
            ..Self::default()
        }
    }

    /// The payload parsed as JSON, or why it could not be.
    pub fn json(&self) -> Result<Arc<serde_json::Value>, JsonError> {
        self.json.get(self.payload.as_ref())
    }

    /// The payload's JSON if it was parsed already (by a step), without
    /// parsing it.
    pub fn parsed_json(&self) -> Option<Result<Arc<serde_json::Value>, JsonError>> {
        self.json.parsed(self.payload.as_ref())
    }

    /// A one-line description of where this message came from, for logs and
    /// dead-letter headers.
    pub fn describe_origin(&self) -> String {
        self.origin.to_string()
    }
}

fn parse_json(payload: Option<&[u8]>) -> Result<serde_json::Value, JsonError> {
    let payload = payload.ok_or(JsonError::Tombstone)?;
    serde_json::from_slice(payload).map_err(|e| JsonError::Invalid(e.to_string()))
}

/// Why a payload could not be read as JSON.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum JsonError {
    #[error("the message has no payload (tombstone)")]
    Tombstone,
    #[error("the payload is not valid JSON: {0}")]
    Invalid(String),
}

/// Lazily parsed JSON of a payload. It remembers which payload it parsed
/// (`Bytes` are immutable, so pointer and length identify them) and is
/// ignored when the message's payload has since been replaced. Equality
/// and debug output ignore it because it is derived from the payload.
#[derive(Clone, Default)]
pub struct JsonCache(OnceLock<CachedJson>);

type CachedJson = (usize, usize, Result<Arc<serde_json::Value>, JsonError>);

impl JsonCache {
    fn get(&self, payload: Option<&Bytes>) -> Result<Arc<serde_json::Value>, JsonError> {
        let identity = payload.map_or((0, 0), |p| (p.as_ptr() as usize, p.len()));
        let parse = || parse_json(payload.map(|p| p.as_ref())).map(Arc::new);
        let (ptr, len, cached) = self.0.get_or_init(|| (identity.0, identity.1, parse()));
        if (*ptr, *len) == identity {
            cached.clone()
        } else {
            parse()
        }
    }
}

impl JsonCache {
    fn parsed(&self, payload: Option<&Bytes>) -> Option<Result<Arc<serde_json::Value>, JsonError>> {
        let identity = payload.map_or((0, 0), |p| (p.as_ptr() as usize, p.len()));
        let (ptr, len, cached) = self.0.get()?;
        ((*ptr, *len) == identity).then(|| cached.clone())
    }
}

impl PartialEq for JsonCache {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl fmt::Debug for JsonCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("..")
    }
}

/// Message headers: ordered `(name, value)` pairs. Names may repeat, as in
/// Kafka; lookups return the last value, which is what a later hop wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Headers(Vec<(String, Bytes)>);

impl Headers {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, name: impl Into<String>, value: impl Into<Bytes>) {
        self.0.push((name.into(), value.into()));
    }

    /// Replaces every header called `name` with one holding `value`.
    pub fn set(&mut self, name: &str, value: impl Into<Bytes>) {
        self.0.retain(|(n, _)| n != name);
        self.0.push((name.to_owned(), value.into()));
    }

    /// Removes every header called `name`.
    pub fn remove(&mut self, name: &str) {
        self.0.retain(|(n, _)| n != name);
    }

    pub fn get(&self, name: &str) -> Option<&Bytes> {
        self.0.iter().rev().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Bytes)> {
        self.0.iter().map(|(n, v)| (n.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<N: Into<String>, V: Into<Bytes>> FromIterator<(N, V)> for Headers {
    fn from_iter<T: IntoIterator<Item = (N, V)>>(iter: T) -> Self {
        Self(
            iter.into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        )
    }
}

/// Where a message was read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Origin {
    /// Made up inside ferry (the `generate` source, tests).
    #[default]
    Generated,
    /// A Kafka record.
    Kafka {
        topic: Arc<str>,
        partition: i32,
        offset: i64,
    },
    /// A Redis Stream entry.
    RedisStream { stream: Arc<str>, id: String },
    /// An element popped from a Redis list.
    RedisList { list: Arc<str> },
    /// A Redis pub/sub message.
    RedisChannel { channel: String },
    /// A Redis key that changed (keyspace notification or snapshot).
    RedisKeyspace { key: String, event: String },
    /// An AMQP delivery.
    Amqp {
        queue: Arc<str>,
        exchange: String,
        routing_key: String,
        delivery_tag: u64,
    },
}

impl Origin {
    /// The value of a source coordinate usable in key templates
    /// (`{topic}`, `{stream}`, `{routing_key}`, ...), if this origin has it.
    pub fn coordinate(&self, name: Coordinate) -> Option<String> {
        use Coordinate as C;
        match (self, name) {
            (Origin::Kafka { topic, .. }, C::Topic | C::Source) => Some(topic.to_string()),
            (Origin::Kafka { partition, .. }, C::Partition) => Some(partition.to_string()),
            (Origin::Kafka { offset, .. }, C::Offset) => Some(offset.to_string()),
            (Origin::RedisStream { stream, .. }, C::Stream | C::Source) => Some(stream.to_string()),
            (Origin::RedisStream { id, .. }, C::EntryId) => Some(id.clone()),
            (Origin::RedisList { list }, C::List | C::Source) => Some(list.to_string()),
            (Origin::RedisChannel { channel }, C::Channel | C::Source) => Some(channel.clone()),
            (Origin::RedisKeyspace { key, .. }, C::Source) => Some(key.clone()),
            (Origin::RedisKeyspace { event, .. }, C::KeyspaceEvent) => Some(event.clone()),
            (Origin::Amqp { queue, .. }, C::Queue | C::Source) => Some(queue.to_string()),
            (Origin::Amqp { exchange, .. }, C::Exchange) => Some(exchange.clone()),
            (Origin::Amqp { routing_key, .. }, C::RoutingKey) => Some(routing_key.clone()),
            _ => None,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Generated => f.write_str("generated"),
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => write!(
                f,
                "kafka topic={topic} partition={partition} offset={offset}"
            ),
            Origin::RedisStream { stream, id } => write!(f, "redis stream={stream} id={id}"),
            Origin::RedisList { list } => write!(f, "redis list={list}"),
            Origin::RedisChannel { channel } => write!(f, "redis channel={channel}"),
            Origin::RedisKeyspace { key, event } => write!(f, "redis key={key} event={event}"),
            Origin::Amqp {
                queue,
                exchange,
                routing_key,
                delivery_tag,
            } => write!(
                f,
                "amqp queue={queue} exchange={exchange} routing_key={routing_key} delivery_tag={delivery_tag}"
            ),
        }
    }
}

/// Source coordinates a key template can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coordinate {
    /// Where the message was read: topic, stream, list, channel, queue, or
    /// the key that changed.
    Source,
    Topic,
    Partition,
    Offset,
    Stream,
    EntryId,
    List,
    Channel,
    KeyspaceEvent,
    Queue,
    Exchange,
    RoutingKey,
}

impl Coordinate {
    pub const ALL: [Coordinate; 12] = [
        Coordinate::Source,
        Coordinate::Topic,
        Coordinate::Partition,
        Coordinate::Offset,
        Coordinate::Stream,
        Coordinate::EntryId,
        Coordinate::List,
        Coordinate::Channel,
        Coordinate::KeyspaceEvent,
        Coordinate::Queue,
        Coordinate::Exchange,
        Coordinate::RoutingKey,
    ];

    /// The placeholder name, as written in a template.
    pub fn name(self) -> &'static str {
        match self {
            Coordinate::Source => "source",
            Coordinate::Topic => "topic",
            Coordinate::Partition => "partition",
            Coordinate::Offset => "offset",
            Coordinate::Stream => "stream",
            Coordinate::EntryId => "entry_id",
            Coordinate::List => "list",
            Coordinate::Channel => "channel",
            Coordinate::KeyspaceEvent => "keyspace_event",
            Coordinate::Queue => "queue",
            Coordinate::Exchange => "exchange",
            Coordinate::RoutingKey => "routing_key",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_parsed_once_and_reports_invalid_payloads() {
        let m = Message::from_payload(r#"{"order_id": 7}"#);
        assert_eq!(m.json().unwrap()["order_id"], 7);
        let bad = Message::from_payload("not json");
        assert!(matches!(bad.json(), Err(JsonError::Invalid(_))));
        let tombstone = Message::default();
        assert_eq!(tombstone.json(), Err(JsonError::Tombstone));
    }

    #[test]
    fn a_replaced_payload_is_parsed_again() {
        let m = Message::from_payload(r#"{"a": 1}"#);
        assert_eq!(m.json().unwrap()["a"], 1);
        let changed = Message {
            payload: Some(Bytes::from_static(br#"{"a": 2}"#)),
            ..m.clone()
        };
        assert_eq!(changed.json().unwrap()["a"], 2);
        assert_eq!(m.json().unwrap()["a"], 1);
    }

    #[test]
    fn header_lookup_returns_the_last_value_and_set_replaces_all() {
        let mut h: Headers = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        assert_eq!(h.get("a").unwrap().as_ref(), b"3");
        h.set("a", "4");
        assert_eq!(h.len(), 2);
        assert_eq!(h.get("a").unwrap().as_ref(), b"4");
    }

    #[test]
    fn kafka_origin_names_its_coordinates() {
        let o = Origin::Kafka {
            topic: "orders".into(),
            partition: 2,
            offset: 17,
        };
        assert_eq!(o.coordinate(Coordinate::Topic).as_deref(), Some("orders"));
        assert_eq!(o.coordinate(Coordinate::Offset).as_deref(), Some("17"));
        assert_eq!(o.to_string(), "kafka topic=orders partition=2 offset=17");
        assert_eq!(Origin::Generated.coordinate(Coordinate::Topic), None);
    }
}
