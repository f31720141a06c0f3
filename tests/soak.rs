//! Soak: every at-least-once source through 20 SIGKILLs of ferry and 5
//! connection faults (a lost reply to a read, then every connection cut)
//! while it moves `FERRY_SOAK_MESSAGES` orders (20,000 unless set) into a
//! Redis list, and the `exactly_once` paths (kafka -> redis, redis-stream
//! -> redis), where nothing may be written twice.
//!
//! Too long for every run: the tests are ignored, and `scripts/soak.sh`
//! runs them in release mode (`FERRY_SOAK_MESSAGES=1000000 scripts/soak.sh`
//! for the full size). Each prints sent / delivered / lost / duplicated.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]
#![allow(async_fn_in_trait)]

mod support;

#[allow(dead_code)]
#[path = "conformance/common.rs"]
mod common;
#[allow(dead_code)]
#[path = "conformance/kits.rs"]
mod kits;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use common::{orders, start_ferry, stop};
use kits::*;
use support::*;

const KILLS: usize = 20;
const CUTS: usize = 5;

fn messages() -> u64 {
    std::env::var("FERRY_SOAK_MESSAGES")
        .ok()
        .and_then(|n| n.replace('_', "").parse().ok())
        .unwrap_or(20_000)
}

/// How long a stage may take without progress before the soak gives up.
const STALL: Duration = Duration::from_secs(300);

fn config(source: &str, verify: &RedisServer, exactly_once: bool) -> String {
    format!(
        r#"
[[pipeline]]
name = "soak"
source = {source}

[[pipeline.sink]]
type = "redis"
url = "{url}"
write = "rpush"
key = "received"
{exactly_once}"#,
        url = verify.url(),
        exactly_once = if exactly_once {
            "exactly_once = true\n"
        } else {
            ""
        },
    )
}

fn received(verify: &RedisServer) -> u64 {
    redis::cmd("LLEN")
        .arg("received")
        .query(&mut verify.conn())
        .unwrap()
}

/// Waits until `received` reaches `target`, as long as it keeps growing.
fn wait_for(verify: &RedisServer, target: u64, ferry: &Ferry) {
    let mut last = received(verify);
    let mut progress = Instant::now();
    while last < target {
        std::thread::sleep(Duration::from_millis(50));
        let now = received(verify);
        if now > last {
            last = now;
            progress = Instant::now();
        }
        assert!(
            progress.elapsed() < STALL,
            "no progress for {STALL:?} at {last} of {target}\n{}",
            ferry.log()
        );
    }
}

async fn soak<K: SourceKit>(name: &str, exactly_once: bool) {
    let n = messages();
    let kit = K::start().await;
    let verify = RedisServer::start();
    let config = config(&kit.source(), &verify, exactly_once);
    let started = Instant::now();
    for chunk in (1..n + 1).collect::<Vec<_>>().chunks(100_000) {
        kit.put(&orders(chunk[0]..chunk[chunk.len() - 1] + 1)).await;
    }
    let put = started.elapsed();
    // Every fifth fault is a connection fault, the others SIGKILLs, spread
    // evenly over the run.
    let faults = KILLS + CUTS;
    let mut ferry = start_ferry::<K>(&config);
    let (mut kills, mut cuts, mut lost_replies) = (0, 0, 0);
    for i in 0..faults {
        wait_for(&verify, n * (i as u64 + 1) / (faults as u64 + 1), &ferry);
        if i % 5 == 4 {
            let proxy = kit.proxy();
            if let Some(read) = K::read_request() {
                let before = proxy.dropped_replies();
                proxy.drop_reply_to(read);
                if proxy.wait_dropped(before, Duration::from_secs(10)) {
                    lost_replies += 1;
                } else {
                    proxy.disarm();
                }
            }
            proxy.cut();
            cuts += 1;
        } else {
            ferry.signal(Signal::SIGKILL);
            ferry
                .wait_timeout(Duration::from_secs(30))
                .expect("ferry dies");
            kills += 1;
            std::thread::sleep(K::RESTART_DELAY);
            ferry = start_ferry::<K>(&config);
        }
    }
    // Until everything is acknowledged and nothing more arrives.
    wait_for(&verify, n, &ferry);
    let deadline = Instant::now() + STALL;
    while kit.outstanding().await > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    common::settled(STALL, Duration::from_secs(3), || received(&verify));
    stop(&mut ferry);
    let outstanding = kit.outstanding().await;
    let tally = Tally::of(n, order_ids_in_list(&mut verify.conn(), "received"));
    println!(
        "soak {name}{}: {kills} SIGKILLs, {cuts} connection cuts ({lost_replies} with a lost read \
         reply), {:.0}s (putting {n} took {:.0}s): {tally}; {outstanding} unacknowledged",
        if exactly_once {
            " -> redis with exactly_once"
        } else {
            ""
        },
        started.elapsed().as_secs_f64() - put.as_secs_f64(),
        put.as_secs_f64(),
    );
    assert_eq!(tally.lost, 0, "{name}: nothing lost ({tally})");
    if exactly_once {
        assert_eq!(
            tally.duplicated, 0,
            "{name}: nothing written twice ({tally})"
        );
    }
    assert_eq!(outstanding, 0, "{name}: everything acknowledged");
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "soak: scripts/soak.sh"]
async fn soak_kafka() {
    soak::<KafkaSourceKit>("kafka", false).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "soak: scripts/soak.sh"]
async fn soak_redis_stream() {
    soak::<RedisStreamSourceKit>("redis-stream", false).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "soak: scripts/soak.sh"]
async fn soak_redis_list() {
    soak::<RedisListSourceKit>("redis-list", false).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "soak: scripts/soak.sh"]
async fn soak_amqp() {
    soak::<AmqpSourceKit>("amqp", false).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "soak: scripts/soak.sh"]
async fn soak_kafka_exactly_once() {
    soak::<KafkaSourceKit>("kafka", true).await;
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "soak: scripts/soak.sh"]
async fn soak_redis_stream_exactly_once() {
    soak::<RedisStreamSourceKit>("redis-stream", true).await;
}
