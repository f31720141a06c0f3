//! Readers that look without touching: a Kafka topic read by assigned
//! partitions (no consumer group joined, nothing committed), Redis
//! streams read with `XREAD` (no group), the keys matching a pattern (the
//! keyspace source's snapshot) and JSON-lines files. `ferry reconcile` reads
//! its two sides with them and `ferry tap` follows what arrives.
//!
//! Records become ferry [`Message`]s through the connectors' own mappings.

use std::collections::{HashMap, VecDeque};
use std::io::BufRead;
use std::sync::Arc;
use std::time::Duration;

use crate::connectors::redis::connection::RedisConn;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, Message as _, Offset, TopicPartitionList};

use crate::connectors::kafka::mapping::to_message;
use crate::connectors::kafka::oauth::{BearerToken, TokenContext, hand_over_stream};
use crate::connectors::redis::access::{RedisAccess, connect};
use crate::connectors::redis::replies::parse_read_reply;
use crate::connectors::redis::source::keyspace::RedisKeyspaceSource;
use crate::connectors::redis::stream_entry::entry_message;
use crate::connectors::{Envelope, Source};
use crate::error::ConnectorError;
use crate::message::Message;
use crate::position::Mark;
use crate::values::time::Time;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Where a reader begins.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Begin {
    /// Everything there is.
    Earliest,
    /// Only what arrives from now on.
    Latest,
    /// The first record at or after a time.
    At(Time),
}

/// A Kafka reader of assigned partitions: it joins no group and commits
/// nothing, so no group's offsets move because of it.
pub struct KafkaReader {
    consumer: StreamConsumer<TokenContext>,
    topics: HashMap<String, Arc<str>>,
    /// With `to_end`: per partition, the end offset at open.
    ends: Option<HashMap<(Arc<str>, i32), i64>>,
    remaining: usize,
    pub expected: Option<u64>,
}

impl KafkaReader {
    /// `options` are extra librdkafka settings (security) as a source has.
    pub async fn open(
        brokers: &str,
        topics: &[String],
        options: &std::collections::BTreeMap<String, String>,
        bearer: Option<BearerToken>,
        begin: Begin,
        to_end: bool,
    ) -> Result<KafkaReader, String> {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", brokers)
            // Needed by librdkafka for a consumer; never joined (assign
            // only) and never committed to.
            .set("group.id", "ferry-reader")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("queued.max.messages.kbytes", "8192")
            .set(
                "enable.partition.eof",
                if to_end { "true" } else { "false" },
            );
        for (k, v) in options {
            config.set(k, v);
        }
        let consumer: StreamConsumer<TokenContext> = config
            .create_with_context(TokenContext::new(bearer))
            .map_err(|e| format!("kafka {brokers}: cannot create a consumer: {e}"))?;
        hand_over_stream(&consumer, || consumer.context().bearer.waiting()).await;
        let topics_owned = topics.to_vec();
        let (consumer, ends) = tokio::task::spawn_blocking(move || {
            let plan = assignment(&consumer, &topics_owned, begin)?;
            consumer
                .assign(&plan.0)
                .map_err(|e| format!("kafka: cannot assign partitions: {e}"))?;
            Ok::<_, String>((consumer, plan.1))
        })
        .await
        .map_err(|e| format!("kafka set-up task failed: {e}"))??;
        let expected = ends
            .values()
            .map(|(from, end)| (end - from).max(0) as u64)
            .sum();
        let ends: HashMap<(Arc<str>, i32), i64> = ends
            .into_iter()
            .filter(|(_, (from, end))| from < end)
            .map(|(p, (_, end))| (p, end))
            .collect();
        Ok(KafkaReader {
            consumer,
            topics: topics
                .iter()
                .map(|t| (t.clone(), Arc::from(t.as_str())))
                .collect(),
            remaining: ends.len(),
            ends: to_end.then_some(ends),
            expected: to_end.then_some(expected),
        })
    }

    /// The next record; `None` once every partition was read to its end
    /// (with `to_end`).
    pub async fn next(&mut self) -> Result<Option<Message>, String> {
        loop {
            if self.ends.is_some() && self.remaining == 0 {
                return Ok(None);
            }
            let record = match self.consumer.recv().await {
                Ok(record) => record,
                // The end of a partition: records up to an end can be
                // missing (compaction, transaction markers), so the
                // position, not the last offset seen, says it is done.
                Err(KafkaError::PartitionEOF(_)) => {
                    self.caught_up();
                    continue;
                }
                Err(e) => {
                    let e = ConnectorError::kafka("reading", e);
                    if !e.is_retryable() {
                        return Err(e.to_string());
                    }
                    tracing::warn!("{e}; librdkafka retries");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let topic = self
                .topics
                .get(record.topic())
                .cloned()
                .unwrap_or_else(|| Arc::from(record.topic()));
            let (partition, offset) = (record.partition(), record.offset());
            if let Some(ends) = &mut self.ends {
                let Some(end) = ends.get(&(Arc::clone(&topic), partition)).copied() else {
                    continue; // this partition had nothing to read
                };
                if offset >= end {
                    continue;
                }
                if offset + 1 >= end {
                    ends.insert((Arc::clone(&topic), partition), -1);
                    self.remaining -= 1;
                }
            }
            return Ok(Some(to_message(&record, topic)));
        }
    }
}

impl KafkaReader {
    /// Marks partitions whose position reached their end as done.
    fn caught_up(&mut self) {
        let (Some(ends), Ok(positions)) = (&mut self.ends, self.consumer.position()) else {
            return;
        };
        for ((topic, partition), end) in ends.iter_mut() {
            let at = positions
                .find_partition(topic, *partition)
                .map(|e| e.offset());
            if *end >= 0 && matches!(at, Some(Offset::Offset(o)) if o >= *end) {
                *end = -1;
                self.remaining -= 1;
            }
        }
    }
}

type Ranges = HashMap<(Arc<str>, i32), (i64, i64)>;

/// The partitions of `topics` with their start offsets, and per partition
/// (start, end at open).
fn assignment(
    consumer: &StreamConsumer<TokenContext>,
    topics: &[String],
    begin: Begin,
) -> Result<(TopicPartitionList, Ranges), String> {
    let mut ranges = HashMap::new();
    let mut at_time = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .map_err(|e| format!("kafka: reading metadata of `{topic}`: {e}"))?;
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .ok_or_else(|| format!("kafka topic `{topic}` does not exist"))?;
        for p in found.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), TIMEOUT)
                .map_err(|e| format!("kafka: reading offsets of `{topic}`: {e}"))?;
            let from = match begin {
                Begin::Earliest | Begin::At(_) => low,
                Begin::Latest => high,
            };
            ranges.insert((Arc::from(topic.as_str()), p.id()), (from, high));
            if let Begin::At(t) = begin {
                let _ = at_time.add_partition_offset(topic, p.id(), Offset::Offset(t.millis()));
            }
        }
    }
    if let Begin::At(t) = begin {
        let found = consumer
            .offsets_for_times(at_time, TIMEOUT)
            .map_err(|e| format!("kafka: finding the offsets at {t}: {e}"))?;
        for e in found.elements() {
            if let Some(range) = ranges.get_mut(&(Arc::from(e.topic()), e.partition())) {
                range.0 = match e.offset() {
                    Offset::Offset(o) => o,
                    _ => range.1,
                };
            }
        }
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, p), (from, _)) in &ranges {
        tpl.add_partition_offset(topic, *p, Offset::Offset(*from))
            .map_err(|e| format!("kafka: {e}"))?;
    }
    Ok((tpl, ranges))
}

/// Redis streams read with `XREAD` (no group: nothing pending, nothing
/// acknowledged, no group created).
pub struct StreamReader {
    conn: RedisConn,
    streams: Vec<Arc<str>>,
    /// Per stream, the last id read.
    last: Vec<String>,
    /// With `to_end`: per stream, the last id at open (`None` once there).
    ends: Option<Vec<Option<Mark>>>,
    block: Duration,
    buffer: VecDeque<Message>,
}

impl StreamReader {
    pub async fn open(
        access: &RedisAccess,
        streams: &[String],
        begin: Begin,
        to_end: bool,
    ) -> Result<StreamReader, String> {
        let block = Duration::from_secs(1);
        let mut conn = connect(access, block + TIMEOUT).map_err(|e| e.to_string())?;
        let mut last = Vec::new();
        let mut ends = Vec::new();
        for s in streams {
            let newest: redis::Value = redis::cmd("XREVRANGE")
                .arg(s)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await
                .map_err(|e| format!("redis: reading the end of stream `{s}`: {e}"))?;
            let newest = crate::connectors::redis::replies::parse_entries(newest)
                .map_err(|e| format!("redis: unexpected XREVRANGE reply: {e}"))?
                .pop()
                .map(|e| e.id);
            last.push(match begin {
                Begin::Earliest => "0-0".to_owned(),
                Begin::Latest => newest.clone().unwrap_or_else(|| "0-0".to_owned()),
                // Entries before the time: the last id of the millisecond before.
                Begin::At(t) => format!("{}-{}", (t.millis() - 1).max(0), u64::MAX),
            });
            ends.push(newest.as_deref().and_then(Mark::entry_id));
        }
        Ok(StreamReader {
            conn,
            streams: streams.iter().map(|s| Arc::from(s.as_str())).collect(),
            last,
            ends: to_end.then_some(ends),
            block,
            buffer: VecDeque::new(),
        })
    }

    pub async fn next(&mut self) -> Result<Option<Message>, String> {
        loop {
            if let Some(m) = self.buffer.pop_front() {
                return Ok(Some(m));
            }
            let reading: Vec<usize> = match &self.ends {
                Some(ends) => (0..self.streams.len())
                    .filter(|&i| ends[i].is_some())
                    .collect(),
                None => (0..self.streams.len()).collect(),
            };
            if reading.is_empty() {
                return Ok(None);
            }
            let mut c = redis::cmd("XREAD");
            c.arg("COUNT").arg(1000);
            if self.ends.is_none() {
                c.arg("BLOCK").arg(self.block.as_millis() as u64);
            }
            c.arg("STREAMS");
            for &i in &reading {
                c.arg(&*self.streams[i]);
            }
            for &i in &reading {
                c.arg(&self.last[i]);
            }
            let reply: redis::Value = c
                .query_async(&mut self.conn)
                .await
                .map_err(|e| format!("redis: XREAD: {e}"))?;
            let per_stream = parse_read_reply(reply)
                .map_err(|e| format!("redis: unexpected XREAD reply: {e}"))?;
            let mut answered = Vec::new();
            for (name, entries) in per_stream {
                let Some(i) = self.streams.iter().position(|s| **s == *name) else {
                    continue;
                };
                answered.push(i);
                for entry in entries {
                    let id = Mark::entry_id(&entry.id);
                    if let Some(ends) = &mut self.ends {
                        if id > ends[i] {
                            ends[i] = None;
                            break;
                        }
                        if id == ends[i] {
                            ends[i] = None;
                        }
                    }
                    self.last[i] = entry.id.clone();
                    let Some(fields) = entry.fields else { continue };
                    self.buffer
                        .push_back(entry_message(&self.streams[i], entry.id, &fields));
                }
            }
            // A stream with nothing more before its end is done.
            if let Some(ends) = &mut self.ends {
                for i in reading {
                    if !answered.contains(&i) {
                        ends[i] = None;
                    }
                }
            }
        }
    }
}

/// The current value of every key matching a pattern (the keyspace
/// source's snapshot, `until = "snapshot"`).
// Boxed: a keyspace source is large beside the other readers.
pub struct KeysReader(Box<RedisKeyspaceSource>);

impl KeysReader {
    pub async fn open(url: &str, pattern: &str) -> Result<KeysReader, String> {
        let config: crate::connectors::redis::RedisKeyspaceSourceConfig = toml::from_str(&format!(
            "url = {}\npattern = {}\nuntil = \"snapshot\"",
            toml::Value::from(url),
            toml::Value::from(pattern)
        ))
        .map_err(|e| format!("redis keys `{pattern}`: {e}"))?;
        let probe = crate::observe::Health::new().probe("reconcile", "keys");
        RedisKeyspaceSource::open("reconcile", &config, &probe)
            .await
            .map(|s| KeysReader(Box::new(s)))
            .map_err(|e| e.to_string())
    }

    pub async fn next(&mut self) -> Result<Option<Message>, String> {
        match self.0.next().await.map_err(|e| e.to_string())? {
            Some(Envelope { message, ack, .. }) => {
                ack.delivered();
                Ok(Some(message))
            }
            None => Ok(None),
        }
    }
}

/// A file of JSON lines, one payload per line (a queue dump).
pub struct FileReader {
    lines: std::io::Lines<std::io::BufReader<std::fs::File>>,
    line: u64,
    path: String,
}

impl FileReader {
    pub fn open(path: &str) -> Result<FileReader, String> {
        let file = std::fs::File::open(path).map_err(|e| format!("cannot open {path}: {e}"))?;
        Ok(FileReader {
            lines: std::io::BufReader::new(file).lines(),
            line: 0,
            path: path.to_owned(),
        })
    }

    pub fn read(&mut self) -> Result<Option<Message>, String> {
        loop {
            let Some(line) = self.lines.next() else {
                return Ok(None);
            };
            self.line += 1;
            let line = line.map_err(|e| format!("{}:{}: {e}", self.path, self.line))?;
            if line.trim().is_empty() {
                continue;
            }
            return Ok(Some(Message {
                payload: Some(line.into()),
                ..Message::default()
            }));
        }
    }
}
