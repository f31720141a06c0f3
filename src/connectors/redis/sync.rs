//! Two-way sync of Redis keys with a log (a Kafka topic, a RabbitMQ
//! queue): the scripts that let both sides end equal. Pure: scripts, their
//! arguments, names; the keyspace source and the Redis sink send them.
//!
//! The rule: **the log's order decides.** Redis is one writer among others
//! to the log: a change made in Redis enters the log's order when ferry
//! appends it. The sink applies the log's records in order, so Redis ends
//! with the key's last record, as every other reader of the log does, with
//! one exception that keeps Redis from going back in time: while a change
//! made in Redis is on its way into the log, older records of that key
//! (which the log holds before it) are skipped.
//!
//! Redis values cannot carry that bookkeeping, so each synced key has a
//! companion hash (see [`companion`]):
//! - `fp`: a fingerprint of the value ferry last wrote or sent for the key.
//!   The keyspace source compares the key's value with it: equal means the
//!   change is ferry's own write (or no change), which is not sent back.
//!   This works across processes and restarts, and only matches the value
//!   ferry really wrote.
//! - `pend`, `pend_at`: the id of a change made in Redis and sent to the
//!   log, and when. The source sets them; the record carries the id in the
//!   `ferry.change` header; when the sink reads that record back from the
//!   log (its own echo), it clears them. Meanwhile the sink skips records of
//!   the key: they are older in the log than the change on its way. After
//!   [`PENDING_HOLD_MS`] without its echo (the change was lost on its way, or
//!   the sink lags far behind), records are applied again; an echo that
//!   arrives later is then applied like any record, so the log's order
//!   still decides.
//!
//! What is lost: a change made in Redis that ferry overwrites before the
//! keyspace source has read it (both changes raced; the log's record was
//! the last write to Redis), as in any last-writer-wins register.

use super::script;

/// Header carrying the id of a change made in Redis, so that the sink can
/// recognise that change when it comes back from the log.
pub const CHANGE_HEADER: &str = "ferry.change";

/// How long the sink holds off a key's records while a change made in Redis
/// is on its way into the log (normally well under a second).
pub const PENDING_HOLD_MS: u64 = 30_000;

/// The prefix of every key ferry keeps for itself in a user's Redis
/// (companions, `exactly_once` positions). Keyspace sources ignore them.
pub const RESERVED_PREFIX: &str = "ferry:";

/// The companion hash of `key`. It shares `key`'s cluster slot: a key
/// with a hash tag keeps it (`ferry:sync:order:{7}`), any other key
/// becomes the tag (`ferry:sync:{order:7}`).
pub fn companion(key: &[u8]) -> Vec<u8> {
    let mut out = b"ferry:sync:".to_vec();
    if has_hash_tag(key) {
        out.extend_from_slice(key);
    } else {
        out.push(b'{');
        out.extend_from_slice(key);
        out.push(b'}');
    }
    out
}

/// Whether Redis Cluster hashes only part of `key`: a `{` followed later by
/// a `}` with something in between.
fn has_hash_tag(key: &[u8]) -> bool {
    key.iter().position(|&b| b == b'{').is_some_and(|open| {
        key[open + 1..]
            .iter()
            .position(|&b| b == b'}')
            .is_some_and(|close| close > 0)
    })
}

/// A new change id: unique enough to tell a key's changes apart.
pub fn change_id() -> String {
    format!(
        "{:x}-{:016x}",
        crate::clock::now_ms(),
        rand::random::<u64>()
    )
}

/// Lua, shared by both scripts: a key's type, its value as the source
/// emits it, and a fingerprint of it; `fp` is nil for types sync does not
/// handle.
macro_rules! fingerprint_lua {
    () => {
        r#"
local function fingerprint(key)
  local t = redis.call('TYPE', key)['ok']
  if t == 'string' then
    local v = redis.call('GET', key)
    return t, v, 's' .. redis.sha1hex(v)
  elseif t == 'hash' then
    local flat = redis.call('HGETALL', key)
    local fields = {}
    for i = 1, #flat, 2 do
      fields[#fields + 1] = {flat[i], flat[i + 1]}
    end
    table.sort(fields, function(a, b) return a[1] < b[1] end)
    local parts = {}
    for _, f in ipairs(fields) do
      parts[#parts + 1] = #f[1] .. ':' .. f[1] .. #f[2] .. ':' .. f[2]
    end
    return t, flat, 'h' .. redis.sha1hex(table.concat(parts))
  elseif t == 'none' then
    return t, false, 'none'
  end
  return t, false, nil
end
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
-- A deleted key's companion is kept a day: it remembers that the deletion
-- was ferry's, or was sent.
local function keep(companion, t)
  if t == 'none' then
    redis.call('PEXPIRE', companion, 86400000)
  else
    redis.call('PERSIST', companion)
  end
end
"#
    };
}

/// The keyspace source's read of a changed key.
///
/// `KEYS[1]`: the key; `KEYS[2]`: its companion. `ARGV[1]`: a new change id, or
/// the one of a read whose reply was lost. Returns `{type, -1}` for a type
/// sync does not handle (the source reads it the usual way), `{type, 0}`
/// when the value is the one ferry last wrote or sent (not a change to
/// send), `{type, 1, value}` for a change made in Redis, now pending under
/// the change id (again, when the same id reads the same value).
pub const OBSERVE_SCRIPT: &str = concat!(
    fingerprint_lua!(),
    r#"
local t, value, fp = fingerprint(KEYS[1])
if not fp then
  return {t, -1}
end
local seen = redis.call('HMGET', KEYS[2], 'fp', 'pend')
if seen[1] == fp then
  -- Read again after a lost reply: the change is still this read's.
  if seen[2] == ARGV[1] then
    return {t, 1, value}
  end
  return {t, 0}
end
redis.call('HSET', KEYS[2], 'fp', fp, 'pend', ARGV[1], 'pend_at', now_ms())
keep(KEYS[2], t)
return {t, 1, value}
"#
);

/// The sink's write of a record from the log.
///
/// `KEYS[1]`: the key; `KEYS[2]`: its companion. `ARGV[1]`: `w` for a record,
/// `e` for the echo of a change made in Redis; `ARGV[2]`: the record's change
/// id (or empty); `ARGV[3]`: how long a pending change holds records off (ms);
/// `ARGV[4]`: the number of commands, then each command as its argument count
/// and its arguments. Returns 1 when written, 0 when skipped (a change made
/// in Redis is on its way into the log, after this record), 2 for the echo
/// of the pending change (already in place).
pub const APPLY_SCRIPT: &str = concat!(
    fingerprint_lua!(),
    r#"
local pend = redis.call('HMGET', KEYS[2], 'pend', 'pend_at')
if ARGV[1] == 'e' and pend[1] == ARGV[2] then
  redis.call('HDEL', KEYS[2], 'pend', 'pend_at')
  return 2
end
if pend[1] and now_ms() - tonumber(pend[2]) < tonumber(ARGV[3]) then
  return 0
end
local i = 5
for _ = 1, tonumber(ARGV[4]) do
  local n = tonumber(ARGV[i])
  redis.call(unpack(ARGV, i + 1, i + n))
  i = i + n + 1
end
local t, _, fp = fingerprint(KEYS[1])
redis.call('HSET', KEYS[2], 'fp', fp or '')
redis.call('HDEL', KEYS[2], 'pend', 'pend_at')
keep(KEYS[2], t)
return 1
"#
);

/// What the apply script did with a record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    Written,
    /// Older in the log than a change made in Redis on its way there.
    HeldOff,
    /// The echo of the change on its way: nothing to write.
    Echo,
}

impl Applied {
    pub fn from_reply(reply: &redis::Value) -> Option<Applied> {
        match reply {
            redis::Value::Int(1) => Some(Applied::Written),
            redis::Value::Int(0) => Some(Applied::HeldOff),
            redis::Value::Int(2) => Some(Applied::Echo),
            _ => None,
        }
    }
}

/// The one command that applies `commands` (the write of one record to
/// `key`) through [`APPLY_SCRIPT`], whose SHA1 is `sha`.
pub fn apply_call(
    sha: &str,
    key: &[u8],
    echo: bool,
    change: Option<&[u8]>,
    commands: &[redis::Cmd],
) -> redis::Cmd {
    let mut call = redis::cmd("EVALSHA");
    call.arg(sha)
        .arg(2)
        .arg(key)
        .arg(companion(key))
        .arg(if echo { "e" } else { "w" })
        .arg(change.unwrap_or_default())
        .arg(PENDING_HOLD_MS);
    script::append(&mut call, commands);
    call
}

/// The source's read of `key` through [`OBSERVE_SCRIPT`].
pub fn observe_call(sha: &str, key: &str, change: &str) -> redis::Cmd {
    let mut call = redis::cmd("EVALSHA");
    call.arg(sha)
        .arg(2)
        .arg(key)
        .arg(companion(key.as_bytes()))
        .arg(change);
    call
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_companion_shares_its_keys_cluster_slot() {
        assert_eq!(companion(b"order:7"), b"ferry:sync:{order:7}");
        assert_eq!(companion(b"order:{7}"), b"ferry:sync:order:{7}");
        // `{}` is no hash tag: Redis hashes the whole key.
        assert_eq!(companion(b"a{}b"), b"ferry:sync:{a{}b}");
        assert!(companion(b"x").starts_with(RESERVED_PREFIX.as_bytes()));
    }

    #[test]
    fn change_ids_differ() {
        assert_ne!(change_id(), change_id());
    }

    #[test]
    fn apply_replies_are_read() {
        assert_eq!(
            Applied::from_reply(&redis::Value::Int(0)),
            Some(Applied::HeldOff)
        );
        assert_eq!(Applied::from_reply(&redis::Value::Nil), None);
    }

    /// A model of both sides of a sync, with the scripts' rules written
    /// again in Rust: Redis (values and companions), the log, the keyspace
    /// source (notifications, coalesced per key, and changes on their way
    /// into the log) and the sink (reading the log in order).
    mod model {
        use std::collections::{BTreeMap, BTreeSet, VecDeque};

        use proptest::prelude::*;

        #[derive(Clone, Debug)]
        pub(super) enum Step {
            /// An application sets a key in Redis.
            RedisApp(u8),
            /// An application appends a record to the log.
            LogApp(u8),
            /// The source reads a notified key (the observe script).
            Observe(u8),
            /// The source's sink appends its oldest change to the log.
            Produce,
            /// The sink applies the next record of the log (the apply script).
            Apply,
        }

        pub(super) fn step() -> impl Strategy<Value = Step> {
            let key = 0u8..3;
            prop_oneof![
                key.clone().prop_map(Step::RedisApp),
                key.clone().prop_map(Step::LogApp),
                key.prop_map(Step::Observe),
                Just(Step::Produce),
                Just(Step::Apply),
            ]
        }

        #[derive(Clone, Debug)]
        struct Record {
            key: u8,
            value: String,
            /// The change id of a change ferry sent (its echo), if any.
            change: Option<u64>,
        }

        #[derive(Default)]
        struct Companion {
            fp: Option<String>,
            pend: Option<u64>,
        }

        #[derive(Default)]
        pub(super) struct Model {
            redis: BTreeMap<u8, String>,
            companions: BTreeMap<u8, Companion>,
            notified: BTreeSet<u8>,
            outgoing: VecDeque<Record>,
            log: Vec<Record>,
            applied: usize,
            next: u64,
        }

        impl Model {
            fn fresh(&mut self) -> u64 {
                self.next += 1;
                self.next
            }

            fn write_redis(&mut self, key: u8, value: String) {
                self.redis.insert(key, value);
                self.notified.insert(key);
            }

            pub(super) fn run(&mut self, step: Step) {
                match step {
                    Step::RedisApp(key) => {
                        let v = format!("redis-{}", self.fresh());
                        self.write_redis(key, v);
                    }
                    Step::LogApp(key) => {
                        let v = format!("log-{}", self.fresh());
                        self.log.push(Record {
                            key,
                            value: v,
                            change: None,
                        });
                    }
                    Step::Observe(key) => {
                        if !self.notified.remove(&key) {
                            return;
                        }
                        let value = self.redis.get(&key).cloned();
                        let companion = self.companions.entry(key).or_default();
                        if companion.fp == value {
                            return;
                        }
                        let change = self.next + 1;
                        self.next = change;
                        let companion = self.companions.entry(key).or_default();
                        companion.fp = value.clone();
                        companion.pend = Some(change);
                        if let Some(value) = value {
                            self.outgoing.push_back(Record {
                                key,
                                value,
                                change: Some(change),
                            });
                        }
                    }
                    Step::Produce => {
                        if let Some(r) = self.outgoing.pop_front() {
                            self.log.push(r);
                        }
                    }
                    Step::Apply => {
                        let Some(r) = self.log.get(self.applied).cloned() else {
                            return;
                        };
                        self.applied += 1;
                        let companion = self.companions.entry(r.key).or_default();
                        if r.change.is_some() && companion.pend == r.change {
                            companion.pend = None;
                            return;
                        }
                        if companion.pend.is_some() {
                            return;
                        }
                        companion.fp = Some(r.value.clone());
                        self.write_redis(r.key, r.value);
                    }
                }
            }

            /// Runs everything still under way until nothing moves.
            pub(super) fn settle(&mut self) {
                loop {
                    let before = (self.log.len(), self.applied, self.notified.len());
                    for key in self.notified.clone() {
                        self.run(Step::Observe(key));
                    }
                    while !self.outgoing.is_empty() {
                        self.run(Step::Produce);
                    }
                    while self.applied < self.log.len() {
                        self.run(Step::Apply);
                    }
                    if before == (self.log.len(), self.applied, self.notified.len())
                        && self.outgoing.is_empty()
                    {
                        return;
                    }
                }
            }

            /// Keys whose Redis value is not their last record in the log.
            pub(super) fn differing(&self) -> Vec<u8> {
                let mut last = BTreeMap::new();
                for r in &self.log {
                    last.insert(r.key, r.value.clone());
                }
                let keys: BTreeSet<u8> = last.keys().chain(self.redis.keys()).copied().collect();
                keys.into_iter()
                    .filter(|k| last.get(k) != self.redis.get(k))
                    .collect()
            }
        }
    }

    proptest::proptest! {
        /// Whatever the interleaving of applications on both sides, the
        /// source's reads and sends and the sink's reads of the log, once
        /// everything has gone through, Redis holds each key's last record
        /// in the log.
        #[test]
        fn both_sides_end_equal_whatever_the_interleaving(
            steps in proptest::collection::vec(model::step(), 0..80),
        ) {
            let mut m = model::Model::default();
            for s in steps {
                m.run(s);
            }
            m.settle();
            proptest::prop_assert_eq!(m.differing(), Vec::<u8>::new());
        }
    }
}
