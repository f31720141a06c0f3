//! How ferry reaches a Redis server: the URL plus the first-class settings
//! that every Redis source and sink shares (`username`, `password`, `tls`),
//! turned into a redis-rs client.
//!
//! | ferry | redis-rs |
//! |---|---|
//! | `url = "rediss://..."` | `ConnectionAddr::TcpTls` (rustls, system roots) |
//! | `url = "rediss://...#insecure"`, `tls.insecure_skip_verify` | `TcpTls { insecure: true }` |
//! | `tls.ca` | `TlsCertificates::root_cert` (replaces the system roots) |
//! | `tls.cert` + `tls.key` | `TlsCertificates::client_tls` (mutual TLS) |
//! | `username` + `password` | `AUTH username password` (ACL user) |
//! | `password` alone | `AUTH password` (legacy `requirepass`) |

use std::sync::Arc;
use std::time::Duration;

use redis::IntoConnectionInfo;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::config::{RedisUrl, SentinelConfig};
use super::connection::{Cluster, RedisConn, Sentinel};
use crate::connectors::tls::{Supports, TlsConfig};
use crate::error::ConnectorError;
use crate::problem::{ConfigPath, Problem};
use crate::secret::{Secret, mask_url};

/// What redis-rs cannot do with `tls`.
pub(crate) const TLS_SUPPORT: Supports = Supports {
    server_name: Some(
        "redis-rs checks the certificate against the host in `url`; \
         connect by that name (DNS or /etc/hosts) instead",
    ),
};

/// The connection settings of one Redis source or sink.
#[derive(Clone, Debug)]
pub struct RedisAccess {
    pub url: RedisUrl,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub tls: Option<TlsConfig>,
    pub mode: Mode,
}

/// What Redis runs as.
#[derive(Clone, Debug, Default)]
pub enum Mode {
    /// One server (or a managed endpoint that hides its failover).
    #[default]
    Single,
    /// Redis Cluster: `url` is one node; redis-rs finds the others.
    Cluster,
    /// A primary found through sentinels; `url` gives the database and TLS.
    Sentinel(SentinelConfig),
}

impl RedisAccess {
    /// Access by a URL alone (command-line tools): any login is in the URL.
    pub fn from_url(url: &str) -> Result<RedisAccess, String> {
        Ok(RedisAccess {
            url: RedisUrl::parse(url)?,
            username: None,
            password: None,
            tls: None,
            mode: Mode::Single,
        })
    }

    /// The URL as it may be shown: its password masked.
    pub fn shown(&self) -> String {
        mask_url(self.url.as_str())
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.url.as_str().starts_with("rediss://")
    }

    pub fn check(&self, path: &ConfigPath, problems: &mut Vec<Problem>) {
        let info = self.url.as_str().into_connection_info().ok();
        let in_url = info.as_ref().map(|i| i.redis_settings());
        if self.password.is_some() && in_url.is_some_and(|r| r.password().is_some()) {
            problems.push(
                Problem::at_path(
                    path.key("password"),
                    "a password in `url` and in `password`",
                )
                .with_help("keep one: remove the password from the url"),
            );
        }
        if self.username.is_some() && self.password.is_none() {
            problems.push(
                Problem::at_path(path.key("username"), "`username` without `password`").with_help(
                    "an ACL user logs in with both: add password = \"${REDIS_PASSWORD}\"",
                ),
            );
        }
        match &self.mode {
            Mode::Single => {}
            Mode::Cluster => {
                if self.url.db() != 0 {
                    problems.push(
                        Problem::at_path(path.key("url"), "a Redis Cluster has only database 0")
                            .with_help("remove the /db from the url"),
                    );
                }
            }
            Mode::Sentinel(sentinel) => sentinel.check(&path.key("sentinel"), problems),
        }
        if let Some(tls) = &self.tls {
            if !self.is_tls() {
                problems.push(
                    Problem::at_path(path.key("tls"), "`tls` settings with a `redis://` url")
                        .with_help("write the url as rediss://host:port to connect with TLS"),
                );
            }
            tls.check(path, &TLS_SUPPORT, problems);
        }
    }

    /// A redis-rs client with the credentials and TLS settings applied.
    pub fn client(&self) -> Result<redis::Client, ConnectorError> {
        let mut url = self.url.as_str().to_owned();
        let insecure = self.tls.as_ref().is_some_and(|t| t.insecure_skip_verify);
        if insecure && !url.contains('#') {
            url.push_str("#insecure");
        }
        let opening = |e| ConnectorError::redis(format!("opening {}", self.shown()), e);
        let mut info = url.as_str().into_connection_info().map_err(opening)?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &self.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password.expose());
        }
        info = info.set_redis_settings(settings);
        if url.ends_with("#insecure") {
            tracing::warn!(
                url = %self.shown(),
                "redis: TLS certificate verification is OFF (insecure_skip_verify or #insecure): \
                 anyone on the network path can read and change this traffic; \
                 use it for tests only and give `tls.ca` instead"
            );
        }
        let Some(tls) = self.tls.as_ref().filter(|t| !t.insecure_skip_verify) else {
            return redis::Client::open(info).map_err(opening);
        };
        let certificates = redis::TlsCertificates {
            client_tls: tls.read_identity()?.map(|id| redis::ClientTlsConfig {
                client_cert: id.cert,
                client_key: id.key,
            }),
            root_cert: tls.read_ca()?,
        };
        redis::Client::build_with_tls(info, certificates).map_err(|e| {
            ConnectorError::Fatal(format!(
                "redis {}: the TLS files in `tls` are not usable: {e}",
                self.shown()
            ))
        })
    }
}

impl RedisAccess {
    /// A client for the server to check (`ferry check --connect`): the
    /// server; under Sentinel, the primary the sentinels name now; on a
    /// cluster, the node in `url`.
    pub async fn server_client(&self) -> Result<redis::Client, ConnectorError> {
        let client = self.client()?;
        let Mode::Sentinel(sentinel) = &self.mode else {
            return Ok(client);
        };
        sentinel
            .client(client.get_connection_info(), self.tls.as_ref())?
            .async_get_client()
            .await
            .map_err(|e| ConnectorError::redis("asking the sentinels for the primary", e))
    }

    /// The TLS files of a cluster's connections (redis-rs takes them apart
    /// from the url).
    pub fn cluster_certificates(&self) -> Result<Option<redis::TlsCertificates>, ConnectorError> {
        let Some(tls) = self.tls.as_ref().filter(|t| !t.insecure_skip_verify) else {
            return Ok(None);
        };
        Ok(Some(redis::TlsCertificates {
            client_tls: tls.read_identity()?.map(|id| redis::ClientTlsConfig {
                client_cert: id.cert,
                client_key: id.key,
            }),
            root_cert: tls.read_ca()?,
        }))
    }

    /// A client for one node of a cluster (`host:port`), with this access's
    /// login and TLS settings.
    pub fn node_client(&self, node: &str) -> Result<redis::Client, ConnectorError> {
        let client = self.client()?;
        let (host, port) = node
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| {
                ConnectorError::Retry(format!("redis cluster node `{node}` is not host:port"))
            })?;
        let info = client.get_connection_info().clone();
        let addr = match info.addr().clone() {
            redis::ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => redis::ConnectionAddr::TcpTls {
                host,
                port,
                insecure,
                tls_params,
            },
            _ => redis::ConnectionAddr::Tcp(host, port),
        };
        redis::Client::open(info.set_addr(addr))
            .map_err(|e| ConnectorError::redis(format!("opening cluster node {node}"), e))
    }
}

/// A connection that reconnects by itself (to a single server, a cluster
/// or the primary the sentinels name), with a response timeout so that a
/// hung server fails a batch (which is retried) instead of blocking the
/// pipeline forever.
pub(crate) fn connect(
    access: &RedisAccess,
    response_timeout: Duration,
) -> Result<RedisConn, ConnectorError> {
    let client = access.client()?;
    let config = manager_config(response_timeout);
    let opening = |e| ConnectorError::redis(format!("opening {}", access.shown()), e);
    match &access.mode {
        Mode::Single => ConnectionManager::new_lazy_with_config(client, config)
            .map(RedisConn::Single)
            .map_err(|e| ConnectorError::redis("creating the connection", e)),
        Mode::Cluster => {
            let certificates = access.cluster_certificates()?;
            let open = move |seeds: Vec<redis::ConnectionInfo>| {
                cluster_builder(seeds, response_timeout, &certificates).build()
            };
            // Checked here, so that a bad setting fails at start.
            let seed = client.get_connection_info().clone();
            open(vec![seed.clone()]).map_err(opening)?;
            Ok(RedisConn::Cluster(Cluster::new(Arc::new(open), seed)))
        }
        Mode::Sentinel(sentinel) => {
            let info = client.get_connection_info().clone();
            let sentinels = sentinel.client(&info, access.tls.as_ref())?;
            Ok(RedisConn::Sentinel(Sentinel::new(sentinels, config)))
        }
    }
}

/// redis-rs's cluster client settings, from seed nodes.
pub(crate) fn cluster_builder(
    seeds: Vec<redis::ConnectionInfo>,
    response_timeout: Duration,
    certificates: &Option<redis::TlsCertificates>,
) -> redis::cluster::ClusterClientBuilder {
    let mut builder = redis::cluster::ClusterClientBuilder::new(seeds)
        .response_timeout(response_timeout)
        .connection_timeout(Duration::from_secs(5))
        // A failover takes a few seconds (cluster-node-timeout plus the
        // election): ride it out within one batch when possible.
        .retries(8)
        .min_retry_wait(100)
        .max_retry_wait(2_000);
    if let Some(c) = certificates {
        builder = builder.certs(c.clone());
    }
    builder
}

fn manager_config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2))
}

/// A reconnecting connection to one node of a cluster (`host:port`).
pub(crate) fn connect_node(
    access: &RedisAccess,
    node: &str,
    response_timeout: Duration,
) -> Result<RedisConn, ConnectorError> {
    ConnectionManager::new_lazy_with_config(
        access.node_client(node)?,
        manager_config(response_timeout),
    )
    .map(RedisConn::Single)
    .map_err(|e| ConnectorError::redis("creating the connection", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(toml: &str) -> (RedisAccess, Vec<String>) {
        #[derive(serde::Deserialize)]
        struct T {
            url: RedisUrl,
            username: Option<String>,
            password: Option<Secret>,
            tls: Option<TlsConfig>,
        }
        let t: T = toml::from_str(toml).unwrap();
        let a = RedisAccess {
            url: t.url,
            username: t.username,
            password: t.password,
            tls: t.tls,
            mode: Mode::Single,
        };
        let mut p = Vec::new();
        a.check(&ConfigPath::root(), &mut p);
        (a, p.into_iter().map(|p| p.message).collect())
    }

    #[test]
    fn an_acl_user_logs_in_with_username_and_password() {
        let (a, p) = access("url = \"redis://h:6379/1\"\nusername = \"ferry\"\npassword = \"pw\"");
        assert!(p.is_empty(), "{p:?}");
        let info = a.client().unwrap().get_connection_info().clone();
        assert_eq!(info.redis_settings().username(), Some("ferry"));
        assert_eq!(info.redis_settings().password(), Some("pw"));
        assert_eq!(info.redis_settings().db(), 1);
    }

    #[test]
    fn tls_settings_need_a_tls_url_and_passwords_are_given_once() {
        let (_, p) = access(
            "url = \"redis://:a@h\"\npassword = \"b\"\ntls = { insecure_skip_verify = true }",
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("a password in `url` and in `password`"));
        assert!(p[1].contains("`tls` settings with a `redis://` url"));
        let (_, p) = access("url = \"redis://h\"\nusername = \"u\"");
        assert!(p[0].contains("`username` without `password`"));
    }

    #[test]
    fn skipping_verification_becomes_redis_rs_insecure_mode() {
        let (a, p) = access("url = \"rediss://h:6380\"\ntls = { insecure_skip_verify = true }");
        assert!(p.is_empty(), "{p:?}");
        let client = a.client().unwrap();
        assert!(matches!(
            client.get_connection_info().addr(),
            redis::ConnectionAddr::TcpTls { insecure: true, .. }
        ));
        assert_eq!(
            access("url = \"rediss://:pw@h:6380/0\"").0.shown(),
            "rediss://:<redacted>@h:6380/0"
        );
    }
}
