//! End-to-end latency: orders are sent at a fixed rate, the time of each
//! send and of each arrival is noted by order id (sender and readers live
//! in this process, so one clock serves both), and the percentiles of the
//! differences are taken.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::R;

/// When each order of a run was seen (sent, or arrived somewhere).
pub struct Arrivals {
    base: Instant,
    /// Nanoseconds since `base`, plus one; 0 = not seen.
    at: Vec<AtomicU64>,
}

impl Arrivals {
    pub fn new(base: Instant, ids: u64) -> Self {
        Self {
            base,
            at: (0..=ids).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Notes the first time `id` is seen (a redelivery changes nothing).
    pub fn arrived(&self, id: u64) {
        if let Some(slot) = self.at.get(id as usize) {
            let ns = self.base.elapsed().as_nanos() as u64 + 1;
            let _ = slot.compare_exchange(0, ns, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn get(&self, id: u64) -> Option<u64> {
        match self.at.get(id as usize)?.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(ns - 1),
        }
    }

    pub fn count(&self, ids: Range<u64>) -> u64 {
        ids.filter(|&id| self.get(id).is_some()).count() as u64
    }
}

/// Sends `ids` at `rate` per second: whatever is due is sent in one call
/// of `send`, about every 200 us, and noted in `sent` just before.
pub fn pace(
    rate: f64,
    ids: Range<u64>,
    sent: &Arrivals,
    mut send: impl FnMut(Range<u64>) -> R<()>,
) -> R<()> {
    let start = Instant::now();
    let mut next = ids.start;
    while next < ids.end {
        let due = (ids.start + (start.elapsed().as_secs_f64() * rate) as u64 + 1).min(ids.end);
        if due > next {
            for id in next..due {
                sent.arrived(id);
            }
            send(next..due)?;
            next = due;
        } else {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    Ok(())
}

/// Latency percentiles of one route at one load, in milliseconds.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Percentiles {
    pub received: u64,
    pub missing: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

pub fn percentiles(sent: &Arrivals, got: &Arrivals, ids: Range<u64>) -> Percentiles {
    let mut d: Vec<u64> = Vec::new();
    let mut missing = 0;
    for id in ids {
        match (sent.get(id), got.get(id)) {
            (Some(s), Some(g)) => d.push(g.saturating_sub(s)),
            _ => missing += 1,
        }
    }
    d.sort_unstable();
    let at = |q: f64| -> f64 {
        if d.is_empty() {
            return f64::NAN;
        }
        let i = ((d.len() as f64 * q).ceil() as usize).clamp(1, d.len()) - 1;
        d[i] as f64 / 1e6
    };
    Percentiles {
        received: d.len() as u64,
        missing,
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_ms: at(1.0),
    }
}
