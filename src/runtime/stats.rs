//! Per-pipeline counters, the periodic progress line and the final summary.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::info;

/// Counters of one pipeline. Cheap to update from any task.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages read from the source.
    pub received: AtomicU64,
    /// Messages acknowledged to the source as delivered.
    pub confirmed: AtomicU64,
    /// Messages reported to the source as not delivered.
    pub failed: AtomicU64,
    /// Messages handed back to the source's own dead-lettering.
    pub rejected: AtomicU64,
    /// Messages written to the dead-letter sink instead of a sink.
    pub dead_lettered: AtomicU64,
    /// Messages dropped on purpose: filtered out, unmatched with
    /// `unmatched = "drop"`, or stopped by loop protection.
    pub dropped: AtomicU64,
}

/// A snapshot of [`Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub received: u64,
    pub confirmed: u64,
    pub failed: u64,
    pub rejected: u64,
    pub dead_lettered: u64,
    pub dropped: u64,
}

impl Stats {
    pub fn totals(&self) -> Totals {
        Totals {
            received: self.received.load(Ordering::Relaxed),
            confirmed: self.confirmed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// Logs a progress line every `every` until `stop` is cancelled.
pub async fn report_progress(
    pipeline: String,
    stats: Arc<Stats>,
    every: Duration,
    stop: CancellationToken,
) {
    let mut last = stats.totals();
    let mut last_at = Instant::now();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let now = stats.totals();
        if now == last {
            continue;
        }
        let rate = (now.confirmed - last.confirmed) as f64 / last_at.elapsed().as_secs_f64();
        info!(
            pipeline = %pipeline,
            received = now.received,
            confirmed = now.confirmed,
            in_flight = now
                .received
                .saturating_sub(now.confirmed + now.failed + now.rejected),
            dead_lettered = now.dead_lettered,
            dropped = now.dropped,
            rate = format!("{rate:.0}/s"),
            "progress"
        );
        last = now;
        last_at = Instant::now();
    }
}
