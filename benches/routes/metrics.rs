//! What ferry says about its own sink writes (`--http` /metrics), read at
//! the end of a run: how many batch writes, how large, how long each took,
//! and the time spent inside writes over the run: the writes in flight on
//! average. A sink with one write at a time that is inside a write nearly
//! all the time while ferry's CPU is idle is waiting for round trips; a
//! windowed sink (Kafka, RabbitMQ) overlaps its writes and goes above 1.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::R;

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SinkWrites {
    pub writes: f64,
    pub mean_batch: f64,
    pub mean_write_ms: f64,
    /// Seconds inside writes over the run's seconds.
    pub write_share: f64,
}

pub fn scrape(port: u16) -> R<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// The sum of every sample of `name` (over all label sets).
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub fn sink_writes(text: &str, messages: u64, seconds: f64) -> SinkWrites {
    let writes = total(text, "ferry_sink_write_seconds_count");
    let inside = total(text, "ferry_sink_write_seconds_sum");
    SinkWrites {
        writes,
        mean_batch: if writes > 0.0 {
            messages as f64 / writes
        } else {
            0.0
        },
        mean_write_ms: if writes > 0.0 {
            inside * 1e3 / writes
        } else {
            0.0
        },
        write_share: inside / seconds,
    }
}
