//! Redis settings: the sink's (`sink.rs`) and the sources' (`sources.rs`),
//! and the connection settings they share.

use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::connectors::tls::TlsConfig;
use crate::problem::{ConfigPath, Problem};
use crate::secret::{Secret, mask_url};
use crate::template::Template;
use crate::values::time::Time;
use crate::values::{
    Attempts, Batch, Block, Buffer, ClaimIdle, Count, KeyTtl, Length, NonEmpty, PendingKeys,
    Refusal, Span, Timeout, Until, checked,
};

/// A Redis URL that redis-rs accepts: `redis://[user:password@]host[:port][/db]`,
/// `rediss://` for TLS, `redis+unix:///path`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

/// Shown with its password masked.
impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RedisUrl({})", mask_url(&self.0))
    }
}

impl RedisUrl {
    /// A URL given outside a config file (command-line arguments).
    pub fn parse(s: &str) -> Result<RedisUrl, String> {
        redis::IntoConnectionInfo::into_connection_info(s)
            .map(|_| RedisUrl(s.to_owned()))
            .map_err(|e| format!("invalid redis url `{}`: {e}", mask_url(s)))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The server and database the URL names: `host:port/db`.
    pub fn server(&self) -> String {
        match redis::IntoConnectionInfo::into_connection_info(self.0.as_str()) {
            Ok(info) => format!("{}/{}", info.addr(), info.redis_settings().db()),
            Err(_) => self.0.clone(),
        }
    }

    /// The database number the URL selects (keyspace channels name it).
    pub fn db(&self) -> i64 {
        redis::IntoConnectionInfo::into_connection_info(self.0.as_str())
            .map(|i| i.redis_settings().db())
            .unwrap_or(0)
    }
}

impl<'de> Deserialize<'de> for RedisUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        checked(
            d,
            |s: String| match redis::IntoConnectionInfo::into_connection_info(s.as_str()) {
                Ok(_) => Ok(Self(s)),
                Err(e) => Err(Refusal::from(format!(
                    "invalid redis url `{}`: {e}; write e.g. \"redis://127.0.0.1:6379/0\"",
                    mask_url(&s)
                ))),
            },
            |s| Some(Self(s)),
        )
    }
}

mod sink;
mod sources;

pub use sink::*;
pub use sources::*;

/// The connection settings every Redis source and sink has.
macro_rules! redis_access {
    ($($config:ty),*) => {$(
        impl $config {
            pub fn access(&self) -> super::access::RedisAccess {
                super::access::RedisAccess {
                    url: self.url.clone(),
                    username: self.username.clone(),
                    password: self.password.clone(),
                    tls: self.tls.clone(),
                }
            }
        }
    )*};
}

redis_access!(
    RedisSinkConfig,
    RedisStreamSourceConfig,
    RedisListSourceConfig,
    RedisPubSubSourceConfig,
    RedisKeyspaceSourceConfig
);
