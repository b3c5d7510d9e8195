//! Skiff's TLS listener, shared by the API server and the node agent: rustls (ring) serving HTTP/1.1 with
//! upgrades (exec, attach, port-forward), the peer's verified client certificate handed to the handler, and bounds
//! for slow or greedy clients: the handshake and each request head must arrive in time, request heads are limited
//! in size (431 beyond). Hand-written over hyper-util because axum::serve has no TLS and axum-server's TLS does
//! not expose the peer certificate per request.

pub mod client;
pub mod failover;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;

pub use rustls;

pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The PEM blocks of `pem` with the given label, as DER.
pub fn pem_blocks(pem: &str, label: &str) -> Vec<Vec<u8>> {
    use base64::Engine;
    let (begin, end) = (format!("-----BEGIN {label}-----"), format!("-----END {label}-----"));
    let mut out = Vec::new();
    let mut rest = pem;
    while let Some(i) = rest.find(&begin) {
        let after = &rest[i + begin.len()..];
        let Some(j) = after.find(&end) else { break };
        let b64: String = after[..j].chars().filter(|c| !c.is_whitespace()).collect();
        if let Ok(der) = base64::engine::general_purpose::STANDARD.decode(b64) {
            out.push(der);
        }
        rest = &after[j + end.len()..];
    }
    out
}

/// Write `data` to `path` atomically (a synced temp file renamed into place) with permission bits `mode`: for
/// keys, certificates and kubeconfigs.
pub fn write_file_atomic(path: &std::path::Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    {
        let mut f = std::fs::OpenOptions::new().create(true).truncate(true).write(true).mode(mode).open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// DER as one PEM block with `label`.
pub fn der_to_pem(der: &[u8], label: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// A kubeconfig for `server` (https) that trusts `ca_pem` and authenticates as `user` with a client certificate.
pub fn kubeconfig(server: &str, user: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> String {
    use base64::Engine;
    let b = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
    format!(
        "apiVersion: v1
kind: Config
clusters:
- name: skiff
  cluster:
    server: {server}
    certificate-authority-data: {}
contexts:
- name: skiff
  context:
    cluster: skiff
    user: {user}
    namespace: default
current-context: skiff
users:
- name: {user}
  user:
    client-certificate-data: {}
    client-key-data: {}
",
        b(ca_pem),
        b(cert_pem),
        b(key_pem)
    )
}

/// A certificate chain (PEM) and PKCS#8 key (PEM) in rustls' form.
pub fn certified_key(cert_pem: &str, key_pem: &str) -> Result<CertifiedKey, String> {
    let chain: Vec<CertificateDer<'static>> = pem_blocks(cert_pem, "CERTIFICATE").into_iter().map(CertificateDer::from).collect();
    if chain.is_empty() {
        return Err("no CERTIFICATE block".into());
    }
    let key_der = pem_blocks(key_pem, "PRIVATE KEY").into_iter().next().ok_or("no PRIVATE KEY block")?;
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_der));
    let signer = provider().key_provider.load_private_key(key).map_err(|e| e.to_string())?;
    Ok(CertifiedKey::new(chain, signer))
}

/// A self-signed serving certificate for `names` (DNS names or IP addresses), as the kubelet makes for itself when
/// it has none: (certificate PEM, key PEM).
pub fn self_signed(names: Vec<String>) -> Result<(String, String), String> {
    let c = rcgen::generate_simple_self_signed(names).map_err(|e| e.to_string())?;
    Ok((c.cert.pem(), c.key_pair.serialize_pem()))
}

/// The subject of a certificate (DER) as Kubernetes reads a client certificate: CN the user, every O a group.
pub fn subject(der: &[u8]) -> Option<(String, Vec<String>)> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der).ok()?;
    let subject = cert.subject();
    let user = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let groups = subject.iter_organization().filter_map(|o| o.as_str().ok().map(str::to_string)).collect();
    Some((user, groups))
}

/// One certificate for every connection.
#[derive(Debug)]
pub struct StaticCert(pub Arc<CertifiedKey>);

impl ResolvesServerCert for StaticCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

/// Server TLS config: certificates from `resolver`, client certificates verified against `client_ca_pem` when
/// offered, or required when `require_client_cert`.
pub fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    client_ca_pem: &str,
    require_client_cert: bool,
) -> Result<rustls::ServerConfig, String> {
    server_config_der(resolver, &pem_blocks(client_ca_pem, "CERTIFICATE"), require_client_cert)
}

/// [`server_config`] with the client CA certificates as DER.
pub fn server_config_der(
    resolver: Arc<dyn ResolvesServerCert>,
    client_ca: &[Vec<u8>],
    require_client_cert: bool,
) -> Result<rustls::ServerConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    for der in client_ca.iter().cloned() {
        roots.add(CertificateDer::from(der)).map_err(|e| format!("client CA: {e}"))?;
    }
    if roots.is_empty() {
        return Err("client CA: no certificate".into());
    }
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
    let verifier = if require_client_cert { builder.build() } else { builder.allow_unauthenticated().build() }
        .map_err(|e| format!("client certificate verifier: {e}"))?;
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(config)
}

/// Bounds on clients.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Time for the TLS handshake.
    pub handshake_timeout: Duration,
    /// Time for a request's head (line and headers).
    pub header_timeout: Duration,
    /// Largest request head (bytes): bigger ones get 431.
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { handshake_timeout: Duration::from_secs(10), header_timeout: Duration::from_secs(30), max_header_bytes: 64 * 1024 }
    }
}

/// The verified client certificate of the connection a request came on (DER of the leaf), if it showed one.
#[derive(Clone, Debug)]
pub struct PeerCert(pub Option<Arc<[u8]>>);

/// Accept TLS connections on `listener` and serve each with `handle` (HTTP/1.1 with upgrades), with [`PeerCert`]
/// in every request's extensions. On `shutdown`, stop accepting, ask open connections to finish, and return when
/// they have.
pub async fn serve<H, F>(
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    limits: Limits,
    handle: H,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()>
where
    H: Fn(axum::extract::Request) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = axum::response::Response> + Send + 'static,
{
    use hyper_util::rt::{TokioIo, TokioTimer};
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    // Each connection holds a sender: when the last is dropped after shutdown, every connection has ended.
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<()>(1);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let handle = handle.clone();
        let limits = limits.clone();
        let done = done_tx.clone();
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let cert = PeerCert(tls.get_ref().1.peer_certificates().and_then(|c| c.first()).map(|c| Arc::from(c.as_ref())));
            let svc = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let handle = handle.clone();
                let cert = cert.clone();
                async move {
                    let mut req = req.map(axum::body::Body::new);
                    req.extensions_mut().insert(cert);
                    Ok::<_, Infallible>(handle(req).await)
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout).max_buf_size(limits.max_header_bytes.max(8192));
            let conn = builder.serve_connection(TokioIo::new(tls), svc).with_upgrades();
            tokio::pin!(conn);
            let res = tokio::select! {
                r = conn.as_mut() => r,
                _ = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    conn.as_mut().await
                }
            };
            if let Err(e) = res {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            drop(done);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_tx);
    let _ = done_rx.recv().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pem_round_trip() {
        let der: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        assert_eq!(pem_blocks(&der_to_pem(&der, "CERTIFICATE"), "CERTIFICATE"), vec![der]);
    }

    #[test]
    fn self_signed_loads() {
        let (cert, key) = self_signed(vec!["127.0.0.1".into(), "node-1".into()]).unwrap();
        assert_eq!(pem_blocks(&cert, "CERTIFICATE").len(), 1);
        certified_key(&cert, &key).unwrap();
        assert!(certified_key(&cert, "garbage").is_err());
        assert!(certified_key("", &key).is_err());
        assert!(server_config(Arc::new(StaticCert(Arc::new(certified_key(&cert, &key).unwrap()))), "", true).is_err());
    }
}
