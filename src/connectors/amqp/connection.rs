//! Connecting to RabbitMQ and declaring what the config asks for.

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString};
use std::net::SocketAddr;

use lapin::tcp::{OwnedTLSConfig, RustlsConnector};
use lapin::uri::{AMQPScheme, AMQPUri};
use lapin::{AsyncTcpStream, Channel, Connection, ConnectionProperties, DefaultConnectionBuilder};
use tracing::warn;

use super::access::AmqpAccess;
use crate::connectors::tls_client::{Trust, client_config};

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
    let handshake = if access.insecure() {
        warn!(
            url = %access.shown(),
            "amqp: TLS certificate verification is OFF (insecure_skip_verify): anyone on the \
             network path can read and change this traffic; use it for tests only and give \
             `tls.ca` instead"
        );
        let identity = access.tls.as_ref().map(|t| t.read_identity()).transpose()?;
        let config = client_config(Trust::Any, identity.flatten(), "amqp")?;
        Some(Handshake::Insecure(RustlsConnector::from(config)))
    } else if access.server_name().is_some() {
        Some(Handshake::Checked(access.tls_config()?))
    } else {
        None
    };
    let conn = match handshake {
        None => DefaultConnectionBuilder::new()
            .map_err(connecting)?
            .with_uri(access.uri()?)
            .with_properties(props)
            .with_tls_config(access.tls_config()?)
            .connect()
            .await
            .map_err(connecting)?,
        Some(handshake) => {
            let uri = access.uri()?;
            let name = access
                .server_name()
                .unwrap_or_else(|| uri.authority.host.clone());
            connect_as(uri, handshake, name, props)
                .await
                .map_err(connecting)?
        }
    };
    let channel = conn
        .create_channel()
        .await
        .map_err(|e| ConnectorError::amqp("opening a channel", e))?;
    Ok((conn, channel))
}

/// How the TLS handshake checks the server, when ferry makes it.
enum Handshake {
    /// lapin's checks (the system's CAs and `tls.ca`), under another name.
    Checked(OwnedTLSConfig),
    /// Any certificate (`insecure_skip_verify`).
    Insecure(RustlsConnector),
}

/// lapin's own connect, except that ferry makes the TLS handshake: under
/// `server_name` rather than the url's host, or without checking the
/// certificate. lapin has settings for neither, but takes the transport
/// from a closure.
async fn connect_as(
    uri: AMQPUri,
    handshake: Handshake,
    server_name: String,
    props: ConnectionProperties,
) -> lapin::Result<Connection> {
    let runtime = lapin::runtime::default_runtime()?;
    Connection::connector(
        uri,
        runtime,
        async move |uri: AMQPUri, runtime| {
            let host = (uri.authority.host.as_str(), uri.authority.port);
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host(host).await?.collect();
            let stream = AsyncTcpStream::connect(&runtime, addrs).await?;
            Ok(match (uri.scheme, &handshake) {
                (AMQPScheme::AMQP, _) => stream,
                (AMQPScheme::AMQPS, Handshake::Checked(tls)) => {
                    stream.into_tls(&server_name, tls.as_ref()).await?
                }
                (AMQPScheme::AMQPS, Handshake::Insecure(connector)) => {
                    stream.into_rustls(connector, &server_name).await?
                }
            })
        },
        props,
    )
    .await
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
