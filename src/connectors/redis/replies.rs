//! Redis replies ferry reads: stream entries (`XRANGE`, `XREADGROUP`,
//! `XAUTOCLAIM`), pending rows (`XPENDING`), plain text. Pure, no I/O.

use bytes::Bytes;

/// One entry of a stream reply; `fields` is `None` for an entry that was
/// deleted while pending.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StreamEntry {
    pub id: String,
    pub fields: Option<Vec<(String, Bytes)>>,
}

/// Text of a bulk or simple string reply.
pub(crate) fn text(v: &redis::Value) -> Option<String> {
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
pub(crate) fn parse_entries(v: &redis::Value) -> Result<Vec<StreamEntry>, String> {
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
pub(crate) fn parse_read_reply(
    v: &redis::Value,
) -> Result<Vec<(String, Vec<StreamEntry>)>, String> {
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
pub(crate) fn parse_autoclaim_reply(
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
pub(crate) fn parse_pending(v: &redis::Value) -> Result<Vec<(String, String, u64, u64)>, String> {
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
}
