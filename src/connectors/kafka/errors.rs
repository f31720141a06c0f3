//! librdkafka errors: which are worth retrying, which concern one record,
//! and what a refused login or ACL means.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use super::super::diagnose::{Diagnosis, client, has_lower, permanent};
use crate::error::ConnectorError;

impl ConnectorError {
    /// An rdkafka error met while doing `context`.
    pub fn kafka(context: impl Into<String>, source: KafkaError) -> Self {
        let retryable = retryable(&source);
        client("kafka", context.into(), retryable, Box::new(source))
    }
}

fn retryable(e: &KafkaError) -> bool {
    match e {
        KafkaError::ClientConfig(..)
        | KafkaError::ClientCreation(_)
        | KafkaError::Subscription(_)
        | KafkaError::MessageConsumptionFatal(_)
        | KafkaError::Nul(_) => false,
        other => match other.rdkafka_error_code() {
            Some(code) => !code_is_fatal(code),
            None => true,
        },
    }
}

/// Error codes after which retrying the same request cannot succeed.
fn code_is_fatal(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        Fatal
            | Authentication
            | SaslAuthenticationFailed
            | TopicAuthorizationFailed
            | GroupAuthorizationFailed
            | ClusterAuthorizationFailed
            | InvalidConfig
            | UnsupportedVersion
            | UnsupportedCompressionType
            | UnsupportedFeature
    )
}

/// Producer error codes that concern one record rather than the connection:
/// the record goes to the dead-letter sink instead of being retried.
pub(crate) fn code_is_per_message(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        MessageSizeTooLarge | InvalidMessage | InvalidMessageSize | InvalidRecord
    )
}

/// The broker's refusals of a SASL login, a topic or a group.
pub(crate) fn explain_login(text: &str) -> Option<Diagnosis> {
    if has_lower(
        text,
        &[
            "sasl authentication failed",
            "authentication failed",
            "sasl authentication error",
        ],
    ) {
        return permanent(
            "the broker refused the SASL login: check `sasl.mechanism`, `sasl.username` and \
             `sasl.password`",
        );
    }
    if has_lower(
        text,
        &["topic authorization failed", "topic_authorization_failed"],
    ) {
        return permanent(
            "the user may not use this topic: grant it the topic's ACLs (Read/Write/Describe)",
        );
    }
    if has_lower(
        text,
        &["group authorization failed", "group_authorization_failed"],
    ) {
        return permanent(
            "the user may not use this consumer group: grant it the group's Read ACL",
        );
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_retryable_and_refused_authorizations_are_not() {
        let timeout = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(ConnectorError::kafka("produce", timeout).is_retryable());
        let auth = KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert!(!ConnectorError::kafka("produce", auth).is_retryable());
    }

    #[test]
    fn oversized_records_are_message_errors() {
        assert!(code_is_per_message(RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(!code_is_per_message(
            RDKafkaErrorCode::BrokerTransportFailure
        ));
    }
}
