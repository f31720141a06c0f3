//! Connecting to RabbitMQ and declaring what the config asks for.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{Channel, Connection, ConnectionProperties, DefaultConnectionBuilder};

use super::access::AmqpAccess;

use super::config::{ExchangeKind, QueueKind, Topology};
use crate::error::ConnectorError;

/// Opens a connection named after the pipeline (as RabbitMQ's management
/// UI and `rabbitmqctl list_connections` show it) and one channel, with the
/// credentials and TLS settings of `access`.
pub(crate) async fn open(
    access: &AmqpAccess,
    name: &str,
) -> Result<(Connection, Channel), ConnectorError> {
    let props =
        ConnectionProperties::default().with_connection_name(LongString::from(name.to_owned()));
    let connecting = |e| ConnectorError::amqp(format!("connecting to {}", access.shown()), e);
    let conn = DefaultConnectionBuilder::new()
        .map_err(connecting)?
        .with_uri(access.uri()?)
        .with_properties(props)
        .with_tls_config(access.tls_config()?)
        .connect()
        .await
        .map_err(connecting)?;
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| ConnectorError::amqp("opening a channel", e))?;
    Ok((conn, channel))
}

/// Declares exchanges, then queues, then bindings. Declaring what exists
/// with the same settings is a no-op; with other settings RabbitMQ refuses
/// (PRECONDITION_FAILED), which is reported as a configuration error.
pub(crate) async fn declare(channel: &Channel, topology: &Topology) -> Result<(), ConnectorError> {
    for e in &topology.exchanges {
        let kind = match e.kind {
            ExchangeKind::Direct => lapin::ExchangeKind::Direct,
            ExchangeKind::Fanout => lapin::ExchangeKind::Fanout,
            ExchangeKind::Topic => lapin::ExchangeKind::Topic,
            ExchangeKind::Headers => lapin::ExchangeKind::Headers,
        };
        let options = ExchangeDeclareOptions {
            durable: e.durable,
            ..ExchangeDeclareOptions::default()
        };
        channel
            .exchange_declare(e.name.as_str().into(), kind, options, FieldTable::default())
            .await
            .map_err(|err| ConnectorError::amqp(format!("declaring exchange `{}`", e.name), err))?;
    }
    for q in &topology.queues {
        let mut args = FieldTable::default();
        if let Some(dlx) = &q.dead_letter_exchange {
            args.insert("x-dead-letter-exchange".into(), long(dlx));
        }
        if let Some(rk) = &q.dead_letter_routing_key {
            args.insert("x-dead-letter-routing-key".into(), long(rk));
        }
        if let Some(n) = q.max_length {
            args.insert(
                "x-max-length".into(),
                AMQPValue::LongLongInt(n.get() as i64),
            );
        }
        if let Some(ttl) = q.message_ttl {
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(ttl.0.as_millis() as i64),
            );
        }
        if q.kind == QueueKind::Quorum {
            args.insert("x-queue-type".into(), long("quorum"));
        }
        let options = QueueDeclareOptions {
            durable: q.durable,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(q.name.as_str().into(), options, args)
            .await
            .map_err(|err| ConnectorError::amqp(format!("declaring queue `{}`", q.name), err))?;
    }
    for b in &topology.bindings {
        channel
            .queue_bind(
                b.queue.as_str().into(),
                b.exchange.as_str().into(),
                b.routing_key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|err| {
                ConnectorError::amqp(
                    format!("binding queue `{}` to `{}`", b.queue, b.exchange),
                    err,
                )
            })?;
    }
    Ok(())
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.to_owned()))
}
