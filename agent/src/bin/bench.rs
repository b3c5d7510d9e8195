//! `skiff-agent-bench`: pod startup and deletion latency against a running cluster (API create → the pod is seen
//! Running and Ready through a watch; API delete → the pod is gone), for pods created one by one or all at once.
//! Run by agent/bench/run.sh, which also samples the agent's memory.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

#[derive(Parser)]
struct Args {
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<std::path::PathBuf>,
    #[arg(long, default_value_t = 50)]
    pods: usize,
    /// serial: one pod at a time, each waited for; parallel: all created at once.
    #[arg(long, default_value = "parallel")]
    mode: String,
    #[arg(long, default_value = "localhost/busybox:1")]
    image: String,
    #[arg(long, default_value = "default")]
    namespace: String,
    /// Leave the pods running (to sample memory), deleting them only after this many seconds.
    #[arg(long, default_value_t = 0)]
    hold_secs: u64,
}

fn pod(name: &str, run: &str, image: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": {"skiff-bench": run}},
        "spec": {
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "c", "image": image, "imagePullPolicy": "Never",
                            "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1 & wait; done"]}],
        },
    }))?)
}

fn ready(p: &Pod) -> bool {
    let s = p.status.as_ref();
    s.and_then(|s| s.phase.as_deref()) == Some("Running")
        && s.and_then(|s| s.conditions.as_ref()).is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn summary(what: &str, mut v: Vec<Duration>) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{what}: n={} p50={:.0}ms p90={:.0}ms p99={:.0}ms max={:.0}ms",
        v.len(),
        ms(percentile(&v, 0.5)),
        ms(percentile(&v, 0.9)),
        ms(percentile(&v, 0.99)),
        ms(v.last().copied().unwrap_or_default())
    );
}

/// What the watch saw of a pod: bound to a node, first status from the agent (hostIP set), Ready, gone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Stage {
    Bound,
    AgentStatus,
    Ready,
    Gone,
}

type Events = tokio::sync::mpsc::UnboundedReceiver<(String, Stage, Instant)>;

/// When each pod first reached each stage.
#[derive(Default)]
struct Seen(HashMap<(String, Stage), Instant>);

impl Seen {
    fn record(&mut self, name: String, stage: Stage, at: Instant) {
        self.0.entry((name, stage)).or_insert(at);
    }
    fn count(&self, stage: Stage) -> usize {
        self.0.keys().filter(|(_, s)| *s == stage).count()
    }
    fn at(&self, name: &str, stage: Stage) -> Option<Instant> {
        self.0.get(&(name.to_string(), stage)).copied()
    }
}

/// For each pod, the time from `from` to its first `to`.
fn between(names: &[String], seen: &Seen, from: &dyn Fn(&str) -> Option<Instant>, to: Stage) -> Vec<Duration> {
    names.iter().filter_map(|n| Some(seen.at(n, to)?.saturating_duration_since(from(n)?))).collect()
}

/// Waits until `want` pods reached `stage`.
async fn wait_for(want: usize, stage: Stage, seen: &mut Seen, rx: &mut Events, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while seen.count(stage) < want {
        match tokio::time::timeout(deadline.saturating_duration_since(Instant::now()), rx.recv()).await {
            Ok(Some((name, s, at))) => seen.record(name, s, at),
            _ => anyhow::bail!("only {} of {want} pods reached {stage:?} within {timeout:?}", seen.count(stage)),
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run().await
}

async fn run() -> anyhow::Result<()> {
    let a = Args::parse();
    let config = match &a.kubeconfig {
        Some(p) => {
            let kc = kube::config::Kubeconfig::read_from(p)?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let client = kube::Client::try_from(config)?;
    let api: Api<Pod> = Api::namespaced(client, &a.namespace);
    let run = format!("r{}", std::process::id());
    let names: Vec<String> = (0..a.pods).map(|i| format!("bench-{run}-{i}")).collect();

    // One watch sees every transition; the main task records when each pod first became Ready and when it went.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, Stage, Instant)>();
    let wc = watcher::Config::default().labels(&format!("skiff-bench={run}"));
    let mut stream = watcher(api.clone(), wc).boxed();
    let watch = tokio::spawn(async move {
        while let Some(ev) = stream.next().await {
            let now = Instant::now();
            match ev {
                Ok(watcher::Event::Apply(p) | watcher::Event::InitApply(p)) => {
                    if p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty()) {
                        let _ = tx.send((p.name_any(), Stage::Bound, now));
                    }
                    if p.status.as_ref().and_then(|s| s.host_ip.as_deref()).is_some_and(|n| !n.is_empty()) {
                        let _ = tx.send((p.name_any(), Stage::AgentStatus, now));
                    }
                    if ready(&p) {
                        let _ = tx.send((p.name_any(), Stage::Ready, now));
                    }
                }
                Ok(watcher::Event::Delete(p)) => {
                    let _ = tx.send((p.name_any(), Stage::Gone, now));
                }
                _ => {}
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut created: HashMap<String, Instant> = HashMap::new();
    let mut seen = Seen::default();
    let timeout = Duration::from_secs(120);
    let start = Instant::now();
    if a.mode == "serial" {
        for (i, n) in names.iter().enumerate() {
            created.insert(n.clone(), Instant::now());
            api.create(&PostParams::default(), &pod(n, &run, &a.image)?).await.context("creating a pod")?;
            wait_for(i + 1, Stage::Ready, &mut seen, &mut rx, timeout).await?;
        }
    } else {
        let creates = names.iter().map(|n| {
            let api = api.clone();
            let p = pod(n, &run, &a.image);
            async move {
                let t = Instant::now();
                api.create(&PostParams::default(), &p?).await.context("creating a pod")?;
                anyhow::Ok((n.clone(), t))
            }
        });
        for r in futures::future::join_all(creates).await {
            let (n, t) = r?;
            created.insert(n, t);
        }
        wait_for(names.len(), Stage::Ready, &mut seen, &mut rx, timeout).await?;
    }
    let all = start.elapsed();
    let lat = between(&names, &seen, &|n| created.get(n).copied(), Stage::Ready);
    // Which pod was slowest (its place in the creation order), to tell a cold first pod from a stray one.
    if let Some((i, d)) = lat.iter().enumerate().max_by_key(|(_, d)| **d) {
        println!("slowest to Ready: pod {} of {} ({:.0}ms)", i + 1, names.len(), d.as_secs_f64() * 1000.0);
    }
    summary(&format!("startup ({}, {} pods, all Ready in {:.2}s)", a.mode, a.pods, all.as_secs_f64()), lat);
    // Where the time went: create → bound by the scheduler → first status from the agent → Ready.
    summary("  create → bound", between(&names, &seen, &|n| created.get(n).copied(), Stage::Bound));
    summary("  bound → agent's first status", between(&names, &seen, &|n| seen.at(n, Stage::Bound), Stage::AgentStatus));
    summary("  agent's first status → Ready", between(&names, &seen, &|n| seen.at(n, Stage::AgentStatus), Stage::Ready));
    if a.hold_secs > 0 {
        println!("holding {} pods for {} s", a.pods, a.hold_secs);
        tokio::time::sleep(Duration::from_secs(a.hold_secs)).await;
    }

    let mut deleted: HashMap<String, Instant> = HashMap::new();
    let deletes = names.iter().map(|n| {
        let api = api.clone();
        async move {
            let t = Instant::now();
            api.delete(n, &DeleteParams::default()).await.context("deleting a pod")?;
            anyhow::Ok((n.clone(), t))
        }
    });
    for r in futures::future::join_all(deletes).await {
        let (n, t) = r?;
        deleted.insert(n, t);
    }
    wait_for(names.len(), Stage::Gone, &mut seen, &mut rx, timeout).await?;
    let lat = between(&names, &seen, &|n| deleted.get(n).copied(), Stage::Gone);
    summary(&format!("delete-to-gone ({} pods at once, grace 2 s)", a.pods), lat);
    watch.abort();
    // Exit now: the client's connection tasks would otherwise keep the runtime's shutdown waiting.
    use std::io::Write;
    let _ = std::io::stdout().flush();
    std::process::exit(0)
}
