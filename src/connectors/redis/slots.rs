//! Redis Cluster slots, as ferry needs them (pure): which key a command is
//! routed by, a key's hash tag, and the primaries in a `CLUSTER SLOTS`
//! reply (all of them, or the one owning a key's slot).
//!
//! A cluster keeps each key in one of 16384 slots, computed from the key's
//! hash tag (the text between its first `{` and the next `}`) when it has
//! one, from the whole key otherwise. Keys that one script or one
//! `LMOVE` touches must share a slot, which hash tags make possible.

use redis::cluster_routing::Slot;
use redis::{Arg, Cmd, Value};

use super::replies::text;

fn arg(c: &Cmd, i: usize) -> Option<&[u8]> {
    match c.args_iter().nth(i)? {
        Arg::Simple(b) => Some(b),
        _ => None,
    }
}

/// The key a cluster routes `c` by, for the commands ferry sends; `None`
/// for a command that names no key.
pub(crate) fn routing_key(c: &Cmd) -> Option<&[u8]> {
    let name = arg(c, 0)?.to_ascii_uppercase();
    match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" => {
            let keys: usize = std::str::from_utf8(arg(c, 2)?).ok()?.parse().ok()?;
            if keys == 0 { None } else { arg(c, 3) }
        }
        b"XINFO" | b"XGROUP" | b"OBJECT" | b"MEMORY" => arg(c, 2),
        b"XREAD" | b"XREADGROUP" => {
            let at = c
                .args_iter()
                .position(|a| matches!(a, Arg::Simple(b) if b.eq_ignore_ascii_case(b"STREAMS")))?;
            arg(c, at + 1)
        }
        b"PING" | b"INFO" | b"WAIT" | b"SCAN" | b"DBSIZE" | b"CONFIG" | b"CLUSTER" | b"SCRIPT"
        | b"ROLE" => None,
        _ => arg(c, 1),
    }
}

/// A key's hash tag: the text between its first `{` and the next `}`,
/// when not empty.
pub(crate) fn hash_tag(key: &str) -> Option<&str> {
    let open = key.find('{')?;
    let close = key[open + 1..].find('}')?;
    Some(&key[open + 1..open + 1 + close]).filter(|t| !t.is_empty())
}

/// Whether two keys live in the same slot.
pub(crate) fn same_slot(a: impl AsRef<[u8]>, b: impl AsRef<[u8]>) -> bool {
    Slot::for_key(a) == Slot::for_key(b)
}

/// The `host:port` of each primary in a `CLUSTER SLOTS` reply (each range
/// is `[start, end, [host, port, id], replicas...]`), once each.
pub(crate) fn primaries_of(reply: &Value) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let Value::Array(ranges) = reply else {
        return out;
    };
    for range in ranges {
        let Value::Array(parts) = range else { continue };
        let Some(Value::Array(node)) = parts.get(2) else {
            continue;
        };
        let host = node.first().and_then(text);
        let port = match node.get(1) {
            Some(Value::Int(p)) => Some(*p),
            _ => None,
        };
        if let (Some(host), Some(port)) = (host, port) {
            let addr = format!("{host}:{port}");
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
    }
    out
}

/// Every node (primaries and replicas) in a `CLUSTER SLOTS` reply, once each.
pub(crate) fn nodes_of(reply: &Value) -> Vec<(String, u16)> {
    let mut out: Vec<(String, u16)> = Vec::new();
    let Value::Array(ranges) = reply else {
        return out;
    };
    for range in ranges {
        let Value::Array(parts) = range else { continue };
        for node in parts.iter().skip(2) {
            let Value::Array(node) = node else { continue };
            let host = node.first().and_then(text);
            let port = match node.get(1) {
                Some(Value::Int(p)) => u16::try_from(*p).ok(),
                _ => None,
            };
            if let (Some(host), Some(port)) = (host, port)
                && !out.iter().any(|(h, p)| *h == host && *p == port)
            {
                out.push((host, port));
            }
        }
    }
    out
}

/// The primary (`host`, `port`) that owns `key`'s slot in a `CLUSTER SLOTS`
/// reply; `None` when no range covers it (the cluster is not ok).
pub(crate) fn owner_of(reply: &Value, key: &[u8]) -> Option<(String, u16)> {
    let slot = Slot::for_key(key);
    let Value::Array(ranges) = reply else {
        return None;
    };
    ranges.iter().find_map(|range| {
        let Value::Array(parts) = range else {
            return None;
        };
        let bound = |i: usize| match parts.get(i) {
            Some(Value::Int(n)) => u16::try_from(*n).ok(),
            _ => None,
        };
        // redis-rs keeps a slot's number to itself: look for it among the
        // range's (at most 16384, a few microseconds).
        let (start, end) = (bound(0)?, bound(1)?);
        if !(start..=end).any(|n| Slot::new(n) == Some(slot)) {
            return None;
        }
        let Some(Value::Array(node)) = parts.get(2) else {
            return None;
        };
        let host = node
            .first()
            .and_then(text)
            .filter(|h| !h.is_empty() && h != "?")?;
        match node.get(1) {
            Some(Value::Int(p)) => Some((host, u16::try_from(*p).ok()?)),
            _ => None,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_routed_by_the_key_they_name() {
        let mut set = redis::cmd("SET");
        set.arg("k").arg("v");
        assert_eq!(routing_key(&set), Some(&b"k"[..]));
        let mut eval = redis::cmd("EVALSHA");
        eval.arg("sha").arg(2).arg("pos").arg("data").arg("w");
        assert_eq!(routing_key(&eval), Some(&b"pos"[..]));
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("STREAMS")
            .arg("s")
            .arg(">");
        assert_eq!(routing_key(&read), Some(&b"s"[..]));
        let mut info = redis::cmd("XINFO");
        info.arg("STREAM").arg("s");
        assert_eq!(routing_key(&info), Some(&b"s"[..]));
        assert_eq!(routing_key(&redis::cmd("PING")), None);
    }

    #[test]
    fn a_hash_tag_is_the_first_braces_and_decides_the_slot() {
        assert_eq!(hash_tag("{orders}:1"), Some("orders"));
        assert_eq!(hash_tag("a{b}{c}"), Some("b"));
        assert_eq!(hash_tag("{}x"), None);
        assert_eq!(hash_tag("plain"), None);
        assert!(same_slot("{orders}:1", "ferry:positions:{orders}:p"));
        assert!(same_slot("orders", "{orders}:processing:c"));
        assert!(!same_slot("orders:1", "orders:2") || same_slot("orders:2", "orders:1"));
    }

    #[test]
    fn primaries_are_read_from_cluster_slots() {
        let node = |h: &str, p| {
            Value::Array(vec![
                Value::BulkString(h.into()),
                Value::Int(p),
                Value::BulkString(b"id".to_vec()),
            ])
        };
        let range =
            |a, b, n: Value, r: Value| Value::Array(vec![Value::Int(a), Value::Int(b), n, r]);
        let reply = Value::Array(vec![
            range(0, 5000, node("10.0.0.1", 7000), node("10.0.0.4", 7003)),
            range(5001, 10000, node("10.0.0.2", 7001), node("10.0.0.5", 7004)),
            range(10001, 16383, node("10.0.0.1", 7000), node("10.0.0.6", 7005)),
        ]);
        assert_eq!(primaries_of(&reply), ["10.0.0.1:7000", "10.0.0.2:7001"]);
        assert_eq!(nodes_of(&reply).len(), 5);
        // "foo" is in slot 12182, "bar" in 5061, "{bar}x" with it.
        let owner = |k: &str| owner_of(&reply, k.as_bytes());
        assert_eq!(owner("foo"), Some(("10.0.0.1".into(), 7000)));
        assert_eq!(owner("bar"), Some(("10.0.0.2".into(), 7001)));
        assert_eq!(owner("{bar}x"), owner("bar"));
        let partial = Value::Array(vec![range(
            0,
            5000,
            node("10.0.0.1", 7000),
            node("10.0.0.4", 7003),
        )]);
        assert_eq!(owner_of(&partial, b"foo"), None);
    }
}
