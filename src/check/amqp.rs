//! Dry run of AMQP sources and sinks: log in (user, password or client
//! certificate, vhost), then check with passive declarations, which change
//! nothing, that the queue and exchange exist or are declared by ferry.

use lapin::options::{ExchangeDeclareOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};

use super::Finding;
use crate::connectors::amqp::access::{AmqpAccess, AuthMechanism};
use crate::connectors::amqp::config::{AmqpSinkConfig, AmqpSourceConfig, Topology};
use crate::connectors::amqp::connection;
use crate::connectors::diagnose::chain;

fn login(access: &AmqpAccess) -> String {
    let user = access
        .uri()
        .map(|u| u.authority.userinfo.username)
        .unwrap_or_default();
    let how = match access.mechanism {
        AuthMechanism::External => "with the client certificate (EXTERNAL)".to_owned(),
        AuthMechanism::Plain => format!("as `{user}`"),
    };
    format!("connected {how} to vhost `{}`", access.vhost())
}

async fn part<F>(access: &AmqpAccess, check: F) -> (String, Vec<Finding>)
where
    F: AsyncFnOnce(&Connection, &mut Vec<Finding>),
{
    let mut findings = Vec::new();
    match connection::open(access, "ferry-check").await {
        Ok((conn, channel)) => {
            findings.push(Finding::ok(login(access)));
            drop(channel);
            check(&conn, &mut findings).await;
            let _ = conn.close(200, "ferry check done".into()).await;
        }
        Err(e) => findings.push(Finding::error("connecting", &chain(&e))),
    }
    (access.shown(), findings)
}

/// A passive declaration closes its channel when the thing is missing, so
/// each gets a channel of its own.
async fn channel(conn: &Connection, out: &mut Vec<Finding>) -> Option<Channel> {
    match conn.create_channel().await {
        Ok(c) => Some(c),
        Err(e) => {
            out.push(Finding::error("opening a channel", &e.to_string()));
            None
        }
    }
}

async fn queue(conn: &Connection, name: &str, topology: &Topology, out: &mut Vec<Finding>) {
    let Some(ch) = channel(conn, out).await else {
        return;
    };
    let passive = QueueDeclareOptions {
        passive: true,
        ..QueueDeclareOptions::default()
    };
    match ch
        .queue_declare(name.into(), passive, FieldTable::default())
        .await
    {
        Ok(q) => out.push(Finding::ok(format!(
            "queue `{name}` exists ({} messages ready)",
            q.message_count()
        ))),
        Err(_) if topology.queues.iter().any(|q| q.name.as_str() == name) => out.push(Finding::ok(
            format!("queue `{name}` does not exist yet; ferry declares it (`declare`)"),
        )),
        Err(e) => out.push(Finding::fail(
            format!("queue `{name}`: {e}"),
            "declare the queue on the server, or add it to `declare.queues`",
        )),
    }
}

async fn exchange(conn: &Connection, name: &str, topology: &Topology, out: &mut Vec<Finding>) {
    let Some(ch) = channel(conn, out).await else {
        return;
    };
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };
    let kind = lapin::ExchangeKind::Topic;
    match ch
        .exchange_declare(name.into(), kind, passive, FieldTable::default())
        .await
    {
        Ok(()) => out.push(Finding::ok(format!("exchange `{name}` exists"))),
        Err(_) if topology.exchanges.iter().any(|e| e.name.as_str() == name) => {
            out.push(Finding::ok(format!(
                "exchange `{name}` does not exist yet; ferry declares it"
            )))
        }
        Err(e) => out.push(Finding::fail(
            format!("exchange `{name}`: {e}"),
            "declare the exchange on the server, or add it to `declare.exchanges`",
        )),
    }
}

pub(super) async fn source(c: &AmqpSourceConfig) -> (String, Vec<Finding>) {
    part(&c.access(), async |conn, out| {
        queue(conn, c.queue.as_str(), &c.declare, out).await;
    })
    .await
}

pub(super) async fn sink(c: &AmqpSinkConfig) -> (String, Vec<Finding>) {
    part(&c.access(), async |conn, out| {
        if c.exchange.is_empty() {
            // The default exchange routes to the queue the key names.
            if let Some(q) = c.routing_key.literal() {
                queue(conn, q, &c.declare, out).await;
            }
        } else {
            exchange(conn, &c.exchange, &c.declare, out).await;
        }
    })
    .await
}
