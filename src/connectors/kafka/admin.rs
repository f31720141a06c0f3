//! Topic checks and creation.

use std::time::Duration;

use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::error::RDKafkaErrorCode;

use super::oauth::{BearerToken, TokenContext};
use crate::error::ConnectorError;

const TIMEOUT: Duration = Duration::from_secs(10);

/// How many partitions `topic` has, or `None` if it does not exist, asked
/// with `fetch` (any client's `fetch_metadata`; it blocks, so it runs on
/// the blocking pool).
pub async fn partitions_of<F>(fetch: F, topic: &str) -> Result<Option<usize>, ConnectorError>
where
    F: FnOnce(&str, Duration) -> rdkafka::error::KafkaResult<rdkafka::metadata::Metadata>
        + Send
        + 'static,
{
    let topic_name = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let metadata = fetch(&topic_name, TIMEOUT)
            .map_err(|e| ConnectorError::kafka(format!("reading metadata of `{topic_name}`"), e))?;
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
    let admin: AdminClient<TokenContext> = config
        .create_with_context(TokenContext(bearer))
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
