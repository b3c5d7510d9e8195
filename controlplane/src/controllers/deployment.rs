//! The Deployment controller: one ReplicaSet per pod template (named by the template's hash), rolled out with
//! the RollingUpdate (maxSurge / maxUnavailable) or Recreate strategy, revision history for `kubectl rollout
//! undo`, and the status fields `kubectl rollout status` reads.
//!
//! [`plan`] decides from the Deployment and the ReplicaSets it controls (pure); [`reconcile`] acts.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};

use super::{controlled_by, error_policy, object_name, ControllerError, ControllersConfig};
use crate::controllers::cached_pod::CachedPod;

pub const HASH_LABEL: &str = "pod-template-hash";
pub const REVISION: &str = "deployment.kubernetes.io/revision";
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// The Deployment's annotations that are not copied to its ReplicaSets (upstream's `annotationsToSkip`; `kubectl
/// rollout undo` skips the same ones when it copies a ReplicaSet's annotations back).
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

pub struct Context {
    client: Client,
    replicasets: Store<ReplicaSet>,
    #[allow(dead_code)]
    pods: Store<CachedPod>,
    config: ControllersConfig,
}

impl Context {
    pub fn new(client: Client, replicasets: Store<ReplicaSet>, pods: Store<CachedPod>, config: ControllersConfig) -> Self {
        Context { client, replicasets, pods, config }
    }
}

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// A new ReplicaSet for the current template.
    pub create: Option<ReplicaSet>,
    /// (ReplicaSet name, replicas, revision annotation to set).
    pub scale: Vec<(String, i32, Option<String>)>,
    /// Annotations to set on the existing ReplicaSet of the current template: the Deployment's (such as
    /// `kubernetes.io/change-cause`, which `kubectl rollout history` shows) where they changed.
    pub annotate: Option<(String, BTreeMap<String, String>)>,
    /// The Deployment's own revision annotation, where it is not the current ReplicaSet's revision yet (`kubectl
    /// rollout undo` and `rollout history` read it).
    pub deployment_revision: Option<String>,
    /// Old, empty ReplicaSets beyond revisionHistoryLimit.
    pub delete: Vec<String>,
    pub status: DeploymentStatus,
}

/// FNV-1a (32 bit); written by hand, it is five lines.
fn fnv32a(data: &[u8]) -> u32 {
    data.iter().fold(0x811c9dc5u32, |h, b| (h ^ *b as u32).wrapping_mul(0x01000193))
}

/// A hash as upstream renders it (`rand.SafeEncodeString` of the decimal FNV-1a): each digit mapped to a letter or
/// digit that cannot spell words.
pub fn safe_hash(bytes: &[u8]) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    fnv32a(bytes).to_string().bytes().map(|c| ALPHABET[(c - b'0') as usize] as char).collect()
}

/// The template's hash as upstream renders it.
pub fn template_hash(d: &Deployment) -> String {
    let mut template = d.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    if let Some(labels) = template.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
        labels.remove(HASH_LABEL);
    }
    safe_hash(&serde_json::to_vec(&template).unwrap_or_default())
}

/// The Deployment's annotations that its ReplicaSets carry too.
fn copied_annotations(d: &Deployment) -> BTreeMap<String, String> {
    d.annotations().iter().filter(|(k, _)| !NOT_COPIED.contains(&k.as_str())).map(|(k, v)| (k.clone(), v.clone())).collect()
}

fn revision(rs: &ReplicaSet) -> i64 {
    rs.annotations().get(REVISION).and_then(|r| r.parse().ok()).unwrap_or(0)
}

fn spec_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

fn status_of(rs: &ReplicaSet) -> (i32, i32, i32) {
    let s = rs.status.as_ref();
    (
        s.map(|s| s.replicas).unwrap_or(0),
        s.and_then(|s| s.ready_replicas).unwrap_or(0),
        s.and_then(|s| s.available_replicas).unwrap_or(0),
    )
}

/// Resolve an int-or-percent against `total`, rounding up (surge) or down (unavailable), as upstream.
fn resolve(v: Option<&IntOrString>, total: i32, round_up: bool, default_percent: i32) -> i32 {
    let percent = |p: i32| {
        let x = (p as i64) * (total as i64);
        (if round_up { (x + 99) / 100 } else { x / 100 }) as i32
    };
    match v {
        Some(IntOrString::Int(n)) => *n,
        Some(IntOrString::String(s)) => s.trim_end_matches('%').parse().map(percent).unwrap_or(0),
        None => percent(default_percent),
    }
}

/// Carry a condition's lastTransitionTime over when its status does not change (else a reconcile would always
/// write a new status and wake itself up).
fn condition(old: Option<&DeploymentStatus>, type_: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    let prev = old.and_then(|s| s.conditions.as_ref()).and_then(|c| c.iter().find(|c| c.type_ == type_));
    let now = Time(chrono::Utc::now());
    match prev {
        Some(p) if p.status == status && p.reason.as_deref() == Some(reason) && p.message.as_deref() == Some(&message) => p.clone(),
        Some(p) if p.status == status => DeploymentCondition {
            reason: Some(reason.into()),
            message: Some(message),
            last_update_time: Some(now),
            ..p.clone()
        },
        _ => DeploymentCondition {
            type_: type_.into(),
            status: status.into(),
            reason: Some(reason.into()),
            message: Some(message),
            last_update_time: Some(now.clone()),
            last_transition_time: Some(now),
        },
    }
}

/// The ReplicaSet for the deployment's current template.
fn new_replicaset(d: &Deployment, hash: &str, replicas: i32, revision: i64, max_surge: i32) -> Result<ReplicaSet, ControllerError> {
    let spec = d.spec.as_ref().ok_or_else(|| ControllerError::Invalid { object: object_name(d), reason: "spec is missing".into() })?;
    let mut template = spec.template.clone();
    let meta = template.metadata.get_or_insert_with(Default::default);
    meta.labels.get_or_insert_with(Default::default).insert(HASH_LABEL.into(), hash.into());
    let mut selector = spec.selector.clone();
    selector.match_labels.get_or_insert_with(Default::default).insert(HASH_LABEL.into(), hash.into());
    let mut labels = meta.labels.clone().unwrap_or_default();
    labels.insert(HASH_LABEL.into(), hash.into());
    let desired = spec.replicas.unwrap_or(1);
    let mut annotations = copied_annotations(d);
    annotations.extend([
        (REVISION.to_string(), revision.to_string()),
        (DESIRED_REPLICAS.to_string(), desired.to_string()),
        (MAX_REPLICAS.to_string(), (desired + max_surge).to_string()),
    ]);
    Ok(ReplicaSet {
        metadata: ObjectMeta {
            name: Some(format!("{}-{hash}", d.name_any())),
            namespace: d.namespace(),
            labels: Some(labels),
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: d.name_any(),
                uid: d.uid().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: Some(ReplicaSetSpec {
            replicas: Some(replicas),
            min_ready_seconds: spec.min_ready_seconds,
            selector,
            template: Some(template),
        }),
        status: None,
    })
}

/// maxSurge resolved against the desired replicas (0 for Recreate).
fn max_surge_of(d: &Deployment, desired: i32) -> i32 {
    let strategy = d.spec.as_ref().and_then(|s| s.strategy.as_ref());
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return 0;
    }
    resolve(strategy.and_then(|s| s.rolling_update.as_ref()).and_then(|r| r.max_surge.as_ref()), desired, true, 25)
}

/// Decide the next step of the rollout.
pub fn plan(d: &Deployment, owned: &[&ReplicaSet]) -> Result<Plan, ControllerError> {
    let spec = d.spec.as_ref().ok_or_else(|| ControllerError::Invalid { object: object_name(d), reason: "spec is missing".into() })?;
    let desired = spec.replicas.unwrap_or(1).max(0);
    let hash = template_hash(d);
    let mut plan = Plan::default();
    let (mut new, mut old): (Vec<&ReplicaSet>, Vec<&ReplicaSet>) =
        owned.iter().copied().partition(|rs| rs.labels().get(HASH_LABEL) == Some(&hash));
    old.sort_by_key(|rs| revision(rs));
    let max_old_revision = old.iter().map(|rs| revision(rs)).max().unwrap_or(0);
    let new = new.pop();
    let recreate = spec.strategy.as_ref().and_then(|s| s.type_.as_deref()) == Some("Recreate");
    let ru = spec.strategy.as_ref().and_then(|s| s.rolling_update.as_ref());
    let max_surge = resolve(ru.and_then(|r| r.max_surge.as_ref()), desired, true, 25);
    let mut max_unavailable = resolve(ru.and_then(|r| r.max_unavailable.as_ref()), desired, false, 25);
    if max_surge == 0 && max_unavailable == 0 {
        max_unavailable = 1;
    }
    let paused = spec.paused.unwrap_or(false);
    let old_spec: i32 = old.iter().map(|rs| spec_replicas(rs)).sum();
    let old_pods: i32 = old.iter().map(|rs| status_of(rs).0).sum();
    let new_spec = new.map(spec_replicas).unwrap_or(0);

    if !paused && d.metadata.deletion_timestamp.is_none() {
        // The new ReplicaSet's size.
        let new_target = if recreate {
            if old_spec > 0 || old_pods > 0 {
                0
            } else {
                desired
            }
        } else if old.is_empty() || new_spec > desired {
            desired
        } else {
            let allowed = desired + max_surge - (old_spec + new_spec);
            (new_spec + allowed.max(0)).min(desired)
        };
        let new_revision = (max_old_revision + 1).to_string();
        match new {
            None => plan.create = Some(new_replicaset(d, &hash, new_target, max_old_revision + 1, max_surge_of(d, desired))?),
            Some(rs) => {
                // A template that came back (rollout undo) gets the newest revision again.
                let bump = (revision(rs) <= max_old_revision).then(|| new_revision.clone());
                if spec_replicas(rs) != new_target || bump.is_some() {
                    plan.scale.push((rs.name_any(), new_target, bump));
                }
                let changed: BTreeMap<String, String> =
                    copied_annotations(d).into_iter().filter(|(k, v)| rs.annotations().get(k) != Some(v)).collect();
                if !changed.is_empty() {
                    plan.annotate = Some((rs.name_any(), changed));
                }
            }
        }
        let current = if new.is_some_and(|rs| revision(rs) > max_old_revision) { revision(new.unwrap()).to_string() } else { new_revision };
        if d.annotations().get(REVISION) != Some(&current) {
            plan.deployment_revision = Some(current);
        }
        // The old ReplicaSets' sizes.
        if recreate {
            for rs in &old {
                if spec_replicas(rs) > 0 {
                    plan.scale.push((rs.name_any(), 0, None));
                }
            }
        } else if new_target <= new_spec {
            let new_available = new.map(|rs| status_of(rs).2).unwrap_or(0);
            let new_unavailable = (new_target - new_available).max(0);
            let min_available = desired - max_unavailable;
            let old_available: i32 = old.iter().map(|rs| status_of(rs).2).sum();
            // Old pods that are not available can always go; available ones only down to minAvailable.
            let mut budget = (old_spec + new_target - min_available - new_unavailable).max(0);
            let mut unhealthy_budget = old_spec - old_available;
            for rs in &old {
                let current = spec_replicas(rs);
                if current == 0 {
                    continue;
                }
                let (_, _, available) = status_of(rs);
                let unhealthy = (current - available).clamp(0, unhealthy_budget.max(0));
                let reduce = (unhealthy + budget).min(current);
                if reduce > 0 {
                    plan.scale.push((rs.name_any(), current - reduce, None));
                    unhealthy_budget -= unhealthy;
                    budget -= (reduce - unhealthy).max(0);
                }
            }
        }
        // History.
        let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
        let empty: Vec<&&ReplicaSet> = old.iter().filter(|rs| spec_replicas(rs) == 0 && status_of(rs).0 == 0).collect();
        if empty.len() > limit {
            plan.delete = empty[..empty.len() - limit].iter().map(|rs| rs.name_any()).collect();
        }
    }

    // Status.
    let all: Vec<&ReplicaSet> = owned.to_vec();
    let replicas: i32 = all.iter().map(|rs| status_of(rs).0).sum();
    let ready: i32 = all.iter().map(|rs| status_of(rs).1).sum();
    let available: i32 = all.iter().map(|rs| status_of(rs).2).sum();
    let updated = new.map(|rs| status_of(rs).0).unwrap_or(0);
    let old_status = d.status.as_ref();
    let available_cond = if available >= desired - max_unavailable {
        condition(old_status, "Available", "True", "MinimumReplicasAvailable", "Deployment has minimum availability.".into())
    } else {
        condition(old_status, "Available", "False", "MinimumReplicasUnavailable", "Deployment does not have minimum availability.".into())
    };
    let rs_name = new.map(|rs| rs.name_any()).unwrap_or_else(|| format!("{}-{hash}", d.name_any()));
    let complete = updated == desired && replicas == desired && available == desired && old_pods == 0;
    let progressing = if paused {
        condition(old_status, "Progressing", "Unknown", "DeploymentPaused", "Deployment is paused".into())
    } else if complete {
        condition(old_status, "Progressing", "True", "NewReplicaSetAvailable", format!("ReplicaSet \"{rs_name}\" has successfully progressed."))
    } else {
        condition(old_status, "Progressing", "True", "ReplicaSetUpdated", format!("ReplicaSet \"{rs_name}\" is progressing."))
    };
    plan.status = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(replicas),
        updated_replicas: Some(updated),
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        unavailable_replicas: Some((desired - available).max(0)),
        conditions: Some(vec![available_cond, progressing]),
        collision_count: old_status.and_then(|s| s.collision_count),
    };
    Ok(plan)
}

pub async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let uid = d.uid().unwrap_or_default();
    let ns = d.namespace().unwrap_or_default();
    let name = object_name(d.as_ref());
    let all = ctx.replicasets.state();
    let owned: Vec<&ReplicaSet> =
        all.iter().map(|r| r.as_ref()).filter(|r| r.namespace().as_deref() == Some(&ns) && controlled_by(*r, &uid)).collect();
    let plan = plan(&d, &owned)?;
    let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let err = |e| ControllerError::Api { object: name.clone(), source: Box::new(e) };
    let mut acted = false;
    if let Some(rs) = &plan.create {
        match api.create(&PostParams::default(), rs).await {
            Ok(_) => tracing::info!(deployment = %name, replicaset = %rs.name_any(), "created replica set"),
            // Already there (the cache is behind): the next reconcile sees it.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(err(e)),
        }
        acted = true;
    }
    let desired = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let max_surge = max_surge_of(&d, desired);
    for (rs, replicas, rev) in &plan.scale {
        let mut patch = serde_json::json!({"spec": {"replicas": replicas},
            "metadata": {"annotations": {DESIRED_REPLICAS: desired.to_string(), MAX_REPLICAS: (desired + max_surge).to_string()}}});
        if let Some(rev) = rev {
            patch["metadata"]["annotations"][REVISION] = serde_json::json!(rev);
            // The revisions this template had before, as upstream keeps them.
            let had = all.iter().find(|r| r.name_any() == *rs && r.namespace().as_deref() == Some(&ns)).map(|r| {
                let mut h: Vec<String> = r.annotations().get(REVISION_HISTORY).map(|h| h.split(',').map(str::to_string).collect()).unwrap_or_default();
                h.extend(r.annotations().get(REVISION).cloned());
                h.join(",")
            });
            if let Some(had) = had.filter(|h| !h.is_empty()) {
                patch["metadata"]["annotations"][REVISION_HISTORY] = serde_json::json!(had);
            }
        }
        api.patch(rs, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(err)?;
        tracing::info!(deployment = %name, replicaset = %rs, replicas, "scaled replica set");
        acted = true;
    }
    if let Some((rs, annotations)) = &plan.annotate {
        let patch = serde_json::json!({"metadata": {"annotations": annotations}});
        api.patch(rs, &PatchParams::default(), &Patch::Merge(&patch)).await.map_err(err)?;
        acted = true;
    }
    if let Some(rev) = &plan.deployment_revision {
        let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({"metadata": {"annotations": {REVISION: rev}}});
        match deployments.patch(&d.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404, .. })) => {}
            Err(e) => return Err(err(e)),
        }
    }
    for rs in &plan.delete {
        match api.delete(rs, &DeleteParams::default()).await {
            Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404, .. })) => {}
            Err(e) => return Err(err(e)),
        }
    }
    if d.status.as_ref() != Some(&plan.status) {
        let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({"status": plan.status});
        match deployments.patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404, .. })) => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(if acted { Action::requeue(std::time::Duration::from_millis(200)) } else { Action::requeue(ctx.config.resync) })
}

pub fn run(
    deployments: Api<Deployment>,
    ctx: Arc<Context>,
    rs_events: impl futures::Stream<Item = Result<ReplicaSet, kube::runtime::watcher::Error>> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    Controller::new(deployments, kube::runtime::watcher::Config::default())
        .owns_stream(rs_events)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::ReplicaSetStatus;

    fn deployment(replicas: i32, image: &str, strategy: serde_json::Value) -> Deployment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default", "uid": "d-uid", "generation": 1},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}}, "strategy": strategy,
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": image}]}}}
        }))
        .unwrap()
    }

    fn rs_for(d: &Deployment, spec: i32, status: i32, available: i32, rev: i64) -> ReplicaSet {
        let mut rs = new_replicaset(d, &template_hash(d), spec, rev, 1).unwrap();
        rs.status = Some(ReplicaSetStatus { replicas: status, ready_replicas: Some(available), available_replicas: Some(available), ..Default::default() });
        rs
    }

    const ROLLING: fn() -> serde_json::Value = || serde_json::json!({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});

    #[test]
    fn first_rollout_creates_a_full_replicaset() {
        let d = deployment(3, "x:1", ROLLING());
        let p = plan(&d, &[]).unwrap();
        let rs = p.create.unwrap();
        assert_eq!(rs.spec.as_ref().unwrap().replicas, Some(3));
        assert_eq!(rs.metadata.name.unwrap(), format!("web-{}", template_hash(&d)));
        assert_eq!(rs.spec.unwrap().selector.match_labels.unwrap()[HASH_LABEL], template_hash(&d));
        assert_eq!(rs.metadata.annotations.unwrap()[REVISION], "1");
    }

    #[test]
    fn hash_ignores_its_own_label_and_changes_with_the_template() {
        let a = deployment(1, "x:1", ROLLING());
        let b = deployment(1, "x:2", ROLLING());
        assert_ne!(template_hash(&a), template_hash(&b));
        assert!(template_hash(&a).chars().all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }

    #[test]
    fn rolling_update_surges_then_scales_down_as_pods_become_available() {
        let v1 = deployment(3, "x:1", ROLLING());
        let v2 = deployment(3, "x:2", ROLLING());
        let old = rs_for(&v1, 3, 3, 3, 1);
        // Step 1: a new ReplicaSet with one surge pod; nothing old goes yet (maxUnavailable 0).
        let p = plan(&v2, &[&old]).unwrap();
        assert_eq!(p.create.as_ref().unwrap().spec.as_ref().unwrap().replicas, Some(1));
        assert_eq!(p.create.as_ref().unwrap().metadata.annotations.as_ref().unwrap()[REVISION], "2");
        assert!(p.scale.is_empty());
        // Step 2: the new pod is not available: nothing moves.
        let new = rs_for(&v2, 1, 1, 0, 2);
        let p = plan(&v2, &[&old, &new]).unwrap();
        assert!(p.scale.is_empty(), "{:?}", p.scale);
        // Step 3: it is available: one old pod goes.
        let new = rs_for(&v2, 1, 1, 1, 2);
        let p = plan(&v2, &[&old, &new]).unwrap();
        assert_eq!(p.scale, [(old.name_any(), 2, None)]);
        // Step 4: old at 2: the new one grows by one.
        let old2 = rs_for(&v1, 2, 2, 2, 1);
        let p = plan(&v2, &[&old2, &new]).unwrap();
        assert_eq!(p.scale, [(new.name_any(), 2, None)]);
    }

    #[test]
    fn recreate_scales_old_to_zero_first() {
        let v1 = deployment(2, "x:1", serde_json::json!({"type": "Recreate"}));
        let v2 = deployment(2, "x:2", serde_json::json!({"type": "Recreate"}));
        let old = rs_for(&v1, 2, 2, 2, 1);
        let p = plan(&v2, &[&old]).unwrap();
        assert_eq!(p.create.as_ref().unwrap().spec.as_ref().unwrap().replicas, Some(0));
        assert_eq!(p.scale, [(old.name_any(), 0, None)]);
        let old_gone = rs_for(&v1, 0, 0, 0, 1);
        let new = rs_for(&v2, 0, 0, 0, 2);
        let p = plan(&v2, &[&old_gone, &new]).unwrap();
        assert_eq!(p.scale, [(new.name_any(), 2, None)]);
    }

    #[test]
    fn complete_rollout_status_and_history_limit() {
        let mut d = deployment(2, "x:9", ROLLING());
        d.spec.as_mut().unwrap().revision_history_limit = Some(1);
        let olds: Vec<ReplicaSet> = (1..=3).map(|i| rs_for(&deployment(2, &format!("x:{i}"), ROLLING()), 0, 0, 0, i)).collect();
        let new = rs_for(&d, 2, 2, 2, 4);
        let mut refs: Vec<&ReplicaSet> = olds.iter().collect();
        refs.push(&new);
        let p = plan(&d, &refs).unwrap();
        assert_eq!(p.delete, [olds[0].name_any(), olds[1].name_any()]);
        assert_eq!(p.status.updated_replicas, Some(2));
        assert_eq!(p.status.available_replicas, Some(2));
        let progressing = &p.status.conditions.as_ref().unwrap()[1];
        assert_eq!(progressing.reason.as_deref(), Some("NewReplicaSetAvailable"));
        // Planning again with that status changes nothing (no status churn).
        d.status = Some(p.status.clone());
        assert_eq!(plan(&d, &refs).unwrap().status, p.status);
    }

    #[test]
    fn rollback_bumps_the_revision_of_the_returning_template() {
        let v1 = deployment(1, "x:1", ROLLING());
        let v2 = deployment(1, "x:2", ROLLING());
        let r1 = rs_for(&v1, 0, 0, 0, 1);
        let r2 = rs_for(&v2, 1, 1, 1, 2);
        let p = plan(&v1, &[&r1, &r2]).unwrap();
        assert!(p.scale.iter().any(|(n, r, rev)| *n == r1.name_any() && *r == 1 && rev.as_deref() == Some("3")), "{:?}", p.scale);
        assert_eq!(p.deployment_revision.as_deref(), Some("3"));
    }

    #[test]
    fn annotations_go_to_the_replicaset_and_the_revision_to_the_deployment() {
        let mut d = deployment(2, "x:1", ROLLING());
        d.metadata.annotations = Some(
            [("kubernetes.io/change-cause", "first"), ("kubectl.kubernetes.io/last-applied-configuration", "{}"), (REVISION, "7")]
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .into(),
        );
        let p = plan(&d, &[]).unwrap();
        let a = p.create.unwrap().metadata.annotations.unwrap();
        assert_eq!(a["kubernetes.io/change-cause"], "first");
        assert_eq!(a[REVISION], "1");
        assert_eq!(a[DESIRED_REPLICAS], "2");
        assert_eq!(a[MAX_REPLICAS], "3");
        assert!(!a.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        assert_eq!(p.deployment_revision.as_deref(), Some("1"));
        // The ReplicaSet exists: a changed change-cause is copied to it; the Deployment's revision, once right, stays.
        let rs = rs_for(&d, 2, 2, 2, 1);
        d.metadata.annotations.as_mut().unwrap().insert("kubernetes.io/change-cause".into(), "second".into());
        d.metadata.annotations.as_mut().unwrap().insert(REVISION.into(), "1".into());
        let p = plan(&d, &[&rs]).unwrap();
        assert_eq!(p.annotate, Some((rs.name_any(), [("kubernetes.io/change-cause".to_string(), "second".to_string())].into())));
        assert_eq!(p.deployment_revision, None);
    }
}
