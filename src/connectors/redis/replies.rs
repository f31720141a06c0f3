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

/// A bulk string's bytes, taken over rather than copied: a stream entry's
/// payload becomes the message's without another allocation.
fn into_bytes(v: redis::Value) -> Option<Bytes> {
    match v {
        redis::Value::BulkString(b) => Some(Bytes::from(b)),
        redis::Value::SimpleString(s) => Some(Bytes::from(s)),
        redis::Value::Int(i) => Some(Bytes::from(i.to_string())),
        _ => None,
    }
}

/// [`text`] of an owned reply, without a copy when it is valid UTF-8.
fn into_text(v: redis::Value) -> Option<String> {
    match v {
        redis::Value::BulkString(b) => Some(
            String::from_utf8(b)
                .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        ),
        redis::Value::SimpleString(s) => Some(s),
        other => text(&other),
    }
}

fn into_items(v: redis::Value) -> Option<Vec<redis::Value>> {
    match v {
        redis::Value::Array(a) | redis::Value::Set(a) => Some(a),
        _ => None,
    }
}

/// `[[id, [f1, v1, ...]], ...]`, as `XRANGE`, `XREADGROUP` (per stream)
/// and `XAUTOCLAIM` (second element) answer. Takes the reply: its bulk
/// strings become the entries' values as they are.
pub(crate) fn parse_entries(v: redis::Value) -> Result<Vec<StreamEntry>, String> {
    let entries = into_items(v).ok_or("entries are not an array")?;
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let mut parts = into_items(entry)
            .ok_or("an entry is not an array")?
            .into_iter();
        let id = parts
            .next()
            .and_then(into_text)
            .ok_or("an entry has no id")?;
        let fields = match parts.next() {
            None | Some(redis::Value::Nil) => None,
            Some(list) => {
                let flat = into_items(list).ok_or("entry fields are not an array")?;
                let mut fields = Vec::with_capacity(flat.len() / 2);
                let mut flat = flat.into_iter();
                while let (Some(f), Some(v)) = (flat.next(), flat.next()) {
                    fields.push((
                        into_text(f).ok_or("a field name is not a string")?,
                        into_bytes(v).unwrap_or_default(),
                    ));
                }
                Some(fields)
            }
        };
        out.push(StreamEntry { id, fields });
    }
    Ok(out)
}

/// An `XREADGROUP` / `XREAD` reply: entries per stream (`Nil` on timeout).
pub(crate) fn parse_read_reply(v: redis::Value) -> Result<Vec<(String, Vec<StreamEntry>)>, String> {
    match v {
        redis::Value::Nil => Ok(Vec::new()),
        redis::Value::Map(pairs) => pairs
            .into_iter()
            .map(|(name, entries)| {
                Ok((
                    into_text(name).ok_or("a stream name is not a string")?,
                    parse_entries(entries)?,
                ))
            })
            .collect(),
        other => into_items(other)
            .ok_or("the reply is not an array")?
            .into_iter()
            .map(|stream| {
                let mut parts = into_items(stream)
                    .ok_or("a stream reply is not an array")?
                    .into_iter();
                let name = parts
                    .next()
                    .and_then(into_text)
                    .ok_or("a stream has no name")?;
                let entries = parts.next().ok_or("a stream has no entries")?;
                Ok((name, parse_entries(entries)?))
            })
            .collect(),
    }
}

/// An `XAUTOCLAIM` reply: the next cursor, the claimed entries, and the ids
/// of entries that no longer exist.
pub(crate) fn parse_autoclaim_reply(
    v: redis::Value,
) -> Result<(String, Vec<StreamEntry>, Vec<String>), String> {
    let mut parts = into_items(v)
        .ok_or("the reply is not an array")?
        .into_iter();
    let cursor = parts.next().and_then(into_text).ok_or("no cursor")?;
    let entries = parse_entries(parts.next().ok_or("no entries")?)?;
    let deleted = parts
        .next()
        .and_then(into_items)
        .map(|ids| ids.into_iter().filter_map(into_text).collect())
        .unwrap_or_default();
    Ok((cursor, entries, deleted))
}

/// Extended `XPENDING` rows: `(id, consumer, idle ms, deliveries)`.
pub(crate) fn parse_pending(v: redis::Value) -> Result<Vec<(String, String, u64, u64)>, String> {
    into_items(v)
        .ok_or("the reply is not an array")?
        .into_iter()
        .map(|row| {
            let r = into_items(row).ok_or("a row is not an array")?;
            let num = |i: usize| match r.get(i) {
                Some(redis::Value::Int(n)) => Some(*n as u64),
                Some(v) => text(v).and_then(|t| t.parse().ok()),
                None => None,
            };
            Ok((
                r.first().and_then(text).ok_or("no id")?,
                r.get(1).and_then(text).ok_or("no consumer")?,
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
        let parsed = parse_read_reply(reply).unwrap();
        assert_eq!(parsed.len(), 1);
        assert_eq!(parsed[0].0, "orders");
        assert_eq!(parsed[0].1[0].id, "1-0");
        assert_eq!(
            parsed[0].1[0].fields.as_ref().unwrap()[1],
            ("key".to_owned(), Bytes::from("k"))
        );
        assert_eq!(parsed[0].1[1].fields, None);
        assert_eq!(parse_read_reply(redis::Value::Nil).unwrap(), vec![]);
        let resp3 = redis::Value::Map(vec![(bulk("orders"), entries.clone())]);
        assert_eq!(parse_read_reply(resp3).unwrap(), parsed);
        let claim = arr(vec![bulk("0-0"), entries, arr(vec![bulk("3-0")])]);
        let (cursor, claimed, deleted) = parse_autoclaim_reply(claim).unwrap();
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
            parse_pending(pending).unwrap(),
            vec![("1-0".into(), "c1".into(), 500, 3)]
        );
    }
}
