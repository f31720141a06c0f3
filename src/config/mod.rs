//! The config file: parsed, then checked, then handed to the runtime.
//!
//! 1. `document.rs` parses the TOML and substitutes `${VAR}` in strings.
//! 2. serde turns it into [`Config`]; field types such as
//!    [`crate::values::Span`] and [`crate::template::Template`] refuse bad values
//!    while parsing, and `deny_unknown_fields` refuses misspelt keys.
//! 3. `Config::check` applies rules that involve several fields (unique
//!    names, templates that need what the source provides).
//!
//! Every problem is reported with file, line, column and a hint, all at once.

pub(crate) mod document;
pub(crate) mod error;
pub mod pipeline;
pub mod topology;

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

pub use error::ConfigError;
pub use pipeline::{Name, PipelineConfig, SinkSpec};

use crate::problem::{ConfigPath, Problem};
use crate::values::{Count, Hops, NonEmpty};
use document::{Document, Lift};

/// How many refused settings are taken out (each a parse of the file)
/// before `ferry check` stops looking for more.
const MAX_REPARSES: usize = 100;

/// Where connector tables (`{ type = "...", ... }`) sit in the file.
const LIFTS: &[Lift] = &[
    Lift {
        pattern: &["pipeline", "*", "source"],
        keep: &[],
        into: None,
    },
    Lift {
        pattern: &["pipeline", "*", "sink", "*"],
        keep: &["name", "retry", "in_flight", "in_flight_kbytes"],
        into: Some("connector"),
    },
    Lift {
        pattern: &["pipeline", "*", "dead_letter"],
        keep: &["name", "retry", "in_flight", "in_flight_kbytes"],
        into: Some("connector"),
    },
];

/// A whole config file: one or more pipelines.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Who this ferry deployment is, for two-way sync: every message ferry
    /// writes carries it (header `ferry.origin`), and a source drops
    /// messages that carry its own origin, so a change that went out does
    /// not come back in. Pipelines can override it.
    pub origin: Option<NonEmpty>,
    /// Messages that went through more ferry hops than this are dropped:
    /// a safety net against loops in a mis-wired topology.
    #[serde(default = "default_max_hops")]
    pub max_hops: Count<Hops>,
    #[serde(rename = "pipeline", default)]
    pub pipelines: Vec<PipelineConfig>,
}

fn default_max_hops() -> Count<Hops> {
    Count::new(8)
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::io(path.to_owned(), e))?;
        Self::parse(&text, path, &|name| std::env::var(name).ok())
    }

    /// Parses and checks config text; `env` looks up environment variables.
    pub fn parse(
        text: &str,
        file: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let error = |problems: Vec<Problem>| ConfigError {
            file: file.to_owned(),
            text: text.to_owned(),
            problems,
        };
        let mut doc = Document::parse(text, env).map_err(error)?;
        let mut problems = Vec::new();
        for lift in LIFTS {
            problems.extend(doc.lift_type_tags(lift));
        }
        if !problems.is_empty() {
            return Err(error(problems));
        }
        // Bad values are collected rather than ending the parse, so that
        // every one of them is reported (and the cross-field checks run).
        // A setting serde refuses (unknown, of the wrong type, missing) does
        // end it: it is reported, taken out, and the file parsed again.
        let mut refused_settings: Vec<Problem> = Vec::new();
        let mut removed: Vec<String> = Vec::new();
        // Tables that lost a setting this loop took out (or that miss one):
        // what is wrong there next follows from that.
        let mut emptied: Vec<std::ops::Range<usize>> = Vec::new();
        let mut problems: Vec<Problem> = Vec::new();
        let config = loop {
            let (config, values) = crate::values::collecting(|| doc.deserialize::<Config>());
            // Every round finds the bad values it reaches; some are only
            // reached before a removal, some only after.
            for v in values {
                if !problems.contains(&v) {
                    problems.push(v);
                }
            }
            let Err(p) = config else {
                break config.ok();
            };
            let missing = p
                .message
                .strip_prefix("missing field `")
                .and_then(|rest| rest.strip_suffix('`'));
            let follows = p.span.as_ref().is_some_and(|s| emptied.contains(s))
                || missing.is_some_and(|field| {
                    let meant = format!("did you mean `{field}`?");
                    removed.iter().any(|k| k == field)
                        || refused_settings
                            .iter()
                            .any(|q| q.help.as_ref() == Some(&meant))
                });
            if let (Some(_), Some(span)) = (missing, &p.span) {
                emptied.push(span.clone());
            }
            // What the error points at goes (for a missing setting: the
            // table that lacks it), and the parse goes on past it.
            let taken_out = p
                .span
                .as_ref()
                .filter(|_| removed.len() < MAX_REPARSES)
                .and_then(|s| doc.remove_at(s.start));
            if !follows {
                refused_settings.push(p);
            }
            match taken_out {
                Some(key) => removed.push(key),
                None => break None,
            }
        };
        // Cross-field checks only on the file as written.
        if let Some(config) = &config
            && removed.is_empty()
        {
            config.check(&mut problems);
        }
        problems.extend(refused_settings);
        match config {
            Some(config) if problems.is_empty() => return Ok(config),
            _ => {}
        }
        // A problem found while parsing comes first in the file's order.
        problems.sort_by_key(|p| p.span.as_ref().map_or(usize::MAX, |s| s.start));
        for p in &mut problems {
            if p.span.is_none() {
                p.span = p.path.as_ref().and_then(|path| doc.span_of(path));
            }
        }
        Err(error(problems))
    }

    /// Rules that involve more than one field.
    fn check(&self, problems: &mut Vec<Problem>) {
        if self.pipelines.is_empty() {
            problems.push(
                Problem::at_path(ConfigPath::root(), "the config defines no pipeline").with_help(
                    "add a `[[pipeline]]` table with a name, a source and a `[[pipeline.sink]]`",
                ),
            );
        }
        let mut names = HashSet::new();
        for (i, p) in self.pipelines.iter().enumerate() {
            let path = ConfigPath::root().key("pipeline").index(i);
            if !names.insert(p.name.as_str()) {
                problems.push(
                    Problem::at_path(
                        path.key("name"),
                        format!("pipeline name `{}` is used twice", p.name),
                    )
                    .with_help(
                        "give every pipeline its own name; offsets and metrics are kept by name",
                    ),
                );
            }
            p.check(&path, problems);
        }
        self.check_sync(problems);
    }

    /// Two-way syncs: the parts that take part need an origin, and a cycle
    /// through Redis keys needs `sync` on both its Redis ends, since a
    /// Redis value carries no header that could stop an echo.
    fn check_sync(&self, problems: &mut Vec<Problem>) {
        let pipeline_path = |i: usize| ConfigPath::root().key("pipeline").index(i);
        for (i, p) in self.pipelines.iter().enumerate() {
            let path = pipeline_path(i);
            let origin = p.origin.is_some() || self.origin.is_some();
            let need_origin = |path: ConfigPath| {
                Problem::at_path(path, "two-way `sync` needs an `origin`").with_help(
                    "name this deployment at the top of the file, e.g. origin = \"site-a\"; \
                     ferry marks what it writes with it and recognises its own changes coming back",
                )
            };
            if p.source.syncs() && !origin {
                problems.push(need_origin(path.key("source").key("sync")));
            }
            let mut sync_sinks = false;
            for (j, sink) in p.sinks.iter().enumerate() {
                if sink.connector.syncs() {
                    sync_sinks = true;
                    if !origin {
                        problems.push(need_origin(path.key("sink").index(j).key("sync")));
                    }
                }
            }
            if sync_sinks && p.source.skips_records_while_joining() {
                problems.push(
                    Problem::at_path(
                        path.key("source").key("start"),
                        "`start = \"latest\"` in a pipeline with a two-way `sync` sink",
                    )
                    .with_help(
                        "the sink must read the echoes of this deployment's changes: with latest, \
                         a change made while the group first joins can reach the log before the \
                         consumer's first position, and the sink holds that key's records off for \
                         30 s; leave `start` at its default (earliest) or use committed",
                    ),
                );
            }
            for (j, step) in p.steps.iter().enumerate() {
                if sync_sinks && step.key.is_some() {
                    problems.push(
                        Problem::at_path(
                            path.key("step").index(j).key("key"),
                            "a `key` step in a pipeline with a two-way `sync` sink",
                        )
                        .with_help(
                            "echoes of this deployment's changes skip the steps, so the sink would \
                             look for them under another key; set the key in the pipeline that \
                             sends the changes instead",
                        ),
                    );
                }
            }
        }
        let links = topology::links(self);
        for cycle in topology::cycles(self, &links) {
            for (k, from) in cycle.iter().enumerate() {
                let to = &cycle[(k + 1) % cycle.len()];
                for l in links.iter().filter(|l| &l.from == from && &l.to == to) {
                    let topology::Place::RedisKeys { server } = &l.through else {
                        continue;
                    };
                    let index =
                        |name: &str| self.pipelines.iter().position(|p| p.name.as_str() == name);
                    let (Some(fi), Some(ti)) = (index(from), index(to)) else {
                        continue;
                    };
                    let problem = |path: ConfigPath| {
                        Problem::at_path(
                            path,
                            format!(
                                "pipelines `{from}` and `{to}` sync redis keys on {server} both ways \
                                 without `sync = true`: ferry's own writes would come back as new \
                                 changes, forever"
                            ),
                        )
                        .with_help(
                            "add sync = true to the redis-keyspace source and to the redis sink \
                             (see docs/pipelines.md, two-way sync)",
                        )
                    };
                    if !self.pipelines[ti].source.syncs() {
                        problems.push(problem(pipeline_path(ti).key("source")));
                    }
                    for (j, sink) in self.pipelines[fi].sinks.iter().enumerate() {
                        if topology::output(&sink.connector).as_ref() == Some(&l.through)
                            && !sink.connector.syncs()
                        {
                            problems.push(problem(pipeline_path(fi).key("sink").index(j)));
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
