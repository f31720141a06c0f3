//! `ferry check --connect`: a dry run against the real systems.
//!
//! For every source, sink and dead-letter sink, connect with the configured
//! credentials and TLS settings and check what the pipeline will need:
//! topics and their partitions, consumer-group access, key types, queues
//! and exchanges, the Redis commands the ACL user may run, keyspace
//! notifications. Nothing is consumed and nothing is written: Redis
//! commands are only queued in a `MULTI` that is discarded (Redis checks
//! ACLs when queueing), RabbitMQ declarations are passive, Kafka is asked
//! for metadata and committed offsets only.
//!
//! Each part gets a verdict; each failure says what to change.

mod amqp;
mod kafka;
mod redis;

use std::fmt::Write as _;
use std::time::Duration;

use crate::config::Config;
use crate::connectors::diagnose;
use crate::connectors::{SinkConfig, SourceConfig};

/// How long one part may take before it is reported as unreachable.
const PART_TIMEOUT: Duration = Duration::from_secs(30);

/// One thing checked about a part.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub ok: bool,
    pub what: String,
    /// For a failure: what to change.
    pub fix: Option<String>,
}

impl Finding {
    pub fn ok(what: impl Into<String>) -> Self {
        Self {
            ok: true,
            what: what.into(),
            fix: None,
        }
    }

    pub fn fail(what: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            ok: false,
            what: what.into(),
            fix: Some(fix.into()),
        }
    }

    /// A failure to connect or to run a request: what the library said,
    /// and the fix [`diagnose::explain`] recognises in it.
    pub fn error(what: &str, error: &str) -> Self {
        let fix = diagnose::explain(error).map_or_else(
            || "check that the server is up and reachable at this address".to_owned(),
            |d| d.fix.to_owned(),
        );
        Self::fail(format!("{what}: {error}"), fix)
    }
}

/// The verdict on one source or sink.
#[derive(Clone, Debug)]
pub struct PartReport {
    /// `pipeline `orders`, source (kafka topics `orders` ...)`.
    pub part: String,
    /// Where it connects, secrets masked.
    pub target: String,
    pub findings: Vec<Finding>,
}

impl PartReport {
    pub fn ok(&self) -> bool {
        self.findings.iter().all(|f| f.ok)
    }
}

/// Checks every part of every pipeline, one after the other.
pub async fn run(config: &Config) -> Vec<PartReport> {
    let mut reports = Vec::new();
    for p in &config.pipelines {
        let name = &p.name;
        let (target, findings) = within(source(&p.source)).await;
        reports.push(PartReport {
            part: format!("pipeline `{name}` source ({})", p.source.describe()),
            target,
            findings,
        });
        let sinks = p.sinks.iter().map(|s| ("sink", s));
        for (role, spec) in sinks.chain(p.dead_letter.iter().map(|d| ("dead-letter sink", d))) {
            let label = match &spec.name {
                Some(n) => format!("{role} `{n}`"),
                None => role.to_owned(),
            };
            let (target, findings) = within(sink(&spec.connector)).await;
            reports.push(PartReport {
                part: format!("pipeline `{name}` {label} ({})", spec.connector.describe()),
                target,
                findings,
            });
        }
    }
    reports
}

async fn within(check: impl Future<Output = (String, Vec<Finding>)>) -> (String, Vec<Finding>) {
    match tokio::time::timeout(PART_TIMEOUT, check).await {
        Ok(r) => r,
        Err(_) => (
            String::new(),
            vec![Finding::fail(
                format!("no answer within {PART_TIMEOUT:?}"),
                "check that the server is up and reachable, and that TLS is used on both \
                 sides or on neither",
            )],
        ),
    }
}

async fn source(config: &SourceConfig) -> (String, Vec<Finding>) {
    match config {
        SourceConfig::Kafka(c) => kafka::source(c).await,
        SourceConfig::RedisStream(c) => redis::stream_source(c).await,
        SourceConfig::RedisList(c) => redis::list_source(c).await,
        SourceConfig::RedisPubSub(c) => redis::pubsub_source(c).await,
        SourceConfig::RedisKeyspace(c) => redis::keyspace_source(c).await,
        SourceConfig::Amqp(c) => amqp::source(c).await,
        SourceConfig::Generate(_) => (
            "ferry itself".into(),
            vec![Finding::ok("generated messages need no connection")],
        ),
    }
}

async fn sink(config: &SinkConfig) -> (String, Vec<Finding>) {
    match config {
        SinkConfig::Redis(c) => redis::sink(c).await,
        SinkConfig::Kafka(c) => kafka::sink(c).await,
        SinkConfig::Amqp(c) => amqp::sink(c).await,
    }
}

/// The report as printed: a verdict per part, a fix under each failure.
pub fn render(reports: &[PartReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let verdict = if r.ok() { "ok" } else { "FAILED" };
        let _ = writeln!(out, "{verdict}: {}", r.part);
        if !r.target.is_empty() {
            let _ = writeln!(out, "    at {}", r.target);
        }
        for f in &r.findings {
            let _ = writeln!(out, "    {} {}", if f.ok { "ok  " } else { "FAIL" }, f.what);
            if let Some(fix) = &f.fix {
                let _ = writeln!(out, "         fix: {fix}");
            }
        }
    }
    let failed = reports.iter().filter(|r| !r.ok()).count();
    let _ = writeln!(
        out,
        "{} part{} checked, {failed} failed",
        reports.len(),
        if reports.len() == 1 { "" } else { "s" }
    );
    out
}

/// A key a template could produce, for permission checks: every
/// placeholder replaced by `ferry-check`.
pub fn sample_key(template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        match rest[open..].find('}') {
            Some(close) => {
                out.push_str("ferry-check");
                rest = &rest[open + close + 1..];
            }
            None => {
                rest = &rest[open..];
                break;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sample_keys_fill_every_placeholder() {
        assert_eq!(sample_key("order:{order_id}"), "order:ferry-check");
        assert_eq!(sample_key("{a}:{b.c}"), "ferry-check:ferry-check");
        assert_eq!(sample_key("plain"), "plain");
    }

    #[test]
    fn the_report_gives_a_verdict_per_part_and_a_fix_per_failure() {
        let reports = vec![
            PartReport {
                part: "pipeline `p` source (redis list `in`)".into(),
                target: "redis://h:6379/0".into(),
                findings: vec![Finding::ok("connected")],
            },
            PartReport {
                part: "pipeline `p` sink (redis set k)".into(),
                target: String::new(),
                findings: vec![Finding::error(
                    "connecting",
                    "WRONGPASS invalid username-password pair",
                )],
            },
        ];
        let text = render(&reports);
        assert!(text.contains("ok: pipeline `p` source"), "{text}");
        assert!(text.contains("FAILED: pipeline `p` sink"), "{text}");
        assert!(text.contains("fix: wrong user name or password"), "{text}");
        assert!(text.ends_with("2 parts checked, 1 failed\n"), "{text}");
    }
}
