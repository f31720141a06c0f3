//! Redis sources reading a Redis Cluster: a list and a stream read from the
//! node that owns them across a failover of that node, and pub/sub.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::time::Duration;

use support::topology::RedisCluster;
use support::*;

/// The primary that holds `key`.
fn owner(cluster: &RedisCluster, key: &str) -> u16 {
    cluster
        .primaries()
        .into_iter()
        .find(|p| {
            let node = cluster.nodes.iter().find(|n| n.port == *p).unwrap();
            redis::cmd("EXISTS")
                .arg(key)
                .query::<u64>(&mut node.conn())
                .is_ok_and(|n| n == 1)
        })
        .expect("a primary holds the key")
}

fn run_across_a_failover(
    cluster: &RedisCluster,
    sink: &RedisServer,
    source: &str,
    key: &str,
    n: u64,
) {
    let config = format!(
        r#"
[[pipeline]]
name = "from-cluster"
source = {source}
[[pipeline.sink]]
type = "redis"
url = "{sink}"
write = "rpush"
key = "out"
batch_size = 100
"#,
        sink = sink.url()
    );
    let mut ferry = Ferry::start(&config);
    let len =
        |s: &RedisServer| -> u64 { redis::cmd("LLEN").arg("out").query(&mut s.conn()).unwrap() };
    wait_until(Duration::from_secs(60), "a quarter", || len(sink) >= n / 4);
    let failover = cluster.fail_over_to(cluster.replica_of(owner(cluster, key)));
    ferry.wait_success(Duration::from_secs(120));
    let tally = Tally::of(n, order_ids_in_list(&mut sink.conn(), "out"));
    println!(
        "{key} on a cluster: {tally}, failover {failover:?}, {} retries",
        ferry.log().matches("retrying in").count()
    );
    assert_eq!(tally.lost, 0, "{tally}\n{}", ferry.log());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_list_source_reads_the_owning_node_across_a_failover() {
    let cluster = RedisCluster::start();
    let sink = RedisServer::start();
    const N: u64 = 20_000;
    let mut conn = cluster.conn();
    for chunk in (1..=N).collect::<Vec<_>>().chunks(1000) {
        let payloads: Vec<String> = chunk
            .iter()
            .map(|i| ferry::connectors::generate::order(*i))
            .collect();
        let _: () = redis::cmd("LPUSH")
            .arg("jobs")
            .arg(payloads)
            .query(&mut conn)
            .unwrap();
    }
    let source = format!(
        r#"{{ type = "redis-list", url = "{}", cluster = true, list = "jobs", consumer = "c1", block = "200ms", batch_size = 100, until = "end" }}"#,
        cluster.url()
    );
    run_across_a_failover(&cluster, &sink, &source, "jobs", N);
    // The processing list shares the list's slot: `{jobs}:processing:c1`.
    let left: u64 = redis::cmd("LLEN")
        .arg("{jobs}:processing:c1")
        .query(&mut cluster.conn())
        .unwrap();
    assert_eq!(left, 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_source_reads_the_owning_node_across_a_failover() {
    let cluster = RedisCluster::start();
    let sink = RedisServer::start();
    const N: u64 = 20_000;
    let mut conn = cluster.conn();
    for chunk in (1..=N).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::cluster::cluster_pipe();
        for i in chunk {
            pipe.cmd("XADD")
                .arg("events")
                .arg("*")
                .arg("payload")
                .arg(ferry::connectors::generate::order(*i));
        }
        let _: () = pipe.query(&mut conn).unwrap();
    }
    let source = format!(
        r#"{{ type = "redis-stream", url = "{}", cluster = true, streams = ["events"], group = "g", block = "200ms", batch_size = 100, until = "end" }}"#,
        cluster.url()
    );
    run_across_a_failover(&cluster, &sink, &source, "events", N);
}

#[tokio::test(flavor = "multi_thread")]
async fn pubsub_on_a_cluster_hears_messages_published_on_any_node() {
    let cluster = RedisCluster::start();
    let sink = RedisServer::start();
    let config = format!(
        r#"
[[pipeline]]
name = "heard"
source = {{ type = "redis-pubsub", url = "{url}", cluster = true, channels = ["news"] }}
[[pipeline.sink]]
type = "redis"
url = "{sink}"
write = "rpush"
key = "out"
"#,
        url = cluster.url(),
        sink = sink.url()
    );
    let ferry = Ferry::start(&config);
    wait_until(Duration::from_secs(20), "subscribed", || {
        ferry.log().contains("subscribed")
    });
    // Published on every node in turn: each reaches the subscription.
    let mut sent = 0u64;
    for node in &cluster.nodes {
        for _ in 0..10 {
            sent += 1;
            let _: u64 = redis::cmd("PUBLISH")
                .arg("news")
                .arg(ferry::connectors::generate::order(sent))
                .query(&mut node.conn())
                .unwrap();
        }
    }
    wait_until(Duration::from_secs(20), "every message", || {
        redis::cmd("LLEN")
            .arg("out")
            .query::<u64>(&mut sink.conn())
            .unwrap()
            == sent
    });
}

#[tokio::test(flavor = "multi_thread")]
async fn sharded_pubsub_reads_the_owning_shard_and_follows_its_failover() {
    let cluster = RedisCluster::start();
    let sink = RedisServer::start();
    let config = format!(
        r#"
[[pipeline]]
name = "sharded"
source = {{ type = "redis-pubsub", url = "{url}", cluster = true, shard_channels = ["alerts"] }}
[[pipeline.sink]]
type = "redis"
url = "{sink}"
write = "rpush"
key = "out"
"#,
        url = cluster.url(),
        sink = sink.url()
    );
    let ferry = Ferry::start(&config);
    wait_until(Duration::from_secs(20), "subscribed", || {
        ferry.log().contains("sharded pub/sub subscribed")
    });
    let received = || {
        redis::cmd("LLEN")
            .arg("out")
            .query::<u64>(&mut sink.conn())
            .unwrap()
    };
    let mut conn = cluster.conn();
    let mut sent = 0u64;
    let mut spublish = |conn: &mut redis::cluster::ClusterConnection| {
        sent += 1;
        let _: redis::RedisResult<u64> = redis::cmd("SPUBLISH")
            .arg("alerts")
            .arg(ferry::connectors::generate::order(sent))
            .query(conn);
    };
    for _ in 0..10 {
        spublish(&mut conn);
    }
    wait_until(Duration::from_secs(20), "the first 10", || received() == 10);
    // The shard that owns `alerts` fails over; the subscription follows.
    let owner = {
        let slot: u64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg("alerts")
            .query(&mut conn)
            .unwrap();
        let slots: Vec<redis::Value> = redis::cmd("CLUSTER").arg("SLOTS").query(&mut conn).unwrap();
        slots
            .iter()
            .find_map(|r| {
                let redis::Value::Array(r) = r else {
                    return None;
                };
                let (redis::Value::Int(a), redis::Value::Int(b), redis::Value::Array(n)) =
                    (&r[0], &r[1], &r[2])
                else {
                    return None;
                };
                let redis::Value::Int(port) = n[1] else {
                    return None;
                };
                (*a as u64 <= slot && slot <= *b as u64).then_some(port as u16)
            })
            .unwrap()
    };
    let failover = cluster.fail_over_to(cluster.replica_of(owner));
    let mut conn = cluster.conn();
    let before = received();
    wait_until(
        Duration::from_secs(30),
        "a message after the failover",
        || {
            spublish(&mut conn);
            std::thread::sleep(Duration::from_millis(100));
            received() > before
        },
    );
    println!("sharded pub/sub: failover {failover:?}, heard again after it");
}
