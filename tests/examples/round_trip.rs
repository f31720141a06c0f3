//! A message keeps its key, payload and headers on a round trip Kafka ->
//! RabbitMQ -> Redis Stream -> Kafka.

use super::*;

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
    ferry.stop(TIMEOUT);

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
    ferry.stop(TIMEOUT);
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
