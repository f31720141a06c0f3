//! Redis source behaviours beyond the conformance suite: reclaiming entries
//! of dead consumers, poison entries, trimming, list recovery after a
//! crash, keyspace values by type and tombstones.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

#[path = "../support/mod.rs"]
mod support;

mod keyspace;
mod list_drain;

use std::collections::HashMap;
use std::time::Duration;

use nix::sys::signal::Signal;
use support::*;

fn pipeline(source: &str, sink: &str) -> String {
    format!("[[pipeline]]\nname = \"t\"\nsource = {source}\n[[pipeline.sink]]\n{sink}")
}

fn set_orders(url: &str) -> String {
    format!("type = \"redis\"\nurl = \"{url}\"\nwrite = \"set\"\nkey = \"order:{{order_id}}\"\n")
}

fn xadd_orders(redis: &RedisServer, n: u64) {
    xadd_orders_to(redis, "orders", 1..=n);
}

/// Appends orders `ids` to `stream`, as `payload` entries.
fn xadd_orders_to(redis: &RedisServer, stream: &str, ids: std::ops::RangeInclusive<u64>) {
    let mut conn = redis.conn();
    for n in ids {
        let _: String = redis::cmd("XADD")
            .arg(stream)
            .arg("*")
            .arg("payload")
            .arg(ferry::connectors::generate::order(n))
            .query(&mut conn)
            .unwrap();
    }
}

fn pending(redis: &RedisServer) -> u64 {
    pending_in(redis, "orders")
}

/// Entries of `stream` delivered to group `g` and not acknowledged.
fn pending_in(redis: &RedisServer, stream: &str) -> u64 {
    let summary: redis::Value = redis::cmd("XPENDING")
        .arg(stream)
        .arg("g")
        .query(&mut redis.conn())
        .unwrap();
    match summary {
        redis::Value::Array(parts) => match parts.first() {
            Some(redis::Value::Int(n)) => *n as u64,
            _ => 0,
        },
        _ => 0,
    }
}

/// Reads `count` entries as consumer `dead`, who never acknowledges.
fn read_as_dead_consumer(redis: &RedisServer, count: usize) {
    let mut conn = redis.conn();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg("orders")
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut conn)
        .unwrap();
    let _: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("dead")
        .arg("COUNT")
        .arg(count)
        .arg("STREAMS")
        .arg("orders")
        .arg(">")
        .query(&mut conn)
        .unwrap();
}

#[test]
fn entries_a_dead_consumer_left_pending_are_claimed_after_claim_idle() {
    let source = RedisServer::start();
    let verify = RedisServer::start();
    xadd_orders(&source, 10);
    read_as_dead_consumer(&source, 10);
    assert_eq!(pending(&source), 10);
    let config = pipeline(
        &format!(
            r#"{{ type = "redis-stream", url = "{}", streams = ["orders"], group = "g", consumer = "alive", block = "200ms", claim_idle = "1s" }}"#,
            source.url()
        ),
        &set_orders(&verify.url()),
    );
    let mut ferry = Ferry::start(&config);
    wait_until(Duration::from_secs(30), "the claimed orders", || {
        verify.dbsize() == 10
    });
    wait_until(Duration::from_secs(10), "acknowledgements", || {
        pending(&source) == 0
    });
    ferry.stop(Duration::from_secs(10));
    assert!(
        ferry
            .log()
            .contains("claimed entries another consumer left unacknowledged")
    );
}

#[test]
fn an_entry_delivered_too_often_goes_to_the_dead_letter_sink_with_the_count() {
    let source = RedisServer::start();
    let verify = RedisServer::start();
    xadd_orders(&source, 1);
    read_as_dead_consumer(&source, 1);
    let id: String = {
        let rows: Vec<Vec<redis::Value>> = redis::cmd("XPENDING")
            .arg("orders")
            .arg("g")
            .arg("-")
            .arg("+")
            .arg(10)
            .query(&mut source.conn())
            .unwrap();
        redis::from_redis_value(rows[0][0].clone()).unwrap()
    };
    // As if it had been delivered, and crashed its consumer, 9 times.
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg("orders")
        .arg("g")
        .arg("dead")
        .arg(0)
        .arg(&id)
        .arg("RETRYCOUNT")
        .arg(9)
        .query(&mut source.conn())
        .unwrap();
    let config = format!(
        r#"
[[pipeline]]
name = "t"
source = {{ type = "redis-stream", url = "{src}", streams = ["orders"], group = "g", consumer = "alive", block = "200ms", claim_idle = "1s", max_deliveries = 5 }}
[pipeline.dead_letter]
type = "redis"
url = "{v}"
write = "xadd"
key = "dead"
[[pipeline.sink]]
{sink}"#,
        src = source.url(),
        v = verify.url(),
        sink = set_orders(&verify.url()),
    );
    let mut ferry = Ferry::start(&config);
    let dead = || -> u64 {
        redis::cmd("XLEN")
            .arg("dead")
            .query(&mut verify.conn())
            .unwrap()
    };
    wait_until(Duration::from_secs(30), "the dead letter", || dead() == 1);
    wait_until(Duration::from_secs(10), "the acknowledgement", || {
        pending(&source) == 0
    });
    ferry.stop(Duration::from_secs(10));
    assert_eq!(verify.get("order:1"), None, "never written to the sink");
    let reason: String = verify.xrange("dead")[0].get("header.ferry.error").unwrap();
    assert!(reason.contains("delivered 10 times"), "{reason}");
}

#[test]
fn trim_deletes_entries_every_group_has_acknowledged() {
    let source = RedisServer::start();
    let verify = RedisServer::start();
    xadd_orders(&source, 200);
    let config = pipeline(
        &format!(
            r#"{{ type = "redis-stream", url = "{}", streams = ["orders"], group = "g", block = "200ms", trim = true }}"#,
            source.url()
        ),
        &set_orders(&verify.url()),
    );
    let mut ferry = Ferry::start(&config);
    wait_until(Duration::from_secs(30), "every order", || {
        verify.dbsize() == 200
    });
    let len = || -> u64 {
        redis::cmd("XLEN")
            .arg("orders")
            .query(&mut source.conn())
            .unwrap()
    };
    wait_until(Duration::from_secs(30), "the stream to be trimmed", || {
        len() == 0
    });
    ferry.stop(Duration::from_secs(10));
}

#[test]
fn list_elements_popped_but_not_confirmed_before_a_crash_are_delivered_again() {
    let source = RedisServer::start();
    let verify = RedisServer::start();
    let mut conn = source.conn();
    let order = ferry::connectors::generate::order;
    // What a crashed consumer `c1` left in its processing list...
    let _: () = redis::cmd("LPUSH")
        .arg("orders:processing:c1")
        .arg(&[order(1), order(2), order(3)])
        .query(&mut conn)
        .unwrap();
    // ...and what still waits in the list.
    let _: () = redis::cmd("LPUSH")
        .arg("orders")
        .arg(&[order(4), order(5)])
        .query(&mut conn)
        .unwrap();
    let config = pipeline(
        &format!(
            r#"{{ type = "redis-list", url = "{}", list = "orders", consumer = "c1", block = "200ms" }}"#,
            source.url()
        ),
        &set_orders(&verify.url()),
    );
    let mut ferry = Ferry::start(&config);
    wait_until(Duration::from_secs(30), "all five orders", || {
        verify.dbsize() == 5
    });
    let len = |k: &str| -> u64 { redis::cmd("LLEN").arg(k).query(&mut source.conn()).unwrap() };
    wait_until(Duration::from_secs(10), "empty lists", || {
        len("orders") + len("orders:processing:c1") == 0
    });
    ferry.stop(Duration::from_secs(10));
    assert!(
        ferry
            .log()
            .contains("delivering again elements popped but not confirmed before")
    );
}

#[test]
fn one_source_reads_several_streams_in_one_group() {
    let source = RedisServer::start();
    let verify = RedisServer::start();
    xadd_orders_to(&source, "eu", 1..=50);
    xadd_orders_to(&source, "us", 51..=100);
    let config = pipeline(
        &format!(
            r#"{{ type = "redis-stream", url = "{}", streams = ["eu", "us"], group = "g", block = "200ms" }}"#,
            source.url()
        ),
        &format!(
            "type = \"redis\"\nurl = \"{}\"\nwrite = \"set\"\nkey = \"{{stream}}:{{order_id}}\"\n",
            verify.url()
        ),
    );
    let mut ferry = Ferry::start(&config);
    wait_until(Duration::from_secs(30), "both streams", || {
        verify.dbsize() == 100
    });
    ferry.stop(Duration::from_secs(10));
    assert!(verify.get("eu:1").is_some() && verify.get("us:100").is_some());
}

#[test]
fn a_stream_copy_until_the_end_reads_what_was_there_acknowledges_it_and_stops() {
    let source = RedisServer::start();
    let verify = RedisServer::start();
    let add = |stream: &str, ids| xadd_orders_to(&source, stream, ids);
    add("eu", 1..=300);
    add("us", 301..=500);
    let config = pipeline(
        &format!(
            r#"{{ type = "redis-stream", url = "{}", streams = ["eu", "us", "quiet"], group = "g", start = "earliest", batch_size = 64, until = "end" }}"#,
            source.url()
        ),
        &format!(
            "type = \"redis\"\nurl = \"{}\"\nwrite = \"set\"\nkey = \"{{stream}}:{{order_id}}\"\n",
            verify.url()
        ),
    );
    let group_pending = |stream: &str| pending_in(&source, stream);

    let mut ferry = Ferry::start(&config);
    ferry.wait_success(Duration::from_secs(30));
    let log = ferry.log();
    assert!(log.contains("a job of 500 messages"), "{log}");
    assert_eq!(verify.dbsize(), 500);
    assert_eq!(
        group_pending("eu") + group_pending("us"),
        0,
        "all acknowledged"
    );

    // The next copy takes only what came since.
    add("eu", 501..=620);
    let mut ferry = Ferry::start(&config);
    ferry.wait_success(Duration::from_secs(30));
    assert!(
        ferry.log().contains("a job of 120 messages"),
        "{}",
        ferry.log()
    );
    assert_eq!(verify.dbsize(), 620);
    assert_eq!(group_pending("eu"), 0);
}

/// Recovering after a dropped connection re-reads this consumer's pending
/// entries, but one still in flight (its sink is down) is not taken again,
/// so its delivery count stays what it was: reconnects alone never push an
/// entry past `max_deliveries` into the dead-letter sink.
#[test]
fn reconnects_do_not_count_as_deliveries_of_an_entry_in_flight() {
    let source = RedisServer::start_persistent();
    let verify = RedisServer::start();
    let cuts = Proxy::start(&format!("127.0.0.1:{}", source.port));
    let sink_down = Proxy::start(&format!("127.0.0.1:{}", verify.port));
    sink_down.refuse_for(Duration::from_secs(600));
    xadd_orders(&source, 1);
    let config = format!(
        r#"
[[pipeline]]
name = "t"
source = {{ type = "redis-stream", url = "redis://{src}", streams = ["orders"], group = "g", consumer = "c", block = "200ms", max_deliveries = 3 }}
[pipeline.dead_letter]
type = "redis"
url = "{v}"
write = "xadd"
key = "dead"
[[pipeline.sink]]
{sink}"#,
        src = cuts.addr(),
        v = verify.url(),
        sink = set_orders(&format!("redis://{}", sink_down.addr())),
    );
    let mut ferry = Ferry::start(&config);
    wait_until(Duration::from_secs(30), "the source", || {
        ferry.log().contains("pipeline running")
    });
    wait_until(Duration::from_secs(30), "the entry in flight", || {
        pending(&source) == 1
    });
    let recoveries = |f: &Ferry| f.log().matches("own pending entries re-read").count();
    for n in 1..=5 {
        cuts.cut();
        wait_until(Duration::from_secs(30), "the source to recover", || {
            recoveries(&ferry) > n
        });
    }
    // The entry fails with its process; the next one takes it again.
    ferry.signal(Signal::SIGKILL);
    ferry.wait_timeout(Duration::from_secs(10)).unwrap();
    sink_down.refuse_for(Duration::ZERO);
    let mut ferry = Ferry::start(&config);
    let dead = || -> u64 {
        redis::cmd("XLEN")
            .arg("dead")
            .query(&mut verify.conn())
            .unwrap()
    };
    wait_until(
        Duration::from_secs(30),
        "the order or a dead letter",
        || verify.get("order:1").is_some() || dead() > 0,
    );
    ferry.stop(Duration::from_secs(10));
    assert_eq!(
        dead(),
        0,
        "dead-lettered after 2 deliveries\n{}",
        ferry.log()
    );
    assert!(verify.get("order:1").is_some());
}
