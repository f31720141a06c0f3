//! ferry message -> Redis write. Pure translation, no I/O.
//!
//! | write  | command                                   | tombstone (no payload) |
//! |--------|-------------------------------------------|------------------------|
//! | `set`  | `SET key payload`                         | `DEL key`              |
//! | `hset` | `HSET key f1 v1 ...` from a JSON object    | `DEL key`              |
//! | `xadd` | `XADD key * <stream fields>`              | entry without `payload`|
//!
//! Stream fields (the Redis Stream form of a ferry message):
//! `payload` = the payload bytes (absent for a tombstone), `key` = the
//! message key (when there is one), `header.NAME` = each header.
//!
//! Hash fields: strings are stored as they are, numbers and booleans as
//! their JSON text, nested objects and arrays as JSON, and `null` fields are
//! left out.

use bytes::Bytes;

use super::config::WriteMode;
use crate::error::MessageError;
use crate::message::Message;
use crate::template::{Template, json_kind};

/// Prefix of stream fields that carry headers.
pub const HEADER_FIELD_PREFIX: &str = "header.";

/// One Redis write, ready to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    Set {
        key: Vec<u8>,
        value: Bytes,
    },
    Hset {
        key: Vec<u8>,
        fields: Vec<(String, Bytes)>,
    },
    Xadd {
        key: Vec<u8>,
        fields: Vec<(String, Bytes)>,
    },
    Del {
        key: Vec<u8>,
    },
}

impl Write {
    pub fn prepare(
        mode: WriteMode,
        key: &Template,
        message: &Message,
    ) -> Result<Self, MessageError> {
        let key = key.render(message)?;
        Ok(match (mode, &message.payload) {
            (WriteMode::Set | WriteMode::Hset, None) => Write::Del { key },
            (WriteMode::Set, Some(payload)) => Write::Set {
                key,
                value: payload.clone(),
            },
            (WriteMode::Hset, Some(_)) => Write::Hset {
                key,
                fields: hash_fields(message)?,
            },
            (WriteMode::Xadd, _) => Write::Xadd {
                key,
                fields: stream_fields(message),
            },
        })
    }

    pub fn command(&self) -> redis::Cmd {
        match self {
            Write::Set { key, value } => {
                let mut c = redis::cmd("SET");
                c.arg(key).arg(value.as_ref());
                c
            }
            Write::Hset { key, fields } => {
                let mut c = redis::cmd("HSET");
                c.arg(key);
                for (f, v) in fields {
                    c.arg(f).arg(v.as_ref());
                }
                c
            }
            Write::Xadd { key, fields } => {
                let mut c = redis::cmd("XADD");
                c.arg(key).arg("*");
                for (f, v) in fields {
                    c.arg(f).arg(v.as_ref());
                }
                c
            }
            Write::Del { key } => {
                let mut c = redis::cmd("DEL");
                c.arg(key);
                c
            }
        }
    }
}

/// The fields of a JSON object payload, as hash fields.
pub fn hash_fields(message: &Message) -> Result<Vec<(String, Bytes)>, MessageError> {
    let json = message.json().map_err(|e| {
        MessageError::Unsupported(format!("`write = \"hset\"` needs a JSON object: {e}"))
    })?;
    let object = json.as_object().ok_or_else(|| {
        MessageError::Unsupported(format!(
            "`write = \"hset\"` needs a JSON object, but the payload is {}",
            json_kind(&json)
        ))
    })?;
    let fields: Vec<(String, Bytes)> = object
        .iter()
        .filter_map(|(name, value)| {
            let text = match value {
                serde_json::Value::Null => return None,
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            Some((name.clone(), Bytes::from(text)))
        })
        .collect();
    if fields.is_empty() {
        return Err(MessageError::Unsupported(
            "`write = \"hset\"` got an object with no non-null fields; Redis cannot store an empty hash".into(),
        ));
    }
    Ok(fields)
}

/// A message as Redis Stream entry fields.
pub fn stream_fields(message: &Message) -> Vec<(String, Bytes)> {
    let mut fields = Vec::with_capacity(2 + message.headers.len());
    if let Some(payload) = &message.payload {
        fields.push(("payload".to_owned(), payload.clone()));
    }
    if let Some(key) = &message.key {
        fields.push(("key".to_owned(), key.clone()));
    }
    for (name, value) in message.headers.iter() {
        fields.push((format!("{HEADER_FIELD_PREFIX}{name}"), value.clone()));
    }
    if fields.is_empty() {
        // XADD needs at least one field; an empty tombstone says so.
        fields.push(("tombstone".to_owned(), Bytes::from_static(b"1")));
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::Headers;

    fn t(s: &str) -> Template {
        Template::parse(s).unwrap()
    }

    fn args(w: &Write) -> Vec<String> {
        w.command()
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => "<other>".into(),
            })
            .collect()
    }

    #[test]
    fn set_writes_the_payload_under_the_rendered_key() {
        let m = Message::from_payload(r#"{"order_id":7,"total":9.5}"#);
        let w = Write::prepare(WriteMode::Set, &t("order:{order_id}"), &m).unwrap();
        assert_eq!(
            args(&w),
            ["SET", "order:7", r#"{"order_id":7,"total":9.5}"#]
        );
    }

    #[test]
    fn hset_stores_object_fields_as_text_and_skips_nulls() {
        let m = Message::from_payload(r#"{"id":"a1","n":3,"ok":true,"tags":["x"],"gone":null}"#);
        let w = Write::prepare(WriteMode::Hset, &t("h:{id}"), &m).unwrap();
        assert_eq!(
            args(&w),
            [
                "HSET", "h:a1", "id", "a1", "n", "3", "ok", "true", "tags", r#"["x"]"#
            ]
        );
    }

    #[test]
    fn hset_refuses_what_is_not_an_object() {
        let m = Message::from_payload("[1,2]");
        let e = Write::prepare(
            WriteMode::Hset,
            &t("h:{key}"),
            &Message {
                key: Some("k".into()),
                ..m
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("an array"), "{e}");
        let m = Message {
            key: Some("k".into()),
            ..Message::from_payload("{\"a\": null}")
        };
        assert!(Write::prepare(WriteMode::Hset, &t("h:{key}"), &m).is_err());
    }

    #[test]
    fn a_tombstone_deletes_the_key() {
        let m = Message {
            key: Some("order-7".into()),
            ..Message::default()
        };
        for mode in [WriteMode::Set, WriteMode::Hset] {
            let w = Write::prepare(mode, &t("order:{key}"), &m).unwrap();
            assert_eq!(args(&w), ["DEL", "order:order-7"]);
        }
    }

    #[test]
    fn xadd_carries_payload_key_and_headers() {
        let m = Message {
            key: Some("k1".into()),
            headers: [("trace", "t1")].into_iter().collect::<Headers>(),
            ..Message::from_payload("hello")
        };
        let w = Write::prepare(WriteMode::Xadd, &t("events"), &m).unwrap();
        assert_eq!(
            args(&w),
            [
                "XADD",
                "events",
                "*",
                "payload",
                "hello",
                "key",
                "k1",
                "header.trace",
                "t1"
            ]
        );
        let w = Write::prepare(WriteMode::Xadd, &t("events"), &Message::default()).unwrap();
        assert_eq!(args(&w), ["XADD", "events", "*", "tombstone", "1"]);
    }
}
