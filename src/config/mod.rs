//! The config file: parsed, then checked, then handed to the runtime.
//!
//! 1. [`document`] parses the TOML and substitutes `${VAR}` in strings.
//! 2. serde turns it into [`Config`]; field types such as
//!    [`values::Span`] and [`crate::template::Template`] refuse bad values
//!    while parsing, and `deny_unknown_fields` refuses misspelt keys.
//! 3. [`Config::check`] applies rules that involve several fields (unique
//!    names, templates that need what the source provides).
//!
//! Every problem is reported with file, line, column and a hint, all at once.

pub mod document;
pub mod error;
pub mod values;

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Deserializer, de};

pub use document::ConfigPath;
pub use error::{ConfigError, Problem};

use crate::connectors::{SinkConfig, SourceConfig};
use document::Document;
use values::Count;

/// Where connector tables (`{ type = "...", ... }`) sit in the file.
const TAGGED: &[&[&str]] = &[
    &["pipeline", "*", "source"],
    &["pipeline", "*", "sink", "*"],
    &["pipeline", "*", "dead_letter"],
];

/// A whole config file: one or more pipelines.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(rename = "pipeline", default)]
    pub pipelines: Vec<PipelineConfig>,
}

/// `[[pipeline]]`: one source, its sinks and where rejected messages go.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub name: PipelineName,
    pub source: SourceConfig,
    /// Every message goes to every sink (`[[pipeline.sink]]`).
    #[serde(rename = "sink", default)]
    pub sinks: Vec<SinkConfig>,
    /// Where a message goes when a sink cannot take it (bad payload,
    /// missing key field, refused by the target). Without one, such a
    /// message stops the pipeline: ferry never drops data silently.
    pub dead_letter: Option<SinkConfig>,
    /// Messages that may wait between two stages. Bounds memory: when the
    /// sinks are slower than the source, the source waits.
    #[serde(default = "default_buffer")]
    pub buffer: Count,
}

fn default_buffer() -> Count {
    Count::new(1024)
}

/// A pipeline name: letters, digits, `-` and `_`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineName(String);

impl PipelineName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for PipelineName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let ok = !s.is_empty()
            && s.len() <= 100
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if ok {
            Ok(Self(s))
        } else {
            Err(de::Error::custom(format!(
                "invalid pipeline name \"{s}\": use letters, digits, '-' and '_' (e.g. \"orders-to-cache\")"
            )))
        }
    }
}

impl fmt::Display for PipelineName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
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
        for pattern in TAGGED {
            problems.extend(doc.lift_type_tags(pattern));
        }
        if !problems.is_empty() {
            return Err(error(problems));
        }
        let config: Config = doc.deserialize().map_err(|p| error(vec![p]))?;
        let mut problems = Vec::new();
        config.check(&mut problems);
        if problems.is_empty() {
            return Ok(config);
        }
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
            p.source.check(&path.key("source"), problems);
            if p.sinks.is_empty() {
                problems.push(
                    Problem::at_path(path.clone(), format!("pipeline `{}` has no sink", p.name))
                        .with_help("add a `[[pipeline.sink]]` table after the pipeline"),
                );
            }
            for (j, sink) in p.sinks.iter().enumerate() {
                sink.check(&path.key("sink").index(j), &p.source, problems);
            }
            if let Some(dl) = &p.dead_letter {
                let path = path.key("dead_letter");
                dl.check(&path, &p.source, problems);
                for (field, t) in dl.templates().into_iter().filter(|(_, t)| t.uses_payload()) {
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
    }
}

#[cfg(test)]
mod tests;
