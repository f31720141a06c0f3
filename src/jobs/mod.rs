//! Jobs around pipelines, one file per command: `ferry replay` (a pipeline
//! run again from a chosen start, under its own group), `ferry reconcile`
//! (two record sets compared by key), `ferry tap` (what flows, without
//! acknowledging anything) and `ferry test` (a config's steps and routes
//! checked against expectations, without brokers).
//!
//! They reuse the runtime and the connectors: a replay is a pipeline run
//! with another start, end and group; a repair writes through a normal
//! sink; a test runs the pipeline's `runtime::router::Router`.

pub(crate) mod diff;
pub mod read;
pub mod reconcile;
pub mod repair;
pub mod replay;
pub(crate) mod spill;
pub mod tap;
pub mod unit_tests;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use crate::config::{Config, PipelineConfig};

/// A checked config value (`NonEmpty`, `RedisUrl`, `Template`, ...) made
/// from a command-line string, through the same checks a config file gets.
pub fn value<T: DeserializeOwned>(s: &str) -> Result<T, String> {
    // Through TOML, as a config file's value, so that values which keep
    // their position in the file (see `values::checked`) parse too.
    #[derive(Deserialize)]
    struct Value<T> {
        v: T,
    }
    let text = format!("v = {}", toml::Value::from(s));
    toml::from_str::<Value<T>>(&text)
        .map(|w| w.v)
        .map_err(|e| e.message().to_owned())
}

/// The pipeline of `config` named `name`, or its only pipeline.
pub fn pick_pipeline<'a>(
    config: &'a Config,
    name: Option<&str>,
) -> Result<&'a PipelineConfig, String> {
    let names = || {
        config
            .pipelines
            .iter()
            .map(|p| format!("`{}`", p.name))
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(name) => config
            .pipelines
            .iter()
            .find(|p| p.name.as_str() == name)
            .ok_or_else(|| format!("no pipeline `{name}` in the config (it has {})", names())),
        None if config.pipelines.len() == 1 => Ok(&config.pipelines[0]),
        None => Err(format!(
            "the config has several pipelines ({}); name one with --pipeline",
            names()
        )),
    }
}
