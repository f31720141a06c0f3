//! `ferry replay`: one pipeline of a config run again from a chosen start
//! to a chosen end, under a consumer group of its own, so that the live
//! pipeline's group is untouched.
//!
//! A replay is an ordinary pipeline run (`runtime::pipeline`) of
//! a changed copy of the pipeline: the source gets the replay's group, its
//! start (`start_time`, `start_offsets`, `start_id`) and `until = "end"`;
//! Redis sinks can be pointed at another server or database and key
//! prefix. Because the start is only used where the replay group has no
//! position yet, running the same command again continues where an
//! interrupted run stopped. With `exactly_once`, positions are kept under
//! a key of the replay's own, so nothing is written twice across runs and
//! the live pipeline's positions do not hide anything from the replay.

use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::{pick_pipeline, value};
use crate::config::{Config, PipelineConfig};
use crate::connectors::kafka::config::{PartitionOffsets, StartFrom};
use crate::connectors::redis::config::{EntryId, StreamStart};
use crate::connectors::{SinkConfig, SourceConfig};
use crate::observe::Health;
use crate::runtime::{self, RunOptions, Totals, router::Router};
use crate::values::Until;
use crate::values::time::Time;

/// Where a replay begins (where its group has no position yet).
#[derive(Clone, Debug, PartialEq)]
pub enum Start {
    /// The oldest record or entry.
    Earliest,
    /// The first record or entry at or after a time.
    Time(Time),
    /// Kafka: an offset per partition.
    Offsets(PartitionOffsets),
    /// A Redis stream: an entry id (inclusive).
    EntryId(EntryId),
}

impl Start {
    /// `earliest`, a time (RFC 3339 or epoch ms), `PARTITION=OFFSET,...`
    /// (`orders/0=120,orders/1=80`) or a stream entry id (`1714557600000-0`).
    pub fn parse(s: &str) -> Result<Start, String> {
        let s = s.trim();
        if s == "earliest" || s == "beginning" {
            return Ok(Start::Earliest);
        }
        if s.contains('=') {
            return offsets(s).map(Start::Offsets);
        }
        if is_entry_id(s) {
            return EntryId::parse(s).map(Start::EntryId);
        }
        Time::parse(s)
            .map(Start::Time)
            .map_err(|e| format!("{e}; or `earliest`, `PARTITION=OFFSET,...` or a stream entry id"))
    }
}

/// Where a replay ends.
#[derive(Clone, Debug, PartialEq)]
pub enum End {
    /// The end the topic or stream has when the replay starts.
    Now,
    /// Before the first record at or after a time.
    Time(Time),
    /// Kafka: before an offset per partition.
    Offsets(PartitionOffsets),
    /// A Redis stream: before an entry id.
    EntryId(EntryId),
}

impl End {
    pub fn parse(s: &str) -> Result<End, String> {
        let s = s.trim();
        if s == "now" || s == "end" {
            return Ok(End::Now);
        }
        if s.contains('=') {
            return offsets(s).map(End::Offsets);
        }
        if is_entry_id(s) {
            return EntryId::parse(s).map(End::EntryId);
        }
        Time::parse(s)
            .map(End::Time)
            .map_err(|e| format!("{e}; or `now`, `PARTITION=OFFSET,...` or a stream entry id"))
    }
}

fn is_entry_id(s: &str) -> bool {
    crate::position::stream_id(s).is_some()
}

/// `orders/0=120,orders/1=80` or `0=120,1=80`.
fn offsets(s: &str) -> Result<PartitionOffsets, String> {
    let pairs = s
        .split(',')
        .map(|pair| {
            let (k, v) = pair
                .split_once('=')
                .ok_or_else(|| format!("`{pair}`: write PARTITION=OFFSET, e.g. orders/0=120"))?;
            let offset = v
                .trim()
                .parse::<i64>()
                .map_err(|_| format!("`{pair}`: the offset is not a number"))?;
            Ok((k.trim().to_owned(), offset))
        })
        .collect::<Result<Vec<_>, String>>()?;
    PartitionOffsets::from_pairs(pairs)
}

/// What to replay, and where to.
#[derive(Clone, Debug)]
pub struct ReplayOptions {
    pub pipeline: Option<String>,
    pub from: Start,
    pub to: End,
    /// The replay's consumer group; by default `<group>-replay`. Use
    /// another one to start over.
    pub group: Option<String>,
    /// Put before every Redis sink's key template (`v2:` makes
    /// `order:{order_id}` into `v2:order:{order_id}`).
    pub key_prefix: Option<String>,
    /// Write every Redis sink into this server or database instead.
    pub redis_url: Option<String>,
}

/// The pipeline a replay runs: `pipeline` with the replay's source
/// position, group and targets.
pub fn plan(pipeline: &PipelineConfig, options: &ReplayOptions) -> Result<PipelineConfig, String> {
    let mut p = pipeline.clone();
    let group = |live: &str| {
        let name = options
            .group
            .clone()
            .unwrap_or_else(|| format!("{live}-replay"));
        if name == live {
            return Err(format!(
                "the replay group must not be the live pipeline's group `{live}`"
            ));
        }
        value(&name).map_err(|e| format!("--group: {e}"))
    };
    match &mut p.source {
        SourceConfig::Kafka(c) => {
            c.group = group(c.group.as_str())?;
            c.until = Until::End;
            c.start = StartFrom::Earliest;
            c.start_time = None;
            c.start_offsets = PartitionOffsets::default();
            match &options.from {
                Start::Earliest => {}
                Start::Time(t) => c.start_time = Some(*t),
                Start::Offsets(o) => c.start_offsets = o.clone(),
                Start::EntryId(id) => {
                    return Err(format!(
                        "--from {id} is a stream entry id; a kafka source starts at \
                         `earliest`, a time or PARTITION=OFFSET"
                    ));
                }
            }
            c.end_time = None;
            c.end_offsets = PartitionOffsets::default();
            match &options.to {
                End::Now => {}
                End::Time(t) => c.end_time = Some(*t),
                End::Offsets(o) => c.end_offsets = o.clone(),
                End::EntryId(id) => {
                    return Err(format!(
                        "--to {id} is a stream entry id; a kafka source ends at \
                         `now`, a time or PARTITION=OFFSET"
                    ));
                }
            }
        }
        SourceConfig::RedisStream(c) => {
            c.group = group(c.group.as_str())?;
            c.until = Until::End;
            c.create_group = true;
            c.start = StreamStart::Earliest;
            (c.start_id, c.start_time) = match &options.from {
                Start::Earliest => (None, None),
                Start::Time(t) => (None, Some(*t)),
                Start::EntryId(id) => (Some(*id), None),
                Start::Offsets(_) => {
                    return Err("a redis-stream source has no partitions; start at \
                                `earliest`, a time or an entry id"
                        .to_owned());
                }
            };
            (c.end_id, c.end_time) = match &options.to {
                End::Now => (None, None),
                End::Time(t) => (None, Some(*t)),
                End::EntryId(id) => (Some(*id), None),
                End::Offsets(_) => {
                    return Err("a redis-stream source has no partitions; end at \
                                `now`, a time or an entry id"
                        .to_owned());
                }
            };
        }
        other => {
            return Err(format!(
                "pipeline `{}` reads a {} source, which keeps no history to replay; \
                 replay needs a kafka or redis-stream source",
                pipeline.name,
                other.kind()
            ));
        }
    }
    let group_name = match &p.source {
        SourceConfig::Kafka(c) => c.group.to_string(),
        SourceConfig::RedisStream(c) => c.group.to_string(),
        _ => String::new(),
    };
    let sinks = p.sinks.iter_mut().map(|s| &mut s.connector);
    for sink in sinks {
        let SinkConfig::Redis(c) = sink else {
            continue;
        };
        if let Some(url) = &options.redis_url {
            c.url = value(url).map_err(|e| format!("--redis-url: {e}"))?;
        }
        if c.exactly_once {
            // Stable across runs (so a resumed replay skips what it wrote),
            // and not the live pipeline's (whose positions would hide
            // everything it already wrote).
            let base = c.positions_base(pipeline.name.as_str());
            c.positions_key = Some(value(&format!("{base}:replay:{group_name}"))?);
        }
        if let Some(prefix) = &options.key_prefix {
            c.key =
                value(&format!("{prefix}{}", c.key)).map_err(|e| format!("--key-prefix: {e}"))?;
        }
    }
    Ok(p)
}

/// How a replay ended.
pub struct Outcome {
    pub totals: Totals,
    pub elapsed: Duration,
    /// Stopped by a signal before the end: running it again continues.
    pub interrupted: bool,
}

/// Runs the replay until its end or a signal.
pub async fn run(
    config: &Config,
    options: &ReplayOptions,
    run_options: RunOptions,
) -> Result<Outcome, String> {
    let live = pick_pipeline(config, options.pipeline.as_deref())?;
    let pipeline = plan(live, options)?;
    tracing::info!(
        pipeline = %pipeline.name,
        source = %pipeline.source.describe(),
        "replaying"
    );
    let router = Router::new(config, &pipeline);
    let shutdown = CancellationToken::new();
    runtime::shutdown::cancel_on_signal(shutdown.clone())
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let started = Instant::now();
    let totals = runtime::pipeline::run_pipeline(
        pipeline,
        router,
        shutdown.clone(),
        RunOptions {
            health: Health::new(),
            ..run_options
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(Outcome {
        totals,
        elapsed: started.elapsed(),
        interrupted: shutdown.is_cancelled(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(source: &str, sink_extra: &str) -> Config {
        let text = format!(
            r#"
[[pipeline]]
name = "cache"
source = {source}
[[pipeline.sink]]
type = "redis"
url = "redis://127.0.0.1:6379/0"
write = "set"
key = "order:{{order_id}}"
{sink_extra}
"#
        );
        Config::parse(&text, Path::new("t.toml"), &|_| None).unwrap_or_else(|e| panic!("{e}"))
    }

    const KAFKA: &str =
        r#"{ type = "kafka", brokers = "b:9092", topics = ["orders"], group = "live" }"#;

    fn options(from: &str, to: &str) -> ReplayOptions {
        ReplayOptions {
            pipeline: None,
            from: Start::parse(from).unwrap(),
            to: End::parse(to).unwrap(),
            group: None,
            key_prefix: None,
            redis_url: None,
        }
    }

    #[test]
    fn starts_and_ends_are_read_from_the_command_line() {
        assert_eq!(Start::parse("earliest").unwrap(), Start::Earliest);
        assert_eq!(
            Start::parse("2024-05-01T10:00:00Z").unwrap(),
            Start::Time(Time(1_714_557_600_000))
        );
        assert_eq!(
            Start::parse("1714557600000-3").unwrap(),
            Start::EntryId(EntryId(1_714_557_600_000, 3))
        );
        let Start::Offsets(o) = Start::parse("orders/0=12, orders/1=7").unwrap() else {
            panic!("offsets")
        };
        assert_eq!(
            (o.get("orders", 0), o.get("orders", 1)),
            (Some(12), Some(7))
        );
        assert!(Start::parse("0=x").unwrap_err().contains("not a number"));
        assert!(Start::parse("soon").unwrap_err().contains("earliest"));
        assert_eq!(End::parse("now").unwrap(), End::Now);
        assert!(matches!(End::parse("1714557600000"), Ok(End::Time(_))));
    }

    #[test]
    fn a_kafka_replay_runs_under_its_own_group_from_its_start_to_its_end() {
        let c = config(KAFKA, "");
        let p = plan(&c.pipelines[0], &options("2024-05-01T10:00:00Z", "0=100")).unwrap();
        let SourceConfig::Kafka(k) = &p.source else {
            panic!("kafka")
        };
        assert_eq!(k.group.as_str(), "live-replay");
        assert_eq!(k.until, Until::End);
        assert_eq!(k.start_time, Some(Time(1_714_557_600_000)));
        assert_eq!(k.end_offsets.get("orders", 0), Some(100));

        let mut same = options("earliest", "now");
        same.group = Some("live".into());
        assert!(
            plan(&c.pipelines[0], &same)
                .unwrap_err()
                .contains("live pipeline's group")
        );
        assert!(
            plan(&c.pipelines[0], &options("1700-0", "now"))
                .unwrap_err()
                .contains("stream entry id")
        );
    }

    #[test]
    fn redis_sinks_can_move_to_a_new_prefix_and_server_with_positions_of_their_own() {
        let c = config(KAFKA, "exactly_once = true");
        let mut o = options("earliest", "now");
        o.key_prefix = Some("v2:".into());
        o.redis_url = Some("redis://127.0.0.1:6380/3".into());
        let p = plan(&c.pipelines[0], &o).unwrap();
        let SinkConfig::Redis(r) = &p.sinks[0].connector else {
            panic!("redis")
        };
        assert_eq!(r.key.as_str(), "v2:order:{order_id}");
        assert_eq!(r.url.as_str(), "redis://127.0.0.1:6380/3");
        assert_eq!(
            r.positions_key.as_ref().unwrap().as_str(),
            "ferry:positions:cache:order:{order_id}:replay:live-replay"
        );
        o.redis_url = Some("not a url".into());
        assert!(
            plan(&c.pipelines[0], &o)
                .unwrap_err()
                .contains("--redis-url")
        );
    }

    #[test]
    fn a_stream_replay_starts_its_group_at_an_id_or_a_time() {
        let c = config(
            r#"{ type = "redis-stream", url = "redis://x", streams = ["s"], group = "live" }"#,
            "",
        );
        let p = plan(&c.pipelines[0], &options("1700-5", "now")).unwrap();
        let SourceConfig::RedisStream(s) = &p.source else {
            panic!("stream")
        };
        assert_eq!(s.group_start(), "1700-4");
        assert_eq!(s.until, Until::End);
        let p = plan(&c.pipelines[0], &options("earliest", "1714557600000")).unwrap();
        let SourceConfig::RedisStream(s) = &p.source else {
            panic!("stream")
        };
        assert_eq!(s.end_before(), Some(EntryId(1714557600000, 0)));
        let p = plan(&c.pipelines[0], &options("earliest", "1700-5")).unwrap();
        let SourceConfig::RedisStream(s) = &p.source else {
            panic!("stream")
        };
        assert_eq!(s.end_before(), Some(EntryId(1700, 5)));
        assert!(
            plan(&c.pipelines[0], &options("earliest", "0=5"))
                .unwrap_err()
                .contains("no partitions")
        );
    }

    #[test]
    fn sources_without_history_cannot_be_replayed() {
        let c = config(r#"{ type = "generate" }"#, "");
        let e = plan(&c.pipelines[0], &options("earliest", "now")).unwrap_err();
        assert!(e.contains("keeps no history"), "{e}");
    }
}
