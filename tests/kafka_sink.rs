//! The Kafka sink against a real broker (tansu in CI).

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::time::Duration;

use support::*;

fn generate_to_kafka(kafka: &Kafka, topic: &str, extra: &str) -> String {
    format!(
        r#"
[[pipeline]]
name = "to-kafka"
source = {{ type = "generate", count = 300 }}
[[pipeline.sink]]
type = "kafka"
brokers = "{brokers}"
topic = "{topic}"
key = "{{customer_id}}"
{extra}
"#,
        brokers = kafka.brokers
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_topic_stops_ferry_with_a_clear_error() {
    let kafka = Kafka::start();
    let topic = unique("absent");
    let mut ferry = Ferry::start(&generate_to_kafka(&kafka, &topic, ""));
    let status = ferry
        .wait_timeout(Duration::from_secs(60))
        .expect("ferry stops");
    assert!(!status.success());
    let log = ferry.log();
    assert!(
        log.contains(&format!("kafka topic `{topic}` does not exist")),
        "{log}"
    );
    assert!(log.contains("create_topic = { partitions = 3 }"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_sink_creates_its_topic_and_keys_records_from_a_template() {
    let kafka = Kafka::start();
    let topic = unique("created");
    let mut ferry = Ferry::start(&generate_to_kafka(
        &kafka,
        &topic,
        "create_topic = { partitions = 4 }",
    ));
    ferry.wait_success(Duration::from_secs(60));
    let ends: Vec<i64> = kafka
        .watermarks(&topic, 4)
        .iter()
        .map(|(_, h)| *h)
        .collect();
    assert_eq!(ends.iter().sum::<i64>(), 300);
    assert!(
        ends.iter().filter(|e| **e > 0).count() > 1,
        "keys spread over partitions: {ends:?}"
    );
}
