//! ferry message -> Redis commands, for the sink. Pure, no I/O.
//!
//! Per `write` mode:
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
//! Hash (and `json` stream) fields: strings as they are, numbers and
//! booleans as their JSON text, nested objects and arrays as JSON, and
//! `null` fields are left out.

use std::time::Duration;

use bytes::Bytes;

use super::config::{StreamFields, WritePlan};
use super::exactly_once::Recorded;
use super::stream_entry::stream_fields;
use crate::error::MessageError;
use crate::message::Message;
use crate::template::{Template, json_kind, lookup};

/// The commands that write one message.
#[derive(Clone, Debug)]
pub struct Write {
    pub commands: Vec<redis::Cmd>,
    /// The key written.
    pub key: Vec<u8>,
    /// With `exactly_once`: where the write is recorded.
    pub(crate) recorded: Option<Recorded>,
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
            recorded: None,
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
pub(crate) fn object_fields(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::redis::config::RedisSinkConfig;
    use crate::message::Headers;
    use crate::values::{Count, Length};

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
}
