//! TLS settings shared by the three systems: `tls = { ca = ..., cert = ...,
//! key = ... }`. Each connector maps them onto its client library
//! (librdkafka properties, redis-rs certificates, lapin's TLS config).
//!
//! Verification is on by default. `insecure_skip_verify` turns it off for
//! test setups, and ferry then warns on every connect and in `ferry check`.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use tracing::warn;

use crate::error::ConnectorError;
use crate::problem::{ConfigPath, Problem};
use crate::values::NonEmpty;

#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of the certificate authorities to trust instead of the
    /// system's (a private CA).
    pub ca: Option<PathBuf>,
    /// PEM file of the client certificate, for mutual TLS (with `key`).
    pub cert: Option<PathBuf>,
    /// PEM file of the client certificate's private key (unencrypted).
    pub key: Option<PathBuf>,
    /// The name the server's certificate must carry, when it differs from
    /// the host ferry connects to.
    pub server_name: Option<NonEmpty>,
    /// Accept any server certificate. For test setups only: anyone on the
    /// network path can then read and change the traffic.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

/// A client certificate and its key, PEM.
#[derive(Clone)]
pub struct Identity {
    pub cert: Vec<u8>,
    pub key: Vec<u8>,
}

/// Which settings a client library can honour.
pub struct Supports {
    pub server_name: Option<&'static str>,
}

impl TlsConfig {
    /// Files that must exist, settings that go together, and settings the
    /// system's client cannot honour (`unsupported` says why, per field).
    pub fn check(&self, path: &ConfigPath, supports: &Supports, problems: &mut Vec<Problem>) {
        let path = path.key("tls");
        match (&self.cert, &self.key) {
            (Some(_), None) => problems.push(
                Problem::at_path(path.key("cert"), "`cert` without `key`")
                    .with_help("mutual TLS needs both: add key = \"/path/to/client.key\""),
            ),
            (None, Some(_)) => problems.push(
                Problem::at_path(path.key("key"), "`key` without `cert`")
                    .with_help("mutual TLS needs both: add cert = \"/path/to/client.pem\""),
            ),
            _ => {}
        }
        for (field, file) in [("ca", &self.ca), ("cert", &self.cert), ("key", &self.key)] {
            if let Some(file) = file
                && let Err(e) = std::fs::metadata(file)
            {
                problems.push(
                    Problem::at_path(
                        path.key(field),
                        format!("cannot read `{}`: {e}", file.display()),
                    )
                    .with_help("give the path of a PEM file that ferry's user can read"),
                );
            }
        }
        if self.server_name.is_some()
            && let Some(why) = supports.server_name
        {
            problems.push(
                Problem::at_path(
                    path.key("server_name"),
                    "`server_name` is not supported here",
                )
                .with_help(why),
            );
        }
        if self.insecure_skip_verify && self.ca.is_some() {
            problems.push(
                Problem::at_path(
                    path.key("insecure_skip_verify"),
                    "`insecure_skip_verify` with a `ca`: the CA would not be checked",
                )
                .with_help(
                    "remove insecure_skip_verify; the CA is enough to trust a private server",
                ),
            );
        }
    }

    /// Logs, loudly, that verification is off; called on every connect.
    pub fn warn_if_insecure(&self, pipeline: &str, part: &str) {
        if self.insecure_skip_verify {
            warn!(
                pipeline,
                part,
                "TLS certificate verification is OFF (tls.insecure_skip_verify = true): \
                 anyone on the network path can read and change this traffic; \
                 use it for tests only and give `tls.ca` instead"
            );
        }
    }

    /// The CA file's content.
    pub fn read_ca(&self) -> Result<Option<Vec<u8>>, ConnectorError> {
        self.ca.as_deref().map(|p| read("tls.ca", p)).transpose()
    }

    /// The client certificate and key, for mutual TLS.
    pub fn read_identity(&self) -> Result<Option<Identity>, ConnectorError> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Ok(Some(Identity {
                cert: read("tls.cert", cert)?,
                key: read("tls.key", key)?,
            })),
            _ => Ok(None),
        }
    }
}

fn read(setting: &str, path: &Path) -> Result<Vec<u8>, ConnectorError> {
    std::fs::read(path).map_err(|e| {
        ConnectorError::Fatal(format!("cannot read `{}` ({setting}): {e}", path.display()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(toml: &str, supports: &Supports) -> Vec<String> {
        let c: TlsConfig = toml::from_str(toml).unwrap();
        let mut p = Vec::new();
        c.check(&ConfigPath::root(), supports, &mut p);
        p.into_iter().map(|p| p.message).collect()
    }

    #[test]
    fn a_client_certificate_needs_its_key_and_files_must_exist() {
        let all = Supports { server_name: None };
        let p = problems("cert = \"/nonexistent/client.pem\"", &all);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("`cert` without `key`"));
        assert!(p[1].contains("cannot read `/nonexistent/client.pem`"));
    }

    #[test]
    fn settings_a_client_cannot_honour_are_refused_with_the_reason() {
        let none = Supports {
            server_name: Some("librdkafka cannot"),
        };
        let p = problems("server_name = \"kafka.internal\"", &none);
        assert_eq!(p, ["`server_name` is not supported here"]);
        assert!(problems("insecure_skip_verify = true", &none).is_empty());
    }
}
