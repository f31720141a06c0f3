//! Redis sources: streams (consumer groups), lists (through a processing
//! list), pub/sub, and keyspace notifications.

pub(crate) mod keyspace;
pub(crate) mod list;
pub(crate) mod pubsub;
pub(crate) mod sharded;
pub(crate) mod stream;

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::connectors::redis::connection::RedisConn;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{error, warn};

use crate::ack::{Ack, Outcome};
use crate::backoff::Backoff;

/// This process's consumer name when the config gives none:
/// `ferry-<pipeline>-<hostname>`, stable across restarts of one machine.
pub(crate) fn default_consumer(pipeline: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("ferry-{pipeline}-{host}")
}

/// Sends acknowledgements (`XACK`, `LREM`) in pipelined batches from a
/// background task, so that sink tasks completing acks never wait for Redis,
/// and keeps track of what the source has in flight.
///
/// An item (a list element, a stream entry id) is *in flight* from the
/// moment the source makes an envelope of it ([`Acker::ack`]) until it is
/// settled: its acknowledgement was confirmed by Redis, or it failed. Redis
/// cannot tell which of the elements of a processing list, or of a
/// consumer's pending entries, the source still holds: after a lost reply
/// some were moved or delivered without the source ever seeing them. So a
/// source re-reads that state and skips what is in flight
/// ([`Acker::not_in_flight`]); the rest it delivers again.
///
/// An acknowledgement that cannot be sent after several attempts is given
/// up: the item stays in Redis and is delivered again (a duplicate, never a
/// loss), as is an item whose delivery failed ([`Acker::take_lost`]).
pub(crate) struct Acker<T> {
    tx: mpsc::UnboundedSender<T>,
    task: JoinHandle<()>,
    in_flight: Arc<InFlight<T>>,
}

/// Items in flight with their number of copies. Seeded per process (list
/// elements are payloads anyone may write), and far cheaper than SipHash.
type Counts<T> = HashMap<T, usize, foldhash::fast::RandomState>;

struct InFlight<T> {
    /// Items handed out and not settled, with how many copies (list
    /// elements can repeat).
    counts: Mutex<Counts<T>>,
    /// An item was settled without being acknowledged (its delivery failed,
    /// or its acknowledgement was given up): it is still in Redis, no longer
    /// in flight, and waits to be read again.
    lost: AtomicBool,
    /// Held by the ack task while it acknowledges and settles a batch, and
    /// by a source while it reads back its in-flight state, so that an item
    /// is never seen both gone from Redis and still in flight (or the
    /// reverse) half-way through an acknowledgement.
    gate: tokio::sync::Mutex<()>,
}

impl<T: Hash + Eq> InFlight<T> {
    fn hold(&self, item: T) {
        *self.lock().entry(item).or_insert(0) += 1;
    }

    fn settle(&self, items: impl IntoIterator<Item = T>, acknowledged: bool) {
        let mut counts = self.lock();
        for item in items {
            if let Some(n) = counts.get_mut(&item) {
                *n -= 1;
                if *n == 0 {
                    counts.remove(&item);
                }
            }
        }
        if !acknowledged {
            self.lost.store(true, Ordering::SeqCst);
        }
    }

    fn not_in_flight<E>(&self, items: Vec<E>, key: impl Fn(&E) -> T) -> Vec<E>
    where
        T: Clone,
    {
        let mut skip = self.lock().clone();
        items
            .into_iter()
            .filter(|item| match skip.get_mut(&key(item)) {
                Some(n) if *n > 0 => {
                    *n -= 1;
                    false
                }
                _ => true,
            })
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Counts<T>> {
        crate::sync::lock(&self.counts)
    }
}

/// While it lives, no acknowledgement is sent or settled: see
/// [`Acker::pause`].
pub(crate) struct Paused<'a> {
    _gate: tokio::sync::MutexGuard<'a, ()>,
}

const ACK_ATTEMPTS: u32 = 8;

impl<T: Hash + Eq + Clone + Send + 'static> Acker<T> {
    pub(crate) fn spawn(
        pipeline: String,
        mut conn: RedisConn,
        build: impl Fn(&[T]) -> redis::Pipeline + Send + 'static,
    ) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<T>();
        let in_flight = Arc::new(InFlight {
            counts: Mutex::new(Counts::default()),
            lost: AtomicBool::new(false),
            gate: tokio::sync::Mutex::new(()),
        });
        let task = {
            let in_flight = Arc::clone(&in_flight);
            tokio::spawn(async move {
                let mut batch = Vec::with_capacity(1024);
                while rx.recv_many(&mut batch, 1024).await > 0 {
                    let pipe = build(&batch);
                    let mut backoff =
                        Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
                    loop {
                        let gate = in_flight.gate.lock().await;
                        match pipe.exec_async(&mut conn).await {
                            Ok(()) => {
                                in_flight.settle(batch.drain(..), true);
                                break;
                            }
                            Err(e) if backoff.attempts() + 1 >= ACK_ATTEMPTS => {
                                error!(
                                    pipeline,
                                    "giving up acknowledging {} entries: {e}; \
                                    they will be delivered again",
                                    batch.len()
                                );
                                in_flight.settle(batch.drain(..), false);
                                break;
                            }
                            Err(e) => {
                                drop(gate);
                                let delay = backoff.next_delay();
                                warn!(pipeline, "acknowledging: {e}; retrying in {delay:?}");
                                tokio::time::sleep(delay).await;
                            }
                        }
                    }
                }
            })
        };
        Self {
            tx,
            task,
            in_flight,
        }
    }

    /// Puts `item` in flight and returns the handle that settles it: once
    /// delivered (or rejected) it is acknowledged; if it failed it is left
    /// in Redis, to be read again.
    pub(crate) fn ack(&self, item: T) -> Ack {
        self.in_flight.hold(item.clone());
        let tx = self.tx.clone();
        let in_flight = Arc::clone(&self.in_flight);
        Ack::new(move |outcome| {
            if outcome == Outcome::Failed {
                in_flight.settle([item], false);
            } else if let Err(unsent) = tx.send(item) {
                // The source has closed: the item stays in Redis.
                in_flight.settle([unsent.0], false);
            }
        })
    }

    /// Stops acknowledgements while the source reads back what Redis holds
    /// for it (the processing list, its pending entries), until the guard
    /// is dropped. Keep the guard over the read and [`Acker::not_in_flight`].
    pub(crate) async fn pause(&self) -> Paused<'_> {
        Paused {
            _gate: self.in_flight.gate.lock().await,
        }
    }

    /// Of `items` read back from Redis, those not in flight: for each item
    /// in flight `n` times, `n` copies are left out.
    pub(crate) fn not_in_flight<E>(
        &self,
        _paused: &Paused<'_>,
        items: Vec<E>,
        key: impl Fn(&E) -> T,
    ) -> Vec<E> {
        self.in_flight.not_in_flight(items, key)
    }

    /// Whether an item was settled without an acknowledgement since the
    /// last call: the source must read its in-flight state again.
    pub(crate) fn take_lost(&self) -> bool {
        self.in_flight.lost.swap(false, Ordering::SeqCst)
    }

    /// Waits until every acknowledgement queued so far is sent. Ack
    /// handles still alive keep their own senders; the task ends when they
    /// are gone too.
    pub(crate) async fn close(self) {
        drop(self.tx);
        if tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .is_err()
        {
            warn!("acknowledgements still pending after 10s; they will be delivered again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_flight() -> InFlight<&'static str> {
        InFlight {
            counts: Mutex::new(Counts::default()),
            lost: AtomicBool::new(false),
            gate: tokio::sync::Mutex::new(()),
        }
    }

    #[test]
    fn only_as_many_copies_as_are_in_flight_are_skipped() {
        let f = in_flight();
        f.hold("x");
        f.hold("x");
        f.hold("y");
        f.settle(["x"], true);
        // Redis holds three copies of x: one is in flight, two are not.
        let read = vec!["x", "y", "x", "z", "x"];
        assert_eq!(f.not_in_flight(read, |e| *e), vec!["x", "z", "x"]);
        assert!(!f.lost.load(Ordering::SeqCst));
    }

    #[test]
    fn a_failed_item_is_no_longer_in_flight_and_asks_for_a_reread() {
        let f = in_flight();
        f.hold("x");
        f.settle(["x"], false);
        assert_eq!(f.not_in_flight(vec!["x"], |e| *e), vec!["x"]);
        assert!(f.lost.load(Ordering::SeqCst));
    }
}
