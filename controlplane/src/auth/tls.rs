//! TLS for the API server: a serving certificate that is swapped in place before it expires (connections in flight
//! keep theirs, new ones get the new one: rotation without a restart), and the TLS client settings towards node
//! agents. The listener itself is the shared [`skiff_tls::serve`]; client certificates are verified against the
//! cluster CA but optional there (bearer tokens are the other way in).

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use rustls::pki_types::CertificateDer;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::authn::Identity;
use super::pki::{subject_of, Ca, Issued, LeafSpec};
pub use skiff_tls::{provider, serve, server_config, Limits, PeerCert};

/// A certificate chain and key in rustls' form.
pub fn certified_key(issued: &Issued) -> Result<CertifiedKey, String> {
    skiff_tls::certified_key(&issued.cert_pem, &issued.key_pem)
}

/// The serving certificate in use; replaced by [`RotatingCert::rotate_if_due`].
pub struct RotatingCert {
    current: RwLock<(Arc<CertifiedKey>, Issued)>,
    spec: LeafSpec,
}

impl std::fmt::Debug for RotatingCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatingCert").field("common_name", &self.spec.common_name).finish_non_exhaustive()
    }
}

impl RotatingCert {
    pub fn new(ca: &Ca, spec: LeafSpec) -> Result<Arc<RotatingCert>, String> {
        let issued = ca.issue(&spec).map_err(|e| e.to_string())?;
        let key = Arc::new(certified_key(&issued)?);
        Ok(Arc::new(RotatingCert { current: RwLock::new((key, issued)), spec }))
    }

    pub fn not_after(&self) -> SystemTime {
        self.current.read().unwrap_or_else(|e| e.into_inner()).1.not_after
    }

    pub fn cert_pem(&self) -> String {
        self.current.read().unwrap_or_else(|e| e.into_inner()).1.cert_pem.clone()
    }

    /// Issue a new certificate when two thirds of the current one's life have passed. True if it rotated.
    pub fn rotate_if_due(&self, ca: &Ca) -> Result<bool, String> {
        if !self.current.read().unwrap_or_else(|e| e.into_inner()).1.due_for_rotation(SystemTime::now()) {
            return Ok(false);
        }
        let issued = ca.issue(&self.spec).map_err(|e| e.to_string())?;
        let key = Arc::new(certified_key(&issued)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = (key, issued);
        Ok(true)
    }
}

/// The same rotating certificate as a client certificate (the API server's, towards node agents).
impl rustls::client::ResolvesClientCert for RotatingCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Accepts any server certificate: the API server towards node agents, whose serving certificates are
/// self-signed (kube-apiserver does the same unless given --kubelet-certificate-authority). The agents in turn
/// accept only the API server's client certificate, so this direction carries the trust.
#[derive(Debug)]
pub struct AnyServerCert(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// TLS client settings for calls to node agents: `client_cert` as the client certificate.
pub fn kubelet_client_config(client_cert: Arc<RotatingCert>) -> Result<rustls::ClientConfig, String> {
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider())))
        .with_client_cert_resolver(client_cert);
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(c)
}

impl ResolvesServerCert for RotatingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.read().unwrap_or_else(|e| e.into_inner()).0.clone())
    }
}

/// The identity in a verified client certificate.
pub fn peer_identity(cert: &PeerCert) -> Option<Identity> {
    let (user, groups) = subject_of(cert.0.as_deref()?)?;
    Some(Identity { user, groups, ..Default::default() })
}
