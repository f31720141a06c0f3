//! `type = "generate"`: synthetic JSON orders, for demos, benchmarks and
//! trying a sink out before wiring a real source.
//!
//! Order `n` (counting from `start_id`) is
//! `{"order_id": n, "customer_id": "c-<n mod 977>", "amount": ..., "currency": "EUR", "items": ..., "status": "new"}`
//! with the key `n`. The values are a pure function of `n`, so a test can
//! recompute what any order must look like.

use std::time::Duration;

use serde::Deserialize;

use crate::ack::Ack;
use crate::connectors::{Envelope, Source};
use crate::error::ConnectorError;
use crate::message::Message;
use crate::values::{Count, Rate};

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerateConfig {
    /// How many orders; endless when absent.
    pub count: Option<u64>,
    /// Orders per second; as fast as the sinks take them when absent.
    pub rate: Option<Count<Rate>>,
    /// The first order id.
    #[serde(default = "one")]
    pub start_id: u64,
}

fn one() -> u64 {
    1
}

/// The payload of order `n`.
pub fn order(n: u64) -> String {
    let cents = (n * 7919) % 100_000 + 100;
    format!(
        r#"{{"order_id":{n},"customer_id":"c-{}","amount":{}.{:02},"currency":"EUR","items":{},"status":"new"}}"#,
        n % 977,
        cents / 100,
        cents % 100,
        n % 5 + 1
    )
}

pub struct GenerateSource {
    next_id: u64,
    end: Option<u64>,
    pace: Option<tokio::time::Interval>,
}

impl GenerateSource {
    pub fn open(config: &GenerateConfig) -> Self {
        let pace = config.rate.map(|r| {
            let mut i = tokio::time::interval(Duration::from_secs(1) / r.get() as u32);
            i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            i
        });
        Self {
            next_id: config.start_id,
            end: config.count.map(|c| config.start_id.saturating_add(c)),
            pace,
        }
    }
}

impl Source for GenerateSource {
    fn expected(&self) -> Option<u64> {
        self.end.map(|end| end.saturating_sub(self.next_id))
    }

    async fn next(&mut self) -> Result<Option<Envelope>, ConnectorError> {
        if self.end.is_some_and(|end| self.next_id >= end) {
            return Ok(None);
        }
        if let Some(pace) = &mut self.pace {
            pace.tick().await;
        }
        let n = self.next_id;
        self.next_id += 1;
        let message = Message {
            key: Some(n.to_string().into()),
            timestamp: Some(crate::clock::now_ms()),
            ..Message::from_payload(order(n))
        };
        Ok(Some(Envelope::new(message, Ack::none())))
    }

    async fn close(self) -> Result<(), ConnectorError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn generates_count_orders_then_ends() {
        let config: GenerateConfig = toml::from_str("count = 3\nstart_id = 10").unwrap();
        let mut s = GenerateSource::open(&config);
        let mut ids = Vec::new();
        while let Some(e) = s.next().await.unwrap() {
            let json = e.message.json().unwrap().clone();
            ids.push(json["order_id"].as_u64().unwrap());
            assert_eq!(
                e.message.key.as_deref(),
                Some(json["order_id"].to_string().as_bytes())
            );
            e.ack.delivered();
        }
        assert_eq!(ids, vec![10, 11, 12]);
    }

    #[test]
    fn orders_are_valid_json_and_deterministic() {
        let v: serde_json::Value = serde_json::from_str(&order(42)).unwrap();
        assert_eq!(v["order_id"], 42);
        assert_eq!(order(42), order(42));
    }
}
