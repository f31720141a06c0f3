//! The examples that write to Redis as production runs it: a Redis Cluster
//! (`redis-cluster-orders.toml`) and a primary behind Sentinel
//! (`redis-sentinel-sessions.toml`), made of private servers.

use super::*;

/// Adds `orders` to `stream` as the order service does.
fn add_orders(redis: &RedisServer, stream: &str, field: &str, ids: std::ops::RangeInclusive<u64>) {
    let mut conn = redis.conn();
    for id in ids {
        let _: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("payload")
            .arg(format!(
                r#"{{"{field}": "{id}", "user": "u-{id}", "status": "paid"}}"#
            ))
            .query(&mut conn)
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_cluster_orders_spreads_hashes_over_the_shards_and_audits_each_order_once() {
    let cluster = support::topology::RedisCluster::start();
    let redis = RedisServer::start();
    add_orders(&redis, "orders", "order_id", 1..=300);
    let mut example = run_example(
        "redis-cluster-orders.toml",
        Addresses {
            redis: Some(redis.url()),
            redis_cluster: Some(cluster.url()),
            ..Addresses::default()
        },
    );
    let mut conn = cluster.conn();
    let start = Instant::now();
    while redis::cmd("XLEN")
        .arg("{audit}:orders")
        .query::<u64>(&mut conn)
        .unwrap_or(0)
        < 300
        || cluster.dbsize() < 302
    {
        assert!(
            start.elapsed() < TIMEOUT,
            "not all written:\n{}",
            example.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    example.stop(TIMEOUT);
    let status: String = redis::cmd("HGET")
        .arg("order:17")
        .arg("status")
        .query(&mut conn)
        .unwrap();
    assert_eq!(status, "paid");
    // 300 hashes, the audit stream and its positions: spread over every primary.
    assert_eq!(cluster.dbsize(), 302);
    for port in cluster.primaries() {
        let node = cluster.nodes.iter().find(|n| n.port == port).unwrap();
        assert!(node.dbsize() > 50, "a shard holds too few orders");
    }
    let audit: u64 = redis::cmd("XLEN")
        .arg("{audit}:orders")
        .query(&mut conn)
        .unwrap();
    assert_eq!(audit, 300);
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_sentinel_sessions_writes_to_the_primary_the_sentinels_name() {
    let sentinels = support::topology::RedisSentinels::start();
    let redis = RedisServer::start();
    add_orders(&redis, "sessions", "session_id", 1..=100);
    let mut example = run_example(
        "redis-sentinel-sessions.toml",
        Addresses {
            redis: Some(redis.url()),
            redis_sentinel: Some(sentinels.urls()[0].clone()),
            ..Addresses::default()
        },
    );
    let start = Instant::now();
    while sentinels.primary.dbsize() < 100 {
        assert!(
            start.elapsed() < TIMEOUT,
            "not all written:\n{}",
            example.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    example.stop(TIMEOUT);
    let ttl: i64 = redis::cmd("TTL")
        .arg("session:7")
        .query(&mut sentinels.primary.conn())
        .unwrap();
    assert!(ttl > 3600, "ttl {ttl}");
    // Written on the primary, and (wait_replicas = 1) on its replica.
    assert_eq!(sentinels.replica.dbsize(), 100);
}
