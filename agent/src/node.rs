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
    pub node_info: serde_json::Value,
    pub port: u16,
}

fn read_meminfo_kib(key: &str) -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    s.lines().find_map(|l| l.strip_prefix(key)?.trim().strip_suffix("kB")?.trim().parse().ok())
}

/// The node's capacity (also reported as its allocatable): cpu, memory, pods, ephemeral-storage.
pub fn capacity(config: &Config) -> serde_json::Value {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mem_kib = read_meminfo_kib("MemTotal:").unwrap_or(0);
    let storage = std::fs::create_dir_all(&config.root_dir)
        .ok()
        .and_then(|_| nix::sys::statvfs::statvfs(&config.root_dir).ok())
        .map(|s| s.blocks() * s.fragment_size())
        .unwrap_or(0);
    json!({
        "cpu": cpus.to_string(),
        "memory": format!("{mem_kib}Ki"),
        "pods": config.max_pods.to_string(),
        "ephemeral-storage": storage.to_string(),
    })
}

fn host_facts(config: &Config, port: u16) -> NodeFacts {
    let capacity = capacity(config);
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
    NodeFacts { capacity, node_info, port }
}

fn conditions(now: &str) -> serde_json::Value {
    let c = |t: &str, s: &str, reason: &str, msg: &str| {
        json!({"type": t, "status": s, "reason": reason, "message": msg,
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!([
        c("MemoryPressure", "False", "KubeletHasSufficientMemory", "agent has sufficient memory available"),
        c("DiskPressure", "False", "KubeletHasNoDiskPressure", "agent has no disk pressure"),
        c("PIDPressure", "False", "KubeletHasSufficientPID", "agent has sufficient PID available"),
        c("Ready", "True", "KubeletReady", "agent is posting ready status"),
    ])
}

fn status_patch(config: &Config, facts: &NodeFacts) -> serde_json::Value {
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    json!({"status": {
        "addresses": [{"type": "InternalIP", "address": config.node_ip.to_string()},
                      {"type": "Hostname", "address": config.node_name}],
        "capacity": facts.capacity, "allocatable": facts.capacity,
        "nodeInfo": facts.node_info,
        "daemonEndpoints": {"kubeletEndpoint": {"Port": facts.port}},
        "conditions": conditions(&now),
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
    write_status(&nodes, config, &facts).await?;
    Ok(facts)
}

async fn write_status(nodes: &Api<Node>, config: &Config, facts: &NodeFacts) -> Result<(), NodeError> {
    nodes
        .patch_status(&config.node_name, &PatchParams::default(), &Patch::Merge(status_patch(config, facts)))
        .await
        .map(|_| ())
        .map_err(|source| NodeError::Status { name: config.node_name.clone(), source })
}

/// Waits until node IPAM gave this node a pod CIDR.
pub async fn wait_for_pod_cidr(client: &kube::Client, name: &str) -> Result<String, NodeError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut logged = false;
    loop {
        let node = nodes.get(name).await.map_err(|source| NodeError::Get { name: name.into(), source })?;
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
            let ns: Api<Namespace> = Api::all(client.clone());
            let n: Namespace = serde_json::from_value(json!({"metadata": {"name": LEASE_NS}})).expect("static");
            match ns.create(&PostParams::default(), &n).await {
                Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 409, .. })) => {}
                Err(e) => return Err(e),
            }
            let lease: Lease = serde_json::from_value(body).expect("lease object");
            leases.create(&PostParams::default(), &lease).await.map(|_| ())
        }
        Err(e) => Err(e),
    }
}

/// Renews the Lease every 10 s and rewrites the node status every 60 s, until `stop` flips.
pub async fn heartbeat(client: kube::Client, config: Config, facts: NodeFacts, mut stop: tokio::sync::watch::Receiver<bool>) {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = renew_lease(&client, &config).await {
            tracing::warn!(error = %e, "renewing the node lease failed");
        }
        if n % 6 == 5 {
            if let Err(e) = write_status(&nodes, &config, &facts).await {
                tracing::warn!(error = %e, "refreshing node conditions failed");
            }
        }
        n += 1;
    }
}
