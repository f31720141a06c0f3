//! Backpressure: when Redis stalls, ferry stops reading instead of
//! buffering, so its memory stays bounded however large the Kafka backlog.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::time::{Duration, Instant};

use support::*;

const ORDERS: u64 = 100_000;
const ORDER_BYTES: usize = 2048;
const MIB: u64 = 1024 * 1024;

#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_redis_keeps_ferry_memory_bounded_while_the_backlog_waits_in_kafka() {
    let kafka = Kafka::start();
    let topic = unique("slow-orders");
    let group = unique("slow-group");
    kafka.create_topic(&topic, 3).await;
    kafka
        .produce_large_orders(&topic, 1..ORDERS + 1, ORDER_BYTES)
        .await;
    let backlog = ORDERS * ORDER_BYTES as u64;
    let redis = RedisServer::start();

    // Every write command waits for 15 s: the sink is far slower than the source.
    let stall = Duration::from_secs(15);
    redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(stall.as_millis() as u64)
        .arg("WRITE")
        .query::<()>(&mut redis.conn())
        .unwrap();
    let stalled_until = Instant::now() + stall;

    let config = kafka.to_redis_config(
        "slow",
        &topic,
        &group,
        &redis.url(),
        ", until = \"end\"",
        "",
    );
    let mut ferry = Ferry::start(&config);
    let mut during_stall = Vec::new();
    while Instant::now() + Duration::from_secs(1) < stalled_until {
        if let Some(kib) = ferry.rss_kib() {
            during_stall.push(kib * 1024);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let stalled_written = redis.dbsize();
    let mut after = Vec::new();
    while ferry.wait_timeout(Duration::from_millis(200)).is_none() {
        if let Some(kib) = ferry.rss_kib() {
            after.push(kib * 1024);
        }
        assert!(after.len() < 1500, "ferry did not finish\n{}", ferry.log());
    }
    ferry.wait_success(Duration::from_secs(1));

    let max_stalled = during_stall.iter().copied().max().unwrap_or(0);
    let max_after = after.iter().copied().max().unwrap_or(0);
    println!(
        "backpressure test: backlog {} MiB in Kafka; Redis stalled for {stall:?} \
         ({stalled_written} keys written meanwhile); ferry RSS max {} MiB while stalled \
         (last {} MiB), max {} MiB while catching up",
        backlog / MIB,
        max_stalled / MIB,
        during_stall.last().copied().unwrap_or(0) / MIB,
        max_after / MIB
    );
    assert_eq!(
        redis.dbsize(),
        ORDERS,
        "everything arrives once Redis is back"
    );
    assert_eq!(stalled_written, 0, "nothing could be written while stalled");
    let bound = 100 * MIB;
    assert!(
        max_stalled < bound && max_after < bound,
        "memory must stay bounded (< {} MiB), far below the {} MiB backlog",
        bound / MIB,
        backlog / MIB
    );
}
