//! The disruption controller, as upstream's: keeps each PodDisruptionBudget's status — the pods it expects, how
//! many are healthy (Ready, not being deleted, not just evicted), how many must stay healthy, and so how many
//! disruptions the eviction API may allow now — and forgets evicted pods in `disruptedPods` once they are gone (or
//! after two minutes, when the eviction did not lead to a deletion).
//!
//! `minAvailable` as a number needs no more than the pods; a percentage, and `maxUnavailable`, count against the
//! replicas their controllers want (a ReplicaSet's, the Deployment's above it, a StatefulSet's), as upstream does.
//!
//! [`plan`] decides from the budget, its pods, the controllers' scales and the time (pure); [`reconcile`] writes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::cached_pod::CachedPod;
use super::replicaset::is_ready;
use super::{error_policy, object_name, ControllerError, ControllersConfig, Informers};
use crate::api::selectors::LabelSelector;

/// How long an eviction counts as a disruption before the pod has to be gone (upstream's DeletionTimeout).
const DELETION_TIMEOUT: chrono::Duration = chrono::Duration::minutes(2);

pub struct Context {
    client: Client,
    pods: Store<CachedPod>,
    replicasets: Store<ReplicaSet>,
    deployments: Store<Deployment>,
    statefulsets: Store<StatefulSet>,
    config: ControllersConfig,
}

/// The pods a budget selects (in its namespace). No selector: none; `{}`: all.
fn selected<'a>(pdb: &PodDisruptionBudget, pods: &[&'a CachedPod]) -> Vec<&'a CachedPod> {
    let Some(sel) = pdb.spec.as_ref().and_then(|s| s.selector.as_ref()) else { return Vec::new() };
    let Ok(sel) = serde_json::to_value(sel).map_err(|e| e.to_string()).and_then(|v| LabelSelector::from_json(&v).map_err(|e| e.to_string())) else {
        return Vec::new();
    };
    pods.iter()
        .copied()
        .filter(|p| {
            let labels: serde_json::Map<String, serde_json::Value> = p.labels().iter().map(|(k, v)| (k.clone(), json!(v))).collect();
            sel.matches_labels(Some(&labels))
        })
        .collect()
}

/// A value of `minAvailable`/`maxUnavailable` against `total`, rounding up as upstream.
fn scaled(v: &IntOrString, total: i32) -> Result<i32, String> {
    match v {
        IntOrString::Int(n) => Ok(*n),
        IntOrString::String(s) => {
            let p: i64 = s.strip_suffix('%').and_then(|p| p.parse().ok()).ok_or_else(|| format!("invalid value {s:?}"))?;
            Ok(((p * i64::from(total) + 99) / 100) as i32)
        }
    }
}

/// Decide the status. `scales`: replicas wanted by the controller with that uid (a Deployment's for its
/// ReplicaSets); pods with no known controller make a percentage or maxUnavailable budget fail, as upstream.
pub fn plan(pdb: &PodDisruptionBudget, pods: &[&CachedPod], scales: &HashMap<String, i32>, now: DateTime<Utc>) -> PodDisruptionBudgetStatus {
    let spec = pdb.spec.clone().unwrap_or_default();
    let old = pdb.status.clone().unwrap_or_default();
    let pods = selected(pdb, pods);
    // Evictions not seen through yet: the pod still exists, not being deleted, evicted less than 2 minutes ago.
    let live: HashMap<String, &CachedPod> = pods.iter().map(|p| (p.name_any(), *p)).collect();
    let disrupted: BTreeMap<String, Time> = old
        .disrupted_pods
        .clone()
        .unwrap_or_default()
        .into_iter()
        .filter(|(name, at)| live.get(name).is_some_and(|p| p.metadata.deletion_timestamp.is_none()) && now - at.0 < DELETION_TIMEOUT)
        .collect();
    let healthy = pods.iter().filter(|p| p.metadata.deletion_timestamp.is_none() && is_ready(p) && !disrupted.contains_key(&p.name_any())).count() as i32;

    let counts: Result<(i32, i32), String> = (|| {
        if let (Some(IntOrString::Int(min)), None) = (&spec.min_available, &spec.max_unavailable) {
            return Ok((pods.len() as i32, *min));
        }
        // Percentages and maxUnavailable: the replicas the pods' controllers want.
        let mut expected = 0;
        let mut seen = HashSet::new();
        for p in &pods {
            let owner = p.owner_references().iter().find(|o| o.controller == Some(true));
            let Some(owner) = owner else { return Err(format!("found no controllers for pod {:?}", p.name_any())) };
            let Some(replicas) = scales.get(&owner.uid) else {
                return Err(format!("found no controller for pod {:?} ({} {})", p.name_any(), owner.kind, owner.name));
            };
            if seen.insert(owner.uid.clone()) {
                expected += replicas;
            }
        }
        let desired = match (&spec.min_available, &spec.max_unavailable) {
            (Some(min), _) => scaled(min, expected)?,
            (None, Some(max)) => (expected - scaled(max, expected)?).max(0),
            (None, None) => expected,
        };
        Ok((expected, desired))
    })();
    let (expected, desired, allowed, failure) = match counts {
        Ok((expected, desired)) => (expected, desired, (healthy - desired).max(0), None),
        Err(e) => (0, 0, 0, Some(e)),
    };
    let (status, reason, message) = match (&failure, allowed > 0) {
        (Some(e), _) => ("False", "SyncFailed", e.clone()),
        (None, true) => ("True", "SufficientPods", String::new()),
        (None, false) => ("False", "InsufficientPods", String::new()),
    };
    let previous = old.conditions.as_ref().and_then(|c| c.iter().find(|c| c.type_ == "DisruptionAllowed"));
    let condition = Condition {
        type_: "DisruptionAllowed".into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: pdb.metadata.generation,
        last_transition_time: match previous {
            Some(p) if p.status == status => p.last_transition_time.clone(),
            _ => Time(now),
        },
    };
    PodDisruptionBudgetStatus {
        observed_generation: pdb.metadata.generation,
        disrupted_pods: (!disrupted.is_empty()).then_some(disrupted),
        disruptions_allowed: allowed,
        current_healthy: healthy,
        desired_healthy: desired,
        expected_pods: expected,
        conditions: Some(vec![condition]),
    }
}

/// Replicas wanted per controller uid: ReplicaSets (the Deployment's count for those a Deployment controls) and
/// StatefulSets.
fn scales(ctx: &Context, ns: &str) -> HashMap<String, i32> {
    let mut out = HashMap::new();
    let deployments: HashMap<String, i32> = ctx
        .deployments
        .state()
        .iter()
        .filter(|d| d.namespace().as_deref() == Some(ns))
        .map(|d| (d.uid().unwrap_or_default(), d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)))
        .collect();
    for rs in ctx.replicasets.state().iter().filter(|r| r.namespace().as_deref() == Some(ns)) {
        let by_deployment = rs.owner_references().iter().find(|o| o.controller == Some(true) && o.kind == "Deployment").and_then(|o| deployments.get(&o.uid));
        let own = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
        out.insert(rs.uid().unwrap_or_default(), by_deployment.copied().unwrap_or(own));
    }
    for s in ctx.statefulsets.state().iter().filter(|s| s.namespace().as_deref() == Some(ns)) {
        out.insert(s.uid().unwrap_or_default(), s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1));
    }
    out
}

pub async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let ns = pdb.namespace().unwrap_or_default();
    let name = object_name(pdb.as_ref());
    let all = ctx.pods.state();
    let pods: Vec<&CachedPod> = all.iter().map(|p| p.as_ref()).filter(|p| p.namespace().as_deref() == Some(&ns)).collect();
    let status = plan(&pdb, &pods, &scales(&ctx, &ns), Utc::now());
    // Only a real change is written (the transition time is kept when nothing changed).
    if pdb.status.as_ref() != Some(&status) {
        let api: Api<PodDisruptionBudget> = Api::namespaced(ctx.client.clone(), &ns);
        match api.patch_status(&pdb.name_any(), &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await {
            Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404, .. })) => {}
            Err(e) => return Err(ControllerError::Api { object: name, source: Box::new(e) }),
        }
    }
    // Evictions pending: look again when the oldest times out.
    let pending = status.disrupted_pods.as_ref().is_some_and(|d| !d.is_empty());
    Ok(Action::requeue(if pending { Duration::from_secs(15) } else { ctx.config.resync }))
}

/// Run the controller until `shutdown` resolves, on the process's shared informers.
pub async fn run(informers: Informers, config: ControllersConfig, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let (pods, rs, deploy, sts) =
        (informers.get::<CachedPod>(), informers.get::<ReplicaSet>(), informers.get::<Deployment>(), informers.get::<StatefulSet>());
    tokio::join!(pods.ready(), rs.ready(), deploy.ready(), sts.ready());
    let ctx = Arc::new(Context {
        client: informers.client().clone(),
        pods: pods.store(),
        replicasets: rs.store(),
        deployments: deploy.store(),
        statefulsets: sts.store(),
        config,
    });
    let controller = Controller::new(Api::<PodDisruptionBudget>::all(ctx.client.clone()), kube::runtime::watcher::Config::default());
    // A pod change (or a scale change) concerns the budgets of its namespace.
    let in_namespace = super::all_in_namespace(controller.store());
    let (for_pods, for_rs, for_sts) = (in_namespace.clone(), in_namespace.clone(), in_namespace);
    controller
        .watches_stream(pods.touched(), move |p: CachedPod| for_pods(p.namespace()))
        .watches_stream(rs.touched(), move |r: ReplicaSet| for_rs(r.namespace()))
        .watches_stream(sts.touched(), move |s: StatefulSet| for_sts(s.namespace()))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn pdb(spec: Value, status: Value) -> PodDisruptionBudget {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default", "generation": 2},
                                      "spec": spec, "status": status}))
        .unwrap()
    }

    fn pod(name: &str, ready: bool, owner: Option<&str>) -> CachedPod {
        let owners = owner.map(|uid| json!([{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-rs", "uid": uid, "controller": true}]));
        CachedPod::from(
            serde_json::from_value::<k8s_openapi::api::core::v1::Pod>(json!({
                "metadata": {"name": name, "namespace": "default", "labels": {"app": "web"}, "ownerReferences": owners},
                "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
            }))
            .unwrap(),
        )
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-12-07T12:00:00Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn min_available_as_a_number_counts_healthy_pods() {
        let b = pdb(json!({"minAvailable": 2, "selector": {"matchLabels": {"app": "web"}}}), json!({}));
        let pods = [pod("a", true, None), pod("b", true, None), pod("c", false, None)];
        let refs: Vec<&CachedPod> = pods.iter().collect();
        let s = plan(&b, &refs, &HashMap::new(), now());
        assert_eq!((s.expected_pods, s.current_healthy, s.desired_healthy, s.disruptions_allowed), (3, 2, 2, 0));
        assert_eq!(s.observed_generation, Some(2));
        let c = &s.conditions.as_ref().unwrap()[0];
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("False", "InsufficientPods"));
        let pods = [pod("a", true, None), pod("b", true, None), pod("c", true, None)];
        let refs: Vec<&CachedPod> = pods.iter().collect();
        let s = plan(&b, &refs, &HashMap::new(), now());
        assert_eq!(s.disruptions_allowed, 1);
        assert_eq!(s.conditions.as_ref().unwrap()[0].reason, "SufficientPods");
    }

    #[test]
    fn max_unavailable_and_percentages_count_the_controllers_replicas() {
        let pods = [pod("a", true, Some("rs1")), pod("b", true, Some("rs1"))];
        let refs: Vec<&CachedPod> = pods.iter().collect();
        let scales: HashMap<String, i32> = [("rs1".to_string(), 3)].into();
        let b = pdb(json!({"maxUnavailable": 1, "selector": {"matchLabels": {"app": "web"}}}), json!({}));
        let s = plan(&b, &refs, &scales, now());
        assert_eq!((s.expected_pods, s.desired_healthy, s.current_healthy, s.disruptions_allowed), (3, 2, 2, 0));
        let b = pdb(json!({"minAvailable": "50%", "selector": {"matchLabels": {"app": "web"}}}), json!({}));
        let s = plan(&b, &refs, &scales, now());
        assert_eq!((s.expected_pods, s.desired_healthy, s.disruptions_allowed), (3, 2, 0), "50% of 3 rounds up to 2");
        // A pod without a controller: the budget cannot be computed.
        let orphan = [pod("x", true, None)];
        let s = plan(&b, &[&orphan[0]], &scales, now());
        assert_eq!(s.disruptions_allowed, 0);
        assert_eq!(s.conditions.as_ref().unwrap()[0].reason, "SyncFailed");
    }

    #[test]
    fn evicted_pods_do_not_count_until_gone_or_timed_out() {
        let spec = json!({"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}});
        let pods = [pod("a", true, None), pod("b", true, None)];
        let refs: Vec<&CachedPod> = pods.iter().collect();
        let b = pdb(spec.clone(), json!({"disruptedPods": {"a": "2026-12-07T11:59:30Z", "gone": "2026-12-07T11:59:30Z"}}));
        let s = plan(&b, &refs, &HashMap::new(), now());
        assert_eq!(s.current_healthy, 1);
        assert_eq!(s.disruptions_allowed, 0);
        assert_eq!(s.disrupted_pods.as_ref().unwrap().keys().collect::<Vec<_>>(), ["a"]);
        let b = pdb(spec, json!({"disruptedPods": {"a": "2026-12-07T11:50:00Z"}}));
        let s = plan(&b, &refs, &HashMap::new(), now());
        assert_eq!((s.current_healthy, s.disruptions_allowed), (2, 1));
        assert!(s.disrupted_pods.is_none());
    }

    #[test]
    fn no_selector_selects_nothing_and_empty_selects_all() {
        let pods = [pod("a", true, None)];
        let refs: Vec<&CachedPod> = pods.iter().collect();
        assert_eq!(plan(&pdb(json!({"minAvailable": 0}), json!({})), &refs, &HashMap::new(), now()).expected_pods, 0);
        assert_eq!(plan(&pdb(json!({"minAvailable": 0, "selector": {}}), json!({})), &refs, &HashMap::new(), now()).expected_pods, 1);
    }
}
