//! How ferry reaches a Redis server: the URL plus the first-class settings
//! that every Redis source and sink shares (`username`, `password`, `tls`),
//! turned into a redis-rs client.
//!
//! | ferry | redis-rs |
//! |---|---|
//! | `url = "rediss://..."` | `ConnectionAddr::TcpTls` (rustls, system roots) |
//! | `url = "rediss://...#insecure"`, `tls.insecure_skip_verify` | `TcpTls { insecure: true }` |
//! | `tls.ca` | `TlsCertificates::root_cert` (replaces the system roots) |
//! | `tls.cert` + `tls.key` | `TlsCertificates::client_tls` (mutual TLS) |
//! | `username` + `password` | `AUTH username password` (ACL user) |
//! | `password` alone | `AUTH password` (legacy `requirepass`) |

use std::time::Duration;

use redis::IntoConnectionInfo;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::config::RedisUrl;
use crate::connectors::tls::{Supports, TlsConfig};
use crate::error::ConnectorError;
use crate::problem::{ConfigPath, Problem};
use crate::secret::{Secret, mask_url};

/// What redis-rs cannot do with `tls`.
pub(crate) const TLS_SUPPORT: Supports = Supports {
    server_name: Some(
        "redis-rs checks the certificate against the host in `url`; \
         connect by that name (DNS or /etc/hosts) instead",
    ),
};

/// The connection settings of one Redis source or sink.
#[derive(Clone, Debug)]
pub struct RedisAccess {
    pub url: RedisUrl,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub tls: Option<TlsConfig>,
}

impl RedisAccess {
    /// Access by a URL alone (command-line tools): any login is in the URL.
    pub fn from_url(url: &str) -> Result<RedisAccess, String> {
        Ok(RedisAccess {
            url: RedisUrl::parse(url)?,
            username: None,
            password: None,
            tls: None,
        })
    }

    /// The URL as it may be shown: its password masked.
    pub fn shown(&self) -> String {
        mask_url(self.url.as_str())
    }

    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        self.url.as_str().starts_with("rediss://")
    }

    pub fn check(&self, path: &ConfigPath, problems: &mut Vec<Problem>) {
        let info = self.url.as_str().into_connection_info().ok();
        let in_url = info.as_ref().map(|i| i.redis_settings());
        if self.password.is_some() && in_url.is_some_and(|r| r.password().is_some()) {
            problems.push(
                Problem::at_path(
                    path.key("password"),
                    "a password in `url` and in `password`",
                )
                .with_help("keep one: remove the password from the url"),
            );
        }
        if self.username.is_some() && self.password.is_none() {
            problems.push(
                Problem::at_path(path.key("username"), "`username` without `password`").with_help(
                    "an ACL user logs in with both: add password = \"${REDIS_PASSWORD}\"",
                ),
            );
        }
        if let Some(tls) = &self.tls {
            if !self.is_tls() {
                problems.push(
                    Problem::at_path(path.key("tls"), "`tls` settings with a `redis://` url")
                        .with_help("write the url as rediss://host:port to connect with TLS"),
                );
            }
            tls.check(path, &TLS_SUPPORT, problems);
        }
    }

    /// A redis-rs client with the credentials and TLS settings applied.
    pub fn client(&self) -> Result<redis::Client, ConnectorError> {
        let mut url = self.url.as_str().to_owned();
        let insecure = self.tls.as_ref().is_some_and(|t| t.insecure_skip_verify);
        if insecure && !url.contains('#') {
            url.push_str("#insecure");
        }
        let opening = |e| ConnectorError::redis(format!("opening {}", self.shown()), e);
        let mut info = url.as_str().into_connection_info().map_err(opening)?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &self.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password.expose());
        }
        info = info.set_redis_settings(settings);
        if url.ends_with("#insecure") {
            tracing::warn!(
                url = %self.shown(),
                "redis: TLS certificate verification is OFF (insecure_skip_verify or #insecure): \
                 anyone on the network path can read and change this traffic; \
                 use it for tests only and give `tls.ca` instead"
            );
        }
        let Some(tls) = self.tls.as_ref().filter(|t| !t.insecure_skip_verify) else {
            return redis::Client::open(info).map_err(opening);
        };
        let certificates = redis::TlsCertificates {
            client_tls: tls.read_identity()?.map(|id| redis::ClientTlsConfig {
                client_cert: id.cert,
                client_key: id.key,
            }),
            root_cert: tls.read_ca()?,
        };
        redis::Client::build_with_tls(info, certificates).map_err(|e| {
            ConnectorError::Fatal(format!(
                "redis {}: the TLS files in `tls` are not usable: {e}",
                self.shown()
            ))
        })
    }
}

/// A connection manager that reconnects by itself, with a response timeout
/// so that a hung server fails a batch (which is retried) instead of
/// blocking the pipeline forever.
pub(crate) fn connect(
    access: &RedisAccess,
    response_timeout: Duration,
) -> Result<ConnectionManager, ConnectorError> {
    let client = access.client()?;
    let config = ConnectionManagerConfig::new()
        .set_response_timeout(Some(response_timeout))
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    ConnectionManager::new_lazy_with_config(client, config)
        .map_err(|e| ConnectorError::redis("creating the connection", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(toml: &str) -> (RedisAccess, Vec<String>) {
        #[derive(serde::Deserialize)]
        struct T {
            url: RedisUrl,
            username: Option<String>,
            password: Option<Secret>,
            tls: Option<TlsConfig>,
        }
        let t: T = toml::from_str(toml).unwrap();
        let a = RedisAccess {
            url: t.url,
            username: t.username,
            password: t.password,
            tls: t.tls,
        };
        let mut p = Vec::new();
        a.check(&ConfigPath::root(), &mut p);
        (a, p.into_iter().map(|p| p.message).collect())
    }

    #[test]
    fn an_acl_user_logs_in_with_username_and_password() {
        let (a, p) = access("url = \"redis://h:6379/1\"\nusername = \"ferry\"\npassword = \"pw\"");
        assert!(p.is_empty(), "{p:?}");
        let info = a.client().unwrap().get_connection_info().clone();
        assert_eq!(info.redis_settings().username(), Some("ferry"));
        assert_eq!(info.redis_settings().password(), Some("pw"));
        assert_eq!(info.redis_settings().db(), 1);
    }

    #[test]
    fn tls_settings_need_a_tls_url_and_passwords_are_given_once() {
        let (_, p) = access(
            "url = \"redis://:a@h\"\npassword = \"b\"\ntls = { insecure_skip_verify = true }",
        );
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("a password in `url` and in `password`"));
        assert!(p[1].contains("`tls` settings with a `redis://` url"));
        let (_, p) = access("url = \"redis://h\"\nusername = \"u\"");
        assert!(p[0].contains("`username` without `password`"));
    }

    #[test]
    fn skipping_verification_becomes_redis_rs_insecure_mode() {
        let (a, p) = access("url = \"rediss://h:6380\"\ntls = { insecure_skip_verify = true }");
        assert!(p.is_empty(), "{p:?}");
        let client = a.client().unwrap();
        assert!(matches!(
            client.get_connection_info().addr(),
            redis::ConnectionAddr::TcpTls { insecure: true, .. }
        ));
        assert_eq!(
            access("url = \"rediss://:pw@h:6380/0\"").0.shown(),
            "rediss://:<redacted>@h:6380/0"
        );
    }
}
