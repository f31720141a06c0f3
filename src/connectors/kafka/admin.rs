//! Topic checks and creation.

use std::sync::Arc;
use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;

use super::config::KafkaSourceConfig;
use super::errors::{LoginRefusal, login_refused};
use super::oauth::{BearerToken, TokenContext};
use crate::error::ConnectorError;

const TIMEOUT: Duration = Duration::from_secs(10);

/// One slice of [`unless_refused`]: a refused login makes a request wait
/// out its whole timeout, so it is asked in slices and the refusal heard
/// between them ends the wait (a sink took 10 s to report a wrong
/// password before). Only clients whose context hears librdkafka's log
/// while blocked gain from it: a `StreamConsumer` hears it only when
/// polled, so the source's start-up requests are not sliced.
const ATTEMPT: Duration = Duration::from_millis(500);

/// How many partitions `topic` has, or `None` if it does not exist, asked
/// with `fetch` (any client's `fetch_metadata`; it blocks, so it runs on
/// the blocking pool). A refused login fails the request only with "broker
/// transport failure", which would be retried for ever: `refusal`, what
/// the client's context heard meanwhile, gives the reason instead.
pub(crate) async fn partitions_of<F>(
    fetch: F,
    topic: &str,
    refusal: Arc<LoginRefusal>,
) -> Result<Option<usize>, ConnectorError>
where
    F: Fn(&str, Duration) -> rdkafka::error::KafkaResult<rdkafka::metadata::Metadata>
        + Send
        + 'static,
{
    let topic_name = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let metadata = unless_refused(|timeout| fetch(&topic_name, timeout), &refusal)
            .map_err(|e| refusal.or(format!("reading metadata of `{topic_name}`"), e))?;
        Ok(metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic_name)
            .filter(|t| t.error().is_none() && !t.partitions().is_empty())
            .map(|t| t.partitions().len()))
    })
    .await
    .map_err(|e| ConnectorError::Fatal(format!("kafka metadata task failed: {e}")))?
}

/// `request` (blocking, given its timeout) asked in slices of [`ATTEMPT`]
/// until it answers, `refusal` hears that the login was refused, or 10 s
/// have passed: its last answer.
fn unless_refused<T>(
    request: impl Fn(Duration) -> rdkafka::error::KafkaResult<T>,
    refusal: &LoginRefusal,
) -> rdkafka::error::KafkaResult<T> {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match request(left.min(ATTEMPT)) {
            Err(_) if left > ATTEMPT && refusal.get().is_none() => continue,
            answer => return answer,
        }
    }
}

/// Polls `client` for `wait` (its log lines reach its context only so).
fn drain(client: &BaseConsumer<TokenContext>, wait: Duration) {
    let until = std::time::Instant::now() + wait;
    while std::time::Instant::now() < until && client.context().refusal.get().is_none() {
        let _ = client.poll(Duration::from_millis(50));
    }
}

/// Whether the brokers refuse the login of `config`, asked after a
/// request failed without saying why: a client of its own connects and
/// is polled for up to 3 s for librdkafka's log of the refusal. Blocking.
pub(crate) fn refused_login(config: &ClientConfig, bearer: Option<BearerToken>) -> Option<String> {
    let mut config = config.clone();
    config.remove("group.id");
    let client: BaseConsumer<TokenContext> =
        config.create_with_context(TokenContext::new(bearer)).ok()?;
    // Connecting starts with the first request.
    let _ = client.fetch_metadata(None, Duration::from_millis(100));
    drain(&client, Duration::from_secs(3));
    client.context().refusal.get()
}

/// `error` of a set-up request, or the brokers' refusal of the login if
/// that is why it failed (asked with [`refused_login`] when the error is
/// one worth retrying, which a refused login is not).
pub(crate) async fn refused_or(
    source: &KafkaSourceConfig,
    error: ConnectorError,
) -> ConnectorError {
    if !error.is_retryable() {
        return error;
    }
    let config = source.client_config("ferry-login-check");
    let bearer = BearerToken::of(source.sasl.as_ref());
    match tokio::task::spawn_blocking(move || refused_login(&config, bearer)).await {
        Ok(Some(refused)) => login_refused("setting up the consumer", refused),
        _ => error,
    }
}

/// Creates `topic`; an existing topic is not an error. For clients that
/// need no token of ferry's own (see [`create_topic_with`]).
pub async fn create_topic(
    config: &ClientConfig,
    topic: &str,
    partitions: usize,
    replication: usize,
) -> Result<(), ConnectorError> {
    create_topic_with(
        config,
        None,
        topic,
        partitions,
        replication,
        &Default::default(),
    )
    .await
}

/// [`create_topic`] with topic settings (`cleanup.policy`, `retention.ms`, ...).
pub async fn create_topic_with(
    config: &ClientConfig,
    bearer: Option<BearerToken>,
    topic: &str,
    partitions: usize,
    replication: usize,
    settings: &std::collections::BTreeMap<String, String>,
) -> Result<(), ConnectorError> {
    if bearer.is_some() {
        return Err(ConnectorError::Fatal(format!(
            "kafka topic `{topic}` does not exist, and ferry cannot create topics with an \
             OAUTHBEARER token of its own (`sasl.token`, `sasl.token_file`): librdkafka's admin \
             client is never asked for the token (rust-rdkafka issue 757); create the topic \
             beforehand, or log in with `sasl.oidc`"
        )));
    }
    let admin: AdminClient<TokenContext> = config
        .create_with_context(TokenContext::new(bearer))
        .map_err(|e| ConnectorError::kafka("creating an admin client", e))?;
    let mut new = NewTopic::new(
        topic,
        i32::try_from(partitions).unwrap_or(i32::MAX),
        TopicReplication::Fixed(i32::try_from(replication).unwrap_or(i32::MAX)),
    );
    for (k, v) in settings {
        new = new.set(k, v);
    }
    let results = admin
        .create_topics([&new], &AdminOptions::new().request_timeout(Some(TIMEOUT)))
        .await
        .map_err(|e| ConnectorError::kafka(format!("creating topic `{topic}`"), e))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((name, code)) => {
                return Err(ConnectorError::Fatal(format!(
                    "kafka refused to create topic `{name}`: {code}"
                )));
            }
        }
    }
    Ok(())
}
