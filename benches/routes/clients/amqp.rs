//! Plain RabbitMQ clients (lapin, as an application would use it): a
//! confirming publisher that keeps a window of publishes in flight, a
//! consumer that acknowledges with `multiple`, a queue count, and a live
//! reader for latency.

use std::collections::VecDeque;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::FieldTable;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};

use crate::latency::Arrivals;
use crate::payload::{order_id, payload};
use crate::{R, rt};

/// Publishes awaiting confirms once this many are outstanding.
pub const CONFIRM_WINDOW: usize = 1000;
/// The plain consumer's prefetch, and how often it acknowledges (`multiple`).
pub const PREFETCH: u16 = 1000;
pub const ACK_EVERY: u64 = 100;

async fn channel(url: &str) -> R<(Connection, Channel)> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    Ok((conn, ch))
}

fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..Default::default()
    }
}

pub fn declare(url: &str, queue: &str) -> R<()> {
    rt().block_on(async {
        let (_c, ch) = channel(url).await?;
        ch.queue_declare(queue.into(), durable(), FieldTable::default())
            .await?;
        Ok(())
    })
}

/// A fanout exchange feeding `queues`: one load reaches ferry's queue and
/// the plain reader's queue alike.
pub fn declare_fanout(url: &str, exchange: &str, queues: &[&str]) -> R<()> {
    rt().block_on(async {
        let (_c, ch) = channel(url).await?;
        ch.exchange_declare(
            exchange.into(),
            ExchangeKind::Fanout,
            ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
        for q in queues {
            ch.queue_declare((*q).into(), durable(), FieldTable::default())
                .await?;
            ch.queue_bind(
                (*q).into(),
                exchange.into(),
                "".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        Ok(())
    })
}

/// Persistent, mandatory publishes to `exchange` with `routing_key`, as
/// ferry's AMQP sink sends them.
pub struct Writer {
    _conn: Connection,
    ch: Channel,
    exchange: String,
    routing_key: String,
    size: usize,
    confirms: bool,
    pending: VecDeque<lapin::PublisherConfirm>,
}

impl Writer {
    /// With `confirms`, publisher confirms are on and at most
    /// [`CONFIRM_WINDOW`] are outstanding.
    pub fn new(
        url: &str,
        exchange: &str,
        routing_key: &str,
        size: usize,
        confirms: bool,
    ) -> R<Self> {
        rt().block_on(async {
            let (conn, ch) = channel(url).await?;
            if confirms {
                ch.confirm_select(ConfirmSelectOptions::default()).await?;
            }
            Ok(Self {
                _conn: conn,
                ch,
                exchange: exchange.to_owned(),
                routing_key: routing_key.to_owned(),
                size,
                confirms,
                pending: VecDeque::new(),
            })
        })
    }

    pub fn send(&mut self, ids: Range<u64>) -> R<()> {
        rt().block_on(async {
            for id in ids {
                let confirm = self
                    .ch
                    .basic_publish(
                        self.exchange.as_str().into(),
                        self.routing_key.as_str().into(),
                        BasicPublishOptions {
                            mandatory: true,
                            immediate: false,
                        },
                        &payload(id, self.size),
                        BasicProperties::default().with_delivery_mode(2),
                    )
                    .await?;
                if self.confirms {
                    self.pending.push_back(confirm);
                    while self.pending.len() >= CONFIRM_WINDOW {
                        if let Some(c) = self.pending.pop_front() {
                            check(c.await?)?;
                        }
                    }
                }
            }
            Ok(())
        })
    }

    pub fn flush(&mut self) -> R<()> {
        rt().block_on(async {
            while let Some(c) = self.pending.pop_front() {
                check(c.await?)?;
            }
            Ok(())
        })
    }
}

fn check(c: Confirmation) -> R<()> {
    match c {
        Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
        Confirmation::Ack(Some(_)) => Err("a publish was returned as unroutable".into()),
        Confirmation::Nack(_) => Err("a publish was nacked".into()),
    }
}

/// Publishes orders `ids` to `queue` (default exchange) with confirms.
pub fn publish(url: &str, queue: &str, ids: Range<u64>, size: usize) -> R<Duration> {
    let start = Instant::now();
    let mut w = Writer::new(url, "", queue, size, true)?;
    w.send(ids)?;
    w.flush()?;
    Ok(start.elapsed())
}

/// Consumes `n` messages of `queue` with prefetch [`PREFETCH`], one
/// `basic.ack` with `multiple` per [`ACK_EVERY`] deliveries.
pub fn consume(url: &str, queue: &str, n: u64, timeout: Duration) -> R<Duration> {
    let start = Instant::now();
    rt().block_on(async {
        let (_c, ch) = channel(url).await?;
        ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                "bench-raw".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut seen = 0u64;
        while seen < n {
            let left = timeout.saturating_sub(start.elapsed());
            let Ok(next) = tokio::time::timeout(left, consumer.next()).await else {
                return Err(
                    format!("read {seen} of {n} messages of {queue} in {timeout:?}").into(),
                );
            };
            let Some(delivery) = next else {
                return Err("the consumer was cancelled".into());
            };
            let delivery = delivery?;
            seen += 1;
            if seen.is_multiple_of(ACK_EVERY) || seen == n {
                ch.basic_ack(delivery.delivery_tag, BasicAckOptions { multiple: true })
                    .await?;
            }
        }
        Ok::<_, crate::Error>(())
    })?;
    Ok(start.elapsed())
}

/// Messages ready in a queue.
pub struct Counter {
    _conn: Connection,
    ch: Channel,
    queue: String,
}

impl Counter {
    pub fn new(url: &str, queue: &str) -> R<Self> {
        rt().block_on(async {
            let (conn, ch) = channel(url).await?;
            Ok(Self {
                _conn: conn,
                ch,
                queue: queue.to_owned(),
            })
        })
    }

    pub fn count(&mut self) -> R<u64> {
        rt().block_on(async {
            let q = self
                .ch
                .queue_declare(
                    self.queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            Ok(u64::from(q.message_count()))
        })
    }
}

/// Consumes `queue` (no acknowledgements, nothing in the way) and notes
/// each order's arrival, until `stop`.
pub fn read_live(
    url: &str,
    queue: &str,
    arrivals: Arc<Arrivals>,
    stop: Arc<AtomicBool>,
) -> R<std::thread::JoinHandle<R<()>>> {
    let (conn, ch, mut consumer) = rt().block_on(async {
        let (conn, ch) = channel(url).await?;
        let consumer = ch
            .basic_consume(
                queue.into(),
                "bench-latency".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        Ok::<_, crate::Error>((conn, ch, consumer))
    })?;
    Ok(std::thread::spawn(move || {
        let _keep = (conn, ch);
        rt().block_on(async {
            while !stop.load(Ordering::Relaxed) {
                match tokio::time::timeout(Duration::from_millis(50), consumer.next()).await {
                    Ok(Some(d)) => {
                        if let Some(id) = order_id(&d?.data) {
                            arrivals.arrived(id);
                        }
                    }
                    Ok(None) => return Err("the consumer was cancelled".into()),
                    Err(_) => {}
                }
            }
            Ok(())
        })
    }))
}
