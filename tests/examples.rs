//! Every config in `examples/`, run as shipped by the real `ferry` binary
//! against services of the test's own (a throwaway Redis, a tansu broker, a
//! RabbitMQ vhost), checking that the data arrives as the example's comments
//! promise. Only the addresses change, through the `${KAFKA_BROKERS}`,
//! `${REDIS_URL}`, `${REDIS_CLUSTER_URL}`, `${REDIS_SENTINEL_URL}` and
//! `${AMQP_URL}` variables the examples read.
//!
//! Also: a message keeps its key, payload and headers on a round trip
//! Kafka -> RabbitMQ -> Redis Stream -> Kafka.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use lapin::types::{AMQPValue, FieldTable};
use nix::sys::signal::Signal;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, Headers as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};
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

/// A running `ferry run examples/NAME`, with the addresses in its environment.
struct Example {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Example {
    fn run(name: &str, addresses: Addresses) -> Self {
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name);
        assert!(file.exists(), "{} is missing", file.display());
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("ferry.log");
        let child = Command::new(ferry_bin())
            .arg("run")
            .arg(&file)
            .args(["--progress-every", "1s"])
            .env("FERRY_LOG", "info")
            .env(
                "KAFKA_BROKERS",
                addresses.kafka.unwrap_or_else(|| "127.0.0.1:1".into()),
            )
            .env(
                "REDIS_URL",
                addresses
                    .redis
                    .unwrap_or_else(|| "redis://127.0.0.1:1".into()),
            )
            .env(
                "REDIS_CLUSTER_URL",
                addresses
                    .redis_cluster
                    .unwrap_or_else(|| "redis://127.0.0.1:1".into()),
            )
            .env(
                "REDIS_SENTINEL_URL",
                addresses
                    .redis_sentinel
                    .unwrap_or_else(|| "redis://127.0.0.1:1".into()),
            )
            .env(
                "AMQP_URL",
                addresses
                    .amqp
                    .unwrap_or_else(|| "amqp://guest:guest@127.0.0.1:1/%2f".into()),
            )
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn ferry");
        let mut example = Self {
            child,
            log,
            _dir: dir,
        };
        example.wait_for_log("pipeline running");
        example
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for `needle` in the log; fails early if ferry exited.
    fn wait_for_log(&mut self, needle: &str) {
        let start = Instant::now();
        while !self.log().contains(needle) {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("ferry exited with {status}:\n{}", self.log());
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "no `{needle}` in the log after {TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then a clean exit (in-flight writes finished, offsets
    /// committed).
    fn stop(&mut self) {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            Signal::SIGTERM,
        )
        .unwrap();
        self.finish();
    }

    /// Waits for a clean exit (a job that ends by itself).
    fn finish(&mut self) {
        let start = Instant::now();
        let status: ExitStatus = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "ferry still running after {TIMEOUT:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(
            status.success(),
            "ferry exited with {status}:\n{}",
            self.log()
        );
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("ferry log:\n{}", self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ----------------------------------------------------------------------- Kafka

/// A Kafka record as it is on the wire: value `None` is a tombstone, a
/// header value `None` is a null header.
#[derive(Clone, PartialEq, Eq)]
struct Record {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    fn new(key: &str, value: &[u8]) -> Self {
        Self {
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.to_vec()),
            headers: Vec::new(),
        }
    }

    fn header(mut self, name: &str, value: Option<&[u8]>) -> Self {
        self.headers
            .push((name.to_owned(), value.map(<[u8]>::to_vec)));
        self
    }

    fn key_str(&self) -> &str {
        std::str::from_utf8(self.key.as_deref().unwrap_or_default()).unwrap()
    }

    fn value_str(&self) -> Option<&str> {
        self.value
            .as_deref()
            .map(|v| std::str::from_utf8(v).unwrap())
    }

    fn header_str(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| std::str::from_utf8(v).unwrap())
    }
}

/// Shows bytes as text where they are UTF-8.
impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn text(b: &Option<Vec<u8>>) -> Option<std::borrow::Cow<'_, str>> {
            b.as_deref().map(String::from_utf8_lossy)
        }
        f.debug_struct("Record")
            .field("key", &text(&self.key))
            .field("value", &text(&self.value))
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(n, v)| (n, text(v)))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

fn kafka_client(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

/// Produces `records` (keys, values and headers as they are) and waits for
/// every delivery.
async fn produce_records(brokers: &str, topic: &str, records: &[Record]) {
    let producer: FutureProducer = kafka_client(brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for r in records {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
        if let Some(k) = &r.key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = &r.value {
            record = record.payload(v.as_slice());
        }
        if !r.headers.is_empty() {
            let mut headers = OwnedHeaders::new();
            for (name, value) in &r.headers {
                headers = headers.insert(Header {
                    key: name,
                    value: value.as_deref(),
                });
            }
            record = record.headers(headers);
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("delivery");
    }
}

/// Every record of `topic` now, in offset order per partition (so in order
/// per key); empty if the topic does not exist yet.
fn read_records(brokers: &str, topic: &str) -> Vec<Record> {
    let consumer: BaseConsumer = kafka_client(brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let timeout = Duration::from_secs(10);
    let Ok(metadata) = consumer.fetch_metadata(Some(topic), timeout) else {
        return Vec::new();
    };
    let Some(t) = metadata.topics().first().filter(|t| t.error().is_none()) else {
        return Vec::new();
    };
    let mut assignment = TopicPartitionList::new();
    let mut total = 0;
    for p in t.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout).unwrap();
        if high > low {
            assignment
                .add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
            total += high - low;
        }
    }
    let mut out = Vec::new();
    if total == 0 {
        return out;
    }
    consumer.assign(&assignment).unwrap();
    let start = Instant::now();
    while (out.len() as i64) < total {
        assert!(start.elapsed() < TIMEOUT, "reading {topic}");
        let Some(record) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let record = record.unwrap();
        let headers = record
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Record {
            key: record.key().map(<[u8]>::to_vec),
            value: record.payload().map(<[u8]>::to_vec),
            headers,
        });
    }
    out
}

/// Every record of `topic` was confirmed and its offset committed by
/// `group` (a partition that never had a record has no commit).
fn assert_committed_to_the_end(brokers: &str, group: &str, topic: &str, partitions: i32) {
    let marks = watermarks_at(brokers, topic, partitions);
    let committed = committed_at(brokers, group, topic, partitions);
    let done: Vec<i64> = marks
        .iter()
        .zip(&committed)
        .map(|((low, _), c)| (*c).max(*low))
        .collect();
    let ends: Vec<i64> = marks.iter().map(|(_, high)| *high).collect();
    assert_eq!(
        done, ends,
        "committed offsets of {group} ({committed:?}) = end offsets of {topic}"
    );
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
    let (_conn, channel) = vhost.channel().await;
    let mut out = Vec::new();
    while let Some(m) = channel
        .basic_get(
            queue.into(),
            lapin::options::BasicGetOptions { no_ack: true },
        )
        .await
        .unwrap()
    {
        let d = m.delivery;
        out.push(Delivery {
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
        });
    }
    out
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

/// Publishes `(routing key, body)` pairs to `exchange` with confirms.
async fn publish_to(vhost: &RabbitVhost, exchange: &str, messages: &[(&str, &str)]) {
    let (_conn, channel) = vhost.channel().await;
    channel.confirm_select(Default::default()).await.unwrap();
    for (routing_key, body) in messages {
        channel
            .basic_publish(
                exchange.into(),
                (*routing_key).into(),
                Default::default(),
                body.as_bytes(),
                lapin::BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_headers(FieldTable::default()),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
}

// ------------------------------------------------------------------- examples

#[tokio::test(flavor = "multi_thread")]
async fn two_way_sync_carries_each_change_across_once_and_both_sides_end_equal() {
    let redis = RedisServer::start();
    let tansu = TansuServer::start();
    let brokers = tansu.brokers();
    let mut ferry = Example::run(
        "two-way-sync-redis-kafka.toml",
        Addresses {
            kafka: Some(brokers.clone()),
            redis: Some(redis.url()),
            ..Addresses::default()
        },
    );
    wait_until(TIMEOUT, "both pipelines", || {
        let log = ferry.log();
        log.matches("pipeline running").count() == 2 && log.contains("kafka partitions assigned")
    });
    let last = |key: &str| -> Option<Record> {
        read_records(&brokers, "config")
            .into_iter()
            .rev()
            .find(|r| r.key_str() == key)
    };
    // A change in Redis goes to Kafka.
    redis_cmd::<()>(&redis, &["SET", "config:timeout", "30"]);
    wait_until(TIMEOUT, "config:timeout in Kafka", || {
        last("config:timeout").is_some_and(|r| r.value_str() == Some("30"))
    });
    // A change in Kafka goes to Redis.
    produce_records(&brokers, "config", &[Record::new("config:limit", b"100")]).await;
    wait_until(TIMEOUT, "config:limit in Redis", || {
        redis.get("config:limit").as_deref() == Some("100")
    });
    // Quiet: each change crossed once, nothing came back.
    std::thread::sleep(Duration::from_secs(3));
    let records = read_records(&brokers, "config");
    ferry.stop();
    let keys: Vec<&str> = records.iter().map(Record::key_str).collect();
    assert_eq!(
        keys,
        ["config:timeout", "config:limit"],
        "no echo into Kafka"
    );
    assert_eq!(
        redis.calls("set"),
        2,
        "the application's SET and ferry's, no echo into Redis"
    );
    assert_eq!(
        records[0].header_str("ferry.origin"),
        Some("site-a"),
        "ferry's record carries its origin"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_keyspace_to_kafka_publishes_user_changes_keyed_by_the_redis_key_and_deletions_as_tombstones()
 {
    let redis = RedisServer::start();
    let tansu = TansuServer::start();
    let brokers = tansu.brokers();
    // A user that exists before ferry starts comes from the snapshot.
    redis_cmd::<()>(&redis, &["SET", "user:1", r#"{"name":"Grace"}"#]);

    let mut ferry = Example::run(
        "redis-keyspace-to-kafka.toml",
        Addresses {
            kafka: Some(brokers.clone()),
            redis: Some(redis.url()),
            ..Addresses::default()
        },
    );
    let mut records = Vec::new();
    let mut wait_for = |what: &str, found: &dyn Fn(&[Record]) -> bool| {
        wait_until(TIMEOUT, what, || {
            records = read_records(&brokers, "user-changes");
            found(&records)
        });
    };
    let last = |records: &[Record], key: &str| -> Option<Record> {
        records.iter().rev().find(|r| r.key_str() == key).cloned()
    };

    wait_for("the snapshot of user:1", &|rs| last(rs, "user:1").is_some());
    redis_cmd::<()>(&redis, &["SET", "other:1", "not a user"]);
    // One change at a time, each awaited, so that no two are read as one.
    redis_cmd::<()>(&redis, &["SET", "user:42", r#"{"name":"Ada"}"#]);
    wait_for("user:42", &|rs| last(rs, "user:42").is_some());
    redis_cmd::<()>(&redis, &["HSET", "user:7", "name", "Bob"]);
    wait_for("user:7", &|rs| last(rs, "user:7").is_some());
    redis_cmd::<()>(&redis, &["DEL", "user:42"]);
    wait_for("the tombstone of user:42", &|rs| {
        last(rs, "user:42").is_some_and(|r| r.value.is_none())
    });
    ferry.stop();

    let records = read_records(&brokers, "user-changes");
    /// Key, value, `redis.event` and `redis.type` of a record.
    type Change<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);
    let summary: Vec<Change> = records
        .iter()
        .map(|r| {
            (
                r.key_str(),
                r.value_str(),
                r.header_str("redis.event"),
                r.header_str("redis.type"),
            )
        })
        .collect();
    let of = |key: &str| -> Vec<_> { summary.iter().filter(|s| s.0 == key).cloned().collect() };
    assert_eq!(
        of("user:1"),
        [(
            "user:1",
            Some(r#"{"name":"Grace"}"#),
            Some("snapshot"),
            Some("string")
        )]
    );
    assert_eq!(
        of("user:42"),
        [
            (
                "user:42",
                Some(r#"{"name":"Ada"}"#),
                Some("set"),
                Some("string")
            ),
            ("user:42", None, Some("del"), Some("none")),
        ],
        "the value, then a tombstone"
    );
    assert_eq!(
        of("user:7"),
        [(
            "user:7",
            Some(r#"{"name":"Bob"}"#),
            Some("hset"),
            Some("hash")
        )]
    );
    assert_eq!(records.len(), 4, "only user:* keys: {summary:?}");
    for r in &records {
        assert_eq!(
            r.headers
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            ["redis.event", "redis.type", "ferry.hops"],
            "{r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_keyspace_to_rabbitmq_routes_user_changes_by_event_with_the_redis_key_in_a_header() {
    let redis = RedisServer::start();
    let vhost = RabbitVhost::create();
    let queue = "user-changes.search-indexer";
    let mut ferry = Example::run(
        "redis-keyspace-to-rabbitmq.toml",
        Addresses {
            redis: Some(redis.url()),
            amqp: Some(vhost.url()),
            ..Addresses::default()
        },
    );
    let mut got = Vec::new();
    let has = |got: &[Delivery], key: &str, routing_key: &str| {
        got.iter()
            .any(|d| d.header("ferry.key") == Some(key) && d.routing_key == routing_key)
    };
    redis_cmd::<()>(&redis, &["SET", "other:1", "not a user"]);
    redis_cmd::<()>(&redis, &["SET", "user:42", r#"{"name":"Ada"}"#]);
    got.extend(
        take_until(&vhost, queue, "user:42 set", |g| {
            has(g, "user:42", "user.set")
        })
        .await,
    );
    redis_cmd::<()>(&redis, &["HSET", "user:7", "name", "Bob"]);
    got.extend(
        take_until(&vhost, queue, "user:7 hset", |g| {
            has(g, "user:7", "user.hset")
        })
        .await,
    );
    redis_cmd::<()>(&redis, &["DEL", "user:42"]);
    got.extend(
        take_until(&vhost, queue, "user:42 del", |g| {
            has(g, "user:42", "user.del")
        })
        .await,
    );
    ferry.stop();
    got.extend(take_all(&vhost, queue).await);

    let seen: Vec<(&str, &str, &str, BTreeMap<String, String>)> = got
        .iter()
        .map(|d| {
            (
                d.header("ferry.key").unwrap(),
                d.routing_key.as_str(),
                d.body_str(),
                d.headers.clone(),
            )
        })
        .collect();
    let headers = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    assert_eq!(
        seen,
        [
            (
                "user:42",
                "user.set",
                r#"{"name":"Ada"}"#,
                headers(&[
                    ("ferry.hops", "1"),
                    ("ferry.key", "user:42"),
                    ("redis.event", "set"),
                    ("redis.type", "string")
                ])
            ),
            (
                "user:7",
                "user.hset",
                r#"{"name":"Bob"}"#,
                headers(&[
                    ("ferry.hops", "1"),
                    ("ferry.key", "user:7"),
                    ("redis.event", "hset"),
                    ("redis.type", "hash")
                ])
            ),
            (
                "user:42",
                "user.del",
                "",
                headers(&[
                    ("ferry.hops", "1"),
                    ("ferry.key", "user:42"),
                    ("ferry.tombstone", "true"),
                    ("redis.event", "del"),
                    ("redis.type", "none")
                ])
            ),
        ],
        "a deletion is an empty body marked ferry.tombstone; other:1 is not published"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_to_redis_hash_keeps_the_latest_version_of_each_order_as_a_hash_and_sets_bad_records_aside()
 {
    let tansu = TansuServer::start();
    let brokers = tansu.brokers();
    create_topic_at(&brokers, "orders", 3).await;
    let redis = RedisServer::start();
    produce_records(
        &brokers,
        "orders",
        &[
            Record::new(
                "1001",
                br#"{"order_id":1001,"customer_id":"c-7","amount":59.9,"status":"new","coupon":"SPRING","items":[{"sku":"A-1","qty":2}],"note":null}"#,
            ),
            Record::new(
                "1002",
                br#"{"order_id":1002,"customer_id":"c-9","amount":12,"status":"paid","gift":true}"#,
            ),
            Record::new("oops", b"this is not json"),
            // The same key, so the same partition: read after the first version.
            Record::new(
                "1001",
                br#"{"order_id":1001,"customer_id":"c-7","amount":59.9,"status":"paid","items":[{"sku":"A-1","qty":2}]}"#,
            ),
        ],
    )
    .await;

    let mut ferry = Example::run(
        "kafka-to-redis-hash.toml",
        Addresses {
            kafka: Some(brokers.clone()),
            redis: Some(redis.url()),
            ..Addresses::default()
        },
    );
    wait_until(TIMEOUT, "every order and the bad record", || {
        hgetall(&redis, "order:1001")
            .get("status")
            .map(String::as_str)
            == Some("paid")
            && !hgetall(&redis, "order:1002").is_empty()
            && redis_cmd::<u64>(&redis, &["XLEN", "dead-letters:orders"]) == 1
    });
    ferry.stop();

    let expected = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    assert_eq!(
        hgetall(&redis, "order:1001"),
        expected(&[
            ("order_id", "1001"),
            ("customer_id", "c-7"),
            ("amount", "59.9"),
            ("status", "paid"),
            ("items", r#"[{"sku":"A-1","qty":2}]"#),
        ]),
        "the latest version only: no `coupon` left from the first, no null `note`"
    );
    assert_eq!(
        hgetall(&redis, "order:1002"),
        expected(&[
            ("order_id", "1002"),
            ("customer_id", "c-9"),
            ("amount", "12"),
            ("status", "paid"),
            ("gift", "true"),
        ])
    );
    for key in ["order:1001", "order:1002"] {
        let ttl: i64 = redis_cmd(&redis, &["PTTL", key]);
        assert!(
            ttl > 719 * 3_600_000 && ttl <= 720 * 3_600_000,
            "{key} expires in 30 days: {ttl} ms"
        );
    }
    let dead = xrange(&redis, "dead-letters:orders");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["payload"], "this is not json");
    assert_eq!(dead[0]["key"], "oops");
    assert!(
        dead[0]["header.ferry.error"].contains("JSON"),
        "{:?}",
        dead[0]
    );
    assert_eq!(dead[0]["header.ferry.pipeline"], "orders-to-redis-hash");
    assert_eq!(redis_cmd::<u64>(&redis, &["DBSIZE"]), 3);
    assert_committed_to_the_end(&brokers, "ferry-orders-to-redis-hash", "orders", 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_backfill_to_redis_stream_copies_the_history_once_and_stops() {
    let tansu = TansuServer::start();
    let brokers = tansu.brokers();
    create_topic_at(&brokers, "orders", 3).await;
    let redis = RedisServer::start();
    let orders = |ids: std::ops::RangeInclusive<u64>| -> Vec<Record> {
        ids.map(|n| {
            Record::new(
                &n.to_string(),
                ferry::connectors::generate::order(n).as_bytes(),
            )
        })
        .collect()
    };
    produce_records(&brokers, "orders", &orders(1..=300)).await;
    let addresses = || Addresses {
        kafka: Some(brokers.clone()),
        redis: Some(redis.url()),
        ..Addresses::default()
    };

    let mut ferry = Example::run("kafka-backfill-to-redis-stream.toml", addresses());
    ferry.finish();
    assert!(
        ferry.log().contains("a job of 300 messages"),
        "{}",
        ferry.log()
    );
    let history = xrange(&redis, "orders:history");
    assert_eq!(history.len(), 300);
    let first = history.iter().find(|e| e["key"] == "1").unwrap();
    assert_eq!(first["payload"], ferry::connectors::generate::order(1));
    // Positions are kept per partition.
    let positions: Vec<String> = redis_cmd(
        &redis,
        &[
            "KEYS",
            "ferry:positions:orders-backfill:orders:history:kafka:orders/*",
        ],
    );
    assert_eq!(positions.len(), 3, "{positions:?}");

    // Run again after more orders: only the new ones are copied.
    produce_records(&brokers, "orders", &orders(301..=350)).await;
    let mut again = Example::run("kafka-backfill-to-redis-stream.toml", addresses());
    again.finish();
    assert!(
        again.log().contains("a job of 50 messages"),
        "{}",
        again.log()
    );
    assert_eq!(xrange(&redis, "orders:history").len(), 350);
    assert_committed_to_the_end(&brokers, "ferry-orders-backfill", "orders", 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_to_redis_caches_sessions_with_an_expiry_and_dead_letters_what_it_cannot_cache() {
    let vhost = RabbitVhost::create();
    let redis = RedisServer::start();
    let queue = "sessions.redis-cache";
    let mut ferry = Example::run(
        "rabbitmq-to-redis.toml",
        Addresses {
            redis: Some(redis.url()),
            amqp: Some(vhost.url()),
            ..Addresses::default()
        },
    );
    // ferry declared the exchange, the queue and the binding.
    let s1 = r#"{"session_id":"s-1","user_id":42,"roles":["admin"]}"#;
    let s1_refreshed = r#"{"session_id":"s-1","user_id":42,"roles":["admin","billing"]}"#;
    let s2 = r#"{"session_id":"s-2","user_id":7,"roles":[]}"#;
    publish_to(
        &vhost,
        "auth",
        &[
            ("session.created", s1),
            ("session.created", s2),
            ("session.created", "garbage"),
            ("session.refreshed", s1_refreshed),
        ],
    )
    .await;
    wait_until(TIMEOUT, "both sessions and the dead letter", || {
        redis.get("session:s-1").as_deref() == Some(s1_refreshed)
            && redis.get("session:s-2").is_some()
            && redis_cmd::<u64>(&redis, &["XLEN", "dead-letters:sessions.redis-cache"]) == 1
    });
    ferry.stop();

    assert_eq!(redis.get("session:s-2").as_deref(), Some(s2));
    for key in ["session:s-1", "session:s-2"] {
        let ttl: i64 = redis_cmd(&redis, &["PTTL", key]);
        assert!(
            ttl > 0 && ttl <= 30 * 60_000,
            "{key} expires within 30 minutes: {ttl} ms"
        );
    }
    let dead = xrange(&redis, "dead-letters:sessions.redis-cache");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["payload"], "garbage");
    assert!(
        dead[0]["header.ferry.error"].contains("JSON"),
        "{:?}",
        dead[0]
    );
    assert!(
        dead[0]["header.ferry.source"]
            .contains("queue=sessions.redis-cache exchange=auth routing_key=session.created"),
        "{:?}",
        dead[0]
    );
    assert_eq!(redis_cmd::<u64>(&redis, &["DBSIZE"]), 3);
    assert_eq!(
        vhost.queue_len(queue).await,
        0,
        "every message was acknowledged, the bad one too"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_stream_to_kafka_forwards_entries_keyed_by_user_then_acknowledges_and_trims_them() {
    let redis = RedisServer::start();
    let tansu = TansuServer::start();
    let brokers = tansu.brokers();
    // Entries already in the stream when the group is created are read too.
    redis_cmd::<String>(
        &redis,
        &[
            "XADD", "activity", "*", "user_id", "42", "action", "login", "ip", "10.0.0.7",
        ],
    );
    redis_cmd::<String>(
        &redis,
        &["XADD", "activity", "*", "user_id", "7", "action", "logout"],
    );
    redis_cmd::<String>(&redis, &["XADD", "activity", "*", "action", "ping"]);
    let mut ferry = Example::run(
        "redis-stream-to-kafka.toml",
        Addresses {
            kafka: Some(brokers.clone()),
            redis: Some(redis.url()),
            ..Addresses::default()
        },
    );
    redis_cmd::<String>(
        &redis,
        &[
            "XADD", "activity", "*", "user_id", "42", "action", "purchase",
        ],
    );
    let mut records = Vec::new();
    wait_until(TIMEOUT, "three records and a dead letter", || {
        records = read_records(&brokers, "user-activity");
        records.len() >= 3 && redis_cmd::<u64>(&redis, &["XLEN", "dead-letters:activity"]) == 1
    });
    wait_until(TIMEOUT, "the acknowledged entries to be trimmed", || {
        redis_cmd::<u64>(&redis, &["XLEN", "activity"]) == 0
    });
    ferry.stop();

    let records = read_records(&brokers, "user-activity");
    let of = |key: &str| -> Vec<&str> {
        records
            .iter()
            .filter(|r| r.key_str() == key)
            .map(|r| r.value_str().unwrap())
            .collect()
    };
    assert_eq!(
        of("42"),
        [
            r#"{"user_id":"42","action":"login","ip":"10.0.0.7"}"#,
            r#"{"user_id":"42","action":"purchase"}"#,
        ],
        "one user's events in order"
    );
    assert_eq!(of("7"), [r#"{"user_id":"7","action":"logout"}"#]);
    assert_eq!(records.len(), 3);
    assert!(
        records
            .iter()
            .all(|r| r.headers == [("ferry.hops".to_owned(), Some(b"1".to_vec()))]),
        "only ferry's hop count: {records:?}"
    );
    let dead = xrange(&redis, "dead-letters:activity");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["payload"], r#"{"action":"ping"}"#);
    assert!(
        dead[0]["header.ferry.error"].contains("user_id"),
        "{:?}",
        dead[0]
    );
    let pending: redis::Value =
        redis_cmd(&redis, &["XPENDING", "activity", "ferry-activity-to-kafka"]);
    assert!(
        matches!(&pending, redis::Value::Array(v) if v.first() == Some(&redis::Value::Int(0))),
        "nothing left pending: {pending:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_to_rabbitmq_routes_orders_by_status_to_the_bound_queues_and_parks_unroutable_records()
 {
    let tansu = TansuServer::start();
    let brokers = tansu.brokers();
    create_topic_at(&brokers, "orders", 3).await;
    let vhost = RabbitVhost::create();
    let order = |id: u32, status: &str| {
        Record::new(
            &id.to_string(),
            format!(r#"{{"order_id":{id},"customer_id":"c-{id}","status":"{status}"}}"#).as_bytes(),
        )
    };
    produce_records(
        &brokers,
        "orders",
        &[
            order(1, "new"),
            order(2, "paid").header("trace-id", Some(b"t-2")),
            order(3, "cancelled"),
            order(4, "paid"),
            Record::new("oops", b"this is not json"),
        ],
    )
    .await;

    let mut ferry = Example::run(
        "kafka-to-rabbitmq.toml",
        Addresses {
            kafka: Some(brokers.clone()),
            amqp: Some(vhost.url()),
            ..Addresses::default()
        },
    );
    let audit = take_until(&vhost, "orders.audit", "4 orders", |g| g.len() >= 4).await;
    let fulfilment = take_until(&vhost, "orders.fulfilment", "2 paid orders", |g| {
        g.len() >= 2
    })
    .await;
    let dead = take_until(&vhost, "orders.dead-letter", "the bad record", |g| {
        !g.is_empty()
    })
    .await;
    ferry.stop();

    let mut audit: Vec<(&str, &str)> = audit
        .iter()
        .map(|d| (d.header("ferry.key").unwrap(), d.routing_key.as_str()))
        .collect();
    audit.sort();
    assert_eq!(
        audit,
        [
            ("1", "order.new"),
            ("2", "order.paid"),
            ("3", "order.cancelled"),
            ("4", "order.paid")
        ]
    );
    let mut paid: Vec<(&str, &str, Option<&str>)> = fulfilment
        .iter()
        .map(|d| {
            (
                d.header("ferry.key").unwrap(),
                d.body_str(),
                d.header("trace-id"),
            )
        })
        .collect();
    paid.sort();
    assert_eq!(
        paid,
        [
            (
                "2",
                r#"{"order_id":2,"customer_id":"c-2","status":"paid"}"#,
                Some("t-2")
            ),
            (
                "4",
                r#"{"order_id":4,"customer_id":"c-4","status":"paid"}"#,
                None
            ),
        ],
        "only paid orders, with the Kafka key and headers"
    );
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body_str(), "this is not json");
    assert_eq!(dead[0].header("ferry.key"), Some("oops"));
    assert!(
        dead[0].header("ferry.error").unwrap().contains("JSON"),
        "{:?}",
        dead[0]
    );
    assert_eq!(dead[0].header("ferry.pipeline"), Some("orders-to-rabbitmq"));
    for q in ["orders.audit", "orders.fulfilment", "orders.dead-letter"] {
        assert_eq!(vhost.queue_len(q).await, 0, "{q}: nothing published twice");
    }
    assert_committed_to_the_end(&brokers, "ferry-orders-to-rabbitmq", "orders", 3);
}

// ------------------------------------------------------------------ round trip

/// Kafka topic `in` -> RabbitMQ queue `hop` -> Redis stream `hop` -> Kafka
/// topic `out`, as three pipelines of one ferry.
fn round_trip_config(brokers: &str, amqp: &str, redis: &str) -> String {
    format!(
        r#"
[[pipeline]]
name = "kafka-to-rabbitmq"
source = {{ type = "kafka", brokers = "{brokers}", topics = ["in"], group = "round-trip" }}

[[pipeline.sink]]
type = "amqp"
url = "{amqp}"
routing_key = "hop"
declare = {{ queues = [{{ name = "hop" }}] }}

[[pipeline]]
name = "rabbitmq-to-redis-stream"
source = {{ type = "amqp", url = "{amqp}", queue = "hop", declare = {{ queues = [{{ name = "hop" }}] }} }}

[[pipeline.sink]]
type = "redis"
url = "{redis}"
write = "xadd"
key = "hop"

[[pipeline]]
name = "redis-stream-to-kafka"
source = {{ type = "redis-stream", url = "{redis}", streams = ["hop"], group = "round-trip" }}

[[pipeline.sink]]
type = "kafka"
brokers = "{brokers}"
topic = "out"
"#
    )
}

/// Headers in name order, values of one name in their original order:
/// RabbitMQ keeps headers in a table sorted by name, so the order between
/// different names is not kept; the values of a repeated name are.
fn sorted(headers: &[(String, Option<Vec<u8>>)]) -> Vec<(String, Option<Vec<u8>>)> {
    let mut h = headers.to_vec();
    h.sort_by(|a, b| a.0.cmp(&b.0));
    h
}

#[tokio::test(flavor = "multi_thread")]
async fn a_message_keeps_key_payload_and_headers_from_kafka_through_rabbitmq_and_a_redis_stream_back_to_kafka()
 {
    let tansu = TansuServer::start();
    let brokers = tansu.brokers();
    create_topic_at(&brokers, "in", 3).await;
    create_topic_at(&brokers, "out", 3).await;
    let vhost = RabbitVhost::create();
    let redis = RedisServer::start();
    let sent = vec![
        Record::new("k1", br#"{"order_id":1,"status":"new"}"#)
            .header("trace-id", Some(b"t-1"))
            .header("content-type", Some(b"application/json")),
        Record::new("k2", b"plain text, not JSON")
            .header("z-last", Some(b"z"))
            .header("a-first", Some(b"a"))
            .header("empty", Some(b"")),
        Record::new("k3", &[0xff, 0x00, 0xfe, 0x80]).header("binary", Some(&[0x00, 0xff, 0x7f])),
        Record::new("k4", b"").header("no-value", None),
        Record::new("k5", b"no headers at all"),
    ];
    produce_records(&brokers, "in", &sent).await;

    let mut ferry = Ferry::start(&round_trip_config(&brokers, &vhost.url(), &redis.url()));
    let mut received = Vec::new();
    wait_until(TIMEOUT, "every record in `out`", || {
        received = read_records(&brokers, "out");
        received.len() >= sent.len()
    });
    ferry.signal(Signal::SIGTERM);
    ferry.wait_success(TIMEOUT);

    assert_eq!(received.len(), sent.len(), "{received:#?}");
    let mut received = without_hops(received, 3);
    received.sort_by(|a, b| a.key.cmp(&b.key));
    for (sent, received) in sent.iter().zip(&received) {
        assert_eq!(received.key, sent.key);
        assert_eq!(received.value, sent.value, "payload of {}", sent.key_str());
        // A null header value arrives as an empty one (kafka/mapping.rs);
        // nothing else changes, and ferry adds only its hop count.
        let expected: Vec<_> = sent
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), Some(v.clone().unwrap_or_default())))
            .collect();
        assert_eq!(
            sorted(&received.headers),
            sorted(&expected),
            "headers of {}",
            sent.key_str()
        );
    }
    assert_eq!(vhost.queue_len("hop").await, 0);
    let pending: redis::Value = redis_cmd(&redis, &["XPENDING", "hop", "round-trip"]);
    assert!(
        matches!(&pending, redis::Value::Array(v) if v.first() == Some(&redis::Value::Int(0))),
        "nothing left pending: {pending:?}"
    );
    assert_committed_to_the_end(&brokers, "round-trip", "in", 3);
}

/// Runs `sent` through the round trip and returns what arrived in `out`.
async fn round_trip(sent: &[Record]) -> Vec<Record> {
    let tansu = TansuServer::start();
    let brokers = tansu.brokers();
    create_topic_at(&brokers, "in", 1).await;
    create_topic_at(&brokers, "out", 1).await;
    let vhost = RabbitVhost::create();
    let redis = RedisServer::start();
    produce_records(&brokers, "in", sent).await;
    let mut ferry = Ferry::start(&round_trip_config(&brokers, &vhost.url(), &redis.url()));
    let mut received = Vec::new();
    wait_until(TIMEOUT, "every record in `out`", || {
        received = read_records(&brokers, "out");
        received.len() >= sent.len()
    });
    ferry.signal(Signal::SIGTERM);
    ferry.wait_success(TIMEOUT);
    without_hops(received, 3)
}

/// Checks that each record went through `hops` ferry pipelines (the one
/// header ferry adds) and removes that header.
fn without_hops(records: Vec<Record>, hops: usize) -> Vec<Record> {
    records
        .into_iter()
        .map(|mut r| {
            let count: Vec<_> = r
                .headers
                .iter()
                .filter(|(n, _)| n == "ferry.hops")
                .collect();
            assert_eq!(
                count,
                [&("ferry.hops".to_owned(), Some(hops.to_string().into_bytes()))],
                "{r:?}"
            );
            r.headers.retain(|(n, _)| n != "ferry.hops");
            r
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deleted_key_stays_a_tombstone_with_its_key_and_headers_through_the_round_trip() {
    let tombstone = Record {
        key: Some(b"order-7".to_vec()),
        value: None,
        headers: vec![("reason".into(), Some(b"cancelled".to_vec()))],
    };
    let received = round_trip(std::slice::from_ref(&tombstone)).await;
    assert_eq!(received, [tombstone]);
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_header_names_keep_every_value_in_order_through_the_round_trip() {
    let record = Record::new("k", b"v")
        .header("z-first", Some(b"1"))
        .header("tag", Some(b"a"))
        .header("tag", Some(b"b"));
    let received = round_trip(std::slice::from_ref(&record)).await;
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].key, record.key);
    assert_eq!(received[0].value, record.value);
    assert_eq!(sorted(&received[0].headers), sorted(&record.headers));
}

// ------------------------------------------------ Redis Cluster and Sentinel

/// Adds `orders` to `stream` as the order service does.
fn add_orders(redis: &RedisServer, stream: &str, field: &str, ids: std::ops::RangeInclusive<u64>) {
    let mut conn = redis.conn();
    for id in ids {
        let _: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("payload")
            .arg(format!(
                r#"{{"{field}": "{id}", "user": "u-{id}", "status": "paid"}}"#
            ))
            .query(&mut conn)
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_cluster_orders_spreads_hashes_over_the_shards_and_audits_each_order_once() {
    let cluster = support::topology::RedisCluster::start();
    let redis = RedisServer::start();
    add_orders(&redis, "orders", "order_id", 1..=300);
    let mut example = Example::run(
        "redis-cluster-orders.toml",
        Addresses {
            redis: Some(redis.url()),
            redis_cluster: Some(cluster.url()),
            ..Addresses::default()
        },
    );
    let mut conn = cluster.conn();
    let start = Instant::now();
    while redis::cmd("XLEN")
        .arg("{audit}:orders")
        .query::<u64>(&mut conn)
        .unwrap_or(0)
        < 300
        || cluster.dbsize() < 302
    {
        assert!(
            start.elapsed() < TIMEOUT,
            "not all written:\n{}",
            example.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    example.stop();
    let status: String = redis::cmd("HGET")
        .arg("order:17")
        .arg("status")
        .query(&mut conn)
        .unwrap();
    assert_eq!(status, "paid");
    // 300 hashes, the audit stream and its positions: spread over every primary.
    assert_eq!(cluster.dbsize(), 302);
    for port in cluster.primaries() {
        let node = cluster.nodes.iter().find(|n| n.port == port).unwrap();
        assert!(node.dbsize() > 50, "a shard holds too few orders");
    }
    let audit: u64 = redis::cmd("XLEN")
        .arg("{audit}:orders")
        .query(&mut conn)
        .unwrap();
    assert_eq!(audit, 300);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_sentinel_sessions_writes_to_the_primary_the_sentinels_name() {
    let sentinels = support::topology::RedisSentinels::start();
    let redis = RedisServer::start();
    add_orders(&redis, "sessions", "session_id", 1..=100);
    let mut example = Example::run(
        "redis-sentinel-sessions.toml",
        Addresses {
            redis: Some(redis.url()),
            redis_sentinel: Some(sentinels.urls()[0].clone()),
            ..Addresses::default()
        },
    );
    let start = Instant::now();
    while sentinels.primary.dbsize() < 100 {
        assert!(
            start.elapsed() < TIMEOUT,
            "not all written:\n{}",
            example.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    example.stop();
    let ttl: i64 = redis::cmd("TTL")
        .arg("session:7")
        .query(&mut sentinels.primary.conn())
        .unwrap();
    assert!(ttl > 3600, "ttl {ttl}");
    // Written on the primary, and (wait_replicas = 1) on its replica.
    assert_eq!(sentinels.replica.dbsize(), 100);
}
