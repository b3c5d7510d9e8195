//! The StatefulSet controller, as upstream's: pods with stable names (`<set>-<ordinal>`, hostname the pod's name,
//! subdomain the governing Service), a PersistentVolumeClaim per pod and claim template (`<claim>-<set>-<ordinal>`,
//! kept across pod restarts and, by default, after the set is gone), created in order and each waited for
//! (`OrderedReady`) or all at once (`Parallel`), removed from the highest ordinal down; rolling updates from the
//! highest ordinal down to the partition, one pod at a time, or `OnDelete`; revisions kept as ControllerRevisions
//! (what `kubectl rollout history|undo sts` read and apply) and the status fields `kubectl rollout status` reads.
//!
//! [`plan`] decides from the set, its pods, its revisions and the claims that exist (pure); [`reconcile`] acts.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ControllerRevision, StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use super::cached_pod::CachedPod;
use super::replicaset::is_ready;
use super::{controlled_by, error_policy, object_name, owned_pod, ControllerError, ControllersConfig, Informers};

pub const REVISION_LABEL: &str = "controller-revision-hash";
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

pub struct Context {
    client: Client,
    pods: Store<CachedPod>,
    revisions: Store<ControllerRevision>,
    claims: Store<PersistentVolumeClaim>,
    config: ControllersConfig,
}

/// What one reconcile does.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// The revision of the current template, where no revision holds it yet.
    pub create_revision: Option<ControllerRevision>,
    /// (revision name, new revision number): a template that came back (rollout undo) becomes the newest again.
    pub renumber_revision: Option<(String, i64)>,
    pub create_claims: Vec<PersistentVolumeClaim>,
    pub create_pods: Vec<Pod>,
    pub delete_pods: Vec<String>,
    /// Claims of ordinals scaled away, with `whenScaled: Delete`.
    pub delete_claims: Vec<String>,
    /// Revisions beyond revisionHistoryLimit that no pod uses.
    pub delete_revisions: Vec<String>,
    pub status: StatefulSetStatus,
}

fn invalid(set: &StatefulSet, reason: impl Into<String>) -> ControllerError {
    ControllerError::Invalid { object: object_name(set), reason: reason.into() }
}

/// The ControllerRevision's name for the set's current template: `<set>-<hash>` (upstream's
/// `ControllerRevisionName` with the FNV hash of the template and the collision count).
pub fn revision_name(set: &StatefulSet) -> String {
    let template = set.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default();
    let mut bytes = serde_json::to_vec(&template).unwrap_or_default();
    if let Some(c) = set.status.as_ref().and_then(|s| s.collision_count) {
        bytes.extend(c.to_le_bytes());
    }
    let name = set.name_any();
    let prefix = if name.len() > 223 { &name[..223] } else { &name };
    format!("{prefix}-{}", super::deployment::safe_hash(&bytes))
}

/// The revision's data: the strategic merge patch that restores the template (upstream's `getPatch`).
fn revision_data(set: &StatefulSet) -> Value {
    let mut template = serde_json::to_value(set.spec.as_ref().map(|s| s.template.clone()).unwrap_or_default()).unwrap_or(json!({}));
    if let Some(t) = template.as_object_mut() {
        t.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": template}})
}

/// The pod template a revision holds.
fn revision_template(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.pointer("/spec/template")?.clone();
    t.as_object_mut()?.remove("$patch");
    serde_json::from_value(t).ok()
}

fn owner_ref(set: &StatefulSet, controller: bool) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".into(),
        kind: "StatefulSet".into(),
        name: set.name_any(),
        uid: set.uid().unwrap_or_default(),
        controller: Some(controller),
        block_owner_deletion: Some(true),
    }
}

fn new_revision(set: &StatefulSet, name: &str, number: i64) -> ControllerRevision {
    let hash = name.rsplit('-').next().unwrap_or_default().to_string();
    let mut labels = set.spec.as_ref().and_then(|s| s.template.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default();
    labels.insert(REVISION_LABEL.into(), hash);
    ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: set.namespace(),
            labels: Some(labels),
            owner_references: Some(vec![owner_ref(set, true)]),
            ..Default::default()
        },
        data: Some(RawExtension(revision_data(set))),
        revision: number,
    }
}

/// `<claim>-<set>-<ordinal>`.
pub fn claim_name(template: &str, set: &str, ordinal: i32) -> String {
    format!("{template}-{set}-{ordinal}")
}

fn ordinal_of(set: &str, pod: &str) -> Option<i32> {
    let rest = pod.strip_prefix(set)?.strip_prefix('-')?;
    // No sign and no leading zeros: only names this controller would give.
    if rest.is_empty() || (rest.len() > 1 && rest.starts_with('0')) || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// The pod for `ordinal` from `template` at revision `revision`, with its identity and its claims' volumes.
fn pod_for(set: &StatefulSet, template: &PodTemplateSpec, revision: &str, ordinal: i32) -> Result<Pod, ControllerError> {
    let spec = set.spec.as_ref().ok_or_else(|| invalid(set, "spec is missing"))?;
    let name = format!("{}-{ordinal}", set.name_any());
    let mut pod = owned_pod(set, Some(template.clone()))?;
    pod.metadata.generate_name = None;
    pod.metadata.name = Some(name.clone());
    let labels = pod.metadata.labels.get_or_insert_with(Default::default);
    labels.insert(REVISION_LABEL.into(), revision.into());
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    let pod_spec = pod.spec.get_or_insert_with(Default::default);
    pod_spec.hostname = Some(name);
    if !spec.service_name.is_empty() {
        pod_spec.subdomain = Some(spec.service_name.clone());
    }
    let volumes = pod_spec.volumes.get_or_insert_with(Vec::new);
    for t in spec.volume_claim_templates.iter().flatten() {
        let tname = t.name_any();
        volumes.retain(|v| v.name != tname);
        volumes.push(Volume {
            name: tname.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource { claim_name: claim_name(&tname, &set.name_any(), ordinal), read_only: None }),
            ..Default::default()
        });
    }
    Ok(pod)
}

/// The claims `ordinal` needs, as upstream makes them: the template's spec, its labels plus the set's selector
/// labels; owned by the set when `whenDeleted: Delete` (so they go with it).
fn claims_for(set: &StatefulSet, ordinal: i32) -> Vec<PersistentVolumeClaim> {
    let Some(spec) = set.spec.as_ref() else { return Vec::new() };
    let delete_with_set = spec.persistent_volume_claim_retention_policy.as_ref().and_then(|p| p.when_deleted.as_deref()) == Some("Delete");
    spec.volume_claim_templates
        .iter()
        .flatten()
        .map(|t| {
            let mut labels = t.metadata.labels.clone().unwrap_or_default();
            labels.extend(spec.selector.match_labels.clone().unwrap_or_default());
            PersistentVolumeClaim {
                metadata: ObjectMeta {
                    name: Some(claim_name(&t.name_any(), &set.name_any(), ordinal)),
                    namespace: set.namespace(),
                    labels: Some(labels),
                    annotations: t.metadata.annotations.clone(),
                    owner_references: delete_with_set.then(|| vec![owner_ref(set, false)]),
                    ..Default::default()
                },
                spec: t.spec.clone(),
                status: None,
            }
        })
        .collect()
}

fn running_and_ready(p: &CachedPod) -> bool {
    p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running") && is_ready(p)
}

fn finished(p: &CachedPod) -> bool {
    matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
}

fn revision_of(p: &CachedPod) -> Option<&String> {
    p.labels().get(REVISION_LABEL)
}

/// Decide the next step. `claims` are the names of the claims that exist in the set's namespace.
pub fn plan(set: &StatefulSet, pods: &[&CachedPod], revisions: &[&ControllerRevision], claims: &HashSet<String>) -> Result<Plan, ControllerError> {
    let spec = set.spec.as_ref().ok_or_else(|| invalid(set, "spec is missing"))?;
    let name = set.name_any();
    let mut plan = Plan::default();
    let replicas = spec.replicas.unwrap_or(1).max(0);
    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0).max(0);
    let monotonic = spec.pod_management_policy.as_deref() != Some("Parallel");
    let strategy = spec.update_strategy.as_ref();
    let on_delete = strategy.and_then(|s| s.type_.as_deref()) == Some("OnDelete");
    let partition = strategy.and_then(|s| s.rolling_update.as_ref()).and_then(|r| r.partition).unwrap_or(0).max(0);

    // Revisions: the update revision holds the current template; the current one is what the pods ran before.
    let update_name = revision_name(set);
    let max_number = revisions.iter().map(|r| r.revision).max().unwrap_or(0);
    let update_rev: ControllerRevision = match revisions.iter().find(|r| r.name_any() == update_name) {
        Some(r) => {
            if r.revision < max_number {
                plan.renumber_revision = Some((update_name.clone(), max_number + 1));
            }
            (*r).clone()
        }
        None => {
            let r = new_revision(set, &update_name, max_number + 1);
            plan.create_revision = Some(r.clone());
            r
        }
    };
    let current_name = set
        .status
        .as_ref()
        .and_then(|s| s.current_revision.clone())
        .filter(|c| revisions.iter().any(|r| r.name_any() == *c))
        .unwrap_or_else(|| update_name.clone());
    let update_template = revision_template(&update_rev).unwrap_or_else(|| spec.template.clone());
    let current_template = revisions
        .iter()
        .find(|r| r.name_any() == current_name)
        .and_then(|r| revision_template(r))
        .unwrap_or_else(|| update_template.clone());
    let versioned_pod = |ordinal: i32| -> Result<Pod, ControllerError> {
        // As upstream's newVersionedStatefulSetPod: below the partition, pods keep the current revision.
        if !on_delete && ordinal - start < partition && current_name != update_name {
            pod_for(set, &current_template, &current_name, ordinal)
        } else {
            pod_for(set, &update_template, &update_name, ordinal)
        }
    };

    // The set's pods by ordinal; pods that are not this set's (bad names, duplicates) go.
    let mut by_ordinal: BTreeMap<i32, &CachedPod> = BTreeMap::new();
    for p in pods {
        match ordinal_of(&name, &p.name_any()) {
            Some(o) if !by_ordinal.contains_key(&o) => {
                by_ordinal.insert(o, p);
            }
            _ => plan.delete_pods.push(p.name_any()),
        }
    }
    let wanted = start..start + replicas;
    let deleting = set.metadata.deletion_timestamp.is_some();
    let mut blocked = deleting;

    // Replicas, lowest ordinal first.
    for ordinal in wanted.clone() {
        if blocked {
            break;
        }
        match by_ordinal.get(&ordinal) {
            None => {
                for c in claims_for(set, ordinal) {
                    if !claims.contains(&c.name_any()) {
                        plan.create_claims.push(c);
                    }
                }
                plan.create_pods.push(versioned_pod(ordinal)?);
                blocked = monotonic;
            }
            Some(p) if finished(p) && p.metadata.deletion_timestamp.is_none() => {
                // A pod that ended (Failed, or Succeeded though it should run) is replaced.
                plan.delete_pods.push(p.name_any());
                blocked = monotonic;
            }
            Some(p) if p.metadata.deletion_timestamp.is_some() || !running_and_ready(p) => blocked = monotonic,
            Some(_) => {}
        }
    }

    // Ordinals scaled away: highest first; one at a time, and only while the rest are healthy, unless Parallel.
    let condemned: Vec<&CachedPod> = by_ordinal.iter().filter(|(o, _)| !wanted.contains(o)).map(|(_, p)| *p).rev().collect();
    for p in &condemned {
        if blocked {
            break;
        }
        if p.metadata.deletion_timestamp.is_some() {
            blocked = monotonic;
            continue;
        }
        plan.delete_pods.push(p.name_any());
        blocked = monotonic;
    }
    if spec.persistent_volume_claim_retention_policy.as_ref().and_then(|p| p.when_scaled.as_deref()) == Some("Delete") && !deleting {
        let present: HashSet<i32> = by_ordinal.keys().copied().collect();
        for c in claims.iter() {
            for t in spec.volume_claim_templates.iter().flatten() {
                let prefix = format!("{}-", t.name_any());
                if let Some(o) = c.strip_prefix(&prefix).and_then(|rest| ordinal_of(&name, rest)) {
                    if !wanted.contains(&o) && !present.contains(&o) {
                        plan.delete_claims.push(c.clone());
                    }
                }
            }
        }
        plan.delete_claims.sort();
    }

    // Rolling update: once every replica is running and ready, replace the highest outdated pod at or above the
    // partition; one at a time.
    let all_healthy = wanted.clone().all(|o| by_ordinal.get(&o).is_some_and(|p| running_and_ready(p) && p.metadata.deletion_timestamp.is_none()));
    if !on_delete && !deleting && !blocked && all_healthy && plan.delete_pods.is_empty() {
        if let Some(p) = wanted.clone().rev().filter(|o| o - start >= partition).filter_map(|o| by_ordinal.get(&o)).find(|p| revision_of(p) != Some(&update_name)) {
            plan.delete_pods.push(p.name_any());
        }
    }

    // History: revisions no pod runs, beyond the limit, oldest first.
    let limit = spec.revision_history_limit.unwrap_or(10).max(0) as usize;
    let in_use: HashSet<&String> = pods.iter().filter_map(|p| revision_of(p)).chain([&update_name, &current_name]).collect();
    let mut unused: Vec<&&ControllerRevision> = revisions.iter().filter(|r| !in_use.contains(&r.name_any())).collect();
    unused.sort_by_key(|r| r.revision);
    if unused.len() > limit {
        plan.delete_revisions = unused[..unused.len() - limit].iter().map(|r| r.name_any()).collect();
    }

    // Status.
    let live: Vec<&CachedPod> = by_ordinal.values().copied().filter(|p| p.metadata.deletion_timestamp.is_none()).collect();
    let count = |f: &dyn Fn(&CachedPod) -> bool| live.iter().filter(|p| f(p)).count() as i32;
    let ready = count(&running_and_ready);
    let updated = count(&|p| revision_of(p) == Some(&update_name));
    let mut status = StatefulSetStatus {
        observed_generation: set.metadata.generation,
        replicas: live.len() as i32,
        ready_replicas: Some(ready),
        available_replicas: Some(ready),
        current_replicas: Some(count(&|p| revision_of(p) == Some(&current_name))),
        updated_replicas: Some(updated),
        current_revision: Some(current_name.clone()),
        update_revision: Some(update_name.clone()),
        collision_count: set.status.as_ref().and_then(|s| s.collision_count),
        conditions: set.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    // The rollout is complete: the update revision becomes the current one.
    if !on_delete && updated == replicas && ready == replicas && live.len() as i32 == replicas {
        status.current_revision = Some(update_name);
        status.current_replicas = Some(updated);
    }
    plan.status = status;
    Ok(plan)
}

pub async fn reconcile(set: Arc<StatefulSet>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let uid = set.uid().unwrap_or_default();
    let ns = set.namespace().unwrap_or_default();
    let name = object_name(set.as_ref());
    let all_pods = ctx.pods.state();
    let pods: Vec<&CachedPod> = all_pods.iter().map(|p| p.as_ref()).filter(|p| p.namespace().as_deref() == Some(&ns) && controlled_by(*p, &uid)).collect();
    let all_revisions = ctx.revisions.state();
    let revisions: Vec<&ControllerRevision> =
        all_revisions.iter().map(|r| r.as_ref()).filter(|r| r.namespace().as_deref() == Some(&ns) && controlled_by(*r, &uid)).collect();
    let claims: HashSet<String> = ctx.claims.state().iter().filter(|c| c.namespace().as_deref() == Some(&ns)).map(|c| c.name_any()).collect();
    let plan = plan(&set, &pods, &revisions, &claims)?;
    let err = |e| ControllerError::Api { object: name.clone(), source: Box::new(e) };
    let ok_if = |r: Result<(), kube::Error>, codes: &[u16]| match r {
        Err(kube::Error::Api(e)) if codes.contains(&e.code) => Ok(()),
        other => other,
    };
    let mut acted = false;
    let revs: Api<ControllerRevision> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(r) = &plan.create_revision {
        ok_if(revs.create(&PostParams::default(), r).await.map(|_| ()), &[409]).map_err(err)?;
        acted = true;
    }
    if let Some((r, number)) = &plan.renumber_revision {
        revs.patch(r, &PatchParams::default(), &Patch::Merge(&json!({"revision": number}))).await.map_err(err)?;
        acted = true;
    }
    let claim_api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    for c in &plan.create_claims {
        ok_if(claim_api.create(&PostParams::default(), c).await.map(|_| ()), &[409]).map_err(err)?;
        tracing::info!(statefulset = %name, claim = %c.name_any(), "created claim");
        acted = true;
    }
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    for p in &plan.create_pods {
        // 409: the previous pod of that name is still being deleted, or the cache is behind; the next round sees.
        ok_if(pod_api.create(&PostParams::default(), p).await.map(|_| ()), &[409]).map_err(err)?;
        tracing::info!(statefulset = %name, pod = %p.name_any(), "created pod");
        acted = true;
    }
    for p in &plan.delete_pods {
        ok_if(pod_api.delete(p, &DeleteParams::default()).await.map(|_| ()), &[404]).map_err(err)?;
        tracing::info!(statefulset = %name, pod = %p, "deleted pod");
        acted = true;
    }
    for c in &plan.delete_claims {
        ok_if(claim_api.delete(c, &DeleteParams::default()).await.map(|_| ()), &[404]).map_err(err)?;
        acted = true;
    }
    for r in &plan.delete_revisions {
        ok_if(revs.delete(r, &DeleteParams::default()).await.map(|_| ()), &[404]).map_err(err)?;
    }
    if set.status.as_ref() != Some(&plan.status) {
        let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
        ok_if(api.patch_status(&set.name_any(), &PatchParams::default(), &Patch::Merge(&json!({"status": plan.status}))).await.map(|_| ()), &[404])
            .map_err(err)?;
    }
    Ok(if acted { Action::requeue(std::time::Duration::from_millis(500)) } else { Action::requeue(ctx.config.resync) })
}

/// Run the controller until `shutdown` resolves, on the process's shared informers.
pub async fn run(informers: Informers, config: ControllersConfig, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let (pods, revisions, claims) = (informers.get::<CachedPod>(), informers.get::<ControllerRevision>(), informers.get::<PersistentVolumeClaim>());
    tokio::join!(pods.ready(), revisions.ready(), claims.ready());
    let ctx = Arc::new(Context { client: informers.client().clone(), pods: pods.store(), revisions: revisions.store(), claims: claims.store(), config });
    Controller::new(Api::<StatefulSet>::all(ctx.client.clone()), kube::runtime::watcher::Config::default())
        .owns_stream(pods.touched())
        .owns_stream(revisions.touched())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(replicas: i32, image: &str, extra: Value) -> StatefulSet {
        let mut v = json!({
            "metadata": {"name": "db", "namespace": "default", "uid": "sts-uid", "generation": 1},
            "spec": {"replicas": replicas, "serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
                     "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "c", "image": image}]}},
                     "volumeClaimTemplates": [{"metadata": {"name": "data"},
                         "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}
        });
        json_patch::merge(&mut v, &extra);
        serde_json::from_value(v).unwrap()
    }

    /// A pod of `s` at ordinal `o` from the revision of `s`'s template, in `phase`, ready or not.
    fn pod(s: &StatefulSet, o: i32, phase: &str, ready: bool) -> CachedPod {
        let mut p = pod_for(s, &s.spec.as_ref().unwrap().template, &revision_name(s), o).unwrap();
        p.status = Some(serde_json::from_value(json!({"phase": phase,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]})).unwrap());
        CachedPod::from(p)
    }

    fn revision(s: &StatefulSet, number: i64) -> ControllerRevision {
        new_revision(s, &revision_name(s), number)
    }

    #[test]
    fn ordered_ready_creates_one_pod_at_a_time_with_its_claim() {
        let s = set(3, "x:1", json!({}));
        let p = plan(&s, &[], &[], &HashSet::new()).unwrap();
        assert_eq!(p.create_revision.as_ref().unwrap().revision, 1);
        assert_eq!(p.create_pods.len(), 1);
        let pod0 = &p.create_pods[0];
        assert_eq!(pod0.name_any(), "db-0");
        let spec = pod0.spec.as_ref().unwrap();
        assert_eq!((spec.hostname.as_deref(), spec.subdomain.as_deref()), (Some("db-0"), Some("db")));
        assert_eq!(spec.volumes.as_ref().unwrap()[0].persistent_volume_claim.as_ref().unwrap().claim_name, "data-db-0");
        assert_eq!(pod0.labels()[POD_INDEX_LABEL], "0");
        assert_eq!(pod0.labels()[REVISION_LABEL], revision_name(&s));
        assert_eq!(p.create_claims.iter().map(|c| c.name_any()).collect::<Vec<_>>(), ["data-db-0"]);
        assert_eq!(p.create_claims[0].labels()["app"], "db");
        assert!(p.create_claims[0].metadata.owner_references.is_none(), "Retain: the claim outlives the set");
        // db-0 pending: nothing more; once Running and Ready: db-1, whose claim already exists.
        let rev = revision(&s, 1);
        let p0 = pod(&s, 0, "Pending", false);
        let p = plan(&s, &[&p0], &[&rev], &HashSet::new()).unwrap();
        assert!(p.create_pods.is_empty() && p.create_claims.is_empty());
        let p0 = pod(&s, 0, "Running", true);
        let p = plan(&s, &[&p0], &[&rev], &["data-db-1".to_string()].into()).unwrap();
        assert_eq!(p.create_pods.iter().map(|p| p.name_any()).collect::<Vec<_>>(), ["db-1"]);
        assert!(p.create_claims.is_empty());
        assert_eq!(p.status.replicas, 1);
        assert_eq!(p.status.ready_replicas, Some(1));
    }

    #[test]
    fn parallel_creates_all_and_scales_down_all_at_once() {
        let s = set(3, "x:1", json!({"spec": {"podManagementPolicy": "Parallel"}}));
        let p = plan(&s, &[], &[], &HashSet::new()).unwrap();
        assert_eq!(p.create_pods.iter().map(|p| p.name_any()).collect::<Vec<_>>(), ["db-0", "db-1", "db-2"]);
        let s1 = set(1, "x:1", json!({"spec": {"podManagementPolicy": "Parallel"}}));
        let pods: Vec<CachedPod> = (0..3).map(|o| pod(&s1, o, "Running", true)).collect();
        let refs: Vec<&CachedPod> = pods.iter().collect();
        let p = plan(&s1, &refs, &[&revision(&s1, 1)], &HashSet::new()).unwrap();
        assert_eq!(p.delete_pods, ["db-2", "db-1"]);
    }

    #[test]
    fn ordered_scale_down_removes_the_highest_first_and_replaces_failed_pods() {
        let s = set(1, "x:1", json!({}));
        let pods: Vec<CachedPod> = (0..3).map(|o| pod(&s, o, "Running", true)).collect();
        let refs: Vec<&CachedPod> = pods.iter().collect();
        let rev = revision(&s, 1);
        assert_eq!(plan(&s, &refs, &[&rev], &HashSet::new()).unwrap().delete_pods, ["db-2"]);
        // A failed replica is deleted (and made again next round); nothing else moves meanwhile.
        let s2 = set(2, "x:1", json!({}));
        let failed = pod(&s2, 0, "Failed", false);
        let ok = pod(&s2, 1, "Running", true);
        let p = plan(&s2, &[&failed, &ok], &[&revision(&s2, 1)], &HashSet::new()).unwrap();
        assert_eq!(p.delete_pods, ["db-0"]);
        assert!(p.create_pods.is_empty());
    }

    #[test]
    fn rolling_update_goes_from_the_highest_ordinal_down_to_the_partition() {
        let v1 = set(3, "x:1", json!({}));
        let v2 = set(3, "x:2", json!({"status": {"currentRevision": revision_name(&v1)}}));
        let old: Vec<CachedPod> = (0..3).map(|o| pod(&v1, o, "Running", true)).collect();
        let refs: Vec<&CachedPod> = old.iter().collect();
        let (r1, r2) = (revision(&v1, 1), revision(&v2, 2));
        let p = plan(&v2, &refs, &[&r1], &HashSet::new()).unwrap();
        assert_eq!(p.create_revision.as_ref().unwrap().revision, 2);
        assert_eq!(p.delete_pods, ["db-2"]);
        assert_eq!(p.status.update_revision.as_deref(), Some(revision_name(&v2).as_str()));
        assert_eq!(p.status.current_revision.as_deref(), Some(revision_name(&v1).as_str()));
        // db-2 came back at the new revision: db-1 next.
        let new2 = pod(&v2, 2, "Running", true);
        let p = plan(&v2, &[refs[0], refs[1], &new2], &[&r1, &r2], &HashSet::new()).unwrap();
        assert_eq!(p.delete_pods, ["db-1"]);
        assert_eq!(p.status.updated_replicas, Some(1));
        // With partition 2, db-1 stays; a deleted db-1 comes back at the old revision.
        let mut v2p = set(3, "x:2", json!({"spec": {"updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"partition": 2}}},
                                           "status": {"currentRevision": revision_name(&v1)}}));
        v2p.status.as_mut().unwrap().current_revision = Some(revision_name(&v1));
        let p = plan(&v2p, &[refs[0], refs[1], &new2], &[&r1, &r2], &HashSet::new()).unwrap();
        assert!(p.delete_pods.is_empty(), "{:?}", p.delete_pods);
        let p = plan(&v2p, &[refs[0], &new2], &[&r1, &r2], &HashSet::new()).unwrap();
        assert_eq!(p.create_pods[0].labels()[REVISION_LABEL], revision_name(&v1));
        assert_eq!(p.create_pods[0].spec.as_ref().unwrap().containers[0].image.as_deref(), Some("x:1"));
        // All updated and ready: the update revision becomes current.
        let all_new: Vec<CachedPod> = (0..3).map(|o| pod(&v2, o, "Running", true)).collect();
        let refs: Vec<&CachedPod> = all_new.iter().collect();
        let p = plan(&v2, &refs, &[&r1, &r2], &HashSet::new()).unwrap();
        assert!(p.delete_pods.is_empty());
        assert_eq!(p.status.current_revision, p.status.update_revision);
        assert_eq!(p.status.current_replicas, Some(3));
    }

    #[test]
    fn on_delete_waits_for_the_user_and_undo_renumbers_the_old_revision() {
        let v1 = set(1, "x:1", json!({}));
        let v2 = set(1, "x:2", json!({"spec": {"updateStrategy": {"type": "OnDelete"}}}));
        let old = pod(&v1, 0, "Running", true);
        let (r1, r2) = (revision(&v1, 1), revision(&v2, 2));
        assert!(plan(&v2, &[&old], &[&r1, &r2], &HashSet::new()).unwrap().delete_pods.is_empty());
        // Back to the first template (rollout undo): its revision becomes number 3.
        let p = plan(&v1, &[&old], &[&r1, &r2], &HashSet::new()).unwrap();
        assert_eq!(p.renumber_revision, Some((revision_name(&v1), 3)));
        assert!(p.create_revision.is_none());
        // Its data is the template as a replacing strategic merge patch.
        let data = &r1.data.as_ref().unwrap().0;
        assert_eq!(data["spec"]["template"]["$patch"], "replace");
        assert_eq!(revision_template(&r1).unwrap(), v1.spec.as_ref().unwrap().template);
    }

    #[test]
    fn retention_policies_and_history() {
        let s = set(1, "x:1", json!({"spec": {"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete", "whenScaled": "Delete"},
                                              "revisionHistoryLimit": 1}}));
        let p0 = pod(&s, 0, "Running", true);
        let claims: HashSet<String> = ["data-db-0", "data-db-1", "data-db-2", "other-db-1"].map(String::from).into();
        let old_revs: Vec<ControllerRevision> =
            (1..=3).map(|i| new_revision(&s, &format!("db-old{i}"), i)).collect();
        let mut revs: Vec<&ControllerRevision> = old_revs.iter().collect();
        let current = revision(&s, 4);
        revs.push(&current);
        let p = plan(&s, &[&p0], &revs, &claims).unwrap();
        assert_eq!(p.delete_claims, ["data-db-1", "data-db-2"]);
        assert_eq!(p.delete_revisions, ["db-old1", "db-old2"]);
        let fresh = plan(&set(2, "x:1", json!({"spec": {"persistentVolumeClaimRetentionPolicy": {"whenDeleted": "Delete"}}})), &[], &[], &HashSet::new()).unwrap();
        assert_eq!(fresh.create_claims[0].metadata.owner_references.as_ref().unwrap()[0].kind, "StatefulSet");
    }

    #[test]
    fn names_that_are_not_ordinals_are_not_the_sets() {
        assert_eq!(ordinal_of("db", "db-0"), Some(0));
        assert_eq!(ordinal_of("db", "db-12"), Some(12));
        for bad in ["db-", "db-01", "db--1", "db-x", "dbx-1", "db-1a"] {
            assert_eq!(ordinal_of("db", bad), None, "{bad}");
        }
    }
}
