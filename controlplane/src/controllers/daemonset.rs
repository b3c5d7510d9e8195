//! The DaemonSet controller: one pod on every node the template may run on (node selector, affinity, taints,
//! cordon), placed as upstream does it: the pod gets required node affinity for its node and the DaemonSet
//! tolerations, and the scheduler binds it. RollingUpdate replaces outdated pods `maxUnavailable` at a time.
//!
//! [`plan`] decides from the DaemonSet, the nodes and its pods (pure); [`reconcile`] acts.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{Node, Pod, Toleration};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::expectations::Expectations;
use super::replicaset::{is_active, is_ready};
use super::{controlled_by, delete_owned_pods, error_policy, object_name, owned_pod, ControllerError, ControllersConfig};
use crate::scheduler::plugins::node_allows;
use crate::controllers::cached_pod::CachedPod;

pub const HASH_LABEL: &str = "controller-revision-hash";

pub struct Context {
    client: Client,
    pods: Store<CachedPod>,
    nodes: Store<Node>,
    expectations: Expectations,
    config: ControllersConfig,
}

impl Context {
    pub fn new(client: Client, pods: Store<CachedPod>, nodes: Store<Node>, config: ControllersConfig) -> Self {
        Context { client, pods, nodes, expectations: Expectations::new(config.expectations_timeout), config }
    }
}

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Nodes that need a pod.
    pub create_on: Vec<String>,
    pub delete: Vec<String>,
    pub status: DaemonSetStatus,
}

fn fnv(s: &[u8]) -> u32 {
    s.iter().fold(0x811c9dc5u32, |h, b| (h ^ *b as u32).wrapping_mul(0x01000193))
}

pub fn template_hash(ds: &DaemonSet) -> String {
    let mut t = ds.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        l.remove(HASH_LABEL);
    }
    format!("{:08x}", fnv(&serde_json::to_vec(&t).unwrap_or_default()))
}

/// The tolerations upstream adds to every DaemonSet pod.
fn daemon_tolerations() -> Vec<Toleration> {
    let t = |key: &str, effect: &str| Toleration { key: Some(key.into()), operator: Some("Exists".into()), effect: Some(effect.into()), ..Default::default() };
    vec![
        t("node.kubernetes.io/not-ready", "NoExecute"),
        t("node.kubernetes.io/unreachable", "NoExecute"),
        t("node.kubernetes.io/disk-pressure", "NoSchedule"),
        t("node.kubernetes.io/memory-pressure", "NoSchedule"),
        t("node.kubernetes.io/pid-pressure", "NoSchedule"),
        t("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
}

/// The template as a pod with the DaemonSet's tolerations and hash label, for no node in particular.
fn base_pod(ds: &DaemonSet) -> Result<Pod, ControllerError> {
    let mut pod = owned_pod(ds, ds.spec.as_ref().map(|s| s.template.clone()))?;
    pod.metadata.labels.get_or_insert_with(Default::default).insert(HASH_LABEL.into(), template_hash(ds));
    let spec = pod.spec.get_or_insert_with(Default::default);
    spec.tolerations.get_or_insert_with(Vec::new).extend(daemon_tolerations());
    Ok(pod)
}

/// The pod for `node`: the base pod with required affinity to that node only (its own node affinity, if any,
/// was already checked when the node was found eligible).
pub fn pod_for(ds: &DaemonSet, node: &str) -> Result<Pod, ControllerError> {
    let mut pod = base_pod(ds)?;
    let spec = pod.spec.get_or_insert_with(Default::default);
    let mut affinity = spec.affinity.take().unwrap_or_default();
    affinity.node_affinity = Some(
        serde_json::from_value(json!({"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}]}}))
        .map_err(|e| ControllerError::Invalid { object: object_name(ds), reason: e.to_string() })?,
    );
    spec.affinity = Some(affinity);
    Ok(pod)
}

/// The node a DaemonSet pod is for: where it runs, else the node its affinity names.
fn target_node(p: &CachedPod) -> Option<String> {
    if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty()) {
        return Some(n);
    }
    let terms = p.spec.as_ref()?.affinity.as_ref()?.node_affinity.as_ref()?.required_during_scheduling_ignored_during_execution.as_ref()?;
    terms.node_selector_terms.iter().flat_map(|t| t.match_fields.iter().flatten()).find(|f| f.key == "metadata.name").and_then(|f| f.values.as_ref()?.first().cloned())
}

pub fn plan(ds: &DaemonSet, nodes: &[&Node], owned: &[&CachedPod]) -> Result<Plan, ControllerError> {
    let hash = template_hash(ds);
    let probe = CachedPod::from(base_pod(ds)?);
    let eligible: Vec<String> = nodes.iter().filter(|n| node_allows(&probe, n)).map(|n| n.name_any()).collect();
    let mut by_node: BTreeMap<String, Vec<&CachedPod>> = BTreeMap::new();
    let mut plan = Plan::default();
    for p in owned.iter().copied().filter(|p| is_active(p)) {
        match target_node(p) {
            Some(n) => by_node.entry(n).or_default().push(p),
            None => plan.delete.push(p.name_any()),
        }
    }
    let deleting = ds.metadata.deletion_timestamp.is_some();
    let mut misscheduled = 0;
    for (node, pods) in &by_node {
        if !eligible.contains(node) {
            misscheduled += 1;
            plan.delete.extend(pods.iter().map(|p| p.name_any()));
        } else if pods.len() > 1 {
            plan.delete.extend(pods[1..].iter().map(|p| p.name_any()));
        }
    }
    if !deleting {
        plan.create_on = eligible.iter().filter(|n| !by_node.contains_key(*n)).cloned().collect();
    }
    // Rolling update: replace outdated pods while at most maxUnavailable are unavailable.
    let desired = eligible.len() as i32;
    let on_eligible: Vec<&CachedPod> = eligible.iter().filter_map(|n| by_node.get(n).and_then(|v| v.first().copied())).collect();
    let updated: Vec<&&CachedPod> = on_eligible.iter().filter(|p| p.labels().get(HASH_LABEL) == Some(&hash)).collect();
    let ready = on_eligible.iter().filter(|p| is_ready(p)).count() as i32;
    let rolling = ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref()).and_then(|u| u.type_.as_deref()).unwrap_or("RollingUpdate") == "RollingUpdate";
    if rolling && !deleting {
        let max_unavailable = match ds.spec.as_ref().and_then(|s| s.update_strategy.as_ref()).and_then(|u| u.rolling_update.as_ref()).and_then(|r| r.max_unavailable.as_ref()) {
            Some(IntOrString::Int(n)) => *n,
            Some(IntOrString::String(p)) => p.trim_end_matches('%').parse::<i32>().map(|p| (p * desired / 100).max(1)).unwrap_or(1),
            None => 1,
        };
        let unavailable = desired - ready;
        let mut budget = (max_unavailable - unavailable).max(0);
        // Outdated pods that are not ready anyway go first; ready ones within the budget.
        let mut outdated: Vec<&&CachedPod> = on_eligible.iter().filter(|p| p.labels().get(HASH_LABEL) != Some(&hash)).collect();
        outdated.sort_by_key(|p| is_ready(p));
        for p in outdated {
            if !is_ready(p) {
                plan.delete.push(p.name_any());
            } else if budget > 0 {
                plan.delete.push(p.name_any());
                budget -= 1;
            }
        }
    }
    let mut seen = HashSet::new();
    plan.delete.retain(|n| seen.insert(n.clone()));
    plan.status = DaemonSetStatus {
        desired_number_scheduled: desired,
        current_number_scheduled: on_eligible.len() as i32,
        number_misscheduled: misscheduled,
        number_ready: ready,
        updated_number_scheduled: Some(updated.len() as i32),
        number_available: Some(ready),
        number_unavailable: Some((desired - ready).max(0)),
        observed_generation: ds.metadata.generation,
        collision_count: ds.status.as_ref().and_then(|s| s.collision_count),
        conditions: ds.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    Ok(plan)
}

pub async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let uid = ds.uid().unwrap_or_default();
    let ns = ds.namespace().unwrap_or_default();
    let name = object_name(ds.as_ref());
    let all = ctx.pods.state();
    let owned: Vec<&CachedPod> = all.iter().map(|p| p.as_ref()).filter(|p| p.namespace().as_deref() == Some(&ns) && controlled_by(*p, &uid)).collect();
    let observed: HashSet<String> = owned.iter().map(|p| p.name_any()).collect();
    if !ctx.expectations.satisfied(&uid, &observed) {
        return Ok(Action::requeue(std::time::Duration::from_millis(500)));
    }
    let nodes = ctx.nodes.state();
    let node_refs: Vec<&Node> = nodes.iter().map(|n| n.as_ref()).collect();
    let plan = plan(&ds, &node_refs, &owned)?;
    let err = |e| ControllerError::Api { object: name.clone(), source: Box::new(e) };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    for node in &plan.create_on {
        let created = pods.create(&PostParams::default(), &pod_for(&ds, node)?).await.map_err(err)?;
        ctx.expectations.expect_add(&uid, created.name_any());
    }
    delete_owned_pods(&pods, &plan.delete, &ctx.expectations, &uid, &name).await?;
    if ds.status.as_ref() != Some(&plan.status) {
        let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
        match api.patch_status(&ds.name_any(), &PatchParams::default(), &Patch::Merge(&json!({"status": plan.status}))).await {
            Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404, .. })) => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(Action::requeue(ctx.config.resync))
}

pub fn run(
    daemonsets: Api<DaemonSet>,
    ctx: Arc<Context>,
    pod_events: impl futures::Stream<Item = Result<CachedPod, kube::runtime::watcher::Error>> + Send + 'static,
    node_events: impl futures::Stream<Item = Result<Node, kube::runtime::watcher::Error>> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    let controller = Controller::new(daemonsets, kube::runtime::watcher::Config::default());
    let store = controller.store();
    // Any node change may add or remove a node for every DaemonSet.
    controller
        .owns_stream(pod_events)
        .watches_stream(node_events, move |_node: Node| store.state().iter().map(|d| ObjectRef::from_obj(d.as_ref())).collect::<Vec<_>>())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(node_selector: serde_json::Value) -> DaemonSet {
        serde_json::from_value(json!({"metadata": {"name": "agent", "namespace": "kube-system", "uid": "ds-uid", "generation": 1},
            "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {"metadata": {"labels": {"app": "agent"}},
                "spec": {"nodeSelector": node_selector, "containers": [{"name": "c", "image": "x:1"}]}}}}))
        .unwrap()
    }

    fn node(name: &str, labels: serde_json::Value, taint: bool) -> Node {
        let mut n = json!({"metadata": {"name": name, "labels": labels}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        if taint {
            n["spec"] = json!({"taints": [{"key": "dedicated", "value": "x", "effect": "NoSchedule"}]});
        }
        serde_json::from_value(n).unwrap()
    }

    fn pod_on(ds: &DaemonSet, node: &str, name: &str, ready: bool) -> CachedPod {
        let mut p = CachedPod::from(pod_for(ds, node).unwrap());
        p.metadata.name = Some(name.into());
        p.spec.as_mut().unwrap().node_name = Some(node.into());
        p.status = Some(serde_json::from_value(json!({"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]})).unwrap());
        p
    }

    #[test]
    fn one_pod_per_eligible_node() {
        let d = ds(json!({"role": "worker"}));
        let nodes = [node("a", json!({"role": "worker"}), false), node("b", json!({"role": "worker"}), true), node("c", json!({}), false)];
        let refs: Vec<&Node> = nodes.iter().collect();
        let p = plan(&d, &refs, &[]).unwrap();
        assert_eq!(p.create_on, ["a"], "b is tainted, c does not match the selector");
        let on_c = pod_on(&d, "c", "stray", true);
        let on_a = pod_on(&d, "a", "good", true);
        let dup = pod_on(&d, "a", "dup", true);
        let p = plan(&d, &refs, &[&on_a, &dup, &on_c]).unwrap();
        assert!(p.create_on.is_empty());
        assert_eq!(p.delete, ["dup", "stray"]);
        assert_eq!(p.status.number_misscheduled, 1);
        assert_eq!(p.status.desired_number_scheduled, 1);
    }

    #[test]
    fn pods_tolerate_cordon_and_not_ready() {
        let d = ds(json!({}));
        let mut cordoned = node("a", json!({}), false);
        cordoned.spec = Some(serde_json::from_value(json!({"unschedulable": true})).unwrap());
        let not_ready: Node = serde_json::from_value(json!({"metadata": {"name": "b"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}})).unwrap();
        let p = plan(&d, &[&cordoned, &not_ready], &[]).unwrap();
        // DaemonSet pods tolerate cordon, but like upstream only the NoExecute not-ready taint, not the
        // NoSchedule one a not-ready node gets.
        assert_eq!(p.create_on, ["a"]);
        let pod = pod_for(&d, "a").unwrap();
        let fields = &pod.spec.unwrap().affinity.unwrap().node_affinity.unwrap().required_during_scheduling_ignored_during_execution.unwrap().node_selector_terms[0];
        assert_eq!(fields.match_fields.as_ref().unwrap()[0].values.as_ref().unwrap()[0], "a");
    }

    #[test]
    fn rolling_update_one_at_a_time() {
        let old = ds(json!({}));
        let mut new = old.clone();
        new.spec.as_mut().unwrap().template.spec.as_mut().unwrap().containers[0].image = Some("x:2".into());
        let nodes = [node("a", json!({}), false), node("b", json!({}), false)];
        let refs: Vec<&Node> = nodes.iter().collect();
        let (pa, pb) = (pod_on(&old, "a", "pa", true), pod_on(&old, "b", "pb", true));
        let p = plan(&new, &refs, &[&pa, &pb]).unwrap();
        assert_eq!(p.delete.len(), 1, "maxUnavailable 1");
        assert_eq!(p.status.updated_number_scheduled, Some(0));
    }
}
