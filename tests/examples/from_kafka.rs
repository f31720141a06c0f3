//! The examples that read Kafka: into Redis hashes, a backfill into a
//! stream, routed into RabbitMQ queues.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn kafka_to_redis_hash_keeps_the_latest_version_of_each_order_as_a_hash_and_sets_bad_records_aside()
 {
    let tansu = TansuServer::start();
    let brokers = tansu.brokers();
    create_topic_at(&brokers, "orders", 3).await;
    let redis = RedisServer::start();
    produce_records(
        &brokers,
        "orders",
        &[
            Record::new(
                "1001",
                br#"{"order_id":1001,"customer_id":"c-7","amount":59.9,"status":"new","coupon":"SPRING","items":[{"sku":"A-1","qty":2}],"note":null}"#,
            ),
            Record::new(
                "1002",
                br#"{"order_id":1002,"customer_id":"c-9","amount":12,"status":"paid","gift":true}"#,
            ),
            Record::new("oops", b"this is not json"),
            // The same key, so the same partition: read after the first version.
            Record::new(
                "1001",
                br#"{"order_id":1001,"customer_id":"c-7","amount":59.9,"status":"paid","items":[{"sku":"A-1","qty":2}]}"#,
            ),
        ],
    )
    .await;

    let mut ferry = run_example(
        "kafka-to-redis-hash.toml",
        Addresses {
            kafka: Some(brokers.clone()),
            redis: Some(redis.url()),
            ..Addresses::default()
        },
    );
    wait_until(TIMEOUT, "every order and the bad record", || {
        hgetall(&redis, "order:1001")
            .get("status")
            .map(String::as_str)
            == Some("paid")
            && !hgetall(&redis, "order:1002").is_empty()
            && redis_cmd::<u64>(&redis, &["XLEN", "dead-letters:orders"]) == 1
    });
    ferry.stop(TIMEOUT);

    let expected = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    assert_eq!(
        hgetall(&redis, "order:1001"),
        expected(&[
            ("order_id", "1001"),
            ("customer_id", "c-7"),
            ("amount", "59.9"),
            ("status", "paid"),
            ("items", r#"[{"sku":"A-1","qty":2}]"#),
        ]),
        "the latest version only: no `coupon` left from the first, no null `note`"
    );
    assert_eq!(
        hgetall(&redis, "order:1002"),
        expected(&[
            ("order_id", "1002"),
            ("customer_id", "c-9"),
            ("amount", "12"),
            ("status", "paid"),
            ("gift", "true"),
        ])
    );
    for key in ["order:1001", "order:1002"] {
        let ttl: i64 = redis_cmd(&redis, &["PTTL", key]);
        assert!(
            ttl > 719 * 3_600_000 && ttl <= 720 * 3_600_000,
            "{key} expires in 30 days: {ttl} ms"
        );
    }
    let dead = xrange(&redis, "dead-letters:orders");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["payload"], "this is not json");
    assert_eq!(dead[0]["key"], "oops");
    assert!(
        dead[0]["header.ferry.error"].contains("JSON"),
        "{:?}",
        dead[0]
    );
    assert_eq!(dead[0]["header.ferry.pipeline"], "orders-to-redis-hash");
    assert_eq!(redis_cmd::<u64>(&redis, &["DBSIZE"]), 3);
    assert_committed_to_the_end(&brokers, "ferry-orders-to-redis-hash", "orders", 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_backfill_to_redis_stream_copies_the_history_once_and_stops() {
    let tansu = TansuServer::start();
    let brokers = tansu.brokers();
    create_topic_at(&brokers, "orders", 3).await;
    let redis = RedisServer::start();
    let orders = |ids: std::ops::RangeInclusive<u64>| -> Vec<Record> {
        ids.map(|n| {
            Record::new(
                &n.to_string(),
                ferry::connectors::generate::order(n).as_bytes(),
            )
        })
        .collect()
    };
    produce_records(&brokers, "orders", &orders(1..=300)).await;
    let addresses = || Addresses {
        kafka: Some(brokers.clone()),
        redis: Some(redis.url()),
        ..Addresses::default()
    };

    let mut ferry = run_example("kafka-backfill-to-redis-stream.toml", addresses());
    ferry.wait_success(TIMEOUT);
    assert!(
        ferry.log().contains("a job of 300 messages"),
        "{}",
        ferry.log()
    );
    let history = xrange(&redis, "orders:history");
    assert_eq!(history.len(), 300);
    let first = history.iter().find(|e| e["key"] == "1").unwrap();
    assert_eq!(first["payload"], ferry::connectors::generate::order(1));
    // Positions are kept per partition.
    let positions: Vec<String> = redis_cmd(
        &redis,
        &[
            "KEYS",
            "ferry:positions:orders-backfill:orders:history:kafka:orders/*",
        ],
    );
    assert_eq!(positions.len(), 3, "{positions:?}");

    // Run again after more orders: only the new ones are copied.
    produce_records(&brokers, "orders", &orders(301..=350)).await;
    let mut again = run_example("kafka-backfill-to-redis-stream.toml", addresses());
    again.wait_success(TIMEOUT);
    assert!(
        again.log().contains("a job of 50 messages"),
        "{}",
        again.log()
    );
    assert_eq!(xrange(&redis, "orders:history").len(), 350);
    assert_committed_to_the_end(&brokers, "ferry-orders-backfill", "orders", 3);
}

#[tokio::test(flavor = "multi_thread")]
async fn kafka_to_rabbitmq_routes_orders_by_status_to_the_bound_queues_and_parks_unroutable_records()
 {
    let tansu = TansuServer::start();
    let brokers = tansu.brokers();
    create_topic_at(&brokers, "orders", 3).await;
    let vhost = RabbitVhost::create();
    let order = |id: u32, status: &str| {
        Record::new(
            &id.to_string(),
            format!(r#"{{"order_id":{id},"customer_id":"c-{id}","status":"{status}"}}"#).as_bytes(),
        )
    };
    produce_records(
        &brokers,
        "orders",
        &[
            order(1, "new"),
            order(2, "paid").header("trace-id", Some(b"t-2")),
            order(3, "cancelled"),
            order(4, "paid"),
            Record::new("oops", b"this is not json"),
        ],
    )
    .await;

    let mut ferry = run_example(
        "kafka-to-rabbitmq.toml",
        Addresses {
            kafka: Some(brokers.clone()),
            amqp: Some(vhost.url()),
            ..Addresses::default()
        },
    );
    let audit = take_until(&vhost, "orders.audit", "4 orders", |g| g.len() >= 4).await;
    let fulfilment = take_until(&vhost, "orders.fulfilment", "2 paid orders", |g| {
        g.len() >= 2
    })
    .await;
    let dead = take_until(&vhost, "orders.dead-letter", "the bad record", |g| {
        !g.is_empty()
    })
    .await;
    ferry.stop(TIMEOUT);

    let mut audit: Vec<(&str, &str)> = audit
        .iter()
        .map(|d| (d.header("ferry.key").unwrap(), d.routing_key.as_str()))
        .collect();
    audit.sort();
    assert_eq!(
        audit,
        [
            ("1", "order.new"),
            ("2", "order.paid"),
            ("3", "order.cancelled"),
            ("4", "order.paid")
        ]
    );
    let mut paid: Vec<(&str, &str, Option<&str>)> = fulfilment
        .iter()
        .map(|d| {
            (
                d.header("ferry.key").unwrap(),
                d.body_str(),
                d.header("trace-id"),
            )
        })
        .collect();
    paid.sort();
    assert_eq!(
        paid,
        [
            (
                "2",
                r#"{"order_id":2,"customer_id":"c-2","status":"paid"}"#,
                Some("t-2")
            ),
            (
                "4",
                r#"{"order_id":4,"customer_id":"c-4","status":"paid"}"#,
                None
            ),
        ],
        "only paid orders, with the Kafka key and headers"
    );
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].body_str(), "this is not json");
    assert_eq!(dead[0].header("ferry.key"), Some("oops"));
    assert!(
        dead[0].header("ferry.error").unwrap().contains("JSON"),
        "{:?}",
        dead[0]
    );
    assert_eq!(dead[0].header("ferry.pipeline"), Some("orders-to-rabbitmq"));
    for q in ["orders.audit", "orders.fulfilment", "orders.dead-letter"] {
        assert_eq!(vhost.queue_len(q).await, 0, "{q}: nothing published twice");
    }
    assert_committed_to_the_end(&brokers, "ferry-orders-to-rabbitmq", "orders", 3);
}
