//! Throughput of the two halves of the demo, on the real services:
//! generated orders -> Kafka, and Kafka -> Redis `SET order:{order_id}`.
//!
//! `cargo bench --bench throughput` (needs scripts/setup.sh's services;
//! ORDERS=... to change the count). Prints messages per second of the whole
//! `ferry run`, start-up and final commit included.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use support::*;

fn main() {
    let orders: u64 = std::env::var("ORDERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let topic = unique("bench-orders");
    let group = unique("bench-group");
    rt.block_on(create_topic(&topic, 3));

    let produce = format!(
        r#"
[[pipeline]]
name = "bench-produce"
source = {{ type = "generate", count = {orders} }}
[[pipeline.sink]]
type = "kafka"
brokers = "{brokers}"
topic = "{topic}"
compression = "lz4"
"#,
        brokers = kafka_brokers()
    );
    let started = Instant::now();
    Ferry::start(&produce).wait_success(Duration::from_secs(600));
    report("generate -> kafka", orders, started.elapsed());

    let redis = RedisServer::start();
    let consume = kafka_to_redis_config(
        "bench-move",
        &topic,
        &group,
        &redis.url(),
        ", until = \"end\"",
        "",
    );
    let started = Instant::now();
    let mut ferry = Ferry::start(&consume);
    ferry.wait_success(Duration::from_secs(600));
    let took = started.elapsed();
    assert_eq!(redis.dbsize(), orders);
    report("kafka -> redis set", orders, took);
}

fn report(what: &str, n: u64, took: Duration) {
    println!(
        "{what:<20} {n} messages in {:.2}s = {:.0} messages/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}
