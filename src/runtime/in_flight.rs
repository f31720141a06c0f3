//! The batches a sink task has sent and not yet settled: the window that
//! keeps a sink's writes in flight while earlier ones wait for their
//! confirmations, and what a retry needs to write them again in order.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use super::sink_task::Delivery;
use crate::connectors::Confirming;
use crate::error::{ConnectorError, MessageError};

/// How much one sink may have sent and not yet had confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    /// Messages in flight at once (the sink's `in_flight` times its batch
    /// size), in as many batches as they arrive in: a sink whose
    /// confirmations come all at once (RabbitMQ's, after each disk sync)
    /// would otherwise spend its batches of the window on the few
    /// messages that had arrived when the previous ones were confirmed,
    /// and hold half as many messages in flight as it may.
    pub(crate) messages: usize,
    /// Message bytes (payloads and keys) in flight: no new batch is sent
    /// while this many are. One batch always goes, whatever its size.
    pub(crate) bytes: usize,
}

/// What a batch's confirmations said.
pub(crate) type Confirmed = Result<Vec<Result<(), MessageError>>, ConnectorError>;

type Settling = Pin<Box<dyn Future<Output = (u64, Confirmed)> + Send>>;

/// One batch sent.
pub(crate) struct Flight<P> {
    pub(crate) seq: u64,
    pub(crate) prepared: Arc<[P]>,
    /// Taken when the batch's messages are settled (acknowledged or set
    /// aside); the batch itself stays until every earlier one is, as a
    /// retry of an earlier batch writes it again after that one.
    pub(crate) deliveries: Vec<Delivery>,
    pub(crate) settled: bool,
    /// The error that failed this batch, while it waits to be written
    /// again.
    pub(crate) failed: Option<ConnectorError>,
    pub(crate) sent: Instant,
    bytes: usize,
}

/// The window: batches in the order they were sent, and their
/// confirmations in the order they arrive.
pub(crate) struct InFlight<P> {
    next_seq: u64,
    flights: VecDeque<Flight<P>>,
    confirming: FuturesUnordered<Settling>,
    messages: usize,
    bytes: usize,
}

impl<P> Default for InFlight<P> {
    fn default() -> Self {
        Self {
            next_seq: 0,
            flights: VecDeque::new(),
            confirming: FuturesUnordered::new(),
            messages: 0,
            bytes: 0,
        }
    }
}

impl<P> InFlight<P> {
    pub(crate) fn is_empty(&self) -> bool {
        self.flights.is_empty()
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Messages of the batches not yet settled, or settled behind one that
    /// is not.
    pub(crate) fn messages(&self) -> usize {
        self.messages
    }

    /// Batches whose confirmations are still awaited.
    pub(crate) fn awaiting(&self) -> usize {
        self.confirming.len()
    }

    pub(crate) fn push(
        &mut self,
        prepared: Arc<[P]>,
        deliveries: Vec<Delivery>,
        bytes: usize,
        sent: Instant,
        confirming: Confirming,
    ) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.bytes += bytes;
        self.messages += prepared.len();
        self.flights.push_back(Flight {
            seq,
            prepared,
            deliveries,
            settled: false,
            failed: None,
            sent,
            bytes,
        });
        self.confirming
            .push(Box::pin(async move { (seq, confirming.await) }));
    }

    /// The next batch whose confirmations all arrived (or that failed), in
    /// whatever order they come; `None` when none is awaited.
    pub(crate) async fn next(&mut self) -> Option<(u64, Confirmed)> {
        self.confirming.next().await
    }

    pub(crate) fn get_mut(&mut self, seq: u64) -> Option<&mut Flight<P>> {
        let first = self.flights.front()?.seq;
        let index = usize::try_from(seq.checked_sub(first)?).ok()?;
        self.flights.get_mut(index)
    }

    /// Forgets the settled batches that no unsettled one precedes.
    pub(crate) fn pop_settled(&mut self) {
        while self.flights.front().is_some_and(|f| f.settled) {
            if let Some(f) = self.flights.pop_front() {
                self.bytes -= f.bytes;
                self.messages -= f.prepared.len();
            }
        }
    }

    /// Every batch, in the order sent, once no confirmation is awaited
    /// any more (the window is empty afterwards).
    pub(crate) fn take_all(&mut self) -> Vec<Flight<P>> {
        debug_assert!(self.confirming.is_empty());
        self.bytes = 0;
        self.messages = 0;
        self.flights.drain(..).collect()
    }
}
