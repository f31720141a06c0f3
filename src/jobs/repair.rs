//! `ferry reconcile --repair`: what the right side lacks, written to it
//! through the normal sink for that side (so `exactly_once`, templates and
//! topic checks apply as in a pipeline).

use bytes::Bytes;

use super::reconcile::Side;
use super::spill::Row;
use crate::connectors::Sink;
use crate::message::Message;

/// Writes records the right side lacks, through the sink for that side.
pub struct Repair {
    pub sink: RepairSink,
    pub batch: usize,
}

pub enum RepairSink {
    Kafka(crate::connectors::kafka::KafkaSink),
    Redis(Box<crate::connectors::redis::RedisSink>),
}

impl Repair {
    /// The sink that writes into `side`: the topic, the stream (`xadd`),
    /// or keys by `key` (a template such as `order:{order_id}`, `set`).
    pub async fn open(side: &Side, key: Option<&str>) -> Result<Repair, String> {
        use crate::connectors::kafka::{KafkaSink, KafkaSinkConfig};
        use crate::connectors::redis::{RedisSink, RedisSinkConfig};
        let q = |s: &str| toml::Value::from(s).to_string();
        let sink = match side {
            Side::Kafka { brokers, topic } => {
                let c: KafkaSinkConfig =
                    toml::from_str(&format!("brokers = {}\ntopic = {}", q(brokers), q(topic)))
                        .map_err(|e| format!("--repair: {e}"))?;
                RepairSink::Kafka(
                    KafkaSink::open(
                        "reconcile",
                        &c,
                        &crate::observe::Probe::detached("reconcile", "repair"),
                    )
                    .await
                    .map_err(|e| e.to_string())?,
                )
            }
            Side::Keys { url, .. } | Side::Stream { url, .. } => {
                let (write, key) = match (side, key) {
                    (Side::Stream { stream, .. }, _) => ("xadd", stream.clone()),
                    (_, Some(key)) => ("set", key.to_owned()),
                    (_, None) => {
                        return Err("--repair into redis keys needs --repair-key, the key \
                                    template of each record (e.g. `order:{order_id}`)"
                            .to_owned());
                    }
                };
                let c: RedisSinkConfig = toml::from_str(&format!(
                    "url = {}\nwrite = {}\nkey = {}",
                    q(url),
                    q(write),
                    q(&key)
                ))
                .map_err(|e| format!("--repair: {e}"))?;
                let health = crate::observe::Health::new();
                let probe = health.probe("reconcile", "repair");
                RepairSink::Redis(Box::new(
                    RedisSink::open("reconcile", &c, &probe, &crate::position::Settled::new())
                        .await
                        .map_err(|e| e.to_string())?,
                ))
            }
            Side::File { .. } => {
                return Err("--repair writes through a sink; a file side has none".to_owned());
            }
        };
        Ok(Repair { sink, batch: 500 })
    }

    pub(super) async fn write(&mut self, rows: Vec<Row>) -> Result<u64, String> {
        if rows.is_empty() {
            return Ok(0);
        }
        let messages: Vec<Message> = rows
            .into_iter()
            .filter_map(|r| r.original)
            .map(|o| Message {
                key: o.key.map(Bytes::from),
                payload: o.payload.map(Bytes::from),
                ..Message::default()
            })
            .collect();
        let n = messages.len() as u64;
        match &mut self.sink {
            RepairSink::Kafka(s) => write_all(s, &messages).await?,
            RepairSink::Redis(s) => write_all(s.as_mut(), &messages).await?,
        }
        Ok(n)
    }
}

async fn write_all<S: Sink>(sink: &mut S, messages: &[Message]) -> Result<(), String> {
    let prepared = messages
        .iter()
        .map(|m| sink.prepare(m).map_err(|e| format!("--repair: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    let results = sink
        .write(prepared.into())
        .await
        .map_err(|e| format!("--repair: {e}"))?;
    match results.into_iter().find_map(Result::err) {
        Some(e) => Err(format!("--repair: a record was refused: {e}")),
        None => Ok(()),
    }
}
