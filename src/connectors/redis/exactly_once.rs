//! `exactly_once`: each message is written together with its position in
//! the source, in one script, and a position already recorded is skipped.
//! Pure: the script, its arguments and the position format; the sink sends
//! them.
//!
//! Positions are kept per scope (one Kafka partition, one Redis stream) in
//! a sorted set whose members all have score 0, so that Redis orders them
//! by their text, which is written to sort as the log does. Each recorded
//! position is one member: a redelivery is skipped whatever order messages
//! arrive in (a consumer group hands a stream's entries to its consumers
//! interleaved, a claim redelivers an old entry after newer ones were
//! written, a retried batch races a newer one). A single high-water mark
//! per scope cannot tell those apart from a message already written, and
//! skipped entries that were never written.
//!
//! Memory: the source settles, per scope, a mark below which nothing will
//! be delivered again (see [`crate::position`]); the sink removes the
//! members below it (`ZREMRANGEBYLEX`). What remains is the positions
//! written but not yet acknowledged by the source's group, plus what was
//! written since the last settled mark: bounded by the group's pending
//! messages and a few seconds of traffic, about 100 bytes each.

use super::script;
use crate::position::{Mark, Position, Scope};

/// The sorted set of a scope's recorded positions: `<base>:<scope>`.
pub(crate) fn scope_key(base: &str, scope: &Scope) -> String {
    match scope {
        Scope::Kafka { topic, partition } => format!("{base}:kafka:{topic}/{partition}"),
        Scope::RedisStream { stream } => format!("{base}:stream:{stream}"),
    }
}

/// A mark as text that sorts as the mark does (fixed-width numbers).
fn mark_text(mark: Mark) -> String {
    match mark {
        Mark::Offset(offset) => format!("{:020}", u64::try_from(offset).unwrap_or(0)),
        Mark::EntryId(ms, seq) => format!("{ms:020}-{seq:020}"),
    }
}

/// A position as a member of its scope's sorted set: the mark, then the
/// part, so that every message a step made of one source message is its
/// own member and members sort by mark first.
pub(crate) fn member(position: &Position) -> String {
    format!("{}.{:010}", mark_text(position.mark), position.part)
}

/// The call that forgets every position below `settled` and remembers
/// `settled` itself as the scope's floor: a message below it was
/// acknowledged by the source's group, so a late write of it (a consumer
/// that held it past a claim, a process that lost its partition) is
/// skipped although its position is gone.
pub(crate) fn forget_below(sha: &str, key: &str, settled: Mark) -> redis::Cmd {
    let mut c = redis::cmd("EVALSHA");
    c.arg(sha).arg(1).arg(key).arg("f").arg(mark_text(settled));
    c
}

/// Writes messages unless their position was recorded already or lies
/// below the scope's floor, each recorded in the same atomic step as its
/// write; or moves the floor up.
///
/// KEYS[1]: the scope's sorted set of positions. Every member has score 0,
/// so they sort by text: positions (`<mark>.<part>`), and at most one floor
/// (`<mark>`, no dot), always the lowest member. KEYS[2..] (writes only):
/// the keys the commands write, declared so that a cluster accepts the
/// script (they must share KEYS[1]'s slot).
///
/// Write: ARGV[1] = `w`, ARGV[2] = the number of messages, then per
/// message its position, its number of commands, and each command as its
/// argument count and its arguments. Returns one reply per message: 1 when
/// applied, 0 when skipped as already written, or the error a command of
/// that message got (the message is then not recorded, and the later
/// messages are written all the same, as separate calls would have been).
///
/// Forget: ARGV[1] = `f`, ARGV[2] = the new floor. Removes the positions
/// below it and makes it the floor, unless the floor is already higher
/// (another process saw the group later).
pub(crate) const SCRIPT: &str = r#"
local low = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
local floor = low and not string.find(low, '.', 1, true) and low
if ARGV[1] == 'f' then
  if floor and floor >= ARGV[2] then
    return 0
  end
  redis.call('ZREMRANGEBYLEX', KEYS[1], '-', '(' .. ARGV[2])
  redis.call('ZADD', KEYS[1], 0, ARGV[2])
  return 1
end
local out = {}
local i = 3
for m = 1, tonumber(ARGV[2]) do
  local member = ARGV[i]
  local count = tonumber(ARGV[i + 1])
  i = i + 2
  local written = (floor and member < floor) or redis.call('ZSCORE', KEYS[1], member)
  local failed = false
  for _ = 1, count do
    local n = tonumber(ARGV[i])
    if not written and not failed then
      local reply = redis.pcall(unpack(ARGV, i + 1, i + n))
      if type(reply) == 'table' and reply.err then
        failed = reply
      end
    end
    i = i + n + 1
  end
  if written then
    out[m] = 0
  elseif failed then
    out[m] = failed
  else
    redis.call('ZADD', KEYS[1], 0, member)
    out[m] = 1
  end
end
return out
"#;

/// Where a message's write is recorded: its scope, the scope's sorted set
/// ([`scope_key`]) and its member there ([`member`]).
#[derive(Clone, Debug)]
pub(crate) struct Recorded {
    pub(crate) scope: Scope,
    pub(crate) set: String,
    pub(crate) member: String,
}

impl Recorded {
    pub(crate) fn new(base: &str, position: Position) -> Self {
        Recorded {
            set: scope_key(base, &position.scope),
            member: member(&position),
            scope: position.scope,
        }
    }
}

/// One message of a batch as the script writes it.
pub(crate) struct Item<'a> {
    pub(crate) recorded: &'a Recorded,
    /// The key the commands write.
    pub(crate) key: &'a [u8],
    pub(crate) commands: &'a [redis::Cmd],
}

/// One script call, and the messages (their indices in the batch) whose
/// replies its reply holds, in order.
pub(crate) struct Call {
    pub(crate) cmd: redis::Cmd,
    pub(crate) messages: Vec<usize>,
}

/// A call carries at most this many arguments (unless one message alone
/// has more): Redis copies them all into the script's `ARGV` table.
const MAX_CALL_ARGS: usize = 16_384;

/// The calls that write `items` through [`SCRIPT`] (whose SHA1 is `sha`):
/// one per scope, in the order scopes first appear, each holding that
/// scope's messages in batch order (so a later write of a key lands after
/// an earlier one); a scope with more than [`MAX_CALL_ARGS`] arguments gets
/// several calls, in order. One call per batch and scope rather than per
/// message: Redis then spends about 40% less time per message (4.5
/// instead of 7.5 us for an `XADD` of 100 B, measured with `commandstats`).
/// `alone` picks messages that get a call of their own (on a cluster, those
/// whose key is not in their scope's slot: their call fails, as it would
/// alone, without failing the others).
pub(crate) fn calls<'a>(
    sha: &str,
    items: impl IntoIterator<Item = Item<'a>>,
    alone: impl Fn(&Item<'a>) -> bool,
) -> Vec<Call> {
    struct Group<'a> {
        items: Vec<(usize, Item<'a>)>,
        args: usize,
    }
    let mut groups: Vec<Group<'a>> = Vec::new();
    // The open group of each scope's set.
    let mut open: Vec<(&'a str, usize)> = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let args = 3 + item
            .commands
            .iter()
            .map(|c| 1 + c.args_iter().len())
            .sum::<usize>();
        if alone(&item) {
            groups.push(Group {
                items: vec![(i, item)],
                args,
            });
            continue;
        }
        let set = item.recorded.set.as_str();
        let scope = open.iter().position(|(s, _)| *s == set);
        match scope {
            Some(o) if groups[open[o].1].args + args <= MAX_CALL_ARGS => {
                let g = &mut groups[open[o].1];
                g.items.push((i, item));
                g.args += args;
            }
            _ => {
                groups.push(Group {
                    items: vec![(i, item)],
                    args,
                });
                match scope {
                    Some(o) => open[o].1 = groups.len() - 1,
                    None => open.push((set, groups.len() - 1)),
                }
            }
        }
    }
    groups
        .into_iter()
        .map(|group| {
            let mut cmd = redis::cmd("EVALSHA");
            cmd.arg(sha)
                .arg(1 + group.items.len())
                .arg(&group.items[0].1.recorded.set);
            for (_, item) in &group.items {
                cmd.arg(item.key);
            }
            cmd.arg("w").arg(group.items.len());
            for (_, item) in &group.items {
                cmd.arg(&item.recorded.member);
                script::append(&mut cmd, item.commands);
            }
            Call {
                cmd,
                messages: group.items.into_iter().map(|(i, _)| i).collect(),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests;
