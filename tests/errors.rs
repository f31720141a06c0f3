//! Errors that must say the right thing and lead to the right response:
//! an authentication error stops the pipeline at once, a server that
//! refuses every write for now (Redis `OOM`) is waited out.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::time::Duration;

use redis::Commands;
use support::*;

fn generate_to_redis(redis_url: &str, extra_sink: &str, extra: &str) -> String {
    format!(
        r#"
[[pipeline]]
name = "errors"
source = {{ type = "generate", count = 5 }}

[[pipeline.sink]]
type = "redis"
url = "{redis_url}"
write = "set"
key = "order:{{order_id}}"
{extra_sink}
{extra}
"#
    )
}

fn assert_stops_naming_authentication(config: &str) {
    let mut ferry = Ferry::start(config);
    let status = ferry
        .wait_timeout(Duration::from_secs(15))
        .unwrap_or_else(|| panic!("still running 15s after start\n{}", ferry.log()));
    let log = ferry.log();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("uthentication failed"), "{log}");
    assert!(!log.contains("not reachable yet"), "{log}");
}

#[test]
fn a_wrong_redis_password_stops_the_pipeline_instead_of_waiting_forever() {
    let redis = RedisServer::start();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("right")
        .query(&mut redis.conn())
        .unwrap();
    let wrong = format!("redis://:wrong@127.0.0.1:{}", redis.port);
    // As a sink...
    assert_stops_naming_authentication(&generate_to_redis(&wrong, "", ""));
    // ...and as a source.
    let right = format!("redis://:right@127.0.0.1:{}", redis.port);
    assert_stops_naming_authentication(&format!(
        r#"
[[pipeline]]
name = "errors"
source = {{ type = "redis-list", url = "{wrong}", list = "{list}" }}

[[pipeline.sink]]
type = "redis"
url = "{right}"
write = "set"
key = "order:{{order_id}}"
"#,
        list = unique("auth-list")
    ));
}

#[test]
fn redis_out_of_memory_is_retried_until_it_passes_and_never_dead_lettered() {
    let redis = RedisServer::start();
    let dead = RedisServer::start();
    let mut conn = redis.conn();
    let set_maxmemory = |conn: &mut redis::Connection, bytes: &str| {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(bytes)
            .query(conn)
            .unwrap();
    };
    // Every write is refused with OOM (noeviction is the default policy).
    set_maxmemory(&mut conn, "1");
    let config = generate_to_redis(
        &redis.url(),
        "retry = { attempts = 2, initial = \"50ms\", max = \"200ms\" }",
        &format!(
            "[pipeline.dead_letter]\ntype = \"redis\"\nurl = \"{}\"\nwrite = \"xadd\"\nkey = \"dead\"",
            dead.url()
        ),
    );
    let mut ferry = Ferry::start(&config);
    wait_until(Duration::from_secs(30), "OOM retries in the log", || {
        ferry.log().matches("OOM").count() >= 3
    });
    assert!(
        ferry.wait_timeout(Duration::from_millis(500)).is_none(),
        "ferry stopped on OOM\n{}",
        ferry.log()
    );
    set_maxmemory(&mut conn, "0");
    ferry.wait_success(Duration::from_secs(30));
    for id in 1..=5 {
        assert!(redis.get(&format!("order:{id}")).is_some(), "order {id}");
    }
    let dead_letters: u64 = dead.conn().xlen("dead").unwrap();
    assert_eq!(dead_letters, 0, "{}", ferry.log());
}
