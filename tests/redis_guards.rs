//! What the Redis sink checks around a batch: replicas that confirm it
//! (`wait_replicas`) and memory left for it (`max_memory_percent`).

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::time::Duration;

use redis::Commands;
use support::*;

fn replica_of(primary: &RedisServer) -> RedisServer {
    let replica = RedisServer::start_args(&["--replicaof", "127.0.0.1", &primary.port.to_string()]);
    wait_until(Duration::from_secs(20), "the replica to sync", || {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut replica.conn())
            .unwrap();
        info.contains("master_link_status:up")
    });
    replica
}

fn orders_to(url: &str, start: u64, count: u64, extra: &str) -> String {
    format!(
        r#"
[[pipeline]]
name = "acked"
source = {{ type = "generate", count = {count}, start_id = {start} }}
[[pipeline.sink]]
type = "redis"
url = "{url}"
write = "set"
key = "order:{{order_id}}"
wait_replicas = 1
wait_timeout = "300ms"
retry = {{ initial = "100ms", max = "500ms" }}
{extra}
"#
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn wait_replicas_confirms_with_a_replica_and_fails_or_retries_without_one() {
    let primary = RedisServer::start();
    let mut replica = replica_of(&primary);
    let dead = RedisServer::start();
    let dead_letter = format!(
        "replicas_missing = \"fail\"\n[pipeline.dead_letter]\ntype = \"redis\"\nurl = \"{}\"\nwrite = \"xadd\"\nkey = \"dead\"",
        dead.url()
    );
    // With the replica attached: every write confirmed, and on the replica.
    let mut ferry = Ferry::start(&orders_to(&primary.url(), 1, 200, &dead_letter));
    ferry.wait_success(Duration::from_secs(30));
    assert_eq!(primary.dbsize(), 200);
    wait_until(Duration::from_secs(5), "the replica to have them", || {
        replica.dbsize() == 200
    });
    assert!(
        !ferry.log().contains("replicas asked for"),
        "{}",
        ferry.log()
    );

    // Replica stopped, `replicas_missing = "fail"`: the messages are
    // written but not confirmed, so they go to the dead-letter sink.
    replica.stop();
    let mut ferry = Ferry::start(&orders_to(&primary.url(), 1000, 50, &dead_letter));
    ferry.wait_success(Duration::from_secs(30));
    let dead_letters: u64 = dead.conn().xlen("dead").unwrap();
    assert_eq!(dead_letters, 50, "{}", ferry.log());
    let first: redis::streams::StreamRangeReply =
        dead.conn().xrange_count("dead", "-", "+", 1).unwrap();
    let fields = format!("{:?}", first.ids[0].map);
    assert!(fields.contains("replicas asked for"), "{fields}");

    // `retry` (the default): the batch is written again until a replica
    // confirms it, then ferry finishes.
    let mut ferry = Ferry::start(&orders_to(&primary.url(), 2000, 50, ""));
    wait_until(Duration::from_secs(20), "a shortfall retried", || {
        ferry
            .log()
            .contains("replicas asked for (`wait_replicas`) confirmed the batch")
    });
    assert!(
        ferry.wait_timeout(Duration::from_millis(500)).is_none(),
        "finished without a replica"
    );
    replica.restart();
    ferry.wait_success(Duration::from_secs(60));
    for id in 2000..2050 {
        assert!(primary.get(&format!("order:{id}")).is_some(), "order {id}");
    }
    println!(
        "wait_replicas: 200 confirmed with a replica; 50 failed to the dead letters without; \
         retry mode: {} retries until the replica came back",
        ferry.log().matches("retrying in").count()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_nearly_full_redis_pauses_the_sink_until_memory_frees_and_nothing_is_lost() {
    let redis =
        RedisServer::start_args(&["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]);
    // About 15 MB of orders: far more than the 4 MB Redis may hold.
    const N: u64 = 100_000;
    let port = free_port();
    let config = format!(
        r#"
[[pipeline]]
name = "fill"
source = {{ type = "generate", count = {N} }}
[[pipeline.sink]]
name = "queue"
type = "redis"
url = "{url}"
write = "rpush"
key = "orders"
batch_size = 100
max_memory_percent = 70
retry = {{ initial = "50ms", max = "200ms" }}
"#,
        url = redis.url()
    );
    let mut ferry = Ferry::start_with(&config, &["--http", &format!("127.0.0.1:{port}")]);
    // The list grows until Redis is 70% full; then ferry pauses.
    wait_until(Duration::from_secs(30), "the pause", || {
        let log = ferry.log();
        assert!(
            !log.contains("pipeline stopped"),
            "finished without a pause: {log}"
        );
        log.contains("writing paused")
    });
    let (status, ready) = http_get(port, "/ready").unwrap();
    assert!(ready.contains("maxmemory"), "/ready: {status} {ready}");
    let (_, metrics) = http_get(port, "/metrics").unwrap();
    assert!(metrics.contains("ferry_redis_memory_paused{"), "{metrics}");
    // A consumer takes elements off the list: memory frees, ferry resumes.
    let mut conn = redis.conn();
    let mut ids = Vec::new();
    let drain = |conn: &mut redis::Connection, ids: &mut Vec<u64>| {
        let got: Option<Vec<Vec<u8>>> = redis::cmd("LPOP")
            .arg("orders")
            .arg(1000)
            .query(conn)
            .unwrap();
        let got = got.unwrap_or_default();
        ids.extend(got.iter().map(|p| order_id(p).unwrap()));
        got.len()
    };
    while ferry.wait_timeout(Duration::from_millis(50)).is_none() {
        drain(&mut conn, &mut ids);
    }
    while drain(&mut conn, &mut ids) > 0 {}
    let log = ferry.log();
    let tally = Tally::of(N, ids);
    println!(
        "memory: {tally}, {} pauses, {} OOM replies",
        log.matches("writing paused").count(),
        log.matches("OOM").count()
    );
    assert!(log.contains("writing resumes"), "{log}");
    assert_eq!(tally.lost, 0, "{tally}");
}
