//! `exactly_once` into Redis when messages arrive in any order: several
//! processes in one consumer group, claims of a dead consumer's entries,
//! and the positions' memory bound.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::*;

/// Appends orders `ids` to `stream` in pipelined chunks.
fn xadd_orders(redis: &RedisServer, stream: &str, ids: std::ops::RangeInclusive<u64>) {
    let mut conn = redis.conn();
    for chunk in ids.collect::<Vec<_>>().chunks(500) {
        let mut pipe = redis::pipe();
        for n in chunk {
            pipe.cmd("XADD")
                .arg(stream)
                .arg("*")
                .arg("payload")
                .arg(ferry::connectors::generate::order(*n))
                .ignore();
        }
        pipe.exec(&mut conn).unwrap();
    }
}

fn pending(redis: &RedisServer, stream: &str, group: &str) -> u64 {
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg(group)
        .query(&mut redis.conn())
        .unwrap();
    match summary {
        redis::Value::Array(parts) => match parts.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            _ => 0,
        },
        _ => 0,
    }
}

/// Entries of `stream` not yet handed to `group` (Redis 7's `lag`).
fn lag(redis: &RedisServer, stream: &str, group: &str) -> u64 {
    let groups: Vec<HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query(&mut redis.conn())
        .unwrap();
    groups
        .iter()
        .find(|g| {
            g.get("name").is_some_and(|n| {
                redis::from_redis_value::<String>(n.clone()).ok().as_deref() == Some(group)
            })
        })
        .and_then(|g| redis::from_redis_value::<u64>(g.get("lag")?.clone()).ok())
        .unwrap_or(u64::MAX)
}

fn positions(redis: &RedisServer) -> u64 {
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("ferry:positions:*")
        .query(&mut redis.conn())
        .unwrap();
    keys.iter()
        .map(|k| -> u64 {
            redis::cmd("ZCARD")
                .arg(k)
                .query(&mut redis.conn())
                .unwrap_or(0)
        })
        .sum()
}

fn config(source: &RedisServer, sink: &RedisServer, consumer: &str) -> String {
    format!(
        r#"
[[pipeline]]
name = "once"
source = {{ type = "redis-stream", url = "{src}", streams = ["orders"], group = "g", consumer = "{consumer}", block = "100ms", batch_size = 50, claim_idle = "2s" }}

[[pipeline.sink]]
type = "redis"
url = "{dst}"
write = "xadd"
key = "orders-log"
exactly_once = true
"#,
        src = source.url(),
        dst = sink.url(),
    )
}

/// Two processes share a stream's entries, interleaved; one is killed and
/// the other claims what it left pending, older ids after newer ones were
/// written. Every order lands once: none skipped as "already written"
/// (which a single high-water mark per stream did: 588 of 20,000 lost), none
/// appended twice.
#[tokio::test(flavor = "multi_thread")]
async fn two_processes_in_one_group_write_every_entry_once_across_a_kill_and_claims() {
    const N: u64 = 20_000;
    let source = RedisServer::start();
    let sink = RedisServer::start();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("orders")
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut source.conn())
        .unwrap();
    xadd_orders(&source, "orders", 1..=N);
    let mut a = Ferry::start(&config(&source, &sink, "a"));
    let mut b = Ferry::start(&config(&source, &sink, "b"));
    let xlen = || -> u64 {
        redis::cmd("XLEN")
            .arg("orders-log")
            .query(&mut sink.conn())
            .unwrap()
    };
    wait_until(Duration::from_secs(60), "a quarter of the orders", || {
        xlen() >= N / 4
    });
    a.signal(Signal::SIGKILL);
    a.wait_timeout(Duration::from_secs(10)).expect("killed");
    let left_pending = pending(&source, "orders", "g");
    // Done when the group has handed out every entry and has none pending
    // (an entry skipped as "already written" is acknowledged all the same).
    wait_until(Duration::from_secs(120), "the group to finish", || {
        lag(&source, "orders", "g") == 0 && pending(&source, "orders", "g") == 0
    });
    b.stop(Duration::from_secs(30));
    let counts = sink.order_counts("orders-log");
    let doubled = counts.values().filter(|&&c| c > 1).count();
    let lost = (1..=N).filter(|id| !counts.contains_key(id)).count();
    println!(
        "exactly_once, two consumers and a kill: {N} orders, {left_pending} pending at the kill, \
         lost {lost}, doubled {doubled}, {} script calls (one per batch and stream), \
         {} positions kept",
        sink.calls("evalsha"),
        positions(&sink)
    );
    assert_eq!(lost, 0, "no order lost");
    assert_eq!(doubled, 0, "no order appended twice");
}

/// Positions are forgotten once the group acknowledged them: the sorted
/// sets hold a few seconds of traffic, not every message ever written.
#[tokio::test(flavor = "multi_thread")]
async fn positions_are_forgotten_once_the_group_acknowledged_them() {
    const N: u64 = 5_000;
    let source = RedisServer::start();
    let sink = RedisServer::start();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("orders")
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut source.conn())
        .unwrap();
    let mut ferry = Ferry::start(&config(&source, &sink, "a"));
    wait_until(Duration::from_secs(30), "the consumer", || {
        ferry.log().contains("pipeline running")
    });
    xadd_orders(&source, "orders", 1..=N);
    wait_until(Duration::from_secs(60), "every order", || {
        sink.order_counts("orders-log").len() as u64 == N
    });
    // Positions are forgotten with the writes that follow a settled mark.
    std::thread::sleep(Duration::from_secs(3));
    xadd_orders(&source, "orders", N + 1..=N + 1);
    wait_until(Duration::from_secs(30), "the last order", || {
        sink.order_counts("orders-log").len() as u64 == N + 1
    });
    let kept = positions(&sink);
    ferry.stop(Duration::from_secs(30));
    println!("positions kept after {} orders: {kept}", N + 1);
    assert!(
        kept <= 10,
        "positions of acknowledged orders are forgotten (kept {kept})"
    );
}

/// One call of the script writes a whole batch: a command refused because
/// of one message (`WRONGTYPE`) dead-letters that message alone, with
/// Redis's reason, and records no position for it; the messages before and
/// after it in the same call are written once and recorded.
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_message_in_a_batch_is_dead_lettered_alone_and_the_rest_written_once() {
    let source = RedisServer::start();
    let sink = RedisServer::start();
    // Order 5's list is a string already: RPUSH onto it is refused.
    let _: () = redis::cmd("SET")
        .arg("orders:5")
        .arg("not a list")
        .query(&mut sink.conn())
        .unwrap();
    xadd_orders(&source, "orders", 1..=10);
    let config = format!(
        r#"
[[pipeline]]
name = "once"
source = {{ type = "redis-stream", url = "{src}", streams = ["orders"], group = "g", consumer = "a", block = "100ms" }}

[pipeline.dead_letter]
type = "redis"
url = "{src}"
write = "xadd"
key = "dead"

[[pipeline.sink]]
type = "redis"
url = "{dst}"
write = "rpush"
key = "orders:{{order_id}}"
exactly_once = true
"#,
        src = source.url(),
        dst = sink.url(),
    );
    let mut ferry = Ferry::start(&config);
    let dead = || -> u64 {
        redis::cmd("XLEN")
            .arg("dead")
            .query(&mut source.conn())
            .unwrap()
    };
    wait_until(Duration::from_secs(30), "the refused order", || dead() == 1);
    wait_until(Duration::from_secs(30), "the group to finish", || {
        pending(&source, "orders", "g") == 0
    });
    ferry.stop(Duration::from_secs(10));
    let llen = |key: &str| -> u64 { redis::cmd("LLEN").arg(key).query(&mut sink.conn()).unwrap() };
    for id in (1..=10).filter(|&id| id != 5) {
        assert_eq!(llen(&format!("orders:{id}")), 1, "order {id} written once");
    }
    assert_eq!(positions(&sink), 9, "every order recorded but 5");
    let error: String = source.xrange("dead")[0].get("header.ferry.error").unwrap();
    assert!(error.contains("WRONGTYPE"), "{error}");
    // The sink takes what has arrived when it is free: the first batch
    // may hold one order and the next the rest, never one call per order.
    let calls = sink.calls("evalsha");
    assert!(calls < 10, "{calls} calls for 10 orders: one per batch");
}
