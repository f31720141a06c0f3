//! A Redis key's value as a message payload, for the keyspace source.
//! Pure, no I/O.
//!
//! A string as is; a hash as a JSON object; a list and a set as JSON arrays;
//! a sorted set as a JSON object of member -> score; a stream as
//! `{"length", "last_id", "last_entry"}`; a key that is gone as a tombstone.

use std::collections::HashMap;

use bytes::Bytes;

use super::replies::{parse_entries, text};

/// The command that reads a whole key of type `kind` (as `TYPE` names it),
/// in the form [`encode_value`] takes; `EXISTS` for a type the source does
/// not read (the key is then sent without a value).
pub(crate) fn read_command(kind: &str, key: &str) -> redis::Cmd {
    let mut c;
    match kind {
        "string" => {
            c = redis::cmd("GET");
            c.arg(key);
        }
        "hash" => {
            c = redis::cmd("HGETALL");
            c.arg(key);
        }
        "list" => {
            c = redis::cmd("LRANGE");
            c.arg(key).arg(0).arg(-1);
        }
        "set" => {
            c = redis::cmd("SMEMBERS");
            c.arg(key);
        }
        "zset" => {
            c = redis::cmd("ZRANGE");
            c.arg(key).arg(0).arg(-1).arg("WITHSCORES");
        }
        "stream" => {
            c = redis::cmd("XINFO");
            c.arg("STREAM").arg(key);
        }
        _ => {
            c = redis::cmd("EXISTS");
            c.arg(key);
        }
    }
    c
}

/// The value of a key as a payload; `None` (a tombstone) if it is gone. A
/// string's bytes become the payload as they are, without a copy.
pub(crate) fn encode_value(kind: &str, value: redis::Value) -> Option<Bytes> {
    use serde_json::{Map, Value as J};
    let strings = |v: &redis::Value| -> Vec<String> {
        match v {
            redis::Value::Array(items) | redis::Value::Set(items) => {
                items.iter().filter_map(text).collect()
            }
            _ => Vec::new(),
        }
    };
    let pairs = |v: &redis::Value| -> Vec<(String, String)> {
        match v {
            redis::Value::Map(kv) => kv
                .iter()
                .filter_map(|(k, v)| Some((text(k)?, text(v).or_else(|| double(v))?)))
                .collect(),
            _ => strings(v)
                .chunks(2)
                .filter_map(|kv| Some((kv.first()?.clone(), kv.get(1)?.clone())))
                .collect(),
        }
    };
    let json = match kind {
        "string" => {
            return match value {
                redis::Value::BulkString(b) => Some(Bytes::from(b)),
                redis::Value::Nil => None,
                other => text(&other).map(Bytes::from),
            };
        }
        "hash" => J::Object(
            pairs(&value)
                .into_iter()
                .map(|(k, v)| (k, J::String(v)))
                .collect(),
        ),
        "list" => J::Array(strings(&value).into_iter().map(J::String).collect()),
        "set" => {
            let mut members = strings(&value);
            members.sort();
            J::Array(members.into_iter().map(J::String).collect())
        }
        "zset" => J::Object(
            pairs(&value)
                .into_iter()
                .map(|(m, s)| {
                    let score = s.parse::<f64>().ok().and_then(serde_json::Number::from_f64);
                    (m, score.map_or(J::String(s), J::Number))
                })
                .collect(),
        ),
        "stream" => {
            let info: HashMap<String, &redis::Value> = match &value {
                redis::Value::Map(kv) => {
                    kv.iter().filter_map(|(k, v)| Some((text(k)?, v))).collect()
                }
                redis::Value::Array(flat) => flat
                    .chunks(2)
                    .filter_map(|kv| Some((text(&kv[0])?, kv.get(1)?)))
                    .collect(),
                _ => HashMap::new(),
            };
            let mut out = Map::new();
            if let Some(n) = info.get("length").and_then(|v| text(v)) {
                out.insert(
                    "length".into(),
                    n.parse::<u64>().map_or(J::String(n), J::from),
                );
            }
            if let Some(id) = info.get("last-generated-id").and_then(|v| text(v)) {
                out.insert("last_id".into(), J::String(id));
            }
            let last = info
                .get("last-entry")
                .and_then(|v| parse_entries(redis::Value::Array(vec![(*v).clone()])).ok())
                .and_then(|mut e| e.pop())
                .and_then(|e| e.fields);
            if let Some(fields) = last {
                let entry = fields
                    .into_iter()
                    .map(|(f, v)| (f, J::String(String::from_utf8_lossy(&v).into_owned())))
                    .collect();
                out.insert("last_entry".into(), J::Object(entry));
            }
            J::Object(out)
        }
        _ => return None,
    };
    Some(Bytes::from(json.to_string()))
}

/// What the sync observe script found for a key.
#[derive(Debug, PartialEq)]
pub(crate) enum Observed {
    /// A type sync does not handle: read it the usual way.
    Other,
    /// The value ferry last wrote or sent: nothing to emit.
    Unchanged,
    /// A change made in Redis: its type and value.
    Changed(String, redis::Value),
}

/// Reads the observe script's reply (`{type, status, value}`); anything
/// unexpected is read again the usual way.
pub(crate) fn observed(reply: redis::RedisResult<redis::Value>) -> Observed {
    let Ok(redis::Value::Array(parts)) = reply else {
        return Observed::Other;
    };
    let kind = parts.first().and_then(text).unwrap_or_default();
    match parts.get(1) {
        Some(redis::Value::Int(0)) => Observed::Unchanged,
        Some(redis::Value::Int(1)) => {
            Observed::Changed(kind, parts.get(2).cloned().unwrap_or(redis::Value::Nil))
        }
        _ => Observed::Other,
    }
}

fn double(v: &redis::Value) -> Option<String> {
    match v {
        redis::Value::Double(d) => Some(d.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> redis::Value {
        redis::Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn values_are_encoded_by_type() {
        let enc = |kind, v| encode_value(kind, v).map(|b| String::from_utf8(b.to_vec()).unwrap());
        assert_eq!(enc("string", bulk("hello")).as_deref(), Some("hello"));
        assert_eq!(enc("string", redis::Value::Nil), None);
        assert_eq!(enc("none", redis::Value::Int(0)), None);
        let hash = redis::Value::Array(vec![bulk("name"), bulk("ada"), bulk("age"), bulk("36")]);
        assert_eq!(
            enc("hash", hash).as_deref(),
            Some(r#"{"name":"ada","age":"36"}"#)
        );
        let set = redis::Value::Array(vec![bulk("b"), bulk("a")]);
        assert_eq!(enc("set", set).as_deref(), Some(r#"["a","b"]"#));
        let zset = redis::Value::Array(vec![bulk("x"), bulk("1.5")]);
        assert_eq!(enc("zset", zset).as_deref(), Some(r#"{"x":1.5}"#));
        let list = redis::Value::Array(vec![bulk("1"), bulk("2")]);
        assert_eq!(enc("list", list).as_deref(), Some(r#"["1","2"]"#));
    }
}
