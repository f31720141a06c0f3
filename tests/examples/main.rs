//! Every config in `examples/`, run as shipped by the real `ferry` binary
//! against services of the test's own (a throwaway Redis, a tansu broker, a
//! RabbitMQ vhost), checking that the data arrives as the example's comments
//! promise. Only the addresses change, through the `${KAFKA_BROKERS}`,
//! `${REDIS_URL}`, `${REDIS_CLUSTER_URL}`, `${REDIS_SENTINEL_URL}` and
//! `${AMQP_URL}` variables the examples read.
//!
//! Also: a message keeps its key, payload and headers on a round trip
//! Kafka -> RabbitMQ -> Redis Stream -> Kafka.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

#[path = "../support/mod.rs"]
mod support;

mod from_kafka;
mod from_rabbitmq;
mod from_redis;
mod records;
mod redis_topology;
mod round_trip;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use lapin::types::AMQPValue;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Message as _, Offset, TopicPartitionList};
use records::*;
use support::*;

const TIMEOUT: Duration = Duration::from_secs(60);

// ------------------------------------------------------------ running examples

/// Addresses an example is run with. Whatever a test leaves unset points at
/// a closed port, so an example can never reach the shared services.
#[derive(Default)]
struct Addresses {
    kafka: Option<String>,
    redis: Option<String>,
    redis_cluster: Option<String>,
    redis_sentinel: Option<String>,
    amqp: Option<String>,
}

/// `ferry run examples/NAME` with the addresses in its environment, once
/// its pipeline runs.
fn run_example(name: &str, addresses: Addresses) -> Ferry {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    let or_closed =
        |address: Option<String>, closed: &str| address.unwrap_or_else(|| closed.into());
    let mut ferry = Ferry::start_file(
        &file,
        &[
            ("KAFKA_BROKERS", or_closed(addresses.kafka, "127.0.0.1:1")),
            (
                "REDIS_URL",
                or_closed(addresses.redis, "redis://127.0.0.1:1"),
            ),
            (
                "REDIS_CLUSTER_URL",
                or_closed(addresses.redis_cluster, "redis://127.0.0.1:1"),
            ),
            (
                "REDIS_SENTINEL_URL",
                or_closed(addresses.redis_sentinel, "redis://127.0.0.1:1"),
            ),
            (
                "AMQP_URL",
                or_closed(addresses.amqp, "amqp://guest:guest@127.0.0.1:1/%2f"),
            ),
        ],
    );
    ferry.wait_for_log("pipeline running", TIMEOUT);
    ferry
}

// ----------------------------------------------------------------------- Redis

fn redis_cmd<T: redis::FromRedisValue>(redis: &RedisServer, args: &[&str]) -> T {
    let mut cmd = redis::cmd(args[0]);
    for a in &args[1..] {
        cmd.arg(*a);
    }
    cmd.query(&mut redis.conn())
        .unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn hgetall(redis: &RedisServer, key: &str) -> BTreeMap<String, String> {
    redis_cmd(redis, &["HGETALL", key])
}

/// Every entry of a stream, as field -> value maps.
fn xrange(redis: &RedisServer, stream: &str) -> Vec<BTreeMap<String, String>> {
    let reply: redis::streams::StreamRangeReply = redis_cmd(redis, &["XRANGE", stream, "-", "+"]);
    reply
        .ids
        .into_iter()
        .map(|entry| {
            entry
                .map
                .into_iter()
                .map(|(f, v)| (f, redis::from_redis_value(v).unwrap()))
                .collect()
        })
        .collect()
}

// -------------------------------------------------------------------- RabbitMQ

/// A message taken from a queue.
#[derive(Debug)]
struct Delivery {
    routing_key: String,
    body: Vec<u8>,
    headers: BTreeMap<String, String>,
}

impl Delivery {
    fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

fn amqp_text(value: &AMQPValue) -> String {
    match value {
        AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        AMQPValue::ShortString(s) => s.as_str().to_owned(),
        AMQPValue::Boolean(b) => b.to_string(),
        other => format!("{other:?}"),
    }
}

/// Takes every message out of `queue`, with routing key and headers.
async fn take_all(vhost: &RabbitVhost, queue: &str) -> Vec<Delivery> {
    let deliveries = vhost.take_all(queue).await;
    deliveries
        .into_iter()
        .map(|d| Delivery {
            routing_key: d.routing_key.as_str().to_owned(),
            headers: d
                .properties
                .headers()
                .as_ref()
                .map(|t| {
                    t.inner()
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), amqp_text(v)))
                        .collect()
                })
                .unwrap_or_default(),
            body: d.data,
        })
        .collect()
}

/// Takes messages out of `queue` until `enough` says so.
async fn take_until(
    vhost: &RabbitVhost,
    queue: &str,
    what: &str,
    enough: impl Fn(&[Delivery]) -> bool,
) -> Vec<Delivery> {
    let mut got = Vec::new();
    let start = Instant::now();
    while !enough(&got) {
        assert!(
            start.elapsed() < TIMEOUT,
            "timed out waiting for {what} in {queue}; got {got:#?}"
        );
        got.extend(take_all(vhost, queue).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    got
}
