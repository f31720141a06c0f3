//! The operations endpoint of `ferry run --http ADDR`: Prometheus metrics
//! that agree with what reached the brokers, and readiness that follows
//! the brokers going away and coming back.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::time::Duration;

use support::*;

use support::http_get as get;

/// The sum of every sample of `metric` whose labels contain all of
/// `labels` (`pipeline="p"`), from a Prometheus text exposition.
fn sample(exposition: &str, metric: &str, labels: &[&str]) -> Option<f64> {
    let mut found = None;
    for line in exposition.lines().filter(|l| !l.starts_with('#')) {
        let Some((name_labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (name, rest) = name_labels.split_once('{').unwrap_or((name_labels, ""));
        if name == metric && labels.iter().all(|l| rest.contains(l)) {
            *found.get_or_insert(0.0) += value.parse::<f64>().ok()?;
        }
    }
    found
}

fn metric(port: u16, metric: &str, labels: &[&str]) -> Option<f64> {
    let (status, body) = get(port, "/metrics")?;
    assert_eq!(status, 200);
    sample(&body, metric, labels)
}

fn ready(port: u16) -> Option<(bool, String)> {
    get(port, "/ready").map(|(status, body)| (status == 200, body))
}

fn push(redis: &RedisServer, list: &str, ids: std::ops::Range<u64>) {
    let mut conn = redis.conn();
    for i in ids {
        let _: u64 = redis::cmd("LPUSH")
            .arg(list)
            .arg(ferry::connectors::generate::order(i))
            .query(&mut conn)
            .unwrap();
    }
}

#[test]
fn metrics_count_deliveries_and_readiness_follows_a_sink_outage() {
    let source = RedisServer::start();
    let mut sink = RedisServer::start_persistent();
    let port = free_port();
    let config = format!(
        r#"
[[pipeline]]
name = "orders"
source = {{ type = "redis-list", url = "{}", list = "in" }}

[[pipeline.sink]]
name = "db"
type = "redis"
url = "{}"
write = "set"
key = "order:{{order_id}}"
retry = {{ initial = "50ms", max = "200ms" }}
"#,
        source.url(),
        sink.url()
    );
    push(&source, "in", 1..101);
    let addr = format!("127.0.0.1:{port}");
    let ferry = Ferry::start_with(&config, &["--http", &addr]);
    let confirmed = |port| {
        metric(
            port,
            "ferry_messages_confirmed_total",
            &[r#"pipeline="orders""#],
        )
    };
    wait_until(Duration::from_secs(20), "100 confirmed in /metrics", || {
        confirmed(port) == Some(100.0)
    });
    assert_eq!(sink.dbsize(), 100);
    assert_eq!(
        metric(port, "ferry_messages_received_total", &[]),
        Some(100.0)
    );
    assert_eq!(
        metric(port, "ferry_sink_messages_written_total", &[r#"sink="db""#]),
        Some(100.0)
    );
    assert_eq!(metric(port, "ferry_messages_in_flight", &[]), Some(0.0));
    assert_eq!(
        metric(port, "ferry_up", &[r#"component="sink:db""#]),
        Some(1.0)
    );
    let (is_ready, body) = ready(port).unwrap();
    assert!(is_ready, "{body}");
    assert_eq!(get(port, "/health").unwrap().0, 200);

    // The sink's Redis goes away while a message is on its way.
    sink.stop();
    push(&source, "in", 101..102);
    wait_until(Duration::from_secs(10), "/ready to say 503", || {
        ready(port).is_some_and(|(r, _)| !r)
    });
    let (_, body) = ready(port).unwrap();
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sink_state = report["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["component"] == "sink:db")
        .unwrap();
    assert_eq!(sink_state["state"], "retrying", "{body}");
    assert!(
        sink_state["error"].as_str().is_some_and(|e| !e.is_empty()),
        "{body}"
    );
    assert_eq!(
        metric(port, "ferry_up", &[r#"component="sink:db""#]),
        Some(0.0)
    );
    assert_eq!(metric(port, "ferry_messages_in_flight", &[]), Some(1.0));
    wait_until(Duration::from_secs(10), "retries to be counted", || {
        metric(port, "ferry_sink_retries_total", &[r#"sink="db""#]).is_some_and(|n| n >= 1.0)
    });

    // It comes back: the message is written, and ferry is ready again.
    sink.restart();
    wait_until(Duration::from_secs(20), "/ready to say 200 again", || {
        ready(port).is_some_and(|(r, _)| r)
    });
    wait_until(Duration::from_secs(10), "101 confirmed", || {
        confirmed(port) == Some(101.0)
    });
    assert!(sink.get("order:101").is_some());
    assert!(
        metric(port, "ferry_sink_write_seconds_count", &[r#"sink="db""#]).unwrap() >= 2.0,
        "write latencies are recorded"
    );
    drop(ferry);
}

#[test]
fn a_sink_whose_broker_is_not_there_yet_is_not_ready() {
    // The sink's server is not there yet: the source opens, the pipeline
    // does not run, and ferry must not claim to be ready.
    let source = RedisServer::start();
    let sink_port = free_port();
    let port = free_port();
    let config = format!(
        r#"
[[pipeline]]
name = "p"
source = {{ type = "redis-list", url = "{}", list = "in" }}

[[pipeline.sink]]
name = "later"
type = "redis"
url = "redis://127.0.0.1:{sink_port}"
write = "set"
key = "k:{{order_id}}"
"#,
        source.url()
    );
    let addr = format!("127.0.0.1:{port}");
    let ferry = Ferry::start_with(&config, &["--http", &addr]);
    wait_until(Duration::from_secs(10), "the endpoint", || {
        ready(port).is_some()
    });
    std::thread::sleep(Duration::from_secs(1));
    let (is_ready, body) = ready(port).unwrap();
    assert!(!is_ready, "{body}");
    assert!(body.contains(r#""component": "sink:later""#), "{body}");
    assert!(body.contains(r#""state": "retrying""#), "{body}");
    drop(ferry);
}

#[test]
fn kafka_consumer_lag_is_exported_and_drains_to_zero() {
    let kafka = Kafka::start();
    let mut redis = RedisServer::start_persistent();
    let topic = unique("lag");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(kafka.create_topic(&topic, 2));
    rt.block_on(kafka.produce_orders(&topic, 0..200));
    let port = free_port();
    let config = kafka.to_redis_config("lag", &topic, &unique("g"), &redis.url(), "", "");
    let addr = format!("127.0.0.1:{port}");
    let ferry = Ferry::start_with(&config, &["--http", &addr]);
    let lag = |port| {
        metric(
            port,
            "ferry_kafka_consumer_lag",
            &[&format!(r#"topic="{topic}""#)],
        )
    };
    wait_until(Duration::from_secs(60), "everything written", || {
        redis.dbsize() == 200
    });
    wait_until(Duration::from_secs(30), "the lag to reach 0", || {
        lag(port) == Some(0.0)
    });

    // While Redis is down nothing is committed, so the lag grows by what
    // is produced meanwhile.
    redis.stop();
    rt.block_on(kafka.produce_orders(&topic, 200..300));
    wait_until(Duration::from_secs(30), "a lag of 100", || {
        lag(port) == Some(100.0)
    });
    redis.restart();
    wait_until(Duration::from_secs(60), "the lag to drain", || {
        lag(port) == Some(0.0)
    });
    assert_eq!(redis.dbsize(), 300);
    drop(ferry);
}

#[test]
fn a_busy_http_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let source = RedisServer::start();
    let config = format!(
        "[[pipeline]]\nname = \"p\"\nsource = {{ type = \"redis-list\", url = \"{}\", list = \"in\" }}\n\
         [[pipeline.sink]]\ntype = \"redis\"\nurl = \"{}\"\nwrite = \"set\"\nkey = \"k\"\n",
        source.url(),
        source.url()
    );
    let mut ferry = Ferry::start_with(&config, &["--http", &addr]);
    let status = ferry
        .wait_timeout(Duration::from_secs(10))
        .expect("ferry exits");
    assert_eq!(status.code(), Some(2));
    let log = ferry.log();
    assert!(
        log.contains(&format!("--http {addr}: cannot listen")),
        "{log}"
    );
}

/// A finite job: generated orders at a known pace, so it lasts a few
/// seconds.
fn paced_job(redis: &RedisServer) -> String {
    format!(
        "[[pipeline]]\nname = \"job\"\nsource = {{ type = \"generate\", count = 30, rate = 12 }}\n\
         [[pipeline.sink]]\ntype = \"redis\"\nurl = \"{}\"\nwrite = \"set\"\nkey = \"o:{{order_id}}\"\n",
        redis.url()
    )
}

#[test]
fn a_finite_job_logs_how_much_of_it_is_done() {
    let redis = RedisServer::start();
    let mut ferry = Ferry::start(&paced_job(&redis));
    ferry.wait_success(Duration::from_secs(30));
    let log = ferry.log();
    assert!(log.contains("a job of 30 messages"), "{log}");
    assert!(log.contains("of=30"), "{log}");
    assert!(log.contains("done=\""), "{log}");
    assert_eq!(redis.dbsize(), 30);
}

#[test]
fn a_finite_job_on_a_terminal_shows_a_progress_bar() {
    let redis = RedisServer::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("job.toml");
    std::fs::write(&config, paced_job(&redis)).unwrap();
    // `script` runs ferry with a pseudo-terminal as stderr.
    let output = std::process::Command::new("script")
        .args(["-qefc"])
        .arg(format!("{} run {}", ferry_bin(), config.display()))
        .arg("/dev/null")
        .output()
        .expect("script (util-linux) runs ferry on a terminal");
    let shown = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{shown}");
    assert!(shown.contains("30/30 (100%)"), "{shown}");
    assert!(shown.contains("confirmed 30"), "{shown}");
    assert_eq!(redis.dbsize(), 30);
}

#[test]
fn a_kafka_copy_until_the_end_knows_its_size() {
    let kafka = Kafka::start();
    let redis = RedisServer::start();
    let topic = unique("size");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(kafka.create_topic(&topic, 3));
    rt.block_on(kafka.produce_orders(&topic, 0..250));
    let group = unique("g");
    let config = kafka.to_redis_config(
        "copy",
        &topic,
        &group,
        &redis.url(),
        r#", until = "end""#,
        "",
    );
    let mut ferry = Ferry::start(&config);
    ferry.wait_success(Duration::from_secs(60));
    assert!(
        ferry.log().contains("a job of 250 messages"),
        "{}",
        ferry.log()
    );
    assert_eq!(redis.dbsize(), 250);

    // A second copy starts from the group's commits: 100 new records.
    rt.block_on(kafka.produce_orders(&topic, 250..350));
    let mut ferry = Ferry::start(&config);
    ferry.wait_success(Duration::from_secs(60));
    assert!(
        ferry.log().contains("a job of 100 messages"),
        "{}",
        ferry.log()
    );
    assert_eq!(redis.dbsize(), 350);
}

#[test]
fn duplicates_skipped_by_an_exactly_once_sink_are_counted_per_sink() {
    let redis = RedisServer::start();
    let port = free_port();
    let config = format!(
        r#"
[[pipeline]]
name = "once"
source = {{ type = "redis-stream", url = "{url}", streams = ["in"], group = "g" }}

[[pipeline.sink]]
name = "db"
type = "redis"
url = "{url}"
write = "set"
key = "k:{{order_id}}"
exactly_once = true
"#,
        url = redis.url()
    );
    let addr = format!("127.0.0.1:{port}");
    let ferry = Ferry::start_with(&config, &["--http", &addr]);
    let _: String = redis::cmd("XADD")
        .arg("in")
        .arg("*")
        .arg("payload")
        .arg(ferry::connectors::generate::order(1))
        .query(&mut redis.conn())
        .unwrap();
    wait_until(Duration::from_secs(20), "the order to be written", || {
        redis.get("k:1").is_some()
    });
    let skipped = metric(
        port,
        "ferry_sink_duplicates_skipped_total",
        &[r#"pipeline="once""#, r#"sink="db""#],
    );
    assert_eq!(
        skipped,
        Some(0.0),
        "{:?}\n{}",
        get(port, "/metrics"),
        ferry.log()
    );
}

/// Waits until `/ready` is (or is not) 200 and its body has `needle`.
fn wait_ready(port: u16, want: bool, needle: &str, timeout: Duration, ferry: &Ferry) -> String {
    let mut last = String::new();
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Some((ready, body)) = ready(port) {
            if ready == want && body.contains(needle) {
                return body;
            }
            last = body;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "/ready never became {} with {needle:?} in {timeout:?}; last:\n{last}\n{}",
        if want { "200" } else { "503" },
        ferry.log()
    );
}

#[test]
fn a_kafka_source_on_a_missing_topic_is_not_ready_until_the_topic_exists() {
    let kafka = Kafka::start();
    let redis = RedisServer::start();
    let topic = unique("missing");
    let port = free_port();
    let config = kafka.to_redis_config("wait", &topic, &unique("g"), &redis.url(), "", "");
    let addr = format!("127.0.0.1:{port}");
    let ferry = Ferry::start_with(&config, &["--http", &addr]);
    let body = wait_ready(
        port,
        false,
        "does not exist",
        Duration::from_secs(30),
        &ferry,
    );
    assert!(body.contains(r#""component": "source""#), "{body}");
    // Still not ready a while later (the brokers are up all along).
    std::thread::sleep(Duration::from_secs(7));
    let (is_ready, body) = ready(port).unwrap();
    assert!(!is_ready, "{body}");

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(kafka.create_topic(&topic, 1));
    wait_ready(port, true, "", Duration::from_secs(60), &ferry);
}

#[test]
fn a_kafka_source_on_a_closed_port_says_why_at_once_and_does_not_flood_the_log() {
    let redis = RedisServer::start();
    let closed = free_port();
    let port = free_port();
    let config = format!(
        r#"
[[pipeline]]
name = "away"
source = {{ type = "kafka", brokers = "127.0.0.1:{closed}", topics = ["orders"], group = "g" }}

[[pipeline.sink]]
type = "redis"
url = "{}"
write = "set"
key = "order:{{order_id}}"
"#,
        redis.url()
    );
    let addr = format!("127.0.0.1:{port}");
    let ferry = Ferry::start_with(&config, &["--http", &addr]);
    let started = std::time::Instant::now();
    let body = wait_ready(
        port,
        false,
        "Connection refused",
        Duration::from_secs(3),
        &ferry,
    );
    assert!(body.contains(r#""state": "retrying""#), "{body}");
    println!(
        "closed port: /ready names the error after {:.1}s",
        started.elapsed().as_secs_f64()
    );
    std::thread::sleep(Duration::from_secs(15));
    let log = ferry.log();
    let lines = log
        .lines()
        .filter(|l| l.contains("WARN") || l.contains("ERROR"))
        .count();
    println!("closed port: {lines} warning/error lines in 15s");
    assert!(lines <= 12, "{lines} lines:\n{log}");
}

#[test]
fn a_kafka_sink_whose_broker_restarts_is_not_ready_while_it_is_away() {
    let mut tansu = TansuServer::start();
    let brokers = tansu.brokers();
    let topic = unique("restart");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(create_topic_at(&brokers, &topic, 1));
    let redis = RedisServer::start();
    let port = free_port();
    let config = format!(
        r#"
[[pipeline]]
name = "out"
source = {{ type = "redis-list", url = "{}", list = "in" }}

[[pipeline.sink]]
name = "bus"
type = "kafka"
brokers = "{brokers}"
topic = "{topic}"
"#,
        redis.url()
    );
    let addr = format!("127.0.0.1:{port}");
    let ferry = Ferry::start_with(&config, &["--http", &addr]);
    push(&redis, "in", 0..5);
    wait_ready(port, true, "", Duration::from_secs(30), &ferry);

    tansu.stop();
    let body = wait_ready(port, false, "sink:bus", Duration::from_secs(20), &ferry);
    assert!(body.contains(r#""state": "retrying""#), "{body}");
    tansu.restart();
    wait_ready(port, true, "", Duration::from_secs(60), &ferry);
}
