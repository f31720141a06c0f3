//! Redis Cluster: 6 private nodes (3 primaries, 3 replicas) made with
//! `redis-cli --cluster create`, and primaries failing over mid-run.
//! Each test prints its figures (messages, failover time, retries, lost,
//! doubled); run with `--nocapture` to see them.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::time::{Duration, Instant};

use support::topology::RedisCluster;
use support::*;

/// How many times ferry retried a batch, from its log.
fn retries(ferry: &Ferry) -> usize {
    ferry.log().matches("retrying in").count()
}

/// `key` -> value of every key in `keys`, read through the cluster.
fn values(cluster: &RedisCluster, keys: &[String]) -> Vec<Option<String>> {
    let mut conn = cluster.conn();
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(1000) {
        let mut pipe = redis::cluster::cluster_pipe();
        for k in chunk {
            pipe.get(k);
        }
        let got: Vec<Option<String>> = pipe.query(&mut conn).unwrap();
        out.extend(got);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cluster_sink_loses_no_key_when_a_primary_is_killed_mid_run() {
    let mut cluster = RedisCluster::start();
    const N: u64 = 100_000;
    let config = format!(
        r#"
[[pipeline]]
name = "to-cluster"
source = {{ type = "generate", count = {N}, rate = 20000 }}
[[pipeline.sink]]
type = "redis"
url = "{url}"
cluster = true
write = "set"
key = "order:{{order_id}}"
wait_replicas = 1
wait_timeout = "500ms"
timeout = "5s"
retry = {{ initial = "100ms", max = "1s" }}
"#,
        url = cluster.url()
    );
    let started = Instant::now();
    let mut ferry = Ferry::start(&config);
    wait_until(Duration::from_secs(60), "a third of the keys", || {
        cluster.dbsize() >= N / 3
    });
    // Kill the primary of one slot range; its replica takes over, and the
    // killed node comes back as the new primary's replica (so that
    // `wait_replicas = 1` can be met again on that shard).
    let victim = cluster.primaries()[0];
    let failover = cluster.kill_primary(victim);
    cluster.restart(victim);
    ferry.wait_success(Duration::from_secs(120));
    let keys: Vec<String> = (1..=N).map(|i| format!("order:{i}")).collect();
    let got = values(&cluster, &keys);
    let lost = (1..=N)
        .zip(&got)
        .filter(|(i, v)| v.as_deref() != Some(ferry::connectors::generate::order(*i).as_str()))
        .count();
    println!(
        "cluster sink: {N} messages, failover {failover:?}, {} retries, lost {lost}, total {:?}",
        retries(&ferry),
        started.elapsed()
    );
    assert_eq!(lost, 0, "keys missing or wrong after the failover");
    assert_eq!(cluster.dbsize(), N);
}

#[tokio::test(flavor = "multi_thread")]
async fn exactly_once_into_a_stream_on_a_cluster_writes_each_entry_once_across_a_failover() {
    let cluster = RedisCluster::start();
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
    let config = format!(
        r#"
[[pipeline]]
name = "once"
source = {{ type = "redis-stream", url = "{src}", streams = ["orders"], group = "g", block = "200ms", batch_size = 100, until = "end" }}
[[pipeline.sink]]
type = "redis"
url = "{url}"
cluster = true
write = "xadd"
key = "{{{{out}}}}:orders"
exactly_once = true
batch_size = 100
timeout = "5s"
retry = {{ initial = "100ms", max = "1s" }}
"#,
        src = source.url(),
        url = cluster.url()
    );
    let mut ferry = Ferry::start(&config);
    let mut out = cluster.conn();
    let xlen = |c: &mut redis::cluster::ClusterConnection| -> u64 {
        redis::cmd("XLEN").arg("{out}:orders").query(c).unwrap_or(0)
    };
    wait_until(Duration::from_secs(60), "a quarter of the entries", || {
        xlen(&mut out) >= N / 4
    });
    // The primary that owns the stream's slot hands over to its replica.
    let owner = cluster
        .primaries()
        .into_iter()
        .find(|p| {
            let node = cluster.nodes.iter().find(|n| n.port == *p).unwrap();
            redis::cmd("EXISTS")
                .arg("{out}:orders")
                .query::<u64>(&mut node.conn())
                .is_ok_and(|n| n == 1)
        })
        .expect("a primary holds the stream");
    let failover = cluster.fail_over_to(cluster.replica_of(owner));
    ferry.wait_success(Duration::from_secs(120));
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("{out}:orders")
        .arg("-")
        .arg("+")
        .query(&mut cluster.conn())
        .unwrap();
    let ids = entries.ids.iter().map(|e| {
        let payload: String = e.get("payload").expect("a payload field");
        order_id(payload.as_bytes()).expect("an order")
    });
    let tally = Tally::of(N, ids);
    println!(
        "exactly_once on a cluster: {tally}, failover {failover:?}, {} retries",
        retries(&ferry)
    );
    assert_eq!(tally.lost, 0, "{tally}");
    assert_eq!(tally.duplicated, 0, "{tally}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_keyspace_source_emits_every_keys_final_value_across_a_failover() {
    let mut cluster = RedisCluster::start();
    let sink = RedisServer::start();
    const KEYS: u64 = 2000;
    let config = format!(
        r#"
[[pipeline]]
name = "keys"
source = {{ type = "redis-keyspace", url = "{url}", cluster = true, pattern = "k:*", configure_notifications = true }}
[[pipeline.sink]]
type = "redis"
url = "{sink}"
write = "set"
key = "{{key}}"
"#,
        url = cluster.url(),
        sink = sink.url()
    );
    let ferry = Ferry::start(&config);
    wait_until(
        Duration::from_secs(30),
        "subscriptions on every primary",
        || {
            ferry
                .log()
                .matches("subscribing to a primary's keyspace")
                .count()
                >= 3
        },
    );
    let seeds: Vec<String> = cluster.nodes.iter().map(|n| n.url()).collect();
    // Writes every key, each retried until its shard takes it.
    let write_round = move |round: u64| {
        let client = redis::cluster::ClusterClientBuilder::new(seeds.clone())
            .retries(1)
            .build()
            .unwrap();
        let mut conn = client.get_connection().unwrap();
        for i in 0..KEYS {
            let set = |c: &mut redis::cluster::ClusterConnection| {
                redis::cmd("SET")
                    .arg(format!("k:{i}"))
                    .arg(format!("v{round}-{i}"))
                    .query::<()>(c)
            };
            while set(&mut conn).is_err() {
                std::thread::sleep(Duration::from_millis(20));
                if let Ok(c) = client.get_connection() {
                    conn = c;
                }
            }
        }
    };
    write_round(1);
    let victim = cluster.primaries()[1];
    // Round 2 runs through the failover: the dead shard's keys are written
    // the moment its replica takes over, before ferry (which lists the
    // primaries every second) subscribes there; only the rescan that
    // follows that subscription finds them.
    let writer = std::thread::spawn({
        let write_round = write_round.clone();
        move || write_round(2)
    });
    std::thread::sleep(Duration::from_millis(50));
    let failover = cluster.kill_primary(victim);
    writer.join().unwrap();
    cluster.restart(victim);
    let keys: Vec<String> = (0..KEYS).map(|i| format!("k:{i}")).collect();
    let finals = values(&cluster, &keys);
    let mut sink_conn = sink.conn();
    let mut missing = KEYS as usize;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let got: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut sink_conn).unwrap();
        missing = got.iter().zip(&finals).filter(|(g, f)| g != f).count();
        if missing == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "keyspace on a cluster: {KEYS} keys x 2 rounds, failover {failover:?}, final values missing {missing}"
    );
    assert_eq!(missing, 0, "{}", ferry.log());
}
