//! The examples that read Redis: two-way sync, keyspace changes to Kafka and
//! to RabbitMQ, a stream to Kafka.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn two_way_sync_carries_each_change_across_once_and_both_sides_end_equal() {
    let redis = RedisServer::start();
    let tansu = TansuServer::start();
    let brokers = tansu.brokers();
    let mut ferry = run_example(
        "two-way-sync-redis-kafka.toml",
        Addresses {
            kafka: Some(brokers.clone()),
            redis: Some(redis.url()),
            ..Addresses::default()
        },
    );
    wait_until(TIMEOUT, "both pipelines", || {
        let log = ferry.log();
        log.matches("pipeline running").count() == 2 && log.contains("kafka partitions assigned")
    });
    let last = |key: &str| -> Option<Record> {
        read_records(&brokers, "config")
            .into_iter()
            .rev()
            .find(|r| r.key_str() == key)
    };
    // A change in Redis goes to Kafka.
    redis_cmd::<()>(&redis, &["SET", "config:timeout", "30"]);
    wait_until(TIMEOUT, "config:timeout in Kafka", || {
        last("config:timeout").is_some_and(|r| r.value_str() == Some("30"))
    });
    // A change in Kafka goes to Redis.
    produce_records(&brokers, "config", &[Record::new("config:limit", b"100")]).await;
    wait_until(TIMEOUT, "config:limit in Redis", || {
        redis.get("config:limit").as_deref() == Some("100")
    });
    // Quiet: each change crossed once, nothing came back.
    std::thread::sleep(Duration::from_secs(3));
    let records = read_records(&brokers, "config");
    ferry.stop(TIMEOUT);
    let keys: Vec<&str> = records.iter().map(Record::key_str).collect();
    assert_eq!(
        keys,
        ["config:timeout", "config:limit"],
        "no echo into Kafka"
    );
    assert_eq!(
        redis.calls("set"),
        2,
        "the application's SET and ferry's, no echo into Redis"
    );
    assert_eq!(
        records[0].header_str("ferry.origin"),
        Some("site-a"),
        "ferry's record carries its origin"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_keyspace_to_kafka_publishes_user_changes_keyed_by_the_redis_key_and_deletions_as_tombstones()
 {
    let redis = RedisServer::start();
    let tansu = TansuServer::start();
    let brokers = tansu.brokers();
    // A user that exists before ferry starts comes from the snapshot.
    redis_cmd::<()>(&redis, &["SET", "user:1", r#"{"name":"Grace"}"#]);

    let mut ferry = run_example(
        "redis-keyspace-to-kafka.toml",
        Addresses {
            kafka: Some(brokers.clone()),
            redis: Some(redis.url()),
            ..Addresses::default()
        },
    );
    let mut records = Vec::new();
    let mut wait_for = |what: &str, found: &dyn Fn(&[Record]) -> bool| {
        wait_until(TIMEOUT, what, || {
            records = read_records(&brokers, "user-changes");
            found(&records)
        });
    };
    let last = |records: &[Record], key: &str| -> Option<Record> {
        records.iter().rev().find(|r| r.key_str() == key).cloned()
    };

    wait_for("the snapshot of user:1", &|rs| last(rs, "user:1").is_some());
    redis_cmd::<()>(&redis, &["SET", "other:1", "not a user"]);
    // One change at a time, each awaited, so that no two are read as one.
    redis_cmd::<()>(&redis, &["SET", "user:42", r#"{"name":"Ada"}"#]);
    wait_for("user:42", &|rs| last(rs, "user:42").is_some());
    redis_cmd::<()>(&redis, &["HSET", "user:7", "name", "Bob"]);
    wait_for("user:7", &|rs| last(rs, "user:7").is_some());
    redis_cmd::<()>(&redis, &["DEL", "user:42"]);
    wait_for("the tombstone of user:42", &|rs| {
        last(rs, "user:42").is_some_and(|r| r.value.is_none())
    });
    ferry.stop(TIMEOUT);

    let records = read_records(&brokers, "user-changes");
    /// Key, value, `redis.event` and `redis.type` of a record.
    type Change<'a> = (&'a str, Option<&'a str>, Option<&'a str>, Option<&'a str>);
    let summary: Vec<Change> = records
        .iter()
        .map(|r| {
            (
                r.key_str(),
                r.value_str(),
                r.header_str("redis.event"),
                r.header_str("redis.type"),
            )
        })
        .collect();
    let of = |key: &str| -> Vec<_> { summary.iter().filter(|s| s.0 == key).cloned().collect() };
    assert_eq!(
        of("user:1"),
        [(
            "user:1",
            Some(r#"{"name":"Grace"}"#),
            Some("snapshot"),
            Some("string")
        )]
    );
    assert_eq!(
        of("user:42"),
        [
            (
                "user:42",
                Some(r#"{"name":"Ada"}"#),
                Some("set"),
                Some("string")
            ),
            ("user:42", None, Some("del"), Some("none")),
        ],
        "the value, then a tombstone"
    );
    assert_eq!(
        of("user:7"),
        [(
            "user:7",
            Some(r#"{"name":"Bob"}"#),
            Some("hset"),
            Some("hash")
        )]
    );
    assert_eq!(records.len(), 4, "only user:* keys: {summary:?}");
    for r in &records {
        assert_eq!(
            r.headers
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>(),
            ["redis.event", "redis.type", "ferry.hops"],
            "{r:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_keyspace_to_rabbitmq_routes_user_changes_by_event_with_the_redis_key_in_a_header() {
    let redis = RedisServer::start();
    let vhost = RabbitVhost::create();
    let queue = "user-changes.search-indexer";
    let mut ferry = run_example(
        "redis-keyspace-to-rabbitmq.toml",
        Addresses {
            redis: Some(redis.url()),
            amqp: Some(vhost.url()),
            ..Addresses::default()
        },
    );
    let mut got = Vec::new();
    let has = |got: &[Delivery], key: &str, routing_key: &str| {
        got.iter()
            .any(|d| d.header("ferry.key") == Some(key) && d.routing_key == routing_key)
    };
    redis_cmd::<()>(&redis, &["SET", "other:1", "not a user"]);
    redis_cmd::<()>(&redis, &["SET", "user:42", r#"{"name":"Ada"}"#]);
    got.extend(
        take_until(&vhost, queue, "user:42 set", |g| {
            has(g, "user:42", "user.set")
        })
        .await,
    );
    redis_cmd::<()>(&redis, &["HSET", "user:7", "name", "Bob"]);
    got.extend(
        take_until(&vhost, queue, "user:7 hset", |g| {
            has(g, "user:7", "user.hset")
        })
        .await,
    );
    redis_cmd::<()>(&redis, &["DEL", "user:42"]);
    got.extend(
        take_until(&vhost, queue, "user:42 del", |g| {
            has(g, "user:42", "user.del")
        })
        .await,
    );
    ferry.stop(TIMEOUT);
    got.extend(take_all(&vhost, queue).await);

    let seen: Vec<(&str, &str, &str, BTreeMap<String, String>)> = got
        .iter()
        .map(|d| {
            (
                d.header("ferry.key").unwrap(),
                d.routing_key.as_str(),
                d.body_str(),
                d.headers.clone(),
            )
        })
        .collect();
    let headers = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    assert_eq!(
        seen,
        [
            (
                "user:42",
                "user.set",
                r#"{"name":"Ada"}"#,
                headers(&[
                    ("ferry.hops", "1"),
                    ("ferry.key", "user:42"),
                    ("redis.event", "set"),
                    ("redis.type", "string")
                ])
            ),
            (
                "user:7",
                "user.hset",
                r#"{"name":"Bob"}"#,
                headers(&[
                    ("ferry.hops", "1"),
                    ("ferry.key", "user:7"),
                    ("redis.event", "hset"),
                    ("redis.type", "hash")
                ])
            ),
            (
                "user:42",
                "user.del",
                "",
                headers(&[
                    ("ferry.hops", "1"),
                    ("ferry.key", "user:42"),
                    ("ferry.tombstone", "true"),
                    ("redis.event", "del"),
                    ("redis.type", "none")
                ])
            ),
        ],
        "a deletion is an empty body marked ferry.tombstone; other:1 is not published"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_stream_to_kafka_forwards_entries_keyed_by_user_then_acknowledges_and_trims_them() {
    let redis = RedisServer::start();
    let tansu = TansuServer::start();
    let brokers = tansu.brokers();
    // Entries already in the stream when the group is created are read too.
    redis_cmd::<String>(
        &redis,
        &[
            "XADD", "activity", "*", "user_id", "42", "action", "login", "ip", "10.0.0.7",
        ],
    );
    redis_cmd::<String>(
        &redis,
        &["XADD", "activity", "*", "user_id", "7", "action", "logout"],
    );
    redis_cmd::<String>(&redis, &["XADD", "activity", "*", "action", "ping"]);
    let mut ferry = run_example(
        "redis-stream-to-kafka.toml",
        Addresses {
            kafka: Some(brokers.clone()),
            redis: Some(redis.url()),
            ..Addresses::default()
        },
    );
    redis_cmd::<String>(
        &redis,
        &[
            "XADD", "activity", "*", "user_id", "42", "action", "purchase",
        ],
    );
    let mut records = Vec::new();
    wait_until(TIMEOUT, "three records and a dead letter", || {
        records = read_records(&brokers, "user-activity");
        records.len() >= 3 && redis_cmd::<u64>(&redis, &["XLEN", "dead-letters:activity"]) == 1
    });
    wait_until(TIMEOUT, "the acknowledged entries to be trimmed", || {
        redis_cmd::<u64>(&redis, &["XLEN", "activity"]) == 0
    });
    ferry.stop(TIMEOUT);

    let records = read_records(&brokers, "user-activity");
    let of = |key: &str| -> Vec<&str> {
        records
            .iter()
            .filter(|r| r.key_str() == key)
            .map(|r| r.value_str().unwrap())
            .collect()
    };
    assert_eq!(
        of("42"),
        [
            r#"{"user_id":"42","action":"login","ip":"10.0.0.7"}"#,
            r#"{"user_id":"42","action":"purchase"}"#,
        ],
        "one user's events in order"
    );
    assert_eq!(of("7"), [r#"{"user_id":"7","action":"logout"}"#]);
    assert_eq!(records.len(), 3);
    assert!(
        records
            .iter()
            .all(|r| r.headers == [("ferry.hops".to_owned(), Some(b"1".to_vec()))]),
        "only ferry's hop count: {records:?}"
    );
    let dead = xrange(&redis, "dead-letters:activity");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["payload"], r#"{"action":"ping"}"#);
    assert!(
        dead[0]["header.ferry.error"].contains("user_id"),
        "{:?}",
        dead[0]
    );
    let pending: redis::Value =
        redis_cmd(&redis, &["XPENDING", "activity", "ferry-activity-to-kafka"]);
    assert!(
        matches!(&pending, redis::Value::Array(v) if v.first() == Some(&redis::Value::Int(0))),
        "nothing left pending: {pending:?}"
    );
}
