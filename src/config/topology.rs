//! How the pipelines of a config connect: which one writes where another
//! reads (chaining), and whether that makes a cycle. Pure; `ferry check`
//! prints it, so an operator sees what a config wires together before
//! running it.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::Config;
use crate::connectors::redis::config::WriteMode;
use crate::connectors::{SinkConfig, SourceConfig};

/// A place pipelines can meet: named exactly in the config (a sink whose
/// target is a template with placeholders meets nothing for sure).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Place {
    KafkaTopic {
        brokers: String,
        topic: String,
    },
    RedisStream {
        url: String,
        key: String,
    },
    RedisList {
        url: String,
        key: String,
    },
    AmqpQueue {
        url: String,
        queue: String,
    },
    /// The keys of one Redis database (`host:port/db`), which a keyspace
    /// source watches and a sink writing keys changes.
    RedisKeys {
        server: String,
    },
}

impl Place {
    fn describe(&self) -> String {
        match self {
            Place::KafkaTopic { topic, .. } => format!("kafka topic `{topic}`"),
            Place::RedisStream { key, .. } => format!("redis stream `{key}`"),
            Place::RedisList { key, .. } => format!("redis list `{key}`"),
            Place::AmqpQueue { queue, .. } => format!("amqp queue `{queue}`"),
            Place::RedisKeys { server } => format!("redis keys on {server}"),
        }
    }
}

/// Where a source reads.
pub fn inputs(source: &SourceConfig) -> Vec<Place> {
    match source {
        SourceConfig::Kafka(c) => c
            .topics
            .iter()
            .map(|t| Place::KafkaTopic {
                brokers: c.brokers.to_string(),
                topic: t.to_string(),
            })
            .collect(),
        SourceConfig::RedisStream(c) => c
            .streams
            .iter()
            .map(|s| Place::RedisStream {
                url: c.url.as_str().to_owned(),
                key: s.to_string(),
            })
            .collect(),
        SourceConfig::RedisList(c) => vec![Place::RedisList {
            url: c.url.as_str().to_owned(),
            key: c.list.to_string(),
        }],
        SourceConfig::Amqp(c) => vec![Place::AmqpQueue {
            url: c.url.as_str().to_owned(),
            queue: c.queue.to_string(),
        }],
        SourceConfig::RedisKeyspace(c) => vec![Place::RedisKeys {
            server: c.url.server(),
        }],
        SourceConfig::RedisPubSub(_) | SourceConfig::Generate(_) => Vec::new(),
    }
}

/// Where a sink writes, when every message goes to the same place.
pub fn output(sink: &SinkConfig) -> Option<Place> {
    match sink {
        SinkConfig::Kafka(c) => Some(Place::KafkaTopic {
            brokers: c.brokers.to_string(),
            topic: c.topic.to_string(),
        }),
        SinkConfig::Redis(c) => {
            let url = c.url.as_str().to_owned();
            match (c.write, c.key.literal()) {
                (WriteMode::Publish, _) => None,
                (WriteMode::Xadd, Some(key)) => Some(Place::RedisStream {
                    url,
                    key: key.to_owned(),
                }),
                (WriteMode::Rpush | WriteMode::Lpush, Some(key)) => Some(Place::RedisList {
                    url,
                    key: key.to_owned(),
                }),
                _ => Some(Place::RedisKeys {
                    server: c.url.server(),
                }),
            }
        }
        // The default exchange routes to the queue named by the key.
        SinkConfig::Amqp(c) if c.exchange.is_empty() => Some(Place::AmqpQueue {
            url: c.url.as_str().to_owned(),
            queue: c.routing_key.literal()?.to_owned(),
        }),
        SinkConfig::Amqp(_) => None,
    }
}

/// `from` writes where `to` reads.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub from: String,
    pub to: String,
    pub through: Place,
}

pub fn links(config: &Config) -> Vec<Link> {
    let mut links = Vec::new();
    for from in &config.pipelines {
        let outputs: Vec<Place> = from
            .sinks
            .iter()
            .filter_map(|s| output(&s.connector))
            .collect();
        for to in &config.pipelines {
            for place in inputs(&to.source) {
                if outputs.contains(&place) {
                    links.push(Link {
                        from: from.name.to_string(),
                        to: to.name.to_string(),
                        through: place,
                    });
                }
            }
        }
    }
    links
}

/// Every cycle of pipelines, each once, starting from its first pipeline
/// in config order: `[a, b]` means a feeds b and b feeds a.
pub fn cycles(config: &Config, links: &[Link]) -> Vec<Vec<String>> {
    let order: Vec<String> = config
        .pipelines
        .iter()
        .map(|p| p.name.to_string())
        .collect();
    let index = |name: &str| order.iter().position(|n| n == name).unwrap_or(usize::MAX);
    let mut next: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for l in links {
        let to = next.entry(index(&l.from)).or_default();
        if !to.contains(&index(&l.to)) {
            to.push(index(&l.to));
        }
    }
    let mut found = Vec::new();
    // Cycles whose smallest index is `start`, found by walking only through
    // larger indices: each cycle is reported once.
    for start in 0..order.len() {
        let mut path = vec![start];
        walk(start, &next, &mut path, &mut found);
    }
    found
        .into_iter()
        .map(|c: Vec<usize>| c.into_iter().map(|i| order[i].clone()).collect())
        .collect()
}

fn walk(
    start: usize,
    next: &BTreeMap<usize, Vec<usize>>,
    path: &mut Vec<usize>,
    found: &mut Vec<Vec<usize>>,
) {
    let Some(&here) = path.last() else { return };
    for &n in next.get(&here).into_iter().flatten() {
        if n == start {
            found.push(path.clone());
        } else if n > start && !path.contains(&n) {
            path.push(n);
            walk(start, next, path, found);
            path.pop();
        }
    }
}

/// What `ferry check` prints after "ok": each pipeline's source and sinks,
/// the chains between pipelines, and cycles with what stops them.
pub fn summary(config: &Config) -> String {
    let mut out = String::new();
    for p in &config.pipelines {
        let sinks: Vec<String> = p
            .sinks
            .iter()
            .map(|s| match &s.name {
                Some(n) => format!("{n} ({})", s.connector.describe()),
                None => s.connector.describe(),
            })
            .chain(dead_letter_of(p))
            .collect();
        let _ = writeln!(
            out,
            "  {}: {} -> {}",
            p.name,
            p.source.describe(),
            sinks.join(", ")
        );
    }
    let links = links(config);
    for l in &links {
        let _ = writeln!(
            out,
            "  chain: {} -> {} through {}",
            l.from,
            l.to,
            l.through.describe()
        );
    }
    for cycle in cycles(config, &links) {
        let mut names = cycle.clone();
        names.push(cycle[0].clone());
        let _ = writeln!(
            out,
            "  cycle: {}: ferry drops a message after {} hops{}",
            names.join(" -> "),
            config.max_hops.get(),
            if config.origin.is_some() {
                " and at once when it comes back to its `origin`"
            } else {
                "; set `origin` to drop echoes at their first return"
            }
        );
    }
    out
}

fn dead_letter_of(p: &super::PipelineConfig) -> Option<String> {
    p.dead_letter
        .as_ref()
        .map(|d| format!("dead letter: {}", d.connector.describe()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn parse(text: &str) -> Config {
        Config::parse(text, Path::new("t.toml"), &|_| None).expect("valid config")
    }

    const CHAIN: &str = r#"
[[pipeline]]
name = "payments"
source = { type = "kafka", brokers = "k:9092", topics = ["events"], group = "g" }
[[pipeline.sink]]
type = "redis"
url = "redis://r"
write = "xadd"
key = "validated"
[[pipeline.sink]]
type = "redis"
url = "redis://r"
write = "xadd"
key = "by-customer:{customer_id}"

[[pipeline]]
name = "inventory"
source = { type = "redis-stream", url = "redis://r", streams = ["validated"], group = "g" }
[[pipeline.sink]]
type = "kafka"
brokers = "k:9092"
topic = "inventory"

[[pipeline]]
name = "elsewhere"
source = { type = "redis-stream", url = "redis://other", streams = ["validated"], group = "g" }
[[pipeline.sink]]
type = "amqp"
url = "amqp://a"
routing_key = "q"
"#;

    #[test]
    fn a_sink_feeds_the_pipeline_that_reads_the_same_place_on_the_same_server() {
        let config = parse(CHAIN);
        let links = links(&config);
        assert_eq!(links.len(), 1, "{links:?}");
        assert_eq!(
            (links[0].from.as_str(), links[0].to.as_str()),
            ("payments", "inventory")
        );
        assert!(cycles(&config, &links).is_empty());
        let text = summary(&config);
        assert!(
            text.contains("chain: payments -> inventory through redis stream `validated`"),
            "{text}"
        );
        assert!(!text.contains("cycle"), "{text}");
    }

    #[test]
    fn pipelines_that_feed_each_other_are_reported_as_one_cycle_with_what_stops_it() {
        let text = CHAIN.replace(r#"topic = "inventory""#, r#"topic = "events""#);
        let config = parse(&text);
        let links = links(&config);
        assert_eq!(
            cycles(&config, &links),
            vec![vec!["payments".to_owned(), "inventory".to_owned()]]
        );
        let text = summary(&config);
        assert!(
            text.contains("cycle: payments -> inventory -> payments"),
            "{text}"
        );
        assert!(text.contains("set `origin`"), "{text}");
    }

    #[test]
    fn an_amqp_sink_on_the_default_exchange_feeds_the_queue_it_names() {
        let text = r#"
[[pipeline]]
name = "a"
source = { type = "generate", count = 1 }
[[pipeline.sink]]
type = "amqp"
url = "amqp://a"
routing_key = "work"

[[pipeline]]
name = "b"
source = { type = "amqp", url = "amqp://a", queue = "work" }
[[pipeline.sink]]
type = "redis"
url = "redis://r"
write = "set"
key = "k:{order_id}"
"#;
        let config = parse(text);
        let links = links(&config);
        assert_eq!(links.len(), 1);
        assert_eq!(links[0].through.describe(), "amqp queue `work`");
    }
}
