//! RabbitMQ for tests: a vhost of its own per test on the shared server,
//! with queues declared, filled and drained.

use std::process::Command;

use super::unique;

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
        let messages: Vec<(&str, &str)> = payloads.iter().map(|p| (queue, p.as_str())).collect();
        self.publish_to("", &messages).await;
    }

    /// Publishes `(routing key, body)` pairs to `exchange`, persistent, and
    /// waits for every confirm.
    pub async fn publish_to(&self, exchange: &str, messages: &[(&str, &str)]) {
        let (_c, ch) = self.channel().await;
        ch.confirm_select(Default::default()).await.unwrap();
        let mut confirms = Vec::new();
        for (routing_key, body) in messages {
            confirms.push(
                ch.basic_publish(
                    exchange.into(),
                    (*routing_key).into(),
                    Default::default(),
                    body.as_bytes(),
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
        let deliveries = self.take_all(queue).await;
        deliveries.into_iter().map(|d| d.data).collect()
    }

    /// Takes every message out of `queue`, with its properties.
    pub async fn take_all(&self, queue: &str) -> Vec<lapin::message::Delivery> {
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
            out.push(m.delivery);
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
