//! AMQP sink: publishes with publisher confirms.
//!
//! A batch is published, then every confirm is awaited: a message counts as
//! written only once RabbitMQ confirmed it (for a persistent message to a
//! durable queue, once it is on disk). With `mandatory`, a message no queue
//! is bound for comes back and fails that message (it is dead-lettered)
//! instead of vanishing. A lost connection fails the batch; the next write
//! reconnects (the runtime retries with backoff).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use futures::future::maybe_done;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, Connection};
use tracing::{info, warn};

use super::config::AmqpSinkConfig;
use super::connection;
use super::mapping::to_publish;
use crate::connectors::{Confirming, Sink};
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
    /// Set by a batch in flight whose publish or confirm failed: the next
    /// batch opens a new connection rather than trust this one.
    broken: Arc<AtomicBool>,
}

impl AmqpSink {
    pub async fn open(pipeline: &str, config: &AmqpSinkConfig) -> Result<Self, ConnectorError> {
        let mut sink = Self {
            pipeline: pipeline.to_owned(),
            config: config.clone(),
            session: None,
            broken: Arc::new(AtomicBool::new(false)),
        };
        sink.channel().await?;
        Ok(sink)
    }

    async fn channel(&mut self) -> Result<&Channel, ConnectorError> {
        let broken = self.broken.swap(false, Ordering::Relaxed);
        if self
            .session
            .as_ref()
            .is_some_and(|(c, ch)| broken || !c.status().connected() || !ch.status().connected())
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

    /// Hands every publish of the batch to lapin, in order, without
    /// waiting for each to be written out (that wait, one wake of lapin's
    /// I/O thread per message, was most of the sink's CPU); the returned
    /// future waits for the writes and then the confirms together.
    async fn send(&mut self, batch: Arc<[Publish]>) -> Result<Confirming, ConnectorError> {
        let exchange = self.config.exchange.clone();
        let options = BasicPublishOptions {
            mandatory: self.config.mandatory,
            ..BasicPublishOptions::default()
        };
        let channel = self.channel().await?.clone();
        let mut publishes = Vec::with_capacity(batch.len());
        for i in 0..batch.len() {
            let (channel, batch, exchange) =
                (channel.clone(), Arc::clone(&batch), exchange.clone());
            let mut publish = Box::pin(maybe_done(async move {
                let p = &batch[i];
                channel
                    .basic_publish(
                        exchange.as_str().into(),
                        p.routing_key.as_str().into(),
                        options,
                        &p.body,
                        p.properties.clone(),
                    )
                    .await
            }));
            // The first poll takes the delivery tag and queues the frames:
            // the batch is in lapin's hands, in order, when `send` returns.
            let _ = futures::poll!(publish.as_mut());
            publishes.push(publish);
        }
        let broken = Arc::clone(&self.broken);
        let lost = move |context: &str, e: lapin::Error| {
            broken.store(true, Ordering::Relaxed);
            ConnectorError::amqp(context.to_owned(), e)
        };
        Ok(Box::pin(async move {
            let mut confirms = Vec::with_capacity(publishes.len());
            for mut publish in publishes {
                publish.as_mut().await;
                match publish.as_mut().take_output() {
                    Some(Ok(confirm)) => confirms.push(confirm),
                    Some(Err(e)) => return Err(lost("publishing", e)),
                    None => return Err(ConnectorError::Fatal("a publish ended twice".into())),
                }
            }
            let mut results = Vec::with_capacity(batch.len());
            for (confirm, p) in confirms.into_iter().zip(batch.iter()) {
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
                    Err(e) => return Err(lost("waiting for publisher confirms", e)),
                }
            }
            Ok(results)
        }))
    }
}
