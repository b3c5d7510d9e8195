//! The ReplicaSet controller: keeps `spec.replicas` pods from the template running, and reports status.
//!
//! [`plan`] decides from the ReplicaSet and the pods it controls (a pure function); [`reconcile`] acts on it.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};

use super::expectations::Expectations;
use super::informers::SharedInformer;
use super::{controlled_by, delete_owned_pods, error_policy, object_name, owned_pod, ControllerError, ControllersConfig};
use crate::controllers::cached_pod::CachedPod;

pub struct Context {
    client: Client,
    pods: Store<CachedPod>,
    expectations: Expectations,
    config: ControllersConfig,
}

impl Context {
    pub fn new(client: Client, pods: Store<CachedPod>, config: ControllersConfig) -> Self {
        Context { client, pods, expectations: Expectations::new(config.expectations_timeout), config }
    }
}

/// What to do for one ReplicaSet.
#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// Pods to create from the template.
    pub create: usize,
    /// Names of pods to delete.
    pub delete: Vec<String>,
    pub status: ReplicaSetStatus,
}

pub fn is_active(p: &CachedPod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    p.metadata.deletion_timestamp.is_none() && phase != "Succeeded" && phase != "Failed"
}

pub fn is_ready(p: &CachedPod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Deletion preference, as upstream's `ActivePods` ordering: unscheduled before scheduled, pending before
/// running, not ready before ready, then the newest first.
fn deletion_rank(p: &CachedPod) -> (u8, u8, u8, std::cmp::Reverse<String>) {
    let scheduled = p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_some_and(|n| !n.is_empty());
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let created = p.metadata.creation_timestamp.as_ref().map(|t| t.0.to_rfc3339()).unwrap_or_default();
    (scheduled as u8, (phase == "Running") as u8, is_ready(p) as u8, std::cmp::Reverse(created))
}

/// Decide creations, deletions and status from the ReplicaSet and the pods it controls.
pub fn plan(rs: &ReplicaSet, owned: &[&CachedPod]) -> Plan {
    let want = rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1).max(0) as usize;
    let mut active: Vec<&CachedPod> = owned.iter().copied().filter(|p| is_active(p)).collect();
    let mut plan = Plan::default();
    if rs.metadata.deletion_timestamp.is_none() {
        if active.len() < want {
            plan.create = want - active.len();
        } else if active.len() > want {
            active.sort_by_key(|p| deletion_rank(p));
            plan.delete = active[..active.len() - want].iter().map(|p| p.name_any()).collect();
        }
    }
    let template_labels = rs.spec.as_ref().and_then(|s| s.template.as_ref()).and_then(|t| t.metadata.as_ref()).and_then(|m| m.labels.clone()).unwrap_or_default();
    let counted: Vec<&&CachedPod> = owned.iter().filter(|p| is_active(p)).collect();
    let ready = counted.iter().filter(|p| is_ready(p)).count() as i32;
    plan.status = ReplicaSetStatus {
        replicas: counted.len() as i32,
        fully_labeled_replicas: Some(
            counted.iter().filter(|p| template_labels.iter().all(|(k, v)| p.labels().get(k) == Some(v))).count() as i32,
        ),
        ready_replicas: Some(ready),
        available_replicas: Some(ready),
        observed_generation: rs.metadata.generation,
        conditions: rs.status.as_ref().and_then(|s| s.conditions.clone()),
    };
    plan
}

/// A pod for `rs` from its template.
pub fn pod_from_template(rs: &ReplicaSet) -> Result<Pod, ControllerError> {
    owned_pod(rs, rs.spec.as_ref().and_then(|s| s.template.clone()))
}

pub async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let uid = rs.uid().unwrap_or_default();
    let ns = rs.namespace().unwrap_or_default();
    let name = object_name(rs.as_ref());
    let all = ctx.pods.state();
    let owned: Vec<&CachedPod> = all.iter().map(|p| p.as_ref()).filter(|p| p.namespace().as_deref() == Some(&ns) && controlled_by(*p, &uid)).collect();
    let observed: HashSet<String> = owned.iter().map(|p| p.name_any()).collect();
    if !ctx.expectations.satisfied(&uid, &observed) {
        return Ok(Action::requeue(std::time::Duration::from_millis(500)));
    }
    let plan = plan(&rs, &owned);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    if plan.create > 0 {
        let pod = pod_from_template(&rs)?;
        for _ in 0..plan.create {
            let created = pods
                .create(&PostParams::default(), &pod)
                .await
                .map_err(|e| ControllerError::Api { object: name.clone(), source: Box::new(e) })?;
            ctx.expectations.expect_add(&uid, created.name_any());
        }
        tracing::info!(replicaset = %name, created = plan.create, "created pods");
    }
    delete_owned_pods(&pods, &plan.delete, &ctx.expectations, &uid, &name).await?;
    if !plan.delete.is_empty() {
        tracing::info!(replicaset = %name, deleted = plan.delete.len(), "deleted pods");
    }
    if rs.status.as_ref() != Some(&plan.status) {
        let api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
        let patch = serde_json::json!({"status": plan.status});
        match api.patch_status(&rs.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404, .. })) => {}
            Err(e) => return Err(ControllerError::Api { object: name, source: Box::new(e) }),
        }
    }
    Ok(Action::requeue(ctx.config.resync))
}

pub fn run(
    replicasets: SharedInformer<ReplicaSet>,
    ctx: Arc<Context>,
    pod_events: impl futures::Stream<Item = Result<CachedPod, kube::runtime::watcher::Error>> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    Controller::for_stream(replicasets.touched(), replicasets.store())
        .owns_stream(pod_events)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

    fn rs(replicas: i32) -> ReplicaSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "default", "uid": "rs-uid", "generation": 2},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}
        }))
        .unwrap()
    }

    fn pod(name: &str, node: Option<&str>, phase: &str, ready: bool, created_secs: i64) -> CachedPod {
        CachedPod::from(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                creation_timestamp: Some(Time(chrono::DateTime::from_timestamp(1_700_000_000 + created_secs, 0).unwrap())),
                ..Default::default()
            },
            spec: Some(PodSpec { node_name: node.map(String::from), ..Default::default() }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition { type_: "Ready".into(), status: if ready { "True" } else { "False" }.into(), ..Default::default() }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn creates_missing_pods() {
        let p = plan(&rs(3), &[&pod("a", Some("n1"), "Running", true, 0)]);
        assert_eq!(p.create, 2);
        assert!(p.delete.is_empty());
        assert_eq!(p.status.replicas, 1);
        assert_eq!(p.status.ready_replicas, Some(1));
        assert_eq!(p.status.observed_generation, Some(2));
    }

    #[test]
    fn deletes_the_least_valuable_pods_first() {
        let pods = [
            pod("running-ready-old", Some("n1"), "Running", true, 0),
            pod("running-ready-new", Some("n1"), "Running", true, 100),
            pod("pending", Some("n1"), "Pending", false, 50),
            pod("unscheduled", None, "Pending", false, 10),
        ];
        let refs: Vec<&CachedPod> = pods.iter().collect();
        let p = plan(&rs(1), &refs);
        assert_eq!(p.create, 0);
        assert_eq!(p.delete, ["unscheduled", "pending", "running-ready-new"]);
    }

    #[test]
    fn terminal_and_terminating_pods_do_not_count() {
        let mut gone = pod("terminating", Some("n1"), "Running", true, 0);
        gone.metadata.deletion_timestamp = Some(Time(chrono::Utc::now()));
        let failed = pod("failed", Some("n1"), "Failed", false, 0);
        let p = plan(&rs(2), &[&gone, &failed]);
        assert_eq!(p.create, 2);
        assert_eq!(p.status.replicas, 0);
    }

    #[test]
    fn zero_replicas_and_deleting_owner() {
        let a = pod("a", Some("n1"), "Running", true, 0);
        assert_eq!(plan(&rs(0), &[&a]).delete, ["a"]);
        let mut dying = rs(5);
        dying.metadata.deletion_timestamp = Some(Time(chrono::Utc::now()));
        assert_eq!(plan(&dying, &[]).create, 0);
    }

    #[test]
    fn template_becomes_an_owned_pod() {
        let p = pod_from_template(&rs(1)).unwrap();
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-1-"));
        let owner = &p.metadata.owner_references.unwrap()[0];
        assert_eq!((owner.uid.as_str(), owner.controller), ("rs-uid", Some(true)));
        assert_eq!(p.metadata.labels.unwrap()["app"], "web");
    }
}
