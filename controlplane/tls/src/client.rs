//! An API client whose client certificate follows its kubeconfig file: every new TLS connection presents the
//! certificate the file holds at that moment, so a node agent that renews its certificate (writing the file
//! atomically) goes on without a restart, as the kubelet does with `--rotate-certificates`. Open connections keep
//! the certificate they were made with.
//!
//! kube's own `Client::try_from(Config)` reads the certificate once, so this builds the same service stack
//! (hyper-rustls connector with timeouts, base URI, auth layer) around a rustls configuration with a
//! [`FileClientCert`] resolver. Written by hand because kube offers no hook for a changing client certificate.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use kube::client::ConfigExt;
use rustls::client::ResolvesClientCert;
use rustls::sign::CertifiedKey;

/// The client certificate and key of the first user of a kubeconfig file, read again whenever the file changes.
#[derive(Debug)]
pub struct FileClientCert {
    path: PathBuf,
    current: Mutex<Option<(SystemTime, Arc<CertifiedKey>)>>,
}

/// (certificate PEM, key PEM) of the first user of a kubeconfig.
pub fn kubeconfig_credentials(path: &Path) -> Result<(String, String), String> {
    use base64::Engine;
    let kc = kube::config::Kubeconfig::read_from(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    let user = kc.auth_infos.first().and_then(|a| a.auth_info.as_ref()).ok_or_else(|| format!("{}: no user", path.display()))?;
    let decode = |what: &str, d: &Option<String>| -> Result<String, String> {
        let d = d.as_ref().ok_or_else(|| format!("{}: the user has no {what}", path.display()))?;
        let b = base64::engine::general_purpose::STANDARD.decode(d).map_err(|e| format!("{}: {what}: {e}", path.display()))?;
        String::from_utf8(b).map_err(|_| format!("{}: {what} is not PEM", path.display()))
    };
    use secrecy::ExposeSecret;
    let key = user.client_key_data.as_ref().map(|k| k.expose_secret().to_string());
    Ok((decode("client-certificate-data", &user.client_certificate_data)?, decode("client-key-data", &key)?))
}

impl FileClientCert {
    pub fn new(path: &Path) -> Result<Arc<Self>, String> {
        let me = FileClientCert { path: path.to_path_buf(), current: Mutex::new(None) };
        me.load().ok_or_else(|| format!("{}: no usable client certificate", path.display()))?;
        Ok(Arc::new(me))
    }

    fn mtime(&self) -> Option<SystemTime> {
        std::fs::metadata(&self.path).and_then(|m| m.modified()).ok()
    }

    /// The certificate in the file now (read again when its mtime changed; the last good one when it is
    /// unreadable mid-write).
    fn load(&self) -> Option<Arc<CertifiedKey>> {
        let mtime = self.mtime();
        let mut cur = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let (Some((seen, key)), Some(m)) = (cur.as_ref(), mtime) {
            if *seen == m {
                return Some(key.clone());
            }
        }
        match kubeconfig_credentials(&self.path).and_then(|(c, k)| crate::certified_key(&c, &k)) {
            Ok(key) => {
                let key = Arc::new(key);
                if cur.is_some() {
                    tracing::info!(kubeconfig = %self.path.display(), "client certificate changed: new connections use the new one");
                }
                *cur = Some((mtime.unwrap_or(SystemTime::UNIX_EPOCH), key.clone()));
                Some(key)
            }
            Err(e) => {
                tracing::warn!(error = %e, "reading the client certificate; keeping the previous one");
                cur.as_ref().map(|(_, k)| k.clone())
            }
        }
    }
}

impl ResolvesClientCert for FileClientCert {
    fn resolve(&self, _hints: &[&[u8]], _sigschemes: &[rustls::SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        self.load()
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client for `config` (already pointed at its server, e.g. through the failover forwarder) that takes its
/// client certificate from `kubeconfig` at each new connection. `config` must trust the server through its
/// `root_cert`.
pub fn rotating_client(config: &kube::Config, kubeconfig: &Path) -> Result<kube::Client, String> {
    use hyper_util::client::legacy::connect::HttpConnector;
    use hyper_util::rt::TokioExecutor;
    use tower::ServiceBuilder;
    let resolver = FileClientCert::new(kubeconfig)?;
    let mut roots = rustls::RootCertStore::empty();
    for der in config.root_cert.iter().flatten() {
        roots.add(rustls::pki_types::CertificateDer::from(der.clone())).map_err(|e| format!("the cluster CA: {e}"))?;
    }
    if roots.is_empty() {
        return Err(format!("{}: no certificate authority to verify the API server with", kubeconfig.display()));
    }
    let tls = rustls::ClientConfig::builder_with_provider(crate::provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_client_cert_resolver(resolver);
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_or_http().enable_http1().wrap_connector(http);
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    let client: hyper_util::client::legacy::Client<_, kube::client::Body> =
        hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build(connector);
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer().map_err(|e| e.to_string())?)
        .map_err(|e: hyper_util::client::legacy::Error| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })
        .service(client);
    Ok(kube::Client::new(service, config.default_namespace.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kubeconfig(cn: &str) -> String {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(rcgen::DnType::CommonName, cn);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        crate::kubeconfig("https://127.0.0.1:1", cn, &cert.pem(), &cert.pem(), &key.serialize_pem())
    }

    #[test]
    fn follows_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kubeconfig");
        std::fs::write(&path, kubeconfig("first")).unwrap();
        let r = FileClientCert::new(&path).unwrap();
        let subject = |k: Arc<CertifiedKey>| crate::subject(k.cert[0].as_ref()).unwrap().0;
        assert_eq!(subject(r.resolve(&[], &[]).unwrap()), "first");
        // A new file (atomic rename gives a new mtime; set one to be sure on coarse clocks).
        std::fs::write(&path, kubeconfig("second")).unwrap();
        let later = SystemTime::now() + std::time::Duration::from_secs(5);
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(later).unwrap();
        assert_eq!(subject(r.resolve(&[], &[]).unwrap()), "second");
        // A broken file keeps the last good certificate.
        std::fs::write(&path, "garbage").unwrap();
        std::fs::File::options().write(true).open(&path).unwrap().set_modified(later + std::time::Duration::from_secs(5)).unwrap();
        assert_eq!(subject(r.resolve(&[], &[]).unwrap()), "second");
        std::fs::write(&path, "garbage").unwrap();
        assert!(FileClientCert::new(&path).is_err());
    }
}
