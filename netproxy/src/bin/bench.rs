//! `skiff-netproxy-bench`: full sync at N Services × 3 endpoints, and one Service changed at N, against the
//! kube-proxy-shaped anchor ruleset restored with `iptables-restore` for the same N, on the nf_tables and legacy
//! backends. Every run happens in a fresh network namespace (root needed); nothing touches the host's tables.
//!
//! Usage: skiff-netproxy-bench [--services 1000,10000] [--backends legacy,nft] [--runs 3] [--timeout 120]
//!        [--anchor /work/shared/tools/kube-proxy-ruleset.py]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::json;
use skiff_netproxy::conntrack::RecordingConntrack;
use skiff_netproxy::iptables::{Backend, IptablesCli};
use skiff_netproxy::lab::Netns;
use skiff_netproxy::model::{DesiredState, ModelCache, NodeConfig};
use std::sync::Arc;
use skiff_netproxy::proxier::Proxier;

#[derive(Parser)]
struct Args {
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    services: Vec<usize>,
    #[arg(long, value_delimiter = ',', default_value = "legacy,nft")]
    backends: Vec<String>,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds before a single restore is killed (reported as "> N s").
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    #[arg(long, default_value = "/work/shared/tools/kube-proxy-ruleset.py")]
    anchor: PathBuf,
    /// One-Service changes measured per run.
    #[arg(long, default_value_t = 5)]
    changes: usize,
    /// Write our full restore input for the first --services value to this file and exit.
    #[arg(long)]
    dump: Option<PathBuf>,
}

/// The anchor's Services (same names, cluster IPs, endpoint IPs), spread over 10 nodes; we are node-0.
fn objects(n: usize) -> (Vec<Arc<Service>>, Vec<Arc<EndpointSlice>>) {
    let mut services = Vec::with_capacity(n);
    let mut slices = Vec::with_capacity(n);
    for i in 0..n {
        let (ns, name) = (format!("ns{}", i % 50), format!("svc{i}"));
        let cip = format!("10.96.{}.{}", i / 250, i % 250 + 1);
        services.push(Arc::new(
            serde_json::from_value(json!({"metadata": {"name": name, "namespace": ns},
                "spec": {"clusterIP": cip, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}}))
            .expect("service"),
        ));
        let eps: Vec<_> = (0..3)
            .map(|e| {
                let k = i * 3 + e;
                let ip = format!("10.{}.{}.{}", 128 + k / 62500, (k / 250) % 250, k % 250 + 1);
                json!({"addresses": [ip], "nodeName": format!("node-{}", k % 10), "conditions": {"ready": true}})
            })
            .collect();
        slices.push(Arc::new(
            serde_json::from_value(json!({"metadata": {"name": format!("{name}-x"), "namespace": ns,
                "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}], "endpoints": eps}))
            .expect("slice"),
        ));
    }
    (services, slices)
}

fn node() -> NodeConfig {
    NodeConfig { node_name: "node-0".into(), cluster_cidr: "10.244.0.0/16".parse().expect("cidr"), masquerade_all: false, service_cidr: Some("10.96.0.0/12".parse().expect("cidr")) }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

fn anchor_file(script: &Path, n: usize, dir: &Path) -> anyhow::Result<PathBuf> {
    let out = dir.join(format!("kp{n}"));
    let restore = out.with_extension("restore");
    if !restore.exists() {
        let st = Command::new("python3").arg(script).arg(n.to_string()).arg(&out).stdout(Stdio::null()).status()?;
        if !st.success() {
            bail!("{} failed", script.display());
        }
    }
    Ok(restore)
}

/// Restores the anchor into a fresh namespace; `None` on timeout.
fn anchor_once(backend: Backend, file: &Path, ns: &Netns, timeout: Duration) -> anyhow::Result<Option<f64>> {
    let bin = IptablesCli::new(backend, None).restore_bin;
    let start = Instant::now();
    let mut child = Command::new("nsenter")
        .arg(format!("--net={}", ns.path().display()))
        .arg(&bin)
        .stdin(std::fs::File::open(file)?)
        .stdout(Stdio::null())
        .spawn()?;
    loop {
        if let Some(st) = child.try_wait()? {
            if !st.success() {
                bail!("anchor restore failed: {st}");
            }
            return Ok(Some(start.elapsed().as_secs_f64() * 1000.0));
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn fmt_ms(v: Option<f64>, timeout: Duration) -> String {
    match v {
        Some(v) => format!("{v:.0}"),
        None => format!("> {} s", timeout.as_secs()),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!("run as root: every measurement happens in a fresh network namespace");
    }
    let timeout = Duration::from_secs(args.timeout);
    let dir = std::env::temp_dir().join(format!("skiff-np-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut rows = Vec::new();
    for &n in &args.services {
        let anchor = anchor_file(&args.anchor, n, &dir).context("generating the anchor ruleset")?;
        let (services, base_slices) = objects(n);
        let build_start = Instant::now();
        let (state, warnings) = DesiredState::build(node(), &services, &base_slices);
        let build_ms = build_start.elapsed().as_secs_f64() * 1000.0;
        if !warnings.is_empty() {
            bail!("unexpected warnings: {warnings:?}");
        }
        let render_start = Instant::now();
        let rules = skiff_netproxy::render::render(&state);
        eprintln!("{n} services: model {build_ms:.1} ms, render {:.1} ms", render_start.elapsed().as_secs_f64() * 1000.0);
        if let Some(path) = &args.dump {
            let kernel = skiff_netproxy::restore::KernelState::default();
            std::fs::write(path, skiff_netproxy::restore::plan(&rules, skiff_netproxy::restore::Mode::Full(&kernel)).text)?;
            return Ok(());
        }
        for b in &args.backends {
            let backend = match b.as_str() {
                "nft" => Backend::Nft,
                "legacy" => Backend::Legacy,
                other => bail!("unknown backend {other}"),
            };
            let (mut anchor_ms, mut full_ms, mut change_ms, mut resync_ms) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
            let (mut anchor_to, mut full_to, mut change_to, mut resync_to) = (false, false, false, false);
            for run in 0..args.runs {
                let mut slices = base_slices.clone();
                let ns = Netns::create(&format!("skiff-np-bench-{}-{run}", std::process::id()))?;
                match anchor_once(backend, &anchor, &ns, timeout)? {
                    Some(ms) => anchor_ms.push(ms),
                    None => anchor_to = true,
                }
                drop(ns);
                let ns = Netns::create(&format!("skiff-np-bench-{}-{run}", std::process::id()))?;
                let mut cli = IptablesCli::new(backend, Some(ns.path()));
                cli.timeout = Some(timeout);
                let mut model = ModelCache::default();
                let (state, _) = model.build(node(), &services, &slices);
                let mut proxier = Proxier::new(Box::new(cli), Box::new(RecordingConntrack::default()));
                let start = Instant::now();
                match proxier.sync(&state, true) {
                    Ok(_) => full_ms.push(start.elapsed().as_secs_f64() * 1000.0 + build_ms),
                    Err(e) if e.to_string().contains("did not finish") => {
                        full_to = true;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
                // One Service changes: an endpoint of a Service in the middle moves to a new address.
                for c in 0..args.changes {
                    let i = n / 2 + c;
                    let ip = format!("10.250.{}.{}", c / 250, c % 250 + 1);
                    let mut changed_slice = (*slices[i]).clone();
                    changed_slice.endpoints[0].addresses = vec![ip];
                    slices[i] = Arc::new(changed_slice);
                    let start = Instant::now();
                    let (changed, _) = model.build(node(), &services, &slices);
                    let model_time = start.elapsed();
                    match proxier.sync(&changed, false) {
                        Ok(r) => {
                            assert!(!r.full && r.chains_written == 1, "{r:?}");
                            eprintln!("  change: total {:?}, model {model_time:?}, sync {:?}, in iptables {:?}", start.elapsed(), r.duration, r.iptables_duration);
                            change_ms.push(start.elapsed().as_secs_f64() * 1000.0);
                        }
                        Err(e) if e.to_string().contains("did not finish") => {
                            change_to = true;
                            break;
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                // The periodic full resync, over a table that already holds everything.
                let (state, _) = model.build(node(), &services, &slices);
                let start = Instant::now();
                match proxier.sync(&state, true) {
                    Ok(_) => resync_ms.push(start.elapsed().as_secs_f64() * 1000.0),
                    Err(e) if e.to_string().contains("did not finish") => resync_to = true,
                    Err(e) => return Err(e.into()),
                }
                drop(ns);
            }
            let a = (!anchor_to).then(|| median(anchor_ms));
            let f = (!full_to).then(|| median(full_ms));
            let c = (!change_to).then(|| median(change_ms));
            let rs = (!resync_to).then(|| median(resync_ms));
            let ratio = match (f, a) {
                (Some(f), Some(a)) => format!("{:.2}", f / a),
                (None, Some(_)) => "> 1".into(),
                (Some(_), None) => "< 1".into(),
                (None, None) => "?".into(),
            };
            let row = format!(
                "| {b} | {n} | {} | {} | {ratio} | {} | {} | {} / {} |",
                fmt_ms(a, timeout), fmt_ms(f, timeout), fmt_ms(c, timeout), fmt_ms(rs, timeout), rules.rule_count(), rules.chain_count()
            );
            eprintln!("{row}");
            rows.push(row);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    println!("| backend | services | anchor restore ms | skiff full sync ms | ratio | skiff one-Service change ms | skiff full resync of a populated table ms | skiff rules / chains |");
    println!("|---|---|---|---|---|---|---|---|");
    for r in rows {
        println!("{r}");
    }
    Ok(())
}
