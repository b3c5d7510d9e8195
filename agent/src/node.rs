//! Node registration, the Lease heartbeat and node conditions.

use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;
use serde_json::json;

use crate::Config;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("creating node {name}: {source}")]
    Create { name: String, source: kube::Error },
    #[error("writing the status of node {name}: {source}")]
    Status { name: String, source: kube::Error },
    #[error("reading node {name}: {source}")]
    Get { name: String, source: kube::Error },
}

/// What the agent reports about its host; computed once at start.
#[derive(Clone, Debug)]
pub struct NodeFacts {
    pub capacity: serde_json::Value,
    pub allocatable: serde_json::Value,
    pub node_info: serde_json::Value,
    pub port: u16,
}

/// The kubelet's default hard eviction thresholds, which decide the pressure conditions: memory.available < 100Mi,
/// nodefs.available < 10%, nodefs.inodesFree < 5%; and PIDPressure when fewer than 10% of the PIDs are free.
pub const MEMORY_AVAILABLE_MIN: u64 = 100 << 20;
pub const DISK_AVAILABLE_MIN_PERCENT: u64 = 10;
pub const INODES_FREE_MIN_PERCENT: u64 = 5;
pub const PIDS_FREE_MIN_PERCENT: u64 = 10;

/// Hard eviction thresholds (the kubelet's `--eviction-hard`), which decide the pressure conditions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Thresholds {
    pub memory_available: u64,
    pub nodefs_available_percent: u64,
    pub nodefs_inodes_free_percent: u64,
    pub pid_available_percent: u64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            memory_available: MEMORY_AVAILABLE_MIN,
            nodefs_available_percent: DISK_AVAILABLE_MIN_PERCENT,
            nodefs_inodes_free_percent: INODES_FREE_MIN_PERCENT,
            pid_available_percent: PIDS_FREE_MIN_PERCENT,
        }
    }
}

impl std::str::FromStr for Thresholds {
    type Err = String;

    /// The kubelet's syntax: `memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,pid.available<10%`;
    /// signals not given keep their defaults (kind sets `nodefs.available<0%` for test clusters on shared disks).
    fn from_str(s: &str) -> Result<Self, String> {
        let mut t = Thresholds::default();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (signal, value) = part.split_once('<').ok_or_else(|| format!("{part:?}: want SIGNAL<VALUE"))?;
            let percent = || value.strip_suffix('%').and_then(|v| v.parse::<u64>().ok()).filter(|v| *v <= 100);
            let bad = || format!("{part:?}: bad value for {signal}");
            match signal {
                "memory.available" => {
                    let q = k8s_openapi::apimachinery::pkg::api::resource::Quantity(value.to_string());
                    t.memory_available = crate::container::spec::memory_bytes(&q).filter(|b| *b >= 0).ok_or_else(bad)? as u64;
                }
                "nodefs.available" | "imagefs.available" => t.nodefs_available_percent = percent().ok_or_else(bad)?,
                "nodefs.inodesFree" | "imagefs.inodesFree" => t.nodefs_inodes_free_percent = percent().ok_or_else(bad)?,
                "pid.available" => t.pid_available_percent = percent().ok_or_else(bad)?,
                other => return Err(format!("unknown eviction signal {other:?}")),
            }
        }
        Ok(t)
    }
}

/// One reading of the host's resources.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    pub memory_available: u64,
    pub disk_total: u64,
    pub disk_available: u64,
    pub inodes_total: u64,
    pub inodes_free: u64,
    pub pid_max: u64,
    pub pids_used: u64,
}

pub fn sample(config: &Config) -> Sample {
    let fs = nix::sys::statvfs::statvfs(&config.root_dir).ok();
    let pid_max = std::fs::read_to_string("/proc/sys/kernel/pid_max").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0);
    let pids_used = std::fs::read_dir("/proc")
        .map(|d| d.flatten().filter(|e| e.file_name().to_str().is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))).count() as u64)
        .unwrap_or(0);
    Sample {
        memory_available: read_meminfo_kib("MemAvailable:").unwrap_or(0) * 1024,
        disk_total: fs.map(|f| f.blocks() * f.fragment_size()).unwrap_or(0),
        disk_available: fs.map(|f| f.blocks_available() * f.fragment_size()).unwrap_or(0),
        inodes_total: fs.map(|f| f.files()).unwrap_or(0),
        inodes_free: fs.map(|f| f.files_available()).unwrap_or(0),
        pid_max,
        pids_used,
    }
}

/// (type, under pressure) for the three pressure conditions. A zero total (unknown) is no pressure.
pub fn pressures(s: &Sample, t: &Thresholds) -> [(&'static str, bool); 3] {
    let below = |avail: u64, total: u64, pct: u64| total > 0 && avail.saturating_mul(100) < total.saturating_mul(pct);
    [
        ("MemoryPressure", s.memory_available > 0 && s.memory_available < t.memory_available),
        (
            "DiskPressure",
            below(s.disk_available, s.disk_total, t.nodefs_available_percent) || below(s.inodes_free, s.inodes_total, t.nodefs_inodes_free_percent),
        ),
        ("PIDPressure", below(s.pid_max.saturating_sub(s.pids_used), s.pid_max, t.pid_available_percent)),
    ]
}

fn read_meminfo_kib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    s.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// Capacity, allocatable and nodeInfo of this host (allocatable is also the downward API's default for missing limits).
pub fn host_facts(config: &Config, port: u16) -> NodeFacts {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mem_kib = read_meminfo_kib("MemTotal:").unwrap_or(0);
    let storage = std::fs::create_dir_all(&config.root_dir)
        .ok()
        .and_then(|_| nix::sys::statvfs::statvfs(&config.root_dir).ok())
        .map(|s| s.blocks() * s.fragment_size())
        .unwrap_or(0);
    let capacity = json!({
        "cpu": cpus.to_string(),
        "memory": format!("{mem_kib}Ki"),
        "pods": config.max_pods.to_string(),
        "ephemeral-storage": storage.to_string(),
    });
    // Allocatable = capacity minus the hard eviction thresholds (no kube/system reservations are configured).
    let allocatable = json!({
        "cpu": cpus.to_string(),
        "memory": format!("{}Ki", mem_kib.saturating_sub(config.eviction.memory_available >> 10)),
        "pods": config.max_pods.to_string(),
        "ephemeral-storage": (storage - storage / 100 * config.eviction.nodefs_available_percent).to_string(),
    });
    let uname = nix::sys::utsname::uname().ok();
    let kernel = uname.as_ref().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let os_image = std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("PRETTY_NAME=").map(|v| v.trim_matches('"').to_string())))
        .unwrap_or_else(|| "Linux".into());
    let machine_id = std::fs::read_to_string("/etc/machine-id").unwrap_or_default().trim().to_string();
    let node_info = json!({
        "architecture": arch, "operatingSystem": "linux", "kernelVersion": kernel, "osImage": os_image,
        "containerRuntimeVersion": format!("skiff://{}", env!("CARGO_PKG_VERSION")),
        "kubeletVersion": format!("v1.32.0-skiff.{}", env!("CARGO_PKG_VERSION")),
        "kubeProxyVersion": "", "machineID": machine_id, "systemUUID": machine_id.clone(), "bootID": "",
    });
    NodeFacts { capacity, allocatable, node_info, port }
}

/// The node conditions from the pressures, with the kubelet's reasons and messages. `since` holds when each
/// condition last changed (kept across calls so lastTransitionTime only moves on a change).
pub fn conditions(pressure: &[(&'static str, bool); 3], since: &mut std::collections::BTreeMap<&'static str, (bool, String)>, now: &str) -> serde_json::Value {
    let mut c = |t: &'static str, bad: bool, reason: &str, msg: &str| {
        let entry = since.entry(t).or_insert((bad, now.to_string()));
        if entry.0 != bad {
            *entry = (bad, now.to_string());
        }
        let status = if t == "Ready" { !bad } else { bad };
        json!({"type": t, "status": if status { "True" } else { "False" }, "reason": reason, "message": msg,
               "lastHeartbeatTime": now, "lastTransitionTime": entry.1})
    };
    let p = |t: &str| pressure.iter().any(|(n, b)| *n == t && *b);
    json!([
        if p("MemoryPressure") { c("MemoryPressure", true, "KubeletHasInsufficientMemory", "agent has insufficient memory available") }
        else { c("MemoryPressure", false, "KubeletHasSufficientMemory", "agent has sufficient memory available") },
        if p("DiskPressure") { c("DiskPressure", true, "KubeletHasDiskPressure", "agent has disk pressure") }
        else { c("DiskPressure", false, "KubeletHasNoDiskPressure", "agent has no disk pressure") },
        if p("PIDPressure") { c("PIDPressure", true, "KubeletHasInsufficientPID", "agent has insufficient PID available") }
        else { c("PIDPressure", false, "KubeletHasSufficientPID", "agent has sufficient PID available") },
        c("Ready", false, "KubeletReady", "agent is posting ready status"),
    ])
}

fn status_patch(config: &Config, facts: &NodeFacts, conditions: serde_json::Value) -> serde_json::Value {
    json!({"status": {
        "addresses": [{"type": "InternalIP", "address": config.node_ip.to_string()},
                      {"type": "Hostname", "address": config.node_name}],
        "capacity": facts.capacity, "allocatable": facts.allocatable,
        "nodeInfo": facts.node_info,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": facts.port}},
        "conditions": conditions,
    }})
}

/// Creates the Node (or adopts the existing one) and writes its status.
pub async fn register(client: &kube::Client, config: &Config, port: u16) -> Result<NodeFacts, NodeError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let name = config.node_name.clone();
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                               "kubernetes.io/arch": std::env::consts::ARCH}},
    }))
    .expect("static node object");
    match nodes.create(&PostParams::default(), &node).await {
        Ok(_) => tracing::info!(node = %name, "node registered"),
        Err(kube::Error::Api(e)) if e.code == 409 => tracing::info!(node = %name, "node exists, adopting it"),
        Err(source) => return Err(NodeError::Create { name, source }),
    }
    let facts = host_facts(config, port);
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let conds = conditions(&pressures(&sample(config), &config.eviction), &mut Default::default(), &now);
    write_status(&nodes, config, &facts, conds).await?;
    Ok(facts)
}

async fn write_status(nodes: &Api<Node>, config: &Config, facts: &NodeFacts, conditions: serde_json::Value) -> Result<(), NodeError> {
    nodes
        .patch_status(&config.node_name, &PatchParams::default(), &Patch::Merge(status_patch(config, facts, conditions)))
        .await
        .map(|_| ())
        .map_err(|source| NodeError::Status { name: config.node_name.clone(), source })
}

/// Waits until node IPAM gave this node a pod CIDR.
pub async fn wait_for_pod_cidr(client: &kube::Client, name: &str) -> Result<String, NodeError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut logged = false;
    loop {
        // The API server may be away for a while (restarting, failing over): keep asking, as the kubelet does.
        let node = match nodes.get(name).await {
            Ok(n) => n,
            Err(source) => {
                tracing::warn!(error = %NodeError::Get { name: name.into(), source }, "reading the node; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Some(cidr) = node.spec.and_then(|s| s.pod_cidr).filter(|c| !c.is_empty()) {
            return Ok(cidr);
        }
        if !logged {
            tracing::info!(node = %name, "waiting for spec.podCIDR from node IPAM");
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

const LEASE_NS: &str = "kube-node-lease";
const LEASE_SECONDS: i32 = 40;

async fn renew_lease(client: &kube::Client, config: &Config) -> Result<(), kube::Error> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), LEASE_NS);
    let now = MicroTime(Utc::now());
    let body = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": config.node_name, "namespace": LEASE_NS},
        "spec": {"holderIdentity": config.node_name, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": now}});
    match leases.patch(&config.node_name, &PatchParams::default(), &Patch::Merge(&body)).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => {
            let lease: Lease = serde_json::from_value(body).expect("lease object");
            match leases.create(&PostParams::default(), &lease).await {
                // No kube-node-lease namespace (the API server makes it; an administrator may have deleted it):
                // create it if these credentials may, then the Lease.
                Err(kube::Error::Api(e)) if e.code == 404 => {
                    let ns: Api<Namespace> = Api::all(client.clone());
                    let n: Namespace = serde_json::from_value(json!({"metadata": {"name": LEASE_NS}})).expect("static");
                    match ns.create(&PostParams::default(), &n).await {
                        Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 409, .. })) => {}
                        Err(e) => return Err(e),
                    }
                    leases.create(&PostParams::default(), &lease).await.map(|_| ())
                }
                r => r.map(|_| ()),
            }
        }
        Err(e) => Err(e),
    }
}

/// Renews the Lease every 10 s; samples the host every 10 s and rewrites the node status when a condition changed,
/// and at least every 60 s; until `stop` flips.
pub async fn heartbeat(client: kube::Client, config: Config, facts: NodeFacts, mut stop: tokio::sync::watch::Receiver<bool>) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut since = Default::default();
    let mut last: Option<[(&'static str, bool); 3]> = None;
    let mut written = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        // Bounded: a request stuck on a cut link must not hold up the next renewals (or a healed node stays
        // NotReady until the connection times out).
        match tokio::time::timeout(Duration::from_secs(8), renew_lease(&client, &config)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "renewing the node lease failed"),
            Err(_) => tracing::warn!("renewing the node lease timed out"),
        }
        let c = config.clone();
        let pressure = match tokio::task::spawn_blocking(move || pressures(&sample(&c), &c.eviction)).await {
            Ok(p) => p,
            Err(_) => continue,
        };
        if last.as_ref() != Some(&pressure) || written.elapsed() >= Duration::from_secs(60) {
            if last.is_some() && last.as_ref() != Some(&pressure) {
                tracing::info!(?pressure, "node conditions changed");
            }
            let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let write = write_status(&nodes, &config, &facts, conditions(&pressure, &mut since, &now));
            match tokio::time::timeout(Duration::from_secs(8), write).await {
                Ok(Ok(())) => {
                    last = Some(pressure);
                    written = tokio::time::Instant::now();
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "writing node conditions failed"),
                Err(_) => tracing::warn!("writing node conditions timed out"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pressures_follow_the_kubelets_thresholds() {
        let d = Thresholds::default();
        let ok = Sample { memory_available: 1 << 30, disk_total: 1000, disk_available: 500, inodes_total: 100, inodes_free: 50, pid_max: 1000, pids_used: 100 };
        assert!(pressures(&ok, &d).iter().all(|(_, b)| !b));
        let mem = Sample { memory_available: 50 << 20, ..ok };
        assert_eq!(pressures(&mem, &d)[0], ("MemoryPressure", true));
        let disk = Sample { disk_available: 99, ..ok };
        assert_eq!(pressures(&disk, &d)[1], ("DiskPressure", true));
        let inodes = Sample { inodes_free: 4, ..ok };
        assert_eq!(pressures(&inodes, &d)[1], ("DiskPressure", true));
        let pids = Sample { pids_used: 950, ..ok };
        assert_eq!(pressures(&pids, &d)[2], ("PIDPressure", true));
        assert!(pressures(&Sample::default(), &d).iter().all(|(_, b)| !b), "unknown is no pressure");
        let relaxed: Thresholds = "nodefs.available<1%,memory.available<1Mi".parse().unwrap();
        assert_eq!(pressures(&disk, &relaxed)[1], ("DiskPressure", false));
        assert_eq!(relaxed.memory_available, 1 << 20);
        assert_eq!(relaxed.nodefs_inodes_free_percent, 5, "unnamed signals keep their defaults");
        assert!("nodefs.available<200%".parse::<Thresholds>().is_err());
        assert!("bogus<1%".parse::<Thresholds>().is_err());
        assert!("nodefs.available=1%".parse::<Thresholds>().is_err());
    }

    #[test]
    fn transition_times_move_only_on_change() {
        let mut since = Default::default();
        let calm = [("MemoryPressure", false), ("DiskPressure", false), ("PIDPressure", false)];
        let c1 = conditions(&calm, &mut since, "t1");
        assert_eq!(c1[0]["lastTransitionTime"], "t1");
        assert_eq!(c1[3]["status"], "True");
        let c2 = conditions(&calm, &mut since, "t2");
        assert_eq!(c2[0]["lastTransitionTime"], "t1");
        assert_eq!(c2[0]["lastHeartbeatTime"], "t2");
        let hot = [("MemoryPressure", true), ("DiskPressure", false), ("PIDPressure", false)];
        let c3 = conditions(&hot, &mut since, "t3");
        assert_eq!((c3[0]["status"].as_str(), c3[0]["lastTransitionTime"].as_str()), (Some("True"), Some("t3")));
        assert_eq!(c3[0]["reason"], "KubeletHasInsufficientMemory");
        assert_eq!(c3[1]["lastTransitionTime"], "t1");
    }
}
