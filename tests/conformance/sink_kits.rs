//! One kit per sink connector: how to set up its system, read back what
//! arrived, and restart the broker (see kits.rs for the source kits).

use crate::kits::{ProxiedRabbit, ProxiedRedis};
use crate::support::*;

pub trait SinkKit: Sized {
    async fn start() -> Self;
    /// The body of a `[[pipeline.sink]]` table. `strict`: the sink's key or
    /// routing template needs the payload's `order_id`, so a payload that is
    /// not a JSON order is rejected.
    fn sink(&self, strict: bool) -> String;
    /// Payloads that arrived (duplicates may be folded).
    async fn received(&self) -> Vec<String>;
    async fn restart_broker(&mut self);
    /// The proxy between ferry and the system.
    fn proxy(&self) -> &Proxy;
    /// The request the sink writes with, whose reply a scenario loses.
    fn write_request() -> Trigger;
}

pub struct RedisSinkKit {
    redis: ProxiedRedis,
}

impl SinkKit for RedisSinkKit {
    async fn start() -> Self {
        Self {
            redis: ProxiedRedis::start(true),
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
        let mut conn = self.redis.redis.conn();
        let keys: Vec<String> = redis::cmd("KEYS").arg("order:*").query(&mut conn).unwrap();
        if keys.is_empty() {
            return Vec::new();
        }
        let values: Vec<Option<String>> = redis::cmd("MGET").arg(&keys).query(&mut conn).unwrap();
        values.into_iter().flatten().collect()
    }

    async fn restart_broker(&mut self) {
        self.redis.redis.restart();
    }

    fn proxy(&self) -> &Proxy {
        &self.redis.proxy
    }

    fn write_request() -> Trigger {
        Trigger::redis("SET")
    }
}

pub struct KafkaSinkKit {
    tansu: TansuServer,
    proxy: Proxy,
}

impl SinkKit for KafkaSinkKit {
    async fn start() -> Self {
        let (tansu, proxy) = TansuServer::start_behind_proxy();
        create_topic_at(&tansu.brokers(), "received", 3).await;
        Self { tansu, proxy }
    }

    fn sink(&self, strict: bool) -> String {
        let key = if strict { "key = \"{order_id}\"\n" } else { "" };
        format!(
            "type = \"kafka\"\nbrokers = \"{}\"\ntopic = \"received\"\ncompression = \"lz4\"\n{key}",
            self.proxy.addr()
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

    fn proxy(&self) -> &Proxy {
        &self.proxy
    }

    fn write_request() -> Trigger {
        Trigger::kafka(0) // Produce
    }
}

pub struct AmqpSinkKit {
    rabbit: ProxiedRabbit,
    /// Reading a queue takes the messages out: keep what was read.
    taken: std::sync::Mutex<Vec<String>>,
}

impl SinkKit for AmqpSinkKit {
    async fn start() -> Self {
        let rabbit = ProxiedRabbit::start();
        // The same declaration the sink makes, so the test can read first.
        rabbit.vhost.declare_queue("received").await;
        Self {
            rabbit,
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
            self.rabbit.url()
        )
    }

    async fn received(&self) -> Vec<String> {
        let new = self.rabbit.vhost.drain("received").await;
        let mut taken = self.taken.lock().unwrap();
        taken.extend(new.into_iter().map(|v| String::from_utf8(v).unwrap()));
        taken.clone()
    }

    async fn restart_broker(&mut self) {
        self.rabbit.vhost.close_connections();
    }

    fn proxy(&self) -> &Proxy {
        &self.rabbit.proxy
    }

    fn write_request() -> Trigger {
        Trigger::amqp(60, 40) // basic.publish
    }
}
