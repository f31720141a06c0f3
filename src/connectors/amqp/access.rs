//! How ferry reaches RabbitMQ: the URL plus the first-class settings every
//! AMQP source and sink shares, turned into lapin's URI and TLS config.
//!
//! | ferry | lapin |
//! |---|---|
//! | `url = "amqps://..."` | TLS (rustls, the system's CAs) |
//! | `tls.ca` | `OwnedTLSConfig::cert_chain` (trusted in addition to the system's CAs) |
//! | `tls.cert` + `tls.key` | `OwnedTLSConfig::identity` (PKCS#8 PEM): mutual TLS |
//! | `username`, `password` | the URI's user info (PLAIN) |
//! | `vhost` | the URI's path |
//! | `mechanism = "external"` | `auth_mechanism = external`: the client certificate is the login |
//! | `tls.server_name` | the TLS handshake's name (SNI and certificate check) instead of the url's host |
//! | `tls.insecure_skip_verify` | ferry's own rustls connector accepting any certificate (`connectors/tls_client.rs`) |

use std::str::FromStr;

use lapin::tcp::{OwnedIdentity, OwnedTLSConfig};
use lapin::uri::{AMQPScheme, AMQPUri, SASLMechanism};
use serde::Deserialize;

use super::config::AmqpUrl;
use crate::connectors::tls::{Supports, TlsConfig};
use crate::error::ConnectorError;
use crate::problem::{ConfigPath, Problem};
use crate::secret::{Secret, mask_url};

/// What lapin cannot do with `tls`: nothing among these (`server_name`
/// goes through lapin's own connector, see `connection.rs`).
pub(crate) const TLS_SUPPORT: Supports = Supports { server_name: None };

/// Seconds between AMQP heartbeats unless the url says otherwise: a dead
/// connection is noticed after about two of them.
const DEFAULT_HEARTBEAT_SECS: u16 = 10;

/// How ferry logs in.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMechanism {
    /// User name and password.
    #[default]
    Plain,
    /// The TLS client certificate (RabbitMQ's rabbitmq_auth_mechanism_ssl
    /// plugin); no password.
    External,
}

/// The connection settings of one AMQP source or sink.
#[derive(Clone, Debug)]
pub struct AmqpAccess {
    pub url: AmqpUrl,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub vhost: Option<String>,
    pub mechanism: AuthMechanism,
    pub tls: Option<TlsConfig>,
}

impl AmqpAccess {
    /// Access by a URL alone (command-line tools): the login is in the URL.
    pub fn from_url(url: &str) -> Result<AmqpAccess, String> {
        Ok(AmqpAccess {
            url: AmqpUrl::parse(url)?,
            username: None,
            password: None,
            vhost: None,
            mechanism: AuthMechanism::default(),
            tls: None,
        })
    }

    /// The URL as it may be shown: its password masked.
    pub fn shown(&self) -> String {
        mask_url(self.url.as_str())
    }

    fn parsed(&self) -> Option<AMQPUri> {
        AMQPUri::from_str(self.url.as_str()).ok()
    }

    pub fn check(&self, path: &ConfigPath, problems: &mut Vec<Problem>) {
        let Some(uri) = self.parsed() else { return };
        let tls_url = uri.scheme == AMQPScheme::AMQPS;
        if self.password.is_some() && self.url.as_str().contains('@') {
            let user_info = &uri.authority.userinfo;
            if !user_info.password.is_empty() {
                problems.push(
                    Problem::at_path(
                        path.key("password"),
                        "a password in `url` and in `password`",
                    )
                    .with_help("keep one: remove the user and password from the url"),
                );
            }
        }
        if let Some(tls) = &self.tls {
            if !tls_url {
                problems.push(
                    Problem::at_path(path.key("tls"), "`tls` settings with an `amqp://` url")
                        .with_help("write the url as amqps://host:5671/vhost to connect with TLS"),
                );
            }
            tls.check(path, &TLS_SUPPORT, problems);
        }
        if self.mechanism == AuthMechanism::External {
            let has_cert = self.tls.as_ref().is_some_and(|t| t.cert.is_some());
            if !tls_url || !has_cert {
                problems.push(
                    Problem::at_path(
                        path.key("mechanism"),
                        "`mechanism = \"external\"` logs in with a TLS client certificate",
                    )
                    .with_help(
                        "use an amqps:// url and tls = { cert = \"client.pem\", key = \"client.key\" }",
                    ),
                );
            }
            if self.password.is_some() {
                problems.push(
                    Problem::at_path(
                        path.key("password"),
                        "`password` with `mechanism = \"external\"`",
                    )
                    .with_help("the certificate is the login; remove the password"),
                );
            }
        }
    }

    /// lapin's URI, with the first-class settings applied over the URL.
    pub fn uri(&self) -> Result<AMQPUri, ConnectorError> {
        let mut uri = AMQPUri::from_str(self.url.as_str()).map_err(|e| {
            ConnectorError::Fatal(format!(
                "invalid amqp url `{}`: {}",
                self.shown(),
                e.replace(self.url.as_str(), &self.shown())
            ))
        })?;
        if let Some(user) = &self.username {
            uri.authority.userinfo.username = user.clone();
        }
        if let Some(password) = &self.password {
            uri.authority.userinfo.password = password.expose().to_owned();
        }
        if let Some(vhost) = &self.vhost {
            uri.vhost = vhost.clone();
        }
        if self.mechanism == AuthMechanism::External {
            uri.query.auth_mechanism = Some(SASLMechanism::External);
        }
        // RabbitMQ proposes 60 s, so a connection that died without a word
        // (a dropped NAT entry, a half-closed socket) is noticed only after
        // two minutes of silence, while its deliveries wait. A url may still
        // ask for another value (`?heartbeat=30`).
        uri.query.heartbeat.get_or_insert(DEFAULT_HEARTBEAT_SECS);
        Ok(uri)
    }

    /// lapin's TLS settings: extra CA and client identity.
    pub fn tls_config(&self) -> Result<OwnedTLSConfig, ConnectorError> {
        let Some(tls) = &self.tls else {
            return Ok(OwnedTLSConfig::default());
        };
        let cert_chain = tls
            .read_ca()?
            .map(|pem| String::from_utf8_lossy(&pem).into_owned());
        let identity = tls.read_identity()?.map(|id| OwnedIdentity::PKCS8 {
            pem: id.cert,
            key: id.key,
        });
        Ok(OwnedTLSConfig {
            identity,
            cert_chain,
        })
    }

    /// `tls.insecure_skip_verify`: any server certificate is accepted.
    pub fn insecure(&self) -> bool {
        self.tls.as_ref().is_some_and(|t| t.insecure_skip_verify)
    }

    /// `tls.server_name`: the name the server's certificate must carry
    /// when it is not the host in `url`.
    pub fn server_name(&self) -> Option<String> {
        self.tls
            .as_ref()?
            .server_name
            .as_ref()
            .map(ToString::to_string)
    }

    /// The virtual host connected to (for messages that name it).
    pub fn vhost(&self) -> String {
        self.uri().map(|u| u.vhost).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access(toml: &str) -> (AmqpAccess, Vec<String>) {
        #[derive(Deserialize)]
        struct T {
            url: AmqpUrl,
            username: Option<String>,
            password: Option<Secret>,
            vhost: Option<String>,
            #[serde(default)]
            mechanism: AuthMechanism,
            tls: Option<TlsConfig>,
        }
        let t: T = toml::from_str(toml).unwrap();
        let a = AmqpAccess {
            url: t.url,
            username: t.username,
            password: t.password,
            vhost: t.vhost,
            mechanism: t.mechanism,
            tls: t.tls,
        };
        let mut p = Vec::new();
        a.check(&ConfigPath::root(), &mut p);
        (a, p.into_iter().map(|p| p.message).collect())
    }

    #[test]
    fn user_password_and_vhost_override_the_url() {
        let (a, p) = access(
            "url = \"amqps://rabbit:5671\"\nusername = \"ferry\"\npassword = \"pw\"\nvhost = \"prod\"",
        );
        assert!(p.is_empty(), "{p:?}");
        let uri = a.uri().unwrap();
        assert_eq!(uri.authority.userinfo.username, "ferry");
        assert_eq!(uri.authority.userinfo.password, "pw");
        assert_eq!(uri.vhost, "prod");
        assert_eq!(uri.scheme, AMQPScheme::AMQPS);
    }

    #[test]
    fn external_login_needs_a_client_certificate_over_tls() {
        let (_, p) = access("url = \"amqp://h\"\nmechanism = \"external\"");
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("logs in with a TLS client certificate"));
        let (_, p) =
            access("url = \"amqp://h\"\ntls = { insecure_skip_verify = true }\npassword = \"x\"");
        assert!(
            p.iter()
                .any(|m| m.contains("`tls` settings with an `amqp://` url")),
            "{p:?}"
        );
        assert_eq!(p.len(), 1, "{p:?}");
        let (a, p) = access(
            "url = \"amqps://h\"\ntls = { insecure_skip_verify = true, server_name = \"rabbit\" }",
        );
        assert!(p.is_empty(), "{p:?}");
        assert!(a.insecure());
        assert_eq!(a.server_name().as_deref(), Some("rabbit"));
    }

    #[test]
    fn a_dead_connection_is_noticed_in_seconds_unless_the_url_says_otherwise() {
        let (a, _) = access("url = \"amqp://h/v\"");
        assert_eq!(
            a.uri().unwrap().query.heartbeat,
            Some(DEFAULT_HEARTBEAT_SECS)
        );
        let (a, _) = access("url = \"amqp://h/v?heartbeat=30\"");
        assert_eq!(a.uri().unwrap().query.heartbeat, Some(30));
    }

    #[test]
    fn a_password_in_the_url_is_masked_when_shown() {
        let (a, _) = access("url = \"amqp://u:secret@h/v\"");
        assert_eq!(a.shown(), "amqp://u:<redacted>@h/v");
        assert!(!format!("{a:?}").contains("secret"));
    }
}
