//! Crash at any point loses nothing: SIGKILL ferry mid-stream, restart it,
//! and every order is in Redis. Prints how many were written twice.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::time::{Duration, Instant};

use ferry::connectors::generate::order;
use nix::sys::signal::Signal;
use support::*;

const ORDERS: u64 = 100_000;

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_stream_then_restart_loses_no_order() {
    let kafka = Kafka::start();
    let topic = unique("crash-orders");
    let group = unique("crash-group");
    kafka.create_topic(&topic, 3).await;
    kafka.produce_orders(&topic, 1..ORDERS + 1).await;
    let redis = RedisServer::start();
    let config = kafka.to_redis_config(
        "crash",
        &topic,
        &group,
        &redis.url(),
        // A SIGKILLed member stays in the group until its session expires;
        // a short session lets the restarted ferry take over sooner.
        ", until = \"end\", commit_interval = \"200ms\", options = { \"session.timeout.ms\" = \"6000\" }",
        "",
    );

    let started = Instant::now();
    let mut first = Ferry::start(&config);
    wait_until(Duration::from_secs(120), "a third of the orders", || {
        redis.dbsize() >= ORDERS / 3
    });
    first.signal(Signal::SIGKILL);
    first.wait_timeout(Duration::from_secs(10)).expect("killed");
    let at_kill = redis.dbsize();
    let committed_at_kill: i64 = kafka
        .committed(&group, &topic, 3)
        .iter()
        .map(|c| c.max(&0))
        .sum();
    assert!(
        at_kill < ORDERS,
        "the kill must land mid-stream (had {at_kill})"
    );
    // Restart the way a supervisor would, after the dead member's session
    // expired. (Real Kafka also copes with an immediate restart; tansu 0.6.0
    // then hands the newcomer an empty assignment and never rebalances.)
    std::thread::sleep(Duration::from_secs(7));

    let mut second = Ferry::start(&config);
    second.wait_success(Duration::from_secs(300));
    let elapsed = started.elapsed();

    assert_eq!(redis.dbsize(), ORDERS, "every order is in Redis");
    let mut conn = redis.conn();
    for chunk in (1..ORDERS + 1).collect::<Vec<_>>().chunks(5000) {
        let keys: Vec<String> = chunk.iter().map(|n| format!("order:{n}")).collect();
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut conn).unwrap();
        for (n, v) in chunk.iter().zip(values) {
            assert_eq!(v.as_deref(), Some(order(*n).as_str()), "order {n}");
        }
    }
    let ends: Vec<i64> = kafka
        .watermarks(&topic, 3)
        .iter()
        .map(|(_, h)| *h)
        .collect();
    assert_eq!(kafka.committed(&group, &topic, 3), ends);

    let sets = redis.calls("set");
    let duplicates = sets - ORDERS;
    println!(
        "crash test: {ORDERS} orders; killed with {at_kill} in Redis and {committed_at_kill} committed; \
         after restart SET ran {sets} times: {duplicates} orders written twice \
         (ferry re-reads from the last commit); total {:.1}s",
        elapsed.as_secs_f64()
    );
    assert!(
        committed_at_kill > 0,
        "offsets are committed while ferry runs"
    );
    // Only what was written but not yet committed when ferry died is
    // written again (plus commands Redis still had in its buffers).
    let uncommitted = (at_kill as i64 - committed_at_kill).max(0) as u64;
    assert!(
        duplicates <= uncommitted + 3_000,
        "{duplicates} duplicates, but only {uncommitted} were written and not committed"
    );
}

/// The same crash into a Redis stream, which (unlike `SET`) would keep a
/// second copy of every redelivered order, with `exactly_once`: the orders
/// ferry re-reads after the restart are skipped, not appended again.
#[tokio::test(flavor = "multi_thread")]
async fn with_exactly_once_a_crash_appends_no_order_twice() {
    const N: u64 = 30_000;
    let kafka = Kafka::start();
    let topic = unique("once-orders");
    let group = unique("once-group");
    kafka.create_topic(&topic, 3).await;
    kafka.produce_orders(&topic, 1..N + 1).await;
    let redis = RedisServer::start();
    let config = format!(
        r#"
[[pipeline]]
name = "once"
source = {{ type = "kafka", brokers = "{brokers}", topics = ["{topic}"], group = "{group}", until = "end", commit_interval = "5s", options = {{ "session.timeout.ms" = "6000" }} }}

[[pipeline.sink]]
type = "redis"
url = "{url}"
write = "xadd"
key = "orders-log"
exactly_once = true
"#,
        brokers = kafka.brokers,
        url = redis.url()
    );
    let xlen = || -> u64 {
        redis::cmd("XLEN")
            .arg("orders-log")
            .query(&mut redis.conn())
            .unwrap()
    };
    let mut first = Ferry::start(&config);
    wait_until(Duration::from_secs(120), "a third of the orders", || {
        xlen() >= N / 3
    });
    first.signal(Signal::SIGKILL);
    first.wait_timeout(Duration::from_secs(10)).expect("killed");
    let at_kill = xlen();
    assert!(at_kill < N, "the kill must land mid-stream (had {at_kill})");
    std::thread::sleep(Duration::from_secs(7));

    let mut second = Ferry::start(&config);
    second.wait_success(Duration::from_secs(300));
    // The script looks each message's position up (`ZSCORE`) once per
    // delivery, inside one call per batch.
    let lookups = redis.calls("zscore");
    assert!(
        lookups > N,
        "the restart re-read orders written before the kill ({lookups} deliveries for {N} orders)"
    );
    assert_eq!(xlen(), N, "every order once, none twice");
    let ids: std::collections::HashSet<String> = redis
        .xrange("orders-log")
        .iter()
        .map(|e| e.get::<String>("key").unwrap())
        .collect();
    assert_eq!(ids.len() as u64, N);
    println!(
        "exactly_once crash test: killed with {at_kill} entries; {} redelivered orders skipped",
        lookups - N
    );
}

/// A Redis restarted without its script cache (`SCRIPT FLUSH` stands in)
/// answers NOSCRIPT: the sink loads the script again and the batch is
/// retried, with nothing lost or doubled.
#[tokio::test(flavor = "multi_thread")]
async fn with_exactly_once_a_forgotten_script_is_loaded_again() {
    let kafka = Kafka::start();
    let topic = unique("noscript");
    kafka.create_topic(&topic, 1).await;
    kafka.produce_orders(&topic, 1..11).await;
    let redis = RedisServer::start();
    let config = format!(
        r#"
[[pipeline]]
name = "once"
source = {{ type = "kafka", brokers = "{brokers}", topics = ["{topic}"], group = "{group}" }}

[[pipeline.sink]]
type = "redis"
url = "{url}"
write = "xadd"
key = "log"
exactly_once = true
retry = {{ initial = "50ms", max = "200ms" }}
"#,
        brokers = kafka.brokers,
        group = unique("g"),
        url = redis.url()
    );
    let xlen = || -> u64 {
        redis::cmd("XLEN")
            .arg("log")
            .query(&mut redis.conn())
            .unwrap()
    };
    let ferry = Ferry::start(&config);
    wait_until(Duration::from_secs(60), "the first ten", || xlen() == 10);
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut redis.conn())
        .unwrap();
    kafka.produce_orders(&topic, 11..21).await;
    wait_until(Duration::from_secs(60), "the next ten", || xlen() == 20);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(xlen(), 20, "{}", ferry.log());
    assert!(
        ferry.log().contains("exactly_once script"),
        "{}",
        ferry.log()
    );
}
