//! Dry run of Redis sources and sinks: login, key types, keyspace
//! notifications, and whether the user may run every command the part will
//! send. Commands are queued in a `MULTI` and discarded: Redis checks ACLs
//! when it queues a command, and runs none of them.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Cmd, Value};

use super::{Finding, sample_key};
use crate::connectors::redis::access::RedisAccess;
use crate::connectors::redis::config::{
    RedisKeyspaceSourceConfig, RedisListSourceConfig, RedisPubSubSourceConfig, RedisSinkConfig,
    RedisStreamSourceConfig, WritePlan,
};
use crate::connectors::redis::source::keyspace::notifications_enabled;

async fn connect(access: &RedisAccess) -> Result<MultiplexedConnection, Finding> {
    let what = if access.is_tls() {
        "connecting with TLS"
    } else {
        "connecting"
    };
    let server = access
        .server_endpoint()
        .await
        .map_err(|e| Finding::error(what, &e.to_string()))?;
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(Duration::from_secs(5)));
    let mut conn = server.multiplexed(config).await.map_err(|e| {
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
    Ok(conn)
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
    F: AsyncFnOnce(&mut MultiplexedConnection, &mut Vec<Finding>),
{
    let mut findings = Vec::new();
    match connect(access).await {
        Ok(mut conn) => {
            findings.push(Finding::ok(login(access)));
            check(&mut conn, &mut findings).await;
        }
        Err(f) => findings.push(f),
    }
    (access.shown(), findings)
}

/// Whether the user may run `commands`: each is queued in a transaction
/// that is then discarded.
async fn permissions(conn: &mut MultiplexedConnection, commands: Vec<Cmd>, out: &mut Vec<Finding>) {
    let names: Vec<String> = commands.iter().map(command_line).collect();
    if let Err(e) = redis::cmd("MULTI").query_async::<Value>(conn).await {
        out.push(Finding::fail(
            format!("cannot check permissions: MULTI refused: {e}"),
            "allow the user `multi` and `discard`, or check its ACL by hand",
        ));
        return;
    }
    let mut denied = Vec::new();
    for (cmd, name) in commands.iter().zip(&names) {
        if let Err(e) = cmd.query_async::<Value>(conn).await {
            denied.push(format!("{name} ({})", e.detail().unwrap_or(&e.to_string())));
        }
    }
    let _ = redis::cmd("DISCARD").query_async::<Value>(conn).await;
    if denied.is_empty() {
        out.push(Finding::ok(format!(
            "the user may run what this part sends: {}",
            names.join(", ")
        )));
    } else {
        out.push(Finding::fail(
            format!("the user may not run: {}", denied.join("; ")),
            "grant them on the server, e.g. ACL SETUSER <user> +<command> ~<key pattern>, \
             or use another user",
        ));
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

async fn key_type(conn: &mut MultiplexedConnection, key: &str) -> Result<String, String> {
    redis::cmd("TYPE")
        .arg(key)
        .query_async::<String>(conn)
        .await
        .map_err(|e| e.to_string())
}

/// A key must be of `want` type, or missing when `missing_ok`.
async fn expect_type(
    conn: &mut MultiplexedConnection,
    key: &str,
    want: &str,
    missing: Result<&str, &str>,
    out: &mut Vec<Finding>,
) {
    match key_type(conn, key).await {
        Ok(t) if t == want => out.push(Finding::ok(format!("`{key}` is a {want}"))),
        Ok(t) if t == "none" => match missing {
            Ok(note) => out.push(Finding::ok(format!("`{key}` does not exist yet; {note}"))),
            Err(fix) => out.push(Finding::fail(format!("`{key}` does not exist"), fix)),
        },
        Ok(t) => out.push(Finding::fail(
            format!("`{key}` is a {t}, not a {want}"),
            format!("point this part at a {want} key, or remove the {t} key"),
        )),
        Err(e) => out.push(Finding::error(&format!("TYPE {key}"), &e)),
    }
}

pub(super) async fn sink(c: &RedisSinkConfig) -> (String, Vec<Finding>) {
    part(&c.access(), async |conn, out| {
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
        permissions(conn, commands, out).await;
    })
    .await
}

pub(super) async fn stream_source(c: &RedisStreamSourceConfig) -> (String, Vec<Finding>) {
    part(&c.access(), async |conn, out| {
        let group = c.group.as_str();
        for stream in &c.streams {
            let s = stream.as_str();
            let missing = if c.create_group {
                Ok("ferry creates it with the group")
            } else {
                Err("create the stream and its group, or set create_group = true")
            };
            expect_type(conn, s, "stream", missing, out).await;
            if key_type(conn, s).await.as_deref() == Ok("stream") {
                let groups: Result<Vec<std::collections::HashMap<String, Value>>, _> =
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
            permissions(conn, commands, out).await;
        }
    })
    .await
}

pub(super) async fn list_source(c: &RedisListSourceConfig) -> (String, Vec<Finding>) {
    part(&c.access(), async |conn, out| {
        let list = c.list.as_str();
        expect_type(conn, list, "list", Ok("ferry waits for elements"), out).await;
        let processing = format!("{list}:processing:ferry-check");
        let commands = vec![
            cmd("LMOVE", &[list, &processing, "RIGHT", "LEFT"]),
            cmd("BLMOVE", &[list, &processing, "RIGHT", "LEFT", "1"]),
            cmd("LREM", &[&processing, "1", "v"]),
            cmd("LLEN", &[list]),
        ];
        permissions(conn, commands, out).await;
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
    part(&c.access(), async |conn, out| {
        if c.until != crate::connectors::redis::config::KeyspaceUntil::Snapshot {
            let reply: Result<Vec<String>, _> = redis::cmd("CONFIG")
                .arg("GET")
                .arg("notify-keyspace-events")
                .query_async(conn)
                .await;
            match reply {
                Ok(pair) => {
                    let flags = pair.get(1).cloned().unwrap_or_default();
                    if notifications_enabled(&flags) {
                        out.push(Finding::ok(format!("notify-keyspace-events is `{flags}`")));
                    } else if c.configure_notifications {
                        out.push(Finding::ok(format!(
                            "notify-keyspace-events is `{flags}`; ferry turns it on (configure_notifications)"
                        )));
                    } else {
                        out.push(Finding::fail(
                            format!("notify-keyspace-events is `{flags}`: no keyspace notifications"),
                            "CONFIG SET notify-keyspace-events KA on the server (and in redis.conf), \
                             or set configure_notifications = true",
                        ));
                    }
                }
                Err(e) => out.push(Finding::fail(
                    format!("cannot read notify-keyspace-events: {e}"),
                    "allow the user `config|get`, or make sure notify-keyspace-events includes K and A",
                )),
            }
        }
        let key = sample_key(c.pattern.as_str()).replace('*', "ferry-check");
        let commands = vec![
            cmd("SCAN", &["0", "MATCH", c.pattern.as_str(), "COUNT", "100"]),
            cmd("TYPE", &[&key]),
            cmd("GET", &[&key]),
            cmd("HGETALL", &[&key]),
        ];
        permissions(conn, commands, out).await;
    })
    .await
}
