//! Kafka TLS and SASL: the first-class `tls` and `sasl` settings, and the
//! librdkafka properties they become (pure, tested below).
//!
//! | ferry | librdkafka |
//! |---|---|
//! | `tls` present | `security.protocol = SSL` (`SASL_SSL` with `sasl`) |
//! | `sasl` without `tls` | `security.protocol = SASL_PLAINTEXT` |
//! | `tls.ca` | `ssl.ca.location` |
//! | `tls.cert`, `tls.key` | `ssl.certificate.location`, `ssl.key.location` |
//! | `tls.insecure_skip_verify` | `enable.ssl.certificate.verification = false`, `ssl.endpoint.identification.algorithm = none` |
//! | `sasl.mechanism` | `sasl.mechanism` (`PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512`, `OAUTHBEARER`) |
//! | `sasl.username`, `sasl.password` | `sasl.username`, `sasl.password` |
//! | `sasl.oidc.*` | `sasl.oauthbearer.method = oidc`, `sasl.oauthbearer.client.id`, `.client.secret`, `.token.endpoint.url`, `.scope`, `.extensions` |

use std::collections::BTreeMap;

use rdkafka::ClientConfig;
use serde::Deserialize;

use crate::connectors::tls::{Supports, TlsConfig};
use crate::problem::{ConfigPath, Problem};
use crate::secret::Secret;
use crate::values::NonEmpty;

/// What librdkafka cannot do with `tls`.
pub(crate) const TLS_SUPPORT: Supports = Supports {
    server_name: Some(
        "librdkafka checks each broker's certificate against the name the cluster \
         advertises for it; it has no override",
    ),
};

/// `sasl = { mechanism = "SCRAM-SHA-512", username = ..., password = ... }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    pub mechanism: Mechanism,
    pub username: Option<NonEmpty>,
    /// Write `"${VAR}"` or `"${file:/path}"`; never shown.
    pub password: Option<Secret>,
    /// OAUTHBEARER: fetch tokens from an OpenID Connect provider with the
    /// client-credentials grant (librdkafka refreshes them before expiry).
    pub oidc: Option<OidcConfig>,
    /// OAUTHBEARER: a fixed token (`"${KAFKA_TOKEN}"`); never shown.
    pub token: Option<Secret>,
    /// OAUTHBEARER: a file holding the token, read again before the token
    /// expires and at least every 5 minutes, so a rotated file is used.
    pub token_file: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
pub enum Mechanism {
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
    #[serde(rename = "OAUTHBEARER")]
    OauthBearer,
}

impl Mechanism {
    pub fn name(self) -> &'static str {
        match self {
            Mechanism::Plain => "PLAIN",
            Mechanism::ScramSha256 => "SCRAM-SHA-256",
            Mechanism::ScramSha512 => "SCRAM-SHA-512",
            Mechanism::OauthBearer => "OAUTHBEARER",
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcConfig {
    /// The provider's token endpoint, e.g.
    /// `https://login.example.com/oauth2/token`.
    pub token_url: NonEmpty,
    pub client_id: NonEmpty,
    /// Write `"${VAR}"` or `"${file:/path}"`; never shown.
    pub client_secret: Secret,
    pub scope: Option<NonEmpty>,
    /// SASL extensions some services require, e.g. Confluent Cloud's
    /// `logicalCluster` and `identityPoolId`.
    #[serde(default)]
    pub extensions: BTreeMap<String, String>,
}

/// The librdkafka properties that `tls` and `sasl` set, in order.
pub(crate) fn properties(
    tls: Option<&TlsConfig>,
    sasl: Option<&SaslConfig>,
) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let protocol = match (tls.is_some(), sasl.is_some()) {
        (false, false) => return out,
        (true, false) => "SSL",
        (false, true) => "SASL_PLAINTEXT",
        (true, true) => "SASL_SSL",
    };
    out.push(("security.protocol", protocol.to_owned()));
    if let Some(tls) = tls {
        let path = |p: &std::path::Path| p.display().to_string();
        if let Some(ca) = &tls.ca {
            out.push(("ssl.ca.location", path(ca)));
        }
        if let (Some(cert), Some(key)) = (&tls.cert, &tls.key) {
            out.push(("ssl.certificate.location", path(cert)));
            out.push(("ssl.key.location", path(key)));
        }
        if tls.insecure_skip_verify {
            out.push(("enable.ssl.certificate.verification", "false".into()));
            out.push(("ssl.endpoint.identification.algorithm", "none".into()));
        }
    }
    if let Some(sasl) = sasl {
        out.push(("sasl.mechanism", sasl.mechanism.name().into()));
        if let Some(user) = &sasl.username {
            out.push(("sasl.username", user.to_string()));
        }
        if let Some(password) = &sasl.password {
            out.push(("sasl.password", password.expose().to_owned()));
        }
        if let Some(oidc) = &sasl.oidc {
            out.push(("sasl.oauthbearer.method", "oidc".into()));
            out.push((
                "sasl.oauthbearer.token.endpoint.url",
                oidc.token_url.to_string(),
            ));
            out.push(("sasl.oauthbearer.client.id", oidc.client_id.to_string()));
            out.push((
                "sasl.oauthbearer.client.secret",
                oidc.client_secret.expose().to_owned(),
            ));
            if let Some(scope) = &oidc.scope {
                out.push(("sasl.oauthbearer.scope", scope.to_string()));
            }
            if !oidc.extensions.is_empty() {
                let ext: Vec<String> = oidc
                    .extensions
                    .iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                out.push(("sasl.oauthbearer.extensions", ext.join(",")));
            }
        }
    }
    out
}

/// Applies `tls` and `sasl` to a librdkafka configuration.
pub(crate) fn apply(c: &mut ClientConfig, tls: Option<&TlsConfig>, sasl: Option<&SaslConfig>) {
    for (k, v) in properties(tls, sasl) {
        c.set(k, v);
    }
}

/// Settings that go together, and `options` that would contradict the
/// first-class ones.
pub(crate) fn check(
    tls: Option<&TlsConfig>,
    sasl: Option<&SaslConfig>,
    options: &BTreeMap<String, String>,
    path: &ConfigPath,
    problems: &mut Vec<Problem>,
) {
    if let Some(tls) = tls {
        tls.check(path, &TLS_SUPPORT, problems);
    }
    if let Some(sasl) = sasl {
        let p = path.key("sasl");
        match sasl.mechanism {
            Mechanism::Plain | Mechanism::ScramSha256 | Mechanism::ScramSha512 => {
                if sasl.username.is_none() || sasl.password.is_none() {
                    problems.push(
                        Problem::at_path(
                            p.clone(),
                            format!(
                                "`{}` needs `username` and `password`",
                                sasl.mechanism.name()
                            ),
                        )
                        .with_help("e.g. username = \"ferry\", password = \"${KAFKA_PASSWORD}\""),
                    );
                }
                for (field, set) in [
                    ("oidc", sasl.oidc.is_some()),
                    ("token", sasl.token.is_some()),
                    ("token_file", sasl.token_file.is_some()),
                ] {
                    if set {
                        problems.push(
                            Problem::at_path(
                                p.key(field),
                                format!("`{field}` is for mechanism = \"OAUTHBEARER\""),
                            )
                            .with_help("remove it, or set mechanism = \"OAUTHBEARER\""),
                        );
                    }
                }
            }
            Mechanism::OauthBearer => {
                let sources = [
                    sasl.oidc.is_some(),
                    sasl.token.is_some(),
                    sasl.token_file.is_some(),
                ];
                match sources.iter().filter(|s| **s).count() {
                    0 => problems.push(
                        Problem::at_path(
                            p.clone(),
                            "`OAUTHBEARER` needs `oidc`, `token` or `token_file`",
                        )
                        .with_help(
                            "give the token endpoint and client credentials: \
                                 oidc = { token_url = \"https://...\", client_id = \"...\", \
                                 client_secret = \"${KAFKA_CLIENT_SECRET}\" }, \
                                 or token_file = \"/run/secrets/kafka-token\"",
                        ),
                    ),
                    1 => {}
                    _ => problems.push(
                        Problem::at_path(
                            p.clone(),
                            "`oidc`, `token` and `token_file` each say where tokens come from",
                        )
                        .with_help("keep one of them"),
                    ),
                }
                if sasl.username.is_some() || sasl.password.is_some() {
                    problems.push(
                        Problem::at_path(p.clone(), "`OAUTHBEARER` takes no `username`/`password`")
                            .with_help("the client id and secret go in `oidc`"),
                    );
                }
            }
        }
        if tls.is_none() {
            // Allowed (SASL_PLAINTEXT), but a password in clear text is
            // worth a look.
            if sasl.mechanism == Mechanism::Plain {
                problems.push(
                    Problem::at_path(
                        p,
                        "SASL PLAIN without `tls` sends the password in clear text",
                    )
                    .with_help("add tls = {} (TLS with the system's CAs), or use SCRAM"),
                );
            }
        }
    }
    let set: Vec<&str> = properties(tls, sasl).into_iter().map(|(k, _)| k).collect();
    for key in options.keys() {
        if set.contains(&key.as_str()) {
            problems.push(
                Problem::at_path(
                    path.key("options").key(key),
                    format!("`{key}` is set by `tls`/`sasl` already"),
                )
                .with_help("remove it from `options`"),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct T {
        tls: Option<TlsConfig>,
        sasl: Option<SaslConfig>,
        #[serde(default)]
        options: BTreeMap<String, String>,
    }

    fn parse(toml: &str) -> (BTreeMap<&'static str, String>, Vec<String>) {
        let t: T = toml::from_str(toml).unwrap();
        let mut p = Vec::new();
        check(
            t.tls.as_ref(),
            t.sasl.as_ref(),
            &t.options,
            &ConfigPath::root(),
            &mut p,
        );
        (
            properties(t.tls.as_ref(), t.sasl.as_ref())
                .into_iter()
                .collect(),
            p.into_iter().map(|p| p.message).collect(),
        )
    }

    #[test]
    fn scram_over_tls_is_sasl_ssl_with_the_ca() {
        let (props, problems) = parse(
            "tls = { ca = \"/etc/ssl/certs/ca-certificates.crt\" }\n\
             sasl = { mechanism = \"SCRAM-SHA-512\", username = \"ferry\", password = \"pw\" }",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(props["security.protocol"], "SASL_SSL");
        assert_eq!(
            props["ssl.ca.location"],
            "/etc/ssl/certs/ca-certificates.crt"
        );
        assert_eq!(props["sasl.mechanism"], "SCRAM-SHA-512");
        assert_eq!(props["sasl.username"], "ferry");
        assert_eq!(props["sasl.password"], "pw");
    }

    #[test]
    fn mutual_tls_and_skipping_verification_map_to_librdkafka() {
        let (props, _) =
            parse("tls = { cert = \"c.pem\", key = \"k.pem\", insecure_skip_verify = true }");
        assert_eq!(props["security.protocol"], "SSL");
        assert_eq!(props["ssl.certificate.location"], "c.pem");
        assert_eq!(props["ssl.key.location"], "k.pem");
        assert_eq!(props["enable.ssl.certificate.verification"], "false");
        assert_eq!(props["ssl.endpoint.identification.algorithm"], "none");
        assert!(parse("").0.is_empty(), "nothing set without tls or sasl");
    }

    #[test]
    fn oidc_client_credentials_become_the_builtin_oidc_method() {
        let (props, problems) = parse(
            "tls = {}\n[sasl]\nmechanism = \"OAUTHBEARER\"\n\
             oidc = { token_url = \"https://idp/token\", client_id = \"ferry\", client_secret = \"s\", \
             scope = \"kafka\", extensions = { logicalCluster = \"lkc-1\", identityPoolId = \"pool-2\" } }",
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(props["sasl.oauthbearer.method"], "oidc");
        assert_eq!(
            props["sasl.oauthbearer.token.endpoint.url"],
            "https://idp/token"
        );
        assert_eq!(props["sasl.oauthbearer.client.secret"], "s");
        assert_eq!(props["sasl.oauthbearer.scope"], "kafka");
        assert_eq!(
            props["sasl.oauthbearer.extensions"],
            "identityPoolId=pool-2,logicalCluster=lkc-1"
        );
    }

    #[test]
    fn a_token_of_ferrys_own_sets_only_the_mechanism() {
        let (props, problems) =
            parse("tls = {}\nsasl = { mechanism = \"OAUTHBEARER\", token_file = \"/run/token\" }");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(props["sasl.mechanism"], "OAUTHBEARER");
        assert!(!props.contains_key("sasl.oauthbearer.method"));
    }

    #[test]
    fn incomplete_or_contradicting_settings_are_refused() {
        let (_, p) = parse("sasl = { mechanism = \"SCRAM-SHA-256\", username = \"u\" }");
        assert_eq!(p, ["`SCRAM-SHA-256` needs `username` and `password`"]);
        let (_, p) = parse("sasl = { mechanism = \"OAUTHBEARER\" }\ntls = {}");
        assert_eq!(p, ["`OAUTHBEARER` needs `oidc`, `token` or `token_file`"]);
        let (_, p) = parse(
            "sasl = { mechanism = \"OAUTHBEARER\", token = \"t\", token_file = \"/t\" }\ntls = {}",
        );
        assert_eq!(
            p,
            ["`oidc`, `token` and `token_file` each say where tokens come from"]
        );
        let (_, p) = parse(
            "sasl = { mechanism = \"SCRAM-SHA-256\", username = \"u\", password = \"p\", token = \"t\" }",
        );
        assert_eq!(p, ["`token` is for mechanism = \"OAUTHBEARER\""]);
        let (_, p) = parse(
            "tls = {}\nsasl = { mechanism = \"PLAIN\", username = \"u\", password = \"p\" }\n\
             options = { \"security.protocol\" = \"PLAINTEXT\", \"ssl.cipher.suites\" = \"x\" }",
        );
        assert_eq!(p, ["`security.protocol` is set by `tls`/`sasl` already"]);
        let (_, p) = parse("sasl = { mechanism = \"PLAIN\", username = \"u\", password = \"p\" }");
        assert!(p[0].contains("clear text"), "{p:?}");
    }
}
