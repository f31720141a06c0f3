//! Error types shared by connectors and the runtime.
//!
//! Two kinds of failure are kept apart because they call for different
//! responses:
//! - a [`MessageError`] belongs to one message (its payload is not JSON, a
//!   key template field is missing, the broker refused that record). Retrying
//!   cannot help; the message goes to the dead-letter sink.
//! - a [`ConnectorError`] belongs to the connection or the target system.
//!   [`ConnectorError::is_retryable`] says whether waiting and trying again
//!   can help (broker restarting) or not (authentication refused); each
//!   connector decides that for its own client's errors.

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
///
/// Which client errors are worth retrying is each connector's knowledge:
/// `connectors/<system>/errors.rs` builds the [`ConnectorError::Client`]
/// values of its system (`ConnectorError::redis(..)`, `::kafka(..)`,
/// `::amqp(..)`) and decides `retryable` there.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// An error of a system's client library, classified by its connector.
    #[error("{system}: {context}: {source}")]
    Client {
        system: &'static str,
        context: String,
        retryable: bool,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
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
    /// Whether trying the same operation again later can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ConnectorError::Client { retryable, .. } => *retryable,
            ConnectorError::Retry(_) | ConnectorError::Refusing(_) => true,
            ConnectorError::Fatal(_) => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_say_whether_retrying_helps() {
        assert!(ConnectorError::Retry("broker away".into()).is_retryable());
        assert!(ConnectorError::Refusing("OOM".into()).is_retryable());
        assert!(!ConnectorError::Fatal("no such topic".into()).is_retryable());
    }
}
