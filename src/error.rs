//! Error types shared by connectors and the runtime.
//!
//! Two kinds of failure are kept apart because they call for different
//! responses:
//! - a [`MessageError`] belongs to one message (its payload is not JSON, a
//!   key template field is missing, the broker refused that record). Retrying
//!   cannot help; the message goes to the dead-letter sink.
//! - a [`ConnectorError`] belongs to the connection or the target system.
//!   [`ConnectorError::is_retryable`] says whether waiting and trying again
//!   can help (broker restarting) or not (authentication refused).

use rdkafka::error::{KafkaError, RDKafkaErrorCode};

use crate::template::RenderError;

/// A problem with one message; retrying it cannot succeed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("{0}")]
    Unsupported(String),
    #[error("{system} refused the message: {reason}")]
    Refused {
        system: &'static str,
        reason: String,
    },
    /// The source gave up on it (delivered too many times).
    #[error("{0}")]
    GaveUp(String),
}

/// A problem talking to an external system.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("redis: {context}: {source}")]
    Redis {
        context: String,
        #[source]
        source: redis::RedisError,
    },
    #[error("kafka: {context}: {source}")]
    Kafka {
        context: String,
        #[source]
        source: KafkaError,
    },
    #[error("amqp: {context}: {source}")]
    Amqp {
        context: String,
        #[source]
        source: lapin::Error,
    },
    /// A passing problem described in words; retrying can help.
    #[error("{0}")]
    Retry(String),
    /// The target refuses every write for now (Redis `OOM`, `LOADING`,
    /// `READONLY`): like an outage it is waited out, and it never counts
    /// against `retry.attempts`, since it says nothing about the messages.
    #[error("{0}")]
    Refusing(String),
    /// Set-up that cannot work as configured (missing topic, refused
    /// subscription); retrying would fail the same way.
    #[error("{0}")]
    Fatal(String),
}

impl ConnectorError {
    pub fn redis(context: impl Into<String>, source: redis::RedisError) -> Self {
        Self::Redis {
            context: context.into(),
            source,
        }
    }

    pub fn kafka(context: impl Into<String>, source: KafkaError) -> Self {
        Self::Kafka {
            context: context.into(),
            source,
        }
    }

    pub fn amqp(context: impl Into<String>, source: lapin::Error) -> Self {
        Self::Amqp {
            context: context.into(),
            source,
        }
    }

    /// Whether trying the same operation again later can succeed.
    pub fn is_retryable(&self) -> bool {
        // A refused certificate or login does not heal by retrying: stop
        // and say what to change instead of retrying forever.
        let text = crate::connectors::diagnose::chain(self);
        if crate::connectors::diagnose::explain(&text).is_some_and(|d| d.permanent) {
            return false;
        }
        match self {
            ConnectorError::Redis { source, .. } => redis_retryable(source),
            ConnectorError::Kafka { source, .. } => kafka_retryable(source),
            ConnectorError::Amqp { source, .. } => amqp_retryable(source),
            ConnectorError::Retry(_) | ConnectorError::Refusing(_) => true,
            ConnectorError::Fatal(_) => false,
        }
    }
}

/// A wrong password or user, or a user without the permission: retrying
/// would be refused the same way.
pub fn redis_auth_refused(e: &redis::RedisError) -> bool {
    e.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(e.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"))
}

fn redis_retryable(e: &redis::RedisError) -> bool {
    use redis::RetryMethod::*;
    if redis_auth_refused(e) {
        return false;
    }
    if e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal() {
        return true;
    }
    match e.retry_method() {
        NoRetry => false,
        RetryImmediately | WaitAndRetry | Reconnect | ReconnectFromInitialConnections => true,
        AskRedirect | MovedRedirect | RefreshSlotsAndRetry => true,
        _ => false,
    }
}

fn kafka_retryable(e: &KafkaError) -> bool {
    match e {
        KafkaError::ClientConfig(..)
        | KafkaError::ClientCreation(_)
        | KafkaError::Subscription(_)
        | KafkaError::MessageConsumptionFatal(_)
        | KafkaError::Nul(_) => false,
        other => match other.rdkafka_error_code() {
            Some(code) => !kafka_code_is_fatal(code),
            None => true,
        },
    }
}

fn amqp_retryable(e: &lapin::Error) -> bool {
    use lapin::ErrorKind as K;
    use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
    match e.kind() {
        K::ProtocolError(amqp) => !matches!(
            amqp.kind(),
            AMQPErrorKind::Soft(
                AMQPSoftError::ACCESSREFUSED
                    | AMQPSoftError::NOTFOUND
                    | AMQPSoftError::PRECONDITIONFAILED
            ) | AMQPErrorKind::Hard(
                AMQPHardError::NOTALLOWED
                    | AMQPHardError::INVALIDPATH
                    | AMQPHardError::NOTIMPLEMENTED
                    | AMQPHardError::SYNTAXERROR
            )
        ),
        K::InvalidProtocolVersion(_) | K::NoDefaultRuntime | K::AuthProviderError(_) => false,
        _ => true,
    }
}

/// Error codes after which retrying the same request cannot succeed.
fn kafka_code_is_fatal(code: RDKafkaErrorCode) -> bool {
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
pub fn kafka_code_is_per_message(code: RDKafkaErrorCode) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        code,
        MessageSizeTooLarge | InvalidMessage | InvalidMessageSize | InvalidRecord
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_problems_are_retryable_and_auth_problems_are_not() {
        let io = redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        ));
        assert!(ConnectorError::redis("write", io).is_retryable());
        let timeout = KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut);
        assert!(ConnectorError::kafka("produce", timeout).is_retryable());
        let auth = KafkaError::MessageProduction(RDKafkaErrorCode::TopicAuthorizationFailed);
        assert!(!ConnectorError::kafka("produce", auth).is_retryable());
        assert!(!ConnectorError::Fatal("no such topic".into()).is_retryable());
        let wrong_password = redis::RedisError::from((
            redis::ErrorKind::AuthenticationFailed,
            "Password authentication failed",
        ));
        assert!(!ConnectorError::redis("connecting", wrong_password).is_retryable());
        assert!(ConnectorError::Refusing("OOM".into()).is_retryable());
    }

    #[test]
    fn oversized_records_are_message_errors() {
        assert!(kafka_code_is_per_message(
            RDKafkaErrorCode::MessageSizeTooLarge
        ));
        assert!(!kafka_code_is_per_message(
            RDKafkaErrorCode::BrokerTransportFailure
        ));
    }
}
