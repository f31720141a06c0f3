//! What each part of each pipeline is doing right now, for `/ready` and the
//! `ferry_up` gauge.
//!
//! Every source, sink and dead-letter sink gets a [`Probe`]. The runtime and
//! the connectors' reconnect loops tell it what they see: opened, a
//! retryable error, a successful read or write. Health is therefore what
//! ferry last observed, not a ping: a sink whose broker went away while no
//! message was flowing stays `up` until its next write fails.

use std::fmt::Display;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde::Serialize;

use super::names;

/// The state of one part of a pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum State {
    /// Not opened yet (the broker may not be reachable).
    Starting = 0,
    /// Opened, and the last read or write worked.
    Up = 1,
    /// The last attempt failed with an error that retrying can fix; ferry
    /// is reconnecting or retrying.
    Retrying = 2,
    /// The pipeline ended normally (a finite source was exhausted, or
    /// ferry is shutting down).
    Finished = 3,
    /// The pipeline stopped on an error that retrying cannot fix.
    Failed = 4,
}

impl State {
    fn from_u8(v: u8) -> State {
        match v {
            0 => State::Starting,
            1 => State::Up,
            2 => State::Retrying,
            3 => State::Finished,
            _ => State::Failed,
        }
    }

    /// Whether a pipeline part in this state lets ferry count as ready.
    pub fn is_ready(self) -> bool {
        matches!(self, State::Up | State::Finished)
    }
}

#[derive(Debug)]
struct Inner {
    pipeline: String,
    component: String,
    state: AtomicU8,
    /// Opened, but not seen working yet: [`Probe::opened`] leaves it
    /// `starting`.
    unconfirmed: AtomicBool,
    /// The error behind `Retrying`/`Failed`, and when the state began.
    detail: Mutex<(Option<String>, Instant)>,
    up: metrics::Gauge,
}

/// The health handle of one source or sink. Cheap to clone and to call
/// on every message: it only takes a lock when the state changes.
#[derive(Clone, Debug)]
pub struct Probe(Arc<Inner>);

impl Probe {
    /// A probe that is not on any [`Health`] board (for tests and tools).
    pub fn detached(pipeline: &str, component: &str) -> Probe {
        Probe(Arc::new(Inner {
            pipeline: pipeline.to_owned(),
            component: component.to_owned(),
            state: AtomicU8::new(State::Starting as u8),
            unconfirmed: AtomicBool::new(false),
            detail: Mutex::new((None, Instant::now())),
            up: metrics::gauge!(names::UP, "pipeline" => pipeline.to_owned(),
                "component" => component.to_owned()),
        }))
    }

    /// The `sink` label of a sink's metrics: its name or `sinks[INDEX]`
    /// (`dead_letter` for the dead-letter sink), as the probe's component
    /// without its `sink:` prefix.
    pub fn sink_id(&self) -> &str {
        let component = self.0.component.as_str();
        component.strip_prefix("sink:").unwrap_or(component)
    }

    pub fn state(&self) -> State {
        State::from_u8(self.0.state.load(Ordering::Relaxed))
    }

    /// An attempt to open the part begins: `Starting` again (keeping the
    /// last error for the report), so that [`Probe::opened`] can tell
    /// whether the connector reported a problem while opening.
    pub fn attempt(&self) {
        let detail = crate::sync::lock(&self.0.detail).0.clone();
        self.set(State::Starting, detail);
    }

    /// The part opened: up, unless the connector reported while opening
    /// that its broker is not reachable yet (it opens lazily and retries).
    pub fn opened(&self) {
        if self.state() == State::Starting && !self.0.unconfirmed.load(Ordering::Relaxed) {
            self.set(State::Up, None);
        }
    }

    /// Said while opening by a connector whose client connects in the
    /// background (Kafka): the part stays `starting` after it opened, until
    /// a read, a write or the connector's own report says it works.
    pub fn unconfirmed(&self) {
        self.0.unconfirmed.store(true, Ordering::Relaxed);
    }

    /// The last read or write worked.
    pub fn up(&self) {
        self.0.unconfirmed.store(false, Ordering::Relaxed);
        if self.state() != State::Up {
            self.set(State::Up, None);
        }
    }

    /// An attempt failed; ferry retries.
    pub fn retrying(&self, error: &dyn Display) {
        self.set(State::Retrying, Some(error.to_string()));
    }

    pub fn finished(&self) {
        if self.state() != State::Failed {
            self.set(State::Finished, None);
        }
    }

    pub fn failed(&self, error: &dyn Display) {
        self.set(State::Failed, Some(error.to_string()));
    }

    fn set(&self, state: State, detail: Option<String>) {
        let mut guard = crate::sync::lock(&self.0.detail);
        let previous = State::from_u8(self.0.state.swap(state as u8, Ordering::Relaxed));
        if previous != state {
            guard.1 = Instant::now();
        }
        guard.0 = detail;
        self.0.up.set(if state.is_ready() { 1.0 } else { 0.0 });
    }

    fn report(&self) -> ComponentReport {
        let guard = crate::sync::lock(&self.0.detail);
        ComponentReport {
            pipeline: self.0.pipeline.clone(),
            component: self.0.component.clone(),
            state: self.state(),
            error: guard.0.clone(),
            for_seconds: guard.1.elapsed().as_secs(),
        }
    }
}

/// Every probe of a run.
#[derive(Debug, Default)]
pub struct Health {
    probes: Mutex<Vec<Probe>>,
}

/// One line of [`Report`].
#[derive(Debug, Clone, Serialize)]
pub struct ComponentReport {
    pub pipeline: String,
    pub component: String,
    pub state: State,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// How long the part has been in this state.
    pub for_seconds: u64,
}

/// What `/ready` and `/health` answer.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Every part of every pipeline is up (or finished normally).
    pub ready: bool,
    pub components: Vec<ComponentReport>,
}

impl Health {
    pub fn new() -> Arc<Health> {
        Arc::new(Health::default())
    }

    /// Registers a part of a pipeline, in state `Starting`.
    pub fn probe(&self, pipeline: &str, component: &str) -> Probe {
        let probe = Probe::detached(pipeline, component);
        probe.0.up.set(0.0);
        crate::sync::lock(&self.probes).push(probe.clone());
        probe
    }

    pub fn report(&self) -> Report {
        let components: Vec<ComponentReport> = crate::sync::lock(&self.probes)
            .iter()
            .map(Probe::report)
            .collect();
        Report {
            // Before any pipeline registered its parts, nothing is running.
            ready: !components.is_empty() && components.iter().all(|c| c.state.is_ready()),
            components,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_part_is_up_or_finished() {
        let health = Health::new();
        assert!(!health.report().ready, "nothing registered yet");
        let source = health.probe("orders", "source");
        let sink = health.probe("orders", "sink `db`");
        assert!(!health.report().ready);
        source.up();
        sink.up();
        assert!(health.report().ready);
        sink.retrying(&"connection refused");
        let report = health.report();
        assert!(!report.ready);
        assert_eq!(report.components[1].state, State::Retrying);
        assert_eq!(
            report.components[1].error.as_deref(),
            Some("connection refused")
        );
        sink.up();
        source.finished();
        let report = health.report();
        assert!(report.ready);
        assert_eq!(report.components[1].error, None);
    }

    #[test]
    fn a_part_that_opened_lazily_without_its_broker_is_not_up() {
        let health = Health::new();
        let sink = health.probe("orders", "sink");
        sink.attempt();
        sink.retrying(&"connection refused"); // reported by the connector
        sink.opened();
        assert_eq!(sink.state(), State::Retrying);
        sink.up(); // its first write worked
        assert!(health.report().ready);

        let other = health.probe("orders", "other");
        other.attempt();
        other.opened();
        assert_eq!(other.state(), State::Up);
    }

    #[test]
    fn a_failure_is_not_overwritten_by_finishing() {
        let health = Health::new();
        let sink = health.probe("orders", "sink");
        sink.failed(&"WRONGTYPE");
        sink.finished();
        assert_eq!(sink.state(), State::Failed);
        assert!(!health.report().ready);
    }
}
