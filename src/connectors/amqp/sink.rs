//! AMQP sink: publishes with publisher confirms.
//!
//! A batch is published, then every confirm is awaited: a message counts as
//! written only once RabbitMQ confirmed it (for a persistent message to a
//! durable queue, once it is on disk). With `mandatory`, a message no queue
//! is bound for comes back and fails that message (it is dead-lettered)
//! instead of vanishing. A lost connection fails the batch; the next write
//! reconnects (the runtime retries with backoff).

use bytes::Bytes;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tracing::{info, warn};

use super::config::AmqpSinkConfig;
use super::connection;
use super::mapping::to_publish;
use crate::connectors::Sink;
use crate::error::{ConnectorError, MessageError};
use crate::message::Message;

pub struct Publish {
    routing_key: String,
    body: Bytes,
    properties: BasicProperties,
}

pub struct AmqpSink {
    pipeline: String,
    config: AmqpSinkConfig,
    session: Option<(Connection, Channel)>,
}

impl AmqpSink {
    pub async fn open(pipeline: &str, config: &AmqpSinkConfig) -> Result<Self, ConnectorError> {
        let mut sink = Self {
            pipeline: pipeline.to_owned(),
            config: config.clone(),
            session: None,
        };
        sink.channel().await?;
        Ok(sink)
    }

    async fn channel(&mut self) -> Result<&Channel, ConnectorError> {
        if self
            .session
            .as_ref()
            .is_some_and(|(c, ch)| !c.status().connected() || !ch.status().connected())
        {
            warn!(pipeline = %self.pipeline, "amqp sink: connection lost; reconnecting");
            self.session = None;
        }
        if self.session.is_none() {
            let name = format!("ferry-{}-sink", self.pipeline);
            let (conn, channel) = connection::open(&self.config.access(), &name).await?;
            connection::declare(&channel, &self.config.declare).await?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| ConnectorError::amqp("enabling publisher confirms", e))?;
            info!(pipeline = %self.pipeline, exchange = %self.config.exchange, "amqp sink connected");
            self.session = Some((conn, channel));
        }
        match &self.session {
            Some((_, channel)) => Ok(channel),
            None => Err(ConnectorError::Fatal("amqp session missing".into())),
        }
    }

    fn lost(&mut self, context: &str, e: lapin::Error) -> ConnectorError {
        self.session = None;
        ConnectorError::amqp(context.to_owned(), e)
    }
}

impl Sink for AmqpSink {
    type Prepared = Publish;

    fn prepare(&self, message: &Message) -> Result<Publish, MessageError> {
        let routing_key = String::from_utf8(self.config.routing_key.render(message)?)
            .map_err(|_| MessageError::Unsupported("the routing key is not valid UTF-8".into()))?;
        if routing_key.len() > 255 {
            return Err(MessageError::Unsupported(format!(
                "the routing key is {} bytes long; AMQP allows 255",
                routing_key.len()
            )));
        }
        let (body, properties) = to_publish(message, self.config.persistent);
        Ok(Publish {
            routing_key,
            body,
            properties,
        })
    }

    async fn write(
        &mut self,
        batch: &[Publish],
    ) -> Result<Vec<Result<(), MessageError>>, ConnectorError> {
        let exchange = self.config.exchange.clone();
        let options = BasicPublishOptions {
            mandatory: self.config.mandatory,
            ..BasicPublishOptions::default()
        };
        let channel = self.channel().await?.clone();
        let mut confirms = Vec::with_capacity(batch.len());
        for p in batch {
            let published = channel
                .basic_publish(
                    exchange.as_str().into(),
                    p.routing_key.as_str().into(),
                    options,
                    &p.body,
                    p.properties.clone(),
                )
                .await;
            match published {
                Ok(confirm) => confirms.push(confirm),
                Err(e) => return Err(self.lost("publishing", e)),
            }
        }
        let mut results = Vec::with_capacity(batch.len());
        for (confirm, p) in confirms.into_iter().zip(batch) {
            match confirm.await {
                Ok(Confirmation::Ack(None)) | Ok(Confirmation::NotRequested) => results.push(Ok(())),
                Ok(Confirmation::Ack(Some(returned))) => results.push(Err(MessageError::Refused {
                    system: "rabbitmq",
                    reason: format!(
                        "unroutable: no queue is bound to exchange `{exchange}` for routing key `{}` ({} {})",
                        p.routing_key, returned.reply_code, returned.reply_text
                    ),
                })),
                Ok(Confirmation::Nack(_)) => {
                    // An internal broker error: trying again is right.
                    return Err(ConnectorError::Retry(
                        "rabbitmq could not store a message (nack)".into(),
                    ));
                }
                Err(e) => return Err(self.lost("waiting for publisher confirms", e)),
            }
        }
        Ok(results)
    }
}
