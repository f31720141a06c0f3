//! Kafka record <-> ferry message. Pure translation, no I/O.
//!
//! | Kafka           | ferry                                        |
//! |-----------------|----------------------------------------------|
//! | key             | `key`                                        |
//! | value           | `payload` (a null value is a tombstone)      |
//! | headers         | `headers` (a header with a null value becomes an empty value) |
//! | timestamp       | `timestamp` (create or log-append time, ms)  |
//! | topic/partition/offset | `origin`                              |

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use rdkafka::message::{Header, Headers as _, OwnedHeaders};

use crate::message::{Headers, Message, Origin};

/// One shared `Arc<str>` per topic name instead of a copy per message.
pub(crate) fn intern(topics: &mut HashMap<String, Arc<str>>, name: &str) -> Arc<str> {
    if let Some(t) = topics.get(name) {
        return Arc::clone(t);
    }
    let t: Arc<str> = Arc::from(name);
    topics.insert(name.to_owned(), Arc::clone(&t));
    t
}

/// Builds a ferry message from any Kafka record (borrowed from the consumer
/// or owned, as in tests). `topic` is passed in so one `Arc<str>` can be
/// shared by all messages of a topic.
pub(crate) fn to_message<M: rdkafka::Message>(record: &M, topic: Arc<str>) -> Message {
    let headers = record
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| {
                    let value = h.value.map(Bytes::copy_from_slice).unwrap_or_default();
                    (h.key.to_owned(), value)
                })
                .collect()
        })
        .unwrap_or_default();
    Message {
        key: record.key().map(Bytes::copy_from_slice),
        payload: record.payload().map(Bytes::copy_from_slice),
        headers,
        timestamp: record.timestamp().to_millis(),
        origin: Origin::Kafka {
            topic,
            partition: record.partition(),
            offset: record.offset(),
        },
        ..Message::default()
    }
}

/// The headers of a message as a Kafka producer wants them.
pub(crate) fn to_kafka_headers(headers: &Headers) -> Option<OwnedHeaders> {
    if headers.is_empty() {
        return None;
    }
    let mut out = OwnedHeaders::new_with_capacity(headers.len());
    for (name, value) in headers.iter() {
        out = out.insert(Header {
            key: name,
            value: Some(value.as_ref()),
        });
    }
    Some(out)
}

/// The timestamp to produce with: the message's own, so that event time
/// survives a hop through ferry.
pub(crate) fn to_kafka_timestamp(message: &Message) -> Option<i64> {
    message.timestamp.filter(|t| *t >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rdkafka::message::OwnedMessage;

    fn record(payload: Option<&str>, headers: Option<OwnedHeaders>) -> OwnedMessage {
        OwnedMessage::new(
            payload.map(|p| p.as_bytes().to_vec()),
            Some(b"order-7".to_vec()),
            "orders".into(),
            rdkafka::Timestamp::CreateTime(1_700_000_000_123),
            2,
            41,
            headers,
        )
    }

    #[test]
    fn a_record_keeps_key_payload_headers_timestamp_and_coordinates() {
        let hs = OwnedHeaders::new()
            .insert(Header {
                key: "trace",
                value: Some("abc"),
            })
            .insert(Header::<&str> {
                key: "empty",
                value: None,
            });
        let m = to_message(
            &record(Some(r#"{"order_id":7}"#), Some(hs)),
            "orders".into(),
        );
        assert_eq!(m.key.as_deref(), Some(&b"order-7"[..]));
        assert_eq!(m.payload.as_deref(), Some(&br#"{"order_id":7}"#[..]));
        assert_eq!(m.headers.get("trace").unwrap().as_ref(), b"abc");
        assert_eq!(m.headers.get("empty").unwrap().as_ref(), b"");
        assert_eq!(m.timestamp, Some(1_700_000_000_123));
        assert_eq!(
            m.origin.to_string(),
            "kafka topic=orders partition=2 offset=41"
        );
    }

    #[test]
    fn a_null_value_is_a_tombstone() {
        let m = to_message(&record(None, None), "orders".into());
        assert_eq!(m.payload, None);
        assert!(m.headers.is_empty());
    }

    #[test]
    fn headers_round_trip_through_kafka_form() {
        let h: Headers = [("a", "1"), ("b", "2"), ("a", "3")].into_iter().collect();
        let owned = to_kafka_headers(&h).unwrap();
        let m = to_message(&record(Some("x"), Some(owned)), "t".into());
        assert_eq!(m.headers, h);
        assert!(to_kafka_headers(&Headers::new()).is_none());
    }
}
