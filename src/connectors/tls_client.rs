//! rustls client configs made by ferry, for the handshakes a client library
//! leaves to the caller: RabbitMQ's `insecure_skip_verify` (lapin has no
//! switch for it, it takes a ready connector) and Redis pub/sub under
//! `server_name` (redis-rs opens its pub/sub connections with no resolver
//! ferry could give it, so ferry makes that handshake).
//!
//! The verifier of `insecure_skip_verify` accepts any server certificate
//! (signatures are still checked, so the handshake is a real one). For test
//! setups only: the connectors warn on every connect.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use crate::connectors::tls::Identity;
use crate::error::ConnectorError;

/// Which servers a config trusts.
pub(crate) enum Trust {
    /// The CAs of this PEM file only (`tls.ca`).
    Ca(Vec<u8>),
    /// The system's CAs.
    System,
    /// Any server (`insecure_skip_verify`).
    Any,
}

/// A client config trusting `trust`, with the client identity for mutual
/// TLS if given. `system` names the system in errors.
pub(crate) fn client_config(
    trust: Trust,
    identity: Option<Identity>,
    system: &str,
) -> Result<ClientConfig, ConnectorError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        ConnectorError::Fatal(format!("{system} TLS: cannot use {what}: {e}"))
    };
    let provider = Arc::new(ring::default_provider());
    let algorithms = provider.signature_verification_algorithms;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("the TLS versions", &e))?;
    let builder = match trust {
        Trust::Any => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyServer(algorithms))),
        Trust::Ca(pem) => {
            let mut roots = RootCertStore::empty();
            for cert in CertificateDer::pem_slice_iter(&pem) {
                roots
                    .add(cert.map_err(|e| bad("tls.ca", &e))?)
                    .map_err(|e| bad("tls.ca", &e))?;
            }
            builder.with_root_certificates(roots)
        }
        Trust::System => {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            // A file of the system's that does not parse is skipped; a
            // system without any CA is an error.
            roots.add_parsable_certificates(found.certs);
            if roots.is_empty() {
                return Err(bad("the system's CAs", &"none found: set `tls.ca`"));
            }
            builder.with_root_certificates(roots)
        }
    };
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some(id) => {
            let certs = CertificateDer::pem_slice_iter(&id.cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad("tls.cert", &e))?;
            let key = PrivateKeyDer::from_pem_slice(&id.key).map_err(|e| bad("tls.key", &e))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| bad("tls.cert/tls.key", &e))
        }
    }
}

/// Accepts whatever certificate the server shows; checks that the server
/// holds its key.
#[derive(Debug)]
struct AnyServer(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for AnyServer {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}
