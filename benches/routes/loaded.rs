//! Latency at a fixed offered load: orders are written into the route's
//! source at a steady rate while ferry runs; a plain reader on the sink
//! notes when each arrives (end to end), and another on the source itself
//! (beside ferry) what the source system alone costs.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::R;
use crate::latency::{Arrivals, Percentiles, pace, percentiles};
use crate::process::{Bridge, loadavg};
use crate::routes::{Role, Route, Setup};
use crate::services::wait_until;

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Loaded {
    pub route: String,
    pub size: usize,
    /// Messages per second sent (half of ferry's saturation rate).
    pub offered: f64,
    pub seconds: f64,
    pub sent: u64,
    pub load: String,
    pub end_to_end: Percentiles,
    /// Load generator to a plain reader of the source system.
    pub source_only: Percentiles,
    pub ferry_cpu_us_per_msg: f64,
    pub ferry_busy: f64,
    pub peak_rss_mb: f64,
    pub errors: Vec<String>,
}

/// Orders sent (unmeasured) before the load, to have ferry connected and
/// its consumer group settled.
const WARM_UP: u64 = 200;

pub fn measure(route: Route, size: usize, rate: f64, secs: f64) -> Loaded {
    let mut l = Loaded {
        route: route.name.to_owned(),
        size,
        offered: rate,
        seconds: secs,
        load: loadavg(),
        ..Default::default()
    };
    if let Err(e) = run(route, &mut l) {
        l.errors.push(e.to_string());
    }
    eprintln!(
        "[bench] latency {} at {:.0}/s: p50 {:.2} ms, p99 {:.2} ms",
        route.name, rate, l.end_to_end.p50_ms, l.end_to_end.p99_ms
    );
    l
}

fn run(route: Route, l: &mut Loaded) -> R<()> {
    let amqp_url = crate::amqp_url();
    let setup = Setup::start(route, l.size, &amqp_url)?;
    let measured = ((l.offered * l.seconds) as u64).max(1);
    let total = WARM_UP + measured;
    let base = Instant::now();
    let sent = Arrivals::new(base, total);
    let got = Arc::new(Arrivals::new(base, total));
    let at_source = Arc::new(Arrivals::new(base, total));
    let stop = Arc::new(AtomicBool::new(false));
    let readers = [
        setup.read_output(Role::Ferry, got.clone(), stop.clone())?,
        setup.read_input(at_source.clone(), stop.clone())?,
    ];
    let mut ferry = Bridge::ferry(&setup.ferry_config(Role::Ferry)?)?;
    let mut send = setup.load_writer()?;
    let result = (|| -> R<()> {
        pace(1000.0, 1..WARM_UP + 1, &sent, &mut send)?;
        wait_until(
            Duration::from_secs(90),
            "the warm-up orders to arrive",
            || got.count(1..WARM_UP + 1) == WARM_UP && !ferry.sample(),
        )?;
        let cpu0 = ferry.usage().cpu_s;
        let ids = WARM_UP + 1..total + 1;
        pace(l.offered, ids.clone(), &sent, &mut send)?;
        l.sent = measured;
        // Late arrivals count, within a grace period.
        let _ = wait_until(Duration::from_secs(10), "the last orders", || {
            got.count(ids.clone()) == measured
        });
        let usage = ferry.usage();
        l.ferry_cpu_us_per_msg = (usage.cpu_s - cpu0) * 1e6 / measured as f64;
        l.ferry_busy = (usage.cpu_s - cpu0) / l.seconds;
        l.peak_rss_mb = usage.peak_rss_mb;
        l.end_to_end = percentiles(&sent, &got, ids.clone());
        l.source_only = percentiles(&sent, &at_source, ids);
        Ok(())
    })();
    stop.store(true, Ordering::Relaxed);
    ferry.stop();
    for r in readers {
        match r.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => l.errors.push(format!("reader: {e}")),
            Err(_) => l.errors.push("a reader panicked".into()),
        }
    }
    result
}
