//! Shared test tooling: real services, the real `ferry` binary.
//!
//! - Kafka: the broker at `FERRY_TEST_KAFKA_BROKERS` (scripts/test.sh starts
//!   one); every test uses its own topics and groups.
//! - Redis: a throwaway `redis-server` per test on a free port, so tests can
//!   pause or kill it and count the commands it executed.
//! - ferry: the binary cargo built, run as a child process with a config
//!   file, so that tests can signal it, kill it and measure its memory.
#![allow(dead_code)]

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use ferry::connectors::generate::order;
use ferry::connectors::kafka::admin;

pub fn kafka_brokers() -> String {
    std::env::var("FERRY_TEST_KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".into())
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!(
        "{prefix}-{}-{now}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn kafka_config() -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", kafka_brokers());
    c
}

pub async fn create_topic(topic: &str, partitions: usize) {
    admin::create_topic(&kafka_config(), topic, partitions, 1)
        .await
        .expect("create topic");
}

/// Produces `payloads` (key, value) to `topic` and waits for every delivery.
pub async fn produce(topic: &str, records: impl IntoIterator<Item = (String, Vec<u8>)>) {
    let producer: FutureProducer = kafka_config()
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let mut pending = Vec::new();
    for (key, value) in records {
        let p = producer.clone();
        let topic = topic.to_owned();
        pending.push(tokio::spawn(async move {
            p.send(
                FutureRecord::to(&topic).key(&key).payload(&value),
                Duration::from_secs(30),
            )
            .await
            .map(|_| ())
            .map_err(|(e, _)| e)
        }));
        if pending.len() >= 5000 {
            for p in pending.drain(..) {
                p.await.unwrap().expect("delivery");
            }
        }
    }
    for p in pending {
        p.await.unwrap().expect("delivery");
    }
}

/// Produces orders `ids` (see `ferry::connectors::generate::order`), keyed
/// by id.
pub async fn produce_orders(topic: &str, ids: std::ops::Range<u64>) {
    produce(topic, ids.map(|n| (n.to_string(), order(n).into_bytes()))).await;
}

/// Produces orders padded to about `size` bytes each (for memory tests).
/// The padding is pseudo-random hex, which compresses about as well as real
/// JSON with ids does: with a run of one letter instead, a 1 MiB compressed
/// fetch would hold 50 MiB of records.
pub async fn produce_large_orders(topic: &str, ids: std::ops::Range<u64>, size: usize) {
    produce(
        topic,
        ids.map(|n| {
            let base = order(n);
            let mut x = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let pad: String = (0..size.saturating_sub(base.len() + 12))
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    char::from_digit((x % 16) as u32, 16).unwrap_or('0')
                })
                .collect();
            let padded = format!("{},\"pad\":\"{pad}\"}}", &base[..base.len() - 1]);
            (n.to_string(), padded.into_bytes())
        }),
    )
    .await;
}

/// (low, high) watermarks of every partition.
pub fn watermarks(topic: &str, partitions: i32) -> Vec<(i64, i64)> {
    let consumer: BaseConsumer = kafka_config().create().unwrap();
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
        })
        .collect()
}

/// The group's committed offset per partition (-1 where none).
pub fn committed(group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = kafka_config().set("group.id", group).create().unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(topic, p);
    }
    let c = consumer
        .committed_offsets(tpl, Duration::from_secs(10))
        .unwrap();
    (0..partitions)
        .map(|p| match c.find_partition(topic, p).unwrap().offset() {
            Offset::Offset(o) => o,
            _ => -1,
        })
        .collect()
}

/// A throwaway redis-server on a free port, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl RedisServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/setup.sh installs it)");
        let server = Self {
            port,
            child,
            _dir: dir,
        };
        wait_until(Duration::from_secs(10), "redis-server to start", || {
            server.try_conn().is_some()
        });
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn try_conn(&self) -> Option<redis::Connection> {
        let mut c = redis::Client::open(self.url())
            .ok()?
            .get_connection()
            .ok()?;
        redis::cmd("PING").query::<String>(&mut c).ok()?;
        Some(c)
    }

    pub fn conn(&self) -> redis::Connection {
        self.try_conn().expect("redis connection")
    }

    pub fn dbsize(&self) -> u64 {
        redis::cmd("DBSIZE").query(&mut self.conn()).unwrap()
    }

    pub fn get(&self, key: &str) -> Option<String> {
        redis::cmd("GET").arg(key).query(&mut self.conn()).unwrap()
    }

    /// How many times Redis executed `command` (from INFO commandstats).
    pub fn calls(&self, command: &str) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query(&mut self.conn())
            .unwrap();
        let prefix = format!("cmdstat_{}:calls=", command.to_lowercase());
        info.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .and_then(|rest| rest.split(',').next())
            .map_or(0, |n| n.parse().unwrap())
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `check` until it is true, or panics after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `ferry run CONFIG` process.
pub struct Ferry {
    child: Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Ferry {
    pub fn start(config: &str) -> Self {
        Self::start_with(config, &[])
    }

    pub fn start_with(config: &str, extra_args: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.toml");
        std::fs::write(&path, config).unwrap();
        let log = dir.path().join("ferry.log");
        let child = Command::new(ferry_bin())
            .arg("run")
            .arg(&path)
            .args(["--progress-every", "1s"])
            .args(extra_args)
            .env("FERRY_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn ferry");
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// Waits for the process to exit; `None` if it is still running.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if start.elapsed() > timeout {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a successful exit, showing the log if it fails.
    pub fn wait_success(&mut self, timeout: Duration) {
        match self.wait_timeout(timeout) {
            Some(s) if s.success() => {}
            Some(s) => panic!("ferry exited with {s}\n{}", self.log()),
            None => panic!("ferry still running after {timeout:?}\n{}", self.log()),
        }
    }

    /// Resident memory in KiB, from /proc.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }

    pub fn log(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

impl Drop for Ferry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn ferry_bin() -> &'static str {
    env!("CARGO_BIN_EXE_ferry")
}

/// A Kafka -> Redis `set` pipeline config.
pub fn kafka_to_redis_config(
    name: &str,
    topic: &str,
    group: &str,
    redis_url: &str,
    extra_source: &str,
    extra_pipeline: &str,
) -> String {
    format!(
        r#"
[[pipeline]]
name = "{name}"
source = {{ type = "kafka", brokers = "{brokers}", topics = ["{topic}"], group = "{group}"{extra_source} }}
{extra_pipeline}

[[pipeline.sink]]
type = "redis"
url = "{redis_url}"
write = "set"
key = "order:{{order_id}}"
"#,
        brokers = kafka_brokers()
    )
}
