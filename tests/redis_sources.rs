//! Redis source behaviours beyond the conformance suite: reclaiming entries
//! of dead consumers, poison entries, trimming, list recovery after a
//! crash, keyspace values by type and tombstones.

mod support;

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
    ferry.signal(Signal::SIGTERM);
    ferry.wait_success(Duration::from_secs(10));
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
    ferry.signal(Signal::SIGTERM);
    ferry.wait_success(Duration::from_secs(10));
    assert_eq!(verify.get("order:1"), None, "never written to the sink");
    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("dead")
        .arg("-")
        .arg("+")
        .query(&mut verify.conn())
        .unwrap();
    let reason: String = entries.ids[0].get("header.ferry.error").unwrap();
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
    ferry.signal(Signal::SIGTERM);
    ferry.wait_success(Duration::from_secs(10));
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
    ferry.signal(Signal::SIGTERM);
    ferry.wait_success(Duration::from_secs(10));
    assert!(
        ferry
            .log()
            .contains("delivering again elements popped but not confirmed before")
    );
}

#[test]
fn keyspace_changes_arrive_as_values_by_type_and_deletions_as_tombstones() {
    let source = RedisServer::start();
    let verify = RedisServer::start();
    let config = pipeline(
        &format!(
            r#"{{ type = "redis-keyspace", url = "{}", pattern = "user:*", snapshot = false, configure_notifications = true }}"#,
            source.url()
        ),
        &format!(
            "type = \"redis\"\nurl = \"{}\"\nwrite = \"xadd\"\nkey = \"changes\"\n",
            verify.url()
        ),
    );
    let mut ferry = Ferry::start(&config);
    wait_until(Duration::from_secs(30), "the subscription", || {
        ferry.log().contains("pipeline running")
    });
    let mut c = source.conn();
    let mut run = |args: &[&str]| {
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        let _: redis::Value = cmd.query(&mut c).unwrap();
        // One change at a time, so each is read on its own.
        std::thread::sleep(Duration::from_millis(150));
    };
    run(&["SET", "user:str", "hello"]);
    run(&["HSET", "user:hash", "name", "ada", "age", "36"]);
    run(&["RPUSH", "user:list", "a", "b"]);
    run(&["SADD", "user:set", "y", "x"]);
    run(&["ZADD", "user:zset", "2", "b", "1.5", "a"]);
    run(&["XADD", "user:stream", "1-1", "f", "v"]);
    run(&["DEL", "user:str"]);
    run(&["SET", "user:ttl", "soon", "PX", "50"]);
    run(&["SET", "other:key", "ignored"]);
    let len = || -> u64 {
        redis::cmd("XLEN")
            .arg("changes")
            .query(&mut verify.conn())
            .unwrap()
    };
    wait_until(
        Duration::from_secs(30),
        "every change and the expiry",
        || len() >= 9,
    );
    ferry.signal(Signal::SIGTERM);
    ferry.wait_success(Duration::from_secs(10));

    let entries: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
        .arg("changes")
        .arg("-")
        .arg("+")
        .query(&mut verify.conn())
        .unwrap();
    let seen: Vec<(String, String, String, Option<String>)> = entries
        .ids
        .iter()
        .map(|e| {
            (
                e.get::<String>("key").unwrap(),
                e.get::<String>("header.redis.event").unwrap(),
                e.get::<String>("header.redis.type").unwrap(),
                e.get::<String>("payload"),
            )
        })
        .collect();
    let last: HashMap<(String, String), Option<String>> = seen
        .iter()
        .map(|(k, ev, _, p)| ((k.clone(), ev.clone()), p.clone()))
        .collect();
    let get = |k: &str, ev: &str| {
        last.get(&(k.to_owned(), ev.to_owned()))
            .cloned()
            .unwrap_or_else(|| panic!("no {ev} of {k}: {seen:?}"))
    };
    assert_eq!(get("user:str", "set").as_deref(), Some("hello"));
    assert_eq!(
        get("user:hash", "hset").as_deref(),
        Some(r#"{"name":"ada","age":"36"}"#)
    );
    assert_eq!(get("user:list", "rpush").as_deref(), Some(r#"["a","b"]"#));
    assert_eq!(get("user:set", "sadd").as_deref(), Some(r#"["x","y"]"#));
    assert_eq!(
        get("user:zset", "zadd").as_deref(),
        Some(r#"{"a":1.5,"b":2.0}"#)
    );
    assert!(
        get("user:stream", "xadd")
            .unwrap()
            .contains(r#""last_entry":{"f":"v"}"#)
    );
    assert_eq!(get("user:str", "del"), None, "a deleted key is a tombstone");
    assert_eq!(
        get("user:ttl", "expired"),
        None,
        "an expired key is a tombstone"
    );
    assert!(
        seen.iter().all(|(k, ..)| k.starts_with("user:")),
        "only the pattern's keys"
    );
}

#[test]
fn keyspace_refuses_to_start_when_notifications_are_off_and_says_what_to_set() {
    let source = RedisServer::start();
    let verify = RedisServer::start();
    let config = pipeline(
        &format!(
            r#"{{ type = "redis-keyspace", url = "{}", pattern = "user:*" }}"#,
            source.url()
        ),
        &set_orders(&verify.url()),
    );
    let mut ferry = Ferry::start(&config);
    let status = ferry
        .wait_timeout(Duration::from_secs(30))
        .expect("ferry stops");
    assert!(!status.success());
    let log = ferry.log();
    assert!(
        log.contains("CONFIG SET notify-keyspace-events KA"),
        "{log}"
    );
    assert!(log.contains("configure_notifications = true"), "{log}");
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
    ferry.signal(Signal::SIGTERM);
    ferry.wait_success(Duration::from_secs(10));
    assert!(verify.get("eu:1").is_some() && verify.get("us:100").is_some());
}

#[test]
fn a_keyspace_snapshot_job_copies_every_matching_key_and_stops_without_notifications() {
    // Notifications are off (the default of a fresh server): a one-off
    // copy does not need them.
    let source = RedisServer::start();
    let verify = RedisServer::start();
    let mut c = source.conn();
    let mut pipe = redis::pipe();
    for i in 0..1500 {
        pipe.cmd("SET")
            .arg(format!("user:{i}"))
            .arg(format!("v{i}"));
    }
    pipe.cmd("HSET").arg("user:hash").arg("f").arg("v");
    pipe.cmd("SET").arg("other:key").arg("not copied");
    let _: () = pipe.query(&mut c).unwrap();

    let copy = |pattern: &str, stream: &str| {
        let config = pipeline(
            &format!(
                r#"{{ type = "redis-keyspace", url = "{}", pattern = "{pattern}", until = "snapshot" }}"#,
                source.url()
            ),
            &format!(
                "type = \"redis\"\nurl = \"{}\"\nwrite = \"xadd\"\nkey = \"{stream}\"\n",
                verify.url()
            ),
        );
        let mut ferry = Ferry::start(&config);
        ferry.wait_success(Duration::from_secs(30));
        ferry.log()
    };
    let xlen = |stream: &str| -> u64 {
        redis::cmd("XLEN")
            .arg(stream)
            .query(&mut verify.conn())
            .unwrap()
    };

    copy("user:*", "users");
    let keys: std::collections::HashSet<String> = {
        let reply: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
            .arg("users")
            .arg("-")
            .arg("+")
            .query(&mut verify.conn())
            .unwrap();
        reply
            .ids
            .iter()
            .map(|e| e.get::<String>("key").unwrap())
            .collect()
    };
    assert_eq!(keys.len(), 1501, "every user key, the hash too");
    assert!(!keys.contains("other:key"));

    // The whole database: the job's size is known up front.
    let log = copy("*", "everything");
    assert!(log.contains("a job of 1502 messages"), "{log}");
    assert!(xlen("everything") >= 1502);
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

#[test]
fn a_list_drain_until_the_end_takes_leftovers_and_the_list_then_stops() {
    let source = RedisServer::start();
    let verify = RedisServer::start();
    let mut pipe = redis::pipe();
    for n in 1..=700u64 {
        pipe.cmd("LPUSH")
            .arg("in")
            .arg(ferry::connectors::generate::order(n));
    }
    // Popped by an earlier run that crashed before its sinks confirmed.
    for n in 701..=703u64 {
        pipe.cmd("LPUSH")
            .arg("in:processing:c")
            .arg(ferry::connectors::generate::order(n));
    }
    let _: () = pipe.query(&mut source.conn()).unwrap();
    let config = pipeline(
        &format!(
            r#"{{ type = "redis-list", url = "{}", list = "in", consumer = "c", until = "end" }}"#,
            source.url()
        ),
        &set_orders(&verify.url()),
    );
    let mut ferry = Ferry::start(&config);
    ferry.wait_success(Duration::from_secs(30));
    assert!(
        ferry.log().contains("a job of 703 messages"),
        "{}",
        ferry.log()
    );
    assert_eq!(verify.dbsize(), 703);
    let lens: (u64, u64) = redis::pipe()
        .cmd("LLEN")
        .arg("in")
        .cmd("LLEN")
        .arg("in:processing:c")
        .query(&mut source.conn())
        .unwrap();
    assert_eq!(lens, (0, 0), "popped and confirmed: removed");
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
    ferry.signal(Signal::SIGTERM);
    ferry.wait_success(Duration::from_secs(10));
    assert_eq!(
        dead(),
        0,
        "dead-lettered after 2 deliveries\n{}",
        ferry.log()
    );
    assert!(verify.get("order:1").is_some());
}
