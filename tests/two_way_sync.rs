//! Two-way sync without loops: values live in Redis, changes go out to a
//! broker, changes from the broker come back into Redis, and nothing echoes.
//!
//! Each test changes keys on both sides, then checks that both sides hold
//! the same values, that each change crossed exactly once (no echo written
//! back), and that message counts stay put once the changes stop.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::time::Duration;

use rdkafka::producer::{FutureProducer, FutureRecord};
use support::*;

const WAIT: Duration = Duration::from_secs(60);

fn get(redis: &RedisServer, key: &str) -> Option<String> {
    redis.get(key)
}

/// Produces `key = value` (or a tombstone) as another application would.
async fn produce_change(brokers: &str, key: &str, value: Option<&str>) {
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let mut record = FutureRecord::<str, str>::to("config").key(key);
    if let Some(v) = value {
        record = record.payload(v);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .unwrap();
}

fn topic_size(brokers: &str) -> i64 {
    watermarks_at(brokers, "config", 1)
        .iter()
        .map(|(_, h)| h)
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_and_kafka_stay_in_sync_and_no_change_echoes() {
    let redis = RedisServer::start();
    let tansu = TansuServer::start();
    let brokers = tansu.brokers();
    create_topic_at(&brokers, "config", 1).await;
    let config = format!(
        r#"
origin = "site-a"

[[pipeline]]
name = "redis-to-kafka"
source = {{ type = "redis-keyspace", url = "{r}", pattern = "config:*", configure_notifications = true, sync = true }}
[[pipeline.sink]]
type = "kafka"
brokers = "{brokers}"
topic = "config"

[[pipeline]]
name = "kafka-to-redis"
source = {{ type = "kafka", brokers = "{brokers}", topics = ["config"], group = "sync", start = "earliest" }}
[[pipeline.sink]]
type = "redis"
url = "{r}"
write = "set"
sync = true
key = "{{key}}"
"#,
        r = redis.url()
    );
    // `start = "earliest"` on the new topic: the source reads every record,
    // echoes included. With "latest", a change made in Redis right after
    // start-up could reach the topic before the consumer's first position
    // (assignment comes before it), its echo would never be read, and the
    // sink would hold off that key's records for the pending hold.
    let mut ferry = Ferry::start(&config);
    wait_until(WAIT, "both pipelines", || {
        let log = ferry.log();
        log.matches("pipeline running").count() == 2 && log.contains("kafka partitions assigned")
    });

    // Changes made in Redis go to Kafka, once.
    let mut conn = redis.conn();
    let _: () = redis::cmd("SET")
        .arg("config:a")
        .arg("1")
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("config:b")
        .arg("2")
        .query(&mut conn)
        .unwrap();
    wait_until(WAIT, "the Redis changes in Kafka", || {
        topic_size(&brokers) == 2
    });

    // Changes made in Kafka go to Redis, and do not come back to Kafka.
    produce_change(&brokers, "config:c", Some("3")).await;
    produce_change(&brokers, "config:a", Some("10")).await;
    produce_change(&brokers, "config:b", None).await;
    wait_until(WAIT, "the Kafka changes in Redis", || {
        get(&redis, "config:a").as_deref() == Some("10")
            && get(&redis, "config:c").as_deref() == Some("3")
            && get(&redis, "config:b").is_none()
    });

    // Quiet: nothing may keep moving.
    std::thread::sleep(Duration::from_secs(3));
    let records = topic_size(&brokers);
    let (sets, dels) = (redis.calls("set"), redis.calls("del"));
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(topic_size(&brokers), records, "Kafka stopped growing");
    assert_eq!(
        (redis.calls("set"), redis.calls("del")),
        (sets, dels),
        "Redis stopped changing"
    );

    // Each change crossed exactly once: 2 from Redis + 3 from Kafka in the
    // topic; in Redis, the 2 SETs of the application and ferry's 2 SETs
    // and 1 DEL, and no echo of its own changes.
    assert_eq!(records, 5, "no echo into Kafka");
    assert_eq!((sets, dels), (4, 1), "no echo into Redis");

    // Converged: Redis holds the latest value of each key in Kafka.
    let latest: std::collections::BTreeMap<String, Option<String>> =
        read_topic_records(&brokers).await.into_iter().collect();
    for (key, value) in &latest {
        assert_eq!(&get(&redis, key), value, "{key}");
    }
    ferry.stop(Duration::from_secs(20));
    let log = ferry.log();
    assert!(
        log.contains("dropped=2"),
        "ferry's own two changes came back and were dropped:\n{log}"
    );
}

/// (key, value) of every record of the `config` topic, tombstones as None.
async fn read_topic_records(brokers: &str) -> Vec<(String, Option<String>)> {
    use futures::StreamExt;
    use rdkafka::Message as _;
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let total = topic_size(brokers);
    let consumer: StreamConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&["config"]).unwrap();
    let mut out = Vec::new();
    let mut stream = consumer.stream();
    while (out.len() as i64) < total {
        let r = tokio::time::timeout(WAIT, stream.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        out.push((
            String::from_utf8(r.key().unwrap().to_vec()).unwrap(),
            r.payload().map(|p| String::from_utf8(p.to_vec()).unwrap()),
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_and_rabbitmq_stay_in_sync_and_no_change_echoes() {
    let redis = RedisServer::start();
    let vhost = RabbitVhost::create();
    let config = format!(
        r#"
origin = "site-a"

[[pipeline]]
name = "redis-to-rabbitmq"
source = {{ type = "redis-keyspace", url = "{r}", pattern = "config:*", configure_notifications = true, sync = true }}
[[pipeline.sink]]
type = "amqp"
url = "{a}"
exchange = "config"
routing_key = "{{key}}"
declare = {{ exchanges = [{{ name = "config", kind = "fanout" }}], queues = [{{ name = "to-redis" }}, {{ name = "observed" }}], bindings = [{{ queue = "to-redis", exchange = "config" }}, {{ queue = "observed", exchange = "config" }}] }}

[[pipeline]]
name = "rabbitmq-to-redis"
source = {{ type = "amqp", url = "{a}", queue = "to-redis", declare = {{ exchanges = [{{ name = "config", kind = "fanout" }}], queues = [{{ name = "to-redis" }}], bindings = [{{ queue = "to-redis", exchange = "config" }}] }} }}
[[pipeline.sink]]
type = "redis"
url = "{r}"
write = "set"
sync = true
key = "{{routing_key}}"
"#,
        r = redis.url(),
        a = vhost.url()
    );
    let mut ferry = Ferry::start(&config);
    wait_until(WAIT, "both pipelines", || {
        let log = ferry.log();
        log.matches("pipeline running").count() == 2 && log.contains("amqp source consuming")
    });

    let mut conn = redis.conn();
    let _: () = redis::cmd("SET")
        .arg("config:a")
        .arg("1")
        .query(&mut conn)
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg("config:b")
        .arg("2")
        .query(&mut conn)
        .unwrap();
    let mut observed: Vec<(String, String)> = Vec::new();
    let (_c, channel) = vhost.channel().await;
    let take_observed = async |observed: &mut Vec<(String, String)>| {
        while let Some(m) = channel
            .basic_get(
                "observed".into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            observed.push((
                m.delivery.routing_key.to_string(),
                String::from_utf8(m.delivery.data).unwrap(),
            ));
        }
    };
    let deadline = std::time::Instant::now() + WAIT;
    while observed.len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the Redis changes reach RabbitMQ"
        );
        take_observed(&mut observed).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Another application publishes changes to the exchange.
    for (key, value) in [("config:c", "3"), ("config:a", "10")] {
        channel
            .basic_publish(
                "config".into(),
                key.into(),
                Default::default(),
                value.as_bytes(),
                Default::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    wait_until(WAIT, "the RabbitMQ changes in Redis", || {
        get(&redis, "config:a").as_deref() == Some("10")
            && get(&redis, "config:c").as_deref() == Some("3")
    });

    std::thread::sleep(Duration::from_secs(3));
    take_observed(&mut observed).await;
    let sets = redis.calls("set");
    std::thread::sleep(Duration::from_secs(3));
    let before = observed.len();
    take_observed(&mut observed).await;
    assert_eq!(observed.len(), before, "RabbitMQ stopped growing");
    assert_eq!(redis.calls("set"), sets, "Redis stopped changing");

    observed.sort();
    assert_eq!(
        observed,
        [
            ("config:a".to_owned(), "1".to_owned()),
            ("config:a".to_owned(), "10".to_owned()),
            ("config:b".to_owned(), "2".to_owned()),
            ("config:c".to_owned(), "3".to_owned()),
        ],
        "each change crossed once: two from Redis, two from RabbitMQ, no echo"
    );
    assert_eq!(
        sets, 4,
        "the application's 2 SETs and ferry's 2, no echo into Redis"
    );
    assert_eq!(get(&redis, "config:b").as_deref(), Some("2"));
    ferry.stop(Duration::from_secs(20));
}

/// Applications change the same 500 keys on both sides at once, for a
/// while (`FERRY_SYNC_SECONDS`, 20 by default): once they stop and ferry is
/// quiet, Redis holds, for every key, the value of the key's last record in
/// the topic, which is what every reader of the log ends with. Before the
/// log's order decided, an older Kafka record applied after a newer Redis
/// value was sent out left 21 of 500 keys different on the two sides.
#[tokio::test(flavor = "multi_thread")]
async fn both_sides_changing_the_same_keys_at_once_end_equal() {
    const KEYS: u64 = 500;
    let seconds: u64 = std::env::var("FERRY_SYNC_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let redis = RedisServer::start();
    let tansu = TansuServer::start();
    let brokers = tansu.brokers();
    create_topic_at(&brokers, "config", 1).await;
    let config = format!(
        r#"
origin = "site-a"

[[pipeline]]
name = "redis-to-kafka"
source = {{ type = "redis-keyspace", url = "{r}", pattern = "config:*", configure_notifications = true, sync = true }}
[[pipeline.sink]]
type = "kafka"
brokers = "{brokers}"
topic = "config"

[[pipeline]]
name = "kafka-to-redis"
source = {{ type = "kafka", brokers = "{brokers}", topics = ["config"], group = "sync", start = "earliest" }}
[[pipeline.sink]]
type = "redis"
url = "{r}"
write = "set"
key = "{{key}}"
sync = true
"#,
        r = redis.url()
    );
    let mut ferry = Ferry::start(&config);
    wait_until(WAIT, "both pipelines", || {
        let log = ferry.log();
        log.matches("pipeline running").count() == 2 && log.contains("kafka partitions assigned")
    });

    let until = std::time::Instant::now() + Duration::from_secs(seconds);
    let redis_url = redis.url();
    let redis_writer = std::thread::spawn(move || {
        let mut conn = redis::Client::open(redis_url)
            .unwrap()
            .get_connection()
            .unwrap();
        let mut n = 0u64;
        while std::time::Instant::now() < until {
            let key = format!("config:{}", rand::random::<u64>() % KEYS);
            let _: () = redis::cmd("SET")
                .arg(&key)
                .arg(format!("redis-{n}"))
                .query(&mut conn)
                .unwrap();
            n += 1;
            std::thread::sleep(Duration::from_millis(5));
        }
        n
    });
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("linger.ms", "5")
        .create()
        .unwrap();
    let mut produced = 0u64;
    while std::time::Instant::now() < until {
        let key = format!("config:{}", rand::random::<u64>() % KEYS);
        let value = format!("kafka-{produced}");
        producer
            .send(
                FutureRecord::to("config").key(&key).payload(&value),
                Duration::from_secs(10),
            )
            .await
            .unwrap();
        produced += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let redis_changes = redis_writer.join().unwrap();

    // Quiet: the topic and Redis stop changing.
    let mut last = (-1, 0);
    wait_until(Duration::from_secs(180), "ferry to settle", || {
        std::thread::sleep(Duration::from_secs(3));
        let now = (topic_size(&brokers), redis.calls("evalsha"));
        std::mem::replace(&mut last, now) == now
    });
    let mut latest = std::collections::BTreeMap::new();
    for (key, value) in read_topic_records(&brokers).await {
        latest.insert(key, value);
    }
    let differ: Vec<String> = latest
        .iter()
        .filter(|(key, value)| get(&redis, key) != **value)
        .map(|(key, value)| format!("{key}: redis {:?}, kafka {value:?}", get(&redis, key)))
        .collect();
    println!(
        "two-way sync under concurrent writers: {redis_changes} changes in Redis, {produced} in \
         Kafka, {} keys, {} records in the topic, {} keys differ",
        latest.len(),
        topic_size(&brokers),
        differ.len()
    );
    ferry.stop(Duration::from_secs(30));
    assert!(differ.is_empty(), "keys that differ: {differ:#?}");
}

/// A keyspace read whose reply is lost on a cut connection has already
/// recorded the change in the companion; read again under the same change
/// id it must still be reported (else the change never leaves Redis),
/// while a fresh read finds nothing new.
#[test]
fn a_change_read_again_after_a_lost_reply_is_still_reported() {
    use ferry::connectors::redis::sync;
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let script = redis::Script::new(sync::OBSERVE_SCRIPT);
    let sha = script.prepare_invoke().load(&mut conn).unwrap();
    let _: () = redis::cmd("SET")
        .arg("order:1")
        .arg("v1")
        .query(&mut conn)
        .unwrap();
    let read = |conn: &mut redis::Connection, change: &str| -> i64 {
        let reply: Vec<redis::Value> = sync::observe_call(&sha, "order:1", change)
            .query(conn)
            .unwrap();
        redis::from_redis_value(reply[1].clone()).unwrap()
    };
    assert_eq!(read(&mut conn, "c1"), 1, "a change made in Redis");
    assert_eq!(
        read(&mut conn, "c1"),
        1,
        "the same read again (its reply was lost)"
    );
    assert_eq!(read(&mut conn, "c2"), 0, "a new read: nothing new");
}
