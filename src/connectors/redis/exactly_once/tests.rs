use super::*;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use proptest::prelude::*;

fn text(c: &redis::Cmd) -> Vec<String> {
    c.args_iter()
        .map(|a| match a {
            redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
            _ => "?".into(),
        })
        .collect()
}

fn entry(ms: u64, seq: u64, part: u32) -> Position {
    Position {
        scope: Scope::RedisStream {
            stream: Arc::from("s"),
        },
        mark: Mark::EntryId(ms, seq),
        part,
    }
}

#[test]
fn scopes_have_keys_of_their_own() {
    let kafka = Scope::Kafka {
        topic: Arc::from("orders"),
        partition: 2,
    };
    assert_eq!(scope_key("pos", &kafka), "pos:kafka:orders/2");
    let stream = Scope::RedisStream {
        stream: Arc::from("s"),
    };
    assert_eq!(scope_key("pos", &stream), "pos:stream:s");
}

fn recorded(stream: &str, ms: u64) -> Recorded {
    let scope = Scope::RedisStream {
        stream: Arc::from(stream),
    };
    Recorded::new(
        "pos",
        Position {
            scope,
            ..entry(ms, 0, 0)
        },
    )
}

fn set(key: &str, value: &str) -> redis::Cmd {
    let mut c = redis::cmd("SET");
    c.arg(key).arg(value);
    c
}

#[test]
fn a_call_lists_each_message_with_its_position_and_its_commands() {
    let mut expire = redis::cmd("PEXPIRE");
    expire.arg("k").arg(500);
    let (a, b) = (recorded("s", 1), recorded("s", 2));
    let first = [set("k", "v"), expire];
    let second = [set("j", "w")];
    let items = [
        Item {
            recorded: &a,
            key: b"k",
            commands: &first,
        },
        Item {
            recorded: &b,
            key: b"j",
            commands: &second,
        },
    ];
    let calls = calls("sha", items, |_| false);
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].messages, [0, 1]);
    let (ma, mb) = (a.member.as_str(), b.member.as_str());
    assert_eq!(
        text(&calls[0].cmd),
        [
            "EVALSHA",
            "sha",
            "3",
            "pos:stream:s",
            "k",
            "j",
            "w",
            "2", //
            ma,
            "2",
            "3",
            "SET",
            "k",
            "v",
            "3",
            "PEXPIRE",
            "k",
            "500", //
            mb,
            "1",
            "3",
            "SET",
            "j",
            "w",
        ]
    );
}

/// The calls for messages that each write `SET k v`.
fn one_set_each(recorded: &[Recorded]) -> Vec<Call> {
    let write = [set("k", "v")];
    let items = recorded.iter().map(|r| Item {
        recorded: r,
        key: b"k",
        commands: &write,
    });
    calls("sha", items, |_| false)
}

#[test]
fn each_scope_gets_one_call_holding_its_messages_in_batch_order() {
    let r = [
        recorded("a", 1),
        recorded("b", 1),
        recorded("a", 2),
        recorded("b", 2),
        recorded("a", 3),
    ];
    let calls = one_set_each(&r);
    let sets: Vec<_> = calls.iter().map(|c| text(&c.cmd)[3].clone()).collect();
    assert_eq!(sets, ["pos:stream:a", "pos:stream:b"]);
    assert_eq!(calls[0].messages, [0, 2, 4]);
    assert_eq!(calls[1].messages, [1, 3]);
}

#[test]
fn a_scope_too_large_for_one_call_is_split_in_order() {
    // 3 + (1 + 3) = 7 arguments a message.
    let per_call = MAX_CALL_ARGS / 7;
    let r: Vec<_> = (0..per_call as u64 + 5)
        .map(|ms| recorded("s", ms))
        .collect();
    let calls = one_set_each(&r);
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].messages, (0..per_call).collect::<Vec<_>>());
    assert_eq!(
        calls[1].messages,
        (per_call..per_call + 5).collect::<Vec<_>>()
    );
}

#[test]
fn a_message_picked_to_go_alone_gets_its_own_call() {
    let r = [recorded("s", 1), recorded("s", 2), recorded("s", 3)];
    let write = [set("k", "v")];
    let other = [set("elsewhere", "v")];
    let items = r.iter().enumerate().map(|(i, r)| Item {
        recorded: r,
        key: if i == 1 { b"elsewhere" as &[u8] } else { b"k" },
        commands: if i == 1 { &other } else { &write },
    });
    let calls = calls("sha", items, |item| item.key == b"elsewhere");
    let messages: Vec<_> = calls.iter().map(|c| c.messages.clone()).collect();
    assert_eq!(messages, [vec![0, 2], vec![1]]);
}

#[test]
fn forgetting_stops_right_below_the_settled_mark() {
    assert_eq!(
        text(&forget_below("sha", "k", Mark::Offset(10))),
        ["EVALSHA", "sha", "1", "k", "f", "00000000000000000010"]
    );
    // A member at the mark itself sorts after the floor, one below it before.
    let bound = "00000000000000000010".to_owned();
    let at = |offset| {
        member(&Position {
            scope: Scope::Kafka {
                topic: Arc::from("t"),
                partition: 0,
            },
            mark: Mark::Offset(offset),
            part: 0,
        })
    };
    assert!(at(9) < bound && at(10) > bound);
}

proptest! {
    /// Members sort as (mark, part) do, for offsets and entry ids, so
    /// that forgetting below a mark removes exactly the lower marks.
    #[test]
    fn members_sort_as_positions_do(
        a in (0u64..u64::MAX, 0u64..u64::MAX, 0u32..u32::MAX),
        b in (0u64..u64::MAX, 0u64..u64::MAX, 0u32..u32::MAX),
        o in (0i64..i64::MAX, 0i64..i64::MAX),
    ) {
        let (pa, pb) = (entry(a.0, a.1, a.2), entry(b.0, b.1, b.2));
        prop_assert_eq!(
            member(&pa).cmp(&member(&pb)),
            (pa.mark, pa.part).cmp(&(pb.mark, pb.part))
        );
        let bound = mark_text(pb.mark);
        prop_assert_eq!(member(&pa) < bound, pa.mark < pb.mark);
        let kafka = |offset| Position {
            scope: Scope::Kafka { topic: Arc::from("t"), partition: 0 },
            mark: Mark::Offset(offset),
            part: 0,
        };
        prop_assert_eq!(member(&kafka(o.0)).cmp(&member(&kafka(o.1))), o.0.cmp(&o.1));
    }
}

/// One step of a consumer group of a Redis stream, as the model below
/// runs it: `consumer` does `action`.
#[derive(Clone, Debug)]
enum Step {
    /// Reads up to `n` new entries (`XREADGROUP ... >`).
    Read { consumer: usize, n: usize },
    /// The sink writes one entry it holds (any of them: batches and
    /// retries reorder writes), then acknowledges it.
    Write { consumer: usize, pick: usize },
    /// Writes, but the reply is lost: written, not acknowledged, still
    /// held (the runtime retries it).
    WriteReplyLost { consumer: usize, pick: usize },
    /// The process dies: everything it held stays pending in the group.
    Crash { consumer: usize },
    /// Claims entries pending for a dead or slow consumer (`XAUTOCLAIM`),
    /// or re-reads its own pending entries after a restart.
    Claim { consumer: usize, n: usize },
    /// The source settles the group's floor and the sink forgets
    /// positions below it.
    Settle,
}

fn step() -> impl Strategy<Value = Step> {
    let c = 0usize..3;
    prop_oneof![
        (c.clone(), 1usize..5).prop_map(|(consumer, n)| Step::Read { consumer, n }),
        (c.clone(), 0usize..8).prop_map(|(consumer, pick)| Step::Write { consumer, pick }),
        (c.clone(), 0usize..8).prop_map(|(consumer, pick)| Step::WriteReplyLost { consumer, pick }),
        c.clone().prop_map(|consumer| Step::Crash { consumer }),
        (c, 1usize..5).prop_map(|(consumer, n)| Step::Claim { consumer, n }),
        Just(Step::Settle),
    ]
}

/// A stream's consumer group (pending entries and who holds them), the
/// sink's Redis (applied writes and the positions sorted set, with the
/// same rules as [`SCRIPT`] and [`forget_below`]), and the source's
/// floor as the stream source computes it.
#[derive(Default)]
struct Model {
    entries: u64,
    last_delivered: u64,
    /// Entries delivered and not acknowledged.
    pending: BTreeSet<u64>,
    /// What each live consumer holds, in arrival order. A claim can
    /// hand an entry to a second consumer while the first, slow but
    /// alive, still holds it.
    held: HashMap<usize, Vec<u64>>,
    applied: HashMap<u64, u32>,
    positions: BTreeSet<String>,
}

impl Model {
    fn position(id: u64) -> Position {
        entry(1_700_000_000_000 + id / 3, id % 3, 0)
    }

    /// The lowest member when it is a floor (no dot), as the script finds it.
    fn floor(&self) -> Option<String> {
        self.positions.first().filter(|m| !m.contains('.')).cloned()
    }

    /// The script's write: skip if below the floor or recorded, else
    /// apply and record.
    fn write(&mut self, id: u64) {
        let m = member(&Self::position(id));
        if self.floor().is_some_and(|f| m < f) {
            return;
        }
        if self.positions.insert(m) {
            *self.applied.entry(id).or_default() += 1;
        }
    }

    fn take(&mut self, consumer: usize, pick: usize) -> Option<u64> {
        let held = self.held.get_mut(&consumer)?;
        if held.is_empty() {
            return None;
        }
        let i = pick % held.len();
        Some(held.remove(i))
    }

    fn run(&mut self, step: Step) {
        match step {
            Step::Read { consumer, n } => {
                for _ in 0..n {
                    if self.last_delivered == self.entries {
                        break;
                    }
                    self.last_delivered += 1;
                    let id = self.last_delivered;
                    self.pending.insert(id);
                    self.held.entry(consumer).or_default().push(id);
                }
            }
            Step::Write { consumer, pick } => {
                if let Some(id) = self.take(consumer, pick) {
                    self.write(id);
                    // XACK, whoever holds the entry now.
                    self.pending.remove(&id);
                }
            }
            Step::WriteReplyLost { consumer, pick } => {
                if let Some(id) = self.take(consumer, pick) {
                    self.write(id);
                    self.held.entry(consumer).or_default().push(id);
                }
            }
            Step::Crash { consumer } => {
                self.held.remove(&consumer);
            }
            Step::Claim { consumer, n } => {
                let claimed: Vec<u64> = self.pending.iter().copied().take(n).collect();
                let held = self.held.entry(consumer).or_default();
                for id in claimed {
                    if !held.contains(&id) {
                        held.push(id);
                    }
                }
            }
            Step::Settle => {
                // As the stream source computes it: the lowest pending
                // entry, or the one after the last delivered.
                let floor = match self.pending.first() {
                    Some(&id) => Self::position(id).mark,
                    None => Self::position(self.last_delivered).mark.next_entry(),
                };
                // The script's forget.
                let bound = mark_text(floor);
                if self.floor().is_some_and(|f| f >= bound) {
                    return;
                }
                self.positions.retain(|m| m.as_str() >= bound.as_str());
                self.positions.insert(bound);
            }
        }
    }

    /// Everything still pending is eventually claimed, written and
    /// acknowledged.
    fn finish(&mut self) {
        self.held.clear();
        while let Some(id) = self.pending.pop_first() {
            self.write(id);
        }
    }
}

proptest! {
    /// Whatever the interleaving of consumers, claims, crashes, lost
    /// replies and settling, every entry is written exactly once.
    #[test]
    fn a_group_writes_every_entry_exactly_once(
        entries in 1u64..40,
        steps in proptest::collection::vec(step(), 0..120),
    ) {
        let mut model = Model { entries, ..Model::default() };
        for s in steps {
            model.run(s);
        }
        // What was never read is read now, by one consumer.
        model.run(Step::Read { consumer: 0, n: usize::MAX });
        model.finish();
        for id in 1..=entries {
            prop_assert_eq!(model.applied.get(&id).copied(), Some(1), "entry {}", id);
        }
        // Once everything is acknowledged, settling forgets every
        // position: only the floor is left.
        model.run(Step::Settle);
        prop_assert_eq!(model.positions.len(), 1);
        prop_assert!(model.floor().is_some());
    }
}
