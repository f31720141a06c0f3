//! What a connection failure means and which setting fixes it.
//!
//! The three client libraries report TLS and login failures in their own
//! words (rustls for Redis and RabbitMQ, OpenSSL inside librdkafka, and
//! each server's refusals). [`explain`] recognises them (TLS here, each
//! system's logins in its `errors.rs`) in an error's text
//! and says, once, what is wrong and what to change; `permanent` failures
//! cannot heal by retrying, so the runtime stops instead of retrying
//! forever. Pure: tested against the messages the libraries produce.

/// What a failure means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnosis {
    /// Retrying cannot help until the configuration or the server changes.
    pub permanent: bool,
    /// What is wrong and which setting to change.
    pub fix: &'static str,
}

pub(crate) const fn permanent(fix: &'static str) -> Option<Diagnosis> {
    Some(Diagnosis {
        permanent: true,
        fix,
    })
}

/// Whether `text` contains one of `needles`.
pub(crate) fn has(text: &str, needles: &[&str]) -> bool {
    needles.iter().any(|n| text.contains(n))
}

/// Whether `text`, in lower case, contains one of the (lower-case) `needles`.
pub(crate) fn has_lower(text: &str, needles: &[&str]) -> bool {
    let lower = text.to_ascii_lowercase();
    needles.iter().any(|n| lower.contains(n))
}

/// Recognises a failure from the text of an error and its causes.
pub fn explain(text: &str) -> Option<Diagnosis> {
    let has = |needles: &[&str]| has(text, needles);
    let has_lower = |needles: &[&str]| has_lower(text, needles);
    // TLS, as the client sees the server's certificate.
    if has(&[
        "Expired",
        "certificate has expired",
        "NotValidYet",
        "certificate is not yet valid",
    ]) {
        return permanent(
            "the server's TLS certificate has expired or is not valid yet (or this machine's \
             clock is wrong): renew the certificate on the server",
        );
    }
    if has(&[
        "NotValidForName",
        "not valid for name",
        "Hostname mismatch",
        "hostname mismatch",
    ]) {
        return permanent(
            "the server's TLS certificate does not carry the host name in the url/brokers: \
             connect by a name the certificate lists, or (Redis, RabbitMQ) set \
             `tls.server_name` to it",
        );
    }
    if has(&[
        "UnknownIssuer",
        "unable to get local issuer certificate",
        "self-signed certificate",
        "self signed certificate",
        "certificate verify failed",
        "BadSignature",
    ]) {
        return permanent(
            "the server's TLS certificate is not signed by a CA ferry trusts: set `tls.ca` to \
             the PEM file of the CA that signed it",
        );
    }
    if has(&["UnsupportedCertVersion"]) {
        return permanent(
            "a certificate is X.509 version 1, which rustls does not accept: reissue it as a \
             version 3 certificate (openssl: sign it with an -extfile of extensions)",
        );
    }
    // TLS, as the server sees ferry's client certificate.
    if has(&["CertificateRequired", "certificate required"]) {
        return permanent(
            "the server requires a client certificate (mutual TLS): set `tls.cert` and `tls.key`",
        );
    }
    if has_lower(&[
        "alert unknown ca",
        "alert: unknownca",
        "alert bad certificate",
        "alert: badcertificate",
        "alert: certificateunknown",
    ]) {
        return permanent(
            "the server refused ferry's client certificate: give `tls.cert`/`tls.key` signed \
             by a CA the server trusts",
        );
    }
    // TLS spoken to a port that does not speak it.
    if has(&[
        "InvalidContentType",
        "wrong version number",
        "packet length too long",
        "record layer failure",
    ]) {
        return permanent(
            "the server's port does not speak TLS: use the plaintext scheme (redis://, amqp://, \
             no `tls`) or the server's TLS port",
        );
    }
    // Logins and permissions, in each system's words.
    if let Some(d) = super::redis::errors::explain_login(text)
        .or_else(|| super::amqp::errors::explain_login(text))
        .or_else(|| super::kafka::errors::explain_login(text))
    {
        return Some(d);
    }
    // ferry's own OAUTHBEARER token (a rotated file may be back soon).
    if has(&["Failed to acquire SASL OAUTHBEARER token"]) {
        return Some(Diagnosis {
            permanent: false,
            fix: "ferry could not hand librdkafka an OAUTHBEARER token: check that \
                  `sasl.token_file` is readable and its token not expired (or `sasl.token`)",
        });
    }
    // Plaintext spoken to a TLS port: the server hangs up. Not certain, so
    // not permanent, but worth saying.
    if has_lower(&[
        "connection reset",
        "broken pipe",
        "unexpected eof",
        "connection closed",
        "might be caused by incorrect security.protocol",
    ]) {
        return Some(Diagnosis {
            permanent: false,
            fix: "the server closed the connection; if its port expects TLS, use rediss:// / \
                  amqps:// or add `tls` (Kafka)",
        });
    }
    None
}

/// A client error, not retryable when its text names a failure that only a
/// change of configuration or server heals (a refused certificate or login).
pub(crate) fn client(
    system: &'static str,
    context: String,
    retryable: bool,
    source: Box<dyn std::error::Error + Send + Sync + 'static>,
) -> crate::error::ConnectorError {
    let mut error = crate::error::ConnectorError::Client {
        system,
        context,
        retryable,
        source,
    };
    let text = chain(&error);
    if explain(&text).is_some_and(|d| d.permanent)
        && let crate::error::ConnectorError::Client { retryable, .. } = &mut error
    {
        *retryable = false;
    }
    error
}

/// The text of an error and all its causes, for [`explain`].
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fix(text: &str) -> &'static str {
        explain(text).map_or("", |d| d.fix)
    }

    #[test]
    fn tls_failures_name_the_setting_to_change() {
        assert!(fix("invalid peer certificate: UnknownIssuer").contains("`tls.ca`"));
        assert!(
            fix("SSL handshake failed: error:0A000086:SSL routines::certificate verify failed")
                .contains("`tls.ca`")
        );
        assert!(fix("invalid peer certificate: Expired").contains("expired"));
        assert!(
            fix("invalid peer certificate: NotValidForNameContext { expected: .. }")
                .contains("name")
        );
        assert!(fix("received fatal alert: CertificateRequired").contains("`tls.cert`"));
        assert!(
            fix("invalid peer certificate: Other(OtherError(UnsupportedCertVersion))")
                .contains("version 3")
        );
        assert!(
            fix("received corrupt message of type InvalidContentType")
                .contains("does not speak TLS")
        );
        assert!(
            explain("invalid peer certificate: UnknownIssuer")
                .unwrap()
                .permanent
        );
    }

    #[test]
    fn a_token_ferry_cannot_read_names_the_token_settings() {
        let d = explain("Local: Authentication failure: Failed to acquire SASL OAUTHBEARER token: reading the OAUTHBEARER token file /t: No such file").unwrap();
        assert!(d.fix.contains("`sasl.token_file`") && !d.permanent);
    }

    #[test]
    fn refused_logins_and_permissions_are_permanent() {
        assert!(
            fix("WRONGPASS invalid username-password pair or user is disabled.")
                .contains("`password`")
        );
        assert!(
            fix("NOPERM User ferry has no permissions to run the 'set' command")
                .contains("ACL SETUSER")
        );
        assert!(
            fix("ACCESS_REFUSED - Login was refused using authentication mechanism PLAIN")
                .contains("`vhost`")
        );
        assert!(
            fix("Local: Authentication failure: SASL authentication error: Authentication failed")
                .contains("sasl.password")
        );
        for t in ["WRONGPASS x", "NOPERM y", "ACCESS_REFUSED z"] {
            assert!(explain(t).unwrap().permanent, "{t}");
        }
    }

    #[test]
    fn a_hang_up_is_explained_but_retried_and_the_unknown_is_left_alone() {
        let d = explain("Connection reset by peer (os error 104)").unwrap();
        assert!(!d.permanent);
        assert_eq!(explain("Connection refused (os error 111)"), None);
    }
}
