//! Every Redis write mode against a real Redis, fed by ferry's generator.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::collections::HashMap;
use std::time::Duration;

use ferry::connectors::generate::order;
use support::*;

/// Runs `count` generated orders into a Redis sink with `settings`.
fn run(redis: &RedisServer, count: u64, settings: &str) {
    let config = format!(
        "[[pipeline]]\nname = \"t\"\nsource = {{ type = \"generate\", count = {count} }}\n[[pipeline.sink]]\ntype = \"redis\"\nurl = \"{}\"\n{settings}\n",
        redis.url()
    );
    Ferry::start(&config).wait_success(Duration::from_secs(60));
}

fn q<T: redis::FromRedisValue>(redis: &RedisServer, args: &[&str]) -> T {
    let mut c = redis::cmd(args[0]);
    for a in &args[1..] {
        c.arg(*a);
    }
    c.query(&mut redis.conn()).unwrap()
}

#[test]
fn set_with_ttl_expires_keys() {
    let redis = RedisServer::start();
    run(
        &redis,
        10,
        "write = \"set\"\nkey = \"order:{order_id}\"\nttl = \"1h\"",
    );
    assert_eq!(redis.get("order:3").as_deref(), Some(order(3).as_str()));
    let ttl: i64 = q(&redis, &["TTL", "order:3"]);
    assert!((3500..=3600).contains(&ttl), "ttl {ttl}");
}

#[test]
fn hset_with_selected_fields_writes_only_those() {
    let redis = RedisServer::start();
    run(
        &redis,
        5,
        "write = \"hset\"\nkey = \"order:{order_id}\"\nfields = [\"status\", \"currency\"]",
    );
    let h: HashMap<String, String> = q(&redis, &["HGETALL", "order:2"]);
    assert_eq!(
        h,
        HashMap::from([
            ("status".into(), "new".into()),
            ("currency".into(), "EUR".into())
        ])
    );
}

#[test]
fn rpush_and_lpush_append_payloads_in_order() {
    let redis = RedisServer::start();
    run(&redis, 5, "write = \"rpush\"\nkey = \"queue\"");
    let items: Vec<String> = q(&redis, &["LRANGE", "queue", "0", "-1"]);
    assert_eq!(items, (1..=5).map(order).collect::<Vec<_>>());
    let redis = RedisServer::start();
    run(&redis, 3, "write = \"lpush\"\nkey = \"stack\"");
    let items: Vec<String> = q(&redis, &["LRANGE", "stack", "0", "-1"]);
    assert_eq!(items, [order(3), order(2), order(1)]);
}

#[test]
fn sadd_and_zadd_index_orders_by_customer_and_amount() {
    let redis = RedisServer::start();
    run(
        &redis,
        2000,
        "write = \"sadd\"\nkey = \"customer:{customer_id}:orders\"\nmember = \"{order_id}\"",
    );
    let members: Vec<String> = q(&redis, &["SMEMBERS", "customer:c-5:orders"]);
    let mut ids: Vec<u64> = members.iter().map(|m| m.parse().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, [5, 982, 1959], "orders n with n % 977 == 5");
    let redis = RedisServer::start();
    run(
        &redis,
        100,
        "write = \"zadd\"\nkey = \"orders:by-amount\"\nscore = \"{amount}\"\nmember = \"{order_id}\"",
    );
    let top: Vec<String> = q(&redis, &["ZREVRANGE", "orders:by-amount", "0", "0"]);
    let amounts: Vec<f64> = (1..=100u64)
        .map(|n| {
            serde_json::from_str::<serde_json::Value>(&order(n)).unwrap()["amount"]
                .as_f64()
                .unwrap()
        })
        .collect();
    let best = (1..=100u64)
        .max_by(|a, b| amounts[*a as usize - 1].total_cmp(&amounts[*b as usize - 1]))
        .unwrap();
    assert_eq!(top, [best.to_string()]);
    let card: u64 = q(&redis, &["ZCARD", "orders:by-amount"]);
    assert_eq!(card, 100);
}

#[test]
fn replace_swaps_a_keys_whole_content() {
    let redis = RedisServer::start();
    let _: () = q(&redis, &["HSET", "order:1", "stale", "field"]);
    run(
        &redis,
        1,
        "write = \"hset\"\nkey = \"order:{order_id}\"\nreplace = true",
    );
    let h: HashMap<String, String> = q(&redis, &["HGETALL", "order:1"]);
    assert!(!h.contains_key("stale"), "{h:?}");
    assert_eq!(h["order_id"], "1");
}

#[test]
fn xadd_with_maxlen_keeps_the_stream_short() {
    let redis = RedisServer::start();
    run(
        &redis,
        3000,
        "write = \"xadd\"\nkey = \"orders\"\nmaxlen = 100",
    );
    let len: u64 = q(&redis, &["XLEN", "orders"]);
    assert!(
        (100..1000).contains(&len),
        "about 100 entries kept, not {len}"
    );
}

#[test]
fn publish_reaches_subscribers() {
    let redis = RedisServer::start();
    let client = redis::Client::open(redis.url()).unwrap();
    let mut con = client.get_connection().unwrap();
    let mut pubsub = con.as_pubsub();
    pubsub.subscribe("orders").unwrap();
    pubsub
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let url = redis.url();
    let publisher = std::thread::spawn(move || {
        let config = format!(
            "[[pipeline]]\nname = \"t\"\nsource = {{ type = \"generate\", count = 3 }}\n[[pipeline.sink]]\ntype = \"redis\"\nurl = \"{url}\"\nwrite = \"publish\"\nkey = \"orders\"\n"
        );
        Ferry::start(&config).wait_success(Duration::from_secs(60));
    });
    let got: Vec<String> = (0..3)
        .map(|_| pubsub.get_message().unwrap().get_payload().unwrap())
        .collect();
    publisher.join().unwrap();
    assert_eq!(got, [order(1), order(2), order(3)]);
}
