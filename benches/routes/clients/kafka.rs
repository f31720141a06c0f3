//! Plain Kafka clients (librdkafka through rdkafka, as an application would
//! use it): a producer with ferry's sink settings, a group consumer draining
//! a topic, an end-offset count, and a live reader for latency.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};

use crate::R;
use crate::latency::Arrivals;
use crate::payload::{order_id, payload};

pub const PARTITIONS: i32 = 3;

fn config(brokers: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers);
    c
}

pub async fn create_topic(brokers: &str, topic: &str) -> R<()> {
    let admin: AdminClient<DefaultClientContext> = config(brokers).create()?;
    let new = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1));
    for r in admin.create_topics([&new], &AdminOptions::new()).await? {
        r.map_err(|(t, e)| format!("creating topic {t}: {e}"))?;
    }
    Ok(())
}

/// Counts delivery reports.
#[derive(Default)]
struct Reports {
    ok: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Reports {}

impl ProducerContext for Reports {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        match r {
            Ok(_) => self.ok.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// A producer as ferry's Kafka sink configures one (idempotent, acks=all,
/// no compression, linger 5 ms; the latency load uses linger 0), kept busy: every record is handed over as
/// soon as the queue has room and the reports are counted as they come.
pub struct Writer {
    producer: BaseProducer<Reports>,
    topic: String,
    size: usize,
}

impl Writer {
    pub fn new(brokers: &str, topic: &str, size: usize, linger_ms: u32) -> R<Self> {
        let producer: BaseProducer<Reports> = config(brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("compression.type", "none")
            .set("linger.ms", linger_ms.to_string())
            .create_with_context(Reports::default())?;
        // As ferry's sink does: without a second metadata request (which
        // connects to the broker the first named), the producer id request
        // waits for librdkafka's 500 ms timer, and so does every record.
        for _ in 0..2 {
            producer
                .client()
                .fetch_metadata(Some(topic), Duration::from_secs(10))?;
        }
        Ok(Self {
            producer,
            topic: topic.to_owned(),
            size,
        })
    }

    pub fn send(&mut self, ids: Range<u64>) -> R<()> {
        for id in ids {
            let key = id.to_string();
            let value = payload(id, self.size);
            let mut record = BaseRecord::to(&self.topic).key(&key).payload(&value);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                        record = r;
                        self.producer.poll(Duration::from_millis(5));
                    }
                    Err((e, _)) => return Err(e.into()),
                }
            }
        }
        self.producer.poll(Duration::ZERO);
        Ok(())
    }

    /// Waits for every report; an error if any record failed.
    pub fn flush(&mut self) -> R<u64> {
        self.producer.flush(Duration::from_secs(120))?;
        let ctx = self.producer.context();
        match ctx.failed.load(Ordering::Relaxed) {
            0 => Ok(ctx.ok.load(Ordering::Relaxed)),
            n => Err(format!("{n} records failed").into()),
        }
    }
}

/// Produces orders `ids` and waits for every delivery report.
pub fn produce(brokers: &str, topic: &str, ids: Range<u64>, size: usize) -> R<Duration> {
    let start = Instant::now();
    let mut w = Writer::new(brokers, topic, size, 5)?;
    w.send(ids)?;
    w.flush()?;
    Ok(start.elapsed())
}

/// A group consumer with librdkafka's defaults reads `n` records of
/// `topic` from the beginning (nothing is committed: the data stays).
pub fn consume(brokers: &str, topic: &str, n: u64, timeout: Duration) -> R<Duration> {
    let start = Instant::now();
    let consumer: BaseConsumer = config(brokers)
        .set("group.id", crate::services::unique("bench-raw"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[topic])?;
    let mut seen = 0;
    while seen < n {
        if start.elapsed() > timeout {
            return Err(format!("read {seen} of {n} records of {topic} in {timeout:?}").into());
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(_)) => seen += 1,
            Some(Err(e)) => return Err(e.into()),
            None => {}
        }
    }
    Ok(start.elapsed())
}

/// Records that arrived in `topic`, counted by reading them: tansu's
/// memory engine reports end offsets short of what it holds (9,003 of
/// 10,000 in a first run), and its sqlite engine would slow the writer.
/// The reader asks for answers within 10 ms, so it notices the last record
/// late by about that much.
pub struct Counter {
    seen: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    reader: Option<std::thread::JoinHandle<R<()>>>,
}

impl Counter {
    pub fn new(brokers: &str, topic: &str) -> R<Self> {
        let consumer: BaseConsumer = config(brokers)
            .set("group.id", crate::services::unique("bench-count"))
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "10")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS {
            tpl.add_partition_offset(topic, p, Offset::Offset(0))?;
        }
        consumer.assign(&tpl)?;
        let seen = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (seen.clone(), stop.clone());
        let reader = std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match consumer.poll(Duration::from_millis(20)) {
                    Some(Ok(_)) => {
                        s.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(Err(e)) => return Err(e.into()),
                    None => {}
                }
            }
            Ok(())
        });
        Ok(Self {
            seen,
            stop,
            reader: Some(reader),
        })
    }

    pub fn count(&mut self) -> R<u64> {
        if self.reader.as_ref().is_some_and(|r| r.is_finished()) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(r) = self.reader.take() {
                r.join().map_err(|_| "the counting reader panicked")??;
            }
        }
        Ok(self.seen.load(Ordering::Relaxed))
    }
}

impl Drop for Counter {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// Reads `topic` from its beginning as records arrive and notes each
/// order's arrival, until `stop`. Asks the broker to answer fetches within
/// 5 ms, so the reader adds little to what it measures.
pub fn read_live(
    brokers: &str,
    topic: &str,
    arrivals: Arc<Arrivals>,
    stop: Arc<AtomicBool>,
) -> R<std::thread::JoinHandle<R<()>>> {
    let consumer: BaseConsumer = config(brokers)
        .set("group.id", crate::services::unique("bench-latency"))
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "5")
        .set("fetch.min.bytes", "1")
        .create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        tpl.add_partition_offset(topic, p, Offset::Offset(0))?;
    }
    consumer.assign(&tpl)?;
    Ok(std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match consumer.poll(Duration::from_millis(50)) {
                Some(Ok(m)) => {
                    if let Some(id) = m.payload().and_then(order_id) {
                        arrivals.arrived(id);
                    }
                }
                Some(Err(e)) => return Err(e.into()),
                None => {}
            }
        }
        Ok(())
    }))
}
