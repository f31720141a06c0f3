//! Kafka records as they are on the wire (keys, values, headers, tombstones),
//! produced and read back.

use super::*;

/// A Kafka record as it is on the wire: value `None` is a tombstone, a
/// header value `None` is a null header.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Record {
    pub(crate) key: Option<Vec<u8>>,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    pub(crate) fn new(key: &str, value: &[u8]) -> Self {
        Self {
            key: Some(key.as_bytes().to_vec()),
            value: Some(value.to_vec()),
            headers: Vec::new(),
        }
    }

    pub(crate) fn header(mut self, name: &str, value: Option<&[u8]>) -> Self {
        self.headers
            .push((name.to_owned(), value.map(<[u8]>::to_vec)));
        self
    }

    pub(crate) fn key_str(&self) -> &str {
        std::str::from_utf8(self.key.as_deref().unwrap_or_default()).unwrap()
    }

    pub(crate) fn value_str(&self) -> Option<&str> {
        self.value
            .as_deref()
            .map(|v| std::str::from_utf8(v).unwrap())
    }

    pub(crate) fn header_str(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| std::str::from_utf8(v).unwrap())
    }
}

/// Shows bytes as text where they are UTF-8.
impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn text(b: &Option<Vec<u8>>) -> Option<std::borrow::Cow<'_, str>> {
            b.as_deref().map(String::from_utf8_lossy)
        }
        f.debug_struct("Record")
            .field("key", &text(&self.key))
            .field("value", &text(&self.value))
            .field(
                "headers",
                &self
                    .headers
                    .iter()
                    .map(|(n, v)| (n, text(v)))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

/// Produces `records` (keys, values and headers as they are) and waits for
/// every delivery.
pub(crate) async fn produce_records(brokers: &str, topic: &str, records: &[Record]) {
    let producer: FutureProducer = client_config(brokers)
        .set("enable.idempotence", "true")
        .create()
        .expect("producer");
    for r in records {
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic);
        if let Some(k) = &r.key {
            record = record.key(k.as_slice());
        }
        if let Some(v) = &r.value {
            record = record.payload(v.as_slice());
        }
        if !r.headers.is_empty() {
            let mut headers = OwnedHeaders::new();
            for (name, value) in &r.headers {
                headers = headers.insert(Header {
                    key: name,
                    value: value.as_deref(),
                });
            }
            record = record.headers(headers);
        }
        producer
            .send(record, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .expect("delivery");
    }
}

/// Every record of `topic` now, in offset order per partition (so in order
/// per key); empty if the topic does not exist yet.
pub(crate) fn read_records(brokers: &str, topic: &str) -> Vec<Record> {
    let consumer: BaseConsumer = client_config(brokers)
        .set("group.id", unique("reader"))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let timeout = Duration::from_secs(10);
    let Ok(metadata) = consumer.fetch_metadata(Some(topic), timeout) else {
        return Vec::new();
    };
    let Some(t) = metadata.topics().first().filter(|t| t.error().is_none()) else {
        return Vec::new();
    };
    let mut assignment = TopicPartitionList::new();
    let mut total = 0;
    for p in t.partitions() {
        let (low, high) = consumer.fetch_watermarks(topic, p.id(), timeout).unwrap();
        if high > low {
            assignment
                .add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
            total += high - low;
        }
    }
    let mut out = Vec::new();
    if total == 0 {
        return out;
    }
    consumer.assign(&assignment).unwrap();
    let start = Instant::now();
    while (out.len() as i64) < total {
        assert!(start.elapsed() < TIMEOUT, "reading {topic}");
        let Some(record) = consumer.poll(Duration::from_millis(500)) else {
            continue;
        };
        let record = record.unwrap();
        let headers = record
            .headers()
            .map(|hs| {
                hs.iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default();
        out.push(Record {
            key: record.key().map(<[u8]>::to_vec),
            value: record.payload().map(<[u8]>::to_vec),
            headers,
        });
    }
    out
}

/// Every record of `topic` was confirmed and its offset committed by
/// `group` (a partition that never had a record has no commit).
pub(crate) fn assert_committed_to_the_end(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) {
    let marks = watermarks_at(brokers, topic, partitions);
    let committed = committed_at(brokers, group, topic, partitions);
    let done: Vec<i64> = marks
        .iter()
        .zip(&committed)
        .map(|((low, _), c)| (*c).max(*low))
        .collect();
    let ends: Vec<i64> = marks.iter().map(|(_, high)| *high).collect();
    assert_eq!(
        done, ends,
        "committed offsets of {group} ({committed:?}) = end offsets of {topic}"
    );
}
