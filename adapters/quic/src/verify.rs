//! Pinned server certificates: a dialler accepts exactly the certificate whose fingerprint its
//! peer URL names, whoever signed it and whatever names it carries.

use std::sync::{Arc, Mutex};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, Error, SignatureScheme};

use crate::identity::Fingerprint;

/// Accepts the one certificate with the pinned fingerprint. The handshake signature is still
/// checked against that certificate's key, so the server proves it holds the key.
#[derive(Debug)]
pub(crate) struct Pinned {
    pub(crate) expected: Fingerprint,
    pub(crate) provider: Arc<CryptoProvider>,
    /// The fingerprint of a certificate that was refused (the dialler reports it).
    pub(crate) refused: Arc<Mutex<Option<Fingerprint>>>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let got = Fingerprint::of(end_entity);
        if got == self.expected {
            Ok(ServerCertVerified::assertion())
        } else {
            if let Ok(mut r) = self.refused.lock() {
                *r = Some(got);
            }
            Err(Error::General(format!(
                "the peer's certificate has fingerprint {got}, not the pinned {}",
                self.expected
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
