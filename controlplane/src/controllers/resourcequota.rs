//! The resource quota controller, as upstream's: keeps each ResourceQuota's `status.hard` (its spec) and
//! `status.used` (what the objects in its namespace that it takes in hold now), so that what deleted or finished
//! objects held is given back; the API server's admission charges new objects against `status.used` in between.

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ResourceQuota;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use super::cached_pod::CachedPod;
use super::{error_policy, object_name, ControllerError, ControllersConfig, Informers};
use crate::api::quota;
use crate::api::resources;

/// Everything not watched (configmaps, secrets, counts of other kinds) is recounted this often.
const RECOUNT_EVERY: Duration = Duration::from_secs(30);

pub struct Context {
    client: Client,
    config: ControllersConfig,
}

/// The served resources (group, plural) whose objects `hard` needs counted.
fn needed(hard: &quota::Usage) -> HashSet<(&'static str, &'static str)> {
    let mut out = HashSet::new();
    for key in hard.keys() {
        let k = key.as_str();
        let r: Option<(&str, &str)> = if k == "pods" || quota::POD_COMPUTE.contains(&k) || k.ends_with("ephemeral-storage") || k.starts_with("requests.hugepages-") {
            Some(("", "pods"))
        } else if k.starts_with("services") {
            Some(("", "services"))
        } else if k == "persistentvolumeclaims" || k == "requests.storage" || k.contains(".storageclass.storage.k8s.io/") {
            Some(("", "persistentvolumeclaims"))
        } else if ["configmaps", "secrets", "resourcequotas", "replicationcontrollers"].contains(&k) {
            Some(("", k))
        } else if let Some(rest) = k.strip_prefix("count/") {
            Some(match rest.split_once('.') {
                Some((plural, group)) => (group, plural),
                None => ("", rest),
            })
        } else {
            None
        };
        if let Some((group, plural)) = r {
            if let Some(info) = resources::RESOURCES.iter().find(|i| i.group == group && i.plural == plural && i.namespaced) {
                out.insert((info.group, info.plural));
            }
        }
    }
    out
}

/// `used` for `hard` from the objects of each needed resource (pure).
pub fn used(quota_obj: &Value, objects: &BTreeMap<(&str, &str), Vec<Value>>, now: chrono::DateTime<chrono::Utc>) -> quota::Usage {
    let hard = quota::amounts(quota_obj.pointer("/spec/hard"));
    let mut used: quota::Usage = hard.keys().map(|k| (k.clone(), 0)).collect();
    for ((group, plural), list) in objects {
        let is_pod = group.is_empty() && *plural == "pods";
        for obj in list {
            if (is_pod && !quota::pod_counts(obj, now)) || !quota::in_scope(quota_obj, is_pod, obj) {
                continue;
            }
            for (k, v) in quota::object_usage(group, plural, obj) {
                if let Some(u) = used.get_mut(&k) {
                    *u += v;
                }
            }
        }
    }
    used
}

pub async fn reconcile(q: Arc<ResourceQuota>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let ns = q.namespace().unwrap_or_default();
    let name = object_name(q.as_ref());
    let err = |e| ControllerError::Api { object: name.clone(), source: Box::new(e) };
    let qv = serde_json::to_value(q.as_ref()).map_err(|e| ControllerError::Invalid { object: name.clone(), reason: e.to_string() })?;
    let hard = quota::amounts(qv.pointer("/spec/hard"));
    let mut objects: BTreeMap<(&str, &str), Vec<Value>> = BTreeMap::new();
    for (group, plural) in needed(&hard) {
        let Some(info) = resources::find(group, "v1", plural) else { continue };
        let ar = ApiResource {
            group: group.into(),
            version: info.version.into(),
            api_version: if group.is_empty() { info.version.into() } else { format!("{group}/{}", info.version) },
            kind: info.kind.into(),
            plural: plural.into(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ar);
        let list = api.list(&ListParams::default()).await.map_err(err)?;
        objects.insert((group, plural), list.items.iter().filter_map(|o| serde_json::to_value(o).ok()).collect());
    }
    let used = used(&qv, &objects, chrono::Utc::now());
    let status = json!({
        "hard": qv.pointer("/spec/hard").cloned().unwrap_or(json!({})),
        "used": used.iter().map(|(k, v)| (k.clone(), json!(quota::format(k, *v)))).collect::<serde_json::Map<String, Value>>(),
    });
    let current = json!({
        "hard": qv.pointer("/status/hard").cloned().unwrap_or(json!({})),
        "used": qv.pointer("/status/used").cloned().unwrap_or(json!({})),
    });
    // Compare amounts, not strings ("1000m" and "1" are one core).
    let same = quota::amounts(current.get("used")) == quota::amounts(status.get("used")) && current["hard"] == status["hard"];
    if !same {
        let api: Api<ResourceQuota> = Api::namespaced(ctx.client.clone(), &ns);
        match api.patch_status(&q.name_any(), &PatchParams::default(), &Patch::Merge(&json!({"status": status}))).await {
            Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404, .. })) => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(Action::requeue(RECOUNT_EVERY.min(ctx.config.resync)))
}

/// Run the controller until `shutdown` resolves: quotas, and the pods, services and claims that change them.
pub async fn run(informers: Informers, config: ControllersConfig, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Service};
    let (pods, services, claims) = (informers.get::<CachedPod>(), informers.get::<Service>(), informers.get::<PersistentVolumeClaim>());
    tokio::join!(pods.ready(), services.ready(), claims.ready());
    let ctx = Arc::new(Context { client: informers.client().clone(), config });
    let controller = Controller::new(Api::<ResourceQuota>::all(ctx.client.clone()), kube::runtime::watcher::Config::default());
    let in_namespace = super::all_in_namespace(controller.store());
    let (a, b, c) = (in_namespace.clone(), in_namespace.clone(), in_namespace);
    controller
        .watches_stream(pods.touched(), move |p: CachedPod| a(p.namespace()))
        .watches_stream(services.touched(), move |s: Service| b(s.namespace()))
        .watches_stream(claims.touched(), move |c2: PersistentVolumeClaim| c(c2.namespace()))
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_counts_what_is_in_scope_and_alive() {
        let q = json!({"spec": {"hard": {"pods": "5", "requests.cpu": "2", "services": "2", "count/deployments.apps": "3"}}});
        let pod = |cpu: &str, phase: &str| json!({"spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]}, "status": {"phase": phase}});
        let mut objects: BTreeMap<(&str, &str), Vec<Value>> = BTreeMap::new();
        objects.insert(("", "pods"), vec![pod("500m", "Running"), pod("250m", "Pending"), pod("1", "Succeeded")]);
        objects.insert(("", "services"), vec![json!({"spec": {"type": "ClusterIP"}})]);
        objects.insert(("apps", "deployments"), vec![json!({}), json!({})]);
        let u = used(&q, &objects, chrono::Utc::now());
        assert_eq!(u["pods"], 2000);
        assert_eq!(quota::format("requests.cpu", u["requests.cpu"]), "750m");
        assert_eq!(u["services"], 1000);
        assert_eq!(u["count/deployments.apps"], 2000);
        let wanted = needed(&quota::amounts(q.pointer("/spec/hard")));
        assert!(wanted.contains(&("", "pods")) && wanted.contains(&("", "services")) && wanted.contains(&("apps", "deployments")));
    }
}
