//! Per-pipeline counters, the periodic progress line and the final summary.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::ack::Outcome;
use crate::observe::progress::{Bars, percent};

/// One counter: a total the runtime reads back (progress lines, the final
/// summary, tests) and the same count exported to Prometheus.
#[derive(Debug)]
pub(crate) struct Count {
    value: AtomicU64,
    metric: metrics::Counter,
}

impl Count {
    fn new(name: &'static str, pipeline: &str) -> Count {
        Count {
            value: AtomicU64::new(0),
            metric: metrics::counter!(name, "pipeline" => pipeline.to_owned()),
        }
    }

    pub(crate) fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
        self.metric.increment(n);
    }

    pub(crate) fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// Counters of one pipeline. Cheap to update from any task.
#[derive(Debug)]
pub(crate) struct Stats {
    /// Messages read from the source.
    pub received: Count,
    /// Messages acknowledged to the source as delivered.
    pub confirmed: Count,
    /// Messages reported to the source as not delivered.
    pub failed: Count,
    /// Messages handed back to the source's own dead-lettering.
    pub rejected: Count,
    /// Messages written to the dead-letter sink instead of a sink.
    pub dead_lettered: Count,
    /// Messages dropped on purpose: filtered out, unmatched with
    /// `unmatched = "drop"`, or stopped by loop protection.
    pub dropped: Count,
    /// Read from the source and not yet acknowledged to it.
    in_flight: metrics::Gauge,
}

/// A snapshot of `Stats`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub received: u64,
    pub confirmed: u64,
    pub failed: u64,
    pub rejected: u64,
    pub dead_lettered: u64,
    pub dropped: u64,
}

impl Totals {
    /// Source messages whose fate is decided: acknowledged as delivered
    /// (dead-lettered and filtered ones included), rejected, or failed.
    pub fn settled(&self) -> u64 {
        self.confirmed + self.failed + self.rejected
    }
}

impl Stats {
    pub(crate) fn new(pipeline: &str) -> Stats {
        use crate::observe::names;
        Stats {
            received: Count::new(names::RECEIVED, pipeline),
            confirmed: Count::new(names::CONFIRMED, pipeline),
            failed: Count::new(names::FAILED, pipeline),
            rejected: Count::new(names::REJECTED, pipeline),
            dead_lettered: Count::new(names::DEAD_LETTERED, pipeline),
            dropped: Count::new(names::DROPPED, pipeline),
            in_flight: metrics::gauge!(names::IN_FLIGHT, "pipeline" => pipeline.to_owned()),
        }
    }

    /// A message was read from the source.
    pub(crate) fn received(&self) {
        self.received.add(1);
        self.in_flight.increment(1.0);
    }

    /// A message read from the source was acknowledged to it.
    pub(crate) fn completed(&self, outcome: Outcome) {
        match outcome {
            Outcome::Delivered => self.confirmed.add(1),
            Outcome::Rejected => self.rejected.add(1),
            Outcome::Failed => self.failed.add(1),
        }
        self.in_flight.decrement(1.0);
    }

    pub(crate) fn totals(&self) -> Totals {
        Totals {
            received: self.received.get(),
            confirmed: self.confirmed.get(),
            failed: self.failed.get(),
            rejected: self.rejected.get(),
            dead_lettered: self.dead_lettered.get(),
            dropped: self.dropped.get(),
        }
    }
}

/// The metrics of one sink of a pipeline.
#[derive(Debug)]
pub(crate) struct SinkStats {
    /// Messages the sink confirmed.
    pub written: metrics::Counter,
    /// Batch writes that failed with a retryable error and were retried.
    pub retries: metrics::Counter,
    /// How long each batch write took, confirmation included.
    pub write_seconds: metrics::Histogram,
}

impl SinkStats {
    pub(crate) fn new(pipeline: &str, sink: &str) -> SinkStats {
        use crate::observe::names;
        let labels = [("pipeline", pipeline.to_owned()), ("sink", sink.to_owned())];
        SinkStats {
            written: metrics::counter!(names::SINK_WRITTEN, &labels),
            retries: metrics::counter!(names::SINK_RETRIES, &labels),
            write_seconds: metrics::histogram!(names::SINK_WRITE_SECONDS, &labels),
        }
    }
}

/// Logs a progress line every `every` until `stop` is cancelled. For a job
/// of `expected` messages, the line says how much is done, or, when stderr
/// is a terminal, a bar shows it instead.
pub(crate) async fn report_progress(
    pipeline: String,
    stats: Arc<Stats>,
    every: Duration,
    expected: Option<u64>,
    stop: CancellationToken,
) {
    let bar = expected.and_then(|total| Bars::global().bar(&pipeline, total));
    let mut last = stats.totals();
    let mut last_at = Instant::now();
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let mut redraw = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = redraw.tick(), if bar.is_some() => {
                if let Some(bar) = &bar {
                    bar.set_position(stats.totals().settled());
                }
                continue;
            }
            _ = stop.cancelled() => break,
        }
        let now = stats.totals();
        // On a terminal the bar already says it all.
        if now == last || bar.is_some() {
            continue;
        }
        let rate = (now.confirmed - last.confirmed) as f64 / last_at.elapsed().as_secs_f64();
        let in_flight = now.received.saturating_sub(now.settled());
        info!(
            pipeline = %pipeline,
            done = expected.map(|total| percent(now.settled(), total)),
            of = expected,
            received = now.received,
            confirmed = now.confirmed,
            in_flight,
            dead_lettered = now.dead_lettered,
            dropped = now.dropped,
            rate = format!("{rate:.0}/s"),
            "progress"
        );
        last = now;
        last_at = Instant::now();
    }
    if let Some(bar) = bar {
        let now = stats.totals();
        bar.set_position(now.settled());
        bar.finish_with_message(format!(
            "confirmed {}, dead-lettered {}, failed {}",
            now.confirmed, now.dead_lettered, now.failed
        ));
    }
}
