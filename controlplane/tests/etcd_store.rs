//! The etcd store against real etcd processes on 127.0.0.1 (Debian's `etcd-server`): the store conformance
//! suite on one member, and a three-member cluster that loses a member while the store writes and watches.
//! Skipped, with a message, when the `etcd` binary is not installed.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use skiff_controlplane::auth::pki::{Ca, LeafSpec};
use skiff_controlplane::store::etcd::{EtcdConfig, EtcdStore, EtcdTls};
use skiff_controlplane::store::{conformance, EventKind, Store};

fn etcd_binary() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join("etcd")).find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("free port")
}

/// One etcd member; killed (by its PID) and reaped on drop.
struct Member {
    name: String,
    client_url: String,
    child: Option<Child>,
}

impl Member {
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback etcd cluster in a temp dir (removed on drop, after the members are stopped).
struct Cluster {
    members: Vec<Member>,
    _dir: tempfile::TempDir,
}

impl Cluster {
    async fn start(bin: &Path, size: usize) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports: Vec<(u16, u16)> = (0..size).map(|_| (free_port(), free_port())).collect();
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, p))| format!("m{i}=http://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut members = Vec::new();
        for (i, (c, p)) in ports.iter().enumerate() {
            let name = format!("m{i}");
            let client_url = format!("http://127.0.0.1:{c}");
            let peer_url = format!("http://127.0.0.1:{p}");
            let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).expect("log file");
            let child = Command::new(bin)
                .args(["--name", &name, "--data-dir"])
                .arg(dir.path().join(&name))
                .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
                .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
                .args(["--initial-cluster", &initial, "--initial-cluster-token", "skiff-test"])
                .args(["--log-level", "error", "--unsafe-no-fsync"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("starting etcd");
            members.push(Member { name, client_url, child: Some(child) });
        }
        let cluster = Cluster { members, _dir: dir };
        for m in &cluster.members {
            cluster.wait_healthy(m).await;
        }
        cluster
    }

    async fn wait_healthy(&self, m: &Member) {
        let url = format!("{}/health", m.client_url);
        for _ in 0..200 {
            if let Ok(r) = reqwest::get(&url).await {
                if r.status().is_success() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let log = std::fs::read_to_string(self._dir.path().join(format!("{}.log", m.name))).unwrap_or_default();
        panic!("etcd member {} did not become healthy:\n{log}", m.name);
    }

    fn endpoints(&self) -> Vec<String> {
        self.members.iter().map(|m| m.client_url.clone()).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_store_passes_conformance() {
    let Some(bin) = etcd_binary() else {
        eprintln!("skipping: no etcd binary on PATH (Debian package etcd-server)");
        return;
    };
    let cluster = Cluster::start(&bin, 1).await;
    let endpoints = cluster.endpoints();
    // Each check gets an empty key space: a fresh prefix in the same etcd.
    let n = Arc::new(AtomicUsize::new(0));
    conformance::run_all(|| {
        let (endpoints, n) = (endpoints.clone(), n.clone());
        async move {
            let prefix = format!("/conformance-{}", n.fetch_add(1, Ordering::SeqCst));
            EtcdStore::connect(EtcdConfig { endpoints, prefix, tls: None }).await.expect("connecting to etcd")
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_store_survives_losing_a_member() {
    let Some(bin) = etcd_binary() else {
        eprintln!("skipping: no etcd binary on PATH (Debian package etcd-server)");
        return;
    };
    let mut cluster = Cluster::start(&bin, 3).await;
    let store = EtcdStore::connect(EtcdConfig { endpoints: cluster.endpoints(), prefix: "/ha".into(), tls: None })
        .await
        .expect("connecting to etcd");
    let start = store.current_revision().await.unwrap();
    let mut watch = store.watch("/k/", start).await.unwrap();
    let mut revs = Vec::new();
    for i in 0..20 {
        revs.push(store.create(&format!("/k/{i:03}"), vec![1]).await.unwrap().mod_revision);
    }
    // Lose the first endpoint, the one the client is most likely talking to.
    cluster.members[0].kill();
    for i in 20..40 {
        revs.push(store.create(&format!("/k/{i:03}"), vec![2]).await.expect("create after losing a member").mod_revision);
    }
    let kv = store.get("/k/000").await.unwrap().unwrap();
    store.update("/k/000", vec![3], kv.mod_revision).await.expect("update after losing a member");
    for (i, want) in revs.iter().enumerate() {
        let ev = tokio::time::timeout(Duration::from_secs(30), watch.next())
            .await
            .unwrap_or_else(|_| panic!("watch event {i} did not arrive"))
            .expect("watch ended")
            .expect("watch error");
        assert_eq!((ev.kind, ev.revision), (EventKind::Create, *want), "event {i}");
    }
    let ev = tokio::time::timeout(Duration::from_secs(30), watch.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(ev.kind, EventKind::Update);
    assert_eq!(store.count("/k/").await.unwrap(), 40);
    // A new watch works too, from the history on the surviving members.
    let mut w2 = store.watch("/k/", revs[38]).await.unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(30), w2.next()).await.unwrap().unwrap().unwrap();
    assert_eq!(ev.revision, revs[39]);
}

/// etcd with TLS and client-certificate authentication (as kubeadm runs it): the store connects with the CA and a
/// client certificate, and says clearly what is wrong without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_client_certificates() {
    let Some(bin) = etcd_binary() else {
        eprintln!("skipping: no etcd binary on PATH (Debian package etcd-server)");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = Ca::generate("etcd-ca").expect("CA");
    let server = ca
        .issue(&LeafSpec { common_name: "etcd".into(), server: true, ips: vec!["127.0.0.1".parse().unwrap()], ..Default::default() })
        .expect("server certificate");
    let client = ca.issue(&LeafSpec { common_name: "kube-apiserver-etcd-client".into(), client: true, ..Default::default() }).expect("client certificate");
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let (ca_file, cert_file, key_file) = (write("ca.crt", &ca.cert_pem), write("server.crt", &server.cert_pem), write("server.key", &server.key_pem));
    let (c, p) = (free_port(), free_port());
    let client_url = format!("https://127.0.0.1:{c}");
    let peer_url = format!("http://127.0.0.1:{p}");
    let log = std::fs::File::create(dir.path().join("etcd.log")).expect("log file");
    let child = Command::new(&bin)
        .args(["--name", "tls", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--listen-client-urls", &client_url, "--advertise-client-urls", &client_url])
        .args(["--listen-peer-urls", &peer_url, "--initial-advertise-peer-urls", &peer_url])
        .args(["--initial-cluster", &format!("tls={peer_url}"), "--log-level", "error", "--unsafe-no-fsync"])
        .arg("--cert-file")
        .arg(&cert_file)
        .arg("--key-file")
        .arg(&key_file)
        .arg("--trusted-ca-file")
        .arg(&ca_file)
        .arg("--client-cert-auth")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("starting etcd");
    let _member = Member { name: "tls".into(), client_url: client_url.clone(), child: Some(child) };
    let tls = EtcdTls { ca_pem: ca.cert_pem.clone().into_bytes(), client: Some((client.cert_pem.clone().into_bytes(), client.key_pem.clone().into_bytes())) };
    let config = |tls: Option<EtcdTls>, url: &str| EtcdConfig { endpoints: vec![url.to_string()], prefix: "/tls".into(), tls };
    let mut store = None;
    for _ in 0..100 {
        match EtcdStore::connect(config(Some(tls.clone()), &client_url)).await {
            Ok(s) => {
                store = Some(s);
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
    let Some(store) = store else {
        panic!("no TLS connection to etcd:\n{}", std::fs::read_to_string(dir.path().join("etcd.log")).unwrap_or_default());
    };
    store.create("/registry/x", b"over tls".to_vec()).await.expect("a write over TLS");
    assert_eq!(&*store.get("/registry/x").await.unwrap().unwrap().value, b"over tls");
    // Without a client certificate, with a CA that did not sign etcd's certificate, over plain HTTP, or with TLS
    // settings for an http:// endpoint: refused, saying so.
    let no_client = EtcdTls { client: None, ..tls.clone() };
    assert!(EtcdStore::connect(config(Some(no_client), &client_url)).await.is_err());
    let other = Ca::generate("other").unwrap();
    let wrong_ca = EtcdTls { ca_pem: other.cert_pem.clone().into_bytes(), ..tls.clone() };
    assert!(EtcdStore::connect(config(Some(wrong_ca), &client_url)).await.is_err());
    let e = EtcdStore::connect(config(None, &client_url)).await.err().expect("https without a CA");
    assert!(e.to_string().contains("--etcd-cafile"), "{e}");
    let e = EtcdStore::connect(config(Some(tls.clone()), &format!("http://127.0.0.1:{c}"))).await.err().expect("http with TLS");
    assert!(e.to_string().contains("must be https://"), "{e}");
}
