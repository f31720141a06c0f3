//! Kafka -> Redis end to end, against a real broker and a real Redis.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::time::Duration;

use ferry::connectors::generate::order;
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn ten_thousand_orders_on_three_partitions_all_arrive_and_offsets_reach_the_end() {
    let kafka = Kafka::start();
    let topic = unique("orders");
    let group = unique("group");
    kafka.create_topic(&topic, 3).await;
    kafka.produce_orders(&topic, 1..10_001).await;
    let redis = RedisServer::start();

    let config = kafka.to_redis_config(
        "orders-to-cache",
        &topic,
        &group,
        &redis.url(),
        ", until = \"end\"",
        "",
    );
    let mut ferry = Ferry::start(&config);
    ferry.wait_success(Duration::from_secs(120));

    assert_eq!(redis.dbsize(), 10_000);
    let mut conn = redis.conn();
    let keys: Vec<String> = (1..10_001).map(|n| format!("order:{n}")).collect();
    for (chunk_start, chunk) in keys.chunks(1000).enumerate() {
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(chunk).query(&mut conn).unwrap();
        for (i, v) in values.into_iter().enumerate() {
            let n = (chunk_start * 1000 + i + 1) as u64;
            assert_eq!(v.as_deref(), Some(order(n).as_str()), "order {n}");
        }
    }
    let ends: Vec<i64> = kafka
        .watermarks(&topic, 3)
        .iter()
        .map(|(_, high)| *high)
        .collect();
    assert_eq!(ends.iter().sum::<i64>(), 10_000);
    assert_eq!(
        kafka.committed(&group, &topic, 3),
        ends,
        "committed offsets = end offsets"
    );
    let log = ferry.log();
    assert!(log.contains("received=10000 confirmed=10000"), "{log}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_payload_that_is_not_json_goes_to_the_dead_letter_stream_and_the_rest_goes_on() {
    let kafka = Kafka::start();
    let topic = unique("orders");
    let group = unique("group");
    kafka.create_topic(&topic, 1).await;
    kafka.produce_orders(&topic, 1..51).await;
    kafka
        .produce(&topic, [("bad".to_owned(), b"this is not json".to_vec())])
        .await;
    kafka.produce_orders(&topic, 51..101).await;
    let redis = RedisServer::start();

    let dead_letter = format!(
        "[pipeline.dead_letter]\ntype = \"redis\"\nurl = \"{}\"\nwrite = \"xadd\"\nkey = \"dead:{{topic}}\"\n",
        redis.url()
    );
    let config = kafka.to_redis_config(
        "dl",
        &topic,
        &group,
        &redis.url(),
        ", until = \"end\"",
        &dead_letter,
    );
    let mut ferry = Ferry::start(&config);
    ferry.wait_success(Duration::from_secs(60));

    assert_eq!(redis.dbsize(), 101, "100 orders and the dead-letter stream");
    let entries = redis.xrange(&format!("dead:{topic}"));
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    let field =
        |name: &str| -> String { entry.get(name).unwrap_or_else(|| panic!("no field {name}")) };
    assert_eq!(field("payload"), "this is not json");
    assert_eq!(field("key"), "bad");
    assert!(field("header.ferry.error").contains("not valid JSON"));
    assert_eq!(field("header.ferry.pipeline"), "dl");
    assert!(field("header.ferry.sink").contains("redis set order:{order_id}"));
    assert_eq!(
        field("header.ferry.source"),
        format!("kafka topic={topic} partition=0 offset=50")
    );
    assert_eq!(kafka.committed(&group, &topic, 1), vec![101]);
    let log = ferry.log();
    assert!(
        log.contains("partition=0 offset=50"),
        "the log names the message: {log}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_dead_letter_sink_a_bad_payload_stops_the_pipeline_and_is_not_committed() {
    let kafka = Kafka::start();
    let topic = unique("orders");
    let group = unique("group");
    kafka.create_topic(&topic, 1).await;
    kafka.produce_orders(&topic, 0..10).await;
    kafka
        .produce(
            &topic,
            [("bad".to_owned(), b"{\"no_order_id\": 1}".to_vec())],
        )
        .await;
    kafka.produce_orders(&topic, 11..20).await;
    let redis = RedisServer::start();

    let config = kafka.to_redis_config("strict", &topic, &group, &redis.url(), "", "");
    let mut ferry = Ferry::start(&config);
    let status = ferry
        .wait_timeout(Duration::from_secs(60))
        .expect("ferry should stop by itself");
    assert!(!status.success());
    let log = ferry.log();
    assert!(
        log.contains(&format!("kafka topic={topic} partition=0 offset=10")),
        "{log}"
    );
    assert!(log.contains("order_id"), "{log}");
    assert!(log.contains("no `dead_letter` sink is configured"), "{log}");
    let committed = kafka.committed(&group, &topic, 1)[0];
    assert!(
        committed <= 10,
        "committed {committed}: past the undelivered message"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn hset_and_xadd_sinks_write_hashes_and_stream_entries_from_one_source() {
    let kafka = Kafka::start();
    let topic = unique("orders");
    let group = unique("group");
    kafka.create_topic(&topic, 2).await;
    kafka.produce_orders(&topic, 1..201).await;
    let redis = RedisServer::start();
    let config = format!(
        r#"
[[pipeline]]
name = "fan-out"
source = {{ type = "kafka", brokers = "{brokers}", topics = ["{topic}"], group = "{group}", until = "end" }}

[[pipeline.sink]]
type = "redis"
url = "{url}"
write = "hset"
key = "order:{{order_id}}"

[[pipeline.sink]]
type = "redis"
url = "{url}"
write = "xadd"
key = "orders-log:{{partition}}"
"#,
        brokers = kafka.brokers,
        url = redis.url()
    );
    let mut ferry = Ferry::start(&config);
    ferry.wait_success(Duration::from_secs(60));

    let mut conn = redis.conn();
    let h: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg("order:42")
        .query(&mut conn)
        .unwrap();
    assert_eq!(h["order_id"], "42");
    assert_eq!(h["currency"], "EUR");
    assert_eq!(h["customer_id"], "c-42");
    let lens: Vec<u64> = (0..2)
        .map(|p| {
            redis::cmd("XLEN")
                .arg(format!("orders-log:{p}"))
                .query(&mut conn)
                .unwrap()
        })
        .collect();
    assert_eq!(lens.iter().sum::<u64>(), 200);
    assert_eq!(redis.calls("hset"), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn start_latest_skips_the_backlog_and_start_committed_refuses_a_group_without_offsets() {
    let kafka = Kafka::start();
    let topic = unique("orders");
    kafka.create_topic(&topic, 1).await;
    kafka.produce_orders(&topic, 1..101).await;
    let redis = RedisServer::start();

    let latest = kafka.to_redis_config(
        "latest",
        &topic,
        &unique("group"),
        &redis.url(),
        ", start = \"latest\"",
        "",
    );
    let mut ferry = Ferry::start(&latest);
    wait_until(
        Duration::from_secs(30),
        "the partition to be assigned",
        || ferry.log().contains("kafka partitions assigned"),
    );
    std::thread::sleep(Duration::from_secs(2));
    kafka.produce_orders(&topic, 101..111).await;
    wait_until(Duration::from_secs(30), "the new orders", || {
        redis.dbsize() == 10
    });
    assert_eq!(redis.get("order:1"), None, "the backlog was skipped");
    assert!(redis.get("order:105").is_some());
    ferry.stop(Duration::from_secs(10));

    let committed = kafka.to_redis_config(
        "committed",
        &topic,
        &unique("group"),
        &redis.url(),
        ", start = \"committed\"",
        "",
    );
    let mut ferry = Ferry::start(&committed);
    let status = ferry
        .wait_timeout(Duration::from_secs(60))
        .expect("ferry refuses to start the partition");
    assert!(!status.success());
    let log = ferry.log();
    assert!(log.contains("has no committed offset"), "{log}");
    assert!(log.contains("start = \"earliest\""), "{log}");
}
