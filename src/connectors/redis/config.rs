//! Redis sink settings.

use serde::{Deserialize, Deserializer, de};

use crate::config::values::{Count, Span};
use crate::config::{ConfigPath, Problem};
use crate::template::Template;

/// A Redis URL that redis-rs accepts: `redis://[user:password@]host[:port][/db]`,
/// `rediss://` for TLS, `redis+unix:///path`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        redis::IntoConnectionInfo::into_connection_info(s.as_str()).map_err(|e| {
            de::Error::custom(format!(
                "invalid redis url: {e}; write e.g. \"redis://127.0.0.1:6379/0\""
            ))
        })?;
        Ok(Self(s))
    }
}

/// `type = "redis"` as a sink.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisSinkConfig {
    pub url: RedisUrl,
    /// Which command writes a message.
    pub write: WriteMode,
    /// Key template, e.g. `order:{order_id}`.
    pub key: Template,
    /// Commands per pipelined round trip.
    #[serde(default = "default_batch")]
    pub batch_size: Count,
    /// How long to wait for Redis to answer a batch before retrying it.
    #[serde(default = "default_timeout")]
    pub timeout: Span,
}

/// How a message becomes a Redis write.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// `SET key payload`.
    Set,
    /// `HSET key field value ...` from the fields of a JSON object payload.
    Hset,
    /// `XADD key * ...` with the message as stream fields.
    Xadd,
}

impl WriteMode {
    pub fn name(self) -> &'static str {
        match self {
            WriteMode::Set => "set",
            WriteMode::Hset => "hset",
            WriteMode::Xadd => "xadd",
        }
    }
}

fn default_batch() -> Count {
    Count::new(500)
}

fn default_timeout() -> Span {
    Span(std::time::Duration::from_secs(10))
}

impl RedisSinkConfig {
    pub fn check(&self, _path: &ConfigPath, _problems: &mut Vec<Problem>) {}
}
