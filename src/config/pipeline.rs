//! `[[pipeline]]`: a source, steps, routes, sinks and a dead-letter sink.

use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::connectors::{SinkConfig, SourceConfig};
use crate::problem::{ConfigPath, Problem};
use crate::steps::{Jq, Step, StepConfig};
use crate::values::{
    Attempts, Buffer, Count, Hops, InFlight, InFlightKbytes, JqBudget, NonEmpty, Refusal,
    RetryDelay, Span, checked,
};

/// `[[pipeline]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub name: Name,
    pub source: SourceConfig,
    /// Filters and mappings, in order (`[[pipeline.step]]`).
    #[serde(rename = "step", default)]
    pub steps: Vec<StepConfig>,
    /// Which sinks a message goes to, by its content (`[[pipeline.route]]`).
    /// Without routes every message goes to every sink.
    #[serde(rename = "route", default)]
    pub routes: Vec<RouteConfig>,
    /// `all`: a message goes to every route that matches (fan-out);
    /// `first`: to the first one (switch).
    #[serde(default)]
    pub routing: RoutingMode,
    /// What happens to a message no route matches: `dead-letter` (the
    /// default: it is set aside, never lost by accident) or `drop` (on
    /// purpose, counted in the log).
    #[serde(default)]
    pub unmatched: Unmatched,
    #[serde(rename = "sink", default)]
    pub sinks: Vec<SinkSpec>,
    /// Where a message goes when it cannot be delivered (bad payload,
    /// missing key field, refused by the target, retries exhausted).
    /// Without one, such a message stops the pipeline: ferry never drops
    /// data silently.
    pub dead_letter: Option<SinkSpec>,
    /// Messages that may wait between two stages. Bounds memory: when the
    /// sinks are slower than the source, the source waits.
    #[serde(default = "default_buffer")]
    pub buffer: Count<Buffer>,
    /// This pipeline's origin (see the config's top-level `origin`).
    pub origin: Option<NonEmpty>,
    /// Overrides the top-level `max_hops`.
    pub max_hops: Option<Count<Hops>>,
    /// jq evaluation steps that the steps and route conditions may take
    /// for one message; a message that needs more (an expression that
    /// loops) is dead-lettered with the reason.
    #[serde(default = "default_jq_budget")]
    pub jq_budget: Count<JqBudget>,
}

fn default_jq_budget() -> Count<JqBudget> {
    Count::new(crate::steps::jq::DEFAULT_BUDGET as usize)
}

fn default_buffer() -> Count<Buffer> {
    Count::new(1024)
}

/// A sink with the settings every connector shares.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkSpec {
    /// How routes name this sink.
    pub name: Option<Name>,
    #[serde(default)]
    pub retry: RetryConfig,
    /// Batches' worth of messages (this times the sink's `batch_size`) the
    /// sink may have sent and not yet had confirmed, in as many writes as
    /// they arrive in: it keeps writing while earlier writes wait for
    /// their confirmations.
    #[serde(default = "default_in_flight")]
    pub in_flight: Count<InFlight>,
    /// Message kilobytes (payloads and keys) the sink may have in flight;
    /// bounds memory with large messages.
    #[serde(default = "default_in_flight_kbytes")]
    pub in_flight_kbytes: Count<InFlightKbytes>,
    /// The connector's own settings (`type = "..."` and the rest of the
    /// table; the config loader moves them here).
    pub connector: SinkConfig,
}

fn default_in_flight() -> Count<InFlight> {
    Count::new(DEFAULT_IN_FLIGHT)
}

fn default_in_flight_kbytes() -> Count<InFlightKbytes> {
    Count::new(DEFAULT_IN_FLIGHT_KBYTES)
}

/// Chosen by measurement (docs/performance.md, phase B).
const DEFAULT_IN_FLIGHT: usize = 4;
const DEFAULT_IN_FLIGHT_KBYTES: usize = 8 * 1024;

impl SinkSpec {
    /// A short id for metrics and health: the name, or `sinks[INDEX]`.
    pub fn id(&self, index: usize) -> String {
        match &self.name {
            Some(n) => n.to_string(),
            None => format!("sinks[{index}]"),
        }
    }

    /// How logs and dead-letter headers name the sink.
    pub fn label(&self, index: usize) -> String {
        match &self.name {
            Some(n) => format!("sink `{n}`"),
            None => format!("sink[{index}] {}", self.connector.describe()),
        }
    }
}

/// How a sink retries a write that failed for a reason that may pass.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// First delay; each next one doubles, with jitter.
    #[serde(default = "default_initial")]
    pub initial: Span<RetryDelay>,
    /// Longest delay.
    #[serde(default = "default_max")]
    pub max: Span<RetryDelay>,
    /// Attempts before the messages go to the dead-letter sink. Without a
    /// limit (the default) ferry keeps trying: an outage of the target is
    /// waited out, never turned into dead letters.
    pub attempts: Option<Count<Attempts>>,
}

fn default_initial() -> Span<RetryDelay> {
    Span::new(Duration::from_millis(100))
}

fn default_max() -> Span<RetryDelay> {
    Span::new(Duration::from_secs(5))
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            initial: default_initial(),
            max: default_max(),
            attempts: None,
        }
    }
}

/// `[[pipeline.route]]`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// A jq condition on the message (payload as `.`, and `$key`,
    /// `$headers`, ...).
    pub when: Option<Jq>,
    /// Matches the messages no other route matched.
    #[serde(default)]
    pub otherwise: bool,
    /// Names of the sinks this route writes to.
    pub sinks: Vec<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RoutingMode {
    #[default]
    All,
    First,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unmatched {
    #[default]
    DeadLetter,
    Drop,
}

/// A checked route: a condition and sink indices.
#[derive(Clone, Debug, PartialEq)]
pub struct Route {
    pub when: Condition,
    pub sinks: Vec<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Condition {
    When(Jq),
    Otherwise,
}

/// A name of letters, digits, `-` and `_` (pipelines, sinks).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Name(String);

impl Name {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(
            d,
            |s: String| {
                let ok = !s.is_empty()
                    && s.len() <= 100
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if ok {
                    Ok(Self(s))
                } else {
                    Err(Refusal::from(format!(
                        "invalid name \"{s}\": use letters, digits, '-' and '_' (e.g. \"orders-to-cache\")"
                    )))
                }
            },
            // The name as written, so that two bad names are not taken
            // for one name used twice.
            |s| Some(Self(s)),
        )
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl PipelineConfig {
    /// The checked steps (after [`PipelineConfig::check`] found nothing).
    pub fn compiled_steps(&self) -> Vec<Step> {
        let mut ignored = Vec::new();
        self.steps
            .iter()
            .filter_map(|s| s.step(&ConfigPath::root(), &mut ignored))
            .collect()
    }

    /// The checked routes, with sink names resolved to indices.
    pub fn compiled_routes(&self) -> Vec<Route> {
        self.routes
            .iter()
            .map(|r| Route {
                when: match &r.when {
                    Some(jq) => Condition::When(jq.clone()),
                    None => Condition::Otherwise,
                },
                sinks: r
                    .sinks
                    .iter()
                    .filter_map(|name| self.sink_index(name))
                    .collect(),
            })
            .collect()
    }

    fn sink_index(&self, name: &str) -> Option<usize> {
        self.sinks
            .iter()
            .position(|s| s.name.as_ref().is_some_and(|n| n.as_str() == name))
    }

    /// Rules across the pipeline's fields.
    pub fn check(&self, path: &ConfigPath, problems: &mut Vec<Problem>) {
        self.source.check(&path.key("source"), problems);
        for (i, step) in self.steps.iter().enumerate() {
            step.step(&path.key("step").index(i), problems);
        }
        if self.sinks.is_empty() {
            problems.push(
                Problem::at_path(
                    path.clone(),
                    format!("pipeline `{}` has no sink", self.name),
                )
                .with_help("add a `[[pipeline.sink]]` table after the pipeline"),
            );
        }
        let mut names = HashSet::new();
        for (j, sink) in self.sinks.iter().enumerate() {
            let sink_path = path.key("sink").index(j);
            sink.connector.check(&sink_path, &self.source, problems);
            if let Some(name) = &sink.name
                && !names.insert(name.as_str())
            {
                problems.push(
                    Problem::at_path(
                        sink_path.key("name"),
                        format!("sink name `{name}` is used twice"),
                    )
                    .with_help("routes name sinks; give each its own name"),
                );
            }
        }
        self.check_routes(path, problems);
        if let Some(dl) = &self.dead_letter {
            let path = path.key("dead_letter");
            dl.connector.check(&path, &self.source, problems);
            for (field, t) in dl
                .connector
                .templates()
                .into_iter()
                .filter(|(_, t)| t.uses_payload())
            {
                problems.push(
                    Problem::at_path(
                        path.key(field),
                        format!("the dead-letter `{field}` `{t}` reads the payload, which may be what is wrong"),
                    )
                    .with_help("build it from `{key}`, `{header.NAME}` or source coordinates such as `{topic}`"),
                );
            }
        }
    }

    fn check_routes(&self, path: &ConfigPath, problems: &mut Vec<Problem>) {
        if self.routes.is_empty() {
            return;
        }
        let mut used = HashSet::new();
        let mut otherwise = 0;
        for (i, route) in self.routes.iter().enumerate() {
            let route_path = path.key("route").index(i);
            match (&route.when, route.otherwise) {
                (Some(_), true) => problems.push(
                    Problem::at_path(
                        route_path.clone(),
                        "a route has both `when` and `otherwise`",
                    )
                    .with_help("`otherwise = true` is for the route taken when no `when` matched"),
                ),
                (None, false) => problems.push(
                    Problem::at_path(
                        route_path.clone(),
                        "a route needs `when` or `otherwise = true`",
                    )
                    .with_help("e.g. when = '.type == \"payment\"'"),
                ),
                (None, true) => otherwise += 1,
                (Some(_), false) => {}
            }
            if route.sinks.is_empty() {
                problems.push(
                    Problem::at_path(route_path.key("sinks"), "a route with no sinks")
                        .with_help("to drop messages on purpose, use a `filter` step or `unmatched = \"drop\"`"),
                );
            }
            for (k, name) in route.sinks.iter().enumerate() {
                if self.sink_index(name).is_none() {
                    let known: Vec<String> = self
                        .sinks
                        .iter()
                        .filter_map(|s| s.name.as_ref().map(|n| format!("`{n}`")))
                        .collect();
                    problems.push(
                        Problem::at_path(
                            route_path.key("sinks").index(k),
                            format!("no sink is named `{name}`"),
                        )
                        .with_help(if known.is_empty() {
                            "give sinks a `name` to route to them".to_owned()
                        } else {
                            format!("sinks are named {}", known.join(", "))
                        }),
                    );
                }
                used.insert(name.as_str());
            }
        }
        if otherwise > 1 {
            problems.push(
                Problem::at_path(
                    path.key("route"),
                    "more than one route has `otherwise = true`",
                )
                .with_help("keep one default route"),
            );
        }
        for (j, sink) in self.sinks.iter().enumerate() {
            match &sink.name {
                None => problems.push(
                    Problem::at_path(
                        path.key("sink").index(j),
                        "with routes, every sink needs a `name`",
                    )
                    .with_help("add e.g. name = \"orders-db\" and list it in a route's `sinks`"),
                ),
                Some(n) if !used.contains(n.as_str()) => problems.push(
                    Problem::at_path(
                        path.key("sink").index(j).key("name"),
                        format!("no route writes to sink `{n}`"),
                    )
                    .with_help("list it in a route's `sinks`, or remove it"),
                ),
                Some(_) => {}
            }
        }
    }
}
