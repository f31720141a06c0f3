//! Dry run of Kafka sources and sinks: connect with the configured TLS and
//! SASL settings, read the metadata of the topics (do they exist, how many
//! partitions), and for a source fetch the group's committed offsets (which
//! needs the group's ACL). Nothing is consumed or produced, and the group
//! is not joined.

use std::sync::Mutex;
use std::time::Duration;

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::{ClientConfig, TopicPartitionList};

use super::Finding;
use crate::connectors::kafka::oauth::{self, Bearer, BearerToken};
use crate::connectors::kafka::{KafkaSinkConfig, KafkaSourceConfig};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Keeps what librdkafka reports while connecting: a failed TLS handshake
/// or SASL login shows up there, not in the metadata request's error.
#[derive(Default)]
struct Recorder {
    errors: Mutex<Vec<String>>,
    /// OAUTHBEARER with a token of ferry's own.
    bearer: Bearer,
}

impl Recorder {
    fn record(&self, text: String) {
        if let Ok(mut e) = self.errors.lock()
            && !e.contains(&text)
        {
            e.push(text);
        }
    }

    fn first(&self) -> Option<String> {
        self.errors.lock().ok().and_then(|e| e.first().cloned())
    }
}

impl ClientContext for Recorder {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        self.bearer.generate()
    }

    /// A dry run has no use for librdkafka's statistics (the default would
    /// print each on stderr).
    fn stats_raw(&self, _statistics: &[u8]) {}

    fn log(&self, level: RDKafkaLogLevel, _fac: &str, message: &str) {
        if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
            self.record(message.to_owned());
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.record(format!("{error}: {reason}"));
    }
}

impl ConsumerContext for Recorder {}

/// What a part reads or writes.
struct Plan {
    topics: Vec<String>,
    bearer: Option<BearerToken>,
    /// Source: the group whose committed offsets are read.
    group: Option<String>,
    /// Sink: the topic is created on start if missing.
    creates: Option<usize>,
}

fn login(config: &ClientConfig) -> String {
    let protocol = config.get("security.protocol").unwrap_or("PLAINTEXT");
    match (config.get("sasl.mechanism"), config.get("sasl.username")) {
        (Some(m), Some(u)) => format!("connected ({protocol}, {m} as `{u}`)"),
        (Some(m), None) => format!("connected ({protocol}, {m})"),
        _ => format!("connected ({protocol})"),
    }
}

fn check(mut config: ClientConfig, plan: Plan) -> Vec<Finding> {
    let mut out = Vec::new();
    // The dry run must not stay in the group or commit anything.
    config
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    if plan.group.is_none() {
        config.remove("group.id");
    }
    for key in [
        "enable.idempotence",
        "acks",
        "compression.type",
        "partitioner",
        "linger.ms",
    ] {
        config.remove(key);
    }
    let consumer: BaseConsumer<Recorder> = match config.create_with_context(Recorder {
        bearer: Bearer::new(plan.bearer.clone()),
        ..Recorder::default()
    }) {
        Ok(c) => c,
        Err(e) => {
            out.push(Finding::error("creating the client", &e.to_string()));
            return out;
        }
    };
    oauth::hand_over(&consumer, || consumer.context().bearer.waiting());
    let metadata = match consumer.fetch_metadata(None, TIMEOUT) {
        Ok(m) => m,
        Err(e) => {
            // librdkafka reports why (TLS handshake, SASL login) as events,
            // which only polling hands to the recorder.
            for _ in 0..5 {
                let _ = consumer.poll(Duration::from_millis(100));
            }
            let why = consumer.context().first().unwrap_or_else(|| e.to_string());
            out.push(Finding::error("connecting", &why));
            return out;
        }
    };
    out.push(Finding::ok(login(&config)));
    for topic in &plan.topics {
        match metadata.topics().iter().find(|t| t.name() == topic) {
            Some(t) if t.error().is_none() && !t.partitions().is_empty() => out.push(Finding::ok(
                format!("topic `{topic}`: {} partitions", t.partitions().len()),
            )),
            Some(t) if t.error().is_some() => out.push(Finding::error(
                &format!("topic `{topic}`"),
                &format!("{:?}", t.error()),
            )),
            _ => match plan.creates {
                Some(_) if plan.bearer.is_some() => out.push(Finding::fail(
                    format!("topic `{topic}` does not exist"),
                    "create the topic beforehand: ferry cannot create topics with an \
                     OAUTHBEARER token of its own (`sasl.token`, `sasl.token_file`)",
                )),
                Some(n) => out.push(Finding::ok(format!(
                    "topic `{topic}` does not exist; ferry creates it with {n} partitions"
                ))),
                None => out.push(Finding::fail(
                    format!("topic `{topic}` does not exist (or the user may not describe it)"),
                    "create the topic, grant the user Describe on it, or (sink) add \
                     create_topic = { partitions = 3 }",
                )),
            },
        }
    }
    if let Some(group) = &plan.group {
        let mut tpl = TopicPartitionList::new();
        for topic in &plan.topics {
            if let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) {
                for p in t.partitions() {
                    tpl.add_partition(topic, p.id());
                }
            }
        }
        if tpl.count() > 0 {
            match consumer.committed_offsets(tpl, TIMEOUT) {
                Ok(committed) => {
                    let with_offset = committed
                        .elements()
                        .iter()
                        .filter(|e| e.offset().to_raw().is_some_and(|o| o >= 0))
                        .count();
                    out.push(Finding::ok(format!(
                        "consumer group `{group}`: readable, committed offsets on {with_offset} of {} partitions",
                        committed.count()
                    )));
                }
                Err(e) => out.push(Finding::error(
                    &format!("consumer group `{group}`"),
                    &e.to_string(),
                )),
            }
        }
    }
    out
}

async fn blocking(config: ClientConfig, plan: Plan) -> Vec<Finding> {
    tokio::task::spawn_blocking(move || check(config, plan))
        .await
        .unwrap_or_else(|e| {
            vec![Finding::fail(
                format!("the check failed: {e}"),
                "report this",
            )]
        })
}

pub(super) async fn source(c: &KafkaSourceConfig) -> (String, Vec<Finding>) {
    let plan = Plan {
        topics: c.topics.iter().map(ToString::to_string).collect(),
        bearer: BearerToken::of(c.sasl.as_ref()),
        group: Some(c.group.to_string()),
        creates: None,
    };
    let findings = blocking(c.client_config("ferry-check"), plan).await;
    (c.brokers.to_string(), findings)
}

pub(super) async fn sink(c: &KafkaSinkConfig) -> (String, Vec<Finding>) {
    let plan = Plan {
        topics: vec![c.topic.to_string()],
        bearer: BearerToken::of(c.sasl.as_ref()),
        group: None,
        creates: c.create_topic.as_ref().map(|t| t.partitions.get()),
    };
    let findings = blocking(c.client_config("ferry-check"), plan).await;
    (c.brokers.to_string(), findings)
}
