//! `skiff-cluster-bench`: the control plane end to end, without agents. Starts `skiff-controlplane` (scheduler and
//! controllers included) on a loopback port, registers N Ready nodes whose Leases it keeps renewing, then measures
//! 1. scheduling with binding: P bare pods created at once → every pod bound (`spec.nodeName` seen in a watch);
//! 2. a Deployment of R replicas → R pods created by the ReplicaSet controller and all bound;
//! 3. the control plane's RSS idle, and after holding those pods.
//!
//! With `--split`, the controllers run in a process of their own (`skiff-controlplane --api-server URL
//! --disable-scheduler`, as a separate kube-controller-manager) beside the API server and scheduler
//! (`--disable-controllers`), and the RSS of each is reported.
//!
//! Usage: skiff-cluster-bench [--nodes 100] [--pods 1000] [--replicas 1000] [--split]

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100)]
    nodes: usize,
    #[arg(long, default_value_t = 1000)]
    pods: usize,
    #[arg(long, default_value_t = 1000)]
    replicas: usize,
    /// Run the controllers in a separate process.
    #[arg(long)]
    split: bool,
}

struct Server {
    child: Child,
    /// The controller manager's own process (`--split`).
    controllers: Option<Child>,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        for child in std::iter::once(&mut self.child).chain(self.controllers.as_mut()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

async fn start(split: bool) -> anyhow::Result<(Server, Client)> {
    let bin = std::env::current_exe()?.parent().context("no folder")?.join("skiff-controlplane");
    let dir = tempfile::Builder::new().prefix("skiff-cluster-bench").tempdir_in("/var/tmp")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let spawn = |args: &[&str]| {
        Command::new(&bin)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))
    };
    let data = dir.path().to_string_lossy().to_string();
    let listen = format!("127.0.0.1:{port}");
    let mut server_args = vec!["--data-dir", &data, "--listen", &listen];
    if split {
        server_args.push("--disable-controllers");
    }
    let child = spawn(&server_args)?;
    let mut server = Server { child, controllers: None, _dir: dir };
    let kubeconfig = server._dir.path().join("kubeconfig");
    for _ in 0..200 {
        if kubeconfig.exists() {
            if let Ok(kc) = kube::config::Kubeconfig::read_from(&kubeconfig) {
                if let Ok(cfg) = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await {
                    let client = Client::try_from(cfg)?;
                    if client.apiserver_version().await.is_ok() {
                        if split {
                            // The controller manager in its own process, with its own credentials.
                            let url = format!("https://{listen}");
                            let kc = server._dir.path().join("controller-manager.kubeconfig").to_string_lossy().to_string();
                            let status = spawn(&["kubeconfig", "--data-dir", &data, "--user", "system:kube-controller-manager", "--server", &url, "--out", &kc])?
                                .wait()?;
                            anyhow::ensure!(status.success(), "issuing the controller manager's kubeconfig");
                            server.controllers = Some(spawn(&["--api-server", &url, "--kubeconfig", &kc, "--disable-scheduler"])?);
                        }
                        return Ok((server, client));
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("the control plane did not come up")
}

async fn register_nodes(client: &Client, n: usize) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    for i in 0..n {
        let name = format!("bench-node-{i}");
        let node: Node = serde_json::from_value(json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}}))?;
        nodes.create(&PostParams::default(), &node).await?;
        let status = json!({"status": {"capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                            "lastHeartbeatTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}]}});
        nodes.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status)).await?;
    }
    Ok(())
}

/// Renews every node's Lease every 10 s, as agents would, so the node lifecycle controller leaves them Ready.
fn keep_leases(client: Client, n: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let leases: Api<Lease> = Api::namespaced(client, "kube-node-lease");
        loop {
            for i in 0..n {
                let name = format!("bench-node-{i}");
                let body = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name},
                    "spec": {"holderIdentity": name, "leaseDurationSeconds": 40,
                             "renewTime": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)}});
                let _ = leases.patch(&name, &PatchParams::apply("bench").force(), &Patch::Apply(&body)).await;
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    })
}

/// Waits until `want` pods matching `labels` are bound; returns when the last one was seen bound.
async fn wait_bound(client: &Client, labels: &str, want: usize, timeout: Duration) -> anyhow::Result<Instant> {
    let pods: Api<Pod> = Api::all(client.clone());
    let mut stream = watcher(pods, watcher::Config::default().labels(labels)).boxed();
    let mut bound: HashSet<String> = HashSet::new();
    let deadline = Instant::now() + timeout;
    while bound.len() < want {
        let ev = tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), stream.next()).await;
        match ev {
            Ok(Some(Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)))) => {
                if p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty()) {
                    bound.insert(p.uid().unwrap_or_default());
                }
            }
            Ok(Some(_)) => {}
            _ => bail!("only {} of {want} pods bound within {timeout:?}", bound.len()),
        }
    }
    Ok(Instant::now())
}

fn pod(name: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(json!({"metadata": {"name": name, "labels": {"bench": "bare"}},
        "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}))?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let (server, client) = start(a.split).await?;
    let pid = server.child.id();
    let cm_pid = server.controllers.as_ref().map(Child::id);
    register_nodes(&client, a.nodes).await?;
    let leases = keep_leases(client.clone(), a.nodes);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = rss_mib(pid);
    println!("| measure | value |");
    println!("|---|---|");
    println!("| nodes | {} |", a.nodes);
    match cm_pid {
        None => println!("| control plane RSS, idle with {} nodes | {idle:.0} MiB |", a.nodes),
        Some(cm) => {
            println!("| API server + scheduler RSS, idle with {} nodes | {idle:.0} MiB |", a.nodes);
            println!("| controller manager RSS, idle with {} nodes | {:.0} MiB |", a.nodes, rss_mib(cm));
        }
    }

    // 1. Bare pods created at once (32 clients), until all are bound.
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let waiter = {
        let c = client.clone();
        let n = a.pods;
        tokio::spawn(async move { wait_bound(&c, "bench=bare", n, Duration::from_secs(300)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    let names: Vec<String> = (0..a.pods).map(|i| format!("bare-{i}")).collect();
    let creates = futures::stream::iter(names.iter().map(|n| {
        let api = api.clone();
        async move { api.create(&PostParams::default(), &pod(n)?).await.map(|_| ()).map_err(anyhow::Error::from) }
    }))
    .buffer_unordered(32)
    .collect::<Vec<_>>()
    .await;
    if let Some(e) = creates.into_iter().find_map(Result::err) {
        return Err(e.context("creating pods"));
    }
    let created = t0.elapsed();
    let done = waiter.await??;
    let total = done.duration_since(t0);
    println!("| {} pods created (32 clients) | {:.2} s ({:.0} creates/s) |", a.pods, created.as_secs_f64(), a.pods as f64 / created.as_secs_f64());
    println!("| {} pods created and bound by the scheduler | {:.2} s ({:.0} pods/s end to end) |", a.pods, total.as_secs_f64(), a.pods as f64 / total.as_secs_f64());

    // 2. A Deployment of R replicas: controllers create the pods, the scheduler binds them.
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment = serde_json::from_value(json!({"metadata": {"name": "big"},
        "spec": {"replicas": a.replicas, "selector": {"matchLabels": {"app": "big"}},
                 "template": {"metadata": {"labels": {"app": "big"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox", "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}}}]}}}}))?;
    let waiter = {
        let c = client.clone();
        let n = a.replicas;
        tokio::spawn(async move { wait_bound(&c, "app=big", n, Duration::from_secs(600)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t0 = Instant::now();
    deployments.create(&PostParams::default(), &d).await.context("creating the Deployment")?;
    let done = waiter.await??;
    let total = done.duration_since(t0);
    println!("| Deployment of {} replicas: apply → all pods created and bound | {:.2} s ({:.0} pods/s) |", a.replicas, total.as_secs_f64(), a.replicas as f64 / total.as_secs_f64());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = a.pods + a.replicas;
    match cm_pid {
        None => println!("| control plane RSS holding {held} pods | {:.0} MiB |", rss_mib(pid)),
        Some(cm) => {
            println!("| API server + scheduler RSS holding {held} pods | {:.0} MiB |", rss_mib(pid));
            println!("| controller manager RSS holding {held} pods | {:.0} MiB |", rss_mib(cm));
        }
    }
    leases.abort();
    drop(server);
    Ok(())
}
