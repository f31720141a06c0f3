//! Where a message stands in its source, and which positions a source will
//! never deliver again.
//!
//! Kafka partitions and Redis streams give every message a position that
//! grows with the log. A sink that writes each message once (`exactly_once`)
//! records the positions it wrote and skips them when they come again.
//! Those records must not grow for ever, and they must not be forgotten
//! while the source may still deliver the message again: only the source
//! knows when that is. So a source *settles* a mark per scope, "nothing
//! below this will be delivered again" (a Kafka offset committed for the
//! group; a Redis stream id below every entry still pending in the group),
//! and the sink forgets what lies below it. [`Settled`] carries those marks
//! from a pipeline's source to its sinks.
//!
//! Pure bookkeeping; the connectors do the I/O.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::message::Origin;
use crate::sync::lock;

/// One log a position counts in: a Kafka partition or a Redis stream.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scope {
    Kafka { topic: Arc<str>, partition: i32 },
    RedisStream { stream: Arc<str> },
}

/// A place in a scope: a Kafka offset or a Redis stream entry id
/// (milliseconds, sequence). Marks of one scope are always of one kind and
/// order as the log does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mark {
    Offset(i64),
    EntryId(u64, u64),
}

impl Mark {
    /// Parses a Redis stream entry id (`1700000000000-3`).
    pub fn entry_id(id: &str) -> Option<Mark> {
        let (ms, seq) = stream_id(id)?;
        Some(Mark::EntryId(ms, seq))
    }

    /// The entry id right after this one (`ms-(seq+1)`).
    pub fn next_entry(self) -> Mark {
        match self {
            Mark::EntryId(ms, seq) if seq == u64::MAX => Mark::EntryId(ms.saturating_add(1), 0),
            Mark::EntryId(ms, seq) => Mark::EntryId(ms, seq + 1),
            Mark::Offset(o) => Mark::Offset(o.saturating_add(1)),
        }
    }
}

/// Parses a Redis stream entry id, `<milliseconds>-<sequence>`, both in
/// decimal digits: the one parser of stream ids in ferry.
pub fn stream_id(id: &str) -> Option<(u64, u64)> {
    // One pass over the bytes: `str::parse` after a digit check cost 550
    // instructions an entry, on every entry a stream source reads.
    let number = |s: &[u8]| {
        if s.is_empty() {
            return None;
        }
        s.iter().try_fold(0u64, |n, &b| {
            let digit = b.checked_sub(b'0').filter(|d| *d <= 9)?;
            n.checked_mul(10)?.checked_add(u64::from(digit))
        })
    };
    let dash = id.bytes().position(|b| b == b'-')?;
    let (ms, seq) = (&id.as_bytes()[..dash], &id.as_bytes()[dash + 1..]);
    Some((number(ms)?, number(seq)?))
}

/// A message's exact position: its scope, its mark, and which of the
/// messages that steps made of one source message it is (`part`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Position {
    pub scope: Scope,
    pub mark: Mark,
    pub part: u32,
}

impl Position {
    /// The position of a message read from `origin`, if that source has
    /// positions (Kafka, Redis streams).
    pub fn of(origin: &Origin, part: u32) -> Option<Position> {
        match origin {
            Origin::Kafka {
                topic,
                partition,
                offset,
            } => Some(Position {
                scope: Scope::Kafka {
                    topic: Arc::clone(topic),
                    partition: *partition,
                },
                mark: Mark::Offset(*offset),
                part,
            }),
            Origin::RedisStream { stream, id } => Some(Position {
                scope: Scope::RedisStream {
                    stream: Arc::clone(stream),
                },
                mark: Mark::entry_id(id)?,
                part,
            }),
            _ => None,
        }
    }
}

/// The marks a pipeline's source has settled, per scope: every message
/// below a scope's mark has been acknowledged for good and will not be
/// delivered again (short of someone rewinding the group by hand).
#[derive(Debug, Default)]
pub struct Settled {
    marks: std::sync::Mutex<HashMap<Scope, Mark>>,
    /// Set by a sink that uses the marks, so that sources which must ask
    /// their server for them (Redis streams) only do so when needed.
    wanted: AtomicBool,
}

impl Settled {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A sink will read the marks.
    pub fn want(&self) {
        self.wanted.store(true, Ordering::Relaxed);
    }

    pub fn is_wanted(&self) -> bool {
        self.wanted.load(Ordering::Relaxed)
    }

    /// Nothing below `mark` in `scope` will be delivered again. Marks only
    /// move forward: a lower one (from an older view of the group) is
    /// ignored.
    pub fn settle(&self, scope: Scope, mark: Mark) {
        let mut marks = lock(&self.marks);
        let current = marks.entry(scope).or_insert(mark);
        if mark > *current {
            *current = mark;
        }
    }

    /// The settled mark of `scope`, if any.
    pub fn below(&self, scope: &Scope) -> Option<Mark> {
        lock(&self.marks).get(scope).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_ids_are_two_decimal_numbers_joined_by_a_dash() {
        assert_eq!(stream_id("1700000000000-3"), Some((1_700_000_000_000, 3)));
        assert_eq!(Mark::entry_id("5-0"), Some(Mark::EntryId(5, 0)));
        for bad in [
            "",
            "5",
            "5-",
            "-3",
            "+5-3",
            "5-x",
            "5-3-1",
            "99999999999999999999-0",
        ] {
            assert_eq!(stream_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn positions_come_from_kafka_and_stream_origins_only() {
        let kafka = Origin::Kafka {
            topic: "t".into(),
            partition: 3,
            offset: 42,
        };
        let p = Position::of(&kafka, 1).unwrap();
        assert_eq!(p.mark, Mark::Offset(42));
        assert_eq!(p.part, 1);
        let stream = Origin::RedisStream {
            stream: "s".into(),
            id: "1700-5".into(),
        };
        assert_eq!(
            Position::of(&stream, 0).unwrap().mark,
            Mark::EntryId(1700, 5)
        );
        let bad = Origin::RedisStream {
            stream: "s".into(),
            id: "nonsense".into(),
        };
        assert_eq!(Position::of(&bad, 0), None);
        assert_eq!(Position::of(&Origin::Generated, 0), None);
    }

    #[test]
    fn settled_marks_only_move_forward() {
        let settled = Settled::new();
        let scope = Scope::RedisStream { stream: "s".into() };
        assert_eq!(settled.below(&scope), None);
        settled.settle(scope.clone(), Mark::EntryId(5, 0));
        settled.settle(scope.clone(), Mark::EntryId(3, 9));
        assert_eq!(settled.below(&scope), Some(Mark::EntryId(5, 0)));
        settled.settle(scope.clone(), Mark::EntryId(5, 1));
        assert_eq!(settled.below(&scope), Some(Mark::EntryId(5, 1)));
    }

    #[test]
    fn the_entry_after_an_id_is_the_next_sequence() {
        assert_eq!(Mark::EntryId(7, 1).next_entry(), Mark::EntryId(7, 2));
        assert_eq!(Mark::EntryId(7, u64::MAX).next_entry(), Mark::EntryId(8, 0));
    }
}
