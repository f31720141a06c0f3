//! Which deliveries of a channel one `basic.ack` with `multiple` may
//! settle: pure bookkeeping, so that the source sends one ack for many
//! deliveries instead of one each (one frame and one wake of lapin's I/O
//! thread per delivery was most of the source's CPU).
//!
//! `basic.ack` with `multiple` acknowledges every outstanding delivery of
//! the channel up to its tag. So it may only go up to a tag below which
//! every delivery is settled: delivered (its ack is the one being sent),
//! or already nacked or rejected (those frames went out first, so they are
//! no longer outstanding). A delivery whose requeue is delayed, or still in
//! the pipeline, stops it there.

use std::collections::BTreeMap;

/// What became of one delivery tag.
#[derive(Debug)]
enum Held<A> {
    /// Delivered by every sink: to be acknowledged, with this handle.
    Ack(A),
    /// Nacked or rejected already (the frame was sent).
    Settled,
    /// To be nacked later (a delayed requeue): nothing above it may be
    /// acknowledged with `multiple` until then.
    Waiting,
}

/// The deliveries of one channel, by tag.
#[derive(Debug)]
pub(crate) struct Tags<A> {
    /// The lowest tag not yet settled (tags start at 1 on a channel).
    next: u64,
    held: BTreeMap<u64, Held<A>>,
}

impl<A> Default for Tags<A> {
    fn default() -> Self {
        Self {
            next: 1,
            held: BTreeMap::new(),
        }
    }
}

impl<A> Tags<A> {
    pub(crate) fn delivered(&mut self, tag: u64, handle: A) {
        self.held.insert(tag, Held::Ack(handle));
    }

    /// Nacked or rejected: its frame was sent.
    pub(crate) fn settled(&mut self, tag: u64) {
        self.held.insert(tag, Held::Settled);
    }

    /// To be nacked later; call [`Tags::settled`] once it is.
    pub(crate) fn waiting(&mut self, tag: u64) {
        self.held.insert(tag, Held::Waiting);
    }

    /// The handle to acknowledge with `multiple`: the highest delivered
    /// tag below which nothing is outstanding. Forgets what it covers.
    pub(crate) fn advance(&mut self) -> Option<A> {
        let mut last = None;
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() != self.next || matches!(entry.get(), Held::Waiting) {
                break;
            }
            if let Held::Ack(handle) = entry.remove() {
                last = Some(handle);
            }
            self.next += 1;
        }
        last
    }

    /// Handles of delivered tags that [`Tags::advance`] cannot reach (a
    /// tag below them is still in the pipeline, or waiting): to be
    /// acknowledged one by one when that lasts. Their tags count as
    /// settled from then on.
    pub(crate) fn stranded(&mut self) -> Vec<A> {
        let mut out = Vec::new();
        for held in self.held.values_mut() {
            if matches!(held, Held::Ack(_))
                && let Held::Ack(handle) = std::mem::replace(held, Held::Settled)
            {
                out.push(handle);
            }
        }
        out
    }

    /// Nothing held: every tag seen is settled.
    pub(crate) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_ack_covers_every_delivery_up_to_the_first_gap() {
        let mut t = Tags::default();
        t.delivered(2, "2");
        assert_eq!(t.advance(), None, "1 is still in the pipeline");
        t.delivered(1, "1");
        t.delivered(4, "4");
        assert_eq!(t.advance(), Some("2"), "1 and 2; 3 is missing");
        t.delivered(3, "3");
        assert_eq!(t.advance(), Some("4"));
        assert!(t.is_empty());
    }

    #[test]
    fn a_nacked_delivery_is_passed_over_but_never_the_tag_acknowledged() {
        let mut t = Tags::default();
        t.delivered(1, "1");
        t.settled(2);
        assert_eq!(t.advance(), Some("1"), "ack 1, not 2: 2 was nacked");
        t.settled(3);
        assert_eq!(t.advance(), None, "nothing delivered to acknowledge");
        t.delivered(4, "4");
        assert_eq!(t.advance(), Some("4"));
    }

    #[test]
    fn a_delayed_requeue_holds_back_the_acks_above_it_until_it_is_sent() {
        let mut t = Tags::default();
        t.delivered(1, "1");
        t.waiting(2);
        t.delivered(3, "3");
        assert_eq!(t.advance(), Some("1"), "3 would ack 2 as well");
        assert_eq!(t.advance(), None);
        t.settled(2);
        assert_eq!(t.advance(), Some("3"));
    }

    #[test]
    fn stranded_deliveries_are_handed_out_once_and_then_count_as_settled() {
        let mut t = Tags::default();
        t.delivered(2, "2");
        t.delivered(3, "3");
        assert_eq!(t.stranded(), ["2", "3"]);
        assert_eq!(t.stranded(), Vec::<&str>::new());
        t.delivered(1, "1");
        assert_eq!(t.advance(), Some("1"), "not 3: it was acknowledged alone");
        assert!(t.is_empty());
    }
}
