//! ferry message <-> Redis. Pure translation, no I/O.
//!
//! Writes (the sink), per `write` mode:
//!
//! | write     | command                                        | tombstone (no payload)      |
//! |-----------|------------------------------------------------|-----------------------------|
//! | `set`     | `SET key payload [PX ttl]`                     | `DEL key`                   |
//! | `hset`    | `HSET key f1 v1 ...` from a JSON object         | `DEL key`                   |
//! | `rpush`   | `RPUSH key payload`                            | `DEL key`                   |
//! | `lpush`   | `LPUSH key payload`                            | `DEL key`                   |
//! | `sadd`    | `SADD key member`                              | `SREM key member` with a `member` template, else `DEL key` |
//! | `zadd`    | `ZADD key score member`                        | `ZREM key member` with a `member` template, else `DEL key` |
//! | `xadd`    | `XADD key [MAXLEN ~ n] * <stream fields>`      | an entry without `payload`  |
//! | `publish` | `PUBLISH key payload`                          | `PUBLISH key ""`            |
//!
//! With `replace`, `DEL key` comes first (the sink then runs the batch in
//! `MULTI`); with `ttl`, `PEXPIRE key ttl` follows (or `SET ... PX`).
//!
//! Stream fields, the Redis Stream form of a ferry message (what `xadd`
//! writes and the stream source reads back): `payload` = the payload, or
//! `tombstone` = `1` for a tombstone; `key` = the message key; `timestamp` =
//! its timestamp in ms; `header.NAME` = each header. Any other entry (one
//! another program wrote) is read as a JSON object of all its fields.
//!
//! Hash (and `json` stream) fields: strings as they are, numbers and
//! booleans as their JSON text, nested objects and arrays as JSON, and
//! `null` fields are left out.

use std::time::Duration;

use bytes::Bytes;

use super::config::{StreamFields, WritePlan};
use crate::error::MessageError;
use crate::message::{Headers, Message};
use crate::position::Scope;
use crate::template::{Template, json_kind, lookup};

/// Prefix of stream fields that carry headers.
pub const HEADER_FIELD_PREFIX: &str = "header.";

/// The commands that write one message.
#[derive(Clone, Debug)]
pub struct Write {
    pub commands: Vec<redis::Cmd>,
    /// The key written.
    pub key: Vec<u8>,
    /// With `exactly_once`: the log whose position the write records.
    pub scope: Option<Scope>,
}

fn cmd(name: &str) -> redis::Cmd {
    redis::cmd(name)
}

impl Write {
    pub fn prepare(
        plan: &WritePlan,
        key: &Template,
        message: &Message,
    ) -> Result<Self, MessageError> {
        let key = key.render(message)?;
        let payload = message.payload.as_ref();
        let mut cmds = Vec::with_capacity(3);
        let (replace, ttl) = match plan {
            WritePlan::Hset { replace, ttl, .. }
            | WritePlan::Push { replace, ttl, .. }
            | WritePlan::Sadd { replace, ttl, .. }
            | WritePlan::Zadd { replace, ttl, .. } => (*replace, *ttl),
            WritePlan::Set { ttl } | WritePlan::Xadd { ttl, .. } => (false, *ttl),
            WritePlan::Publish => (false, None),
        };
        if replace && payload.is_some() {
            cmds.push(del(&key));
        }
        let mut expire = ttl;
        match (plan, payload) {
            (WritePlan::Set { ttl }, Some(p)) => {
                let mut c = cmd("SET");
                c.arg(&key).arg(p.as_ref());
                if let Some(ttl) = ttl {
                    c.arg("PX").arg(millis(*ttl));
                }
                expire = None;
                cmds.push(c);
            }
            (WritePlan::Hset { fields, .. }, Some(_)) => {
                let mut c = cmd("HSET");
                c.arg(&key);
                let pairs = object_fields(message, "hset", fields.as_deref())?;
                for (f, v) in &pairs {
                    c.arg(f).arg(v.as_ref());
                }
                cmds.push(c);
            }
            (WritePlan::Push { left, .. }, Some(p)) => {
                let mut c = cmd(if *left { "LPUSH" } else { "RPUSH" });
                c.arg(&key).arg(p.as_ref());
                cmds.push(c);
            }
            (WritePlan::Sadd { member, .. }, Some(p)) => {
                let mut c = cmd("SADD");
                c.arg(&key).arg(render_or(member, message, p)?);
                cmds.push(c);
            }
            (WritePlan::Zadd { score, member, .. }, Some(p)) => {
                let mut c = cmd("ZADD");
                c.arg(&key)
                    .arg(parse_score(score, message)?)
                    .arg(render_or(member, message, p)?);
                cmds.push(c);
            }
            (
                WritePlan::Sadd {
                    member: Some(m), ..
                },
                None,
            ) => {
                let mut c = cmd("SREM");
                c.arg(&key).arg(m.render(message)?);
                cmds.push(c);
                expire = None;
            }
            (
                WritePlan::Zadd {
                    member: Some(m), ..
                },
                None,
            ) => {
                let mut c = cmd("ZREM");
                c.arg(&key).arg(m.render(message)?);
                cmds.push(c);
                expire = None;
            }
            (WritePlan::Xadd { maxlen, fields, .. }, _) => {
                let mut c = cmd("XADD");
                c.arg(&key);
                if let Some(n) = maxlen {
                    c.arg("MAXLEN").arg("~").arg(*n);
                }
                c.arg("*");
                let pairs = match (fields, payload) {
                    (StreamFields::Json, Some(_)) => object_fields(message, "xadd", None)?,
                    _ => stream_fields(message),
                };
                for (f, v) in pairs {
                    c.arg(f).arg(v.as_ref());
                }
                cmds.push(c);
            }
            (WritePlan::Publish, p) => {
                let mut c = cmd("PUBLISH");
                c.arg(&key).arg(p.map_or(&b""[..], |p| p.as_ref()));
                cmds.push(c);
            }
            (_, None) => {
                cmds.push(del(&key));
                expire = None;
            }
        }
        if let Some(ttl) = expire {
            let mut c = cmd("PEXPIRE");
            c.arg(&key).arg(millis(ttl));
            cmds.push(c);
        }
        Ok(Write {
            commands: cmds,
            key,
            scope: None,
        })
    }
}

fn del(key: &[u8]) -> redis::Cmd {
    let mut c = cmd("DEL");
    c.arg(key);
    c
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn render_or(
    template: &Option<Template>,
    message: &Message,
    payload: &Bytes,
) -> Result<Vec<u8>, MessageError> {
    match template {
        Some(t) => Ok(t.render(message)?),
        None => Ok(payload.to_vec()),
    }
}

fn parse_score(score: &Template, message: &Message) -> Result<f64, MessageError> {
    let raw = score.render(message)?;
    std::str::from_utf8(&raw)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|f| !f.is_nan())
        .ok_or_else(|| {
            MessageError::Unsupported(format!(
                "score `{score}` is \"{}\", not a number",
                String::from_utf8_lossy(&raw)
            ))
        })
}

/// The members of a JSON object payload as (field, text) pairs, or only
/// the `selected` paths.
pub fn object_fields(
    message: &Message,
    mode: &str,
    selected: Option<&[Vec<String>]>,
) -> Result<Vec<(String, Bytes)>, MessageError> {
    let json = message.json().map_err(|e| {
        MessageError::Unsupported(format!("`write = \"{mode}\"` needs a JSON object: {e}"))
    })?;
    let object = json.as_object().ok_or_else(|| {
        MessageError::Unsupported(format!(
            "`write = \"{mode}\"` needs a JSON object, but the payload is {}",
            json_kind(&json)
        ))
    })?;
    let text = |value: &serde_json::Value| match value {
        serde_json::Value::Null => None,
        serde_json::Value::String(s) => Some(Bytes::from(s.clone())),
        other => Some(Bytes::from(other.to_string())),
    };
    let fields: Vec<(String, Bytes)> = match selected {
        None => object
            .iter()
            .filter_map(|(name, value)| Some((name.clone(), text(value)?)))
            .collect(),
        Some(paths) => paths
            .iter()
            .filter_map(|path| Some((path.join("."), text(lookup(&json, path)?)?)))
            .collect(),
    };
    if fields.is_empty() {
        return Err(MessageError::Unsupported(format!(
            "`write = \"{mode}\"` found no non-null fields to write; Redis cannot store an empty hash or entry"
        )));
    }
    Ok(fields)
}

/// A message as Redis Stream entry fields.
pub fn stream_fields(message: &Message) -> Vec<(String, Bytes)> {
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
pub fn from_stream_fields(fields: &[(String, Bytes)]) -> StreamMessage {
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
pub struct StreamMessage {
    pub key: Option<Bytes>,
    pub payload: Option<Bytes>,
    pub headers: Headers,
    /// The message's own timestamp, when the entry carries one.
    pub timestamp: Option<i64>,
}

/// Milliseconds of a stream entry id (`1700000000000-0`), its timestamp.
pub fn stream_id_millis(id: &str) -> Option<i64> {
    id.split('-').next()?.parse().ok()
}

/// One entry of a stream reply; `fields` is `None` for an entry that was
/// deleted while pending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamEntry {
    pub id: String,
    pub fields: Option<Vec<(String, Bytes)>>,
}

/// Text of a bulk or simple string reply.
pub fn text(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        redis::Value::Int(i) => Some(i.to_string()),
        redis::Value::Okay => Some("OK".into()),
        _ => None,
    }
}

fn bytes(v: &redis::Value) -> Option<Bytes> {
    match v {
        redis::Value::BulkString(b) => Some(Bytes::copy_from_slice(b)),
        redis::Value::SimpleString(s) => Some(Bytes::from(s.clone())),
        redis::Value::Int(i) => Some(Bytes::from(i.to_string())),
        _ => None,
    }
}

fn items(v: &redis::Value) -> Option<Vec<&redis::Value>> {
    match v {
        redis::Value::Array(a) | redis::Value::Set(a) => Some(a.iter().collect()),
        _ => None,
    }
}

/// `[[id, [f1, v1, ...]], ...]`, as `XRANGE`, `XREADGROUP` (per stream)
/// and `XAUTOCLAIM` (second element) answer.
pub fn parse_entries(v: &redis::Value) -> Result<Vec<StreamEntry>, String> {
    let mut out = Vec::new();
    for entry in items(v).ok_or("entries are not an array")? {
        let parts = items(entry).ok_or("an entry is not an array")?;
        let id = parts
            .first()
            .and_then(|v| text(v))
            .ok_or("an entry has no id")?;
        let fields = match parts.get(1) {
            None | Some(redis::Value::Nil) => None,
            Some(list) => {
                let flat = items(list).ok_or("entry fields are not an array")?;
                let mut fields = Vec::with_capacity(flat.len() / 2);
                for pair in flat.chunks(2) {
                    if let [f, v] = pair {
                        fields.push((
                            text(f).ok_or("a field name is not a string")?,
                            bytes(v).unwrap_or_default(),
                        ));
                    }
                }
                Some(fields)
            }
        };
        out.push(StreamEntry { id, fields });
    }
    Ok(out)
}

/// An `XREADGROUP` / `XREAD` reply: entries per stream (`Nil` on timeout).
pub fn parse_read_reply(v: &redis::Value) -> Result<Vec<(String, Vec<StreamEntry>)>, String> {
    match v {
        redis::Value::Nil => Ok(Vec::new()),
        redis::Value::Map(pairs) => pairs
            .iter()
            .map(|(name, entries)| {
                Ok((
                    text(name).ok_or("a stream name is not a string")?,
                    parse_entries(entries)?,
                ))
            })
            .collect(),
        other => items(other)
            .ok_or("the reply is not an array")?
            .into_iter()
            .map(|stream| {
                let parts = items(stream).ok_or("a stream reply is not an array")?;
                let name = parts
                    .first()
                    .and_then(|v| text(v))
                    .ok_or("a stream has no name")?;
                let entries = parts.get(1).ok_or("a stream has no entries")?;
                Ok((name, parse_entries(entries)?))
            })
            .collect(),
    }
}

/// An `XAUTOCLAIM` reply: the next cursor, the claimed entries, and the ids
/// of entries that no longer exist.
pub fn parse_autoclaim_reply(
    v: &redis::Value,
) -> Result<(String, Vec<StreamEntry>, Vec<String>), String> {
    let parts = items(v).ok_or("the reply is not an array")?;
    let cursor = parts.first().and_then(|v| text(v)).ok_or("no cursor")?;
    let entries = parse_entries(parts.get(1).ok_or("no entries")?)?;
    let deleted = parts
        .get(2)
        .and_then(|v| items(v))
        .map(|ids| ids.into_iter().filter_map(text).collect())
        .unwrap_or_default();
    Ok((cursor, entries, deleted))
}

/// Extended `XPENDING` rows: `(id, consumer, idle ms, deliveries)`.
pub fn parse_pending(v: &redis::Value) -> Result<Vec<(String, String, u64, u64)>, String> {
    items(v)
        .ok_or("the reply is not an array")?
        .into_iter()
        .map(|row| {
            let r = items(row).ok_or("a row is not an array")?;
            let num = |i: usize| match r.get(i) {
                Some(redis::Value::Int(n)) => Some(*n as u64),
                Some(v) => text(v).and_then(|t| t.parse().ok()),
                None => None,
            };
            Ok((
                r.first().and_then(|v| text(v)).ok_or("no id")?,
                r.get(1).and_then(|v| text(v)).ok_or("no consumer")?,
                num(2).ok_or("no idle time")?,
                num(3).ok_or("no delivery count")?,
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::values::{Count, Length};
    use crate::connectors::redis::config::RedisSinkConfig;

    fn t(s: &str) -> Template {
        Template::parse(s).unwrap()
    }

    fn plan(toml_extra: &str) -> WritePlan {
        let c: RedisSinkConfig =
            toml::from_str(&format!("url = \"redis://x\"\nkey = \"k\"\n{toml_extra}")).unwrap();
        c.plan()
    }

    fn args(plan_toml: &str, key: &str, m: &Message) -> Vec<String> {
        Write::prepare(&plan(plan_toml), &t(key), m)
            .unwrap()
            .commands
            .iter()
            .map(|c| {
                c.args_iter()
                    .map(|a| match a {
                        redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                        _ => "<other>".into(),
                    })
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect()
    }

    fn order() -> Message {
        Message {
            key: Some("o-7".into()),
            ..Message::from_payload(r#"{"order_id":7,"total":9.5,"status":"new","gone":null}"#)
        }
    }

    fn tombstone() -> Message {
        Message {
            key: Some("o-7".into()),
            ..Message::default()
        }
    }

    #[test]
    fn set_with_and_without_ttl() {
        let m = order();
        assert_eq!(
            args("write = \"set\"", "order:{order_id}", &m),
            [r#"SET order:7 {"order_id":7,"total":9.5,"status":"new","gone":null}"#]
        );
        assert!(args("write = \"set\"\nttl = \"2s\"", "o:{order_id}", &m)[0].ends_with(" PX 2000"));
    }

    #[test]
    fn hset_writes_object_fields_or_the_selected_ones() {
        assert_eq!(
            args("write = \"hset\"", "h:{order_id}", &order()),
            ["HSET h:7 order_id 7 total 9.5 status new"]
        );
        assert_eq!(
            args(
                "write = \"hset\"\nfields = [\"status\"]\nreplace = true\nttl = \"1m\"",
                "h:{key}",
                &order()
            ),
            ["DEL h:o-7", "HSET h:o-7 status new", "PEXPIRE h:o-7 60000"]
        );
    }

    #[test]
    fn hset_refuses_what_is_not_an_object() {
        let m = Message::from_payload("[1,2]");
        let e = Write::prepare(&plan("write = \"hset\""), &t("h"), &m).unwrap_err();
        assert!(e.to_string().contains("an array"), "{e}");
        let m = Message::from_payload("{\"a\": null}");
        assert!(Write::prepare(&plan("write = \"hset\""), &t("h"), &m).is_err());
    }

    #[test]
    fn lists_sets_and_sorted_sets() {
        let m = order();
        assert_eq!(
            args("write = \"lpush\"", "q", &m)[0]
                .split(' ')
                .take(2)
                .collect::<Vec<_>>(),
            ["LPUSH", "q"]
        );
        assert_eq!(
            args("write = \"sadd\"\nmember = \"{order_id}\"", "s", &m),
            ["SADD s 7"]
        );
        assert_eq!(
            args(
                "write = \"zadd\"\nscore = \"{total}\"\nmember = \"{key}\"",
                "z",
                &m
            ),
            ["ZADD z 9.5 o-7"]
        );
        let e = Write::prepare(&plan("write = \"zadd\"\nscore = \"{status}\""), &t("z"), &m)
            .unwrap_err();
        assert!(e.to_string().contains("not a number"), "{e}");
    }

    #[test]
    fn a_tombstone_deletes_the_key_or_removes_the_member() {
        for mode in ["set", "hset", "rpush"] {
            assert_eq!(
                args(&format!("write = \"{mode}\""), "order:{key}", &tombstone()),
                ["DEL order:o-7"]
            );
        }
        assert_eq!(
            args("write = \"sadd\"\nmember = \"{key}\"", "s", &tombstone()),
            ["SREM s o-7"]
        );
        assert_eq!(
            args(
                "write = \"zadd\"\nscore = \"{total}\"\nmember = \"{key}\"",
                "z",
                &tombstone()
            ),
            ["ZREM z o-7"]
        );
        assert_eq!(
            args("write = \"sadd\"", "s:{key}", &tombstone()),
            ["DEL s:o-7"]
        );
        assert_eq!(
            args("write = \"publish\"", "ch", &tombstone()),
            ["PUBLISH ch "]
        );
    }

    #[test]
    fn xadd_carries_payload_key_and_headers_and_trims() {
        let m = Message {
            key: Some("k1".into()),
            headers: [("trace", "t1")].into_iter().collect::<Headers>(),
            ..Message::from_payload("hello")
        };
        assert_eq!(
            args("write = \"xadd\"\nmaxlen = 1000", "events", &m),
            ["XADD events MAXLEN ~ 1000 * payload hello key k1 header.trace t1"]
        );
        let stamped = Message {
            timestamp: Some(1_700_000_000_123),
            ..m.clone()
        };
        assert_eq!(
            args("write = \"xadd\"", "events", &stamped),
            ["XADD events * payload hello key k1 timestamp 1700000000123 header.trace t1"]
        );
        assert_eq!(
            args("write = \"xadd\"", "events", &Message::default()),
            ["XADD events * tombstone 1"]
        );
        assert_eq!(
            args(
                "write = \"xadd\"\nstream_fields = \"json\"",
                "events",
                &order()
            ),
            ["XADD events * order_id 7 total 9.5 status new"]
        );
        let _ = Count::<Length>::new(1);
    }

    fn bulk(s: &str) -> redis::Value {
        redis::Value::BulkString(s.as_bytes().to_vec())
    }

    fn arr(v: Vec<redis::Value>) -> redis::Value {
        redis::Value::Array(v)
    }

    #[test]
    fn parses_stream_replies_including_deleted_entries() {
        let entries = arr(vec![
            arr(vec![
                bulk("1-0"),
                arr(vec![bulk("payload"), bulk("x"), bulk("key"), bulk("k")]),
            ]),
            arr(vec![bulk("2-0"), redis::Value::Nil]),
        ]);
        let reply = arr(vec![arr(vec![bulk("orders"), entries.clone()])]);
        let parsed = parse_read_reply(&reply).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0, "orders");
        assert_eq!(parsed[0].1[0].id, "1-0");
        assert_eq!(
            parsed[0].1[0].fields.as_ref().unwrap()[1],
            ("key".to_owned(), Bytes::from("k"))
        );
        assert_eq!(parsed[0].1[1].fields, None);
        assert_eq!(parse_read_reply(&redis::Value::Nil).unwrap(), vec![]);
        let resp3 = redis::Value::Map(vec![(bulk("orders"), entries.clone())]);
        assert_eq!(parse_read_reply(&resp3).unwrap(), parsed);
        let claim = arr(vec![bulk("0-0"), entries, arr(vec![bulk("3-0")])]);
        let (cursor, claimed, deleted) = parse_autoclaim_reply(&claim).unwrap();
        assert_eq!(
            (cursor.as_str(), claimed.len(), deleted),
            ("0-0", 2, vec!["3-0".to_owned()])
        );
        let pending = arr(vec![arr(vec![
            bulk("1-0"),
            bulk("c1"),
            redis::Value::Int(500),
            redis::Value::Int(3),
        ])]);
        assert_eq!(
            parse_pending(&pending).unwrap(),
            vec![("1-0".into(), "c1".into(), 500, 3)]
        );
    }

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
