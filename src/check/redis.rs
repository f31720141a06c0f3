//! Dry run of Redis sources and sinks: login, key types, keyspace
//! notifications, and whether the user may run every command the part will
//! send. Commands are queued in a `MULTI` and discarded: Redis checks ACLs
//! when it queues a command, and runs none of them.
//!
//! On a Redis Cluster each probe goes to the primary that owns its key's
//! slot, as the part's own commands will: the node in `url` answers a key
//! of another slot with `MOVED`, which says nothing of the user's rights.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, Value};

use super::{Finding, sample_key};
use crate::connectors::redis::access::{Mode, RedisAccess};
use crate::connectors::redis::config::{
    RedisKeyspaceSourceConfig, RedisListSourceConfig, RedisPubSubSourceConfig, RedisSinkConfig,
    RedisStreamSourceConfig, WritePlan,
};
use crate::connectors::redis::slots::{owner_of, primaries_of, routing_key};
use crate::connectors::redis::source::keyspace::notifications_enabled;

fn probe_config() -> AsyncConnectionConfig {
    AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(5)))
}

async fn connect(access: &RedisAccess) -> Result<Probe<'_>, Finding> {
    let what = if access.is_tls() {
        "connecting with TLS"
    } else {
        "connecting"
    };
    let server = access
        .server_endpoint()
        .await
        .map_err(|e| Finding::error(what, &e.to_string()))?;
    let mut conn = server.multiplexed(probe_config()).await.map_err(|e| {
        if access.is_tls() && e.is_timeout() {
            // A plaintext port waits for a command line that a TLS
            // handshake never sends.
            return Finding::fail(
                format!("{what}: no answer to the TLS handshake"),
                "check that the port is the server's TLS port (tls-port), or use redis:// \
                     for a plaintext port",
            );
        }
        Finding::error(what, &crate::connectors::diagnose::chain(&e))
    })?;
    redis::cmd("PING")
        .query_async::<Value>(&mut conn)
        .await
        .map_err(|e| Finding::error(what, &e.to_string()))?;
    let cluster = match access.mode {
        Mode::Cluster => Some(Nodes {
            slots: redis::cmd("CLUSTER")
                .arg("SLOTS")
                .query_async(&mut conn)
                .await
                .map_err(|e| {
                    Finding::fail(
                        format!("cannot read where the cluster keeps its slots: {e}"),
                        "allow the user `cluster|slots` (redis-rs's cluster client asks it), \
                         and check that the server is a Redis Cluster node",
                    )
                })?,
            conns: HashMap::new(),
        }),
        _ => None,
    };
    Ok(Probe {
        access,
        server: conn,
        cluster,
    })
}

/// Where a part's probes go: the server (under Sentinel, the primary the
/// sentinels name); on a cluster, the primary that owns each key's slot.
/// Those are reached directly rather than through redis-rs's cluster
/// client, which follows a `MOVED` by sending the command alone to another
/// node: outside the `MULTI` that keeps it from running.
struct Probe<'a> {
    access: &'a RedisAccess,
    server: MultiplexedConnection,
    cluster: Option<Nodes>,
}

/// A cluster's `CLUSTER SLOTS`, and the nodes connected so far.
struct Nodes {
    slots: Value,
    conns: HashMap<(String, u16), MultiplexedConnection>,
}

impl Probe<'_> {
    /// The connection for a command naming `key`: to the node that owns its
    /// slot on a cluster, to the server otherwise (and for commands that
    /// name no key).
    async fn to(&mut self, key: Option<&[u8]>) -> Result<&mut MultiplexedConnection, Finding> {
        let (Some(nodes), Some(key)) = (&self.cluster, key) else {
            return Ok(&mut self.server);
        };
        let Some(node) = owner_of(&nodes.slots, key) else {
            return Err(Finding::fail(
                format!(
                    "no node of the cluster owns the slot of `{}`",
                    String::from_utf8_lossy(key)
                ),
                "check CLUSTER INFO: every slot must be assigned (cluster_state:ok)",
            ));
        };
        self.node(node).await
    }

    /// A connection to the cluster node `(host, port)`, opened once.
    async fn node(&mut self, node: (String, u16)) -> Result<&mut MultiplexedConnection, Finding> {
        let Some(nodes) = &mut self.cluster else {
            return Ok(&mut self.server);
        };
        if !nodes.conns.contains_key(&node) {
            let conn = node_conn(self.access, &node).await?;
            nodes.conns.insert(node.clone(), conn);
        }
        nodes
            .conns
            .get_mut(&node)
            .ok_or_else(|| Finding::fail("lost a node's connection", "run the check again"))
    }

    /// The cluster's primaries as `(host, port)`; none outside a cluster.
    fn primaries(&self) -> Vec<(String, u16)> {
        let Some(nodes) = &self.cluster else {
            return Vec::new();
        };
        primaries_of(&nodes.slots)
            .iter()
            .filter_map(|n| {
                let (host, port) = n.rsplit_once(':')?;
                Some((host.to_owned(), port.parse().ok()?))
            })
            .collect()
    }
}

async fn node_conn(
    access: &RedisAccess,
    (host, port): &(String, u16),
) -> Result<MultiplexedConnection, Finding> {
    let what = format!("connecting to the cluster node {host}:{port}");
    let endpoint = access
        .node_endpoint(&format!("{host}:{port}"))
        .map_err(|e| Finding::error(&what, &e.to_string()))?;
    endpoint
        .multiplexed(probe_config())
        .await
        .map_err(|e| Finding::error(&what, &crate::connectors::diagnose::chain(&e)))
}

fn login(access: &RedisAccess) -> String {
    let who = match (&access.username, &access.password) {
        (Some(u), _) => format!(" as ACL user `{u}`"),
        (None, Some(_)) => " with a password".into(),
        (None, None) => String::new(),
    };
    format!(
        "connected{}{who}",
        if access.is_tls() { " with TLS" } else { "" }
    )
}

/// Runs `check` after connecting; the target and findings of one part.
async fn part<F>(access: &RedisAccess, check: F) -> (String, Vec<Finding>)
where
    F: AsyncFnOnce(&mut Probe<'_>, &mut Vec<Finding>),
{
    let mut findings = Vec::new();
    match connect(access).await {
        Ok(mut probe) => {
            findings.push(Finding::ok(login(access)));
            check(&mut probe, &mut findings).await;
        }
        Err(f) => findings.push(f),
    }
    (access.shown(), findings)
}

/// Whether the user may run `commands`: each is queued in a transaction,
/// on the node that keeps its key, that is then discarded.
async fn permissions(probe: &mut Probe<'_>, commands: Vec<Cmd>, out: &mut Vec<Finding>) {
    let names: Vec<String> = commands.iter().map(command_line).collect();
    let mut denied = Vec::new();
    let mut elsewhere = Vec::new();
    for (cmd, name) in commands.iter().zip(&names) {
        let conn = match probe.to(routing_key(cmd)).await {
            Ok(conn) => conn,
            Err(f) => return out.push(f),
        };
        if let Err(e) = redis::cmd("MULTI").query_async::<Value>(conn).await {
            out.push(Finding::fail(
                format!("cannot check permissions: MULTI refused: {e}"),
                "allow the user `multi` and `discard`, or check its ACL by hand",
            ));
            return;
        }
        let reply = cmd.query_async::<Value>(conn).await;
        let _ = redis::cmd("DISCARD").query_async::<Value>(conn).await;
        if let Err(e) = reply {
            let detail = e.detail().unwrap_or(&e.to_string()).to_owned();
            match e.code() {
                // Where the key lives, or "not now": no verdict on the user.
                Some(code @ ("MOVED" | "ASK" | "TRYAGAIN" | "CLUSTERDOWN")) => {
                    elsewhere.push(format!("{name} ({code} {detail})"));
                }
                _ => denied.push(format!("{name} ({detail})")),
            }
        }
    }
    if denied.is_empty() && elsewhere.is_empty() {
        out.push(Finding::ok(format!(
            "the user may run what this part sends: {}",
            names.join(", ")
        )));
    }
    if !denied.is_empty() {
        out.push(Finding::fail(
            format!("the user may not run: {}", denied.join("; ")),
            "grant them on the server, e.g. ACL SETUSER <user> +<command> ~<key pattern>, \
             or use another user",
        ));
    }
    if !elsewhere.is_empty() {
        out.push(redirected(&probe.access.mode, &elsewhere));
    }
}

/// Probes a cluster answered with a redirection instead of a verdict.
fn redirected(mode: &Mode, probes: &[String]) -> Finding {
    let probes = probes.join("; ");
    match mode {
        Mode::Cluster => Finding::fail(
            format!("not checked, the cluster sent them to another node: {probes}"),
            "the cluster was moving slots (resharding, failover) or is not ok: check \
             CLUSTER INFO and run the check again",
        ),
        _ => Finding::fail(
            format!("the server is a Redis Cluster node and keeps these keys on others: {probes}"),
            "set `cluster = true` on this part: ferry then writes each key to its node",
        ),
    }
}

/// `SET key` as shown: the command and its key.
fn command_line(cmd: &Cmd) -> String {
    let args: Vec<String> = cmd
        .args_iter()
        .take(2)
        .map(|a| match a {
            redis::Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
            redis::Arg::Cursor => "0".into(),
            _ => String::new(),
        })
        .collect();
    args.join(" ")
}

fn cmd(name: &str, args: &[&str]) -> Cmd {
    let mut c = redis::cmd(name);
    for a in args {
        c.arg(*a);
    }
    c
}

async fn key_type(probe: &mut Probe<'_>, key: &str) -> Result<String, Finding> {
    let conn = probe.to(Some(key.as_bytes())).await?;
    redis::cmd("TYPE")
        .arg(key)
        .query_async::<String>(conn)
        .await
        .map_err(|e| Finding::error(&format!("TYPE {key}"), &e.to_string()))
}

/// A key must be of `want` type, or missing when `missing_ok`.
async fn expect_type(
    probe: &mut Probe<'_>,
    key: &str,
    want: &str,
    missing: Result<&str, &str>,
    out: &mut Vec<Finding>,
) {
    match key_type(probe, key).await {
        Ok(t) if t == want => out.push(Finding::ok(format!("`{key}` is a {want}"))),
        Ok(t) if t == "none" => match missing {
            Ok(note) => out.push(Finding::ok(format!("`{key}` does not exist yet; {note}"))),
            Err(fix) => out.push(Finding::fail(format!("`{key}` does not exist"), fix)),
        },
        Ok(t) => out.push(Finding::fail(
            format!("`{key}` is a {t}, not a {want}"),
            format!("point this part at a {want} key, or remove the {t} key"),
        )),
        Err(f) => out.push(f),
    }
}

pub(super) async fn sink(c: &RedisSinkConfig) -> (String, Vec<Finding>) {
    part(&c.access(), async |probe, out| {
        let key = sample_key(c.key.as_str());
        let mut commands = Vec::new();
        let ttl = |t: &Option<Duration>| t.is_some();
        let (write, has_ttl, replace) = match &c.plan() {
            WritePlan::Set { ttl: t } => (cmd("SET", &[&key, "v"]), ttl(t), false),
            WritePlan::Hset {
                ttl: t, replace, ..
            } => (cmd("HSET", &[&key, "f", "v"]), ttl(t), *replace),
            WritePlan::Push {
                left,
                replace,
                ttl: t,
            } => (
                cmd(if *left { "LPUSH" } else { "RPUSH" }, &[&key, "v"]),
                ttl(t),
                *replace,
            ),
            WritePlan::Sadd {
                replace, ttl: t, ..
            } => (cmd("SADD", &[&key, "m"]), ttl(t), *replace),
            WritePlan::Zadd {
                replace, ttl: t, ..
            } => (cmd("ZADD", &[&key, "1", "m"]), ttl(t), *replace),
            WritePlan::Xadd { ttl: t, .. } => (cmd("XADD", &[&key, "*", "f", "v"]), ttl(t), false),
            WritePlan::Publish => (cmd("PUBLISH", &[&key, "v"]), false, false),
        };
        if c.exactly_once || c.sync {
            // The write runs inside ferry's script, which Redis checks
            // for the keys and commands it touches when it runs.
            commands.push(cmd(
                "EVALSHA",
                &["0000000000000000000000000000000000000000", "1", &key],
            ));
            commands.push(cmd(
                "SCRIPT",
                &["EXISTS", "0000000000000000000000000000000000000000"],
            ));
        }
        commands.push(write);
        if has_ttl {
            commands.push(cmd("PEXPIRE", &[&key, "1000"]));
        }
        if replace {
            commands.push(cmd("DEL", &[&key]));
        }
        permissions(probe, commands, out).await;
    })
    .await
}

pub(super) async fn stream_source(c: &RedisStreamSourceConfig) -> (String, Vec<Finding>) {
    part(&c.access(), async |probe, out| {
        let group = c.group.as_str();
        for stream in &c.streams {
            let s = stream.as_str();
            let missing = if c.create_group {
                Ok("ferry creates it with the group")
            } else {
                Err("create the stream and its group, or set create_group = true")
            };
            expect_type(probe, s, "stream", missing, out).await;
            if key_type(probe, s).await.as_deref() == Ok("stream") {
                let conn = match probe.to(Some(s.as_bytes())).await {
                    Ok(conn) => conn,
                    Err(f) => return out.push(f),
                };
                let groups: Result<Vec<HashMap<String, Value>>, _> =
                    redis::cmd("XINFO").arg("GROUPS").arg(s).query_async(conn).await;
                match groups {
                    Ok(groups) => {
                        let found = groups.iter().any(|g| {
                            matches!(g.get("name"), Some(Value::BulkString(n)) if n == group.as_bytes())
                        });
                        if found {
                            out.push(Finding::ok(format!("group `{group}` exists on `{s}`")));
                        } else if c.create_group {
                            out.push(Finding::ok(format!("group `{group}` is created on start")));
                        } else {
                            out.push(Finding::fail(
                                format!("group `{group}` does not exist on `{s}`"),
                                format!("XGROUP CREATE {s} {group} 0, or set create_group = true"),
                            ));
                        }
                    }
                    Err(e) => out.push(Finding::error(&format!("XINFO GROUPS {s}"), &e.to_string())),
                }
            }
            let mut commands = vec![
                cmd("XREADGROUP", &["GROUP", group, "ferry-check", "COUNT", "1", "STREAMS", s, ">"]),
                cmd("XACK", &[s, group, "0-1"]),
                cmd("XAUTOCLAIM", &[s, group, "ferry-check", "60000", "0-0"]),
                cmd("XPENDING", &[s, group]),
                cmd("XINFO", &["GROUPS", s]),
            ];
            if c.create_group {
                commands.push(cmd("XGROUP", &["CREATE", s, group, "$", "MKSTREAM"]));
            }
            if c.trim {
                commands.push(cmd("XTRIM", &[s, "MINID", "0-1"]));
            }
            permissions(probe, commands, out).await;
        }
    })
    .await
}

pub(super) async fn list_source(c: &RedisListSourceConfig) -> (String, Vec<Finding>) {
    part(&c.access(), async |probe, out| {
        let list = c.list.as_str();
        expect_type(probe, list, "list", Ok("ferry waits for elements"), out).await;
        let processing = format!("{list}:processing:ferry-check");
        let commands = vec![
            cmd("LMOVE", &[list, &processing, "RIGHT", "LEFT"]),
            cmd("BLMOVE", &[list, &processing, "RIGHT", "LEFT", "1"]),
            cmd("LREM", &[&processing, "1", "v"]),
            cmd("LLEN", &[list]),
        ];
        permissions(probe, commands, out).await;
    })
    .await
}

pub(super) async fn pubsub_source(c: &RedisPubSubSourceConfig) -> (String, Vec<Finding>) {
    // SUBSCRIBE cannot be queued in a transaction; logging in is what can
    // be checked without subscribing.
    let _ = c;
    part(&c.access(), async |_, _| {}).await
}

pub(super) async fn keyspace_source(c: &RedisKeyspaceSourceConfig) -> (String, Vec<Finding>) {
    part(&c.access(), async |probe, out| {
        if c.until != crate::connectors::redis::config::KeyspaceUntil::Snapshot {
            // On a cluster every primary sends its own keys' notifications.
            let primaries = probe.primaries();
            if primaries.is_empty() {
                notifications(&mut probe.server, "", c.configure_notifications, out).await;
            }
            for (host, port) in primaries {
                let on = format!(" on {host}:{port}");
                match probe.node((host, port)).await {
                    Ok(conn) => notifications(conn, &on, c.configure_notifications, out).await,
                    Err(f) => out.push(f),
                }
            }
        }
        let key = sample_key(c.pattern.as_str()).replace('*', "ferry-check");
        let commands = vec![
            cmd("SCAN", &["0", "MATCH", c.pattern.as_str(), "COUNT", "100"]),
            cmd("TYPE", &[&key]),
            cmd("GET", &[&key]),
            cmd("HGETALL", &[&key]),
        ];
        permissions(probe, commands, out).await;
    })
    .await
}

/// Whether the server (`on`: which node of a cluster) sends keyspace
/// notifications, or ferry may turn them on.
async fn notifications(
    conn: &mut MultiplexedConnection,
    on: &str,
    configure: bool,
    out: &mut Vec<Finding>,
) {
    let reply: Result<Vec<String>, _> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("notify-keyspace-events")
        .query_async(conn)
        .await;
    match reply {
        Ok(pair) => {
            let flags = pair.get(1).cloned().unwrap_or_default();
            if notifications_enabled(&flags) {
                out.push(Finding::ok(format!(
                    "notify-keyspace-events is `{flags}`{on}"
                )));
            } else if configure {
                out.push(Finding::ok(format!(
                    "notify-keyspace-events is `{flags}`{on}; ferry turns it on (configure_notifications)"
                )));
            } else {
                out.push(Finding::fail(
                    format!("notify-keyspace-events is `{flags}`{on}: no keyspace notifications"),
                    "CONFIG SET notify-keyspace-events KA on the server (and in redis.conf), \
                     or set configure_notifications = true",
                ));
            }
        }
        Err(e) => out.push(Finding::fail(
            format!("cannot read notify-keyspace-events{on}: {e}"),
            "allow the user `config|get`, or make sure notify-keyspace-events includes K and A",
        )),
    }
}
