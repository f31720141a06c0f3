//! `ferry replay`: a cache rebuilt from the log, from a point in time, into
//! a fresh Redis, interrupted and resumed, with every order written once.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use support::*;

/// Produces orders `ids`, keyed by id, each with the timestamp `at` (ms).
async fn produce_orders_at(brokers: &str, topic: &str, ids: std::ops::Range<u64>, at: i64) {
    let orders = ids.map(|n| {
        (
            n.to_string(),
            ferry::connectors::generate::order(n).into_bytes(),
            Some(at),
        )
    });
    produce_timed_at(brokers, topic, orders).await;
}

fn replay(config: &str, args: &[&str], out: &std::path::Path) -> Child {
    Command::new(ferry_bin())
        .arg("replay")
        .arg(config)
        .args(args)
        .args(["--progress-every", "1s"])
        .env("FERRY_LOG", "info")
        .stdout(std::fs::File::create(out.with_extension("out")).unwrap())
        .stderr(std::fs::File::create(out).unwrap())
        .spawn()
        .unwrap()
}

/// Waits for a replay to end; on a timeout, fails with what it logged.
fn wait(child: &mut Child, timeout: Duration, log: &std::path::Path) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() >= timeout {
            let _ = child.kill();
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            panic!("replay still running after {timeout:?}; its log ends:\n{tail}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn keys(redis: &RedisServer, pattern: &str) -> Vec<String> {
    redis::cmd("KEYS")
        .arg(pattern)
        .query(&mut redis.conn())
        .unwrap()
}

fn xlen(redis: &RedisServer, key: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(key)
        .query(&mut redis.conn())
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_from_a_time_rebuilds_a_fresh_cache_once_across_interruptions() {
    let kafka = Kafka::start();
    let topic = unique("orders");
    kafka.create_topic(&topic, 3).await;
    // 5,000 orders from an hour ago, then 100,000 from half an hour ago:
    // the replay starts between them.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (old, recent) = (now - 3_600_000, now - 1_800_000);
    produce_orders_at(&kafka.brokers, &topic, 0..5_000, old).await;
    produce_orders_at(&kafka.brokers, &topic, 5_000..105_000, recent).await;

    let live = RedisServer::start();
    let fresh = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("cache.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[pipeline]]
name = "cache"
source = {{ type = "kafka", brokers = "{brokers}", topics = ["{topic}"], group = "cache-live", options = {{ "session.timeout.ms" = "6000" }} }}

[[pipeline.sink]]
type = "redis"
url = "{live}"
write = "set"
key = "order:{{order_id}}"
exactly_once = true

[[pipeline.sink]]
type = "redis"
url = "{live}"
write = "xadd"
key = "orders-log"
exactly_once = true
"#,
            brokers = kafka.brokers,
            live = live.url()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let from = (old + 1).to_string();
    let args = ["--from", &from, "--redis-url", &fresh.url()];
    let log = dir.path().join("replay.log");
    let show = |what: &str| {
        format!(
            "{what}\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    };

    // Interrupted with SIGINT: drains, commits, says how to go on.
    let mut first = replay(config, &args, &log);
    wait_until(Duration::from_secs(120), "the replay to write", || {
        xlen(&fresh, "orders-log") >= 20_000
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first.id() as i32),
        Signal::SIGINT,
    )
    .unwrap();
    let status = wait(&mut first, Duration::from_secs(60), &log);
    assert_eq!(status.code(), Some(130), "{}", show("first run"));
    let said = std::fs::read_to_string(log.with_extension("out")).unwrap();
    assert!(said.contains("run the same command again"), "{said}");
    let after_first = xlen(&fresh, "orders-log");
    assert!(after_first < 100_000, "interrupted before the end");

    // Killed outright: whatever was written but not committed is read
    // again, and exactly_once skips it.
    let mut second = replay(config, &args, &log);
    wait_until(Duration::from_secs(120), "the second run to write", || {
        xlen(&fresh, "orders-log") >= after_first + 20_000
    });
    second.kill().unwrap();
    wait(&mut second, Duration::from_secs(10), &log);
    // The killed member's session ends before the next run joins, so the
    // group is formed again without it (as crash.rs does).
    std::thread::sleep(Duration::from_secs(7));

    let mut third = replay(config, &args, &log);
    let status = wait(&mut third, Duration::from_secs(300), &log);
    assert!(status.success(), "{}", show("third run"));
    let said = std::fs::read_to_string(log.with_extension("out")).unwrap();
    eprintln!("last run: {said}");
    assert!(said.starts_with("replayed"), "{said}");

    let counts = fresh.order_counts("orders-log");
    assert_eq!(counts.len(), 100_000, "every recent order");
    assert!(counts.values().all(|&n| n == 1), "none twice");
    assert!(counts.keys().all(|id| (5_000..105_000).contains(id)));
    assert_eq!(keys(&fresh, "order:*").len(), 100_000);
    assert!(fresh.get("order:4999").is_none(), "older than the start");
    assert!(fresh.get("order:5000").is_some());

    // The live side is untouched: nothing in its Redis, no offsets for
    // its group.
    assert_eq!(live.dbsize(), 0);
    assert_eq!(kafka.committed("cache-live", &topic, 3), vec![-1, -1, -1]);
    let replayed: i64 = kafka.committed("cache-live-replay", &topic, 3).iter().sum();
    assert_eq!(replayed, 105_000, "the replay group is at the end");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_of_a_source_without_history_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gen.toml");
    std::fs::write(
        &config,
        r#"
[[pipeline]]
name = "gen"
source = { type = "generate", count = 10 }
[[pipeline.sink]]
type = "redis"
url = "redis://127.0.0.1:6379"
write = "set"
key = "x:{order_id}"
"#,
    )
    .unwrap();
    let out = Command::new(ferry_bin())
        .arg("replay")
        .arg(&config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("keeps no history to replay"), "{err}");
}

fn write_config(dir: &std::path::Path, source: &str, redis: &RedisServer) -> String {
    let path = dir.join("p.toml");
    std::fs::write(
        &path,
        format!(
            r#"
[[pipeline]]
name = "p"
source = {source}

[[pipeline.sink]]
type = "redis"
url = "{url}"
write = "set"
key = "order:{{order_id}}"
"#,
            url = redis.url()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

fn run_replay(config: &str, args: &[&str]) -> String {
    let out = Command::new(ferry_bin())
        .arg("replay")
        .arg(config)
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replay_between_two_offsets_writes_exactly_the_records_between_them() {
    let kafka = Kafka::start();
    let topic = unique("orders");
    kafka.create_topic(&topic, 1).await;
    kafka.produce_orders(&topic, 0..100).await;
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let source = format!(
        r#"{{ type = "kafka", brokers = "{}", topics = ["{topic}"], group = "live" }}"#,
        kafka.brokers
    );
    let config = write_config(dir.path(), &source, &redis);

    let said = run_replay(
        &config,
        &["--from", "0=10", "--to", &format!("{topic}/0=60")],
    );
    assert!(said.starts_with("replayed 50 messages"), "{said}");
    // Records are produced concurrently: read which order lies at which
    // offset (one partition: in offset order).
    let log = read_topic(&kafka.brokers, &topic, 1).await;
    let key_at = |offset: usize| {
        let id = String::from_utf8(log[offset].0.clone().unwrap()).unwrap();
        format!("order:{id}")
    };
    let mut written = keys(&redis, "order:*");
    written.sort();
    let mut expected: Vec<String> = (10..60).map(key_at).collect();
    expected.sort();
    assert_eq!(written, expected, "exactly the records at offsets 10 to 59");
    assert_eq!(
        kafka.committed("live-replay", &topic, 1),
        vec![60],
        "never past the end"
    );

    // Run again: nothing left between the two offsets.
    let said = run_replay(
        &config,
        &["--from", "0=10", "--to", &format!("{topic}/0=60")],
    );
    assert!(said.starts_with("replayed 0 messages"), "{said}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_replay_starts_at_an_entry_id_under_its_own_group() {
    let (redis, ids, target, _dir, config) = stream_of_20_orders();

    let said = run_replay(&config, &["--from", &ids[5]]);
    assert!(said.starts_with("replayed 15 messages"), "{said}");
    assert!(target.get("order:5").is_some() && target.get("order:4").is_none());
    assert_eq!(keys(&target, "order:*").len(), 15);
    let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg("orders")
        .query(&mut redis.conn())
        .unwrap();
    let names: Vec<String> = groups
        .iter()
        .map(|g| redis::from_redis_value(g["name"].clone()).unwrap())
        .collect();
    assert_eq!(names, ["live-replay"], "only the replay's own group");
}

/// `--to` on a stream: entries from the end id on are not written, and a
/// resumed run (same group) does not deliver them either.
#[tokio::test(flavor = "multi_thread")]
async fn a_stream_replay_ends_before_an_entry_id_even_when_resumed() {
    let (_redis, ids, target, _dir, config) = stream_of_20_orders();

    let said = run_replay(&config, &["--from", &ids[5], "--to", &ids[12]]);
    assert!(said.starts_with("replayed 7 messages"), "{said}");
    let mut written = keys(&target, "order:*");
    written.sort_by_key(|k| k[6..].parse::<u64>().unwrap());
    let expected: Vec<String> = (5..12).map(|n| format!("order:{n}")).collect();
    assert_eq!(written, expected, "exactly the entries in [from, to)");

    let said = run_replay(&config, &["--from", &ids[5], "--to", &ids[12]]);
    assert!(said.starts_with("replayed 0 messages"), "{said}");
    assert_eq!(keys(&target, "order:*").len(), 7, "nothing past the end");
}

/// A stream `orders` of 20 orders (with their entry ids), a fresh target,
/// and a config in `dir` replaying the stream's live pipeline into it.
fn stream_of_20_orders() -> (
    RedisServer,
    Vec<String>,
    RedisServer,
    tempfile::TempDir,
    String,
) {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    let mut ids = Vec::new();
    for n in 0..20 {
        let id: String = redis::cmd("XADD")
            .arg("orders")
            .arg("*")
            .arg("payload")
            .arg(ferry::connectors::generate::order(n))
            .query(&mut conn)
            .unwrap();
        ids.push(id);
    }
    let target = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let source = format!(
        r#"{{ type = "redis-stream", url = "{}", streams = ["orders"], group = "live" }}"#,
        redis.url()
    );
    let config = write_config(dir.path(), &source, &target);
    (redis, ids, target, dir, config)
}
