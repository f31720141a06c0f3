//! Which Kafka offsets may be committed: never past a message that is not
//! yet confirmed by every sink.
//!
//! Messages of one partition are confirmed out of order (sinks batch and run
//! concurrently), but a Kafka commit says "everything before this offset is
//! done". For each partition we keep the offsets handed out and not yet
//! confirmed; the committable offset is the smallest of them, or one past
//! the highest offset seen when none is pending. Pure bookkeeping, no I/O.
//!
//! Each assignment of a partition gets a new epoch: after a rebalance, late
//! confirmations of messages from the previous assignment are ignored
//! instead of being mistaken for the new owner's.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

/// A topic-partition.
pub(crate) type Partition = (Arc<str>, i32);

#[derive(Debug, Default)]
struct PartitionState {
    epoch: u64,
    pending: BTreeSet<i64>,
    /// One past the highest offset handed out.
    next: Option<i64>,
    /// The last offset committed (or queued for commit).
    committed: Option<i64>,
}

impl PartitionState {
    fn committable(&self) -> Option<i64> {
        self.pending.first().copied().or(self.next)
    }
}

/// Offsets in flight, per partition.
#[derive(Debug, Default)]
pub(crate) struct OffsetTracker {
    last_epoch: u64,
    partitions: HashMap<Partition, PartitionState>,
}

impl OffsetTracker {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn fresh(&mut self) -> PartitionState {
        self.last_epoch += 1;
        PartitionState {
            epoch: self.last_epoch,
            ..PartitionState::default()
        }
    }

    /// Partitions were (re)assigned to this consumer: each starts a new
    /// epoch, so late confirmations from an earlier assignment are ignored.
    /// Partitions not named keep their state (cooperative rebalancing).
    pub(crate) fn assigned(&mut self, partitions: &[Partition]) {
        for p in partitions {
            let state = self.fresh();
            self.partitions.insert(p.clone(), state);
        }
    }

    /// A message was handed to the pipeline; returns the epoch to quote
    /// when confirming it.
    pub(crate) fn received(&mut self, partition: &Partition, offset: i64) -> u64 {
        let fresh_epoch = self.last_epoch + 1;
        let state = self
            .partitions
            .entry(partition.clone())
            .or_insert_with(|| PartitionState {
                epoch: fresh_epoch,
                ..PartitionState::default()
            });
        if state.epoch == fresh_epoch {
            self.last_epoch = fresh_epoch;
        }
        state.pending.insert(offset);
        state.next = Some(state.next.map_or(offset + 1, |n| n.max(offset + 1)));
        state.epoch
    }

    /// Every sink confirmed the message at `offset`.
    pub(crate) fn confirmed(&mut self, partition: &Partition, offset: i64, epoch: u64) {
        if let Some(state) = self.partitions.get_mut(partition)
            && state.epoch == epoch
        {
            state.pending.remove(&offset);
        }
    }

    /// Offsets that moved since the last call: `(partition, offset to commit)`.
    /// The commit offset is the next offset to read, as Kafka expects.
    pub(crate) fn take_commits(&mut self) -> Vec<(Partition, i64)> {
        let mut out = Vec::new();
        for (p, state) in &mut self.partitions {
            if let Some(c) = state.committable()
                && state.committed != Some(c)
            {
                state.committed = Some(c);
                out.push((p.clone(), c));
            }
        }
        out.sort();
        out
    }

    /// The committable offset of every partition, moved or not (for the
    /// final commit, which must not depend on earlier commits succeeding).
    pub(crate) fn all_commits(&mut self) -> Vec<(Partition, i64)> {
        let mut out: Vec<_> = self
            .partitions
            .iter_mut()
            .filter_map(|(p, state)| {
                let c = state.committable()?;
                state.committed = Some(c);
                Some((p.clone(), c))
            })
            .collect();
        out.sort();
        out
    }

    /// A commit of these offsets failed: offer them again next time.
    pub(crate) fn commit_failed(&mut self, commits: &[(Partition, i64)]) {
        for (p, offset) in commits {
            if let Some(state) = self.partitions.get_mut(p)
                && state.committed == Some(*offset)
            {
                state.committed = None;
            }
        }
    }

    /// Committable offsets of the given partitions (used when they are
    /// revoked), which are then forgotten.
    pub(crate) fn revoke(&mut self, partitions: &[Partition]) -> Vec<(Partition, i64)> {
        let mut out = Vec::new();
        for p in partitions {
            if let Some(state) = self.partitions.remove(p)
                && let Some(c) = state.committable()
                && state.committed != Some(c)
            {
                out.push((p.clone(), c));
            }
        }
        out
    }

    /// Messages handed out and not yet confirmed, over all partitions.
    pub(crate) fn in_flight(&self) -> usize {
        self.partitions.values().map(|s| s.pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: i32) -> Partition {
        ("orders".into(), n)
    }

    #[test]
    fn never_commits_past_an_unconfirmed_message() {
        let mut t = OffsetTracker::new();
        let mut e = 0;
        for o in 10..15 {
            e = t.received(&p(0), o);
        }
        t.confirmed(&p(0), 10, e);
        t.confirmed(&p(0), 12, e);
        t.confirmed(&p(0), 13, e);
        assert_eq!(t.take_commits(), vec![(p(0), 11)], "11 is still pending");
        t.confirmed(&p(0), 11, e);
        assert_eq!(t.take_commits(), vec![(p(0), 14)]);
        t.confirmed(&p(0), 14, e);
        assert_eq!(t.take_commits(), vec![(p(0), 15)], "all done: next to read");
        assert_eq!(t.take_commits(), vec![], "nothing moved");
        assert_eq!(t.in_flight(), 0);
    }

    #[test]
    fn partitions_advance_independently() {
        let mut t = OffsetTracker::new();
        t.received(&p(0), 0);
        t.received(&p(1), 0);
        let e = t.received(&p(1), 1);
        t.confirmed(&p(1), 0, e);
        t.confirmed(&p(1), 1, e);
        assert_eq!(t.take_commits(), vec![(p(0), 0), (p(1), 2)]);
    }

    #[test]
    fn confirmations_from_a_previous_assignment_are_ignored() {
        let mut t = OffsetTracker::new();
        let old = t.received(&p(0), 5);
        assert_eq!(t.revoke(&[p(0)]), vec![(p(0), 5)]);
        t.assigned(&[p(0)]);
        let new = t.received(&p(0), 3);
        t.confirmed(&p(0), 5, old);
        t.confirmed(&p(0), 3, old);
        assert_eq!(
            t.take_commits(),
            vec![(p(0), 3)],
            "3 not confirmed in this epoch"
        );
        t.confirmed(&p(0), 3, new);
        assert_eq!(t.take_commits(), vec![(p(0), 4)]);
    }

    #[test]
    fn a_failed_message_holds_its_partition_back_forever() {
        let mut t = OffsetTracker::new();
        let mut e = 0;
        for o in 0..100 {
            e = t.received(&p(0), o);
        }
        for o in (0..100).filter(|o| *o != 40) {
            t.confirmed(&p(0), o, e);
        }
        assert_eq!(t.take_commits(), vec![(p(0), 40)]);
        assert_eq!(t.in_flight(), 1);
    }

    #[test]
    fn a_failed_commit_is_offered_again() {
        let mut t = OffsetTracker::new();
        let e = t.received(&p(0), 0);
        t.confirmed(&p(0), 0, e);
        let commits = t.take_commits();
        assert_eq!(commits, vec![(p(0), 1)]);
        t.commit_failed(&commits);
        assert_eq!(t.take_commits(), vec![(p(0), 1)]);
    }

    #[test]
    fn assigning_more_partitions_keeps_the_pending_offsets_of_the_others() {
        let mut t = OffsetTracker::new();
        let e = t.received(&p(0), 7);
        t.assigned(&[p(1)]);
        assert_eq!(t.take_commits(), vec![(p(0), 7)]);
        t.confirmed(&p(0), 7, e);
        assert_eq!(t.take_commits(), vec![(p(0), 8)]);
    }

    proptest::proptest! {
        /// Whatever order confirmations arrive in, interleaved with commits
        /// and failed commits, a commit never passes an offset that is not
        /// confirmed, and once all are confirmed the commit reaches the end.
        #[test]
        fn any_confirmation_order_never_commits_past_a_gap(
            n in 1i64..60,
            order in proptest::collection::vec(0usize..1000, 0..60),
            commit_every in 1usize..8,
            fail_some in proptest::bool::ANY,
        ) {
            let mut t = OffsetTracker::new();
            let mut epoch = 0;
            for o in 0..n {
                epoch = t.received(&p(0), o);
            }
            let mut unconfirmed: Vec<i64> = (0..n).collect();
            let mut committed = 0;
            for (i, pick) in order.into_iter().enumerate() {
                if unconfirmed.is_empty() {
                    break;
                }
                let offset = unconfirmed.remove(pick % unconfirmed.len());
                t.confirmed(&p(0), offset, epoch);
                if i % commit_every == 0 {
                    let commits = t.take_commits();
                    for (_, c) in &commits {
                        let lowest = unconfirmed.iter().min().copied().unwrap_or(n);
                        proptest::prop_assert!(*c <= lowest, "committed {} with {} unconfirmed", c, lowest);
                        proptest::prop_assert!(*c >= committed, "commits only move forward");
                        committed = *c;
                    }
                    if fail_some && i % 2 == 0 {
                        t.commit_failed(&commits);
                    }
                }
            }
            for offset in unconfirmed.drain(..) {
                t.confirmed(&p(0), offset, epoch);
            }
            proptest::prop_assert_eq!(t.all_commits(), vec![(p(0), n)]);
            proptest::prop_assert_eq!(t.in_flight(), 0);
        }
    }
}
