//! Node lifecycle: notices nodes whose agent stopped renewing its Lease (and posting status) for the grace
//! period, marks their conditions Unknown and taints them `node.kubernetes.io/unreachable` (or `not-ready` when
//! the agent reports Ready=False), and evicts the pods there that do not tolerate the NoExecute taint, after
//! their `tolerationSeconds` (upstream's node lifecycle controller and taint manager). A node that comes back
//! loses the taints. A node reporting MemoryPressure, DiskPressure or PIDPressure is tainted NoSchedule for as long as
//! it does (TaintNodesByCondition).
//!
//! [`plan_node`] and [`evictions`] decide (pure); [`run`] is a periodic loop over the informers' caches.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, Taint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::Informers;
use crate::controllers::cached_pod::CachedPod;

pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
/// Node conditions that taint a node NoSchedule while True (upstream's TaintNodesByCondition).
pub const PRESSURE_TAINTS: [(&str, &str); 3] = [
    ("MemoryPressure", "node.kubernetes.io/memory-pressure"),
    ("DiskPressure", "node.kubernetes.io/disk-pressure"),
    ("PIDPressure", "node.kubernetes.io/pid-pressure"),
];

#[derive(Clone, Debug)]
pub struct LifecycleConfig {
    /// A node whose last heartbeat is older than this is unreachable (upstream: 40 s).
    pub grace: Duration,
    /// How often nodes are checked (upstream: 5 s).
    pub period: Duration,
}

impl Default for LifecycleConfig {
    fn default() -> Self {
        LifecycleConfig { grace: Duration::from_secs(40), period: Duration::from_secs(5) }
    }
}

#[derive(Debug, Default, PartialEq)]
pub struct NodePlan {
    /// New conditions (all set to Unknown) when the node went silent.
    pub conditions: Option<Vec<NodeCondition>>,
    /// The node's taints as they should be, if they must change.
    pub taints: Option<Vec<Taint>>,
}

fn last_heartbeat(node: &Node, lease: Option<&Lease>) -> Option<DateTime<Utc>> {
    let from_lease = lease.and_then(|l| l.spec.as_ref()).and_then(|s| s.renew_time.as_ref()).map(|t| t.0);
    let from_status = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| c.last_heartbeat_time.as_ref())
        .map(|t| t.0);
    from_lease.max(from_status)
}

/// Decide a node's conditions and lifecycle taints at `now`.
pub fn plan_node(node: &Node, lease: Option<&Lease>, now: DateTime<Utc>, grace: Duration) -> NodePlan {
    let mut plan = NodePlan::default();
    let created = node.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
    let heartbeat = last_heartbeat(node, lease).unwrap_or(created);
    let silent = now.signed_duration_since(heartbeat).to_std().is_ok_and(|d| d > grace);
    let conditions = node.status.as_ref().and_then(|s| s.conditions.clone()).unwrap_or_default();
    let ready = conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.status.clone());
    if silent && ready.as_deref() != Some("Unknown") {
        let mut updated: Vec<NodeCondition> = conditions.clone();
        if !updated.iter().any(|c| c.type_ == "Ready") {
            updated.push(NodeCondition { type_: "Ready".into(), ..Default::default() });
        }
        for c in &mut updated {
            c.status = "Unknown".into();
            c.reason = Some("NodeStatusUnknown".into());
            c.message = Some("Kubelet stopped posting node status.".into());
            c.last_transition_time = Some(Time(now));
        }
        plan.conditions = Some(updated);
    }
    let state = if silent {
        Some(UNREACHABLE)
    } else {
        match ready.as_deref() {
            Some("True") => None,
            Some("Unknown") => Some(UNREACHABLE),
            _ => Some(NOT_READY),
        }
    };
    let current = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let managed = |k: &str| k == UNREACHABLE || k == NOT_READY || PRESSURE_TAINTS.iter().any(|(_, t)| *t == k);
    let mut desired: Vec<Taint> = current.iter().filter(|t| !managed(&t.key)).cloned().collect();
    // Keep timeAdded of a taint that is already there: eviction counts from it.
    let mut put = |key: &str, effect: &str| {
        let kept = current.iter().find(|t| t.key == key && t.effect == effect).cloned();
        desired.push(kept.unwrap_or(Taint { key: key.into(), effect: effect.into(), time_added: Some(Time(now)), value: None }));
    };
    if let Some(key) = state {
        for effect in ["NoSchedule", "NoExecute"] {
            put(key, effect);
        }
    }
    // TaintNodesByCondition: a node under pressure takes no new pods (the agent reports the conditions). A silent
    // node's conditions are stale, so only a reporting node's count.
    if !silent {
        for (cond, key) in PRESSURE_TAINTS {
            if conditions.iter().any(|c| c.type_ == cond && c.status == "True") {
                put(key, "NoSchedule");
            }
        }
    }
    if desired != current {
        plan.taints = Some(desired);
    }
    plan
}

/// Pods on a node with NoExecute taints that must go now, and the soonest later eviction (to look again then).
pub fn evictions(node: &Node, pods: &[&CachedPod], now: DateTime<Utc>) -> (Vec<String>, Option<Duration>) {
    let taints: Vec<Taint> =
        node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default().into_iter().filter(|t| t.effect == "NoExecute").collect();
    let mut now_out = Vec::new();
    let mut soonest: Option<Duration> = None;
    if taints.is_empty() {
        return (now_out, None);
    }
    for p in pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none()) {
        let tolerations = p.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
        // Untolerated: out now. Tolerated for N seconds: out N seconds after the taint was added. The shortest
        // of the pod's taints wins.
        let mut deadline: Option<DateTime<Utc>> = None;
        let mut untolerated = false;
        for t in &taints {
            let matching = tolerations.iter().find(|tol| {
                let key_ok = match tol.key.as_deref() {
                    None | Some("") => tol.operator.as_deref() == Some("Exists"),
                    Some(k) => k == t.key,
                };
                let effect_ok = tol.effect.as_deref().is_none_or(|e| e.is_empty() || e == t.effect);
                let value_ok = tol.operator.as_deref() == Some("Exists") || tol.value.as_deref().unwrap_or("") == t.value.as_deref().unwrap_or("");
                key_ok && effect_ok && value_ok
            });
            match matching {
                None => untolerated = true,
                Some(tol) => {
                    if let Some(secs) = tol.toleration_seconds {
                        let added = t.time_added.as_ref().map(|x| x.0).unwrap_or(now);
                        let d = crate::api::time::plus_seconds(added, secs.max(0));
                        deadline = Some(deadline.map_or(d, |cur| cur.min(d)));
                    }
                }
            }
        }
        match deadline {
            _ if untolerated => now_out.push(p.name_any()),
            Some(d) if d <= now => now_out.push(p.name_any()),
            Some(d) => {
                let left = (d - now).to_std().unwrap_or_default();
                soonest = Some(soonest.map_or(left, |s| s.min(left)));
            }
            None => {}
        }
    }
    (now_out, soonest)
}

async fn pass(client: &Client, nodes: &Store<Node>, leases: &Store<Lease>, pods: &Store<CachedPod>, config: &LifecycleConfig) {
    let now = Utc::now();
    let node_api: Api<Node> = Api::all(client.clone());
    let lease_list = leases.state();
    let all_pods = pods.state();
    for node in nodes.state() {
        let name = node.name_any();
        let lease = lease_list.iter().find(|l| l.namespace().as_deref() == Some("kube-node-lease") && l.name_any() == name);
        let plan = plan_node(&node, lease.map(|l| l.as_ref()), now, config.grace);
        if let Some(conditions) = &plan.conditions {
            tracing::warn!(node = %name, "node stopped posting status; marking it Unknown");
            let patch = json!({"status": {"conditions": conditions}});
            if let Err(e) = node_api.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&patch)).await {
                tracing::warn!(node = %name, error = %e, "could not update node conditions");
            }
        }
        let node = if let Some(taints) = &plan.taints {
            let patch = json!({"spec": {"taints": taints}});
            match node_api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
                Ok(n) => Arc::new(n),
                Err(e) => {
                    tracing::warn!(node = %name, error = %e, "could not update node taints");
                    continue;
                }
            }
        } else {
            node
        };
        let on_node: Vec<&CachedPod> = all_pods
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(name.as_str()))
            .collect();
        let (evict, _) = evictions(&node, &on_node, now);
        for pod in evict {
            let Some(p) = on_node.iter().find(|p| p.name_any() == pod) else { continue };
            let api: Api<Pod> = Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
            match api.delete(&pod, &DeleteParams::default()).await {
                Ok(_) => tracing::info!(node = %name, pod = %pod, "evicted pod from a tainted node"),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => tracing::warn!(pod = %pod, error = %e, "eviction failed; retrying next pass"),
            }
        }
    }
}

/// Check every node each period until `shutdown` resolves, reading the process's shared node, Lease and pod
/// informers.
pub async fn run(informers: Informers, config: LifecycleConfig, shutdown: impl Future<Output = ()> + Send + 'static) {
    let client = informers.client().clone();
    let (node_informer, lease_informer, pod_informer) = (informers.get::<Node>(), informers.get::<Lease>(), informers.get::<CachedPod>());
    tokio::join!(node_informer.ready(), lease_informer.ready(), pod_informer.ready());
    let (nodes, leases, pods) = (node_informer.store(), lease_informer.store(), pod_informer.store());
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(config.period) => pass(&client, &nodes, &leases, &pods, &config).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn node(ready: &str, heartbeat: i64, taints: serde_json::Value) -> Node {
        serde_json::from_value(json!({"metadata": {"name": "n", "creationTimestamp": t(0)},
            "spec": {"taints": taints},
            "status": {"conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": t(heartbeat)}]}}))
        .unwrap()
    }

    fn lease(renew: i64) -> Lease {
        serde_json::from_value(json!({"metadata": {"name": "n", "namespace": "kube-node-lease"}, "spec": {"renewTime": t(renew).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)}})).unwrap()
    }

    #[test]
    fn silent_node_becomes_unknown_and_unreachable() {
        let n = node("True", 0, json!([]));
        let p = plan_node(&n, Some(&lease(10)), t(60), Duration::from_secs(40));
        assert_eq!(p.conditions.as_ref().unwrap()[0].status, "Unknown");
        let taints = p.taints.unwrap();
        assert_eq!(taints.iter().map(|t| (t.key.as_str(), t.effect.as_str())).collect::<Vec<_>>(), [(UNREACHABLE, "NoSchedule"), (UNREACHABLE, "NoExecute")]);
        // The lease keeps it alive.
        assert_eq!(plan_node(&n, Some(&lease(30)), t(60), Duration::from_secs(40)), NodePlan::default());
    }

    #[test]
    fn node_that_returns_loses_the_taints() {
        let n = node("True", 100, json!([{"key": UNREACHABLE, "effect": "NoExecute"}, {"key": "other", "effect": "NoSchedule"}]));
        let p = plan_node(&n, None, t(101), Duration::from_secs(40));
        assert_eq!(p.taints.unwrap().iter().map(|t| t.key.as_str()).collect::<Vec<_>>(), ["other"]);
        let not_ready = node("False", 100, json!([]));
        let p = plan_node(&not_ready, None, t(101), Duration::from_secs(40));
        assert_eq!(p.taints.unwrap()[0].key, NOT_READY);
    }

    #[test]
    fn pressure_conditions_taint_no_schedule_and_clear() {
        let mut n = node("True", 100, json!([]));
        n.status.as_mut().unwrap().conditions.as_mut().unwrap().push(NodeCondition { type_: "MemoryPressure".into(), status: "True".into(), ..Default::default() });
        let p = plan_node(&n, Some(&lease(100)), t(105), Duration::from_secs(40));
        let taints = p.taints.unwrap();
        assert_eq!(taints.iter().map(|t| (t.key.as_str(), t.effect.as_str())).collect::<Vec<_>>(), [("node.kubernetes.io/memory-pressure", "NoSchedule")]);
        let calm = node("True", 100, serde_json::to_value(&taints).unwrap());
        let p = plan_node(&calm, Some(&lease(100)), t(105), Duration::from_secs(40));
        assert_eq!(p.taints.unwrap(), vec![]);
    }

    #[test]
    fn eviction_respects_toleration_seconds() {
        let n = node("Unknown", 0, json!([{"key": UNREACHABLE, "effect": "NoExecute", "timeAdded": t(100)}]));
        let pod = |name: &str, tol: serde_json::Value| -> CachedPod {
            serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"containers": [], "tolerations": tol}})).unwrap()
        };
        let none = pod("none", json!([]));
        let short = pod("short", json!([{"key": UNREACHABLE, "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 30}]));
        let forever = pod("forever", json!([{"operator": "Exists"}]));
        let (now, later) = evictions(&n, &[&none, &short, &forever], t(110));
        assert_eq!(now, ["none"]);
        assert_eq!(later, Some(Duration::from_secs(20)));
        let (now, _) = evictions(&n, &[&none, &short, &forever], t(131));
        assert_eq!(now, ["none", "short"]);
    }
}
