//! One kit per connector: how to set up its system, put messages in or
//! read them back, count what is still unacknowledged, and restart the
//! broker. The suite (suite.rs) does the rest, identically for every kit.

use std::time::Duration;

use crate::support::*;

/// What a source promises when ferry stops or crashes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Guarantee {
    /// Every message is delivered at least once, across restarts and crashes.
    AtLeastOnce,
    /// The latest value of every key is delivered (keyspace with snapshot).
    LatestState,
    /// Messages sent while ferry is down are lost (pub/sub).
    AtMostOnce,
}

pub trait SourceKit: Sized {
    const GUARANTEE: Guarantee;
    /// Messages only reach a running subscriber (pub/sub).
    const LIVE_ONLY: bool = false;
    /// A log line saying the source is ready to receive.
    const READY: &'static str = "pipeline running";
    /// Wait this long before restarting a killed ferry (Kafka: until the
    /// dead member's session expired).
    const RESTART_DELAY: Duration = Duration::ZERO;

    async fn start() -> Self;
    /// The `source = { ... }` inline table.
    fn source(&self) -> String;
    /// Puts payloads into the system, in order.
    async fn put(&self, payloads: &[String]);
    /// Messages the system still holds as not acknowledged.
    async fn outstanding(&self) -> u64;
    /// Kills and restarts the broker (or cuts every connection).
    async fn restart_broker(&mut self);
}

pub trait SinkKit: Sized {
    async fn start() -> Self;
    /// The body of a `[[pipeline.sink]]` table. `strict`: the sink's key or
    /// routing template needs the payload's `order_id`, so a payload that is
    /// not a JSON order is rejected.
    fn sink(&self, strict: bool) -> String;
    /// Payloads that arrived (duplicates may be folded).
    async fn received(&self) -> Vec<String>;
    async fn restart_broker(&mut self);
}

// ---------------------------------------------------------------- sources

pub struct KafkaSourceKit {
    tansu: TansuServer,
    group: String,
}

impl SourceKit for KafkaSourceKit {
    const GUARANTEE: Guarantee = Guarantee::AtLeastOnce;
    const READY: &'static str = "kafka partitions assigned";
    const RESTART_DELAY: Duration = Duration::from_secs(7);

    async fn start() -> Self {
        let tansu = TansuServer::start();
        create_topic_at(&tansu.brokers(), "orders", 3).await;
        Self {
            tansu,
            group: unique("group"),
        }
    }

    fn source(&self) -> String {
        format!(
            r#"{{ type = "kafka", brokers = "{}", topics = ["orders"], group = "{}", commit_interval = "200ms", options = {{ "session.timeout.ms" = "6000" }} }}"#,
            self.tansu.brokers(),
            self.group
        )
    }

    async fn put(&self, payloads: &[String]) {
        let records = payloads
            .iter()
            .enumerate()
            .map(|(i, p)| (i.to_string(), p.clone().into_bytes()));
        produce_at(&self.tansu.brokers(), "orders", records).await;
    }

    async fn outstanding(&self) -> u64 {
        let b = self.tansu.brokers();
        let ends = watermarks_at(&b, "orders", 3);
        let done = committed_at(&b, &self.group, "orders", 3);
        ends.iter()
            .zip(done)
            .map(|((low, high), c)| (high - c.max(*low)).max(0) as u64)
            .sum()
    }

    async fn restart_broker(&mut self) {
        self.tansu.restart();
    }
}

pub struct RedisStreamSourceKit {
    redis: RedisServer,
}

impl SourceKit for RedisStreamSourceKit {
    const GUARANTEE: Guarantee = Guarantee::AtLeastOnce;

    async fn start() -> Self {
        Self {
            redis: RedisServer::start_persistent(),
        }
    }

    fn source(&self) -> String {
        format!(
            r#"{{ type = "redis-stream", url = "{}", streams = ["orders"], group = "ferry", consumer = "c1", block = "200ms" }}"#,
            self.redis.url()
        )
    }

    async fn put(&self, payloads: &[String]) {
        let mut conn = self.redis.conn();
        for chunk in payloads.chunks(1000) {
            let mut pipe = redis::pipe();
            for p in chunk {
                pipe.cmd("XADD")
                    .arg("orders")
                    .arg("*")
                    .arg("payload")
                    .arg(p)
                    .ignore();
            }
            pipe.exec(&mut conn).unwrap();
        }
    }

    async fn outstanding(&self) -> u64 {
        let groups: Vec<std::collections::HashMap<String, redis::Value>> = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg("orders")
            .query(&mut self.redis.conn())
            .unwrap_or_default();
        let num = |g: &std::collections::HashMap<String, redis::Value>, k: &str| match g.get(k) {
            Some(redis::Value::Int(n)) => *n as u64,
            _ => 0,
        };
        groups
            .iter()
            .map(|g| num(g, "pending") + num(g, "lag"))
            .sum()
    }

    async fn restart_broker(&mut self) {
        self.redis.restart();
    }
}

pub struct RedisListSourceKit {
    redis: RedisServer,
}

impl SourceKit for RedisListSourceKit {
    const GUARANTEE: Guarantee = Guarantee::AtLeastOnce;

    async fn start() -> Self {
        Self {
            redis: RedisServer::start_persistent(),
        }
    }

    fn source(&self) -> String {
        format!(
            r#"{{ type = "redis-list", url = "{}", list = "orders", consumer = "c1", block = "200ms" }}"#,
            self.redis.url()
        )
    }

    async fn put(&self, payloads: &[String]) {
        let mut conn = self.redis.conn();
        for chunk in payloads.chunks(1000) {
            let _: () = redis::cmd("LPUSH")
                .arg("orders")
                .arg(chunk)
                .query(&mut conn)
                .unwrap();
        }
    }

    async fn outstanding(&self) -> u64 {
        let mut conn = self.redis.conn();
        let waiting: u64 = redis::cmd("LLEN").arg("orders").query(&mut conn).unwrap();
        let processing: u64 = redis::cmd("LLEN")
            .arg("orders:processing:c1")
            .query(&mut conn)
            .unwrap();
        waiting + processing
    }

    async fn restart_broker(&mut self) {
        self.redis.restart();
    }
}

pub struct RedisPubSubSourceKit {
    redis: RedisServer,
}

impl SourceKit for RedisPubSubSourceKit {
    const GUARANTEE: Guarantee = Guarantee::AtMostOnce;
    const LIVE_ONLY: bool = true;
    const READY: &'static str = "redis pub/sub subscribed";

    async fn start() -> Self {
        Self {
            redis: RedisServer::start(),
        }
    }

    fn source(&self) -> String {
        format!(
            r#"{{ type = "redis-pubsub", url = "{}", channels = ["orders"] }}"#,
            self.redis.url()
        )
    }

    async fn put(&self, payloads: &[String]) {
        let mut conn = self.redis.conn();
        for chunk in payloads.chunks(1000) {
            let mut pipe = redis::pipe();
            for p in chunk {
                pipe.cmd("PUBLISH").arg("orders").arg(p).ignore();
            }
            pipe.exec(&mut conn).unwrap();
        }
    }

    async fn outstanding(&self) -> u64 {
        0
    }

    async fn restart_broker(&mut self) {
        self.redis.restart();
    }
}

pub struct RedisKeyspaceSourceKit {
    redis: RedisServer,
}

impl SourceKit for RedisKeyspaceSourceKit {
    const GUARANTEE: Guarantee = Guarantee::LatestState;

    async fn start() -> Self {
        Self {
            redis: RedisServer::start_persistent(),
        }
    }

    fn source(&self) -> String {
        format!(
            r#"{{ type = "redis-keyspace", url = "{}", pattern = "order:*", configure_notifications = true }}"#,
            self.redis.url()
        )
    }

    /// Each payload becomes the value of its own key.
    async fn put(&self, payloads: &[String]) {
        let mut conn = self.redis.conn();
        let start: u64 = redis::cmd("INCRBY")
            .arg("put-counter")
            .arg(payloads.len())
            .query(&mut conn)
            .unwrap();
        let first = start - payloads.len() as u64;
        for (chunk_no, chunk) in payloads.chunks(1000).enumerate() {
            let mut pipe = redis::pipe();
            for (i, p) in chunk.iter().enumerate() {
                let n = first + (chunk_no * 1000 + i) as u64;
                pipe.cmd("SET").arg(format!("order:{n}")).arg(p).ignore();
            }
            pipe.exec(&mut conn).unwrap();
        }
    }

    async fn outstanding(&self) -> u64 {
        0
    }

    async fn restart_broker(&mut self) {
        self.redis.restart();
    }
}

pub struct AmqpSourceKit {
    vhost: RabbitVhost,
}

impl SourceKit for AmqpSourceKit {
    const GUARANTEE: Guarantee = Guarantee::AtLeastOnce;
    const READY: &'static str = "amqp source consuming";

    async fn start() -> Self {
        let vhost = RabbitVhost::create();
        vhost.declare_queue("orders").await;
        Self { vhost }
    }

    fn source(&self) -> String {
        format!(
            r#"{{ type = "amqp", url = "{}", queue = "orders", prefetch = 100 }}"#,
            self.vhost.url()
        )
    }

    async fn put(&self, payloads: &[String]) {
        for chunk in payloads.chunks(2000) {
            self.vhost.publish("orders", chunk).await;
        }
    }

    async fn outstanding(&self) -> u64 {
        u64::from(self.vhost.queue_len("orders").await)
    }

    async fn restart_broker(&mut self) {
        self.vhost.close_connections();
    }
}

// ------------------------------------------------------------------ sinks

pub struct RedisSinkKit {
    redis: RedisServer,
}

impl SinkKit for RedisSinkKit {
    async fn start() -> Self {
        Self {
            redis: RedisServer::start_persistent(),
        }
    }

    fn sink(&self, strict: bool) -> String {
        let key = if strict {
            "order:{order_id}"
        } else {
            "order:{key}"
        };
        format!(
            "type = \"redis\"\nurl = \"{}\"\nwrite = \"set\"\nkey = \"{key}\"\n",
            self.redis.url()
        )
    }

    async fn received(&self) -> Vec<String> {
        let mut conn = self.redis.conn();
        let keys: Vec<String> = redis::cmd("KEYS").arg("order:*").query(&mut conn).unwrap();
        if keys.is_empty() {
            return Vec::new();
        }
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut conn).unwrap();
        values.into_iter().flatten().collect()
    }

    async fn restart_broker(&mut self) {
        self.redis.restart();
    }
}

pub struct KafkaSinkKit {
    tansu: TansuServer,
}

impl SinkKit for KafkaSinkKit {
    async fn start() -> Self {
        let tansu = TansuServer::start();
        create_topic_at(&tansu.brokers(), "received", 3).await;
        Self { tansu }
    }

    fn sink(&self, strict: bool) -> String {
        let key = if strict { "key = \"{order_id}\"\n" } else { "" };
        format!(
            "type = \"kafka\"\nbrokers = \"{}\"\ntopic = \"received\"\ncompression = \"lz4\"\n{key}",
            self.tansu.brokers()
        )
    }

    async fn received(&self) -> Vec<String> {
        read_topic(&self.tansu.brokers(), "received", 3)
            .await
            .into_iter()
            .map(|(_, v)| String::from_utf8(v).unwrap())
            .collect()
    }

    async fn restart_broker(&mut self) {
        self.tansu.restart();
    }
}

pub struct AmqpSinkKit {
    vhost: RabbitVhost,
    /// Reading a queue takes the messages out: keep what was read.
    taken: std::sync::Mutex<Vec<String>>,
}

impl SinkKit for AmqpSinkKit {
    async fn start() -> Self {
        let vhost = RabbitVhost::create();
        // The same declaration the sink makes, so the test can read first.
        vhost.declare_queue("received").await;
        Self {
            vhost,
            taken: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Publishes to a topic exchange the sink declares itself, bound to the
    /// queue the test reads.
    fn sink(&self, strict: bool) -> String {
        let routing_key = if strict {
            "order.{order_id}"
        } else {
            "order.any"
        };
        format!(
            r#"type = "amqp"
url = "{}"
exchange = "shop"
routing_key = "{routing_key}"
declare = {{ exchanges = [{{ name = "shop", kind = "topic" }}], queues = [{{ name = "received" }}], bindings = [{{ queue = "received", exchange = "shop", routing_key = "order.#" }}] }}
"#,
            self.vhost.url()
        )
    }

    async fn received(&self) -> Vec<String> {
        let new = self.vhost.drain("received").await;
        let mut taken = self.taken.lock().unwrap();
        taken.extend(new.into_iter().map(|v| String::from_utf8(v).unwrap()));
        taken.clone()
    }

    async fn restart_broker(&mut self) {
        self.vhost.close_connections();
    }
}
