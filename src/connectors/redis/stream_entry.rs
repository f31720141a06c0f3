//! The Redis Stream form of a ferry message: what the `xadd` sink writes
//! and the stream source reads back. Pure, no I/O.
//!
//! Fields: `payload` = the payload, or `tombstone` = `1` for a tombstone;
//! `key` = the message key; `timestamp` = its timestamp in ms;
//! `header.NAME` = each header. Any other entry (one another program
//! wrote) is read as a JSON object of all its fields.

use bytes::Bytes;

use std::sync::Arc;

use crate::message::{Headers, Message, Origin};

/// Prefix of stream fields that carry headers.
pub(crate) const HEADER_FIELD_PREFIX: &str = "header.";

/// A message as Redis Stream entry fields.
pub(crate) fn stream_fields(message: &Message) -> Vec<(String, Bytes)> {
    let mut fields = Vec::with_capacity(3 + message.headers.len());
    match &message.payload {
        Some(payload) => fields.push(("payload".to_owned(), payload.clone())),
        // Says "tombstone" even when a key or headers follow, so that the
        // entry is never mistaken for one another program wrote.
        None => fields.push(("tombstone".to_owned(), Bytes::from_static(b"1"))),
    }
    if let Some(key) = &message.key {
        fields.push(("key".to_owned(), key.clone()));
    }
    if let Some(ts) = message.timestamp {
        fields.push(("timestamp".to_owned(), Bytes::from(ts.to_string())));
    }
    for (name, value) in message.headers.iter() {
        fields.push((format!("{HEADER_FIELD_PREFIX}{name}"), value.clone()));
    }
    fields
}

/// Whether entry fields are ferry's stream form of a message: a `payload`
/// or `tombstone` field, and no field outside that form.
fn is_envelope(fields: &[(String, Bytes)]) -> bool {
    fields
        .iter()
        .any(|(f, _)| f == "payload" || f == "tombstone")
        && fields.iter().all(|(f, _)| {
            matches!(f.as_str(), "payload" | "tombstone" | "key" | "timestamp")
                || f.starts_with(HEADER_FIELD_PREFIX)
        })
}

/// A stream entry's fields as a message (key, payload, headers, timestamp),
/// the inverse of [`stream_fields`]. Any other entry, such as one another
/// program wrote (`XADD orders * order_id 7 status new`), becomes a JSON
/// object of all its fields.
pub(crate) fn from_stream_fields(fields: &[(String, Bytes)]) -> StreamMessage {
    if !is_envelope(fields) {
        let object: serde_json::Map<String, serde_json::Value> = fields
            .iter()
            .map(|(f, v)| {
                let v = serde_json::Value::String(String::from_utf8_lossy(v).into_owned());
                (f.clone(), v)
            })
            .collect();
        let payload = serde_json::Value::Object(object).to_string();
        return StreamMessage {
            payload: Some(Bytes::from(payload)),
            ..StreamMessage::default()
        };
    }
    let mut m = StreamMessage::default();
    for (field, value) in fields {
        match field.as_str() {
            "payload" => m.payload = Some(value.clone()),
            "key" => m.key = Some(value.clone()),
            "timestamp" => {
                m.timestamp = std::str::from_utf8(value).ok().and_then(|t| t.parse().ok())
            }
            "tombstone" => {}
            other => {
                if let Some(name) = other.strip_prefix(HEADER_FIELD_PREFIX) {
                    m.headers.push(name, value.clone());
                }
            }
        }
    }
    m
}

/// What a stream entry says about a message.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct StreamMessage {
    pub key: Option<Bytes>,
    pub payload: Option<Bytes>,
    pub headers: Headers,
    /// The message's own timestamp, when the entry carries one.
    pub timestamp: Option<i64>,
}

/// The message an entry of `stream` is: its fields, its id as its origin,
/// and the id's milliseconds as its timestamp when the fields carry none.
pub(crate) fn entry_message(stream: &Arc<str>, id: String, fields: &[(String, Bytes)]) -> Message {
    let m = from_stream_fields(fields);
    Message {
        key: m.key,
        payload: m.payload,
        headers: m.headers,
        timestamp: m.timestamp.or_else(|| stream_id_millis(&id)),
        origin: Origin::RedisStream {
            stream: Arc::clone(stream),
            id,
        },
        ..Message::default()
    }
}

/// Milliseconds of a stream entry id (`1700000000000-0`), its timestamp.
pub(crate) fn stream_id_millis(id: &str) -> Option<i64> {
    let (ms, _) = crate::position::stream_id(id)?;
    i64::try_from(ms).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_fields_round_trip_and_foreign_entries_become_json() {
        let m = Message {
            key: Some("k1".into()),
            headers: [("a", "1"), ("b", "2")].into_iter().collect::<Headers>(),
            timestamp: Some(1_700_000_000_123),
            ..Message::from_payload("hello")
        };
        let back = from_stream_fields(&stream_fields(&m));
        assert_eq!(
            (back.key, back.payload, back.headers, back.timestamp),
            (
                m.key.clone(),
                m.payload.clone(),
                m.headers.clone(),
                m.timestamp
            )
        );
        // A tombstone keeps its key and headers.
        let tombstone = Message {
            key: Some("order-7".into()),
            headers: [("reason", "cancelled")].into_iter().collect::<Headers>(),
            ..Message::default()
        };
        let back = from_stream_fields(&stream_fields(&tombstone));
        assert_eq!(
            (back.key, back.payload, back.headers),
            (tombstone.key, None, tombstone.headers)
        );
        let foreign = vec![
            ("order_id".to_owned(), Bytes::from("7")),
            ("status".to_owned(), Bytes::from("new")),
        ];
        assert_eq!(
            from_stream_fields(&foreign).payload.unwrap(),
            r#"{"order_id":"7","status":"new"}"#
        );
        // A foreign entry that happens to have a `payload` field keeps all its fields.
        let foreign = vec![
            ("payload".to_owned(), Bytes::from("x")),
            ("user".to_owned(), Bytes::from("u1")),
        ];
        assert_eq!(
            from_stream_fields(&foreign).payload.unwrap(),
            r#"{"payload":"x","user":"u1"}"#
        );
        assert_eq!(stream_id_millis("1700000000123-4"), Some(1_700_000_000_123));
    }
}
