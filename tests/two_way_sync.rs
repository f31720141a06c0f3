//! Two-way sync without loops: values live in Redis, changes go out to a
//! broker, changes from the broker come back into Redis, and nothing echoes.
//!
//! Each test changes keys on both sides, then checks that both sides hold
//! the same values, that each change crossed exactly once (no echo written
//! back), and that message counts stay put once the changes stop.

mod support;

use std::time::Duration;

use nix::sys::signal::Signal;
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
source = {{ type = "redis-keyspace", url = "{r}", pattern = "config:*", configure_notifications = true }}
[[pipeline.sink]]
type = "kafka"
brokers = "{brokers}"
topic = "config"

[[pipeline]]
name = "kafka-to-redis"
source = {{ type = "kafka", brokers = "{brokers}", topics = ["config"], group = "sync", start = "latest" }}
[[pipeline.sink]]
type = "redis"
url = "{r}"
write = "set"
key = "{{key}}"
"#,
        r = redis.url()
    );
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
    ferry.signal(Signal::SIGTERM);
    ferry.wait_success(Duration::from_secs(20));
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
source = {{ type = "redis-keyspace", url = "{r}", pattern = "config:*", configure_notifications = true }}
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
    ferry.signal(Signal::SIGTERM);
    ferry.wait_success(Duration::from_secs(20));
}
