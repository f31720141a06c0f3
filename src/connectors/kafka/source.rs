//! Kafka source: a consumer-group member that commits only confirmed offsets.
//!
//! Offsets are committed by a background task every `commit_interval`,
//! from the [`OffsetTracker`], which never lets a commit pass a message that
//! a sink has not confirmed. Before partitions are taken away in a
//! rebalance, their confirmed offsets are committed synchronously so that
//! the next owner starts where this one stopped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::{ClientContext, Message as _, Offset, Statistics, TopicPartitionList};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::admin;
use super::config::{KafkaSourceConfig, StartFrom, Until};
use super::mapping::{intern, to_message};
use super::oauth::{Bearer, BearerToken, hand_over_stream};
use super::offsets::{OffsetTracker, Partition};
use super::watch::{BrokerWatch, is_missing_topic};
use crate::ack::{Ack, Outcome};
use crate::connectors::{Envelope, Source};
use crate::error::ConnectorError;
use crate::observe::{Probe, names};
use crate::position::{Mark, Scope, Settled};
use crate::values::time::Time;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

type Tracker = Arc<Mutex<OffsetTracker>>;

fn lock(tracker: &Tracker) -> MutexGuard<'_, OffsetTracker> {
    crate::sync::lock(tracker)
}

/// librdkafka callbacks: logging, rebalances, commit results.
pub(crate) struct SourceContext {
    pipeline: String,
    tracker: Tracker,
    watch: BrokerWatch,
    /// Told of every committed offset: the group will not deliver what
    /// lies below it again (`exactly_once` sinks forget those positions).
    settled: Arc<Settled>,
    /// OAUTHBEARER with a token of ferry's own.
    bearer: Bearer,
}

impl ClientContext for SourceContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        self.bearer.generate()
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.watch.log(level, fac, message);
    }

    /// Every `statistics.interval.ms`: exports the consumer lag of each
    /// assigned partition and notices brokers coming back.
    fn stats_raw(&self, statistics: &[u8]) {
        debug!(target: "librdkafka::stats", pipeline = %self.pipeline, "{}", String::from_utf8_lossy(statistics));
        let Ok(statistics) = serde_json::from_slice::<Statistics>(statistics) else {
            return;
        };
        let seen = StatsView::of(&statistics);
        for (topic, partition, lag) in seen.lags {
            metrics::gauge!(names::KAFKA_LAG, "pipeline" => self.pipeline.clone(),
                "topic" => topic.to_owned(), "partition" => partition.to_string())
            .set(lag as f64);
        }
        self.watch.broker_seen(seen.broker_up);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if matches!(error, KafkaError::PartitionEOF(_)) {
            debug!(pipeline = %self.pipeline, "{reason}");
        } else {
            self.watch.error("consumer", &error, reason);
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let revoked = partitions_of(tpl);
            let commits = lock(&self.tracker).revoke(&revoked);
            info!(pipeline = %self.pipeline, partitions = revoked.len(), "kafka partitions revoked");
            if !commits.is_empty()
                && let Err(e) = consumer.commit(&commit_list(&commits), CommitMode::Sync)
            {
                warn!(pipeline = %self.pipeline, "commit before rebalance failed: {e}; \
                        the next owner re-reads from the previous commit");
            }
        }
    }

    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let assigned = partitions_of(tpl);
            info!(pipeline = %self.pipeline, partitions = ?assigned, "kafka partitions assigned");
            if !assigned.is_empty() {
                self.watch.topic_missing_because(None);
            }
            lock(&self.tracker).assigned(&assigned);
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                debug!(pipeline = %self.pipeline, "offsets committed");
                for e in offsets.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        let scope = Scope::Kafka {
                            topic: Arc::from(e.topic()),
                            partition: e.partition(),
                        };
                        self.settled.settle(scope, Mark::Offset(o));
                    }
                }
            }
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                warn!(pipeline = %self.pipeline, "offset commit failed: {e}; retrying");
                let failed: Vec<(Partition, i64)> = offsets
                    .elements()
                    .iter()
                    .filter_map(|e| match e.offset() {
                        Offset::Offset(o) => Some(((e.topic().into(), e.partition()), o)),
                        _ => None,
                    })
                    .collect();
                lock(&self.tracker).commit_failed(&failed);
            }
        }
    }
}

/// What ferry takes from librdkafka's statistics.
#[derive(Debug, Default, PartialEq)]
struct StatsView<'a> {
    /// (topic, partition, lag) of every partition this consumer owns whose
    /// lag is known: messages after the last committed offset.
    lags: Vec<(&'a str, i32, i64)>,
    /// At least one real broker (not a bootstrap entry) is connected.
    broker_up: bool,
}

impl<'a> StatsView<'a> {
    fn of(statistics: &'a Statistics) -> StatsView<'a> {
        let mut lags: Vec<(&str, i32, i64)> = statistics
            .topics
            .iter()
            .flat_map(|(name, topic)| {
                topic
                    .partitions
                    .values()
                    .filter(|p| p.partition >= 0 && p.desired && p.consumer_lag >= 0)
                    .map(move |p| (name.as_str(), p.partition, p.consumer_lag))
            })
            .collect();
        lags.sort_unstable();
        StatsView {
            lags,
            broker_up: statistics
                .brokers
                .values()
                .any(|b| b.nodeid >= 0 && b.state == "UP"),
        }
    }
}

fn partitions_of(tpl: &TopicPartitionList) -> Vec<Partition> {
    tpl.elements()
        .iter()
        .map(|e| (Arc::from(e.topic()), e.partition()))
        .collect()
}

fn commit_list(commits: &[(Partition, i64)]) -> TopicPartitionList {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in commits {
        // Only fails for Offset::Invalid etc., which we never build.
        let _ = tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset));
    }
    tpl
}

type Consumer_ = StreamConsumer<SourceContext>;

pub struct KafkaSource {
    pipeline: String,
    consumer: Arc<Consumer_>,
    tracker: Tracker,
    topics: HashMap<String, Arc<str>>,
    committer: Option<(CancellationToken, JoinHandle<()>)>,
    /// With `until = "end"`: partitions not yet read to the end they had at
    /// start, and that end.
    remaining: Option<HashMap<Partition, i64>>,
    /// With `until = "end"`: how many records lay between the start
    /// positions and those ends.
    expected: Option<u64>,
    /// With `end_time` or `end_offsets`: per partition, the first offset
    /// not to deliver (records from there on are skipped, never committed).
    limits: HashMap<Partition, i64>,
    start: StartFrom,
    group: String,
}

impl KafkaSource {
    pub async fn open(
        pipeline: &str,
        config: &KafkaSourceConfig,
        probe: &Probe,
        settled: &Arc<Settled>,
    ) -> Result<Self, ConnectorError> {
        let tracker: Tracker = Arc::new(Mutex::new(OffsetTracker::new()));
        let context = SourceContext {
            pipeline: pipeline.to_owned(),
            tracker: Arc::clone(&tracker),
            watch: BrokerWatch::new(pipeline, probe.clone()),
            settled: Arc::clone(settled),
            bearer: Bearer::new(BearerToken::of(config.sasl.as_ref())),
        };
        let consumer: Arc<Consumer_> = Arc::new(
            config
                .client_config(&format!("ferry-{pipeline}"))
                .create_with_context(context)
                .map_err(|e| ConnectorError::kafka("creating the consumer", e))?,
        );
        let topics: Vec<String> = config.topics.iter().map(|t| t.to_string()).collect();

        let until_end = config.until == Until::End;
        let seeded = config.start_time.is_some() || !config.start_offsets.is_empty();
        // A daemon does not wait for the brokers here (unless it must seed
        // its start offsets first): librdkafka reports what it finds (a
        // refused connection, a missing topic) through the consumer as soon
        // as it is polled, and the probe says so.
        probe.unconfirmed();
        let positions = if !until_end && !seeded {
            Ok(Positions::default())
        } else {
            hand_over_stream(&consumer, || consumer.context().bearer.waiting()).await;
            let consumer = Arc::clone(&consumer);
            let topics = topics.clone();
            let config = config.clone();
            tokio::task::spawn_blocking(move || {
                let positions = positions(&consumer, &topics, &config)?;
                seed_group(&consumer, &positions.seeds)?;
                Ok(positions)
            })
            .await
            .map_err(|e| ConnectorError::Fatal(format!("kafka set-up task failed: {e}")))?
        };
        let positions = match positions {
            Ok(p) => p,
            // A start position ferry could not set would be silently lost.
            Err(e) if until_end || seeded => return Err(admin::refused_or(config, e).await),
            // A daemon waits for its topics and brokers; librdkafka retries.
            Err(e) => {
                warn!(pipeline, "{e}; consuming once it is available");
                Positions::default()
            }
        };
        if !positions.seeds.is_empty() {
            info!(pipeline, group = %config.group, starts = ?positions.seeds,
                "the group had no offsets for these partitions; it starts at the offsets asked for");
        }

        let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer
            .subscribe(&refs)
            .map_err(|e| ConnectorError::kafka(format!("subscribing to {topics:?}"), e))?;
        info!(pipeline, ?topics, group = %config.group, "kafka source subscribed");

        let stop = CancellationToken::new();
        let committer = tokio::spawn(commit_loop(
            Arc::clone(&consumer),
            Arc::clone(&tracker),
            config.commit_interval.0,
            stop.clone(),
        ));
        Ok(Self {
            pipeline: pipeline.to_owned(),
            consumer,
            tracker,
            topics: topics
                .iter()
                .map(|t| (t.clone(), Arc::from(t.as_str())))
                .collect(),
            committer: Some((stop, committer)),
            remaining: until_end.then_some(positions.remaining),
            expected: until_end.then_some(positions.expected),
            limits: positions.limits,
            start: config.start,
            group: config.group.to_string(),
        })
    }

    /// With `until = "end"`: a partition reported end-of-partition.
    fn reached_eof(&mut self, partition: i32) {
        let Some(remaining) = &mut self.remaining else {
            return;
        };
        let positions = self.consumer.position().ok();
        remaining.retain(|(topic, p), end| {
            let single_topic = self.topics.len() == 1;
            let caught_up = positions.as_ref().is_some_and(|tpl| {
                tpl.find_partition(topic, *p)
                    .is_some_and(|e| matches!(e.offset(), Offset::Offset(o) if o >= *end))
            });
            !((single_topic && *p == partition) || caught_up)
        });
    }
}

/// Where each partition of the topics starts and ends.
#[derive(Debug, Default)]
struct Positions {
    /// For `until = "end"`: partitions whose start lies before their end,
    /// with that end (the end offset now, or an explicit end).
    remaining: HashMap<Partition, i64>,
    /// How many records lie between the starts and the ends (exact unless
    /// the topic is compacted or holds transaction markers).
    expected: u64,
    /// Partitions without a committed offset that start at a given offset
    /// or time: committed for the group before it joins.
    seeds: Vec<(Partition, i64)>,
    /// Explicit ends (`end_time`, `end_offsets`).
    limits: HashMap<Partition, i64>,
}

fn positions(
    consumer: &Consumer_,
    topics: &[String],
    config: &KafkaSourceConfig,
) -> Result<Positions, ConnectorError> {
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer
            .fetch_metadata(Some(topic), METADATA_TIMEOUT)
            .map_err(|e| {
                ConnectorError::kafka(format!("reading metadata of topic `{topic}`"), e)
            })?;
        let found = metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .ok_or_else(|| {
                ConnectorError::Fatal(format!(
                    "kafka topic `{topic}` does not exist (or has no partitions); \
                     create it, or fix `topics`"
                ))
            })?;
        for p in found.partitions() {
            let (low, high) = consumer
                .fetch_watermarks(topic, p.id(), METADATA_TIMEOUT)
                .map_err(|e| ConnectorError::kafka(format!("reading offsets of `{topic}`"), e))?;
            ends.insert((Arc::from(topic.as_str()), p.id()), (low, high));
            let _ = tpl.add_partition(topic, p.id());
        }
    }
    let committed = consumer
        .committed_offsets(tpl, METADATA_TIMEOUT)
        .map_err(|e| ConnectorError::kafka("reading committed offsets", e))?;
    let partitions: Vec<Partition> = ends.keys().cloned().collect();
    let starts_at = offsets_for_time(consumer, &partitions, config.start_time)?;
    let ends_at = offsets_for_time(consumer, &partitions, config.end_time)?;
    let mut out = Positions::default();
    for (partition, (low, high)) in ends {
        let (topic, p) = (&*partition.0, partition.1);
        let given = |offsets: &super::config::PartitionOffsets, at: &HashMap<Partition, i64>| {
            offsets
                .get(topic, p)
                .or_else(|| at.get(&partition).copied())
                .map(|o| o.clamp(low, high))
        };
        let from = match committed.find_partition(topic, p).map(|e| e.offset()) {
            Some(Offset::Offset(o)) => o.max(low),
            _ => match given(&config.start_offsets, &starts_at) {
                Some(seed) => {
                    out.seeds.push((partition.clone(), seed));
                    seed
                }
                None => match config.start {
                    StartFrom::Earliest | StartFrom::Committed => low,
                    StartFrom::Latest => high,
                },
            },
        };
        let end = match given(&config.end_offsets, &ends_at) {
            Some(end) => {
                out.limits.insert(partition.clone(), end);
                end
            }
            None => high,
        };
        if from < end {
            out.remaining.insert(partition, end);
            out.expected += u64::try_from(end - from).unwrap_or(0);
        }
    }
    out.seeds.sort();
    Ok(out)
}

/// Per partition, the offset of the first record at or after `time`
/// (Kafka's offsets-for-times); partitions with none are left out.
fn offsets_for_time(
    consumer: &Consumer_,
    partitions: &[Partition],
    time: Option<Time>,
) -> Result<HashMap<Partition, i64>, ConnectorError> {
    let Some(time) = time else {
        return Ok(HashMap::new());
    };
    let mut tpl = TopicPartitionList::new();
    for (topic, p) in partitions {
        let _ = tpl.add_partition_offset(topic, *p, Offset::Offset(time.millis()));
    }
    let found = consumer
        .offsets_for_times(tpl, METADATA_TIMEOUT)
        .map_err(|e| ConnectorError::kafka(format!("finding the offsets at {time}"), e))?;
    Ok(found
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some(((Arc::from(e.topic()), e.partition()), o)),
            _ => None,
        })
        .collect())
}

/// Commits the start offsets of partitions the group has none for, before
/// it joins: the group then begins there, and a later run resumes from
/// what it committed since.
fn seed_group(consumer: &Consumer_, seeds: &[(Partition, i64)]) -> Result<(), ConnectorError> {
    if seeds.is_empty() {
        return Ok(());
    }
    consumer
        .commit(&commit_list(seeds), CommitMode::Sync)
        .map_err(|e| ConnectorError::kafka("setting the group's start offsets", e))
}

async fn commit_loop(
    consumer: Arc<Consumer_>,
    tracker: Tracker,
    every: Duration,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return,
        }
        let commits = lock(&tracker).take_commits();
        if commits.is_empty() {
            continue;
        }
        debug!(?commits, "committing offsets");
        if let Err(e) = consumer.commit(&commit_list(&commits), CommitMode::Async) {
            warn!("offset commit failed: {e}; retrying");
            lock(&tracker).commit_failed(&commits);
        }
    }
}

impl Source for KafkaSource {
    fn expected(&self) -> Option<u64> {
        self.expected
    }

    async fn next(&mut self) -> Result<Option<Envelope>, ConnectorError> {
        loop {
            if self.remaining.as_ref().is_some_and(HashMap::is_empty) {
                return Ok(None);
            }
            let record = match self.consumer.recv().await {
                Ok(record) => record,
                Err(KafkaError::PartitionEOF(p)) => {
                    self.reached_eof(p);
                    continue;
                }
                Err(KafkaError::MessageConsumption(RDKafkaErrorCode::AutoOffsetReset))
                    if self.start == StartFrom::Committed =>
                {
                    return Err(ConnectorError::Fatal(format!(
                        "a partition has no committed offset for group `{}` and `start = \"committed\"`; \
                         set `start = \"earliest\"` or `\"latest\"` to say where to begin",
                        self.group
                    )));
                }
                Err(e) => {
                    let missing = is_missing_topic(&e);
                    let e = self.consumer.context().watch.refusal().or("consuming", e);
                    if !e.is_retryable() {
                        return Err(e);
                    }
                    let watch = &self.consumer.context().watch;
                    if missing {
                        let why = format!(
                            "a topic of {:?} does not exist (yet); consuming once it is created ({e})",
                            self.topics.keys().collect::<Vec<_>>()
                        );
                        watch.topic_missing_because(Some(&why));
                    }
                    watch.warn(&format!("{e}; librdkafka retries"));
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            let topic = intern(&mut self.topics, record.topic());
            let offset = record.offset();
            let partition: Partition = (Arc::clone(&topic), record.partition());
            if self
                .limits
                .get(&partition)
                .is_some_and(|end| offset >= *end)
            {
                // Past an explicit end: not this job's, never committed.
                continue;
            }
            let message = to_message(&record, topic);
            drop(record);

            if let Some(remaining) = &mut self.remaining
                && remaining
                    .get(&partition)
                    .is_some_and(|end| offset + 1 >= *end)
            {
                remaining.remove(&partition);
            }
            let epoch = lock(&self.tracker).received(&partition, offset);
            let tracker = Arc::clone(&self.tracker);
            let ack = Ack::new(move |outcome| {
                if outcome == Outcome::Delivered {
                    lock(&tracker).confirmed(&partition, offset, epoch);
                }
            });
            return Ok(Some(Envelope::new(message, ack)));
        }
    }

    async fn close(mut self) -> Result<(), ConnectorError> {
        if let Some((stop, task)) = self.committer.take() {
            stop.cancel();
            let _ = task.await;
        }
        let commits = lock(&self.tracker).all_commits();
        let in_flight = lock(&self.tracker).in_flight();
        let consumer = Arc::clone(&self.consumer);
        let pipeline = self.pipeline.clone();
        tokio::task::spawn_blocking(move || {
            let result = if commits.is_empty() {
                Ok(())
            } else {
                consumer.commit(&commit_list(&commits), CommitMode::Sync)
            };
            consumer.unsubscribe();
            result
        })
        .await
        .map_err(|e| ConnectorError::Fatal(format!("kafka close task failed: {e}")))?
        .map_err(|e| ConnectorError::kafka("final offset commit", e))?;
        info!(
            pipeline = %pipeline,
            unconfirmed = in_flight,
            "kafka source closed; confirmed offsets committed"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests;
