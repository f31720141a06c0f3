//! Shared test tooling: real services, the real `ferry` binary.
//!
//! - Kafka: the broker at `FERRY_TEST_KAFKA_BROKERS` (scripts/test.sh starts
//!   one); every test uses its own topics and groups.
//! - Redis: a throwaway `redis-server` per test on a free port, so tests can
//!   pause or kill it and count the commands it executed.
//! - ferry: the binary cargo built, run as a child process with a config
//!   file, so that tests can signal it, kill it and measure its memory.
//! - faults: a TCP proxy between ferry and a server that cuts connections,
//!   refuses them, delays traffic and loses replies (faults.rs).
#![allow(dead_code)]

pub mod faults;
pub mod topology;

#[allow(unused_imports)]
pub use faults::{Proxy, Trigger};

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

fn client_config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

pub async fn create_topic_at(brokers: &str, topic: &str, partitions: usize) {
    admin::create_topic(&client_config(brokers), topic, partitions, 1)
        .await
        .expect("create topic");
}

pub async fn produce_at(
    brokers: &str,
    topic: &str,
    records: impl IntoIterator<Item = (String, Vec<u8>)>,
) {
    let producer: FutureProducer = client_config(brokers)
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

/// The Kafka broker of one test: the one named by `FERRY_TEST_KAFKA_BROKERS`
/// (to run the suite against a real cluster), or else a private tansu
/// started for the test and removed with it, so that tests never depend on
/// what earlier runs left in a shared broker.
pub struct Kafka {
    pub brokers: String,
    _own: Option<TansuServer>,
}

impl Kafka {
    pub fn start() -> Self {
        match std::env::var("FERRY_TEST_KAFKA_BROKERS") {
            Ok(brokers) if !brokers.is_empty() => Self {
                brokers,
                _own: None,
            },
            _ => {
                let own = TansuServer::start();
                Self {
                    brokers: own.brokers(),
                    _own: Some(own),
                }
            }
        }
    }

    pub async fn create_topic(&self, topic: &str, partitions: usize) {
        create_topic_at(&self.brokers, topic, partitions).await;
    }

    /// Produces `records` (key, value) and waits for every delivery.
    pub async fn produce(&self, topic: &str, records: impl IntoIterator<Item = (String, Vec<u8>)>) {
        produce_at(&self.brokers, topic, records).await;
    }

    /// Produces orders `ids` (see `ferry::connectors::generate::order`),
    /// keyed by id.
    pub async fn produce_orders(&self, topic: &str, ids: std::ops::Range<u64>) {
        self.produce(topic, ids.map(|n| (n.to_string(), order(n).into_bytes())))
            .await;
    }

    /// Produces orders padded to about `size` bytes each (for memory tests).
    /// The padding is pseudo-random hex, which compresses about as well as
    /// real JSON with ids does: with a run of one letter instead, a 1 MiB
    /// compressed fetch would hold 50 MiB of records.
    pub async fn produce_large_orders(&self, topic: &str, ids: std::ops::Range<u64>, size: usize) {
        self.produce(
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
    pub fn watermarks(&self, topic: &str, partitions: i32) -> Vec<(i64, i64)> {
        watermarks_at(&self.brokers, topic, partitions)
    }

    /// The group's committed offset per partition (-1 where none).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
        committed_at(&self.brokers, group, topic, partitions)
    }

    /// A Kafka -> Redis `set` pipeline config.
    pub fn to_redis_config(
        &self,
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
            brokers = self.brokers
        )
    }
}

pub fn watermarks_at(brokers: &str, topic: &str, partitions: i32) -> Vec<(i64, i64)> {
    let consumer: BaseConsumer = client_config(brokers).create().unwrap();
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .unwrap()
        })
        .collect()
}

pub fn committed_at(brokers: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = client_config(brokers)
        .set("group.id", group)
        .create()
        .unwrap();
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

/// Every record of `topic` (key, value), read from the start to the end
/// offsets it has now.
pub async fn read_topic(
    brokers: &str,
    topic: &str,
    partitions: i32,
) -> Vec<(Option<Vec<u8>>, Vec<u8>)> {
    use futures::StreamExt;
    use rdkafka::Message as _;
    use rdkafka::consumer::StreamConsumer;
    let ends: Vec<i64> = watermarks_at(brokers, topic, partitions)
        .iter()
        .map(|(_, h)| *h)
        .collect();
    let total: i64 = ends.iter().sum();
    let consumer: StreamConsumer = client_config(brokers)
        .set("group.id", unique("reader"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let mut out = Vec::new();
    let mut stream = consumer.stream();
    while (out.len() as i64) < total {
        let record = tokio::time::timeout(Duration::from_secs(30), stream.next())
            .await
            .expect("records arrive")
            .unwrap()
            .unwrap();
        out.push((
            record.key().map(<[u8]>::to_vec),
            record.payload().unwrap_or_default().to_vec(),
        ));
    }
    out
}

/// A Kafka-compatible broker of a test's own (tansu, sqlite storage), so
/// that the test can stop and restart it.
pub struct TansuServer {
    pub port: u16,
    /// The address clients are told to connect to, when not `port`.
    advertised: Option<String>,
    child: Option<Child>,
    dir: tempfile::TempDir,
}

impl TansuServer {
    pub fn start() -> Self {
        Self::start_advertising(None)
    }

    /// A broker behind a [`Proxy`]: Kafka clients connect to the address a
    /// broker advertises, not to the one they bootstrapped from, so the
    /// broker advertises the proxy and every client's traffic goes through
    /// it. [`TansuServer::brokers`] is still the broker's own address.
    pub fn start_behind_proxy() -> (Self, Proxy) {
        let port = free_port();
        let proxy = Proxy::start(&format!("127.0.0.1:{port}"));
        let mut server = Self {
            port,
            advertised: Some(proxy.addr()),
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        server.spawn();
        (server, proxy)
    }

    fn start_advertising(advertised: Option<String>) -> Self {
        let mut server = Self {
            port: free_port(),
            advertised,
            child: None,
            dir: tempfile::tempdir().unwrap(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let tansu = [
            "tansu",
            &format!(
                "{}/.cargo/bin/tansu",
                std::env::var("HOME").unwrap_or_default()
            ),
        ]
        .into_iter()
        .find(|t| {
            Command::new(t)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("tansu must be installed (scripts/setup.sh builds it)")
        .to_owned();
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let advertised = self
            .advertised
            .as_ref()
            .map_or_else(|| url.clone(), |a| format!("tcp://{a}"));
        let child = Command::new(tansu)
            .args(["broker", "--storage-engine", "sqlite://tansu.db"])
            .args([
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &advertised,
            ])
            .current_dir(self.dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(self.dir.path().join("tansu.log")).unwrap())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let port = self.port;
        wait_until(Duration::from_secs(20), "tansu to listen", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Kills the broker and starts it again on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for TansuServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A RabbitMQ virtual host of a test's own on the shared broker, deleted on
/// drop, so tests can close all its connections without touching others.
pub struct RabbitVhost {
    pub name: String,
}

fn rabbitmqctl(args: &[&str]) {
    let out = Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .output()
        .expect("rabbitmqctl");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl RabbitVhost {
    pub fn create() -> Self {
        let name = unique("ferry-test");
        rabbitmqctl(&["add_vhost", &name]);
        rabbitmqctl(&["set_permissions", "-p", &name, "guest", ".*", ".*", ".*"]);
        Self { name }
    }

    pub fn url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name)
    }

    /// Closes every client connection of this vhost, as a broker restart
    /// or a network cut would.
    pub fn close_connections(&self) {
        rabbitmqctl(&[
            "close_all_connections",
            "--vhost",
            &self.name,
            "test: simulated outage",
        ]);
    }

    pub async fn channel(&self) -> (lapin::Connection, lapin::Channel) {
        let conn = lapin::Connection::connect(&self.url(), lapin::ConnectionProperties::default())
            .await
            .unwrap();
        let channel = conn.create_channel().await.unwrap();
        (conn, channel)
    }

    pub async fn declare_queue(&self, queue: &str) {
        let (_c, ch) = self.channel().await;
        ch.queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap();
    }

    /// Publishes `payloads` to `queue` through the default exchange, with
    /// confirms.
    pub async fn publish(&self, queue: &str, payloads: &[String]) {
        let (_c, ch) = self.channel().await;
        ch.confirm_select(Default::default()).await.unwrap();
        let mut confirms = Vec::new();
        for p in payloads {
            confirms.push(
                ch.basic_publish(
                    "".into(),
                    queue.into(),
                    Default::default(),
                    p.as_bytes(),
                    lapin::BasicProperties::default().with_delivery_mode(2),
                )
                .await
                .unwrap(),
            );
        }
        for c in confirms {
            c.await.unwrap();
        }
    }

    /// Messages ready in `queue` (unacknowledged ones count once their
    /// consumer is gone).
    pub async fn queue_len(&self, queue: &str) -> u32 {
        let (_c, ch) = self.channel().await;
        ch.queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .unwrap()
        .message_count()
    }

    /// Takes every message out of `queue`.
    pub async fn drain(&self, queue: &str) -> Vec<Vec<u8>> {
        let (_c, ch) = self.channel().await;
        let mut out = Vec::new();
        while let Some(m) = ch
            .basic_get(
                queue.into(),
                lapin::options::BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap()
        {
            out.push(m.delivery.data);
        }
        out
    }
}

impl Drop for RabbitVhost {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl")
            .args(["-q", "delete_vhost", &self.name])
            .output();
    }
}

/// A throwaway redis-server on a free port, killed on drop.
pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    dir: tempfile::TempDir,
    /// Appends every write to disk (fsync always), so a restart keeps data.
    persistent: bool,
    /// More `redis-server` arguments (cluster mode, replication, memory).
    args: Vec<String>,
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
        Self::start_with(false)
    }

    /// A server whose data survives [`RedisServer::restart`].
    pub fn start_persistent() -> Self {
        Self::start_with(true)
    }

    /// A server started with more `redis-server` arguments.
    pub fn start_args(args: &[&str]) -> Self {
        let mut server = Self {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
            persistent: false,
            args: args.iter().map(|a| a.to_string()).collect(),
        };
        server.spawn();
        server
    }

    fn start_with(persistent: bool) -> Self {
        let mut server = Self {
            port: free_port(),
            child: None,
            dir: tempfile::tempdir().unwrap(),
            persistent,
            args: Vec::new(),
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let aof: &[&str] = if self.persistent {
            &["--appendonly", "yes", "--appendfsync", "always"]
        } else {
            &["--appendonly", "no"]
        };
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(aof)
            .args(&self.args)
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/setup.sh installs it)");
        self.child = Some(child);
        wait_until(Duration::from_secs(10), "redis-server to start", || {
            self.try_conn().is_some()
        });
    }

    /// Kills the server (SIGKILL) and starts it again on the same port.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
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
        self.stop();
    }
}

/// `GET path` on 127.0.0.1:port: (status, body), or `None` while nothing
/// listens.
pub fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: ferry\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.split(' ').nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// What a run delivered of the orders it sent: every order id is counted
/// once as delivered, every further copy as a duplicate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tally {
    pub sent: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
}

impl Tally {
    /// `received`: the order id of every copy that arrived, for orders
    /// `1..=sent`.
    pub fn of(sent: u64, received: impl IntoIterator<Item = u64>) -> Tally {
        let mut seen = vec![0u32; sent as usize + 1];
        let mut duplicated = 0;
        let mut foreign = 0;
        for id in received {
            match seen.get_mut(id as usize).filter(|_| id > 0) {
                Some(n) => {
                    *n += 1;
                    if *n > 1 {
                        duplicated += 1;
                    }
                }
                None => foreign += 1,
            }
        }
        assert_eq!(foreign, 0, "order ids outside 1..={sent} arrived");
        let delivered = seen[1..].iter().filter(|n| **n > 0).count() as u64;
        Tally {
            sent,
            delivered,
            lost: sent - delivered,
            duplicated,
        }
    }
}

impl std::fmt::Display for Tally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sent {}, delivered {}, lost {}, duplicated {}",
            self.sent, self.delivered, self.lost, self.duplicated
        )
    }
}

/// The order id in a payload (`{"order_id": N, ...}`).
pub fn order_id(payload: &[u8]) -> Option<u64> {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()?
        .get("order_id")?
        .as_u64()
}

/// The order ids of every element of a Redis list (read in chunks, so a
/// million elements do not make one huge reply).
pub fn order_ids_in_list(conn: &mut redis::Connection, list: &str) -> Vec<u64> {
    let len: usize = redis::cmd("LLEN").arg(list).query(conn).unwrap();
    let mut ids = Vec::with_capacity(len);
    for start in (0..len).step_by(10_000) {
        let chunk: Vec<Vec<u8>> = redis::cmd("LRANGE")
            .arg(list)
            .arg(start)
            .arg(start + 9_999)
            .query(conn)
            .unwrap();
        ids.extend(chunk.iter().map(|p| {
            order_id(p).unwrap_or_else(|| panic!("not an order: {}", String::from_utf8_lossy(p)))
        }));
    }
    ids
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
