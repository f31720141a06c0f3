//! `tls.server_name` for Redis. redis-rs checks a server's certificate
//! against the host it connects to and has no setting for another name, but
//! its multiplexed and cluster connections take a DNS resolver. So under
//! `server_name` ferry gives redis-rs that name as the host, with a
//! [`NameResolver`] that takes the name (at the url's port) to the url's
//! host: redis-rs connects where the url says, sends the name in SNI and
//! checks the certificate against it.
//!
//! Where redis-rs takes no resolver, ferry does that part itself:
//! - the single server's reconnecting connection (`ConnectionManager` has
//!   no resolver setting): [`NamedConn`], a multiplexed connection opened
//!   with the resolver, and opened again once it is lost;
//! - pub/sub connections (`get_async_pubsub` has none either): ferry
//!   connects and makes the TLS handshake, then redis-rs speaks Redis over
//!   it ([`Endpoint::pubsub`]).
//!
//! On a cluster the name is the name of the node in `url` only (see
//! `access.rs`, `ClusterSettings`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use redis::aio::{ConnectionLike, MultiplexedConnection, PubSub};
use redis::io::AsyncDNSResolver;
use redis::{AsyncConnectionConfig, Cmd, RedisFuture, RedisResult, Value};
use rustls::pki_types::ServerName;
use tokio::sync::Mutex;

use crate::connectors::tls::Identity;
use crate::connectors::tls_client::{Trust, client_config};

/// Takes `name` at `port` to `host` (the url's), and every other host to
/// itself, as the system resolves it.
#[derive(Clone, Debug)]
pub(crate) struct NameResolver {
    pub(crate) name: String,
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl NameResolver {
    /// The host and port a connection to `host:port` really goes to.
    pub(crate) fn target<'a>(&'a self, host: &'a str, port: u16) -> (&'a str, u16) {
        if port == self.port && host.eq_ignore_ascii_case(&self.name) {
            (&self.host, port)
        } else {
            (host, port)
        }
    }
}

impl AsyncDNSResolver for NameResolver {
    fn resolve<'a, 'b: 'a>(
        &'a self,
        host: &'b str,
        port: u16,
    ) -> RedisFuture<'a, Box<dyn Iterator<Item = SocketAddr> + Send + 'a>> {
        let target = self.target(host, port);
        async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host(target).await?.collect();
            Ok(Box::new(addrs.into_iter()) as Box<dyn Iterator<Item = SocketAddr> + Send>)
        }
        .boxed()
    }
}

/// What the TLS handshake ferry makes for pub/sub checks.
pub(crate) struct Named {
    pub(crate) resolver: NameResolver,
    /// `insecure_skip_verify` or `#insecure`: any certificate.
    pub(crate) insecure: bool,
    pub(crate) ca: Option<Vec<u8>>,
    pub(crate) identity: Option<Identity>,
}

/// One server to connect to: redis-rs's client, and under `tls.server_name`
/// what it takes to reach the server under that name. Made only by
/// `RedisAccess::endpoint` and `node_endpoint`.
#[derive(Clone)]
pub(crate) struct Endpoint {
    pub(crate) client: redis::Client,
    pub(crate) named: Option<Arc<Named>>,
}

impl Endpoint {
    /// A server redis-rs reaches by itself (a primary a sentinel named).
    pub(crate) fn plain(client: redis::Client) -> Endpoint {
        Endpoint {
            client,
            named: None,
        }
    }

    /// `config` with the resolver `server_name` needs.
    pub(crate) fn config(&self, config: AsyncConnectionConfig) -> AsyncConnectionConfig {
        match &self.named {
            Some(n) => config.set_dns_resolver(n.resolver.clone()),
            None => config,
        }
    }

    pub(crate) async fn multiplexed(
        &self,
        config: AsyncConnectionConfig,
    ) -> RedisResult<MultiplexedConnection> {
        self.client
            .get_multiplexed_async_connection_with_config(&self.config(config))
            .await
    }

    /// A connection for `SUBSCRIBE`/`PSUBSCRIBE`.
    pub(crate) async fn pubsub(&self) -> RedisResult<PubSub> {
        let Some(named) = &self.named else {
            return self.client.get_async_pubsub().await;
        };
        let stream = named.handshake().await?;
        PubSub::new(self.client.get_connection_info().redis_settings(), stream).await
    }
}

impl Named {
    /// A TCP connection to the url's host and a TLS handshake under the
    /// name, checked as redis-rs checks its own (`tls.ca` instead of the
    /// system's CAs, the client certificate).
    async fn handshake(
        &self,
    ) -> RedisResult<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let r = &self.resolver;
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((r.host.as_str(), r.port))
            .await?
            .collect();
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(&*addrs))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "connecting timed out")
            })??;
        let _ = tcp.set_nodelay(true);
        let trust = match (&self.ca, self.insecure) {
            (_, true) => Trust::Any,
            (Some(ca), false) => Trust::Ca(ca.clone()),
            (None, false) => Trust::System,
        };
        let unusable = |e: String| {
            redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "TLS settings", e))
        };
        let config = client_config(trust, self.identity.clone(), "redis")
            .map_err(|e| unusable(e.to_string()))?;
        let name = ServerName::try_from(r.name.clone()).map_err(|e| unusable(e.to_string()))?;
        let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
        Ok(connector.connect(name, tcp).await?)
    }
}

/// How long a connection attempt may take, as for redis-rs's connections.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One server reached under `tls.server_name`: what `ConnectionManager`
/// does for the others. Connects on first use, tries `retries` more times
/// when connecting fails (as the manager does), and connects again on the
/// next command once the connection is lost. Cheap to clone (clones share
/// the connection).
#[derive(Clone)]
pub(crate) struct NamedConn(Arc<Shared>);

struct Shared {
    endpoint: Endpoint,
    config: AsyncConnectionConfig,
    retries: usize,
    max_delay: Duration,
    /// The connection and its generation, so that a failure seen on an old
    /// connection does not drop a newer one.
    conn: Mutex<Option<(u64, MultiplexedConnection)>>,
}

impl NamedConn {
    pub(crate) fn new(
        endpoint: Endpoint,
        config: AsyncConnectionConfig,
        retries: usize,
        max_delay: Duration,
    ) -> NamedConn {
        let config = endpoint.config(config);
        NamedConn(Arc::new(Shared {
            endpoint,
            config,
            retries,
            max_delay,
            conn: Mutex::new(None),
        }))
    }

    async fn get(&self) -> RedisResult<(u64, MultiplexedConnection)> {
        let s = &self.0;
        let mut current = s.conn.lock().await;
        if let Some(c) = current.as_ref() {
            return Ok(c.clone());
        }
        let mut delay = Duration::from_millis(100);
        let mut attempt = 0;
        let conn = loop {
            let r = s
                .endpoint
                .client
                .get_multiplexed_async_connection_with_config(&s.config)
                .await;
            match r {
                Ok(c) => break c,
                Err(_) if attempt < s.retries => {
                    attempt += 1;
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(s.max_delay);
                }
                Err(e) => return Err(e),
            }
        };
        static GENERATION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let generation = GENERATION.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *current = Some((generation, conn.clone()));
        Ok((generation, conn))
    }

    /// After a command: a lost connection is opened again next time.
    async fn after<T>(&self, generation: u64, r: &RedisResult<T>) {
        if r.as_ref().is_err_and(super::connection::lost) {
            let mut current = self.0.conn.lock().await;
            if current.as_ref().is_some_and(|(g, _)| *g == generation) {
                *current = None;
            }
        }
    }
}

impl ConnectionLike for NamedConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        async move {
            let (generation, mut conn) = self.get().await?;
            let r = conn.req_packed_command(cmd).await;
            self.after(generation, &r).await;
            r
        }
        .boxed()
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        async move {
            let (generation, mut conn) = self.get().await?;
            let r = conn.req_packed_commands(pipeline, offset, count).await;
            self.after(generation, &r).await;
            r
        }
        .boxed()
    }

    fn get_db(&self) -> i64 {
        self.0
            .endpoint
            .client
            .get_connection_info()
            .redis_settings()
            .db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver() -> NameResolver {
        NameResolver {
            name: "redis.test".into(),
            host: "127.0.0.1".into(),
            port: 6380,
        }
    }

    #[test]
    fn the_name_at_the_urls_port_goes_to_the_urls_host_and_nothing_else_moves() {
        let r = resolver();
        assert_eq!(r.target("redis.test", 6380), ("127.0.0.1", 6380));
        assert_eq!(r.target("REDIS.test", 6380), ("127.0.0.1", 6380));
        // Another port of the name, another host: resolved as they are.
        assert_eq!(r.target("redis.test", 6381), ("redis.test", 6381));
        assert_eq!(r.target("10.0.0.2", 6380), ("10.0.0.2", 6380));
    }

    #[tokio::test]
    async fn a_name_no_dns_knows_resolves_to_the_urls_address() {
        let r = resolver();
        let addrs: Vec<SocketAddr> = r.resolve("redis.test", 6380).await.unwrap().collect();
        assert_eq!(addrs, ["127.0.0.1:6380".parse::<SocketAddr>().unwrap()]);
        let r = NameResolver {
            host: "localhost".into(),
            ..resolver()
        };
        let addrs: Vec<SocketAddr> = r.resolve("redis.test", 6380).await.unwrap().collect();
        assert!(
            !addrs.is_empty()
                && addrs
                    .iter()
                    .all(|a| a.ip().is_loopback() && a.port() == 6380)
        );
        // Other hosts are the system's to resolve.
        let addrs: Vec<SocketAddr> = r.resolve("127.0.0.2", 7000).await.unwrap().collect();
        assert_eq!(addrs, ["127.0.0.2:7000".parse::<SocketAddr>().unwrap()]);
    }

    fn access(tls: &str) -> crate::connectors::redis::access::RedisAccess {
        let mut a =
            crate::connectors::redis::access::RedisAccess::from_url("rediss://127.0.0.1:6380")
                .unwrap();
        a.tls = Some(toml::from_str(tls).unwrap());
        a
    }

    fn host(e: &Endpoint) -> String {
        e.client.get_connection_info().addr().to_string()
    }

    #[test]
    fn under_server_name_redis_rs_is_given_the_name_for_the_urls_node_only() {
        let a = access("server_name = \"redis.test\"");
        let e = a.endpoint().unwrap();
        assert_eq!(host(&e), "redis.test:6380");
        let r = &e.named.as_ref().unwrap().resolver;
        assert_eq!((r.host.as_str(), r.port), ("127.0.0.1", 6380));
        // On a cluster: the node in url by the name, the others as announced.
        let same = a.node_endpoint("127.0.0.1:6380").unwrap();
        assert_eq!(host(&same), "redis.test:6380");
        assert!(same.named.is_some());
        let other = a.node_endpoint("127.0.0.1:6381").unwrap();
        assert_eq!(host(&other), "127.0.0.1:6381");
        assert!(other.named.is_none());
        // Without the setting, nothing changes.
        let plain = access("ca = \"/nonexistent\"\ninsecure_skip_verify = true");
        let e = plain.endpoint().unwrap();
        assert_eq!(host(&e), "127.0.0.1:6380");
        assert!(e.named.is_none());
    }
}
