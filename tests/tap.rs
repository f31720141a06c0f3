//! `ferry tap`: shows what flows while a pipeline runs, and disturbs
//! nothing: the pipeline's committed offsets move only with the pipeline,
//! a stream gets no group, a queue keeps every message.

// Test code: a panic is the test failing, and helpers are `pub` for the
// test modules that share them.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod support;

use std::io::Read;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use support::*;

const WAIT: Duration = Duration::from_secs(60);

/// A running `ferry tap`, its output in files.
struct Tap {
    child: Child,
    dir: tempfile::TempDir,
}

impl Tap {
    fn start(args: &[&str]) -> Tap {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(ferry_bin())
            .arg("tap")
            .args(args)
            .env("FERRY_LOG", "info")
            .stdout(std::fs::File::create(dir.path().join("out")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("err")).unwrap())
            .spawn()
            .unwrap();
        Tap { child, dir }
    }

    fn read(&self, name: &str) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(self.dir.path().join(name)) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    fn wait_ready(&self) {
        wait_until(WAIT, "the tap to be ready", || {
            self.read("err").contains("tapping")
        });
    }

    /// Waits for the tap to exit 0; its standard output.
    fn finish(mut self) -> String {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "{}{}", self.read("out"), self.read("err"));
                return self.read("out");
            }
            assert!(
                start.elapsed() < WAIT,
                "tap still running\n{}{}",
                self.read("out"),
                self.read("err")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tap {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tap_shows_a_running_pipelines_messages_and_routes_without_moving_its_offsets() {
    let kafka = Kafka::start();
    let topic = unique("orders");
    kafka.create_topic(&topic, 2).await;
    kafka.produce_orders(&topic, 0..300).await;
    let redis = RedisServer::start();
    let group = unique("live");
    let config = format!(
        r#"
[[pipeline]]
name = "cache"
source = {{ type = "kafka", brokers = "{brokers}", topics = ["{topic}"], group = "{group}", commit_interval = "200ms" }}

[[pipeline.sink]]
name = "orders-db"
type = "redis"
url = "{url}"
write = "set"
key = "order:{{order_id}}"
"#,
        brokers = kafka.brokers,
        url = redis.url()
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cache.toml");
    std::fs::write(&path, &config).unwrap();
    let path = path.to_str().unwrap();
    let committed = || -> i64 { kafka.committed(&group, &topic, 2).iter().sum() };

    let pipeline = Ferry::start(&config);
    wait_until(WAIT, "the pipeline to commit everything", || {
        committed() == 300
    });

    // From the beginning, while the pipeline runs.
    let out = Tap::start(&["--config", path, "--from", "earliest", "--count", "300"]).finish();
    let shown = out
        .matches(&format!("kafka topic={topic} partition="))
        .count();
    assert_eq!(shown, 300, "{out}");
    assert_eq!(out.matches("  → orders-db\n").count(), 300, "{out}");
    assert!(out.contains("key=7"), "{out}");
    assert_eq!(committed(), 300, "the pipeline's offsets did not move");
    assert_eq!(
        kafka.committed("ferry-reader", &topic, 2),
        vec![-1, -1],
        "the tap committed nothing"
    );

    // New records reach both the tap and the pipeline: the tap took none.
    let tap = Tap::start(&[
        "--config",
        path,
        "--count",
        "20",
        "--filter",
        ".order_id >= 300",
    ]);
    tap.wait_ready();
    kafka.produce_orders(&topic, 300..320).await;
    let out = tap.finish();
    assert_eq!(out.matches("kafka topic=").count(), 20, "{out}");
    wait_until(WAIT, "the pipeline to take the new records", || {
        committed() == 320 && redis.get("order:319").is_some()
    });
    drop(pipeline);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_tap_reads_without_a_group() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    for n in 0..5 {
        let _: String = redis::cmd("XADD")
            .arg("orders")
            .arg("*")
            .arg("payload")
            .arg(format!(r#"{{"order_id":{n},"status":"paid"}}"#))
            .query(&mut conn)
            .unwrap();
    }
    let target = format!("{}?stream=orders", redis.url());
    let out = Tap::start(&[
        &target,
        "--from",
        "earliest",
        "--count",
        "2",
        "--filter",
        ".order_id >= 3",
    ])
    .finish();
    assert_eq!(out.matches("redis stream=orders id=").count(), 2, "{out}");
    assert!(out.contains(r#"{"order_id":3,"status":"paid"}"#), "{out}");
    let groups: Vec<redis::Value> = redis::cmd("XINFO")
        .arg("GROUPS")
        .arg("orders")
        .query(&mut conn)
        .unwrap();
    assert!(groups.is_empty(), "no group was created");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_exchange_tap_copies_messages_and_the_queue_keeps_them_all() {
    let vhost = RabbitVhost::create();
    let (_conn, ch) = vhost.channel().await;
    ch.exchange_declare(
        "shop".into(),
        lapin::ExchangeKind::Topic,
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();
    vhost.declare_queue("emails").await;
    ch.queue_bind(
        "emails".into(),
        "shop".into(),
        "#".into(),
        Default::default(),
        Default::default(),
    )
    .await
    .unwrap();

    let target = format!("{}?exchange=shop&routing_key=order.*", vhost.url());
    let tap = Tap::start(&[&target, "--count", "3"]);
    tap.wait_ready();
    ch.confirm_select(Default::default()).await.unwrap();
    for n in 0..3 {
        ch.basic_publish(
            "shop".into(),
            "order.paid".into(),
            Default::default(),
            format!(r#"{{"order_id":{n}}}"#).as_bytes(),
            Default::default(),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    }
    let out = tap.finish();
    assert_eq!(out.matches("routing_key=order.paid").count(), 3, "{out}");
    assert!(out.contains(r#"{"order_id":2}"#), "{out}");
    assert_eq!(
        vhost.queue_len("emails").await,
        3,
        "the queue kept them all"
    );
}

/// Tapping a pipeline logs in as the pipeline does: its `password` is a
/// setting of its own, not part of the URL.
#[tokio::test(flavor = "multi_thread")]
async fn a_pipeline_tap_logs_in_with_the_pipelines_own_password() {
    let redis = RedisServer::start();
    let mut conn = redis.conn();
    for n in 0..3 {
        let _: String = redis::cmd("XADD")
            .arg("orders")
            .arg("*")
            .arg("payload")
            .arg(format!(r#"{{"order_id":{n}}}"#))
            .query(&mut conn)
            .unwrap();
    }
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("requirepass")
        .arg("tap-secret")
        .query(&mut conn)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[[pipeline]]
name = "guarded"
source = {{ type = "redis-stream", url = "redis://127.0.0.1:{}", password = "tap-secret", streams = ["orders"], group = "g" }}
[[pipeline.sink]]
type = "redis"
url = "redis://127.0.0.1:{0}"
password = "tap-secret"
write = "set"
key = "order:{{order_id}}"
"#,
            redis.port
        ),
    )
    .unwrap();
    let out = Tap::start(&[
        "--config",
        config.to_str().unwrap(),
        "--from",
        "earliest",
        "--count",
        "3",
    ])
    .finish();
    assert_eq!(out.matches("redis stream=orders id=").count(), 3, "{out}");
}
