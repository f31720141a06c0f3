//! Kafka for tests: a private tansu broker per test, topics made and filled,
//! offsets and committed positions read back.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};

use ferry::connectors::generate::order;
use ferry::connectors::kafka::admin;

use super::{Proxy, free_port, unique, wait_until};

/// A librdkafka client config for `brokers`, nothing else set.
pub fn client_config(brokers: &str) -> ClientConfig {
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
    produce_timed_at(
        brokers,
        topic,
        records.into_iter().map(|(k, v)| (k, v, None)),
    )
    .await;
}

/// Produces `(key, value, timestamp in ms)` records (no timestamp: the
/// producer's clock) and waits for every delivery.
pub async fn produce_timed_at(
    brokers: &str,
    topic: &str,
    records: impl IntoIterator<Item = (String, Vec<u8>, Option<i64>)>,
) {
    let producer: FutureProducer = client_config(brokers)
        .set("linger.ms", "20")
        .set("compression.type", "lz4")
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    let mut pending = Vec::new();
    for (key, value, at) in records {
        let p = producer.clone();
        let topic = topic.to_owned();
        pending.push(tokio::spawn(async move {
            let mut record = FutureRecord::to(&topic).key(&key).payload(&value);
            if let Some(at) = at {
                record = record.timestamp(at);
            }
            p.send(record, Duration::from_secs(30))
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
