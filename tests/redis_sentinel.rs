//! Redis behind Sentinel: one primary, one replica and three sentinels,
//! private processes; the primary fails over mid-stream.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::time::{Duration, Instant};

use support::topology::{RedisSentinels, SENTINEL_NAME};
use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_sentinel_sink_follows_a_failover_and_loses_nothing() {
    let sentinels = RedisSentinels::start();
    let source = RedisServer::start();
    const N: u64 = 20_000;
    let mut conn = source.conn();
    for chunk in (1..=N).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("XADD")
                .arg("orders")
                .arg("*")
                .arg("payload")
                .arg(ferry::connectors::generate::order(*i));
        }
        let _: () = pipe.query(&mut conn).unwrap();
    }
    let nodes: Vec<String> = sentinels
        .urls()
        .iter()
        .map(|u| format!("\"{u}\""))
        .collect();
    let config = format!(
        r#"
[[pipeline]]
name = "via-sentinel"
source = {{ type = "redis-stream", url = "{src}", streams = ["orders"], group = "g", block = "200ms", batch_size = 100, until = "end" }}
[[pipeline.sink]]
type = "redis"
url = "redis://{SENTINEL_NAME}/0"
sentinel = {{ primary = "{SENTINEL_NAME}", nodes = [{nodes}] }}
write = "set"
key = "order:{{order_id}}"
batch_size = 100
# Replication is asynchronous: without WAIT, writes a demoted primary took
# between the promotion and its demotion are lost with it.
wait_replicas = 1
wait_timeout = "500ms"
timeout = "5s"
retry = {{ initial = "100ms", max = "1s" }}
"#,
        src = source.url(),
        nodes = nodes.join(", ")
    );
    let started = Instant::now();
    let mut ferry = Ferry::start(&config);
    let first = sentinels.primary.port;
    wait_until(Duration::from_secs(60), "a quarter of the keys", || {
        sentinels.primary.dbsize() >= N / 4
    });
    let failover = sentinels.fail_over();
    ferry.wait_success(Duration::from_secs(120));
    let now = sentinels.primary_port().unwrap();
    assert_ne!(now, first, "the sentinels promoted the replica");
    let primary = if now == sentinels.replica.port {
        &sentinels.replica
    } else {
        &sentinels.primary
    };
    let mut c = primary.conn();
    let keys: Vec<String> = (1..=N).map(|i| format!("order:{i}")).collect();
    let mut lost = 0;
    for chunk in keys.chunks(1000) {
        let got: Vec<Option<String>> = redis::cmd("MGET").arg(chunk).query(&mut c).unwrap();
        lost += got.iter().filter(|v| v.is_none()).count();
    }
    let log = ferry.log();
    println!(
        "sentinel: {N} messages, failover {failover:?}, {} retries, lost {lost}, total {:?}",
        log.matches("retrying in").count(),
        started.elapsed()
    );
    assert_eq!(lost, 0);
    assert!(log.contains("the primary changed"), "{log}");
}
