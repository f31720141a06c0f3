//! librdkafka errors: which are worth retrying, which concern one record,
//! and what a refused login or ACL means.

use std::sync::Mutex;

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

/// librdkafka's log facility for a failed broker connection.
pub(crate) const CONNECTION_FAILED: &str = "FAIL";

/// The broker's refusal of the login, as librdkafka logged it. A request
/// made meanwhile fails only with "broker transport failure" or a timeout
/// (the reason goes to the log, not to the request), which ferry would
/// retry for ever; with this, such a request fails with the reason, not
/// retryable, and the diagnosis names the setting to fix.
#[derive(Debug, Default)]
pub(crate) struct LoginRefusal(Mutex<Option<String>>);

impl LoginRefusal {
    /// A librdkafka log line: kept if it is a failed connection (or a
    /// failed OIDC token request) that [`explain_login`] calls a refused
    /// login.
    pub(crate) fn saw(&self, facility: &str, message: &str) {
        let connecting = facility == CONNECTION_FAILED || facility == "OIDC";
        if connecting && explain_login(message).is_some_and(|d| d.permanent) {
            *crate::sync::lock(&self.0) = Some(message.to_owned());
        }
    }

    /// A broker took the login (a rotated token, say): what was refused
    /// before is no longer the reason for anything.
    pub(crate) fn clear(&self) {
        *crate::sync::lock(&self.0) = None;
    }

    /// The refusal seen last, if the login is refused.
    pub(crate) fn get(&self) -> Option<String> {
        crate::sync::lock(&self.0).clone()
    }

    /// The error of a request (`context`): the refused login if there was
    /// one, else the request's own error.
    pub(crate) fn or(&self, context: impl Into<String>, error: KafkaError) -> ConnectorError {
        match self.get() {
            Some(refused) => login_refused(context, refused),
            None => ConnectorError::kafka(context, error),
        }
    }
}

/// A request (`context`) failed because the brokers refused the login
/// (librdkafka's words): not worth retrying.
pub(crate) fn login_refused(context: impl Into<String>, refused: String) -> ConnectorError {
    ConnectorError::Client {
        system: "kafka",
        context: context.into(),
        retryable: false,
        source: refused.into(),
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
    // The OpenID Connect provider's answer to `sasl.oidc`, as librdkafka
    // logs it: `Failed to retrieve OIDC token from "<url>": <body> (<status>)`.
    if has_lower(text, &["failed to retrieve oidc token"]) {
        if has_lower(
            text,
            &[
                "invalid_client",
                "unauthorized_client",
                "(400)",
                "(401)",
                "(403)",
            ],
        ) {
            return permanent(
                "the OpenID Connect provider refused ferry's client: check `sasl.oidc.client_id` \
                 and `sasl.oidc.client_secret` (and `scope`)",
            );
        }
        return Some(Diagnosis {
            permanent: false,
            fix: "ferry could not fetch a token from `sasl.oidc.token_url`: check the URL and \
                  that the provider is reachable",
        });
    }
    // A refused OAUTHBEARER token: the broker's RFC 7628 error
    // (`{"status":"invalid_token"}`) in librdkafka's "SASL authentication
    // error", or librdkafka's own words when it reports the challenge. The
    // text does not name the mechanism otherwise, and username/password
    // are not what to check.
    if has_lower(
        text,
        &[
            "\"status\":\"invalid_token\"",
            "sasl oauthbearer authentication failed",
        ],
    ) {
        return permanent(
            "the broker refused the OAUTHBEARER token: check that `sasl.token` (or the token in \
             `sasl.token_file`) is one this cluster accepts, or the `sasl.oidc` client",
        );
    }
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
    fn a_refused_token_names_the_token_settings_and_a_refused_password_the_password() {
        // What librdkafka reports for a broker's final SaslAuthenticate
        // error (Apache Kafka's words for PLAIN and OAUTHBEARER).
        let token = explain_login(
            "Local: Authentication failure: SASL authentication error: \
             {\"status\":\"invalid_token\"} (after 2ms in state AUTH_REQ)",
        )
        .unwrap();
        assert!(token.permanent);
        assert!(token.fix.contains("`sasl.token_file`"), "{}", token.fix);
        assert!(!token.fix.contains("`sasl.password`"));
        let oidc = |status| {
            explain_login(&format!(
                "Failed to retrieve OIDC token from \"https://idp/token\": {{\"error\":\"x\"}} ({status})"
            ))
            .unwrap()
        };
        assert!(oidc(401).permanent && oidc(401).fix.contains("`sasl.oidc.client_secret`"));
        assert!(!oidc(503).permanent && oidc(503).fix.contains("`sasl.oidc.token_url`"));
        let password = explain_login(
            "SASL authentication error: Authentication failed: Invalid username or password",
        )
        .unwrap();
        assert!(password.fix.contains("`sasl.password`"));
    }

    #[test]
    fn a_request_that_failed_while_the_login_was_refused_fails_with_the_refusal() {
        let refusal = LoginRefusal::default();
        let failed = || KafkaError::MetadataFetch(RDKafkaErrorCode::BrokerTransportFailure);
        assert!(refusal.or("reading metadata", failed()).is_retryable());
        refusal.saw(
            "FAIL",
            "127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed",
        );
        refusal.saw("SASL", "SASL authentication error: Authentication failed");
        assert!(refusal.or("reading metadata", failed()).is_retryable());
        let refused = "127.0.0.1:9/bootstrap: SASL authentication error: Authentication failed: \
                       Invalid username or password (after 2ms in state AUTH_REQ)";
        refusal.saw("FAIL", refused);
        let e = refusal.or("reading metadata", failed());
        assert!(!e.is_retryable());
        assert!(
            e.to_string().contains("Invalid username or password"),
            "{e}"
        );
        refusal.clear();
        assert!(refusal.or("reading metadata", failed()).is_retryable());
    }

    #[test]
    fn oversized_records_are_message_errors() {
        assert!(code_is_per_message(RDKafkaErrorCode::MessageSizeTooLarge));
        assert!(!code_is_per_message(
            RDKafkaErrorCode::BrokerTransportFailure
        ));
    }
}
