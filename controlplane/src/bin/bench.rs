//! `skiff-bench`: store and API benchmarks, each side by side with its peer in the same run.
//!
//! - `store`: durable writes of 2 KB values through `SqliteStore` (group commit, synchronous=FULL) vs raw SQLite
//!   (rusqlite, WAL, synchronous=FULL, one transaction per write) with the same writer counts.
//! - `api`: pod creates and gets over HTTP against a `skiff-controlplane` process, with 1 and 32 clients; when
//!   `--etcd` names an etcd, also against a second server storing in that etcd (`--etcd-servers`), and raw etcd
//!   puts (JSON gateway and gRPC) with the same clients.
//! - `watch`: N watchers on pods; p99 delay from a create's acknowledgement to each watcher's event.
//! - `memory`: RSS of the server process holding N pods.
//!
//! Output is a Markdown table per benchmark. Only 127.0.0.1 is contacted.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use skiff_controlplane::store::sqlite::{SqliteConfig, SqliteStore};
use skiff_controlplane::store::Store;

#[derive(Parser)]
#[command(name = "skiff-bench", about = "Skiff store and API benchmarks")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Durable 2 KB writes: SqliteStore vs raw SQLite.
    Store {
        #[arg(long, default_value_t = 3)]
        seconds: u64,
        #[arg(long, value_delimiter = ',', default_value = "1,32")]
        writers: Vec<usize>,
        #[arg(long, default_value = "/var/tmp")]
        dir: PathBuf,
    },
    /// Pod creates/gets over HTTP (and etcd puts with --etcd).
    Api {
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, value_delimiter = ',', default_value = "1,32")]
        clients: Vec<usize>,
        /// An etcd client URL on 127.0.0.1 to measure puts against (JSON gateway, /v3/kv/put).
        #[arg(long)]
        etcd: Option<String>,
        #[arg(long, default_value = "/var/tmp")]
        dir: PathBuf,
    },
    /// Write-to-event delay with many watchers.
    Watch {
        #[arg(long, default_value_t = 100)]
        watchers: usize,
        #[arg(long, default_value_t = 500)]
        events: usize,
        #[arg(long, default_value = "/var/tmp")]
        dir: PathBuf,
    },
    /// Scheduling decisions (filters + scores, no API): pods/s and per-pod latency.
    Scheduler {
        #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
        nodes: Vec<usize>,
        #[arg(long, default_value_t = 10000)]
        pods: usize,
        /// Pending pods: "full" exercises every plugin (node affinity, tolerations, host ports, pod affinity and
        /// anti-affinity, required and preferred, topology spread); "basic" is requests and nodeSelectors only.
        #[arg(long, default_value = "full", value_parser = ["full", "basic"])]
        mix: String,
    },
    /// Server RSS holding N pods.
    Memory {
        #[arg(long, default_value_t = 10000)]
        pods: usize,
        #[arg(long, default_value = "/var/tmp")]
        dir: PathBuf,
    },
}

fn value_2k(i: usize) -> Vec<u8> {
    let mut v = format!("{{\"i\":{i},\"pad\":\"").into_bytes();
    v.resize(2046, b'x');
    v.extend_from_slice(b"\"}");
    v
}

fn percentile(lat: &mut [Duration], p: f64) -> Duration {
    if lat.is_empty() {
        return Duration::ZERO;
    }
    lat.sort();
    let idx = ((lat.len() as f64 - 1.0) * p).round() as usize;
    lat[idx.min(lat.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

struct Row {
    what: String,
    workers: usize,
    ops: usize,
    secs: f64,
    lat: Vec<Duration>,
}

fn print_rows(title: &str, rows: &mut [Row]) {
    println!("\n### {title}\n");
    println!("| what | clients | ops | ops/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|---|");
    for r in rows.iter_mut() {
        let p50 = percentile(&mut r.lat, 0.50);
        let p99 = percentile(&mut r.lat, 0.99);
        println!("| {} | {} | {} | {:.0} | {} | {} |", r.what, r.workers, r.ops, r.ops as f64 / r.secs, ms(p50), ms(p99));
    }
}

async fn measure_store(cfg: SqliteConfig, n: usize, seconds: u64) -> anyhow::Result<(usize, f64, Vec<Duration>)> {
    let store = Arc::new(SqliteStore::open(cfg)?);
    let count = Arc::new(AtomicUsize::new(0));
    let lats = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..n {
        let (store, count, lats) = (store.clone(), count.clone(), lats.clone());
        tasks.push(tokio::spawn(async move {
            let mut local = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                store.create(&format!("/registry/core/pods/bench/w{w}-{i}"), value_2k(i)).await.expect("create");
                local.push(t.elapsed());
                i += 1;
            }
            count.fetch_add(i, Ordering::Relaxed);
            lats.lock().unwrap().extend(local);
        }));
    }
    for t in tasks {
        t.await?;
    }
    let secs = start.elapsed().as_secs_f64();
    store.close();
    let lat = std::mem::take(&mut *lats.lock().unwrap());
    Ok((count.load(Ordering::Relaxed), secs, lat))
}

/// Raw SQLite: one connection shared by the writers, one transaction per write.
fn measure_raw(path: &Path, sync: &str, n: usize, seconds: u64) -> anyhow::Result<(usize, f64, Vec<Duration>)> {
    let conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(&format!("PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; CREATE TABLE kv(k TEXT PRIMARY KEY, v BLOB);"))?;
    let conn = Arc::new(Mutex::new(conn));
    let lats = Arc::new(Mutex::new(Vec::new()));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut threads = Vec::new();
    for w in 0..n {
        let (conn, lats) = (conn.clone(), lats.clone());
        threads.push(std::thread::spawn(move || {
            let mut local = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                {
                    let c = conn.lock().unwrap();
                    c.execute("INSERT INTO kv(k, v) VALUES (?1, ?2)", rusqlite::params![format!("w{w}-{i}"), value_2k(i)])
                        .expect("insert");
                }
                local.push(t.elapsed());
                i += 1;
            }
            lats.lock().unwrap().extend(local);
        }));
    }
    for t in threads {
        t.join().map_err(|_| anyhow::anyhow!("writer thread panicked"))?;
    }
    let secs = start.elapsed().as_secs_f64();
    let lat = std::mem::take(&mut *lats.lock().unwrap());
    Ok((lat.len(), secs, lat))
}

async fn bench_store(seconds: u64, writers: &[usize], dir: &Path) -> anyhow::Result<()> {
    use skiff_controlplane::store::sqlite::Durability;
    let mut rows = Vec::new();
    for &n in writers {
        let variants = [
            ("SqliteStore: FULL + group commit (default)", Durability::Full, true),
            ("SqliteStore: FULL, no group commit", Durability::Full, false),
            ("SqliteStore: NORMAL + group commit (not power-safe)", Durability::Normal, true),
        ];
        for (what, durability, group_commit) in variants {
            let tmp = tempfile::Builder::new().prefix("skiff-bench-store").tempdir_in(dir)?;
            let cfg = SqliteConfig { durability, group_commit, ..SqliteConfig::new(tmp.path().join("s.db")) };
            let (ops, secs, lat) = measure_store(cfg, n, seconds).await?;
            rows.push(Row { what: what.into(), workers: n, ops, secs, lat });
        }
        for sync in ["FULL", "NORMAL"] {
            let tmp = tempfile::Builder::new().prefix("skiff-bench-raw").tempdir_in(dir)?;
            let path = tmp.path().join("raw.db");
            let (ops, secs, lat) = tokio::task::spawn_blocking(move || measure_raw(&path, sync, n, seconds)).await??;
            rows.push(Row { what: format!("raw SQLite: WAL, {sync}, txn per write"), workers: n, ops, secs, lat });
        }
    }
    print_rows("Store: 2 KB writes, one create per call", &mut rows);
    Ok(())
}

/// A `skiff-controlplane` process on a free loopback port, killed on drop.
struct Server {
    child: Child,
    url: String,
    /// A client with this server's CA and an admin certificate from it (the API is TLS only).
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start(dir: &Path) -> anyhow::Result<Self> {
        Self::start_with(dir, &[]).await
    }

    /// Start with extra flags (such as `--etcd-servers`).
    async fn start_with(dir: &Path, extra: &[String]) -> anyhow::Result<Self> {
        let bin = std::env::current_exe()?.parent().context("bench binary has no folder")?.join("skiff-controlplane");
        let tmp = tempfile::Builder::new().prefix("skiff-bench-api").tempdir_in(dir)?;
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0")?;
            l.local_addr()?.port()
        };
        let child = Command::new(&bin)
            .args(["--data-dir", &tmp.path().to_string_lossy(), "--listen", &format!("127.0.0.1:{port}")])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let url = format!("https://127.0.0.1:{port}");
        let pki = tmp.path().join("pki");
        for _ in 0..200 {
            if pki.join("ca.key").exists() && pki.join("ca.crt").exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        let ca = skiff_controlplane::auth::pki::Ca::load_or_create(&pki)?;
        let admin = ca.issue(&skiff_controlplane::auth::pki::LeafSpec {
            common_name: "bench".into(),
            organization: Some("system:masters".into()),
            client: true,
            ..Default::default()
        })?;
        let http = reqwest::Client::builder()
            .use_rustls_tls()
            .add_root_certificate(reqwest::Certificate::from_pem(ca.cert_pem.as_bytes())?)
            .identity(reqwest::Identity::from_pem(format!("{}{}", admin.cert_pem, admin.key_pem).as_bytes())?)
            .pool_max_idle_per_host(256)
            .build()?;
        let s = Server { child, url, http, _dir: tmp };
        for _ in 0..100 {
            if s.http.get(format!("{}/readyz", s.url)).send().await.is_ok_and(|r| r.status().is_success()) {
                return Ok(s);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("server did not become ready")
    }

    fn rss_kib(&self) -> anyhow::Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS")?;
        Ok(line.split_whitespace().nth(1).context("bad VmRSS")?.parse()?)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pod_body(name: &str) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "bench", "tier": "backend"}, "annotations": {"note": "x".repeat(600)}},
        "spec": {"containers": [{"name": "app", "image": "registry.local:5000/team/app:1.2.3",
            "command": ["/bin/app", "--serve"], "ports": [{"containerPort": 8080}],
            "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
            "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}]}
    })
}

async fn run_clients<F, Fut>(n: usize, seconds: u64, op: F) -> (usize, f64, Vec<Duration>)
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static + Clone,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..n {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut i = 0;
            while Instant::now() < deadline {
                let t = Instant::now();
                if let Err(e) = op(c, i).await {
                    eprintln!("request failed: {e:#}");
                    break;
                }
                lat.push(t.elapsed());
                i += 1;
            }
            lat
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    (all.len(), start.elapsed().as_secs_f64(), all)
}

async fn bench_api(seconds: u64, clients: &[usize], etcd: Option<&str>, dir: &Path) -> anyhow::Result<()> {
    // The same API server binary over each store: SQLite (the default) and, with --etcd, that etcd.
    let mut servers = vec![("skiff over SQLite", Server::start(dir).await?)];
    if let Some(etcd) = etcd {
        let args = ["--etcd-servers".to_string(), etcd.to_string(), "--etcd-prefix".into(), "/bench-api".into()];
        servers.push(("skiff over etcd", Server::start_with(dir, &args).await?));
    }
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let mut rows = Vec::new();
    for &n in clients {
        for (label, server) in &servers {
            let (h, base) = (server.http.clone(), server.url.clone());
            let (ops, secs, lat) = run_clients(n, seconds, move |c, i| {
                let (h, base) = (h.clone(), base.clone());
                async move {
                    let r = h
                        .post(format!("{base}/api/v1/namespaces/default/pods"))
                        .json(&pod_body(&format!("p{n}-{c}-{i}")))
                        .send()
                        .await?;
                    if r.status().as_u16() != 201 {
                        bail!("create: {}", r.status());
                    }
                    Ok(())
                }
            })
            .await;
            rows.push(Row { what: format!("{label}: create pod (durable)"), workers: n, ops, secs, lat });
            let (h, base) = (server.http.clone(), server.url.clone());
            let (ops, secs, lat) = run_clients(n, seconds, move |c, i| {
                let (h, base) = (h.clone(), base.clone());
                async move {
                    // Objects of this client's create phase; a slow store may have let a client create only one.
                    let _ = i;
                    let r = h.get(format!("{base}/api/v1/namespaces/default/pods/p{n}-{c}-0")).send().await?;
                    if !r.status().is_success() {
                        bail!("get: {}", r.status());
                    }
                    r.bytes().await?;
                    Ok(())
                }
            })
            .await;
            rows.push(Row { what: format!("{label}: get pod"), workers: n, ops, secs, lat });
        }
        if let Some(etcd) = etcd {
            let (h, base) = (http.clone(), etcd.to_string());
            let (ops, secs, lat) = run_clients(n, seconds, move |c, i| {
                let (h, base) = (h.clone(), base.clone());
                async move {
                    use base64::Engine;
                    let b64 = base64::engine::general_purpose::STANDARD;
                    let key = b64.encode(format!("/registry/pods/default/p{n}-{c}-{i}"));
                    let value = b64.encode(serde_json::to_vec(&pod_body("x"))?);
                    let r = h.post(format!("{base}/v3/kv/put")).json(&serde_json::json!({"key": key, "value": value})).send().await?;
                    if !r.status().is_success() {
                        bail!("etcd put: {}", r.status());
                    }
                    r.bytes().await?;
                    Ok(())
                }
            })
            .await;
            rows.push(Row { what: "etcd 3.4: put (JSON gateway)".into(), workers: n, ops, secs, lat });
            // Raw gRPC puts, one etcd client (one HTTP/2 connection) shared by all workers, as the store does.
            let client = etcd_client::Client::connect([etcd], None).await?;
            let value = serde_json::to_vec(&pod_body("x"))?;
            let (ops, secs, lat) = run_clients(n, seconds, move |c, i| {
                let (mut kv, value) = (client.kv_client(), value.clone());
                async move {
                    kv.put(format!("/registry/pods/grpc/p{n}-{c}-{i}"), value, None).await?;
                    Ok(())
                }
            })
            .await;
            rows.push(Row { what: "etcd 3.4: put (gRPC, etcd-client)".into(), workers: n, ops, secs, lat });
        }
    }
    print_rows("API over HTTP (pod ≈ 1.3 KB JSON)", &mut rows);
    Ok(())
}

async fn bench_watch(watchers: usize, events: usize, dir: &Path) -> anyhow::Result<()> {
    let server = Server::start(dir).await?;
    let http = server.http.clone();
    // name → time its create request was sent: the delay includes the durable commit.
    let acked: Arc<Mutex<std::collections::HashMap<String, Instant>>> = Default::default();
    let delays: Arc<Mutex<Vec<Duration>>> = Default::default();
    let rv = {
        let r: serde_json::Value = http.get(format!("{}/api/v1/namespaces/default/pods", server.url)).send().await?.json().await?;
        r["metadata"]["resourceVersion"].as_str().unwrap_or("0").to_string()
    };
    let mut tasks = Vec::new();
    for _ in 0..watchers {
        let (h, url, acked, delays) = (http.clone(), server.url.clone(), acked.clone(), delays.clone());
        let rv = rv.clone();
        tasks.push(tokio::spawn(async move {
            let resp = h
                .get(format!("{url}/api/v1/namespaces/default/pods?watch=true&resourceVersion={rv}&timeoutSeconds=120"))
                .send()
                .await?;
            let mut stream = resp.bytes_stream();
            let mut buf = Vec::new();
            let mut seen = 0;
            while seen < events {
                let Some(chunk) = stream.next().await else { break };
                let now = Instant::now();
                buf.extend_from_slice(&chunk?);
                while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line: Vec<u8> = buf.drain(..=pos).collect();
                    // Find the pod's name ("w<N>") without parsing the whole event: the client shares the two
                    // cores with the server, and 100 full parses per event would measure the client.
                    let text = std::str::from_utf8(&line)?;
                    let name = text
                        .split("\"name\":\"")
                        .skip(1)
                        .find(|rest| rest.starts_with('w'))
                        .and_then(|rest| rest.split('"').next())
                        .unwrap_or_default()
                        .to_string();
                    let at = acked.lock().unwrap().get(&name).copied();
                    delays.lock().unwrap().push(at.map(|a| now.saturating_duration_since(a)).unwrap_or_default());
                    seen += 1;
                }
            }
            anyhow::Ok(seen)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let start = Instant::now();
    for i in 0..events {
        let name = format!("w{i}");
        acked.lock().unwrap().insert(name.clone(), Instant::now());
        let r = http.post(format!("{}/api/v1/namespaces/default/pods", server.url)).json(&pod_body(&name)).send().await?;
        if r.status().as_u16() != 201 {
            bail!("create: {}", r.status());
        }
        // A steady rate, not a burst: ~200 writes/s.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut d = std::mem::take(&mut *delays.lock().unwrap());
    println!("\n### Watch: delay from sending a create to each watcher receiving its event, {watchers} watchers, {events} creates at ~200/s\n");
    println!("| watchers | events delivered | p50 ms | p99 ms | max ms | wall s |");
    println!("|---|---|---|---|---|---|");
    let (p50, p99) = (percentile(&mut d, 0.5), percentile(&mut d, 0.99));
    println!("| {watchers} | {total} | {} | {} | {} | {secs:.1} |", ms(p50), ms(p99), ms(*d.last().unwrap_or(&Duration::ZERO)));
    Ok(())
}

async fn bench_memory(pods: usize, dir: &Path) -> anyhow::Result<()> {
    let server = Server::start(dir).await?;
    let idle = server.rss_kib()?;
    let http = server.http.clone();
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (h, url, next) = (http.clone(), server.url.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= pods {
                    return anyhow::Ok(());
                }
                let r = h.post(format!("{url}/api/v1/namespaces/default/pods")).json(&pod_body(&format!("m{i}"))).send().await?;
                if r.status().as_u16() != 201 {
                    bail!("create: {}", r.status());
                }
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let after_create = server.rss_kib()?;
    // A full list (what every informer does at start) and a table list.
    let t = Instant::now();
    let body = http.get(format!("{}/api/v1/pods", server.url)).send().await?.bytes().await?;
    let list_ms = t.elapsed().as_secs_f64() * 1000.0;
    let after_list = server.rss_kib()?;
    println!("\n### Memory: server RSS holding {pods} pods\n");
    println!("| state | RSS MiB |");
    println!("|---|---|");
    println!("| idle, empty store | {:.1} |", idle as f64 / 1024.0);
    println!("| after {pods} creates | {:.1} |", after_create as f64 / 1024.0);
    println!("| after a full list ({:.1} MiB JSON, {list_ms:.0} ms) | {:.1} |", body.len() as f64 / 1048576.0, after_list as f64 / 1024.0);
    Ok(())
}

/// The `i`th pending pod of the full mix: every plugin has pods that exercise it (in twentieths of the pods).
fn full_mix_pod(i: usize, v: &mut serde_json::Value) {
    use serde_json::json;
    let term = |key: &str, app: &str| json!({"topologyKey": key, "labelSelector": {"matchLabels": {"app": app}}});
    let spec = &mut v["spec"];
    match i % 20 {
        // TaintToleration: may use the tainted nodes.
        1 => spec["tolerations"] = json!([{"key": "dedicated", "operator": "Equal", "value": "infra", "effect": "NoSchedule"}]),
        // PodTopologySpread, hard, over zones.
        2 => {
            v["metadata"]["labels"] = json!({"app": "spread"});
            v["spec"]["topologySpreadConstraints"] = json!([{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                "labelSelector": {"matchLabels": {"app": "spread"}}}]);
        }
        // InterPodAffinity: required anti-affinity, one per node (and every other pod checked against it).
        3 => {
            v["metadata"]["labels"] = json!({"app": "solo"});
            v["spec"]["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("kubernetes.io/hostname", "solo")]}});
        }
        // Preferred pod affinity to the cache pods' zone.
        5 => spec["affinity"] = json!({"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 50, "podAffinityTerm": term("zone", "cache")}]}}),
        6 => v["metadata"]["labels"] = json!({"app": "cache"}),
        // NodePorts.
        7 => spec["containers"][0]["ports"] = json!([{"containerPort": 80, "hostPort": 8080}]),
        // Preferred anti-affinity between web pods.
        9 => {
            v["metadata"]["labels"] = json!({"app": "web"});
            v["spec"]["affinity"] = json!({"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term("kubernetes.io/hostname", "web")}]}});
        }
        // NodeAffinity, required.
        10 => spec["affinity"] = json!({"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["z0", "z2"]}]}]}}}),
        // Required pod affinity: in a zone with a cache pod.
        11 => spec["affinity"] = json!({"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("zone", "cache")]}}),
        _ => {}
    }
}

fn bench_scheduler(node_counts: &[usize], pods: usize, full: bool) {
    use k8s_openapi::api::core::v1::Node;
    use skiff_controlplane::controllers::cached_pod::CachedPod;
    use skiff_controlplane::scheduler::plugins::NodeView;
    use skiff_controlplane::scheduler::{Decision, Placer};
    let mix = if full {
        "full plugin set: per twentieth of the pods, tolerations, hard topology spread over zones, required anti-affinity per host, preferred and required pod affinity, host ports, preferred anti-affinity, required node affinity"
    } else {
        "requests and nodeSelectors only"
    };
    println!("\n### Scheduler: placement decisions for {pods} pending pods (filters + scores, no API calls; 10% of nodes tainted, 25% of pods with a nodeSelector; {mix})\n");
    println!("| nodes | pods placed | pods/s | p50 µs | p99 µs |");
    println!("|---|---|---|---|---|");
    for &n in node_counts {
        let nodes: Vec<Node> = (0..n)
            .map(|i| {
                let mut v = serde_json::json!({"metadata": {"name": format!("node-{i}"), "labels": {"zone": format!("z{}", i % 3), "kubernetes.io/hostname": format!("node-{i}")}},
                    "spec": {},
                    "status": {"allocatable": {"cpu": "8", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"},
                               "conditions": [{"type": "Ready", "status": "True"}]}});
                if i % 10 == 0 {
                    v["spec"] = serde_json::json!({"taints": [{"key": "dedicated", "value": "infra", "effect": "NoSchedule"}]});
                }
                serde_json::from_value(v).expect("node")
            })
            .collect();
        let pod_objs: Vec<CachedPod> = (0..pods)
            .map(|i| {
                let mut v = serde_json::json!({"metadata": {"name": format!("p{i}"), "uid": format!("uid-{i}")},
                    "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}]}});
                if i % 4 == 0 {
                    v["spec"]["nodeSelector"] = serde_json::json!({"zone": "z1"});
                }
                if full {
                    full_mix_pod(i, &mut v);
                }
                serde_json::from_value(v).expect("pod")
            })
            .collect();
        let views: Vec<NodeView> = nodes.iter().map(NodeView::new).collect();
        let mut usage = std::collections::HashMap::new();
        let mut lat = Vec::with_capacity(pods);
        let mut placed = 0;
        // One placer for all the pods, as one scheduling pass has: node index built once, each search starting
        // where the last one stopped.
        let (namespaces, mut nominations) = (Default::default(), Default::default());
        let start = Instant::now();
        let mut placer = Placer::new(&views);
        for p in &pod_objs {
            let t = Instant::now();
            let d = placer.place(p, &mut usage, &namespaces, &mut nominations);
            lat.push(t.elapsed());
            if matches!(d, Decision::Bind(_)) {
                placed += 1;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let (p50, p99) = (percentile(&mut lat, 0.5), percentile(&mut lat, 0.99));
        println!("| {n} | {placed} | {:.0} | {:.0} | {:.0} |", pods as f64 / secs, p50.as_secs_f64() * 1e6, p99.as_secs_f64() * 1e6);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match args.cmd {
        Cmd::Store { seconds, writers, dir } => bench_store(seconds, &writers, &dir).await,
        Cmd::Api { seconds, clients, etcd, dir } => bench_api(seconds, &clients, etcd.as_deref(), &dir).await,
        Cmd::Watch { watchers, events, dir } => bench_watch(watchers, events, &dir).await,
        Cmd::Memory { pods, dir } => bench_memory(pods, &dir).await,
        Cmd::Scheduler { nodes, pods, mix } => {
            bench_scheduler(&nodes, pods, mix == "full");
            Ok(())
        }
    }
}
