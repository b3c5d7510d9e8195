//! The cluster's certificate authority: created on first start in `<data-dir>/pki/` (rcgen), then used to issue the
//! API server's serving certificate, the admin's and the nodes' client certificates, and the client certificate the
//! API server shows to node agents. Kubernetes reads a client certificate's subject as the user: CN is the user
//! name, each O a group (`O=system:masters` is the cluster admin).

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{0}: {1}")]
    Cert(String, rcgen::Error),
    #[error("{0}")]
    Invalid(String),
}

/// Validity of the cluster CA (as kubeadm's: ten years).
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Default validity of the certificates the CA issues (one year, rotated long before that).
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);

/// A certificate and its private key, both PEM, with the end of its validity.
#[derive(Clone)]
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    /// When it was issued (its notBefore is a little earlier, for clocks that disagree).
    pub issued_at: SystemTime,
    pub not_after: SystemTime,
}

impl Issued {
    /// Past two thirds of its lifetime: time to get a new one (the kubelet rotates at 70–90 %).
    pub fn due_for_rotation(&self, now: SystemTime) -> bool {
        let life = self.not_after.duration_since(self.issued_at).unwrap_or_default();
        now >= self.issued_at + life * 2 / 3
    }
}

impl std::fmt::Debug for Issued {
    // Never print a private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Issued").field("not_after", &self.not_after).finish_non_exhaustive()
    }
}

/// What a certificate is for.
#[derive(Clone, Debug, Default)]
pub struct LeafSpec {
    pub common_name: String,
    /// Subject O values: the groups of a client certificate. rcgen keeps one value per attribute type, so a
    /// certificate carries at most one group; that covers every identity Skiff issues (admin, nodes).
    pub organization: Option<String>,
    pub client: bool,
    pub server: bool,
    pub dns_names: Vec<String>,
    pub ips: Vec<IpAddr>,
    pub validity: Option<Duration>,
}

pub struct Ca {
    cert: Certificate,
    key: KeyPair,
    pub cert_pem: String,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io { path: path.to_path_buf(), source }
}

fn serial() -> SerialNumber {
    // 16 random bytes with the top bit clear: a positive serial (RFC 5280) that never repeats in practice.
    let mut b = *uuid::Uuid::new_v4().as_bytes();
    b[0] &= 0x7f;
    SerialNumber::from_slice(&b)
}

/// Write `data` to `path` atomically with `mode`.
pub fn write_secret_file(path: &Path, data: &[u8], mode: u32) -> Result<(), PkiError> {
    skiff_tls::write_file_atomic(path, data, mode).map_err(io(path))
}

impl Ca {
    /// Load the CA from `dir` (ca.crt, ca.key), or create one there if neither exists.
    pub fn load_or_create(dir: &Path) -> Result<Ca, PkiError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let (crt, key) = (dir.join("ca.crt"), dir.join("ca.key"));
        match (crt.exists(), key.exists()) {
            (true, true) => {
                let cert_pem = std::fs::read_to_string(&crt).map_err(io(&crt))?;
                let key_pem = std::fs::read_to_string(&key).map_err(io(&key))?;
                Ca::from_pem(&cert_pem, &key_pem).map_err(|e| PkiError::Invalid(format!("{}: {e}", dir.display())))
            }
            (false, false) => {
                let ca = Ca::generate("skiff-ca")?;
                write_secret_file(&key, ca.key.serialize_pem().as_bytes(), 0o600)?;
                write_secret_file(&crt, ca.cert_pem.as_bytes(), 0o644)?;
                Ok(ca)
            }
            _ => Err(PkiError::Invalid(format!(
                "{}: one of ca.crt and ca.key is missing; restore it or remove both to create a new cluster CA",
                dir.display()
            ))),
        }
    }

    pub fn generate(name: &str) -> Result<Ca, PkiError> {
        let key = KeyPair::generate().map_err(|e| PkiError::Cert("generating the CA key".into(), e))?;
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let now = SystemTime::now();
        p.not_before = (now - Duration::from_secs(3600)).into();
        p.not_after = (now + CA_VALIDITY).into();
        p.serial_number = Some(serial());
        let cert = p.self_signed(&key).map_err(|e| PkiError::Cert("signing the CA".into(), e))?;
        let cert_pem = cert.pem();
        Ok(Ca { cert, key, cert_pem })
    }

    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Ca, String> {
        let key = KeyPair::from_pem(key_pem).map_err(|e| format!("CA key: {e}"))?;
        let params = CertificateParams::from_ca_cert_pem(cert_pem).map_err(|e| format!("CA certificate: {e}"))?;
        // Re-signing the parsed parameters gives an issuer with the same name and key: what signing needs.
        let cert = params.self_signed(&key).map_err(|e| format!("CA: {e}"))?;
        Ok(Ca { cert, key, cert_pem: cert_pem.to_string() })
    }

    pub fn issue(&self, spec: &LeafSpec) -> Result<Issued, PkiError> {
        let key = KeyPair::generate().map_err(|e| PkiError::Cert("generating a key".into(), e))?;
        self.sign(spec, &key).map(|(cert_pem, at, na)| Issued { cert_pem, key_pem: key.serialize_pem(), issued_at: at, not_after: na })
    }

    /// Sign a PEM certificate request (its key; its signature is checked) with `spec`'s subject and lifetime: the
    /// requested subject and extensions are the caller's to judge, never copied blindly. Returns the certificate PEM.
    pub fn sign_request(&self, request_pem: &str, spec: &LeafSpec) -> Result<String, PkiError> {
        let mut csr = rcgen::CertificateSigningRequestParams::from_pem(request_pem)
            .map_err(|e| PkiError::Cert("reading the certificate request".into(), e))?;
        csr.params = Self::params(spec)?.0;
        let cert = csr.signed_by(&self.cert, &self.key).map_err(|e| PkiError::Cert(format!("signing {}", spec.common_name), e))?;
        Ok(cert.pem())
    }

    fn params(spec: &LeafSpec) -> Result<(CertificateParams, SystemTime, SystemTime), PkiError> {
        let mut p = CertificateParams::default();
        p.distinguished_name = DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, spec.common_name.as_str());
        if let Some(o) = &spec.organization {
            p.distinguished_name.push(DnType::OrganizationName, o.as_str());
        }
        for d in &spec.dns_names {
            let name = d.clone().try_into().map_err(|e| PkiError::Cert(format!("DNS name {d:?}"), e))?;
            p.subject_alt_names.push(SanType::DnsName(name));
        }
        p.subject_alt_names.extend(spec.ips.iter().map(|ip| SanType::IpAddress(*ip)));
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        if spec.client {
            p.extended_key_usages.push(ExtendedKeyUsagePurpose::ClientAuth);
        }
        if spec.server {
            p.extended_key_usages.push(ExtendedKeyUsagePurpose::ServerAuth);
        }
        p.use_authority_key_identifier_extension = true;
        // Back-dated a little for clocks that disagree, as kubeadm does (five minutes), but never by more than a
        // tenth of the lifetime: holders that renew at a share of notBefore..notAfter (the agent, at 70-90 %) would
        // otherwise find a short-lived certificate due at once.
        let now = SystemTime::now();
        let validity = spec.validity.unwrap_or(LEAF_VALIDITY);
        let na = now + validity;
        p.not_before = (now - Duration::from_secs(300).min(validity / 10)).into();
        p.not_after = na.into();
        p.serial_number = Some(serial());
        Ok((p, now, na))
    }

    fn sign(&self, spec: &LeafSpec, key: &impl rcgen::PublicKeyData) -> Result<(String, SystemTime, SystemTime), PkiError> {
        let (p, nb, na) = Self::params(spec)?;
        let cert = p.signed_by(key, &self.cert, &self.key).map_err(|e| PkiError::Cert(format!("signing {}", spec.common_name), e))?;
        Ok((cert.pem(), nb, na))
    }
}

pub use skiff_tls::subject as subject_of;
pub use skiff_tls::pem_blocks;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_round_trip_and_subjects() {
        let dir = tempfile::tempdir().unwrap();
        let ca = Ca::load_or_create(dir.path()).unwrap();
        let again = Ca::load_or_create(dir.path()).unwrap();
        assert_eq!(ca.cert_pem, again.cert_pem, "the CA is created once");
        let leaf = again
            .issue(&LeafSpec {
                common_name: "system:node:n1".into(),
                organization: Some("system:nodes".into()),
                client: true,
                ..Default::default()
            })
            .unwrap();
        let der = pem_blocks(&leaf.cert_pem, "CERTIFICATE").remove(0);
        assert_eq!(subject_of(&der), Some(("system:node:n1".into(), vec!["system:nodes".into()])));
        // The reloaded CA's signature verifies against the CA certificate written on first start.
        use x509_parser::prelude::*;
        let ca_der = pem_blocks(&ca.cert_pem, "CERTIFICATE").remove(0);
        let (_, ca_x) = X509Certificate::from_der(&ca_der).unwrap();
        let (_, leaf_x) = X509Certificate::from_der(&der).unwrap();
        leaf_x.verify_signature(Some(ca_x.public_key())).unwrap();
        assert!(!leaf.due_for_rotation(SystemTime::now()));
        assert!(leaf.due_for_rotation(SystemTime::now() + LEAF_VALIDITY * 7 / 10));
        assert!(format!("{leaf:?}").find("PRIVATE").is_none());
    }

    #[test]
    fn half_a_ca_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        Ca::load_or_create(dir.path()).unwrap();
        std::fs::remove_file(dir.path().join("ca.key")).unwrap();
        let e = Ca::load_or_create(dir.path()).err().unwrap().to_string();
        assert!(e.contains("ca.key is missing"), "{e}");
        std::fs::write(dir.path().join("ca.key"), "garbage").unwrap();
        assert!(Ca::load_or_create(dir.path()).is_err());
    }
}
