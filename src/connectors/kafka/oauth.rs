//! OAUTHBEARER with a token ferry hands to librdkafka itself: a fixed
//! token (`sasl.token`) or one read from a file that something else keeps
//! fresh (`sasl.token_file`, e.g. a Kubernetes projected token). With
//! `sasl.oidc` librdkafka fetches tokens on its own and this is not used.
//!
//! librdkafka asks for a token when it starts and again at 80% of the
//! token's lifetime. The lifetime is the token's `exp` claim when it is a
//! JWT; a token file is read again at least every [`FILE_REREAD`], so a
//! rotated file is picked up before the old token expires.

use std::error::Error;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rdkafka::ClientContext;
use rdkafka::client::OAuthToken;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaError;
use tracing::debug;

use super::errors::LoginRefusal;
use super::security::SaslConfig;
use crate::clock::now_ms;
use crate::secret::Secret;

/// How long a token file's token is used before the file is read again.
const FILE_REREAD: i64 = 5 * 60 * 1000;
/// The lifetime of a fixed token that says nothing of its expiry.
const UNKNOWN_LIFETIME: i64 = 60 * 60 * 1000;
/// The principal when the token names none (`sub`); brokers take theirs
/// from the token anyway.
const DEFAULT_PRINCIPAL: &str = "ferry";

#[derive(Clone, Debug)]
pub enum BearerToken {
    Fixed(Secret),
    File(PathBuf),
}

impl BearerToken {
    /// The token source of a `sasl` setting, if it has one.
    pub fn of(sasl: Option<&SaslConfig>) -> Option<BearerToken> {
        let sasl = sasl?;
        if let Some(token) = &sasl.token {
            return Some(BearerToken::Fixed(token.clone()));
        }
        sasl.token_file.clone().map(BearerToken::File)
    }

    /// The token for librdkafka, with its lifetime and principal.
    pub fn generate(&self) -> Result<OAuthToken, Box<dyn Error>> {
        let (token, reread) = match self {
            BearerToken::Fixed(t) => (t.expose().trim().to_owned(), None),
            BearerToken::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| {
                    format!("reading the OAUTHBEARER token file {}: {e}", path.display())
                })?;
                (text.trim().to_owned(), Some(FILE_REREAD))
            }
        };
        if token.is_empty() {
            return Err("the OAUTHBEARER token is empty".into());
        }
        let now = now_ms();
        let claims = Claims::of(&token);
        if let Some(exp) = claims.expires_ms
            && exp <= now
        {
            return Err("the OAUTHBEARER token has expired (its `exp` claim is past)".into());
        }
        let lifetime_ms = lifetime(now, claims.expires_ms, reread);
        Ok(OAuthToken {
            token,
            principal_name: claims
                .subject
                .unwrap_or_else(|| DEFAULT_PRINCIPAL.to_owned()),
            lifetime_ms,
        })
    }
}

/// A client's token of ferry's own, and whether librdkafka has asked for
/// it yet. librdkafka asks through the client's queue, which only polling
/// serves: a client whose first request is a blocking one (metadata at
/// start) would fail it for want of a token, so it is polled until it has
/// asked ([`hand_over`], [`hand_over_stream`]).
#[derive(Debug, Default)]
pub(crate) struct Bearer {
    token: Option<BearerToken>,
    asked: AtomicBool,
}

impl Bearer {
    pub(crate) fn new(token: Option<BearerToken>) -> Self {
        Self {
            token,
            asked: AtomicBool::new(false),
        }
    }

    /// The answer to librdkafka's request for a token: an error when the
    /// config gives no token of ferry's own.
    pub(crate) fn generate(&self) -> Result<OAuthToken, Box<dyn Error>> {
        self.asked.store(true, Ordering::Relaxed);
        match &self.token {
            Some(b) => b.generate(),
            None => Err("OAUTHBEARER: set `sasl.oidc`, `sasl.token` or `sasl.token_file`".into()),
        }
    }

    /// ferry hands a token over and librdkafka has not asked for it yet.
    pub(crate) fn waiting(&self) -> bool {
        self.token.is_some() && !self.asked.load(Ordering::Relaxed)
    }
}

/// How long a new client is polled for librdkafka to ask for the token
/// (it asks at once; this only bounds a surprise).
const HAND_OVER: Duration = Duration::from_secs(2);

/// Polls a new consumer until librdkafka has taken ferry's token
/// (`waiting` reads its context's [`Bearer::waiting`]). Blocking.
pub(crate) fn hand_over<C: ConsumerContext>(client: &BaseConsumer<C>, waiting: impl Fn() -> bool) {
    let until = Instant::now() + HAND_OVER;
    while waiting() && Instant::now() < until {
        // Not subscribed: nothing but events to serve.
        let _ = client.poll(Duration::from_millis(20));
    }
}

/// [`hand_over`] for a stream consumer, before it subscribes or is
/// assigned partitions: only its stream serves the queue.
pub(crate) async fn hand_over_stream<C: ConsumerContext + 'static>(
    consumer: &StreamConsumer<C>,
    waiting: impl Fn() -> bool,
) {
    let until = Instant::now() + HAND_OVER;
    while waiting() && Instant::now() < until {
        let _ = tokio::time::timeout(Duration::from_millis(20), consumer.recv()).await;
    }
}

/// The client context of ferry's short-lived clients (admin, readers):
/// librdkafka's defaults, plus the token when ferry hands it over, and
/// the refused login that a failed request is to report.
pub(crate) struct TokenContext {
    pub(crate) bearer: Bearer,
    pub(crate) refusal: LoginRefusal,
}

impl TokenContext {
    pub(crate) fn new(bearer: Option<BearerToken>) -> Self {
        Self {
            bearer: Bearer::new(bearer),
            refusal: LoginRefusal::default(),
        }
    }
}

impl ClientContext for TokenContext {
    const ENABLE_REFRESH_OAUTH_TOKEN: bool = true;

    fn generate_oauth_token(&self, _config: Option<&str>) -> Result<OAuthToken, Box<dyn Error>> {
        self.bearer.generate()
    }

    /// The pipeline's own clients report the statistics; these would only
    /// repeat them.
    fn stats_raw(&self, _statistics: &[u8]) {}

    fn log(&self, level: RDKafkaLogLevel, facility: &str, message: &str) {
        self.refusal.saw(facility, message);
        debug!(?level, facility, "librdkafka: {message}");
    }

    /// The request that failed reports it (with the refusal, if any).
    fn error(&self, error: KafkaError, reason: &str) {
        debug!("librdkafka: {error}: {reason}");
    }
}

impl ConsumerContext for TokenContext {}

/// When librdkafka must ask again: the token's expiry, or sooner for a
/// file that may have been rotated.
fn lifetime(now: i64, expires: Option<i64>, reread: Option<i64>) -> i64 {
    let expiry = expires.unwrap_or(now + UNKNOWN_LIFETIME);
    match reread {
        Some(every) => expiry.min(now + every),
        None => expiry,
    }
}

/// What ferry reads of a JWT: nothing is verified (the broker does that).
#[derive(Debug, Default, PartialEq)]
struct Claims {
    expires_ms: Option<i64>,
    subject: Option<String>,
}

impl Claims {
    /// The claims of a JWT (`header.payload.signature`); none for an opaque
    /// token.
    fn of(token: &str) -> Claims {
        let mut parts = token.split('.');
        let (Some(_), Some(payload), Some(_)) = (parts.next(), parts.next(), parts.next()) else {
            return Claims::default();
        };
        let Ok(bytes) = URL_SAFE_NO_PAD.decode(payload.trim_end_matches('=')) else {
            return Claims::default();
        };
        let Ok(json) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
            return Claims::default();
        };
        Claims {
            expires_ms: json["exp"].as_i64().map(|s| s.saturating_mul(1000)),
            subject: json["sub"].as_str().map(str::to_owned),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(payload: &str) -> String {
        format!(
            "eyJhbGciOiJSUzI1NiJ9.{}.c2lnbmF0dXJl",
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn a_jwt_gives_its_expiry_and_subject_and_an_opaque_token_nothing() {
        let c = Claims::of(&jwt(r#"{"exp":4102444800,"sub":"svc-ferry"}"#));
        assert_eq!(c.expires_ms, Some(4_102_444_800_000));
        assert_eq!(c.subject.as_deref(), Some("svc-ferry"));
        assert_eq!(Claims::of("opaque-token"), Claims::default());
        assert_eq!(Claims::of("a.!!!.c"), Claims::default());
    }

    #[test]
    fn a_token_file_is_read_again_before_its_token_expires() {
        assert_eq!(
            lifetime(0, Some(10_000_000), Some(FILE_REREAD)),
            FILE_REREAD
        );
        assert_eq!(lifetime(0, Some(1_000), Some(FILE_REREAD)), 1_000);
        assert_eq!(lifetime(0, None, None), UNKNOWN_LIFETIME);
        assert_eq!(lifetime(0, Some(10_000_000), None), 10_000_000);
    }

    #[test]
    fn a_client_waits_for_librdkafka_to_ask_only_when_ferry_hands_a_token() {
        let ferrys = Bearer::new(Some(BearerToken::Fixed(Secret::new("t"))));
        assert!(ferrys.waiting());
        assert!(ferrys.generate().is_ok());
        assert!(!ferrys.waiting());
        let none = Bearer::new(None);
        assert!(
            !none.waiting(),
            "OIDC or no OAUTHBEARER: librdkafka needs nothing"
        );
        assert!(none.generate().is_err());
    }

    #[test]
    fn a_rotated_file_gives_the_new_token_and_an_expired_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let source = BearerToken::File(path.clone());
        std::fs::write(&path, format!("{}\n", jwt(r#"{"exp":4102444800}"#))).unwrap();
        let first = source.generate().unwrap();
        assert_eq!(first.principal_name, DEFAULT_PRINCIPAL);
        std::fs::write(&path, jwt(r#"{"exp":4102444801,"sub":"b"}"#)).unwrap();
        let second = source.generate().unwrap();
        assert_ne!(first.token, second.token);
        assert_eq!(second.principal_name, "b");
        std::fs::write(&path, jwt(r#"{"exp":1}"#)).unwrap();
        let refused = |s: &BearerToken| s.generate().err().map(|e| e.to_string());
        assert!(refused(&source).unwrap().contains("expired"));
        std::fs::remove_file(&path).unwrap();
        assert!(refused(&source).unwrap().contains("token file"));
    }
}
