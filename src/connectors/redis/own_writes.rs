//! Writes ferry made to Redis, remembered so that a keyspace source in the
//! same process recognises the notifications they cause.
//!
//! A Redis value cannot carry ferry's origin header, so in a two-way sync
//! (Redis -> Kafka -> Redis) a value ferry wrote would come back as a new
//! change and echo forever. The Redis sink records a fingerprint of each
//! value it is about to write (`SET`, `HSET` with `replace`, deletions);
//! the keyspace source, reading a changed key, asks whether the value it
//! found is such a write, and if so does not emit it.
//!
//! Bounded: at most [`MAX_ENTRIES`] writes, each forgotten after [`TTL`].
//! A match forgets that write and every older one of the same key (those
//! values were overwritten). An application that writes, within the TTL,
//! exactly the value ferry has just written and that ferry has not yet
//! seen, would be taken for ferry; such a change carries no news anyway.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long a write is remembered.
pub const TTL: Duration = Duration::from_secs(30);
/// How many writes are remembered at most.
pub const MAX_ENTRIES: usize = 100_000;

type Key = (String, Vec<u8>);

#[derive(Default)]
struct State {
    by_key: HashMap<Key, VecDeque<(u64, Instant)>>,
    order: VecDeque<(Key, Instant)>,
}

/// The registry of recent writes.
#[derive(Default)]
pub struct OwnWrites {
    state: Mutex<State>,
    /// Only a process with a keyspace source needs the registry; others
    /// skip the bookkeeping.
    enabled: std::sync::atomic::AtomicBool,
}

impl OwnWrites {
    /// The process's registry, shared by every Redis sink and keyspace source.
    pub fn global() -> &'static OwnWrites {
        static REGISTRY: OnceLock<OwnWrites> = OnceLock::new();
        REGISTRY.get_or_init(OwnWrites::default)
    }

    /// Turns the registry on (a keyspace source will consult it).
    pub fn enable(&self) {
        self.enabled
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Remembers that ferry writes a value with `fingerprint` to `key` of
    /// `server` (see [`server_id`]).
    pub fn record(&self, server: &str, key: &[u8], fingerprint: u64) {
        if !self.enabled.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        expire(&mut s, now);
        while s.order.len() >= MAX_ENTRIES {
            pop_oldest(&mut s);
        }
        let k = (server.to_owned(), key.to_vec());
        s.by_key
            .entry(k.clone())
            .or_default()
            .push_back((fingerprint, now));
        s.order.push_back((k, now));
    }

    /// Whether the value with `fingerprint` now in `key` is one ferry wrote.
    pub fn is_own(&self, server: &str, key: &[u8], fingerprint: u64) -> bool {
        let now = Instant::now();
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        expire(&mut s, now);
        let k = (server.to_owned(), key.to_vec());
        let Some(writes) = s.by_key.get_mut(&k) else {
            return false;
        };
        let Some(i) = writes.iter().rposition(|(f, _)| *f == fingerprint) else {
            return false;
        };
        writes.drain(..=i);
        if writes.is_empty() {
            s.by_key.remove(&k);
        }
        true
    }

    /// Writes remembered now (for tests and logs).
    pub fn len(&self) -> usize {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.by_key.values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn pop_oldest(s: &mut State) {
    if let Some((k, at)) = s.order.pop_front()
        && let Some(writes) = s.by_key.get_mut(&k)
    {
        if let Some(pos) = writes.iter().position(|(_, t)| *t == at) {
            writes.remove(pos);
        }
        if writes.is_empty() {
            s.by_key.remove(&k);
        }
    }
}

fn expire(s: &mut State, now: Instant) {
    while s
        .order
        .front()
        .is_some_and(|(_, at)| now.duration_since(*at) > TTL)
    {
        pop_oldest(s);
    }
}

/// Identifies a Redis server and database: `host:port/db`.
pub fn server_id(url: &str) -> String {
    match redis::IntoConnectionInfo::into_connection_info(url) {
        Ok(info) => format!("{}/{}", info.addr(), info.redis_settings().db()),
        Err(_) => url.to_owned(),
    }
}

fn hasher() -> std::collections::hash_map::DefaultHasher {
    std::collections::hash_map::DefaultHasher::new()
}

/// Fingerprint of a string value.
pub fn of_string(value: &[u8]) -> u64 {
    let mut h = hasher();
    0u8.hash(&mut h);
    value.hash(&mut h);
    h.finish()
}

/// Fingerprint of a hash value, whatever the order of its fields.
pub fn of_hash<'a>(fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> u64 {
    let mut pairs: Vec<(&[u8], &[u8])> = fields.into_iter().collect();
    pairs.sort();
    let mut h = hasher();
    1u8.hash(&mut h);
    pairs.hash(&mut h);
    h.finish()
}

/// Fingerprint of a key that does not exist.
pub fn of_nothing() -> u64 {
    let mut h = hasher();
    2u8.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recorded_write_is_recognised_once_with_older_ones() {
        let w = OwnWrites::default();
        w.enable();
        w.record("s", b"k", of_string(b"v1"));
        w.record("s", b"k", of_string(b"v2"));
        assert!(
            !w.is_own("s", b"k", of_string(b"other")),
            "someone else's value"
        );
        assert!(w.is_own("s", b"k", of_string(b"v2")));
        assert!(
            !w.is_own("s", b"k", of_string(b"v1")),
            "v1 was overwritten by v2"
        );
        assert!(w.is_empty());
        assert!(!w.is_own("other-server", b"k", of_string(b"v2")));
    }

    #[test]
    fn nothing_is_recorded_until_enabled() {
        let w = OwnWrites::default();
        w.record("s", b"k", 1);
        assert!(w.is_empty());
    }

    #[test]
    fn hash_fingerprints_ignore_field_order_and_kinds_do_not_collide() {
        let a = of_hash([(&b"a"[..], &b"1"[..]), (b"b", b"2")]);
        let b = of_hash([(&b"b"[..], &b"2"[..]), (b"a", b"1")]);
        assert_eq!(a, b);
        assert_ne!(of_string(b""), of_nothing());
        assert_ne!(of_hash([]), of_nothing());
    }

    #[test]
    fn memory_is_bounded() {
        let w = OwnWrites::default();
        w.enable();
        for i in 0..MAX_ENTRIES + 10 {
            w.record("s", i.to_string().as_bytes(), 1);
        }
        assert_eq!(w.len(), MAX_ENTRIES);
        assert!(!w.is_own("s", b"0", 1), "the oldest were forgotten");
    }

    #[test]
    fn servers_are_identified_by_address_and_database() {
        assert_eq!(
            server_id("redis://127.0.0.1:6379/2"),
            server_id("redis://127.0.0.1:6379/2")
        );
        assert_ne!(
            server_id("redis://127.0.0.1:6379/2"),
            server_id("redis://127.0.0.1:6379/3")
        );
    }
}
