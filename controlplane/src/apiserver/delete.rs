//! delete, deletecollection, eviction; finalizers and deletionTimestamp; the cleanup of deleted namespaces;
//! periodic store compaction.
//!
//! An object is removed from the store at once unless it has finalizers or is a pod bound to a node (its agent
//! stops the containers, then deletes the pod with grace 0). Otherwise it gets a deletionTimestamp and stays
//! until the last finalizer is removed. Namespaces always have the `kubernetes` finalizer: a background task
//! deletes their contents, then removes it.
//!
//! propagationPolicy is carried out as upstream's API server does: Background removes the object at once (the
//! controller manager's garbage collector then deletes the dependents whose owners are gone); Foreground and
//! Orphan add the `foregroundDeletion` or `orphan` finalizer, which the garbage collector removes once the
//! dependents are gone or no longer reference the object.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::codec::{self, IncludeObject};
use super::errors::ApiError;
use super::read::{list_objects, load, Filter};
use super::{ApiServer, Req, Target};
use crate::api::resources::{self, ResourceInfo};
use crate::api::selectors::{FieldSelector, LabelSelector};
use crate::api::strategy;
use crate::store::StoreError;

/// Boxed because deleting a namespace spawns its cleanup, which deletes objects: a cycle through which the
/// compiler cannot see that the future is `Send` otherwise.
type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Propagation {
    Background,
    Foreground,
    Orphan,
}

#[derive(Clone, Debug)]
pub struct DeleteOptions {
    pub grace: Option<i64>,
    pub propagation: Propagation,
    pub uid: Option<String>,
    pub resource_version: Option<i64>,
    pub dry_run: bool,
}

impl Default for DeleteOptions {
    fn default() -> Self {
        DeleteOptions { grace: None, propagation: Propagation::Background, uid: None, resource_version: None, dry_run: false }
    }
}

impl DeleteOptions {
    pub fn parse(body: &Value, r: Option<&Req>) -> Result<Self, ApiError> {
        let mut o = DeleteOptions::default();
        let q = |k: &str| r.and_then(|r| r.q(k));
        o.grace = match body.get("gracePeriodSeconds").filter(|v| !v.is_null()) {
            Some(v) => Some(v.as_i64().ok_or_else(|| ApiError::bad_request("gracePeriodSeconds must be an integer"))?),
            None => match q("gracePeriodSeconds") {
                Some(v) => Some(v.parse().map_err(|_| ApiError::bad_request("gracePeriodSeconds must be an integer"))?),
                None => None,
            },
        };
        let policy = body.get("propagationPolicy").and_then(Value::as_str).or(q("propagationPolicy"));
        o.propagation = match policy {
            None => match body.get("orphanDependents").and_then(Value::as_bool).or(q("orphanDependents").map(|v| v == "true")) {
                Some(true) => Propagation::Orphan,
                _ => Propagation::Background,
            },
            Some("Background") => Propagation::Background,
            Some("Foreground") => Propagation::Foreground,
            Some("Orphan") => Propagation::Orphan,
            Some(other) => {
                return Err(ApiError::new(422, "Invalid", format!("propagationPolicy: Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\"")))
            }
        };
        o.uid = body.pointer("/preconditions/uid").and_then(Value::as_str).map(String::from);
        o.resource_version = match body.pointer("/preconditions/resourceVersion").and_then(Value::as_str) {
            Some(v) => Some(v.parse().map_err(|_| ApiError::bad_request(format!("invalid resourceVersion precondition {v:?}")))?),
            None => None,
        };
        let dry = body.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|v| v == "All"));
        o.dry_run = dry || r.is_some_and(Req::dry_run);
        Ok(o)
    }

    fn from_request(r: &Req) -> Result<Self, ApiError> {
        let body = if r.body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            codec::decode_object(&r.headers, &r.body)?
        };
        Self::parse(&body, Some(r))
    }
}

fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|f| f.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

fn is_deleting(obj: &Value) -> bool {
    obj.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null())
}

/// After an update: did it remove the last finalizer of an object that is being deleted (and that nobody
/// else, such as a node agent, still has to act on)?
pub fn ready_to_finalize(info: &ResourceInfo, old: &Value, new: &Value) -> bool {
    is_deleting(new)
        && !finalizers(old).is_empty()
        && finalizers(new).is_empty()
        && (info.kind != "Namespace" || namespace_finalizers(new).is_empty())
        && strategy::graceful_delete_seconds(info, new, None).is_none()
}

fn namespace_finalizers(ns: &Value) -> Vec<String> {
    ns.pointer("/spec/finalizers")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|f| f.as_str().map(String::from)).collect())
        .unwrap_or_default()
}

/// Remove an object whose finalizers are done.
pub async fn finalize(s: &Arc<ApiServer>, t: &Target, obj: &Value, rev: i64) -> Result<(), ApiError> {
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let key = t.info.key(t.namespace.as_deref(), name);
    match s.store.delete(&key, Some(rev)).await {
        Ok(_) => {
            after_delete(s, t, obj).await;
            Ok(())
        }
        // Someone changed it meanwhile; whoever did will see the state and act.
        Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound(_)) => Ok(()),
        Err(e) => Err(ApiError::from_store(t.info, name, e)),
    }
}

async fn after_delete(s: &Arc<ApiServer>, t: &Target, obj: &Value) {
    if t.info.kind == "Service" {
        s.alloc.release_service(obj).await;
    }
}

/// Delete one object as a DELETE request with `opts` would. Returns the object as it is afterwards (with a
/// deletionTimestamp if it lingers) and whether it is gone from the store.
pub fn delete_object<'a>(
    s: &'a Arc<ApiServer>,
    t: &'a Target,
    name: &'a str,
    opts: &'a DeleteOptions,
) -> BoxFuture<'a, Result<(Value, bool), ApiError>> {
    Box::pin(async move {
        if t.info.kind == "PriorityClass" && super::priority::is_system_class(name) {
            return Err(ApiError::forbidden(format!(
                "priorityclasses.scheduling.k8s.io \"{name}\" is forbidden: this is a system priority class and cannot be deleted"
            )));
        }
        for _ in 0..16 {
            let (obj, kv) = load(s, t, name).await?;
            if let Some(uid) = &opts.uid {
                let actual = obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
                if actual != uid {
                    return Err(ApiError::conflict(t.info, name, &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}")));
                }
            }
            if let Some(rv) = opts.resource_version {
                if rv != kv.mod_revision {
                    return Err(ApiError::conflict(t.info, name, &format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}", kv.mod_revision)));
                }
            }
            let grace = strategy::graceful_delete_seconds(t.info, &obj, opts.grace);
            let mut fins = finalizers(&obj);
            let cascade_fin = match opts.propagation {
                Propagation::Foreground => Some("foregroundDeletion"),
                Propagation::Orphan => Some("orphan"),
                Propagation::Background => None,
            };
            if let Some(f) = cascade_fin {
                if !fins.iter().any(|x| x == f) {
                    fins.push(f.to_string());
                }
            }
            let namespace = t.info.kind == "Namespace";
            if grace.is_none() && fins.is_empty() && !namespace {
                if opts.dry_run {
                    return Ok((obj, true));
                }
                let key = t.info.key(t.namespace.as_deref(), name);
                match s.store.delete(&key, Some(kv.mod_revision)).await {
                    Ok(_) => {
                        after_delete(s, t, &obj).await;
                        return Ok((obj, true));
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(ApiError::from_store(t.info, name, e)),
                }
            }
            // Graceful: mark it and let finalizers / the node agent / the namespace cleaner finish.
            let mut new = obj.clone();
            let grace_secs = grace.unwrap_or(0);
            let deadline = crate::api::time::plus_seconds(chrono::Utc::now(), grace_secs).format("%Y-%m-%dT%H:%M:%SZ").to_string();
            let meta = new["metadata"].as_object_mut().ok_or_else(|| ApiError::internal("object without metadata"))?;
            let shorter = meta
                .get("deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
                .is_none_or(|old| grace_secs < old);
            if !is_deleting(&obj) || shorter {
                meta.insert("deletionTimestamp".into(), json!(deadline));
                meta.insert("deletionGracePeriodSeconds".into(), json!(grace_secs));
            }
            if !fins.is_empty() {
                meta.insert("finalizers".into(), json!(fins));
            }
            if namespace {
                new["status"]["phase"] = json!("Terminating");
            }
            if new == obj || opts.dry_run {
                return Ok((new, false));
            }
            let key = t.info.key(t.namespace.as_deref(), name);
            match s.store.update(&key, codec::to_stored(&new), kv.mod_revision).await {
                Ok(kv) => {
                    codec::set_resource_version(&mut new, kv.mod_revision);
                    if namespace {
                        let (s, ns) = (s.clone(), name.to_string());
                        tokio::spawn(async move { clean_namespace(&s, &ns).await });
                    }
                    return Ok((new, false));
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_store(t.info, name, e)),
            }
        }
        Err(ApiError::modified(t.info, name))
    })
}

/// Remove `finalizer` from an object (from `spec.finalizers` too for namespaces), deleting it if that was the last.
async fn remove_finalizer(s: &Arc<ApiServer>, t: &Target, name: &str, finalizer: &str) {
    for _ in 0..16 {
        let Ok((obj, kv)) = load(s, t, name).await else { return };
        let mut new = obj.clone();
        for ptr in ["/metadata/finalizers", "/spec/finalizers"] {
            if let Some(list) = new.pointer_mut(ptr).and_then(Value::as_array_mut) {
                list.retain(|f| f != finalizer);
            }
        }
        if new == obj {
            return;
        }
        let key = t.info.key(t.namespace.as_deref(), name);
        match s.store.update(&key, codec::to_stored(&new), kv.mod_revision).await {
            Ok(kv) => {
                if is_deleting(&new) && finalizers(&new).is_empty() && (t.info.kind != "Namespace" || namespace_finalizers(&new).is_empty()) {
                    let _ = finalize(s, t, &new, kv.mod_revision).await;
                }
                return;
            }
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => {
                tracing::warn!(error = %e, name, finalizer, "could not remove finalizer");
                return;
            }
        }
    }
}

/// Delete everything in namespace `ns`, then let the namespace go.
async fn clean_namespace(s: &Arc<ApiServer>, ns: &str) {
    let Some(ns_info) = resources::find("", "v1", "namespaces") else { return };
    loop {
        let mut remaining = 0;
        for info in resources::RESOURCES.iter().filter(|i| i.namespaced && i.is_stored()) {
            let t = Target { info, namespace: Some(ns.to_string()), name: None, sub: None };
            let filter = Filter { labels: LabelSelector::default(), fields: FieldSelector::default() };
            let Ok(page) = list_objects(s, &t, &filter, None, None).await else {
                remaining += 1;
                continue;
            };
            for obj in page.items {
                remaining += 1;
                if !is_deleting(&obj) {
                    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
                    let ot = Target { name: Some(name.clone()), ..t.clone() };
                    if let Err(e) = delete_object(s, &ot, &name, &DeleteOptions::default()).await {
                        tracing::debug!(error = %e, ns, name, "namespace cleanup: delete failed; will retry");
                    }
                }
            }
        }
        if remaining == 0 {
            let t = Target { info: ns_info, namespace: None, name: Some(ns.to_string()), sub: None };
            remove_finalizer(s, &t, ns, "kubernetes").await;
            // No other finalizers: the namespace is gone now; else whoever owns them finishes it.
            if let Ok((obj, kv)) = load(s, &t, ns).await {
                if finalizers(&obj).is_empty() && namespace_finalizers(&obj).is_empty() {
                    let _ = finalize(s, &t, &obj, kv.mod_revision).await;
                }
            }
            return;
        }
        if *s.closing().borrow() {
            return;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// At start: continue cleaning namespaces that were being deleted when the server stopped.
pub async fn resume_namespace_cleanup(s: &Arc<ApiServer>) {
    let Some(info) = resources::find("", "v1", "namespaces") else { return };
    let t = Target { info, namespace: None, name: None, sub: None };
    let filter = Filter { labels: LabelSelector::default(), fields: FieldSelector::default() };
    if let Ok(page) = list_objects(s, &t, &filter, None, None).await {
        for ns in page.items.into_iter().filter(is_deleting) {
            if let Some(name) = ns.pointer("/metadata/name").and_then(Value::as_str) {
                let (s, name) = (s.clone(), name.to_string());
                tokio::spawn(async move { clean_namespace(&s, &name).await });
            }
        }
    }
}

pub async fn delete(s: &Arc<ApiServer>, t: &Target, r: &Req) -> Result<Response, ApiError> {
    let format = codec::negotiate(&r.headers)?;
    let include = IncludeObject::parse(r.q("includeObject"))?;
    let opts = DeleteOptions::from_request(r)?;
    let name = t.name.as_deref().unwrap_or_default();
    let (obj, gone) = delete_object(s, t, name, &opts).await?;
    let code = if gone { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok(codec::object_response(code, t.info, &obj, format, include))
}

pub async fn delete_collection(s: &Arc<ApiServer>, t: &Target, r: &Req) -> Result<Response, ApiError> {
    let opts = DeleteOptions::from_request(r)?;
    let filter = Filter::from_request(t, r)?;
    let page = list_objects(s, t, &filter, None, None).await?;
    let mut deleted = Vec::new();
    for obj in page.items {
        let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let ns = obj.pointer("/metadata/namespace").and_then(Value::as_str).map(String::from);
        let ot = Target { namespace: ns, name: Some(name.clone()), ..t.clone() };
        match delete_object(s, &ot, &name, &opts).await {
            Ok((o, _)) => deleted.push(o),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(codec::json_response(
        StatusCode::OK,
        &json!({"kind": t.info.list_kind(), "apiVersion": t.info.api_version(), "metadata": {"resourceVersion": page.revision.to_string()}, "items": deleted}),
    ))
}

/// POST pods/<name>/eviction (policy/v1 Eviction), as upstream's eviction REST: a pod that is being deleted, or
/// Pending, Succeeded or Failed, goes at once; otherwise the one PodDisruptionBudget that selects it must allow a
/// disruption (`status.disruptionsAllowed` > 0), which the eviction takes (the budget's count goes down and the pod is
/// listed in `status.disruptedPods` until the disruption controller sees it gone). An unready pod may go without
/// taking from the budget when the budget is met anyway (IfHealthyBudget) or always (AlwaysAllow). Refusals are
/// 429 TooManyRequests with a `DisruptionBudget` cause, which `kubectl drain` retries.
pub async fn evict(s: &Arc<ApiServer>, t: &Target, r: &Req) -> Result<Response, ApiError> {
    let body = codec::decode_object(&r.headers, &r.body)?;
    let name = t.name.as_deref().unwrap_or_default();
    if let Some(n) = body.pointer("/metadata/name").and_then(Value::as_str) {
        if n != name {
            return Err(ApiError::bad_request(format!("name in URL does not match name in Eviction object ({n} != {name})")));
        }
    }
    let opts = DeleteOptions::parse(body.get("deleteOptions").unwrap_or(&json!({})), Some(r))?;
    let main = Target { sub: None, ..t.clone() };
    let ns = t.namespace.as_deref().unwrap_or_default();
    let mut allowed = false;
    for _ in 0..5 {
        let (pod, _) = load(s, &main, name).await?;
        if budgets_do_not_apply(&pod) {
            allowed = true;
            break;
        }
        let pdb_info = resources::find("policy", "v1", "poddisruptionbudgets").ok_or_else(|| ApiError::internal("no poddisruptionbudgets resource"))?;
        let listed = s.store.list(&pdb_info.prefix(Some(ns)), Default::default()).await.map_err(|e| ApiError::from_store(pdb_info, "", e))?;
        let mut budgets = Vec::new();
        for kv in &listed.items {
            let pdb = codec::object_from_kv(kv)?;
            if selects(&pdb, &pod) {
                budgets.push((pdb, kv.clone()));
            }
        }
        let (pdb, kv) = match budgets.len() {
            0 => {
                allowed = true;
                break;
            }
            1 => budgets.pop().unwrap_or_else(|| unreachable!("one budget")),
            _ => return Err(ApiError::internal("This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.")),
        };
        let status_i64 = |k: &str| pdb.pointer(&format!("/status/{k}")).and_then(Value::as_i64).unwrap_or(0);
        let pdb_name = pdb.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let ready = pod.pointer("/status/conditions").and_then(Value::as_array).is_some_and(|c| {
            c.iter().any(|c| c.get("type").and_then(Value::as_str) == Some("Ready") && c.get("status").and_then(Value::as_str) == Some("True"))
        });
        if !ready {
            let always = pdb.pointer("/spec/unhealthyPodEvictionPolicy").and_then(Value::as_str) == Some("AlwaysAllow");
            if always || (status_i64("currentHealthy") >= status_i64("desiredHealthy") && status_i64("desiredHealthy") > 0) {
                allowed = true;
                break;
            }
        }
        let too_many = |message: String| {
            let mut e = ApiError::new(429, "TooManyRequests", "Cannot evict pod as it would violate the pod's disruption budget.");
            e.details = Some(json!({"causes": [{"reason": "DisruptionBudget", "message": message}]}));
            e
        };
        let generation = pdb.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0);
        if status_i64("observedGeneration") < generation {
            return Err(too_many(format!("The disruption budget {pdb_name} is still being processed by the server.")));
        }
        let allowed_now = status_i64("disruptionsAllowed");
        if allowed_now < 0 {
            return Err(ApiError::forbidden("pdb disruptions allowed is negative"));
        }
        if pdb.pointer("/status/disruptedPods").and_then(Value::as_object).is_some_and(|m| m.len() > 2000) {
            return Err(ApiError::forbidden("DisruptedPods map too big - too many evictions not confirmed by PDB controller"));
        }
        if allowed_now == 0 {
            return Err(too_many(format!(
                "The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                status_i64("desiredHealthy"),
                status_i64("currentHealthy")
            )));
        }
        if r.dry_run() {
            allowed = true;
            break;
        }
        let mut updated = pdb.clone();
        updated["status"]["disruptionsAllowed"] = json!(allowed_now - 1);
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        match updated["status"].get_mut("disruptedPods").and_then(Value::as_object_mut) {
            Some(m) => {
                m.insert(name.to_string(), json!(now));
            }
            None => updated["status"]["disruptedPods"] = json!({ name: now }),
        }
        match s.store.update(&kv.key, codec::to_stored(&updated), kv.mod_revision).await {
            Ok(_) => {
                allowed = true;
                break;
            }
            // Another eviction (or the controller) changed the budget meanwhile: decide again.
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(pdb_info, &pdb_name, e)),
        }
    }
    if !allowed {
        return Err(ApiError::new(429, "TooManyRequests", "the pod's disruption budget kept changing; try again"));
    }
    delete_object(s, &main, name, &opts).await?;
    Ok(codec::json_response(
        StatusCode::CREATED,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    ))
}

/// Pods that go without asking any budget (upstream's `canIgnorePDB`).
fn budgets_do_not_apply(pod: &Value) -> bool {
    pod.pointer("/metadata/deletionTimestamp").is_some_and(|t| !t.is_null())
        || matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed" | "Pending"))
}

/// Does the budget select the pod? A budget without a selector selects nothing; `{}` selects every pod.
fn selects(pdb: &Value, pod: &Value) -> bool {
    let Some(sel) = pdb.pointer("/spec/selector").filter(|s| !s.is_null()) else { return false };
    LabelSelector::from_json(sel).is_ok_and(|sel| sel.matches_labels(pod.pointer("/metadata/labels").and_then(Value::as_object)))
}

/// Compact store history every interval, keeping at least one interval of it (as kube-apiserver does).
pub async fn compaction_loop(s: Arc<ApiServer>) {
    let every = s.config.compaction_interval;
    let mut previous: Option<i64> = None;
    loop {
        tokio::time::sleep(every).await;
        if let Some(rev) = previous {
            match s.store.compact(rev).await {
                Ok(()) => tracing::debug!(revision = rev, "store compacted"),
                Err(StoreError::Compacted { .. }) => {}
                Err(e) => tracing::warn!(error = %e, "store compaction failed"),
            }
        }
        previous = s.store.current_revision().await.ok();
    }
}
