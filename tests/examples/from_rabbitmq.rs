//! The example that reads RabbitMQ: sessions cached in Redis.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn rabbitmq_to_redis_caches_sessions_with_an_expiry_and_dead_letters_what_it_cannot_cache() {
    let vhost = RabbitVhost::create();
    let redis = RedisServer::start();
    let queue = "sessions.redis-cache";
    let mut ferry = run_example(
        "rabbitmq-to-redis.toml",
        Addresses {
            redis: Some(redis.url()),
            amqp: Some(vhost.url()),
            ..Addresses::default()
        },
    );
    // ferry declared the exchange, the queue and the binding.
    let s1 = r#"{"session_id":"s-1","user_id":42,"roles":["admin"]}"#;
    let s1_refreshed = r#"{"session_id":"s-1","user_id":42,"roles":["admin","billing"]}"#;
    let s2 = r#"{"session_id":"s-2","user_id":7,"roles":[]}"#;
    vhost
        .publish_to(
            "auth",
            &[
                ("session.created", s1),
                ("session.created", s2),
                ("session.created", "garbage"),
                ("session.refreshed", s1_refreshed),
            ],
        )
        .await;
    wait_until(TIMEOUT, "both sessions and the dead letter", || {
        redis.get("session:s-1").as_deref() == Some(s1_refreshed)
            && redis.get("session:s-2").is_some()
            && redis_cmd::<u64>(&redis, &["XLEN", "dead-letters:sessions.redis-cache"]) == 1
    });
    ferry.stop(TIMEOUT);

    assert_eq!(redis.get("session:s-2").as_deref(), Some(s2));
    for key in ["session:s-1", "session:s-2"] {
        let ttl: i64 = redis_cmd(&redis, &["PTTL", key]);
        assert!(
            ttl > 0 && ttl <= 30 * 60_000,
            "{key} expires within 30 minutes: {ttl} ms"
        );
    }
    let dead = xrange(&redis, "dead-letters:sessions.redis-cache");
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["payload"], "garbage");
    assert!(
        dead[0]["header.ferry.error"].contains("JSON"),
        "{:?}",
        dead[0]
    );
    assert!(
        dead[0]["header.ferry.source"]
            .contains("queue=sessions.redis-cache exchange=auth routing_key=session.created"),
        "{:?}",
        dead[0]
    );
    assert_eq!(redis_cmd::<u64>(&redis, &["DBSIZE"]), 3);
    assert_eq!(
        vhost.queue_len(queue).await,
        0,
        "every message was acknowledged, the bad one too"
    );
}
