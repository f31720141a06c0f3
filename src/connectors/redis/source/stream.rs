//! Redis Streams source: one consumer of a consumer group.
//!
//! - At start, the group is created if asked (`XGROUP CREATE ... MKSTREAM`).
//! - First this consumer's own pending entries are delivered again: what it
//!   had received but not acknowledged before a crash. The same happens
//!   after any error (the reply to a read may have been lost after Redis
//!   had delivered entries to this consumer) and after a failed delivery.
//!   They are listed (`XPENDING`), those still in flight are left alone,
//!   and the others are taken again (`XCLAIM` to itself).
//! - Then new entries (`XREADGROUP ... >`, blocking), each read sent as the
//!   last one's entries start to be delivered, so Redis answers it meanwhile.
//! - Every `claim_idle / 2`, entries another consumer left pending for
//!   `claim_idle` are claimed (`XAUTOCLAIM`): that consumer is presumed dead.
//! - An entry is acknowledged (`XACK`) only once every sink confirmed it. An
//!   entry delivered `max_deliveries` times goes to the dead-letter sink.
//! - With `trim`, entries every group has acknowledged are deleted
//!   (`XTRIM MINID`), so the stream does not grow without bound.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::connectors::redis::connection::RedisConn;
use tracing::{info, warn};

use super::{Acker, default_consumer};
use crate::ack::Outcome;
use crate::connectors::redis::access::connect;
use crate::connectors::redis::config::RedisStreamSourceConfig;
use crate::connectors::redis::replies::{
    StreamEntry, parse_autoclaim_reply, parse_entries, parse_pending, parse_read_reply,
};
use crate::connectors::redis::stream_entry::entry_message;
use crate::connectors::{Envelope, Source};
use crate::error::ConnectorError;
use crate::observe::Probe;
use crate::position::stream_id;
use crate::position::{Mark, Scope, Settled};
use crate::values::Until;

mod group;

use group::{create_group, job_of, keep_from, list_of_maps, trim_acknowledged};

/// A read of new entries on its way: the streams it reads (by index) and
/// the task bringing the reply.
struct Ahead {
    reading: Vec<usize>,
    reply: tokio::task::JoinHandle<redis::RedisResult<redis::Value>>,
}

const TRIM_EVERY: Duration = Duration::from_secs(5);
/// How often the group's floor is passed to `exactly_once` sinks, which
/// keep the positions written since then.
const SETTLE_EVERY: Duration = Duration::from_secs(2);

pub struct RedisStreamSource {
    pipeline: String,
    /// Blocking reads only: a blocked `XREADGROUP` would hold up anything
    /// else sent on the same connection.
    reader: RedisConn,
    cmd: RedisConn,
    streams: Vec<Arc<str>>,
    group: String,
    consumer: String,
    config: RedisStreamSourceConfig,
    /// While re-reading own pending entries (at start, and after an error or
    /// a failed delivery): per stream, the last id listed (`0` before the
    /// first page, `None` once that stream's pending entries are listed).
    pending_from: Option<Vec<Option<String>>>,
    buffer: VecDeque<Envelope>,
    /// The next read of new entries, sent while the buffer is delivered.
    ahead: Option<Ahead>,
    claim_cursors: Vec<String>,
    next_claim: Instant,
    next_trim: Instant,
    next_settle: Instant,
    /// Where the group's floor is published (`exactly_once`).
    settled: Arc<Settled>,
    acker: Acker<(usize, String)>,
    /// With `until = "end"`: per stream, the last entry id it had at start,
    /// or `None` once the group has been given everything up to it.
    ends: Option<Vec<Option<(u64, u64)>>>,
    /// With `end_id` or `end_time`: the first entry id not delivered.
    /// Entries from there on that a read brings stay pending, undelivered.
    end_before: Option<(u64, u64)>,
    /// With `until = "end"`: entries to deliver, when Redis could say.
    expected: Option<u64>,
    probe: Probe,
}

impl RedisStreamSource {
    pub async fn open(
        pipeline: &str,
        config: &RedisStreamSourceConfig,
        probe: &Probe,
        settled: &Arc<Settled>,
    ) -> Result<Self, ConnectorError> {
        let block = config.block.0;
        let reader = connect(&config.access(), block + Duration::from_secs(10))?;
        let mut cmd = connect(&config.access(), Duration::from_secs(10))?;
        let streams: Vec<Arc<str>> = config
            .streams
            .iter()
            .map(|s| Arc::from(s.as_str()))
            .collect();
        let group = config.group.to_string();
        let consumer = config
            .consumer
            .as_ref()
            .map_or_else(|| default_consumer(pipeline), ToString::to_string);
        if config.create_group {
            for s in &streams {
                create_group(&mut cmd, s, &group, &config.group_start()).await?;
            }
        }
        let acker = {
            let streams = streams.clone();
            let group = group.clone();
            Acker::spawn(
                pipeline.to_owned(),
                cmd.clone(),
                move |batch: &[(usize, String)]| {
                    let mut by_stream: HashMap<usize, Vec<&str>> = HashMap::new();
                    for (s, id) in batch {
                        by_stream.entry(*s).or_default().push(id);
                    }
                    let mut pipe = redis::pipe();
                    for (s, ids) in by_stream {
                        pipe.cmd("XACK")
                            .arg(&*streams[s])
                            .arg(&group)
                            .arg(ids)
                            .ignore();
                    }
                    pipe
                },
            )
        };
        let (ends, expected) = if config.until == Until::End {
            let mut ends = Vec::new();
            let mut expected = Some(0);
            for s in &streams {
                let (end, size) = job_of(&mut cmd, s, &group, &consumer).await?;
                let last_wanted = config.end_before().map(|id| id.before());
                ends.push(match last_wanted {
                    // Before the first entry: nothing to read.
                    Some(None) => None,
                    Some(Some(last)) => end.map(|end| end.min((last.0, last.1))),
                    None => end,
                });
                expected = expected.zip(size).map(|(a, b)| a + b);
            }
            (Some(ends), expected)
        } else {
            (None, None)
        };
        info!(
            pipeline,
            ?streams,
            group,
            consumer,
            "redis stream source ready"
        );
        let n = streams.len();
        let mut source = Self {
            pipeline: pipeline.to_owned(),
            reader,
            cmd,
            streams,
            group,
            consumer,
            config: config.clone(),
            pending_from: None,
            buffer: VecDeque::new(),
            ahead: None,
            claim_cursors: vec!["0-0".to_owned(); n],
            next_claim: Instant::now() + config.claim_idle.0 / 2,
            next_trim: Instant::now() + TRIM_EVERY,
            next_settle: Instant::now() + SETTLE_EVERY,
            settled: Arc::clone(settled),
            acker,
            ends,
            end_before: config.end_before().map(|id| (id.0, id.1)),
            expected,
            probe: probe.clone(),
        };
        source.reread_own_pending();
        Ok(source)
    }

    /// Reads this consumer's pending entries again before anything new.
    fn reread_own_pending(&mut self) {
        self.pending_from = Some(vec![Some("0".to_owned()); self.streams.len()]);
    }

    fn err(&self, what: &str, e: redis::RedisError) -> ConnectorError {
        ConnectorError::redis(format!("{what} (group {})", self.group), e)
    }

    /// Re-reads this consumer's pending entries, one stream at a time, a
    /// page at a time: lists them (`XPENDING`, which changes nothing),
    /// leaves out those in flight, and takes the others again (`XCLAIM` to
    /// itself, which counts a delivery). Entries in flight are not touched,
    /// so however often the connection drops, an entry's delivery count
    /// counts only the times it was handed out (for `max_deliveries`).
    async fn read_own_pending(&mut self) -> Result<(), ConnectorError> {
        let Some(from) = &mut self.pending_from else {
            return Ok(());
        };
        let Some((i, after)) = from
            .iter()
            .enumerate()
            .find_map(|(i, id)| id.clone().map(|id| (i, id)))
        else {
            self.pending_from = None;
            info!(pipeline = %self.pipeline, "own pending entries re-read; reading new entries");
            return Ok(());
        };
        let stream = Arc::clone(&self.streams[i]);
        let paused = self.acker.pause().await;
        let reply: redis::Value = redis::cmd("XPENDING")
            .arg(&*stream)
            .arg(&self.group)
            .arg(if after == "0" {
                "-".to_owned()
            } else {
                format!("({after}")
            })
            .arg("+")
            .arg(self.config.batch_size.get())
            .arg(&self.consumer)
            .query_async(&mut self.cmd)
            .await
            .map_err(|e| self.err("listing own pending entries", e))?;
        let rows = parse_pending(reply)
            .map_err(|e| ConnectorError::Fatal(format!("unexpected XPENDING reply: {e}")))?;
        let next = rows.last().map(|(id, ..)| id.clone());
        let rows = self
            .acker
            .not_in_flight(&paused, rows, |(id, ..)| (i, id.clone()));
        drop(paused);
        self.probe.up();
        if !rows.is_empty() {
            // Taking them again is one more delivery each.
            let counts: HashMap<String, u64> = rows
                .iter()
                .map(|(id, _, _, n)| (id.clone(), n + 1))
                .collect();
            // An entry another consumer claimed since it was listed has
            // been idle for less than that: it stays with that consumer.
            let idle = rows.iter().map(|(_, _, idle, _)| *idle).min().unwrap_or(0);
            let mut claim = redis::cmd("XCLAIM");
            claim
                .arg(&*stream)
                .arg(&self.group)
                .arg(&self.consumer)
                .arg(idle);
            for (id, ..) in &rows {
                claim.arg(id);
            }
            let reply: redis::Value = claim
                .query_async(&mut self.cmd)
                .await
                .map_err(|e| self.err("taking own pending entries again", e))?;
            // Entries deleted while pending: Redis 7 drops them from the
            // pending list and leaves them out; 6.2 answers nil for them.
            let reply = match reply {
                redis::Value::Array(entries) => redis::Value::Array(
                    entries
                        .into_iter()
                        .filter(|e| !matches!(e, redis::Value::Nil))
                        .collect(),
                ),
                other => other,
            };
            let entries = parse_entries(reply)
                .map_err(|e| ConnectorError::Fatal(format!("unexpected XCLAIM reply: {e}")))?;
            info!(pipeline = %self.pipeline, %stream, count = entries.len(),
                "re-reading entries received but not acknowledged before");
            self.deliver(i, entries, &counts);
        }
        if let Some(from) = &mut self.pending_from {
            // After the last page (`None`), this stream is done.
            from[i] = next;
        }
        Ok(())
    }

    /// Sends the read of new entries, on the reading connection, from a
    /// task of its own: it runs while the last batch is delivered.
    fn send_new(&self) -> Ahead {
        // A one-off copy reads only the streams not yet read to their end,
        // and does not wait: an empty answer means it is done.
        let reading: Vec<usize> = match &self.ends {
            Some(ends) => (0..self.streams.len())
                .filter(|&i| ends[i].is_some())
                .collect(),
            None => (0..self.streams.len()).collect(),
        };
        let mut c = redis::cmd("XREADGROUP");
        c.arg("GROUP")
            .arg(&self.group)
            .arg(&self.consumer)
            .arg("COUNT")
            .arg(self.config.batch_size.get());
        if self.ends.is_none() {
            c.arg("BLOCK").arg(self.config.block.0.as_millis() as u64);
        }
        c.arg("STREAMS");
        for &i in &reading {
            c.arg(&*self.streams[i]);
        }
        for _ in &reading {
            c.arg(">");
        }
        let mut reader = self.reader.clone();
        Ahead {
            reading,
            reply: tokio::spawn(async move { c.query_async(&mut reader).await }),
        }
    }

    /// Sends the next read of new entries ahead, unless one is on its way
    /// or something else comes first (own pending entries, a claim, the
    /// end of a one-off copy).
    fn read_ahead(&mut self) {
        if self.ahead.is_none()
            && self.pending_from.is_none()
            && !self.read_to_the_end()
            && Instant::now() < self.next_claim
        {
            self.ahead = Some(self.send_new());
        }
    }

    /// Delivers what a read of new entries brought.
    async fn take_new(&mut self, ahead: Ahead) -> Result<(), ConnectorError> {
        let Ahead { reading, reply } = ahead;
        let reply: redis::Value = match reply.await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) if e.code() == Some("NOGROUP") && self.config.create_group => {
                warn!(pipeline = %self.pipeline, "the consumer group is gone (stream deleted, or Redis \
                    restarted without persistence); creating it again");
                for s in self.streams.clone() {
                    create_group(&mut self.cmd, &s, &self.group, &self.config.group_start())
                        .await?;
                }
                return Ok(());
            }
            Ok(Err(e)) => return Err(self.err("reading new entries", e)),
            Err(e) => {
                return Err(ConnectorError::Retry(format!(
                    "reading new entries (group {}): {e}",
                    self.group
                )));
            }
        };
        self.probe.up();
        let per_stream = parse_read_reply(reply)
            .map_err(|e| ConnectorError::Fatal(format!("unexpected XREADGROUP reply: {e}")))?;
        let mut answered = Vec::new();
        for (name, entries) in per_stream {
            if let Some(i) = self.streams.iter().position(|s| **s == *name) {
                if let Some(ends) = &mut self.ends {
                    let last = entries.last().and_then(|e| stream_id(&e.id));
                    if !entries.is_empty() && last < ends[i] {
                        answered.push(i);
                    }
                }
                self.deliver(i, entries, &HashMap::new());
            }
        }
        // Every entry up to a stream's end existed at start, so a stream
        // that gave nothing, or reached its end, is done.
        if let Some(ends) = &mut self.ends {
            for i in reading {
                if !answered.contains(&i) && ends[i].take().is_some() {
                    info!(pipeline = %self.pipeline, stream = %self.streams[i],
                        "read to the end it had at start");
                }
            }
        }
        Ok(())
    }

    /// With `until = "end"`: every stream was read to its end.
    fn read_to_the_end(&self) -> bool {
        self.ends
            .as_ref()
            .is_some_and(|ends| ends.iter().all(Option::is_none))
    }

    /// Claims entries other consumers left pending for `claim_idle`.
    async fn claim(&mut self) -> Result<(), ConnectorError> {
        for i in 0..self.streams.len() {
            let paused = self.acker.pause().await;
            let reply: redis::Value = redis::cmd("XAUTOCLAIM")
                .arg(&*self.streams[i])
                .arg(&self.group)
                .arg(&self.consumer)
                .arg(self.config.claim_idle.0.as_millis() as u64)
                .arg(&self.claim_cursors[i])
                .arg("COUNT")
                .arg(self.config.batch_size.get())
                .query_async(&mut self.cmd)
                .await
                .map_err(|e| self.err("claiming idle entries", e))?;
            let (cursor, entries, _deleted) = parse_autoclaim_reply(reply)
                .map_err(|e| ConnectorError::Fatal(format!("unexpected XAUTOCLAIM reply: {e}")))?;
            self.claim_cursors[i] = cursor;
            // Own entries can be idle that long too, when sinks are slow:
            // those in flight are not delivered twice.
            let entries = self
                .acker
                .not_in_flight(&paused, entries, |e| (i, e.id.clone()));
            drop(paused);
            self.probe.up();
            if !entries.is_empty() {
                warn!(pipeline = %self.pipeline, stream = %self.streams[i], count = entries.len(),
                    "claimed entries another consumer left unacknowledged");
                let deliveries = self.delivery_counts(i, &entries).await?;
                self.deliver(i, entries, &deliveries);
            }
        }
        Ok(())
    }

    /// Turns entries into envelopes. `deliveries`: for entries delivered
    /// before, how often, this time included; too often sends them to the
    /// dead-letter sink.
    fn deliver(
        &mut self,
        stream: usize,
        entries: Vec<StreamEntry>,
        deliveries: &HashMap<String, u64>,
    ) {
        let max = self.config.max_deliveries.get() as u64;
        for entry in entries {
            if self
                .end_before
                .is_some_and(|end| stream_id(&entry.id).is_none_or(|id| id >= end))
            {
                continue;
            }
            let Some(fields) = entry.fields else {
                // Deleted while pending: nothing to deliver, just forget it.
                self.acker
                    .ack((stream, entry.id))
                    .complete(Outcome::Delivered);
                continue;
            };
            let message = entry_message(&self.streams[stream], entry.id.clone(), &fields);
            let ack = self.acker.ack((stream, entry.id.clone()));
            let mut envelope = Envelope::new(message, ack);
            if let Some(&n) = deliveries.get(&entry.id)
                && n >= max
            {
                envelope.dead_letter = Some(format!(
                    "delivered {n} times without being confirmed (max_deliveries = {max})"
                ));
            }
            self.buffer.push_back(envelope);
        }
    }

    /// How often each of `entries` (just claimed) has been delivered.
    async fn delivery_counts(
        &mut self,
        stream: usize,
        entries: &[StreamEntry],
    ) -> Result<HashMap<String, u64>, ConnectorError> {
        let (Some(first), Some(last)) = (entries.first(), entries.last()) else {
            return Ok(HashMap::new());
        };
        let (first, last, count) = (&first.id, &last.id, entries.len());
        let reply: redis::Value = redis::cmd("XPENDING")
            .arg(&*self.streams[stream])
            .arg(&self.group)
            .arg(first)
            .arg(last)
            .arg(count)
            .arg(&self.consumer)
            .query_async(&mut self.cmd)
            .await
            .map_err(|e| self.err("reading delivery counts", e))?;
        let rows = parse_pending(reply)
            .map_err(|e| ConnectorError::Fatal(format!("unexpected XPENDING reply: {e}")))?;
        Ok(rows.into_iter().map(|(id, _, _, n)| (id, n)).collect())
    }

    /// Deletes entries that every group has acknowledged.
    async fn trim(&mut self) -> Result<(), ConnectorError> {
        trim_acknowledged(&mut self.cmd, &self.streams, &self.group).await
    }

    /// Tells `exactly_once` sinks, per stream, below which entry id this
    /// group will deliver nothing again.
    async fn settle(&mut self) -> Result<(), ConnectorError> {
        for s in self.streams.clone() {
            let groups: redis::Value = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(&*s)
                .query_async(&mut self.cmd)
                .await
                .map_err(|e| self.err("reading stream groups", e))?;
            let ours = list_of_maps(&groups)
                .into_iter()
                .find(|g| g.get("name") == Some(&self.group));
            if let Some(g) = ours
                && let Some((ms, seq)) = keep_from(&mut self.cmd, &s, &g).await?
            {
                let scope = Scope::RedisStream {
                    stream: Arc::clone(&s),
                };
                self.settled.settle(scope, Mark::EntryId(ms, seq));
            }
        }
        Ok(())
    }
}

impl Source for RedisStreamSource {
    fn expected(&self) -> Option<u64> {
        self.expected
    }

    async fn next(&mut self) -> Result<Option<Envelope>, ConnectorError> {
        loop {
            if let Some(envelope) = self.buffer.pop_front() {
                self.read_ahead();
                return Ok(Some(envelope));
            }
            let now = Instant::now();
            if self.config.trim && now >= self.next_trim {
                self.next_trim = now + TRIM_EVERY;
                if let Err(e) = self.trim().await {
                    warn!(pipeline = %self.pipeline, "{e}");
                }
            }
            if self.settled.is_wanted() && now >= self.next_settle {
                self.next_settle = now + SETTLE_EVERY;
                if let Err(e) = self.settle().await {
                    warn!(pipeline = %self.pipeline, "{e}");
                }
            }
            if self.acker.take_lost() {
                self.reread_own_pending();
            }
            // A read sent ahead is taken before anything else is read.
            let read = if let Some(ahead) = self.ahead.take() {
                self.take_new(ahead).await
            } else if self.pending_from.is_some() {
                self.read_own_pending().await
            } else if self.read_to_the_end() {
                return Ok(None);
            } else if now >= self.next_claim {
                self.next_claim = now + (self.config.claim_idle.0 / 2).max(Duration::from_secs(1));
                self.claim().await
            } else {
                let ahead = self.send_new();
                self.take_new(ahead).await
            };
            if let Err(e) = read {
                // Redis may have delivered entries to this consumer (or
                // claimed them for it) without the reply arriving.
                self.reread_own_pending();
                return Err(e);
            }
        }
    }

    async fn close(self) -> Result<(), ConnectorError> {
        // Entries a read sent ahead brought stay pending for this
        // consumer: its next start delivers them.
        if let Some(ahead) = &self.ahead {
            ahead.reply.abort();
        }
        let (mut cmd, streams, group) =
            (self.cmd.clone(), self.streams.clone(), self.group.clone());
        self.acker.close().await;
        // What this run acknowledged last (all of a short `until = "end"`
        // job) is trimmed now rather than left for the next run.
        if self.config.trim
            && let Err(e) = trim_acknowledged(&mut cmd, &streams, &group).await
        {
            warn!(pipeline = %self.pipeline, "{e}");
        }
        info!(pipeline = %self.pipeline, "redis stream source closed; confirmed entries acknowledged");
        Ok(())
    }
}
