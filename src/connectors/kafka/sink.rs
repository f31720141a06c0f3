//! Kafka sink: an idempotent producer whose writes count only when the
//! delivery report says the brokers have them.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{ClientContext, Statistics};
use tracing::info;

use super::admin;
use super::config::KafkaSinkConfig;
use super::errors::{LoginRefusal, code_is_per_message};
use super::mapping::{to_kafka_headers, to_kafka_timestamp};
use super::oauth::{Bearer, BearerToken};
use super::watch::BrokerWatch;
use crate::connectors::{Confirming, Sink};
use crate::error::{ConnectorError, MessageError};
use crate::message::{Headers, Message};
use crate::observe::{Probe, State};
use crate::template::Template;

/// librdkafka callbacks: logging, and the sink's health while no write
/// is failing yet (a producer waits out a broker restart inside
/// `message.timeout.ms`, so the writes alone would say nothing for minutes).
pub struct SinkContext {
    watch: BrokerWatch,
    /// OAUTHBEARER with a token of ferry's own.
    bearer: Bearer,
}

impl ClientContext for SinkContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(
        &self,
        _config: Option<&str>,
    ) -> Result<rdkafka::client::OAuthToken, Box<dyn std::error::Error>> {
        self.bearer.generate()
    }

    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        self.watch.log(level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.watch.error("producer", &error, reason);
    }

    /// Every `statistics.interval.ms`: a connected broker makes a sink
    /// that was retrying `up` again.
    fn stats(&self, statistics: Statistics) {
        let up = statistics
            .brokers
            .values()
            .any(|b| b.nodeid >= 0 && b.state == "UP");
        self.watch.broker_seen(up);
    }
}

/// One record ready to produce.
#[derive(Debug, Clone)]
pub struct Record {
    key: Option<Bytes>,
    payload: Option<Bytes>,
    headers: Headers,
    timestamp: Option<i64>,
}

pub struct KafkaSink {
    producer: FutureProducer<SinkContext>,
    /// The producer's [`BrokerWatch`] keeps it (librdkafka hides the context).
    refusal: Arc<LoginRefusal>,
    topic: String,
    key: Option<Template>,
    /// Stops [`reconnect_while_retrying`] with the sink.
    nudge: tokio::task::AbortHandle,
}

/// How often an idle sink that lost its brokers asks for them again.
const NUDGE: Duration = Duration::from_secs(5);

/// librdkafka connects only to brokers it has work for, and two things
/// wait on that:
///
/// - **Start-up.** The topic check's metadata reply comes over the
///   bootstrap connection, which librdkafka drops for the brokers the reply
///   names; the producer id request it starts finds none of them up yet and
///   waits for librdkafka's 500 ms timer, and so does the first record
///   (measured: 0.5 s of a 50,000-message job, on Apache Kafka the same).
///   A second metadata request, asked at once, connects to a named broker,
///   and its reply starts the producer id request there (about 50 ms).
/// - **Reconnecting.** A producer left idle after its brokers went away
///   would not connect again until its next record or its 5-minute
///   metadata refresh, and `/ready` would say `retrying` all that while.
///   While the probe says so, a metadata request every [`NUDGE`] makes it
///   connect; the statistics then bring the probe back `up`.
async fn reconnect_while_retrying(
    producer: FutureProducer<SinkContext>,
    topic: String,
    probe: Probe,
    refusal: Arc<LoginRefusal>,
) {
    let ask = || {
        let client = producer.clone();
        // The same question as the topic check at start; its answer does
        // not matter here, only the connection it makes.
        admin::partitions_of(
            move |topic, timeout| client.client().fetch_metadata(Some(topic), timeout),
            &topic,
            Arc::clone(&refusal),
        )
    };
    let _ = ask().await;
    loop {
        tokio::time::sleep(NUDGE).await;
        if probe.state() == State::Retrying {
            let _ = ask().await;
        }
    }
}

impl KafkaSink {
    pub async fn open(
        pipeline: &str,
        config: &KafkaSinkConfig,
        probe: &Probe,
    ) -> Result<Self, ConnectorError> {
        let client_config = config.client_config(&format!("ferry-{pipeline}"));
        let topic = config.topic.as_str();
        // The producer first, and the topic checked with its own client:
        // the metadata reply also starts its producer id request at once,
        // where a producer created after a separate check waits for its
        // next 500 ms timer (phase A measured 0.7 s to the first message).
        let bearer = BearerToken::of(config.sasl.as_ref());
        let watch = BrokerWatch::new(pipeline, probe.clone());
        let refusal = Arc::clone(watch.refusal());
        let producer: FutureProducer<SinkContext> = client_config
            .create_with_context(SinkContext {
                watch,
                bearer: Bearer::new(bearer.clone()),
            })
            .map_err(|e| ConnectorError::kafka("creating the producer", e))?;
        let client = producer.clone();
        let partitions = admin::partitions_of(
            move |topic, timeout| client.client().fetch_metadata(Some(topic), timeout),
            topic,
            Arc::clone(&refusal),
        )
        .await?;
        if partitions.is_none() {
            match &config.create_topic {
                Some(create) => {
                    admin::create_topic_with(
                        &client_config,
                        bearer.clone(),
                        topic,
                        create.partitions.get(),
                        create.replication.get(),
                        &create.config,
                    )
                    .await?;
                    info!(
                        pipeline,
                        topic,
                        partitions = create.partitions.get(),
                        "kafka topic created"
                    );
                }
                None => {
                    return Err(ConnectorError::Fatal(format!(
                        "kafka topic `{topic}` does not exist; create it, or add \
                         `create_topic = {{ partitions = 3 }}` to the sink"
                    )));
                }
            }
        }
        let nudge = tokio::spawn(reconnect_while_retrying(
            producer.clone(),
            topic.to_owned(),
            probe.clone(),
            Arc::clone(&refusal),
        ))
        .abort_handle();
        Ok(Self {
            producer,
            refusal,
            topic: topic.to_owned(),
            key: config.key.clone(),
            nudge,
        })
    }
}

impl Sink for KafkaSink {
    type Prepared = Record;

    fn prepare(&self, message: &Message) -> Result<Record, MessageError> {
        let key = match &self.key {
            Some(t) => Some(Bytes::from(t.render(message)?)),
            None => message.key.clone(),
        };
        Ok(Record {
            key,
            payload: message.payload.clone(),
            headers: message.headers.clone(),
            timestamp: to_kafka_timestamp(message),
        })
    }

    /// Hands every record to librdkafka (in order: the idempotent
    /// producer keeps it per partition) and returns what waits for their
    /// delivery reports.
    async fn send(&mut self, batch: Arc<[Record]>) -> Result<Confirming, ConnectorError> {
        let mut results: Vec<Result<(), MessageError>> = vec![Ok(()); batch.len()];
        let mut deliveries = Vec::with_capacity(batch.len());
        for (i, r) in batch.iter().enumerate() {
            loop {
                let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(&self.topic);
                if let Some(k) = &r.key {
                    record = record.key(k.as_ref());
                }
                if let Some(p) = &r.payload {
                    record = record.payload(p.as_ref());
                }
                if let Some(h) = to_kafka_headers(&r.headers) {
                    record = record.headers(h);
                }
                if let Some(t) = r.timestamp {
                    record = record.timestamp(t);
                }
                match self.producer.send_result(record) {
                    Ok(delivery) => {
                        deliveries.push((i, delivery));
                        break;
                    }
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        // librdkafka's queue drains in its own thread.
                        self.producer.poll(Duration::from_millis(0));
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err((e, _)) => {
                        classify(e, &mut results[i], &self.refusal)?;
                        break;
                    }
                }
            }
        }
        let refusal = Arc::clone(&self.refusal);
        Ok(Box::pin(async move {
            for (i, delivery) in deliveries {
                match delivery.await {
                    Ok(Ok(_)) => {}
                    Ok(Err((e, _))) => classify(e, &mut results[i], &refusal)?,
                    Err(_) => {
                        return Err(ConnectorError::Fatal(
                            "the kafka producer shut down before confirming".into(),
                        ));
                    }
                }
            }
            Ok(results)
        }))
    }
}

/// A per-record error goes into that record's result; anything else fails
/// the batch (which is then retried or fails the pipeline), with the
/// brokers' refusal of the login as the reason when they refuse it.
fn classify(
    e: KafkaError,
    result: &mut Result<(), MessageError>,
    refusal: &LoginRefusal,
) -> Result<(), ConnectorError> {
    match e.rdkafka_error_code() {
        Some(code) if code_is_per_message(code) => {
            *result = Err(MessageError::Refused {
                system: "kafka",
                reason: code.to_string(),
            });
            Ok(())
        }
        _ => Err(refusal.or("producing", e)),
    }
}

impl Drop for KafkaSink {
    fn drop(&mut self) {
        // Every write was already confirmed; this only sends what a failed
        // batch may have left queued before the client goes away.
        self.nudge.abort();
        let _ = self.producer.flush(Duration::from_secs(5));
    }
}
