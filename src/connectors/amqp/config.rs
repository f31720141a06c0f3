//! RabbitMQ (AMQP 0-9-1) settings.

use std::str::FromStr;

use serde::{Deserialize, Deserializer};

use super::access::{AmqpAccess, AuthMechanism};
use crate::connectors::tls::TlsConfig;
use crate::problem::{ConfigPath, Problem};
use crate::secret::{Secret, mask_url};
use crate::template::Template;
use crate::values::{
    Batch, Count, Length, MessageTtl, NonEmpty, Prefetch, Refusal, Span, Until, checked,
};

/// An AMQP URL: `amqp://user:password@host:5672/vhost` (`%2f` is the
/// default vhost `/`), or `amqps://` for TLS.
#[derive(Clone, PartialEq, Eq)]
pub struct AmqpUrl(String);

/// Shown with its password masked.
impl std::fmt::Debug for AmqpUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AmqpUrl({})", mask_url(&self.0))
    }
}

impl AmqpUrl {
    /// A URL given outside a config file (command-line arguments).
    pub fn parse(s: &str) -> Result<AmqpUrl, String> {
        lapin::uri::AMQPUri::from_str(s)
            .map(|_| AmqpUrl(s.to_owned()))
            .map_err(|e| format!("invalid amqp url: {}", e.replace(s, &mask_url(s))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for AmqpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(
            d,
            |s: String| match lapin::uri::AMQPUri::from_str(&s) {
                Ok(_) => Ok(Self(s)),
                Err(e) => Err(Refusal::from(format!(
                    "invalid amqp url: {}; write e.g. \"amqp://guest:guest@127.0.0.1:5672/%2f\"",
                    e.replace(&s, &mask_url(&s))
                ))),
            },
            |s| Some(Self(s)),
        )
    }
}

/// Exchanges, queues and bindings to declare on every (re)connect, so that
/// what ferry needs exists, as in a RabbitMQ definitions file.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Topology {
    #[serde(default)]
    pub exchanges: Vec<ExchangeSpec>,
    #[serde(default)]
    pub queues: Vec<QueueSpec>,
    #[serde(default)]
    pub bindings: Vec<BindingSpec>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeSpec {
    pub name: NonEmpty,
    #[serde(default)]
    pub kind: ExchangeKind,
    #[serde(default = "yes")]
    pub durable: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeKind {
    Direct,
    Fanout,
    #[default]
    Topic,
    Headers,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSpec {
    pub name: NonEmpty,
    #[serde(default = "yes")]
    pub durable: bool,
    /// `quorum` (replicated) or `classic`.
    #[serde(default)]
    pub kind: QueueKind,
    /// Where RabbitMQ sends messages rejected from this queue.
    pub dead_letter_exchange: Option<String>,
    pub dead_letter_routing_key: Option<String>,
    pub max_length: Option<Count<Length>>,
    pub message_ttl: Option<Span<MessageTtl>>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueKind {
    #[default]
    Classic,
    Quorum,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindingSpec {
    pub queue: NonEmpty,
    pub exchange: NonEmpty,
    #[serde(default)]
    pub routing_key: String,
}

/// What the source does with a message that no sink can take when the
/// pipeline has no dead-letter sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RejectMode {
    /// `basic.reject` without requeue: RabbitMQ moves it to the queue's
    /// dead-letter exchange (declare one, or RabbitMQ drops it).
    DeadLetter,
    /// `basic.nack` with requeue: it comes back (and fails again, unless
    /// the cause was fixed in between).
    Requeue,
}

/// `type = "amqp"` as a source: a consumer of one queue.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSourceConfig {
    pub url: AmqpUrl,
    /// Overrides the url's user.
    pub username: Option<String>,
    /// Overrides the url's password. Write `"${VAR}"` or `"${file:/path}"`;
    /// never shown.
    pub password: Option<Secret>,
    /// Overrides the url's virtual host (written plainly: `prod`, `/`).
    pub vhost: Option<String>,
    /// `plain` (user and password) or `external` (the TLS client
    /// certificate is the login).
    #[serde(default)]
    pub mechanism: AuthMechanism,
    /// TLS settings for an `amqps://` url: private CA, client certificate.
    pub tls: Option<TlsConfig>,
    pub queue: NonEmpty,
    /// Deliveries RabbitMQ sends before ferry acknowledges any: bounds what
    /// is in flight (and memory). Competing ferry consumers share a queue.
    #[serde(default = "default_prefetch")]
    pub prefetch: Count<Prefetch>,
    /// Messages no sink can take, when there is no dead-letter sink.
    /// Without this setting such a message stops the pipeline.
    pub rejected: Option<RejectMode>,
    #[serde(default)]
    pub declare: Topology,
    /// `forever` (a daemon) or `end`: stop once the queue has no ready
    /// messages left (a one-off drain).
    #[serde(default)]
    pub until: Until,
}

/// `type = "amqp"` as a sink: publishes with publisher confirms.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmqpSinkConfig {
    pub url: AmqpUrl,
    /// Overrides the url's user.
    pub username: Option<String>,
    /// Overrides the url's password. Write `"${VAR}"` or `"${file:/path}"`;
    /// never shown.
    pub password: Option<Secret>,
    /// Overrides the url's virtual host (written plainly: `prod`, `/`).
    pub vhost: Option<String>,
    /// `plain` (user and password) or `external` (the TLS client
    /// certificate is the login).
    #[serde(default)]
    pub mechanism: AuthMechanism,
    /// TLS settings for an `amqps://` url: private CA, client certificate.
    pub tls: Option<TlsConfig>,
    /// The exchange; `""` is the default exchange, which routes to the
    /// queue named by the routing key.
    #[serde(default)]
    pub exchange: String,
    /// Routing key template, e.g. `order.{status}` or a queue name.
    pub routing_key: Template,
    /// Delivery mode 2: RabbitMQ writes the message to disk.
    #[serde(default = "yes")]
    pub persistent: bool,
    /// A message no queue is bound for is returned and treated as a
    /// failure (dead-lettered), instead of silently dropped by RabbitMQ.
    #[serde(default = "yes")]
    pub mandatory: bool,
    /// Messages published before waiting for their confirms.
    #[serde(default = "default_sink_batch")]
    pub batch_size: Count<Batch>,
    #[serde(default)]
    pub declare: Topology,
}

fn yes() -> bool {
    true
}

fn default_prefetch() -> Count<Prefetch> {
    Count::new(256)
}

fn default_sink_batch() -> Count<Batch> {
    Count::new(500)
}

impl AmqpSourceConfig {
    pub fn check(&self, path: &ConfigPath, problems: &mut Vec<Problem>) {
        self.access().check(path, problems);
    }
}

impl AmqpSinkConfig {
    pub fn check(&self, path: &ConfigPath, problems: &mut Vec<Problem>) {
        self.access().check(path, problems);
    }
}

/// The connection settings every AMQP source and sink has.
macro_rules! amqp_access {
    ($($config:ty),*) => {$(
        impl $config {
            pub fn access(&self) -> AmqpAccess {
                AmqpAccess {
                    url: self.url.clone(),
                    username: self.username.clone(),
                    password: self.password.clone(),
                    vhost: self.vhost.clone(),
                    mechanism: self.mechanism,
                    tls: self.tls.clone(),
                }
            }
        }
    )*};
}

amqp_access!(AmqpSourceConfig, AmqpSinkConfig);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_with_topology_parses() {
        let c: AmqpSourceConfig = toml::from_str(
            r#"
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
queue = "orders"
rejected = "dead-letter"
[declare]
exchanges = [{ name = "shop", kind = "topic" }, { name = "dlx", kind = "fanout" }]
queues = [{ name = "orders", dead_letter_exchange = "dlx" }]
bindings = [{ queue = "orders", exchange = "shop", routing_key = "order.*" }]
"#,
        )
        .unwrap();
        assert_eq!(c.prefetch.get(), 256);
        assert_eq!(c.rejected, Some(RejectMode::DeadLetter));
        assert_eq!(c.declare.exchanges[1].kind, ExchangeKind::Fanout);
        assert_eq!(
            c.declare.queues[0].dead_letter_exchange.as_deref(),
            Some("dlx")
        );
    }

    #[test]
    fn a_bad_url_is_refused() {
        let e = toml::from_str::<AmqpSinkConfig>("url = \"http://x\"\nrouting_key = \"q\"")
            .unwrap_err();
        assert!(e.to_string().contains("invalid amqp url"), "{e}");
    }
}
