//! AMQP delivery <-> ferry message. Pure translation, no I/O.
//!
//! | AMQP                                   | ferry                                  |
//! |----------------------------------------|----------------------------------------|
//! | body                                   | `payload`                              |
//! | header `ferry.tombstone` + empty body  | no payload (a tombstone)               |
//! | header `ferry.key`                     | `key`                                  |
//! | other headers                          | `headers` (strings and bytes as they are, numbers and booleans as text, tables as JSON; an array is one header per element) |
//! | `content_type`, `content_encoding`, `correlation_id`, `reply_to`, `message_id`, `type`, `app_id`, `priority` | headers `amqp.content_type`, ... |
//! | `timestamp` (seconds)                  | `timestamp` (milliseconds)             |
//! | queue, exchange, routing key, delivery tag | `origin`                           |
//!
//! Publishing reverses it: `amqp.*` headers become properties again, every
//! other header an AMQP header (a long string; a name used several times an
//! array of its values), the key the `ferry.key` header. So key, payload and
//! headers survive a hop through RabbitMQ; as AMQP headers are a table
//! sorted by name, the order between different names is not kept.

use std::sync::Arc;

use bytes::Bytes;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::message::{Headers, Message, Origin};

/// Header carrying the message key through AMQP, which has no key.
pub(crate) const KEY_HEADER: &str = "ferry.key";
/// Header marking a tombstone (AMQP bodies cannot be null).
pub(crate) const TOMBSTONE_HEADER: &str = "ferry.tombstone";
/// Prefix of headers that stand for AMQP message properties.
pub(crate) const PROPERTY_PREFIX: &str = "amqp.";

/// Where a delivery came from.
pub(crate) struct DeliveryInfo<'a> {
    pub queue: Arc<str>,
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub delivery_tag: u64,
}

/// The message a delivery from `queue` is, and the handle that settles
/// it. The delivery is taken apart rather than borrowed: its body becomes
/// the payload without a copy, and its acker is moved out rather than
/// cloned (a clone copies the channel's handles, a dozen counters).
pub(crate) fn delivery_message(
    queue: &Arc<str>,
    delivery: lapin::message::Delivery,
) -> (Message, lapin::Acker) {
    let lapin::message::Delivery {
        delivery_tag,
        exchange,
        routing_key,
        properties,
        data,
        acker,
        ..
    } = delivery;
    let info = DeliveryInfo {
        queue: Arc::clone(queue),
        exchange: exchange.as_str(),
        routing_key: routing_key.as_str(),
        delivery_tag,
    };
    (to_message(info, &properties, data), acker)
}

pub(crate) fn to_message(
    info: DeliveryInfo<'_>,
    properties: &BasicProperties,
    body: Vec<u8>,
) -> Message {
    let mut headers = Headers::new();
    let mut key = None;
    let mut tombstone = false;
    if let Some(table) = properties.headers() {
        for (name, value) in table.inner() {
            match (name.as_str(), value) {
                (KEY_HEADER, v) => key = Some(value_bytes(v)),
                (TOMBSTONE_HEADER, _) => tombstone = true,
                // A repeated header name travels as an array of its values.
                (other, AMQPValue::FieldArray(values)) => {
                    for v in values.as_slice() {
                        headers.push(other, value_bytes(v));
                    }
                }
                (other, v) => headers.push(other, value_bytes(v)),
            }
        }
    }
    let text_props = [
        ("content_type", properties.content_type()),
        ("content_encoding", properties.content_encoding()),
        ("correlation_id", properties.correlation_id()),
        ("reply_to", properties.reply_to()),
        ("message_id", properties.message_id()),
        ("type", properties.kind()),
        ("app_id", properties.app_id()),
    ];
    for (name, value) in text_props {
        if let Some(v) = value {
            headers.push(
                format!("{PROPERTY_PREFIX}{name}"),
                Bytes::from(v.as_str().to_owned()),
            );
        }
    }
    if let Some(p) = properties.priority() {
        headers.push(
            format!("{PROPERTY_PREFIX}priority"),
            Bytes::from(p.to_string()),
        );
    }
    Message {
        key,
        payload: (!(tombstone && body.is_empty())).then(|| Bytes::from(body)),
        headers,
        timestamp: properties
            .timestamp()
            .and_then(|s| i64::try_from(s).ok())
            .map(|s| s.saturating_mul(1000)),
        origin: Origin::Amqp {
            queue: info.queue,
            exchange: info.exchange.to_owned(),
            routing_key: info.routing_key.to_owned(),
            delivery_tag: info.delivery_tag,
        },
        ..Message::default()
    }
}

/// An AMQP header value as bytes.
pub(crate) fn value_bytes(value: &AMQPValue) -> Bytes {
    match value {
        AMQPValue::LongString(s) => Bytes::copy_from_slice(s.as_bytes()),
        AMQPValue::ShortString(s) => Bytes::from(s.as_str().to_owned()),
        AMQPValue::ByteArray(b) => Bytes::copy_from_slice(b.as_slice()),
        AMQPValue::Boolean(b) => Bytes::from(b.to_string()),
        AMQPValue::ShortShortInt(n) => Bytes::from(n.to_string()),
        AMQPValue::ShortShortUInt(n) => Bytes::from(n.to_string()),
        AMQPValue::ShortInt(n) => Bytes::from(n.to_string()),
        AMQPValue::ShortUInt(n) => Bytes::from(n.to_string()),
        AMQPValue::LongInt(n) => Bytes::from(n.to_string()),
        AMQPValue::LongUInt(n) => Bytes::from(n.to_string()),
        AMQPValue::LongLongInt(n) => Bytes::from(n.to_string()),
        AMQPValue::Float(f) => Bytes::from(f.to_string()),
        AMQPValue::Double(f) => Bytes::from(f.to_string()),
        AMQPValue::Timestamp(t) => Bytes::from(t.to_string()),
        AMQPValue::Void => Bytes::new(),
        other => Bytes::from(value_json(other).to_string()),
    }
}

/// An AMQP value as plain JSON: strings as strings, numbers as numbers,
/// tables as objects, arrays as arrays (an `x-death` header reads as
/// `[{"count": 1, "queue": "orders", ...}]`). Bytes that are not UTF-8 are
/// replaced (U+FFFD), as JSON strings are text.
pub(crate) fn value_json(value: &AMQPValue) -> serde_json::Value {
    use serde_json::Value as J;
    let text = |b: &[u8]| J::String(String::from_utf8_lossy(b).into_owned());
    match value {
        AMQPValue::Boolean(b) => J::Bool(*b),
        AMQPValue::ShortShortInt(n) => J::from(*n),
        AMQPValue::ShortShortUInt(n) => J::from(*n),
        AMQPValue::ShortInt(n) => J::from(*n),
        AMQPValue::ShortUInt(n) => J::from(*n),
        AMQPValue::LongInt(n) => J::from(*n),
        AMQPValue::LongUInt(n) => J::from(*n),
        AMQPValue::LongLongInt(n) => J::from(*n),
        AMQPValue::Timestamp(n) => J::from(*n),
        AMQPValue::Float(f) => {
            serde_json::Number::from_f64(f64::from(*f)).map_or(J::Null, J::Number)
        }
        AMQPValue::Double(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        AMQPValue::DecimalValue(d) => {
            let n = f64::from(d.value) / 10f64.powi(i32::from(d.scale));
            serde_json::Number::from_f64(n).map_or(J::Null, J::Number)
        }
        AMQPValue::ShortString(s) => J::String(s.as_str().to_owned()),
        AMQPValue::LongString(s) => text(s.as_bytes()),
        AMQPValue::ByteArray(b) => text(b.as_slice()),
        AMQPValue::FieldArray(values) => {
            J::Array(values.as_slice().iter().map(value_json).collect())
        }
        AMQPValue::FieldTable(table) => J::Object(
            table
                .inner()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), value_json(v)))
                .collect(),
        ),
        AMQPValue::Void => J::Null,
    }
}

/// Body and properties to publish `message` with.
pub(crate) fn to_publish(message: &Message, persistent: bool) -> (Bytes, BasicProperties) {
    let mut table = FieldTable::default();
    let mut props = BasicProperties::default();
    let short = |v: &Bytes| ShortString::from(String::from_utf8_lossy(v).into_owned());
    for (name, value) in message.headers.iter() {
        match name.strip_prefix(PROPERTY_PREFIX) {
            Some("content_type") => props = props.with_content_type(short(value)),
            Some("content_encoding") => props = props.with_content_encoding(short(value)),
            Some("correlation_id") => props = props.with_correlation_id(short(value)),
            Some("reply_to") => props = props.with_reply_to(short(value)),
            Some("message_id") => props = props.with_message_id(short(value)),
            Some("type") => props = props.with_type(short(value)),
            Some("app_id") => props = props.with_app_id(short(value)),
            Some("priority") => {
                if let Some(p) = std::str::from_utf8(value).ok().and_then(|s| s.parse().ok()) {
                    props = props.with_priority(p);
                }
            }
            _ => {
                let value = AMQPValue::LongString(LongString::from(value.to_vec()));
                let repeated = match table.inner().get(name) {
                    Some(AMQPValue::FieldArray(earlier)) => {
                        let mut values = earlier.as_slice().to_vec();
                        values.push(value);
                        AMQPValue::FieldArray(values.into())
                    }
                    Some(earlier) => AMQPValue::FieldArray(vec![earlier.clone(), value].into()),
                    None => value,
                };
                table.insert(name.into(), repeated);
            }
        }
    }
    if let Some(key) = &message.key {
        table.insert(
            KEY_HEADER.into(),
            AMQPValue::LongString(LongString::from(key.to_vec())),
        );
    }
    if message.payload.is_none() {
        table.insert(TOMBSTONE_HEADER.into(), AMQPValue::Boolean(true));
    }
    if let Some(ts) = message.timestamp.filter(|t| *t >= 0) {
        props = props.with_timestamp((ts / 1000) as u64);
    }
    if persistent {
        props = props.with_delivery_mode(2);
    }
    props = props.with_headers(table);
    (message.payload.clone().unwrap_or_default(), props)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> DeliveryInfo<'static> {
        DeliveryInfo {
            queue: "orders".into(),
            exchange: "shop",
            routing_key: "order.new",
            delivery_tag: 9,
        }
    }

    #[test]
    fn a_message_survives_a_round_trip_through_amqp_form() {
        let m = Message {
            key: Some("o-7".into()),
            headers: [("trace", "t1"), ("amqp.content_type", "application/json")]
                .into_iter()
                .collect::<Headers>(),
            timestamp: Some(1_700_000_000_000),
            ..Message::from_payload(r#"{"order_id":7}"#)
        };
        let (body, props) = to_publish(&m, true);
        assert_eq!(props.delivery_mode(), &Some(2));
        assert_eq!(
            props.content_type().as_ref().map(|s| s.as_str()),
            Some("application/json")
        );
        let back = to_message(info(), &props, body.to_vec());
        assert_eq!(back.key, m.key);
        assert_eq!(back.payload, m.payload);
        assert_eq!(back.headers.get("trace").unwrap().as_ref(), b"t1");
        assert_eq!(
            back.headers.get("amqp.content_type").unwrap().as_ref(),
            b"application/json"
        );
        assert_eq!(back.timestamp, Some(1_700_000_000_000));
        assert_eq!(
            back.origin.to_string(),
            "amqp queue=orders exchange=shop routing_key=order.new delivery_tag=9"
        );
    }

    #[test]
    fn a_tombstone_survives_as_an_empty_body_with_a_marker() {
        let m = Message {
            key: Some("o-7".into()),
            ..Message::default()
        };
        let (body, props) = to_publish(&m, false);
        assert!(body.is_empty());
        assert_eq!(props.delivery_mode(), &None);
        let back = to_message(info(), &props, body.to_vec());
        assert_eq!(back.payload, None);
        assert_eq!(back.key.as_deref(), Some(&b"o-7"[..]));
        // An empty body without the marker is an empty payload, not a tombstone.
        let back = to_message(info(), &BasicProperties::default(), Vec::new());
        assert_eq!(back.payload.as_deref(), Some(&b""[..]));
    }

    #[test]
    fn repeated_header_names_keep_every_value_in_order() {
        let m = Message {
            headers: [("tag", "a"), ("z", "1"), ("tag", "b"), ("tag", "c")]
                .into_iter()
                .collect::<Headers>(),
            ..Message::from_payload("x")
        };
        let (body, props) = to_publish(&m, true);
        let back = to_message(info(), &props, body.to_vec());
        let tags: Vec<&[u8]> = back
            .headers
            .iter()
            .filter(|(n, _)| *n == "tag")
            .map(|(_, v)| v.as_ref())
            .collect();
        assert_eq!(tags, [b"a", b"b", b"c"]);
        assert_eq!(back.headers.get("z").unwrap().as_ref(), b"1");
    }

    #[test]
    fn typed_headers_from_other_publishers_become_text() {
        let mut table = FieldTable::default();
        table.insert("retries".into(), AMQPValue::LongInt(3));
        table.insert("urgent".into(), AMQPValue::Boolean(true));
        let props = BasicProperties::default().with_headers(table);
        let m = to_message(info(), &props, b"x".to_vec());
        assert_eq!(m.headers.get("retries").unwrap().as_ref(), b"3");
        assert_eq!(m.headers.get("urgent").unwrap().as_ref(), b"true");
        assert_eq!(m.key, None);
    }

    #[test]
    fn tables_and_arrays_in_headers_are_plain_json() {
        let mut death = FieldTable::default();
        death.insert("count".into(), AMQPValue::LongLongInt(2));
        death.insert(
            "queue".into(),
            AMQPValue::LongString(LongString::from("orders")),
        );
        death.insert(
            "reason".into(),
            AMQPValue::LongString(LongString::from("rejected")),
        );
        death.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(
                vec![AMQPValue::LongString(LongString::from("order.new"))].into(),
            ),
        );
        death.insert("time".into(), AMQPValue::Timestamp(1_700_000_000));
        death.insert("redelivered".into(), AMQPValue::Boolean(false));
        death.insert("rate".into(), AMQPValue::Double(0.5));
        death.insert("nothing".into(), AMQPValue::Void);
        let mut table = FieldTable::default();
        table.insert(
            "x-death".into(),
            AMQPValue::FieldArray(vec![AMQPValue::FieldTable(death)].into()),
        );
        table.insert(
            "nested".into(),
            AMQPValue::FieldTable(FieldTable::default()),
        );
        let props = BasicProperties::default().with_headers(table);
        let info = DeliveryInfo {
            queue: "q".into(),
            exchange: "",
            routing_key: "q",
            delivery_tag: 1,
        };
        let m = to_message(info, &props, b"{}".to_vec());
        // An array is one header per element; each table is a JSON object.
        assert_eq!(
            std::str::from_utf8(m.headers.get("x-death").unwrap()).unwrap(),
            r#"{"count":2,"nothing":null,"queue":"orders","rate":0.5,"reason":"rejected","redelivered":false,"routing-keys":["order.new"],"time":1700000000}"#
        );
        assert_eq!(m.headers.get("nested").unwrap().as_ref(), b"{}");
    }
}
