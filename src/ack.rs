//! Acknowledgements: how a sink's confirmation travels back to the source.
//!
//! A source hands out every message with an [`Ack`]. The read loop
//! (`hand_over` in runtime/pipeline.rs) splits it into one handle per
//! message the steps made and sink it goes to ([`Ack::split`]); each sink
//! completes its handle only after the target system confirmed the write.
//! When the last handle is gone, the source's callback runs exactly once
//! with the worst outcome of all handles: [`Outcome::Failed`] if any failed,
//! else [`Outcome::Rejected`] if any was rejected, else
//! [`Outcome::Delivered`].
//!
//! A handle that is dropped without being completed counts as failed. That
//! makes the safe thing the default: a panicking task, an aborted shutdown
//! or a forgotten code path can cause a redelivery, never a loss.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

/// The final fate of one source message, from best to worst.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Every sink it was routed to confirmed it (or it was dropped on
    /// purpose by a filter, or written to the dead-letter sink).
    Delivered,
    /// A sink cannot ever take it and there is no dead-letter sink, but the
    /// source has its own dead-lettering (AMQP `basic.reject` to the queue's
    /// dead-letter exchange), which the source applies.
    Rejected,
    /// At least one sink did not confirm it. The source must make it
    /// available again (not commit past it, requeue it, leave it pending).
    Failed,
}

impl Outcome {
    fn code(self) -> u8 {
        match self {
            Outcome::Delivered => 0,
            Outcome::Rejected => 1,
            Outcome::Failed => 2,
        }
    }

    fn from_code(code: u8) -> Self {
        match code {
            0 => Outcome::Delivered,
            1 => Outcome::Rejected,
            _ => Outcome::Failed,
        }
    }
}

type Callback = Box<dyn FnOnce(Outcome) + Send>;

struct Shared {
    /// The worst outcome reported so far, as [`Outcome::code`].
    worst: AtomicU8,
    callback: Mutex<Option<Callback>>,
}

impl Shared {
    fn report(&self, outcome: Outcome) {
        self.worst.fetch_max(outcome.code(), Ordering::Relaxed);
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let outcome = Outcome::from_code(*self.worst.get_mut());
        let callback = crate::sync::get_mut(&mut self.callback).take();
        if let Some(callback) = callback {
            callback(outcome);
        }
    }
}

/// A handle on the acknowledgement of one source message.
#[must_use = "dropping an Ack without completing it reports the message as failed"]
pub struct Ack {
    shared: Arc<Shared>,
    completed: bool,
}

impl Ack {
    /// An acknowledgement that runs `callback` once every handle split from
    /// it has been completed or dropped.
    pub fn new(callback: impl FnOnce(Outcome) + Send + 'static) -> Self {
        Self {
            shared: Arc::new(Shared {
                worst: AtomicU8::new(0),
                callback: Mutex::new(Some(Box::new(callback))),
            }),
            completed: false,
        }
    }

    /// The same acknowledgement, with `first` run on its outcome just
    /// before the source's callback. Composed in place: wrapping the handle
    /// in a second `Ack` would cost every message another shared state.
    pub fn observed(self, first: impl FnOnce(Outcome) + Send + 'static) -> Self {
        {
            let mut slot = crate::sync::lock(&self.shared.callback);
            if let Some(callback) = slot.take() {
                *slot = Some(Box::new(move |outcome| {
                    first(outcome);
                    callback(outcome);
                }));
            }
        }
        self
    }

    /// An acknowledgement nobody waits for (sources without acks).
    pub fn none() -> Self {
        Self::new(|_| {})
    }

    /// Splits this handle into `n` handles, one per sink. With `n == 0` the
    /// message goes nowhere on purpose, which counts as delivered.
    ///
    /// The handles are made as they are taken, and the last one is this
    /// handle itself: a message going to one sink costs no new handle and
    /// no list. Handles never taken count as failed, like dropped ones.
    pub fn split(mut self, n: usize) -> Split {
        if n == 0 {
            self.completed = true;
            return Split {
                last: None,
                left: 0,
            };
        }
        Split {
            last: Some(self),
            left: n,
        }
    }

    /// Reports this handle's outcome. The source hears of it once every
    /// handle of the message is done.
    pub fn complete(mut self, outcome: Outcome) {
        self.shared.report(outcome);
        self.completed = true;
    }

    pub fn delivered(self) {
        self.complete(Outcome::Delivered);
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if !self.completed {
            self.shared.report(Outcome::Failed);
        }
    }
}

/// The handles [`Ack::split`] made, taken one by one.
#[must_use = "handles never taken count as failed"]
pub struct Split {
    /// The handle being split; handed out last. Dropped uncompleted (and so
    /// failing the message) if the split is dropped before it is reached.
    last: Option<Ack>,
    left: usize,
}

impl Iterator for Split {
    type Item = Ack;

    fn next(&mut self) -> Option<Ack> {
        self.left = self.left.checked_sub(1)?;
        if self.left == 0 {
            return self.last.take();
        }
        let shared = Arc::clone(&self.last.as_ref()?.shared);
        Some(Ack {
            shared,
            completed: false,
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl ExactSizeIterator for Split {}

impl fmt::Debug for Ack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ack")
            .field("completed", &self.completed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn tracked() -> (Ack, mpsc::Receiver<Outcome>) {
        let (tx, rx) = mpsc::channel();
        (
            Ack::new(move |o| {
                tx.send(o).ok();
            }),
            rx,
        )
    }

    #[test]
    fn source_hears_delivered_only_after_every_sink_confirmed() {
        let (ack, rx) = tracked();
        let mut parts: Vec<Ack> = ack.split(3).collect();
        parts.pop().unwrap().delivered();
        parts.pop().unwrap().delivered();
        assert!(rx.try_recv().is_err(), "one sink still pending");
        parts.pop().unwrap().delivered();
        assert_eq!(rx.try_recv(), Ok(Outcome::Delivered));
        assert!(rx.try_recv().is_err(), "callback runs once");
    }

    #[test]
    fn an_observer_hears_the_outcome_before_the_source_and_once() {
        let (tx, rx) = mpsc::channel();
        let source = tx.clone();
        let ack = Ack::new(move |o| {
            source.send(("source", o)).ok();
        })
        .observed(move |o| {
            tx.send(("observer", o)).ok();
        });
        let mut parts: Vec<Ack> = ack.split(2).collect();
        parts.pop().unwrap().delivered();
        assert!(rx.try_recv().is_err(), "one sink still pending");
        drop(parts);
        assert_eq!(rx.try_recv(), Ok(("observer", Outcome::Failed)));
        assert_eq!(rx.try_recv(), Ok(("source", Outcome::Failed)));
        assert!(rx.try_recv().is_err(), "each runs once");
    }

    #[test]
    fn one_failed_sink_fails_the_message() {
        let (ack, rx) = tracked();
        let mut parts: Vec<Ack> = ack.split(2).collect();
        parts.pop().unwrap().complete(Outcome::Failed);
        parts.pop().unwrap().delivered();
        assert_eq!(rx.try_recv(), Ok(Outcome::Failed));
    }

    #[test]
    fn the_worst_outcome_wins() {
        let (ack, rx) = tracked();
        let mut parts: Vec<Ack> = ack.split(3).collect();
        parts.pop().unwrap().complete(Outcome::Rejected);
        parts.pop().unwrap().delivered();
        parts.pop().unwrap().delivered();
        assert_eq!(rx.try_recv(), Ok(Outcome::Rejected));
        let (ack, rx) = tracked();
        let mut parts: Vec<Ack> = ack.split(2).collect();
        parts.pop().unwrap().complete(Outcome::Failed);
        parts.pop().unwrap().complete(Outcome::Rejected);
        assert_eq!(rx.try_recv(), Ok(Outcome::Failed));
    }

    #[test]
    fn a_dropped_handle_counts_as_failed() {
        let (ack, rx) = tracked();
        let parts: Vec<Ack> = ack.split(2).collect();
        drop(parts);
        assert_eq!(rx.try_recv(), Ok(Outcome::Failed));
        let (ack, rx) = tracked();
        drop(ack);
        assert_eq!(rx.try_recv(), Ok(Outcome::Failed));
    }

    #[test]
    fn handles_never_taken_from_a_split_count_as_failed() {
        let (ack, rx) = tracked();
        let mut parts = ack.split(3);
        parts.next().unwrap().delivered();
        parts.next().unwrap().delivered();
        drop(parts);
        assert_eq!(rx.try_recv(), Ok(Outcome::Failed));
        let (ack, rx) = tracked();
        let mut parts = ack.split(1);
        assert_eq!(parts.len(), 1);
        parts.next().unwrap().delivered();
        assert!(parts.next().is_none());
        assert_eq!(rx.try_recv(), Ok(Outcome::Delivered));
    }

    #[test]
    fn routing_to_no_sink_is_a_delivery() {
        let (ack, rx) = tracked();
        assert_eq!(ack.split(0).count(), 0);
        assert_eq!(rx.try_recv(), Ok(Outcome::Delivered));
    }
}
