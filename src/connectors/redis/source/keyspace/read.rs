//! Reading changed keys' values (without `sync`): each key's `TYPE` goes
//! with the read that the type of the last key read needs (keys under one
//! pattern mostly share a type), in one pipelined round trip, and only the
//! keys of another type are read again, by their type. The round trip is
//! sent ahead, on a task of its own: Redis reads the next keys while the
//! pipeline works on the last ones (keyspace -> Kafka about a quarter
//! faster, docs/performance.md "Phase F").

use redis::{RedisError, RedisResult, Value};
use tokio::task::JoinHandle;

use crate::connectors::redis::connection::RedisConn;
use crate::connectors::redis::key_value::read_command;

/// A changed key and the event that last changed it.
pub(super) type Changed = (String, String);

/// A read on its way: the keys, the read sent with their `TYPE`s, and the
/// task that brings the replies.
pub(super) struct Ahead {
    pub(super) keys: Vec<Changed>,
    pub(super) guessed: String,
    pub(super) replies: JoinHandle<RedisResult<Vec<RedisResult<Value>>>>,
}

/// Sends `TYPE` and the `guessed` type's read for each key.
pub(super) fn send(cmd: &RedisConn, keys: Vec<Changed>, guessed: String) -> Ahead {
    let mut commands = Vec::with_capacity(keys.len() * 2);
    for (key, _) in &keys {
        let mut kind = redis::cmd("TYPE");
        kind.arg(key);
        commands.push(kind);
        commands.push(read_command(&guessed, key));
    }
    let mut conn = cmd.clone();
    let replies = tokio::spawn(async move { conn.run(&commands, false).await });
    Ahead {
        keys,
        guessed,
        replies,
    }
}

/// A key, its event, its type and the reply to its read.
pub(super) type KeyRead = (String, String, String, RedisResult<Value>);

/// What one round trip found.
#[derive(Debug, Default)]
pub(super) struct Sorted {
    /// Keys read by their type (or gone), to emit; a failed reply means the
    /// key changed type in between, and is read again later.
    pub(super) read: Vec<KeyRead>,
    /// Keys of another type than guessed, with their type: read them again.
    pub(super) again: Vec<(String, String, String)>,
    /// The read to send with the next keys: the last type seen.
    pub(super) likely: String,
}

/// Sorts the replies to [`send`]'s commands (`TYPE`, read, per key). An
/// error (a `TYPE` refused, replies missing) means nothing of it is used.
pub(super) fn sort(
    keys: Vec<Changed>,
    guessed: String,
    replies: Vec<RedisResult<Value>>,
) -> Result<Sorted, (Vec<Changed>, RedisError)> {
    if replies.len() != keys.len() * 2 {
        let e = RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "a reply missing",
            format!("{} replies to {} commands", replies.len(), keys.len() * 2),
        ));
        return Err((keys, e));
    }
    let mut kinds = Vec::with_capacity(keys.len());
    let mut values = Vec::with_capacity(keys.len());
    let mut replies = replies.into_iter();
    while let (Some(kind), Some(value)) = (replies.next(), replies.next()) {
        match kind.and_then(|v| redis::from_redis_value::<String>(v).map_err(Into::into)) {
            Ok(kind) => kinds.push(kind),
            Err(e) => return Err((keys, e)),
        }
        values.push(value);
    }
    let mut sorted = Sorted::default();
    for (((key, event), kind), value) in keys.into_iter().zip(kinds).zip(values) {
        if kind == guessed || kind == "none" {
            sorted.read.push((key, event, kind, value));
        } else {
            sorted.again.push((key, event, kind));
        }
    }
    sorted.likely = sorted
        .again
        .last()
        .map_or(guessed, |(_, _, kind)| kind.clone());
    Ok(sorted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(names: &[&str]) -> Vec<Changed> {
        names
            .iter()
            .map(|k| ((*k).to_owned(), "set".to_owned()))
            .collect()
    }

    fn kind(k: &str) -> RedisResult<Value> {
        Ok(Value::SimpleString(k.to_owned()))
    }

    fn refused() -> RedisResult<Value> {
        Err(RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "WRONGTYPE",
            "Operation against a key holding the wrong kind of value".to_owned(),
        )))
    }

    #[test]
    fn keys_of_the_guessed_type_or_gone_are_read_and_the_others_read_again() {
        let replies = vec![
            kind("string"),
            Ok(Value::BulkString(b"v".to_vec())),
            kind("hash"),
            refused(),
            kind("none"),
            Ok(Value::Nil),
            kind("string"),
            refused(),
        ];
        let sorted = sort(keys(&["a", "b", "c", "d"]), "string".into(), replies).unwrap();
        let read: Vec<(&str, &str, bool)> = sorted
            .read
            .iter()
            .map(|(k, _, t, v)| (k.as_str(), t.as_str(), v.is_ok()))
            .collect();
        assert_eq!(
            read,
            [
                ("a", "string", true),
                ("c", "none", true),
                ("d", "string", false)
            ],
            "d changed type between TYPE and GET: its failed read is kept, to read it later"
        );
        assert_eq!(sorted.again, [("b".into(), "set".into(), "hash".into())]);
        assert_eq!(sorted.likely, "hash", "the next keys are read as hashes");
    }

    #[test]
    fn the_guess_stays_when_every_key_had_it() {
        let replies = vec![kind("zset"), Ok(Value::Array(vec![]))];
        let sorted = sort(keys(&["a"]), "zset".into(), replies).unwrap();
        assert!(sorted.again.is_empty());
        assert_eq!(sorted.likely, "zset");
    }

    #[test]
    fn a_refused_type_or_a_missing_reply_gives_every_key_back() {
        let (back, _) = sort(keys(&["a", "b"]), "string".into(), vec![kind("string")])
            .expect_err("a reply missing");
        assert_eq!(back, keys(&["a", "b"]));
        let replies = vec![kind("string"), Ok(Value::Nil), refused(), Ok(Value::Nil)];
        let (back, _) =
            sort(keys(&["a", "b"]), "string".into(), replies).expect_err("TYPE refused");
        assert_eq!(back.len(), 2);
    }
}
