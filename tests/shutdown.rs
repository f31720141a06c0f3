//! Graceful shutdown: SIGTERM mid-stream drains what is in flight, commits
//! exactly what was confirmed and exits 0 within a few seconds.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::*;

const ORDERS: u64 = 100_000;

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_mid_stream_exits_zero_quickly_and_commits_what_was_confirmed() {
    let kafka = Kafka::start();
    let topic = unique("term-orders");
    let group = unique("term-group");
    kafka.create_topic(&topic, 3).await;
    kafka.produce_orders(&topic, 1..ORDERS + 1).await;
    let redis = RedisServer::start();
    // A daemon (no `until`), as it runs in production.
    let config = kafka.to_redis_config("term", &topic, &group, &redis.url(), "", "");

    let mut ferry = Ferry::start(&config);
    wait_until(Duration::from_secs(120), "some orders to arrive", || {
        redis.dbsize() >= 10_000
    });
    let signalled = Instant::now();
    ferry.signal(Signal::SIGTERM);
    let status = ferry
        .wait_timeout(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running 10s after SIGTERM\n{}", ferry.log()));
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status}\n{}", ferry.log());

    let written = redis.dbsize();
    let committed: Vec<i64> = kafka.committed(&group, &topic, 3);
    let committed_total: i64 = committed.iter().map(|c| c.max(&0)).sum();
    println!(
        "shutdown test: SIGTERM after {} orders; exited 0 in {:.2}s; {written} orders in Redis, \
         committed offsets {committed:?} (sum {committed_total})",
        10_000,
        took.as_secs_f64()
    );
    assert!(written < ORDERS, "SIGTERM landed mid-stream");
    // Orders are unique and each partition is read in order: after a full
    // drain, the committed offsets cover exactly the orders written.
    assert_eq!(committed_total as u64, written, "{}", ferry.log());
    assert!(ferry.log().contains("SIGTERM"), "{}", ferry.log());
}
