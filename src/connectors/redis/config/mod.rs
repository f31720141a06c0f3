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
    Attempts, Batch, Block, Buffer, ClaimIdle, Count, KeyTtl, Length, Limit, NonEmpty, PendingKeys,
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

/// `sentinel = { primary = "mymaster", nodes = [...] }`: the primary is
/// the one these sentinels name, and follows their failovers.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SentinelConfig {
    /// The name the sentinels monitor the primary under
    /// (`sentinel monitor <name> ...`).
    pub primary: NonEmpty,
    /// The sentinels, e.g. `["redis://10.0.0.1:26379", "redis://10.0.0.2:26379"]`.
    pub nodes: Vec<RedisUrl>,
    /// The sentinels' own ACL user, when they have one.
    pub username: Option<String>,
    /// The sentinels' own password (`requirepass` in sentinel.conf).
    pub password: Option<Secret>,
}

impl SentinelConfig {
    pub fn check(&self, path: &ConfigPath, problems: &mut Vec<Problem>) {
        if self.nodes.is_empty() {
            problems.push(
                Problem::at_path(path.key("nodes"), "`sentinel` needs at least one sentinel")
                    .with_help(
                        "e.g. nodes = [\"redis://10.0.0.1:26379\", \"redis://10.0.0.2:26379\"]",
                    ),
            );
        }
        if self.username.is_some() && self.password.is_none() {
            problems.push(Problem::at_path(
                path.key("username"),
                "`username` without `password`",
            ));
        }
        if self.tls()
            && self
                .nodes
                .iter()
                .any(|n| !n.as_str().starts_with("rediss://"))
        {
            problems.push(
                Problem::at_path(
                    path.key("nodes"),
                    "sentinels with TLS (`rediss://`) and without (`redis://`) together",
                )
                .with_help("the sentinels are reached one way: give them all as rediss:// or all as redis://"),
            );
        }
    }

    /// redis-rs's sentinel client: asks `nodes` for `primary`, and logs in
    /// to the primary with `data` (the url's database, user and password).
    /// `certificates` (the part's `tls` files) serve the servers the
    /// sentinels name when the url is `rediss://`, and the sentinels when
    /// they are `rediss://`; `skip_verify` (`tls.insecure_skip_verify`)
    /// checks neither.
    pub fn client(
        &self,
        data: &redis::ConnectionInfo,
        certificates: Option<redis::TlsCertificates>,
        skip_verify: bool,
    ) -> redis::RedisResult<redis::sentinel::SentinelClient> {
        use redis::IntoConnectionInfo;
        let mut addrs = Vec::new();
        for node in &self.nodes {
            addrs.push(node.as_str().into_connection_info()?.addr().clone());
        }
        let mut b = redis::sentinel::SentinelClientBuilder::new(
            addrs,
            self.primary.to_string(),
            redis::sentinel::SentinelServerType::Master,
        )?
        .set_client_to_redis_db(data.redis_settings().db());
        if let Some(user) = data.redis_settings().username() {
            b = b.set_client_to_redis_username(user);
        }
        if let Some(pw) = data.redis_settings().password() {
            b = b.set_client_to_redis_password(pw);
        }
        if let redis::ConnectionAddr::TcpTls { insecure, .. } = data.addr() {
            if *insecure || skip_verify {
                b = b.set_client_to_redis_tls_mode(redis::TlsMode::Insecure);
            } else {
                b = b.set_client_to_redis_tls_mode(redis::TlsMode::Secure);
                if let Some(c) = &certificates {
                    b = b.set_client_to_redis_certificates(c.clone());
                }
            }
        }
        // A `rediss://` sentinel is reached with TLS as its url says
        // (`#insecure` included); redis-rs takes one setting for all of
        // them, so `check` refuses a mix.
        if self.tls() {
            if skip_verify {
                b = b.set_client_to_sentinel_tls_mode(redis::TlsMode::Insecure);
            } else if let Some(c) = certificates {
                b = b.set_client_to_sentinel_certificates(c);
            }
        }
        if let Some(user) = &self.username {
            b = b.set_client_to_sentinel_username(user);
        }
        if let Some(pw) = &self.password {
            b = b.set_client_to_sentinel_password(pw.expose());
        }
        b.build()
    }

    /// Whether the sentinels are reached with TLS (`rediss://`).
    fn tls(&self) -> bool {
        self.nodes
            .iter()
            .any(|n| n.as_str().starts_with("rediss://"))
    }
}

/// The Redis Cluster or Sentinel settings of a part, as one mode.
fn mode(cluster: bool, sentinel: &Option<SentinelConfig>) -> super::access::Mode {
    match (cluster, sentinel) {
        (_, Some(s)) => super::access::Mode::Sentinel(s.clone()),
        (true, None) => super::access::Mode::Cluster,
        (false, None) => super::access::Mode::Single,
    }
}

/// `cluster` and `sentinel` together.
fn check_mode(
    cluster: bool,
    sentinel: &Option<SentinelConfig>,
    path: &ConfigPath,
    problems: &mut Vec<Problem>,
) {
    if cluster && sentinel.is_some() {
        problems.push(
            Problem::at_path(
                path.key("sentinel"),
                "`cluster = true` and `sentinel` together",
            )
            .with_help("a Redis Cluster fails over by itself: keep one of them"),
        );
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
                    mode: mode(self.cluster, &self.sentinel),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn sentinel(nodes: &str) -> (SentinelConfig, Vec<String>) {
        let s: SentinelConfig =
            toml::from_str(&format!("primary = \"m\"\nnodes = {nodes}")).unwrap();
        let mut p = Vec::new();
        s.check(&ConfigPath::root(), &mut p);
        (s, p.into_iter().map(|p| p.message).collect())
    }

    #[test]
    fn sentinels_are_reached_all_with_tls_or_all_without_and_the_tls_files_go_where_tls_is() {
        let (_, p) = sentinel("[\"rediss://s1:26379\", \"redis://s2:26379\"]");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("with TLS (`rediss://`) and without"), "{p:?}");
        let data =
            redis::IntoConnectionInfo::into_connection_info("rediss://:pw@m:6380/2").unwrap();
        let files = || {
            Some(redis::TlsCertificates {
                client_tls: None,
                root_cert: None,
            })
        };
        // redis-rs refuses certificates for a plaintext sentinel: they go
        // to the servers alone.
        let (plain, p) = sentinel("[\"redis://s1:26379\", \"redis://s2:26379\"]");
        assert!(p.is_empty(), "{p:?}");
        assert!(plain.client(&data, files(), false).is_ok());
        assert!(plain.client(&data, None, true).is_ok());
        let (tls, p) = sentinel("[\"rediss://s1:26379\"]");
        assert!(p.is_empty(), "{p:?}");
        assert!(tls.client(&data, files(), false).is_ok());
        assert!(tls.client(&data, None, true).is_ok());
    }
}
