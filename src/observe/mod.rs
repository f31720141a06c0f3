//! Watching ferry run: Prometheus metrics, readiness of every pipeline part,
//! and the HTTP endpoint that serves both.
//!
//! Metrics are recorded with the `metrics` facade everywhere; they cost
//! next to nothing until [`install_recorder`] is called, which `ferry run
//! --http ADDR` does before any pipeline starts (handles taken before that
//! stay no-ops).

pub mod health;
pub mod http;
pub mod progress;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

pub use health::{Health, Probe, State};

/// Metric names, in one place so docs and tests can refer to them.
pub mod names {
    pub const RECEIVED: &str = "ferry_messages_received_total";
    pub const CONFIRMED: &str = "ferry_messages_confirmed_total";
    pub const FAILED: &str = "ferry_messages_failed_total";
    pub const REJECTED: &str = "ferry_messages_rejected_total";
    pub const DEAD_LETTERED: &str = "ferry_messages_dead_lettered_total";
    pub const DROPPED: &str = "ferry_messages_dropped_total";
    pub const IN_FLIGHT: &str = "ferry_messages_in_flight";
    pub const SINK_WRITTEN: &str = "ferry_sink_messages_written_total";
    pub const SINK_RETRIES: &str = "ferry_sink_retries_total";
    pub const SINK_WRITE_SECONDS: &str = "ferry_sink_write_seconds";
    pub const SINK_SKIPPED: &str = "ferry_sink_duplicates_skipped_total";
    /// Records a two-way sync's Redis sink held off: a change made in Redis
    /// was on its way into the log, after them.
    pub const SYNC_HELD_OFF: &str = "ferry_sync_held_off_total";
    /// Redis sink `WAIT`s, by outcome: `confirmed`, `short_retried`, `short_failed`.
    pub const REDIS_REPLICA_WAITS: &str = "ferry_redis_replica_waits_total";
    /// 1 while a Redis sink pauses because its target is nearly out of memory.
    pub const REDIS_MEMORY_PAUSED: &str = "ferry_redis_memory_paused";
    pub const REDIS_MEMORY_PAUSES: &str = "ferry_redis_memory_pauses_total";
    pub const SOURCE_ERRORS: &str = "ferry_source_errors_total";
    pub const KAFKA_LAG: &str = "ferry_kafka_consumer_lag";
    pub const UP: &str = "ferry_up";
}

/// Installs the Prometheus recorder for the whole process, with the
/// `# HELP` line of every metric.
pub fn install_recorder() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(
            Matcher::Full(names::SINK_WRITE_SECONDS.to_owned()),
            &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                10.0, 30.0,
            ],
        )?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    use names::*;
    describe_counter!(RECEIVED, "Messages read from the pipeline's source.");
    describe_counter!(
        CONFIRMED,
        "Messages acknowledged to the source after every sink they were routed to confirmed."
    );
    describe_counter!(
        FAILED,
        "Messages reported to the source as not delivered (read again later)."
    );
    describe_counter!(
        REJECTED,
        "Messages handed back to the source's own dead-lettering (AMQP reject)."
    );
    describe_counter!(
        DEAD_LETTERED,
        "Messages written to the dead-letter sink instead of their sink."
    );
    describe_counter!(
        DROPPED,
        "Messages dropped on purpose: filtered out, unmatched, or stopped by loop protection."
    );
    describe_gauge!(
        IN_FLIGHT,
        "Messages read from the source and not yet acknowledged to it."
    );
    describe_counter!(SINK_WRITTEN, "Messages the sink confirmed.");
    describe_counter!(
        SINK_RETRIES,
        "Batch writes that failed with a retryable error and were tried again."
    );
    describe_histogram!(
        SINK_WRITE_SECONDS,
        Unit::Seconds,
        "Time to write one batch, until the broker confirmed it."
    );
    describe_counter!(
        SINK_SKIPPED,
        "Messages a Redis sink with exactly_once skipped: it had written them before (a redelivery)."
    );
    describe_counter!(
        SYNC_HELD_OFF,
        "Records a two-way sync did not write into Redis: a newer change made in Redis was on its way into the log."
    );
    describe_counter!(
        SOURCE_ERRORS,
        "Retryable errors reading from the source (each followed by a retry)."
    );
    describe_gauge!(
        KAFKA_LAG,
        "Messages in the partition after this consumer group's committed offset."
    );
    describe_gauge!(
        UP,
        "1 when the pipeline part's last connect, read or write worked, 0 while it retries."
    );
}
