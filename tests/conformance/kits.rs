//! One kit per source connector (sink_kits.rs has the sinks'): how to set
//! up its system, put messages in, count what is still unacknowledged, and
//! restart the broker. The scenarios (sources.rs, sinks.rs) do the rest,
//! identically for every kit; main.rs lists the scenarios each kit opts
//! into.
//!
//! ferry always reaches the kit's system through a fault-injection proxy
//! (`support::faults`), which passes traffic through untouched until a
//! scenario cuts connections or loses a reply. The test's own clients
//! connect to the system directly (except Kafka's, which follow the
//! broker's advertised address, the proxy's).

use std::time::Duration;

use crate::support::*;

pub trait SourceKit: Sized {
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
    /// The proxy between ferry and the system.
    fn proxy(&self) -> &Proxy;
    /// The request the source reads with, whose reply a scenario loses
    /// (`None`: the source sends nothing while it reads).
    fn read_request() -> Option<Trigger>;
}

/// A source whose system shares the messages among the members of a group
/// (Kafka consumer groups, Redis Stream consumer groups, RabbitMQ competing
/// consumers).
pub trait GroupKit: SourceKit {
    /// Whether the source gives messages a position, so that a Redis sink
    /// can write them with `exactly_once`.
    const EXACTLY_ONCE: bool;
    /// The `source = { ... }` table of group member `n`.
    fn member(&self, n: usize) -> String;
}

/// A Redis server, and a proxy in front of it for ferry.
pub struct ProxiedRedis {
    pub redis: RedisServer,
    pub proxy: Proxy,
}

impl ProxiedRedis {
    pub fn start(persistent: bool) -> Self {
        let redis = if persistent {
            RedisServer::start_persistent()
        } else {
            RedisServer::start()
        };
        let proxy = Proxy::start(&format!("127.0.0.1:{}", redis.port));
        Self { redis, proxy }
    }

    /// The url ferry uses: through the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.proxy.addr())
    }
}

/// A RabbitMQ vhost of the test, and a proxy in front of the shared broker.
pub struct ProxiedRabbit {
    pub vhost: RabbitVhost,
    pub proxy: Proxy,
}

impl ProxiedRabbit {
    pub fn start() -> Self {
        Self {
            vhost: RabbitVhost::create(),
            proxy: Proxy::start("127.0.0.1:5672"),
        }
    }

    /// The url ferry uses: through the proxy.
    pub fn url(&self) -> String {
        format!(
            "amqp://guest:guest@{}/{}",
            self.proxy.addr(),
            self.vhost.name
        )
    }
}

// ---------------------------------------------------------------- sources

pub struct KafkaSourceKit {
    tansu: TansuServer,
    proxy: Proxy,
    group: String,
}

impl SourceKit for KafkaSourceKit {
    const READY: &'static str = "kafka partitions assigned";
    const RESTART_DELAY: Duration = Duration::from_secs(7);

    async fn start() -> Self {
        let (tansu, proxy) = TansuServer::start_behind_proxy();
        create_topic_at(&tansu.brokers(), "orders", 3).await;
        Self {
            tansu,
            proxy,
            group: unique("group"),
        }
    }

    fn source(&self) -> String {
        format!(
            r#"{{ type = "kafka", brokers = "{}", topics = ["orders"], group = "{}", commit_interval = "200ms", options = {{ "session.timeout.ms" = "6000" }} }}"#,
            self.proxy.addr(),
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

    fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    fn read_request() -> Option<Trigger> {
        Some(Trigger::kafka(1)) // Fetch
    }
}

impl GroupKit for KafkaSourceKit {
    const EXACTLY_ONCE: bool = true;

    fn member(&self, _n: usize) -> String {
        self.source()
    }
}

pub struct RedisStreamSourceKit {
    redis: ProxiedRedis,
}

impl RedisStreamSourceKit {
    /// `claim_idle` far longer than any scenario: an entry this consumer
    /// lost track of must come back through its own pending entries, not
    /// through a claim a minute later.
    fn consumer(&self, consumer: &str) -> String {
        format!(
            r#"{{ type = "redis-stream", url = "{}", streams = ["orders"], group = "ferry", consumer = "{consumer}", block = "200ms", claim_idle = "10m" }}"#,
            self.redis.url()
        )
    }
}

impl SourceKit for RedisStreamSourceKit {
    async fn start() -> Self {
        Self {
            redis: ProxiedRedis::start(true),
        }
    }

    fn source(&self) -> String {
        self.consumer("c1")
    }

    async fn put(&self, payloads: &[String]) {
        let mut conn = self.redis.redis.conn();
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
            .query(&mut self.redis.redis.conn())
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
        self.redis.redis.restart();
    }

    fn proxy(&self) -> &Proxy {
        &self.redis.proxy
    }

    fn read_request() -> Option<Trigger> {
        Some(Trigger::redis("XREADGROUP"))
    }
}

impl GroupKit for RedisStreamSourceKit {
    const EXACTLY_ONCE: bool = true;

    fn member(&self, n: usize) -> String {
        self.consumer(&format!("m{n}"))
    }
}

pub struct RedisListSourceKit {
    redis: ProxiedRedis,
}

impl SourceKit for RedisListSourceKit {
    async fn start() -> Self {
        Self {
            redis: ProxiedRedis::start(true),
        }
    }

    fn source(&self) -> String {
        format!(
            r#"{{ type = "redis-list", url = "{}", list = "orders", consumer = "c1", block = "200ms" }}"#,
            self.redis.url()
        )
    }

    async fn put(&self, payloads: &[String]) {
        let mut conn = self.redis.redis.conn();
        for chunk in payloads.chunks(1000) {
            let _: () = redis::cmd("LPUSH")
                .arg("orders")
                .arg(chunk)
                .query(&mut conn)
                .unwrap();
        }
    }

    async fn outstanding(&self) -> u64 {
        let mut conn = self.redis.redis.conn();
        let waiting: u64 = redis::cmd("LLEN").arg("orders").query(&mut conn).unwrap();
        let processing: u64 = redis::cmd("LLEN")
            .arg("orders:processing:c1")
            .query(&mut conn)
            .unwrap();
        waiting + processing
    }

    async fn restart_broker(&mut self) {
        self.redis.redis.restart();
    }

    fn proxy(&self) -> &Proxy {
        &self.redis.proxy
    }

    fn read_request() -> Option<Trigger> {
        Some(Trigger::redis("LMOVE"))
    }
}

pub struct RedisPubSubSourceKit {
    redis: ProxiedRedis,
}

impl SourceKit for RedisPubSubSourceKit {
    const LIVE_ONLY: bool = true;
    const READY: &'static str = "redis pub/sub subscribed";

    async fn start() -> Self {
        Self {
            redis: ProxiedRedis::start(false),
        }
    }

    fn source(&self) -> String {
        format!(
            r#"{{ type = "redis-pubsub", url = "{}", channels = ["orders"] }}"#,
            self.redis.url()
        )
    }

    async fn put(&self, payloads: &[String]) {
        let mut conn = self.redis.redis.conn();
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
        self.redis.redis.restart();
    }

    fn proxy(&self) -> &Proxy {
        &self.redis.proxy
    }

    /// A subscriber sends nothing while it receives.
    fn read_request() -> Option<Trigger> {
        None
    }
}

pub struct RedisKeyspaceSourceKit {
    redis: ProxiedRedis,
}

impl SourceKit for RedisKeyspaceSourceKit {
    async fn start() -> Self {
        Self {
            redis: ProxiedRedis::start(true),
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
        let mut conn = self.redis.redis.conn();
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
        self.redis.redis.restart();
    }

    fn proxy(&self) -> &Proxy {
        &self.redis.proxy
    }

    /// The pipeline that reads the values of changed keys starts with
    /// their types.
    fn read_request() -> Option<Trigger> {
        Some(Trigger::redis("TYPE"))
    }
}

pub struct AmqpSourceKit {
    rabbit: ProxiedRabbit,
}

impl SourceKit for AmqpSourceKit {
    const READY: &'static str = "amqp source consuming";

    async fn start() -> Self {
        let rabbit = ProxiedRabbit::start();
        rabbit.vhost.declare_queue("orders").await;
        Self { rabbit }
    }

    fn source(&self) -> String {
        format!(
            r#"{{ type = "amqp", url = "{}", queue = "orders", prefetch = 100 }}"#,
            self.rabbit.url()
        )
    }

    async fn put(&self, payloads: &[String]) {
        for chunk in payloads.chunks(2000) {
            self.rabbit.vhost.publish("orders", chunk).await;
        }
    }

    async fn outstanding(&self) -> u64 {
        u64::from(self.rabbit.vhost.queue_len("orders").await)
    }

    async fn restart_broker(&mut self) {
        self.rabbit.vhost.close_connections();
    }

    fn proxy(&self) -> &Proxy {
        &self.rabbit.proxy
    }

    /// The broker pushes deliveries; what ferry sends meanwhile are its
    /// acks, so the deliveries that follow one are lost with the cut.
    fn read_request() -> Option<Trigger> {
        Some(Trigger::amqp(60, 80)) // basic.ack
    }
}

impl GroupKit for AmqpSourceKit {
    /// RabbitMQ gives deliveries no position.
    const EXACTLY_ONCE: bool = false;

    fn member(&self, _n: usize) -> String {
        self.source()
    }
}
