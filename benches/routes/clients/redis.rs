//! Plain Redis clients (the redis crate, synchronous, pipelined as a careful
//! application would): writers for streams and strings, a consumer-group
//! reader, a SCAN + GET reader, counts, and live readers for latency.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::{Commands, Connection};

use crate::R;
use crate::latency::Arrivals;
use crate::payload::{key_id, order_id, payload};

/// Commands per pipelined round trip, as ferry's Redis sink default.
pub const PIPELINE: u64 = 500;
/// Entries per XREADGROUP, as ferry's stream source default.
pub const READ_BATCH: usize = 200;

pub fn conn(url: &str) -> R<Connection> {
    Ok(redis::Client::open(url)?.get_connection()?)
}

/// What a writer writes: stream entries in ferry's envelope form (the
/// `payload` field, which mq-bridge uses too), or string keys.
#[derive(Clone, Debug)]
pub enum Write {
    Xadd { stream: String },
    Set { prefix: String },
}

pub struct Writer {
    conn: Connection,
    what: Write,
    size: usize,
}

impl Writer {
    pub fn new(url: &str, what: Write, size: usize) -> R<Self> {
        Ok(Self {
            conn: conn(url)?,
            what,
            size,
        })
    }

    /// One pipelined round trip per [`PIPELINE`] orders.
    pub fn send(&mut self, ids: Range<u64>) -> R<()> {
        let mut start = ids.start;
        while start < ids.end {
            let end = (start + PIPELINE).min(ids.end);
            let mut p = redis::pipe();
            for id in start..end {
                let value = payload(id, self.size);
                match &self.what {
                    Write::Xadd { stream } => p
                        .cmd("XADD")
                        .arg(stream)
                        .arg("*")
                        .arg("payload")
                        .arg(value)
                        .arg("key")
                        .arg(id)
                        .ignore(),
                    Write::Set { prefix } => p
                        .cmd("SET")
                        .arg(format!("{prefix}{id}"))
                        .arg(value)
                        .ignore(),
                };
            }
            p.query::<()>(&mut self.conn)?;
            start = end;
        }
        Ok(())
    }
}

pub fn write(url: &str, what: Write, ids: Range<u64>, size: usize) -> R<Duration> {
    let start = Instant::now();
    Writer::new(url, what, size)?.send(ids)?;
    Ok(start.elapsed())
}

/// A consumer group member reading `n` entries of `stream` in batches of
/// [`READ_BATCH`], acknowledging each batch with one XACK.
pub fn read_group(url: &str, stream: &str, n: u64, timeout: Duration) -> R<Duration> {
    let start = Instant::now();
    let mut c = conn(url)?;
    let group = crate::services::unique("bench-raw");
    redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(stream)
        .arg(&group)
        .arg("0")
        .query::<()>(&mut c)?;
    let opts = StreamReadOptions::default()
        .group(&group, "raw")
        .count(READ_BATCH)
        .block(100);
    let mut seen = 0u64;
    while seen < n {
        if start.elapsed() > timeout {
            return Err(format!("read {seen} of {n} entries of {stream} in {timeout:?}").into());
        }
        let reply: Option<StreamReadReply> = c.xread_options(&[stream], &[">"], &opts)?;
        let Some(reply) = reply else { continue };
        for key in reply.keys {
            let ids: Vec<&str> = key.ids.iter().map(|e| e.id.as_str()).collect();
            if ids.is_empty() {
                continue;
            }
            seen += ids.len() as u64;
            c.xack::<_, _, _, ()>(stream, &group, &ids)?;
        }
    }
    Ok(start.elapsed())
}

/// SCAN for `pattern` and read every key found with pipelined GETs, until
/// `n` values were read.
pub fn scan_get(url: &str, pattern: &str, n: u64) -> R<Duration> {
    let start = Instant::now();
    let mut c = conn(url)?;
    let mut cursor: u64 = 0;
    let mut seen = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query(&mut c)?;
        if !keys.is_empty() {
            let mut p = redis::pipe();
            for k in &keys {
                p.cmd("GET").arg(k);
            }
            let values: Vec<Option<Vec<u8>>> = p.query(&mut c)?;
            seen += values.iter().filter(|v| v.is_some()).count() as u64;
        }
        cursor = next;
        if cursor == 0 {
            break;
        }
    }
    if seen < n {
        return Err(format!("found {seen} of {n} keys matching {pattern}").into());
    }
    Ok(start.elapsed())
}

/// What has arrived in a Redis sink.
pub enum Counter {
    /// Keys in the database (the SET sink writes one per order).
    Keys(Connection),
    Stream(Connection, String),
}

impl Counter {
    pub fn keys(url: &str) -> R<Self> {
        Ok(Self::Keys(conn(url)?))
    }

    pub fn stream(url: &str, stream: &str) -> R<Self> {
        Ok(Self::Stream(conn(url)?, stream.to_owned()))
    }

    pub fn count(&mut self) -> R<u64> {
        Ok(match self {
            Self::Keys(c) => redis::cmd("DBSIZE").query(c)?,
            Self::Stream(c, s) => c.xlen(&*s)?,
        })
    }
}

/// Reads `stream` from its start as entries arrive (XREAD BLOCK) and notes
/// each order's arrival, until `stop`.
pub fn read_stream_live(
    url: &str,
    stream: &str,
    arrivals: Arc<Arrivals>,
    stop: Arc<AtomicBool>,
) -> R<std::thread::JoinHandle<R<()>>> {
    let mut c = conn(url)?;
    let stream = stream.to_owned();
    Ok(std::thread::spawn(move || {
        let opts = StreamReadOptions::default().count(1000).block(50);
        let mut last = "0".to_owned();
        while !stop.load(Ordering::Relaxed) {
            let reply: Option<StreamReadReply> = c.xread_options(&[&stream], &[&last], &opts)?;
            for key in reply.into_iter().flat_map(|r| r.keys) {
                for entry in key.ids {
                    if let Some(id) = entry
                        .get::<Vec<u8>>("payload")
                        .as_deref()
                        .and_then(order_id)
                    {
                        arrivals.arrived(id);
                    }
                    last = entry.id;
                }
            }
        }
        Ok(())
    }))
}

/// Turns on keyspace notifications (all classes, as the keyspace source
/// wants them) on a private server.
pub fn enable_notifications(url: &str) -> R<()> {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("notify-keyspace-events")
        .arg("KA")
        .query::<()>(&mut conn(url)?)?;
    Ok(())
}

/// Notes the arrival of every key matching `pattern` (such as `order:*`)
/// from keyspace notifications; the key names the order.
pub fn read_keys_live(
    url: &str,
    pattern: &str,
    arrivals: Arc<Arrivals>,
    stop: Arc<AtomicBool>,
) -> R<std::thread::JoinHandle<R<()>>> {
    enable_notifications(url)?;
    let mut c = conn(url)?;
    let channel = format!("__keyspace@0__:{pattern}");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<R<()>>();
    let handle = std::thread::spawn(move || {
        let mut ps = c.as_pubsub();
        let subscribed = ps
            .psubscribe(&channel)
            .and_then(|()| ps.set_read_timeout(Some(Duration::from_millis(50))));
        let failed = subscribed.is_err();
        let _ = ready_tx.send(subscribed.map_err(Into::into));
        if failed {
            return Ok(());
        }
        while !stop.load(Ordering::Relaxed) {
            match ps.get_message() {
                Ok(m) => {
                    let key = m.get_channel_name().split_once(':').map(|(_, k)| k);
                    if let Some(id) = key.and_then(key_id) {
                        arrivals.arrived(id);
                    }
                }
                Err(e) if e.is_timeout() => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    });
    ready_rx.recv()??;
    Ok(handle)
}
