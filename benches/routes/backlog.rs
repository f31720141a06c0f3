//! Memory with a backlog: the source holds many messages, the sink's server
//! is paused (SIGSTOP) once ferry is running, and ferry's peak RSS is taken
//! while it waits and then while it drains after the sink resumes.

use std::time::{Duration, Instant};

use crate::R;
use crate::process::{Bridge, loadavg};
use crate::routes::{Role, Route, Setup, Sink, Source};
use crate::services::wait_until;

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Backlog {
    pub route: String,
    pub messages: u64,
    pub size: usize,
    pub load: String,
    pub fill_seconds: f64,
    pub paused_seconds: f64,
    pub peak_rss_paused_mb: f64,
    pub peak_rss_mb: f64,
    /// Messages per second written after the sink resumed.
    pub drain_rate: f64,
    pub errors: Vec<String>,
}

/// Each source kind behind a paused Redis sink, and a paused Kafka sink.
pub fn cases() -> Vec<Route> {
    let case = |name, source, sink| Route {
        name,
        source,
        sink,
        exactly_once: false,
    };
    vec![
        case("kafka->redis-xadd", Source::Kafka, Sink::RedisXadd),
        case("stream->redis-xadd", Source::RedisStream, Sink::RedisXadd),
        case("amqp->redis-xadd", Source::Amqp, Sink::RedisXadd),
        case("keyspace->redis-xadd", Source::Keyspace, Sink::RedisXadd),
        case("stream->kafka", Source::RedisStream, Sink::Kafka),
    ]
}

pub fn measure(
    route: Route,
    messages: u64,
    size: usize,
    paused: Duration,
    drain: Duration,
) -> Backlog {
    let mut b = Backlog {
        route: route.name.to_owned(),
        messages,
        size,
        load: loadavg(),
        paused_seconds: paused.as_secs_f64(),
        ..Default::default()
    };
    if let Err(e) = run(route, &mut b, paused, drain) {
        b.errors.push(e.to_string());
    }
    eprintln!(
        "[bench] backlog {} x {messages}: peak RSS {:.1} MB paused, {:.1} MB overall",
        route.name, b.peak_rss_paused_mb, b.peak_rss_mb
    );
    b
}

fn run(route: Route, b: &mut Backlog, paused: Duration, drain: Duration) -> R<()> {
    let setup = Setup::start(route, b.size, &crate::amqp_url())?;
    b.fill_seconds = setup.fill(1..b.messages + 1, &[Role::Ferry])?.as_secs_f64();
    let mut count = setup.counter(Role::Ferry)?;
    let mut ferry = Bridge::ferry(&setup.ferry_config(Role::Ferry)?)?;
    wait_until(
        Duration::from_secs(120),
        "the first messages to arrive",
        || !ferry.sample() && count().is_ok_and(|c| c > 0),
    )?;
    setup.pause_sink(true)?;
    let result = (|| -> R<()> {
        let start = Instant::now();
        while start.elapsed() < paused {
            if ferry.sample() {
                return Err(format!("ferry ended\n{}", ferry.log_tail()).into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        b.peak_rss_paused_mb = ferry.usage().peak_rss_mb;
        Ok(())
    })();
    setup.pause_sink(false)?;
    result?;
    let before = count()?;
    let start = Instant::now();
    while start.elapsed() < drain {
        ferry.sample();
        std::thread::sleep(Duration::from_millis(50));
    }
    b.drain_rate = (count()?.saturating_sub(before)) as f64 / start.elapsed().as_secs_f64();
    b.peak_rss_mb = ferry.usage().peak_rss_mb;
    ferry.stop();
    Ok(())
}
