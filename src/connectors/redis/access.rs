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
//! | `tls` under Sentinel | the same for the servers the sentinels name (`set_client_to_redis_certificates`) and for `rediss://` sentinels (`set_client_to_sentinel_certificates`) |
//! | `tls.server_name` | the host redis-rs connects to and checks, with a resolver taking it to the url's host (`named.rs`) |
//! | `username` + `password` | `AUTH username password` (ACL user) |
//! | `password` alone | `AUTH password` (legacy `requirepass`) |

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, IntoConnectionInfo};

use super::config::{RedisUrl, SentinelConfig};
use super::connection::{Cluster, RedisConn, Sentinel};
use super::named::{self, Endpoint, NameResolver, Named, NamedConn};
use crate::connectors::tls::{Identity, Supports, TlsConfig};
use crate::error::ConnectorError;
use crate::problem::{ConfigPath, Problem};
use crate::secret::{Secret, mask_url};

/// What ferry cannot do with `tls` under each mode.
fn tls_support(mode: &Mode) -> Supports {
    match mode {
        Mode::Sentinel(_) => Supports {
            server_name: Some(
                "redis-rs reaches the primary at the address the sentinels give and checks its \
                 certificate against that address before ferry sees it; have the sentinels give \
                 a name the certificate carries (`sentinel resolve-hostnames yes`, \
                 `sentinel announce-hostnames yes`, the servers' `replica-announce-ip` a host name)",
            ),
        },
        Mode::Single | Mode::Cluster => Supports { server_name: None },
    }
}

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
            tls.check(path, &tls_support(&self.mode), problems);
        }
    }

    /// The url with the login settings applied (`#insecure` added for
    /// `insecure_skip_verify`).
    fn connection_info(&self) -> Result<redis::ConnectionInfo, ConnectorError> {
        let mut url = self.url.as_str().to_owned();
        let insecure = self.tls.as_ref().is_some_and(|t| t.insecure_skip_verify);
        if insecure && !url.contains('#') {
            url.push_str("#insecure");
        }
        let opening = |e| ConnectorError::redis(format!("opening {}", self.shown()), e);
        let info = url.as_str().into_connection_info().map_err(opening)?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &self.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password.expose());
        }
        if url.ends_with("#insecure") {
            tracing::warn!(
                url = %self.shown(),
                "redis: TLS certificate verification is OFF (insecure_skip_verify or #insecure): \
                 anyone on the network path can read and change this traffic; \
                 use it for tests only and give `tls.ca` instead"
            );
        }
        Ok(info.set_redis_settings(settings))
    }

    /// `tls.server_name` as redis-rs's connections take it: the name, and
    /// the url's host and port it stands for. `None` without the setting
    /// or TLS.
    fn name_resolver(&self) -> Result<Option<NameResolver>, ConnectorError> {
        let Some(name) = self.tls.as_ref().and_then(|t| t.server_name.as_ref()) else {
            return Ok(None);
        };
        match self.connection_info()?.addr() {
            redis::ConnectionAddr::TcpTls { host, port, .. } => Ok(Some(NameResolver {
                name: name.to_string(),
                host: host.clone(),
                port: *port,
            })),
            _ => Ok(None),
        }
    }

    /// The server in `url`. Every connection to it starts here: the
    /// redis-rs client with the login and TLS settings, and what
    /// `tls.server_name` needs.
    pub(crate) fn endpoint(&self) -> Result<Endpoint, ConnectorError> {
        self.endpoint_at(None)
    }

    /// A node of a cluster (`host:port`) with this access's login and TLS
    /// settings; under `tls.server_name` by that name only when it is the
    /// node in `url` (the same host and port).
    pub(crate) fn node_endpoint(&self, node: &str) -> Result<Endpoint, ConnectorError> {
        let at = node
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_owned(), p.parse::<u16>().ok()?)))
            .ok_or_else(|| {
                ConnectorError::Retry(format!("redis cluster node `{node}` is not host:port"))
            })?;
        self.endpoint_at(Some(at))
    }

    fn endpoint_at(&self, node: Option<(String, u16)>) -> Result<Endpoint, ConnectorError> {
        let info = self.connection_info()?;
        let resolver = self.name_resolver()?.filter(|r| {
            node.as_ref()
                .is_none_or(|(h, p)| *h == r.host && *p == r.port)
        });
        let addr = match (info.addr().clone(), node) {
            (
                redis::ConnectionAddr::TcpTls {
                    host,
                    port,
                    insecure,
                    tls_params,
                },
                node,
            ) => {
                let (host, port) = node.unwrap_or((host, port));
                redis::ConnectionAddr::TcpTls {
                    // redis-rs checks the certificate against the host.
                    host: resolver.as_ref().map_or(host, |r| r.name.clone()),
                    port,
                    insecure,
                    tls_params,
                }
            }
            (_, Some((host, port))) => redis::ConnectionAddr::Tcp(host, port),
            (addr, None) => addr,
        };
        let insecure = matches!(addr, redis::ConnectionAddr::TcpTls { insecure: true, .. });
        let info = info.set_addr(addr);
        let opening = |e| ConnectorError::redis(format!("opening {}", self.shown()), e);
        let files = self.tls_files()?;
        let client = match files.clone() {
            Some((ca, identity)) => redis::Client::build_with_tls(info, certificates(ca, identity))
                .map_err(|e| self.unusable(e))?,
            None => redis::Client::open(info).map_err(opening)?,
        };
        let (ca, identity) = files.unwrap_or_default();
        let named = resolver.map(|resolver| {
            Arc::new(Named {
                resolver,
                insecure,
                ca,
                identity,
            })
        });
        Ok(Endpoint { client, named })
    }

    /// `tls.ca` and `tls.cert` + `tls.key`, read; `None` without `tls` or
    /// with verification off. Every client of this access (the server, a
    /// cluster's nodes, the sentinels and the servers they name) takes its
    /// TLS files from here.
    fn tls_files(&self) -> Result<Option<TlsFiles>, ConnectorError> {
        match self.tls.as_ref().filter(|t| !t.insecure_skip_verify) {
            Some(tls) => Ok(Some((tls.read_ca()?, tls.read_identity()?))),
            None => Ok(None),
        }
    }

    fn unusable(&self, e: redis::RedisError) -> ConnectorError {
        ConnectorError::Fatal(format!(
            "redis {}: the TLS files in `tls` are not usable: {e}",
            self.shown()
        ))
    }

    /// The server to check (`ferry check --connect`): the server; under
    /// Sentinel, the primary the sentinels name now; on a cluster, the node
    /// in `url`.
    pub(crate) async fn server_endpoint(&self) -> Result<Endpoint, ConnectorError> {
        let Mode::Sentinel(sentinel) = &self.mode else {
            return self.endpoint();
        };
        self.sentinel_client(sentinel)?
            .async_get_client()
            .await
            .map(Endpoint::plain)
            .map_err(|e| ConnectorError::redis("asking the sentinels for the primary", e))
    }

    /// redis-rs's sentinel client: the sentinels in `sentinel.nodes`, and
    /// the primary they name reached with the url's login and database.
    /// `tls` serves both: the primary (and replicas) of a `rediss://` url,
    /// and the sentinels given as `rediss://`.
    pub(crate) fn sentinel_client(
        &self,
        sentinel: &SentinelConfig,
    ) -> Result<redis::sentinel::SentinelClient, ConnectorError> {
        let data = self.endpoint()?.client.get_connection_info().clone();
        let files = self.tls_files()?.map(|(ca, id)| certificates(ca, id));
        let skip = self.tls.as_ref().is_some_and(|t| t.insecure_skip_verify);
        sentinel.client(&data, files, skip).map_err(|e| {
            if e.is_io_error() {
                // Nothing is reached yet: PEM files redis-rs could not parse.
                self.unusable(e)
            } else {
                ConnectorError::redis("setting up the sentinel client", e)
            }
        })
    }

    /// What every cluster client of this access shares.
    pub(crate) fn cluster_settings(&self) -> Result<ClusterSettings, ConnectorError> {
        Ok(ClusterSettings {
            certificates: self.tls_files()?.map(|(ca, id)| certificates(ca, id)),
            named: self.name_resolver()?,
        })
    }
}

/// `tls.ca` and the client certificate and key, read.
type TlsFiles = (Option<Vec<u8>>, Option<Identity>);

/// The TLS files as redis-rs takes them.
fn certificates(ca: Option<Vec<u8>>, identity: Option<Identity>) -> redis::TlsCertificates {
    redis::TlsCertificates {
        client_tls: identity.map(|id| redis::ClientTlsConfig {
            client_cert: id.cert,
            client_key: id.key,
        }),
        root_cert: ca,
    }
}

/// What every cluster client of one access shares: the TLS files (redis-rs
/// takes them apart from the url) and, under `tls.server_name`, the name of
/// the node in `url`.
///
/// redis-rs connects to every node at the address the cluster announces
/// (`CLUSTER SLOTS`, redirections) and checks the node's certificate against
/// that address. `server_name` names the server in `url`, so it renames that
/// node only, wherever redis-rs meets it (redis-rs's `node_address_map`,
/// then the resolver takes the name back to the address). One name for
/// every node cannot be given: redis-rs would reach them all under that one
/// name, and nothing would tell them apart. Nodes whose certificates do not
/// carry their announced address are reached by announcing names that they
/// carry (`cluster-announce-hostname`, `cluster-preferred-endpoint-type
/// hostname`).
#[derive(Clone)]
pub(crate) struct ClusterSettings {
    certificates: Option<redis::TlsCertificates>,
    named: Option<NameResolver>,
}

impl ClusterSettings {
    /// redis-rs's cluster client settings, from seed nodes.
    pub(crate) fn builder(
        &self,
        seeds: Vec<redis::ConnectionInfo>,
        response_timeout: Duration,
    ) -> redis::cluster::ClusterClientBuilder {
        // Seeds by their address: redis-rs renames them by the map, and
        // keys its connections by the address, as the cluster names it.
        let seeds: Vec<redis::ConnectionInfo> = match &self.named {
            None => seeds,
            Some(r) => seeds.into_iter().map(|s| unnamed(s, r)).collect(),
        };
        let mut builder = redis::cluster::ClusterClientBuilder::new(seeds)
            .response_timeout(response_timeout)
            .connection_timeout(CONNECT_TIMEOUT)
            // A failover takes a few seconds (cluster-node-timeout plus the
            // election): ride it out within one batch when possible.
            .retries(8)
            .min_retry_wait(100)
            .max_retry_wait(2_000);
        if let Some(c) = &self.certificates {
            builder = builder.certs(c.clone());
        }
        if let Some(r) = &self.named {
            let node = |host: &str| redis::cluster::NodeAddress::new(host.to_owned(), r.port);
            builder = builder
                .node_address_map(HashMap::from([(node(&r.host), node(&r.name))]))
                .async_dns_resolver(r.clone());
        }
        builder
    }
}

/// A seed under the name of `r` given back its address.
fn unnamed(seed: redis::ConnectionInfo, r: &NameResolver) -> redis::ConnectionInfo {
    match seed.addr().clone() {
        redis::ConnectionAddr::TcpTls {
            host,
            port,
            insecure,
            tls_params,
        } if port == r.port && host.eq_ignore_ascii_case(&r.name) => {
            seed.set_addr(redis::ConnectionAddr::TcpTls {
                host: r.host.clone(),
                port,
                insecure,
                tls_params,
            })
        }
        _ => seed,
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
    let endpoint = access.endpoint()?;
    let opening = |e| ConnectorError::redis(format!("opening {}", access.shown()), e);
    match &access.mode {
        Mode::Single => reconnecting(endpoint, response_timeout),
        Mode::Cluster => {
            let settings = access.cluster_settings()?;
            let open = move |seeds: Vec<redis::ConnectionInfo>| {
                settings.builder(seeds, response_timeout).build()
            };
            // Checked here, so that a bad setting fails at start.
            let seed = endpoint.client.get_connection_info().clone();
            open(vec![seed.clone()]).map_err(opening)?;
            Ok(RedisConn::Cluster(Cluster::new(Arc::new(open), seed)))
        }
        Mode::Sentinel(sentinel) => Ok(RedisConn::Sentinel(Sentinel::new(
            access.sentinel_client(sentinel)?,
            manager_config(response_timeout),
        ))),
    }
}

/// A connection attempt's limit, and how often a lost connection is tried
/// again before a command fails.
const CONNECT_TIMEOUT: Duration = named::CONNECT_TIMEOUT;
const RETRIES: usize = 2;
const MAX_DELAY: Duration = Duration::from_secs(2);

fn manager_config(response_timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_number_of_retries(RETRIES)
        .set_max_delay(MAX_DELAY)
}

/// redis-rs's `ConnectionManager`, or under `tls.server_name` (which it
/// cannot take) ferry's own with the same settings.
fn reconnecting(
    endpoint: Endpoint,
    response_timeout: Duration,
) -> Result<RedisConn, ConnectorError> {
    if endpoint.named.is_some() {
        let config = AsyncConnectionConfig::new()
            .set_response_timeout(Some(response_timeout))
            .set_connection_timeout(Some(CONNECT_TIMEOUT));
        return Ok(RedisConn::Named(NamedConn::new(
            endpoint, config, RETRIES, MAX_DELAY,
        )));
    }
    ConnectionManager::new_lazy_with_config(endpoint.client, manager_config(response_timeout))
        .map(RedisConn::Single)
        .map_err(|e| ConnectorError::redis("creating the connection", e))
}

/// A reconnecting connection to one node of a cluster (`host:port`).
pub(crate) fn connect_node(
    access: &RedisAccess,
    node: &str,
    response_timeout: Duration,
) -> Result<RedisConn, ConnectorError> {
    reconnecting(access.node_endpoint(node)?, response_timeout)
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
        let info = a.endpoint().unwrap().client.get_connection_info().clone();
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
        let client = a.endpoint().unwrap().client;
        assert!(matches!(
            client.get_connection_info().addr(),
            redis::ConnectionAddr::TcpTls { insecure: true, .. }
        ));
        assert_eq!(
            access("url = \"rediss://:pw@h:6380/0\"").0.shown(),
            "rediss://:<redacted>@h:6380/0"
        );
    }

    #[test]
    fn server_name_is_taken_alone_and_on_a_cluster_and_refused_under_sentinel() {
        let toml = "url = \"rediss://10.0.0.5:6380\"\ntls = { server_name = \"redis.internal\" }";
        let (mut a, p) = access(toml);
        assert!(p.is_empty(), "{p:?}");
        a.mode = Mode::Cluster;
        let mut p = Vec::new();
        a.check(&ConfigPath::root(), &mut p);
        assert!(p.is_empty(), "{p:?}");
        let sentinel = "primary = \"m\"\nnodes = [\"redis://10.0.0.9:26379\"]";
        a.mode = Mode::Sentinel(toml::from_str(sentinel).unwrap());
        a.check(&ConfigPath::root(), &mut p);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].message, "`server_name` is not supported here");
    }

    #[test]
    fn cluster_seeds_under_the_name_are_given_back_their_address() {
        let r = NameResolver {
            name: "redis.internal".into(),
            host: "10.0.0.5".into(),
            port: 6380,
        };
        let seed = |host: &str, port| {
            let info = "redis://x".into_connection_info().unwrap();
            info.set_addr(redis::ConnectionAddr::TcpTls {
                host: host.into(),
                port,
                insecure: false,
                tls_params: None,
            })
        };
        let addr = |i: redis::ConnectionInfo| i.addr().to_string();
        assert_eq!(
            addr(unnamed(seed("redis.internal", 6380), &r)),
            "10.0.0.5:6380"
        );
        assert_eq!(addr(unnamed(seed("10.0.0.6", 6380), &r)), "10.0.0.6:6380");
    }
}
