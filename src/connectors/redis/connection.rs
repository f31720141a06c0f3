//! One connection, whatever Redis runs as: a single server, a Redis
//! Cluster, or a primary watched by Sentinel. Every source and sink talks
//! through [`RedisConn`]; the cluster and Sentinel clients are redis-rs's
//! own, and this file only adds what they leave to the caller:
//!
//! - **Cluster**: redis-rs follows `MOVED`/`ASK` and refreshes its slot
//!   map for single commands, but sends a pipeline to one slot only. So a
//!   batch is split by slot ([`super::slots`]), the slot pipelines run
//!   concurrently (redis-rs multiplexes them over one connection per node,
//!   which pipelines them per node), and a command a pipeline got
//!   redirected is sent again alone, which lets redis-rs follow the
//!   redirect. A key's writes share a slot, so their order is kept.
//! - **Sentinel**: the primary is asked of the sentinels, reached, and
//!   asked again after any connection error, any `READONLY` reply (a
//!   demoted primary) and every [`RECHECK`]: writes never go on to a
//!   primary the sentinels have replaced.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::join_all;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::Slot;
use redis::sentinel::SentinelClient;
use redis::{Cmd, RedisFuture, RedisResult, Value};
use tokio::sync::Mutex;

use super::slots::routing_key;

/// How often a Sentinel-discovered primary is confirmed with the sentinels
/// even when nothing failed: bounds how long writes could go to a primary
/// that was replaced while it stayed reachable (a network split).
pub(crate) const RECHECK: Duration = Duration::from_secs(2);

/// A connection to Redis that reconnects by itself; cheap to clone (clones
/// share the connection).
#[derive(Clone)]
pub(crate) enum RedisConn {
    Single(ConnectionManager),
    /// One server reached under `tls.server_name`.
    Named(super::named::NamedConn),
    Cluster(Cluster),
    Sentinel(Sentinel),
}

/// Makes a cluster client from seed nodes.
pub(crate) type ClusterOpener = Arc<
    dyn Fn(Vec<redis::ConnectionInfo>) -> RedisResult<redis::cluster::ClusterClient> + Send + Sync,
>;

/// A Redis Cluster, connected on first use. Once connected, every node of
/// the cluster (primaries and replicas) becomes a seed: redis-rs reconnects
/// "from the initial nodes" after losing a node, and the one node in `url`
/// may be the one that died.
#[derive(Clone)]
pub(crate) struct Cluster {
    open: ClusterOpener,
    seeds: Arc<std::sync::Mutex<Vec<redis::ConnectionInfo>>>,
    conn: Arc<Mutex<Option<ClusterConnection>>>,
}

impl Cluster {
    pub(crate) fn new(open: ClusterOpener, seed: redis::ConnectionInfo) -> Cluster {
        Cluster {
            open,
            seeds: Arc::new(std::sync::Mutex::new(vec![seed])),
            conn: Arc::new(Mutex::new(None)),
        }
    }

    async fn get(&self) -> RedisResult<ClusterConnection> {
        let mut conn = self.conn.lock().await;
        if let Some(c) = conn.as_ref() {
            return Ok(c.clone());
        }
        let seeds = crate::sync::lock(&self.seeds).clone();
        let mut c = (self.open)(seeds.clone())?.get_async_connection().await?;
        let slots: RedisResult<Value> =
            redis::cmd("CLUSTER").arg("SLOTS").query_async(&mut c).await;
        if let Ok(slots) = slots {
            let template = seeds[0].clone();
            let nodes: Vec<redis::ConnectionInfo> = super::slots::nodes_of(&slots)
                .into_iter()
                .map(|(host, port)| with_node(&template, host, port))
                .collect();
            if !nodes.is_empty() {
                *crate::sync::lock(&self.seeds) = nodes;
            }
        }
        *conn = Some(c.clone());
        Ok(c)
    }

    /// Every node known (after the first connection, the whole cluster).
    pub(crate) async fn seeds(&self) -> RedisResult<Vec<redis::ConnectionInfo>> {
        self.get().await?;
        Ok(crate::sync::lock(&self.seeds).clone())
    }

    /// After a connection failure: connect again from every known node.
    async fn forget(&self) {
        *self.conn.lock().await = None;
    }

    /// The primaries' addresses (`host:port`), from `CLUSTER SLOTS`.
    pub(crate) async fn primaries(&self) -> RedisResult<Vec<String>> {
        let mut conn = self.get().await?;
        let slots: RedisResult<Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await;
        if slots.as_ref().is_err_and(lost) {
            self.forget().await;
        }
        Ok(super::slots::primaries_of(&slots?))
    }

    async fn query(&self, cmd: &Cmd) -> RedisResult<Value> {
        let r = self.get().await?.req_packed_command(cmd).await;
        if r.as_ref().is_err_and(lost) {
            self.forget().await;
        }
        r
    }

    async fn query_pipeline(
        &self,
        pipeline: &redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let r = self
            .get()
            .await?
            .req_packed_commands(pipeline, offset, count)
            .await;
        if r.as_ref().is_err_and(lost) {
            self.forget().await;
        }
        r
    }
}

/// `template` (its login, TLS) for another node.
fn with_node(template: &redis::ConnectionInfo, host: String, port: u16) -> redis::ConnectionInfo {
    let addr = match template.addr().clone() {
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
    template.clone().set_addr(addr)
}

/// An error after which the connection is rebuilt.
pub(crate) fn lost(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

/// A primary found through sentinels.
#[derive(Clone)]
pub(crate) struct Sentinel {
    sentinels: Arc<Mutex<SentinelClient>>,
    config: Arc<ConnectionManagerConfig>,
    current: Arc<Mutex<Option<Primary>>>,
}

#[derive(Clone)]
struct Primary {
    conn: ConnectionManager,
    client: redis::Client,
    checked: Instant,
    /// Something failed: ask the sentinels before the next command.
    suspect: bool,
}

impl Sentinel {
    pub(crate) fn new(sentinels: SentinelClient, config: ConnectionManagerConfig) -> Sentinel {
        Sentinel {
            sentinels: Arc::new(Mutex::new(sentinels)),
            config: Arc::new(config),
            current: Arc::new(Mutex::new(None)),
        }
    }

    /// The client of the primary the sentinels name now.
    pub(crate) async fn primary_client(&self) -> RedisResult<redis::Client> {
        self.get().await.map(|p| p.client)
    }

    async fn get(&self) -> RedisResult<Primary> {
        let mut current = self.current.lock().await;
        if let Some(p) = current.as_ref()
            && !p.suspect
            && p.checked.elapsed() < RECHECK
        {
            return Ok(p.clone());
        }
        // redis-rs asks the sentinels and checks with `ROLE` that the
        // server it names is a primary.
        let client = self.sentinels.lock().await.async_get_client().await?;
        if let Some(p) = current.as_mut()
            && p.client.get_connection_info().addr() == client.get_connection_info().addr()
        {
            p.checked = Instant::now();
            p.suspect = false;
            return Ok(p.clone());
        }
        if let Some(old) = current.as_ref() {
            tracing::warn!(
                from = %old.client.get_connection_info().addr(),
                to = %client.get_connection_info().addr(),
                "redis sentinel: the primary changed; writing to the new one"
            );
        }
        let conn =
            ConnectionManager::new_with_config(client.clone(), (*self.config).clone()).await?;
        let p = Primary {
            conn,
            client,
            checked: Instant::now(),
            suspect: false,
        };
        *current = Some(p.clone());
        Ok(p)
    }

    /// After a failure that may mean the primary moved: ask again next time.
    async fn forget(&self) {
        if let Some(p) = self.current.lock().await.as_mut() {
            p.suspect = true;
        }
    }
}

/// Whether a reply says this server may no longer be the primary.
fn demoted(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || matches!(e.code(), Some("READONLY" | "MASTERDOWN"))
}

fn demoted_value(v: &Value) -> bool {
    match v {
        Value::ServerError(e) => matches!(e.code(), "READONLY" | "MASTERDOWN"),
        Value::Array(vs) => vs.iter().any(demoted_value),
        _ => false,
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            RedisConn::Single(c) => c.req_packed_command(cmd),
            RedisConn::Named(c) => c.req_packed_command(cmd),
            RedisConn::Cluster(c) => async move { c.query(cmd).await }.boxed(),
            RedisConn::Sentinel(s) => async move {
                let mut p = s.get().await?;
                let r = p.conn.req_packed_command(cmd).await;
                if r.as_ref().map_or_else(demoted, demoted_value) {
                    s.forget().await;
                }
                r
            }
            .boxed(),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            RedisConn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Named(c) => c.req_packed_commands(pipeline, offset, count),
            RedisConn::Cluster(c) => {
                async move { c.query_pipeline(pipeline, offset, count).await }.boxed()
            }
            RedisConn::Sentinel(s) => async move {
                let mut p = s.get().await?;
                let r = p.conn.req_packed_commands(pipeline, offset, count).await;
                let stale = match &r {
                    Err(e) => demoted(e),
                    Ok(vs) => vs.iter().any(demoted_value),
                };
                if stale {
                    s.forget().await;
                }
                r
            }
            .boxed(),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            RedisConn::Single(c) => c.get_db(),
            RedisConn::Named(c) => c.get_db(),
            RedisConn::Cluster(_) => 0,
            RedisConn::Sentinel(_) => 0,
        }
    }
}

/// Replies that mean "not here, or not now" on a cluster: the command was
/// not run, and sent again alone redis-rs finds where it belongs.
fn redirected(reply: &RedisResult<Value>) -> bool {
    reply
        .as_ref()
        .is_err_and(|e| matches!(e.code(), Some("MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN")))
}

impl RedisConn {
    pub(crate) fn is_cluster(&self) -> bool {
        matches!(self, RedisConn::Cluster(_))
    }

    /// Something suggests the server may no longer be the primary (its
    /// replicas left it): under Sentinel, ask the sentinels again before
    /// the next command.
    pub(crate) async fn suspect(&self) {
        if let RedisConn::Sentinel(s) = self {
            s.forget().await;
        }
    }

    /// Runs `commands` pipelined and returns one reply per command, in
    /// order; `Err` when the connection failed (nothing is known of what
    /// ran). `atomic`: in `MULTI` (on a cluster, one `MULTI` per slot,
    /// enough for writes that must land together on one key). Borrowed
    /// commands are cloned once, into the pipeline.
    pub(crate) async fn run<C: Borrow<Cmd>>(
        &mut self,
        commands: &[C],
        atomic: bool,
    ) -> RedisResult<Vec<RedisResult<Value>>> {
        let pipe = |cmds: &mut dyn Iterator<Item = &C>| {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            if atomic {
                pipe.atomic();
            }
            for c in cmds {
                pipe.add_command(c.borrow().clone());
            }
            pipe
        };
        let RedisConn::Cluster(cluster) = self else {
            return pipe(&mut commands.iter()).query_async(self).await;
        };
        let conn = cluster.get().await?;
        // Group by slot, in the order slots first appear.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut by_slot: HashMap<Option<Slot>, usize> = HashMap::new();
        for (i, c) in commands.iter().enumerate() {
            let slot = routing_key(c.borrow()).map(Slot::for_key);
            let g = *by_slot.entry(slot).or_insert_with(|| {
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[g].push(i);
        }
        let sends = groups.iter().map(|group| {
            let mut conn = conn.clone();
            let p = pipe(&mut group.iter().map(|&i| &commands[i]));
            async move { p.query_async::<Vec<RedisResult<Value>>>(&mut conn).await }
        });
        let results = join_all(sends).await;
        let mut out: Vec<Option<RedisResult<Value>>> = (0..commands.len()).map(|_| None).collect();
        if results.iter().any(|r| r.as_ref().is_err_and(lost)) {
            cluster.forget().await;
        }
        for (group, result) in groups.iter().zip(results) {
            let mut replies = result?;
            if replies.iter().any(redirected) {
                let mut conn = conn.clone();
                if atomic {
                    // `MULTI` was refused whole: send the slot's pipeline
                    // again once redis-rs learnt where the slot lives.
                    let _: RedisResult<Value> = redis::cmd("EXISTS")
                        .arg(routing_key(commands[group[0]].borrow()).unwrap_or_default())
                        .query_async(&mut conn)
                        .await;
                    replies = pipe(&mut group.iter().map(|&i| &commands[i]))
                        .query_async(&mut conn)
                        .await?;
                } else {
                    for (reply, &i) in replies.iter_mut().zip(group) {
                        if redirected(reply) {
                            *reply = commands[i].borrow().query_async(&mut conn).await;
                        }
                    }
                }
            }
            for (reply, &i) in replies.into_iter().zip(group) {
                out[i] = Some(reply);
            }
        }
        Ok(out
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(redis::RedisError::from((
                        redis::ErrorKind::Client,
                        "no reply",
                    )))
                })
            })
            .collect())
    }
}
