//! `tls.insecure_skip_verify` for RabbitMQ: a rustls client that accepts
//! any server certificate (signatures are still checked, so the handshake
//! is a real one). lapin has no switch for this; it takes a ready rustls
//! connector instead. For test setups only: ferry warns on every connect.

use std::sync::Arc;

use lapin::tcp::RustlsConnector;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{WebPkiSupportedAlgorithms, ring};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use crate::connectors::tls::Identity;
use crate::error::ConnectorError;

/// A connector that trusts any server, with the client identity for mutual
/// TLS if given.
pub(crate) fn connector(identity: Option<Identity>) -> Result<RustlsConnector, ConnectorError> {
    let provider = Arc::new(ring::default_provider());
    let verifier = Arc::new(AnyServer(provider.signature_verification_algorithms));
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConnectorError::Fatal(format!("amqp TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let config = match identity {
        None => builder.with_no_client_auth(),
        Some(id) => {
            let bad = |what: &str, e: &dyn std::fmt::Display| {
                ConnectorError::Fatal(format!("amqp TLS: cannot read {what}: {e}"))
            };
            let certs = CertificateDer::pem_slice_iter(&id.cert)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad("tls.cert", &e))?;
            let key = PrivateKeyDer::from_pem_slice(&id.key).map_err(|e| bad("tls.key", &e))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| bad("tls.cert/tls.key", &e))?
        }
    };
    Ok(RustlsConnector::from(config))
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
