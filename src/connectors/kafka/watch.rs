//! What librdkafka says about the brokers, turned into log lines a person
//! can read and into the state of a part's health probe.
//!
//! librdkafka reports a broker that is away several times a second, for as
//! long as it is away; ferry logs the first line of each kind and then one
//! line per [`REPEAT_WINDOW`] saying how many were held back. A connection
//! failure marks the probe `retrying` at once (not after the first
//! metadata request times out); librdkafka's statistics mark it `up` again
//! once a broker is connected and no subscribed topic is missing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use tracing::{debug, error, info, warn};

use super::errors::{CONNECTION_FAILED, LoginRefusal};
use crate::observe::{Probe, State};

/// How long repeats of a log line are held back before they are counted.
pub(crate) const REPEAT_WINDOW: Duration = Duration::from_secs(30);

/// Health and logging for one librdkafka client of a pipeline.
pub(crate) struct BrokerWatch {
    pipeline: String,
    probe: Probe,
    repeats: Mutex<Repeats>,
    /// A subscribed topic does not exist (yet): not ready, even with the
    /// brokers up.
    topic_missing: AtomicBool,
    /// The brokers refused the login (until one takes it).
    refusal: Arc<LoginRefusal>,
}

impl BrokerWatch {
    pub(crate) fn new(pipeline: &str, probe: Probe) -> Self {
        Self {
            pipeline: pipeline.to_owned(),
            probe,
            repeats: Mutex::new(Repeats::new(REPEAT_WINDOW)),
            topic_missing: AtomicBool::new(false),
            refusal: Arc::default(),
        }
    }

    /// Why the brokers refused the login, for the requests that failed.
    pub(crate) fn refusal(&self) -> &Arc<LoginRefusal> {
        &self.refusal
    }

    /// A librdkafka log line.
    pub(crate) fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        let serious = matches!(
            level,
            RDKafkaLogLevel::Emerg
                | RDKafkaLogLevel::Alert
                | RDKafkaLogLevel::Critical
                | RDKafkaLogLevel::Error
                | RDKafkaLogLevel::Warning
        );
        if facility == CONNECTION_FAILED && serious {
            self.probe.retrying(&format!("librdkafka: {message}"));
        }
        self.refusal.saw(facility, message);
        let Some(held) = self.admit(&format!("{facility} {message}")) else {
            return;
        };
        let pipeline = self.pipeline.as_str();
        let line = with_held(format!("librdkafka: {message}"), held);
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => error!(pipeline, facility, "{line}"),
            RDKafkaLogLevel::Warning => warn!(pipeline, facility, "{line}"),
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => info!(pipeline, facility, "{line}"),
            RDKafkaLogLevel::Debug => debug!(pipeline, facility, "{line}"),
        }
    }

    /// An error librdkafka reports to the client (`what`: "consumer" or
    /// "producer").
    pub(crate) fn error(&self, what: &str, error: &KafkaError, reason: &str) {
        if error.rdkafka_error_code() == Some(RDKafkaErrorCode::PartitionEOF) {
            debug!(pipeline = %self.pipeline, "{reason}");
            return;
        }
        if is_connection_error(error) {
            self.probe.retrying(&format!("{error}: {reason}"));
        }
        self.warn(&format!("kafka {what}: {error}: {reason}"));
    }

    /// A warning that may repeat many times a second.
    pub(crate) fn warn(&self, line: &str) {
        if let Some(held) = self.admit(line) {
            warn!(pipeline = %self.pipeline, "{}", with_held(line.to_owned(), held));
        }
    }

    /// librdkafka's statistics say whether a broker is connected.
    pub(crate) fn broker_seen(&self, up: bool) {
        if up {
            self.refusal.clear();
        }
        let waiting = matches!(self.probe.state(), State::Starting | State::Retrying);
        if up && waiting && !self.topic_missing() {
            self.probe.up();
        }
    }

    /// A subscribed topic is missing (`Some(error)`) or was found (`None`).
    pub(crate) fn topic_missing_because(&self, error: Option<&dyn std::fmt::Display>) {
        self.topic_missing.store(error.is_some(), Ordering::Relaxed);
        if let Some(e) = error {
            self.probe.retrying(e);
        }
    }

    fn topic_missing(&self) -> bool {
        self.topic_missing.load(Ordering::Relaxed)
    }

    fn admit(&self, line: &str) -> Option<u64> {
        crate::sync::lock(&self.repeats).admit(&shape(line), Instant::now())
    }
}

/// Whether a librdkafka error means the brokers cannot be reached (as
/// opposed to, say, a failed commit or an unknown topic).
pub(crate) fn is_connection_error(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::AllBrokersDown
                | RDKafkaErrorCode::BrokerTransportFailure
                | RDKafkaErrorCode::Resolve
                | RDKafkaErrorCode::BrokerNotAvailable
        )
    )
}

/// Whether a consumer error says a subscribed topic does not exist.
pub(crate) fn is_missing_topic(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition | RDKafkaErrorCode::UnknownTopic)
    )
}

fn with_held(line: String, held: u64) -> String {
    if held == 0 {
        line
    } else {
        format!(
            "{line} ({held} more like it in the last {}s, not shown)",
            REPEAT_WINDOW.as_secs()
        )
    }
}

/// A log line with its numbers (ports, durations, counts) blanked, so that
/// repeats of one event have one shape.
fn shape(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut in_number = false;
    for c in line.chars() {
        if c.is_ascii_digit() {
            if !in_number {
                out.push('#');
            }
            in_number = true;
        } else {
            out.push(c);
            in_number = false;
        }
    }
    out
}

/// Which lines to let through: the first of a shape, then one per window
/// with the count of those held back meanwhile.
#[derive(Debug)]
pub(crate) struct Repeats {
    window: Duration,
    /// Per shape: when the last line was let through, and how many were
    /// held back since.
    seen: HashMap<String, (Instant, u64)>,
}

/// Shapes remembered at most (librdkafka's lines are of a few dozen kinds;
/// this only bounds memory against surprises).
const MAX_SHAPES: usize = 1000;

impl Repeats {
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            window,
            seen: HashMap::new(),
        }
    }

    /// `Some(held)` when a line of `shape` is to be logged now (`held`:
    /// how many were held back before it); `None` to hold it back.
    pub(crate) fn admit(&mut self, shape: &str, now: Instant) -> Option<u64> {
        if let Some((since, held)) = self.seen.get_mut(shape) {
            if now.duration_since(*since) < self.window {
                *held += 1;
                return None;
            }
            let n = *held;
            *since = now;
            *held = 0;
            return Some(n);
        }
        if self.seen.len() >= MAX_SHAPES {
            self.seen.clear();
        }
        self.seen.insert(shape.to_owned(), (now, 0));
        Some(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_of_a_line_are_held_back_and_counted_once_per_window() {
        let mut r = Repeats::new(Duration::from_secs(30));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_millis(s);
        let refused = shape(
            "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 0ms in state CONNECT)",
        );
        let again = shape(
            "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused (after 12ms in state CONNECT)",
        );
        assert_eq!(refused, again);
        assert_eq!(r.admit(&refused, at(0)), Some(0));
        // Ten a second for half a minute: none shown...
        for i in 1..300 {
            assert_eq!(r.admit(&refused, at(i * 100)), None);
        }
        // ...then one line that says how many were not.
        assert_eq!(r.admit(&refused, at(30_000)), Some(299));
        assert_eq!(r.admit(&refused, at(30_100)), None);
        // Another kind of line is not held back by the first.
        assert_eq!(r.admit(&shape("1/1 brokers are down"), at(30_200)), Some(0));
    }

    #[test]
    fn a_held_back_count_is_said_with_the_line() {
        assert_eq!(with_held("x".into(), 0), "x");
        assert_eq!(
            with_held("x".into(), 299),
            "x (299 more like it in the last 30s, not shown)"
        );
    }

    #[test]
    fn a_connection_failure_marks_the_probe_retrying_at_once_and_stats_bring_it_back() {
        let probe = Probe::detached("p", "source");
        let watch = BrokerWatch::new("p", probe.clone());
        watch.log(
            RDKafkaLogLevel::Error,
            "FAIL",
            "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused",
        );
        assert_eq!(probe.state(), State::Retrying);
        watch.broker_seen(true);
        assert_eq!(probe.state(), State::Up);
        // A missing topic keeps it not ready while the brokers are up.
        watch.topic_missing_because(Some(&"topic `orders` does not exist"));
        watch.broker_seen(true);
        assert_eq!(probe.state(), State::Retrying);
        watch.topic_missing_because(None);
        watch.broker_seen(true);
        assert_eq!(probe.state(), State::Up);
    }
}
