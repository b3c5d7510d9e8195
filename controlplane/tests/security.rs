//! The API server's TLS listener against bad and slow clients, and certificate rotation without downtime: an
//! in-process server on 127.0.0.1 with its own CA, short certificate lifetimes and short client limits.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use skiff_controlplane::apiserver::{self, ApiServer, Config};
use skiff_controlplane::auth::pki::{pem_blocks, Ca, LeafSpec};
use skiff_controlplane::auth::{self, tls};
use skiff_controlplane::store::sqlite::{SqliteConfig, SqliteStore};
use skiff_controlplane::store::{ListOptions, Store};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Cluster {
    url: String,
    addr: std::net::SocketAddr,
    ca: Arc<Ca>,
    serving: Arc<tls::RotatingCert>,
    store: Arc<SqliteStore>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

const TOKEN: &str = "tok-alice-0123456789";

async fn start(validity: Duration) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(SqliteConfig::new(dir.path().join("store.db"))).unwrap());
    let ca = Arc::new(Ca::generate("test-ca").unwrap());
    let tokens = auth::authn::parse_token_file(&format!("{TOKEN},alice,1")).unwrap();
    let authz = auth::Auth::new(store.clone(), tokens, None);
    let server = ApiServer::with_auth(store.clone(), Config::default(), Some(authz.clone()), None);
    server.start().await.unwrap();
    authz.policy.wait_loaded().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let spec = LeafSpec {
        common_name: "kube-apiserver".into(),
        server: true,
        ips: vec![addr.ip()],
        validity: Some(validity),
        ..Default::default()
    };
    let serving = tls::RotatingCert::new(&ca, spec).unwrap();
    let config = Arc::new(tls::server_config(serving.clone(), &ca.cert_pem, false).unwrap());
    let limits = tls::Limits { handshake_timeout: Duration::from_millis(500), header_timeout: Duration::from_millis(500), max_header_bytes: 16 * 1024 };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(apiserver::serve_tls_with(listener, server, config, limits, async move {
        let _ = stopped.await;
    }));
    Cluster { url: format!("https://{addr}"), addr, ca, serving, store, stop: Some(stop), _dir: dir }
}

/// A client trusting `ca`, with a client certificate for (user, group) when given.
fn client(ca_pem: &str, identity: Option<(&Ca, &str, Option<&str>)>) -> reqwest::Client {
    let mut roots = rustls::RootCertStore::empty();
    for der in pem_blocks(ca_pem, "CERTIFICATE") {
        roots.add(rustls::pki_types::CertificateDer::from(der)).unwrap();
    }
    let b = rustls::ClientConfig::builder_with_provider(tls::provider()).with_safe_default_protocol_versions().unwrap().with_root_certificates(roots);
    let config = match identity {
        None => b.with_no_client_auth(),
        Some((issuer, user, group)) => {
            let issued = issuer
                .issue(&LeafSpec { common_name: user.into(), organization: group.map(Into::into), client: true, ..Default::default() })
                .unwrap();
            let chain = pem_blocks(&issued.cert_pem, "CERTIFICATE").into_iter().map(rustls::pki_types::CertificateDer::from).collect();
            let key = rustls::pki_types::PrivateKeyDer::Pkcs8(pem_blocks(&issued.key_pem, "PRIVATE KEY").remove(0).into());
            b.with_client_auth_cert(chain, key).unwrap()
        }
    };
    reqwest::Client::builder().use_preconfigured_tls(config).timeout(Duration::from_secs(10)).build().unwrap()
}

async fn keys(store: &SqliteStore, prefix: &str) -> Vec<String> {
    store.list(prefix, ListOptions::default()).await.unwrap().items.into_iter().map(|kv| kv.key).collect()
}

#[tokio::test]
async fn refusals_and_nothing_written() {
    let c = start(Duration::from_secs(3600)).await;
    let anon = client(&c.ca.cert_pem, None);
    let admin = client(&c.ca.cert_pem, Some((&c.ca, "root", Some("system:masters"))));
    let node_a = client(&c.ca.cert_pem, Some((&c.ca, "system:node:a", Some("system:nodes"))));
    let other_ca = Ca::generate("other-ca").unwrap();
    let forged = client(&c.ca.cert_pem, Some((&other_ca, "root", Some("system:masters"))));

    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
    let cms = format!("{}/api/v1/namespaces/default/configmaps", c.url);
    let before = keys(&c.store, "/registry/core/configmaps/").await;
    // No credentials: 401 with a Status; health stays public.
    let r = anon.post(&cms).json(&cm).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let status: Value = r.json().await.unwrap();
    assert_eq!((status["kind"].as_str(), status["reason"].as_str()), (Some("Status"), Some("Unauthorized")));
    assert_eq!(anon.get(format!("{}/readyz", c.url)).send().await.unwrap().status(), 200);
    // An unknown token, an expired bootstrap token format, a token with a wrong scheme.
    for auth in ["Bearer nope-0123456789abcdef", "Bearer abcdef.0123456789abcdef", "Basic YWxpY2U6eA=="] {
        let code = anon.post(&cms).header("Authorization", auth).json(&cm).send().await.unwrap().status();
        assert_eq!(code, 401, "{auth}");
    }
    // A certificate from another CA: no TLS session at all.
    let e = forged.get(format!("{}/api", c.url)).send().await.expect_err("a forged certificate must not connect");
    assert!(e.is_connect() || e.is_request(), "{e:?}");
    // A known user without a role: 403, nothing written.
    let r = anon.post(&cms).header("Authorization", format!("Bearer {TOKEN}")).json(&cm).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("User \\\"alice\\\" cannot create resource \\\"configmaps\\\""));
    // One node acting on another's objects.
    for (name, code) in [("a", 201), ("b", 403)] {
        let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}});
        let r = node_a.post(format!("{}/api/v1/nodes", c.url)).json(&node).send().await.unwrap();
        assert_eq!(r.status(), code, "node a creating node {name}");
    }
    let r = admin.post(format!("{}/api/v1/nodes", c.url)).json(&json!({"metadata": {"name": "b"}})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let patch = |who: &reqwest::Client, node: &str| {
        who.patch(format!("{}/api/v1/nodes/{node}", c.url))
            .header("Content-Type", "application/merge-patch+json")
            .body(r#"{"metadata":{"labels":{"owned":"yes"}}}"#)
            .send()
    };
    assert_eq!(patch(&node_a, "a").await.unwrap().status(), 200);
    assert_eq!(patch(&node_a, "b").await.unwrap().status(), 403);
    let b: Value = admin.get(format!("{}/api/v1/nodes/b", c.url)).send().await.unwrap().json().await.unwrap();
    assert!(b["metadata"]["labels"]["owned"].is_null(), "node b was changed: {b}");
    assert_eq!(keys(&c.store, "/registry/core/configmaps/").await, before, "a refused request wrote something");
    // Oversized head and body.
    let big = "a".repeat(200_000);
    let r = admin.get(format!("{}/api", c.url)).header("X-Big", big.as_str()).send().await;
    assert!(r.map(|r| r.status() == 431).unwrap_or(true), "an oversized head must be refused");
    let r = admin.post(&cms).header("Content-Type", "application/json").body(vec![b' '; 4 << 20]).send().await.unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(admin.get(format!("{}/api", c.url)).send().await.unwrap().status(), 200, "still serving");
}

#[tokio::test]
async fn slow_clients_are_cut_off() {
    let c = start(Duration::from_secs(3600)).await;
    let admin = client(&c.ca.cert_pem, Some((&c.ca, "root", Some("system:masters"))));
    // A client that connects and never starts the handshake, and many of them: each is closed after the
    // handshake timeout, and the server keeps answering others meanwhile.
    let mut idle = Vec::new();
    for _ in 0..50 {
        idle.push(tokio::net::TcpStream::connect(c.addr).await.unwrap());
    }
    assert_eq!(admin.get(format!("{}/api", c.url)).send().await.unwrap().status(), 200);
    for mut s in idle {
        let mut buf = [0u8; 16];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await.expect("closed in time").unwrap_or(0);
        assert_eq!(n, 0, "the server closes an idle handshake");
    }
    // A client that completes TLS, then sends half a request head and stalls.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(pem_blocks(&c.ca.cert_pem, "CERTIFICATE").remove(0))).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(tls::provider()).with_safe_default_protocol_versions().unwrap().with_root_certificates(roots).with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    let mut s = connector.connect(rustls::pki_types::ServerName::from(c.addr.ip()), tcp).await.unwrap();
    s.write_all(b"GET /api HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "a stalled request head is cut off");
    assert!(out.is_empty() || String::from_utf8_lossy(&out).starts_with("HTTP/1.1 408"), "{}", String::from_utf8_lossy(&out));
    assert_eq!(admin.get(format!("{}/api", c.url)).send().await.unwrap().status(), 200);
}

/// The DER of the certificate the server shows on a new connection.
async fn served_cert(c: &Cluster) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from(pem_blocks(&c.ca.cert_pem, "CERTIFICATE").remove(0))).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(tls::provider()).with_safe_default_protocol_versions().unwrap().with_root_certificates(roots).with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(c.addr).await.unwrap();
    let s = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(rustls::pki_types::ServerName::from(c.addr.ip()), tcp).await.unwrap();
    s.get_ref().1.peer_certificates().unwrap()[0].as_ref().to_vec()
}

#[tokio::test]
async fn serving_certificate_rotates_without_downtime() {
    let c = start(Duration::from_secs(3)).await;
    let admin = client(&c.ca.cert_pem, Some((&c.ca, "root", Some("system:masters"))));
    let first = served_cert(&c).await;
    assert!(!c.serving.rotate_if_due(&c.ca).unwrap(), "not due at once");
    // Requests all through the rotation: none fails. The connection pool keeps an old connection too.
    let (ca, serving, url) = (c.ca.clone(), c.serving.clone(), c.url.clone());
    let rotator = tokio::spawn(async move {
        let mut rotated = 0;
        for _ in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if serving.rotate_if_due(&ca).unwrap() {
                rotated += 1;
            }
        }
        rotated
    });
    let mut ok = 0;
    for _ in 0..40 {
        let r = admin.get(format!("{url}/api")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        ok += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(rotator.await.unwrap() >= 1, "rotated after two thirds of the lifetime");
    assert_eq!(ok, 40);
    let second = served_cert(&c).await;
    assert_ne!(first, second, "new connections get the new certificate");
    // The loop above ran for over 4 s: the first certificate (3 s) has expired; a fresh client still connects.
    let fresh = client(&c.ca.cert_pem, Some((&c.ca, "root", Some("system:masters"))));
    assert_eq!(fresh.get(format!("{}/api", c.url)).send().await.unwrap().status(), 200);
}

/// The default RBAC objects are brought up to date at start (missing rules and subjects added) unless an
/// administrator turned autoupdate off.
#[tokio::test]
async fn bootstrap_policy_is_reconciled_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(SqliteConfig::new(dir.path().join("store.db"))).unwrap());
    let boot = || async {
        let authz = auth::Auth::new(store.clone(), Default::default(), None);
        let server = ApiServer::with_auth(store.clone(), Config::default(), Some(authz), None);
        server.start().await.unwrap();
    };
    boot().await;
    let get = |name: &'static str| {
        let store = store.clone();
        async move {
            let kv = store.get(&format!("/registry/rbac.authorization.k8s.io/clusterroles/{name}")).await.unwrap().unwrap();
            (serde_json::from_slice::<Value>(&kv.value).unwrap(), kv.mod_revision)
        }
    };
    // An older cluster: edit lacks its last rules; view has an administrator's rule and autoupdate off, and lacks one.
    let (mut edit, rev) = get("edit").await;
    let full = edit["rules"].as_array().unwrap().len();
    edit["rules"].as_array_mut().unwrap().truncate(2);
    store.update("/registry/rbac.authorization.k8s.io/clusterroles/edit", serde_json::to_vec(&edit).unwrap(), rev).await.unwrap();
    let (mut view, rev) = get("view").await;
    view["metadata"]["annotations"]["rbac.authorization.kubernetes.io/autoupdate"] = json!("false");
    view["rules"] = json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]);
    store.update("/registry/rbac.authorization.k8s.io/clusterroles/view", serde_json::to_vec(&view).unwrap(), rev).await.unwrap();
    boot().await;
    assert_eq!(get("edit").await.0["rules"].as_array().unwrap().len(), full, "missing rules are added back");
    assert_eq!(get("view").await.0["rules"], json!([{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]), "autoupdate false is left alone");
}
