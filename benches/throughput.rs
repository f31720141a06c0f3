//! Throughput of the two halves of the demo, on the real services:
//! generated orders -> Kafka, and Kafka -> Redis `SET order:{order_id}`;
//! and what `exactly_once` costs on a Redis stream sink.
//!
//! `cargo bench --bench throughput` (needs scripts/setup.sh's services;
//! ORDERS=... to change the count). Prints messages per second of the whole
//! `ferry run`, start-up and final commit included. Runs against a private
//! tansu unless FERRY_TEST_KAFKA_BROKERS names a broker.

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
    let kafka = Kafka::start();
    let group = unique("bench-group");

    // The consuming half goes first and reads orders as an application
    // would produce them: without headers. Records ferry writes carry its
    // `ferry.hops` header, and tansu 0.6.0 serves records with headers in
    // superlinear time; once a broker holds 100,000 of them, even fetches
    // of other topics crawl (100,000 header-free orders: 3.5 s on a fresh
    // broker, minutes after the producing half). That would measure tansu.
    let input = unique("bench-input");
    rt.block_on(kafka.create_topic(&input, 3));
    rt.block_on(kafka.produce_orders(&input, 1..orders + 1));

    let redis = RedisServer::start();
    let consume = kafka.to_redis_config(
        "bench-move",
        &input,
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

    // The same topic again, appended to a stream with and without
    // `exactly_once` (one script call per message instead of one XADD).
    for (label, extra) in [
        ("kafka -> redis xadd", ""),
        ("  ... exactly_once", "exactly_once = true\n"),
    ] {
        let redis = RedisServer::start();
        let config = format!(
            r#"
[[pipeline]]
name = "bench-xadd"
source = {{ type = "kafka", brokers = "{brokers}", topics = ["{input}"], group = "{group}", until = "end" }}
[[pipeline.sink]]
type = "redis"
url = "{url}"
write = "xadd"
key = "orders-log"
{extra}"#,
            brokers = kafka.brokers,
            group = unique("bench-xadd"),
            url = redis.url()
        );
        let started = Instant::now();
        Ferry::start(&config).wait_success(Duration::from_secs(600));
        report(label, orders, started.elapsed());
    }

    let output = unique("bench-output");
    rt.block_on(kafka.create_topic(&output, 3));
    let produce = format!(
        r#"
[[pipeline]]
name = "bench-produce"
source = {{ type = "generate", count = {orders} }}
[[pipeline.sink]]
type = "kafka"
brokers = "{brokers}"
topic = "{output}"
compression = "lz4"
"#,
        brokers = kafka.brokers
    );
    let started = Instant::now();
    Ferry::start(&produce).wait_success(Duration::from_secs(600));
    report("generate -> kafka", orders, started.elapsed());
}

fn report(what: &str, n: u64, took: Duration) {
    println!(
        "{what:<20} {n} messages in {:.2}s = {:.0} messages/s",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
}
