//! Node IPAM: gives every Node a pod CIDR (`spec.podCIDR`, `spec.podCIDRs`) from the cluster CIDR, one subnet of
//! `node_mask` bits each (10.244.0.0/16 and /24 by default). The Nodes themselves are the record, so allocations
//! survive restarts; a deleted Node's subnet is free again.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};

use super::informers::SharedInformer;
use super::{error_policy, ControllerError, ControllersConfig};

pub struct Context {
    client: Client,
    cluster: (Ipv4Addr, u8),
    node_mask: u8,
    nodes: Mutex<Option<Store<Node>>>,
    /// Subnets handed out that the cache may not show yet: subnet → (node, when).
    pending: Mutex<HashMap<String, (String, Instant)>>,
    config: ControllersConfig,
}

impl Context {
    pub fn new(client: Client, cluster: (Ipv4Addr, u8), node_mask: u8, config: ControllersConfig) -> Self {
        Context { client, cluster, node_mask, nodes: Mutex::new(None), pending: Mutex::new(HashMap::new()), config }
    }
}

/// The lowest subnet of `cluster` with prefix `mask` that is not in `used`.
pub fn next_free(cluster: (Ipv4Addr, u8), mask: u8, used: &HashSet<String>) -> Option<String> {
    if mask < cluster.1 || mask > 30 {
        return None;
    }
    let base = u32::from(cluster.0) & (u32::MAX.checked_shl(32 - cluster.1 as u32).unwrap_or(0));
    let count = 1u64 << (mask - cluster.1);
    let step = 1u64 << (32 - mask);
    (0..count)
        .map(|i| format!("{}/{mask}", Ipv4Addr::from((base as u64 + i * step) as u32)))
        .find(|c| !used.contains(c))
}

fn pod_cidr(n: &Node) -> Option<String> {
    n.spec.as_ref().and_then(|s| s.pod_cidr.clone()).filter(|c| !c.is_empty())
}

pub async fn reconcile(node: Arc<Node>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    if pod_cidr(&node).is_some() || node.metadata.deletion_timestamp.is_some() {
        return Ok(Action::requeue(ctx.config.resync));
    }
    let cidr = {
        let store = ctx.nodes.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let nodes: HashMap<String, Option<String>> =
            store.map(|s| s.state().iter().map(|n| (n.name_any(), pod_cidr(n))).collect()).unwrap_or_default();
        let mut used: HashSet<String> = nodes.values().flatten().cloned().collect();
        let mut pending = ctx.pending.lock().unwrap_or_else(|e| e.into_inner());
        // Forget a handed-out subnet once the cache shows it, its node is gone, or it is old.
        pending.retain(|cidr, (owner, at)| {
            matches!(nodes.get(owner), Some(None)) && !used.contains(cidr) && at.elapsed() < Duration::from_secs(60)
        });
        used.extend(pending.keys().cloned());
        let cidr = next_free(ctx.cluster, ctx.node_mask, &used).ok_or_else(|| ControllerError::Invalid {
            object: node.name_any(),
            reason: format!("no pod CIDR left in {}/{}", ctx.cluster.0, ctx.cluster.1),
        })?;
        pending.insert(cidr.clone(), (node.name_any(), Instant::now()));
        cidr
    };
    let api: Api<Node> = Api::all(ctx.client.clone());
    let patch = serde_json::json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
    match api.patch(&node.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => tracing::info!(node = %node.name_any(), pod_cidr = %cidr, "allocated pod CIDR"),
        Err(kube::Error::Api(e)) if e.code == 404 => {}
        Err(e) => {
            ctx.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&cidr);
            return Err(ControllerError::Api { object: node.name_any(), source: Box::new(e) });
        }
    }
    Ok(Action::requeue(ctx.config.resync))
}

pub fn run(
    nodes: SharedInformer<Node>,
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    let controller = Controller::for_stream(nodes.touched(), nodes.store());
    *ctx.nodes.lock().unwrap_or_else(|e| e.into_inner()) = Some(controller.store());
    controller.graceful_shutdown_on(shutdown).run(reconcile, error_policy, ctx).for_each(|_| async {})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lowest_free_subnet() {
        let cluster = (Ipv4Addr::new(10, 244, 0, 0), 16);
        let mut used = HashSet::new();
        assert_eq!(next_free(cluster, 24, &used).as_deref(), Some("10.244.0.0/24"));
        used.insert("10.244.0.0/24".to_string());
        used.insert("10.244.2.0/24".to_string());
        assert_eq!(next_free(cluster, 24, &used).as_deref(), Some("10.244.1.0/24"));
        let small = (Ipv4Addr::new(10, 0, 0, 0), 23);
        let full: HashSet<String> = ["10.0.0.0/24", "10.0.1.0/24"].iter().map(|s| s.to_string()).collect();
        assert_eq!(next_free(small, 24, &full), None);
        assert_eq!(next_free(cluster, 8, &used), None, "a node subnet cannot be larger than the cluster");
    }
}
