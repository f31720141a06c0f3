//! jq steps that never end: the message is dead-lettered with the reason
//! and the pipeline goes on; a stop interrupts a step at once.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use redis::Commands;
use support::*;

fn config(redis: &str, list: &str, step: &str, extra: &str) -> String {
    format!(
        r#"
[[pipeline]]
name = "budget"
source = {{ type = "redis-list", url = "{redis}", list = "{list}", block = "100ms" }}
{extra}

[[pipeline.step]]
filter = '{step}'

[[pipeline.sink]]
type = "redis"
url = "{redis}"
write = "set"
key = "order:{{order_id}}"

[pipeline.dead_letter]
type = "redis"
url = "{redis}"
write = "xadd"
key = "dead"
"#
    )
}

/// CPU time (user + system) a process has used, from /proc.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which is in parentheses).
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    let getconf = std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .unwrap();
    let per_second: f64 = String::from_utf8_lossy(&getconf.stdout)
        .trim()
        .parse()
        .unwrap();
    ticks / per_second
}

/// Every field of every entry of a stream, as text.
fn stream_text(conn: &mut redis::Connection, key: &str) -> String {
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(key)
        .arg("-")
        .arg("+")
        .query(conn)
        .unwrap();
    format!("{entries:?}")
}

#[test]
fn a_step_that_never_ends_is_dead_lettered_with_the_reason_and_the_pipeline_goes_on() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let list = unique("budget-orders");
    for order in [
        r#"{"order_id": 1}"#,
        r#"{"order_id": 2, "loop": true}"#,
        r#"{"order_id": 3}"#,
    ] {
        let _: () = conn.lpush(&list, order).unwrap();
    }
    let step = "if .loop then (def f: f; f) else true end";
    let mut ferry = Ferry::start(&config(&redis.url(), &list, step, "jq_budget = 100000"));

    wait_until(
        Duration::from_secs(30),
        "orders 1 and 3 to be written",
        || redis.get("order:1").is_some() && redis.get("order:3").is_some(),
    );
    wait_until(
        Duration::from_secs(10),
        "order 2 to be dead-lettered",
        || stream_text(&mut conn, "dead").contains("order_id"),
    );
    let dead = stream_text(&mut conn, "dead");
    assert!(
        dead.contains("took more than the 100000 evaluation steps"),
        "{dead}\n{}",
        ferry.log()
    );
    assert!(dead.contains("filter step"), "{dead}");
    assert!(redis.get("order:2").is_none());
    // Nothing keeps spinning once the message is set aside: over two
    // seconds the process uses far less than a core (a loop left running
    // on a thread would use all of it).
    let before = cpu_seconds(ferry.pid());
    std::thread::sleep(Duration::from_secs(2));
    let used = cpu_seconds(ferry.pid()) - before;
    println!("jq budget: {used:.2}s of CPU in the 2s after the dead letter");
    assert!(used < 1.0, "{used}s of CPU in 2s\n{}", ferry.log());

    ferry.signal(Signal::SIGTERM);
    let status = ferry
        .wait_timeout(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("still running 10s after SIGTERM\n{}", ferry.log()));
    assert!(status.success(), "{status}\n{}", ferry.log());
}

#[test]
fn sigterm_interrupts_a_step_and_leaves_its_message_for_the_next_run() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let list = unique("budget-stop");
    let _: () = conn.lpush(&list, r#"{"order_id": 1}"#).unwrap();
    // The largest budget: minutes of work, far longer than the test waits.
    let mut ferry = Ferry::start(&config(
        &redis.url(),
        &list,
        "def f: f; f",
        "jq_budget = 1000000000",
    ));
    wait_until(Duration::from_secs(30), "the message to be popped", || {
        conn.llen::<_, u64>(&list).unwrap() == 0
    });
    std::thread::sleep(Duration::from_millis(500));

    let signalled = Instant::now();
    ferry.signal(Signal::SIGTERM);
    let status = ferry
        .wait_timeout(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("still running 5s after SIGTERM\n{}", ferry.log()));
    println!(
        "jq budget: a looping step interrupted, ferry exited {:.2}s after SIGTERM",
        signalled.elapsed().as_secs_f64()
    );
    assert!(status.success(), "{status}\n{}", ferry.log());
    // Not dead-lettered, not dropped: it waits in the processing list.
    assert_eq!(stream_text(&mut conn, "dead"), "[]");
    let processing: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{list}:processing:*"))
        .query(&mut conn)
        .unwrap();
    let waiting: u64 = processing
        .iter()
        .map(|k| conn.llen::<_, u64>(k).unwrap())
        .sum();
    assert_eq!(waiting, 1, "{processing:?}\n{}", ferry.log());
}
