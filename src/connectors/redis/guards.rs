//! What the Redis sink checks around a batch: that replicas have it
//! (`wait_replicas`, with `WAIT`) and that Redis has memory left for it
//! (`max_memory_percent`, from `INFO memory`).

use std::time::{Duration, Instant};

use super::config::{RedisSinkConfig, ReplicasMissing};
use super::connection::RedisConn;
use super::replies::text;
use crate::error::{ConnectorError, MessageError};
use crate::observe::names;

/// How often `INFO memory` is read while Redis is far from the threshold;
/// within [`NEAR`] of it, before every batch.
const MEMORY_CHECK: Duration = Duration::from_millis(100);
/// The share of the threshold from which every batch looks first.
const NEAR: f64 = 0.8;

/// `wait_replicas`: each batch is followed by `WAIT`.
pub(crate) struct Replicas {
    want: usize,
    timeout: Duration,
    missing: ReplicasMissing,
    confirmed: metrics::Counter,
    short: metrics::Counter,
}

impl Replicas {
    pub(crate) fn new(config: &RedisSinkConfig, pipeline: &str, sink: &str) -> Option<Replicas> {
        let want = config.wait_replicas?.get();
        let counter = |outcome: &'static str| {
            metrics::counter!(names::REDIS_REPLICA_WAITS, "pipeline" => pipeline.to_owned(),
                "sink" => sink.to_owned(), "outcome" => outcome)
        };
        Some(Replicas {
            want,
            timeout: config.wait_timeout.0,
            missing: config.replicas_missing,
            confirmed: counter("confirmed"),
            short: counter(match config.replicas_missing {
                ReplicasMissing::Retry => "short_retried",
                ReplicasMissing::Fail => "short_failed",
            }),
        })
    }

    /// Waits until `want` replicas have every write made so far on `conn`
    /// (on a cluster, on each primary written to); when fewer do in time,
    /// retries the batch or fails its written messages.
    pub(crate) async fn confirm(
        &self,
        conn: &mut RedisConn,
        results: &mut [Result<(), MessageError>],
    ) -> Result<(), ConnectorError> {
        let millis = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        let got: i64 = redis::cmd("WAIT")
            .arg(self.want)
            .arg(millis)
            .query_async(conn)
            .await
            .map_err(|e| ConnectorError::redis("waiting for replicas (WAIT)", e))?;
        if usize::try_from(got).is_ok_and(|g| g >= self.want) {
            self.confirmed.increment(1);
            return Ok(());
        }
        self.short.increment(1);
        // A primary whose replicas left may have been replaced.
        conn.suspect().await;
        let why = format!(
            "only {got} of the {} replicas asked for (`wait_replicas`) confirmed the batch within {:?}",
            self.want, self.timeout
        );
        match self.missing {
            // Says nothing about the messages: waited out like an outage.
            ReplicasMissing::Retry => Err(ConnectorError::Refusing(why)),
            ReplicasMissing::Fail => {
                for r in results.iter_mut().filter(|r| r.is_ok()) {
                    *r = Err(MessageError::Refused {
                        system: "redis",
                        reason: why.clone(),
                    });
                }
                Ok(())
            }
        }
    }
}

/// `max_memory_percent`: writing pauses while Redis is that full.
pub(crate) struct Memory {
    percent: u64,
    checked: Option<Instant>,
    /// `used_memory / maxmemory` at the last look (0 without maxmemory).
    ratio: f64,
    paused: metrics::Gauge,
    pauses: metrics::Counter,
    was_full: bool,
}

impl Memory {
    pub(crate) fn new(config: &RedisSinkConfig, pipeline: &str, sink: &str) -> Option<Memory> {
        let percent = config.max_memory_percent?.get() as u64;
        Some(Memory {
            percent,
            checked: None,
            ratio: 0.0,
            paused: metrics::gauge!(names::REDIS_MEMORY_PAUSED, "pipeline" => pipeline.to_owned(),
                "sink" => sink.to_owned()),
            pauses: metrics::counter!(names::REDIS_MEMORY_PAUSES, "pipeline" => pipeline.to_owned(),
                "sink" => sink.to_owned()),
            was_full: false,
        })
    }

    /// `Err(Refusing)` (waited out by the runtime, shown in `/ready`) while
    /// Redis is over the threshold; looks again at most every
    /// [`MEMORY_CHECK`] while under it, and at every attempt while over.
    pub(crate) async fn check(&mut self, conn: &mut RedisConn) -> Result<(), ConnectorError> {
        let near = self.ratio >= NEAR * self.percent as f64 / 100.0;
        if !self.was_full && !near && self.checked.is_some_and(|t| t.elapsed() < MEMORY_CHECK) {
            return Ok(());
        }
        let info: redis::Value = redis::cmd("INFO")
            .arg("memory")
            .query_async(conn)
            .await
            .map_err(|e| ConnectorError::redis("reading INFO memory", e))?;
        self.checked = Some(Instant::now());
        self.ratio = fullest(&info).map_or(0.0, ratio);
        let full = fullest(&info).and_then(|(used, max)| {
            (max > 0 && used.saturating_mul(100) >= max.saturating_mul(self.percent))
                .then_some((used, max))
        });
        match full {
            Some((used, max)) => {
                if !self.was_full {
                    self.pauses.increment(1);
                    self.paused.set(1.0);
                    tracing::warn!(
                        used,
                        max,
                        percent = self.percent,
                        "redis is nearly out of memory; writing paused until memory frees up"
                    );
                }
                self.was_full = true;
                Err(ConnectorError::Refusing(format!(
                    "paused: redis used_memory {used} is at or above {}% of maxmemory {max} \
                     (`max_memory_percent`); waiting for memory to free up",
                    self.percent
                )))
            }
            None => {
                if self.was_full {
                    tracing::info!("redis has memory again; writing resumes");
                    self.paused.set(0.0);
                }
                self.was_full = false;
                Ok(())
            }
        }
    }
}

/// `used_memory / maxmemory`; 0 without a `maxmemory`.
fn ratio((used, max): (u64, u64)) -> f64 {
    if max == 0 {
        0.0
    } else {
        used as f64 / max as f64
    }
}

/// `(used_memory, maxmemory)` of the fullest server in an `INFO memory`
/// reply: one text, or on a cluster one per primary.
fn fullest(info: &redis::Value) -> Option<(u64, u64)> {
    let one = |s: &str| {
        let field = |name: &str| {
            s.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        Some((field("used_memory")?, field("maxmemory")?))
    };
    match info {
        redis::Value::Map(nodes) => nodes
            .iter()
            .filter_map(|(_, v)| text(v).and_then(|s| one(&s)))
            .max_by(|a, b| ratio(*a).total_cmp(&ratio(*b))),
        v => one(&text(v)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_read_from_info_and_the_fullest_node_counts() {
        let info = |used, max| {
            redis::Value::BulkString(
                format!(
                    "# Memory\r\nused_memory:{used}\r\nused_memory_human:1M\r\nmaxmemory:{max}\r\n"
                )
                .into_bytes(),
            )
        };
        assert_eq!(fullest(&info(10, 100)), Some((10, 100)));
        let cluster = redis::Value::Map(vec![
            (redis::Value::SimpleString("a".into()), info(10, 100)),
            (redis::Value::SimpleString("b".into()), info(95, 100)),
            (redis::Value::SimpleString("c".into()), info(5, 0)),
        ]);
        assert_eq!(fullest(&cluster), Some((95, 100)));
    }
}
