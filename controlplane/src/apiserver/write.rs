//! create, update, patch, and the scale and binding subresources.

use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use serde_json::{json, Value};

use super::codec::{self, IncludeObject};
use super::errors::ApiError;
use super::read::load;
use super::{ApiServer, Req, Target};
use crate::api::resources::{self, ResourceInfo, Subresource};
use crate::api::selectors::LabelSelector;
use crate::api::{strategic, strategy, typed, validation};
use crate::store::{KeyValue, StoreError};

/// Retries of a read-modify-write that lost a race without the client asking for a precondition.
const MAX_RETRIES: usize = 16;

pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn name_of(obj: &Value) -> &str {
    obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
}

/// Fill in apiVersion and kind from the URL (the Python client sends neither) and reject a mismatch.
fn check_type(info: &ResourceInfo, obj: &mut Value) -> Result<(), ApiError> {
    let want_av = info.api_version();
    let m = obj.as_object_mut().ok_or_else(|| ApiError::bad_request("the request body must be a JSON object"))?;
    match m.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            m.insert("apiVersion".into(), json!(want_av));
        }
        Some(av) if av != want_av => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({av}) does not match the expected API version ({want_av})"
            )))
        }
        Some(_) => {}
    }
    match m.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            m.insert("kind".into(), json!(info.kind));
        }
        Some(k) if k != info.kind => {
            return Err(ApiError::bad_request(format!(
                "the kind in the data ({k}) does not match the expected kind ({}) for this URL",
                info.kind
            )))
        }
        Some(_) => {}
    }
    if !m.get("metadata").is_none_or(Value::is_object) {
        return Err(ApiError::bad_request("metadata must be an object"));
    }
    m.entry("metadata").or_insert_with(|| json!({}));
    Ok(())
}

/// Set the namespace from the URL; a different one in the body is an error.
fn check_namespace(t: &Target, obj: &mut Value) -> Result<(), ApiError> {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else { return Ok(()) };
    if !t.info.namespaced {
        meta.remove("namespace");
        return Ok(());
    }
    let url_ns = t.namespace.as_deref().unwrap_or("default");
    match meta.get("namespace").and_then(Value::as_str) {
        Some(ns) if !ns.is_empty() && ns != url_ns => Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        )),
        _ => {
            meta.insert("namespace".into(), json!(url_ns));
            Ok(())
        }
    }
}

/// Type-check the body; with `fieldValidation=Strict` unknown fields are an error, otherwise a warning.
fn check_fields(info: &ResourceInfo, obj: &Value, r: &Req) -> Result<Option<String>, ApiError> {
    codec::check_depth(info.kind, obj)?;
    let unknown = typed::check(&info.type_key(), obj).map_err(|e| {
        ApiError::bad_request(format!("{} in version \"{}\" cannot be handled as a {}: {e}", info.kind, info.version, info.kind))
    })?;
    if unknown.is_empty() {
        return Ok(None);
    }
    let list: Vec<String> = unknown.iter().map(|f| format!("unknown field \"{f}\"")).collect();
    match r.q("fieldValidation") {
        Some("Strict") => Err(ApiError::bad_request(format!(
            "{} in version \"{}\" cannot be handled as a {}: strict decoding error: {}",
            info.kind,
            info.version,
            info.kind,
            list.join(", ")
        ))),
        Some("Ignore") => Ok(None),
        _ => Ok(Some(list.join(", "))),
    }
}

fn with_warning(mut resp: Response, warning: Option<String>) -> Response {
    if let Some(w) = warning {
        let text = format!("299 - \"{}\"", w.replace('"', "'"));
        if let Ok(v) = HeaderValue::from_str(&text) {
            resp.headers_mut().insert("Warning", v);
        }
    }
    resp
}

fn validate(info: &ResourceInfo, obj: &Value, old: Option<&Value>) -> Result<(), ApiError> {
    let mut errs = validation::validate(&info.type_key(), obj, info.namespaced);
    if let Some(old) = old {
        // Ratcheting, as upstream: an update may keep what the stored object already got wrong (stored before
        // a rule existed), so that finalizers, labels and status can still be changed and the object deleted.
        if !errs.is_empty() {
            let before = validation::validate(&info.type_key(), old, info.namespaced);
            errs.retain(|e| !before.contains(e));
        }
        errs.extend(validation::validate_update(&info.type_key(), obj, old));
    }
    if errs.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid(info, name_of(obj), &errs))
    }
}

/// Upstream's generateName suffix: 5 characters without vowels or confusable digits.
pub(crate) fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes()[..5].iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

async fn ensure_namespace_usable(s: &ApiServer, t: &Target) -> Result<(), ApiError> {
    if !t.info.namespaced {
        return Ok(());
    }
    let ns = t.namespace.as_deref().unwrap_or("default");
    let nsinfo = resources::find("", "v1", "namespaces").ok_or_else(|| ApiError::internal("no namespaces resource"))?;
    match s.store.get(&nsinfo.key(None, ns)).await.map_err(|e| ApiError::from_store(nsinfo, ns, e))? {
        None => Err(ApiError::not_found(nsinfo, ns)),
        Some(kv) => {
            let obj = codec::object_from_kv(&kv)?;
            if obj.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
                Err(ApiError::forbidden(format!(
                    "unable to create new content in namespace {ns} because it is being terminated"
                )))
            } else {
                Ok(())
            }
        }
    }
}

/// Decode, check and store a new object. Returns it as stored.
pub async fn create_object(s: &ApiServer, t: &Target, mut obj: Value, r: &Req) -> Result<(Value, Option<String>), ApiError> {
    check_type(t.info, &mut obj)?;
    check_namespace(t, &mut obj)?;
    let warning = check_fields(t.info, &obj, r)?;
    let generate = obj.pointer("/metadata/generateName").and_then(Value::as_str).unwrap_or_default().to_string();
    let explicit_name = !name_of(&obj).is_empty();
    if !explicit_name && generate.is_empty() {
        return Err(ApiError::invalid(t.info, "", &[validation::FieldError::required("metadata.name")]));
    }
    ensure_namespace_usable(s, t).await?;
    let ns = t.namespace.as_deref().unwrap_or("default");
    match t.info.kind {
        "PersistentVolumeClaim" => {
            super::storage::admit_claim(s, &mut obj).await?;
            super::limits::admit_claim(s, ns, &obj).await?;
        }
        "PersistentVolume" => super::storage::admit_volume(&mut obj),
        "Pod" => {
            super::limits::admit_pod(s, ns, &mut obj).await?;
            super::priority::admit_pod(s, &mut obj).await?;
        }
        "PriorityClass" => super::priority::admit_class(s, &obj).await?,
        _ => {}
    }
    if let Some(sa) = s.service_accounts() {
        let ns = t.namespace.as_deref().unwrap_or("default");
        match t.info.kind {
            "Pod" => super::serviceaccounts::admit_pod(s, ns, &mut obj).await?,
            "Secret" => super::serviceaccounts::fill_token_secret(s, sa, ns, &mut obj).await?,
            _ => {}
        }
    }
    // Last of the admissions, as upstream's: what the object (with the defaults above) is charged.
    if t.info.namespaced && t.info.kind != "Event" {
        super::quota::admit(s, t.info, ns, &obj, r.dry_run()).await?;
    }
    if t.info.kind == "CertificateSigningRequest" {
        // Who asked is what the approver judges: the requester's identity, never what the body claims.
        if let (Some(id), Some(spec)) = (&r.user, obj.get_mut("spec").and_then(Value::as_object_mut)) {
            spec.insert("username".into(), json!(id.user));
            spec.insert("uid".into(), json!(id.uid));
            spec.insert("groups".into(), json!(id.groups));
            spec.remove("extra");
        }
    }
    let uid = uuid::Uuid::new_v4().to_string();
    for _attempt in 0..8 {
        let mut candidate = obj.clone();
        if !explicit_name {
            candidate["metadata"]["name"] = json!(format!("{generate}{}", random_suffix()));
        }
        strategy::prepare_create(t.info, &mut candidate, &uid, &now_rfc3339());
        if t.info.kind == "Pod" {
            crate::api::defaults::pod_default_tolerations(&mut candidate, s.config.default_toleration_seconds);
        }
        validate(t.info, &candidate, None)?;
        let name = name_of(&candidate).to_string();
        let allocated = if t.info.kind == "Service" {
            s.alloc.allocate_service(&mut candidate, None).await.map_err(|e| ApiError::invalid(t.info, &name, &[e]))?
        } else {
            Default::default()
        };
        if r.dry_run() {
            s.alloc.release(&allocated).await;
            return Ok((candidate, warning));
        }
        let key = t.info.key(t.namespace.as_deref(), &name);
        match s.store.create(&key, codec::to_stored(&candidate)).await {
            Ok(kv) => {
                codec::set_resource_version(&mut candidate, kv.mod_revision);
                if let (Some(sa), "Namespace") = (s.service_accounts(), t.info.kind) {
                    // The namespace's default service account and CA ConfigMap, at once (the repair loop would
                    // make them within seconds, but a pod created right after the namespace needs them).
                    if let Err(e) = Box::pin(super::serviceaccounts::ensure_namespace_defaults(s, sa, &name)).await {
                        tracing::warn!(namespace = %name, error = %e.message, "namespace defaults");
                    }
                }
                return Ok((candidate, warning));
            }
            Err(StoreError::AlreadyExists(_)) if !explicit_name => {
                s.alloc.release(&allocated).await;
                continue;
            }
            Err(e) => {
                s.alloc.release(&allocated).await;
                return Err(ApiError::from_store(t.info, &name, e));
            }
        }
    }
    Err(ApiError::new(500, "AlreadyExists", "could not generate a unique name; try again"))
}

pub async fn create(s: &Arc<ApiServer>, t: &Target, r: &Req) -> Result<Response, ApiError> {
    let format = codec::negotiate(&r.headers)?;
    let include = IncludeObject::parse(r.q("includeObject"))?;
    let obj = codec::decode_object(&r.headers, &r.body)?;
    let (created, warning) = create_object(s, t, obj, r).await?;
    Ok(with_warning(codec::object_response(StatusCode::CREATED, t.info, &created, format, include), warning))
}

fn body_resource_version(obj: &Value) -> Result<Option<i64>, ApiError> {
    match obj.pointer("/metadata/resourceVersion") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => {
            s.parse().map(Some).map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {s:?}")))
        }
        Some(other) => Err(ApiError::bad_request(format!("invalid resourceVersion {other}"))),
    }
}

/// Store `new` (already the full object the client wants) over `old`, applying the update strategy.
/// Returns None when `expected` no longer matches and the caller should retry.
pub async fn store_update(
    s: &Arc<ApiServer>,
    t: &Target,
    sub: Option<Subresource>,
    new: Value,
    old: &Value,
    old_kv: &KeyValue,
    dry_run: bool,
) -> Result<Option<Value>, ApiError> {
    let name = t.name.as_deref().unwrap_or_default();
    let mut out = strategy::prepare_update(t.info, sub, new, old);
    if sub.is_none() {
        validate(t.info, &out, Some(old))?;
        if t.info.kind == "PriorityClass" {
            super::priority::admit_class(s, &out).await?;
        }
    }
    let mut old_cmp = old.clone();
    if let Some(m) = old_cmp.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    let allocated = if t.info.kind == "Service" && sub.is_none() {
        s.alloc.allocate_service(&mut out, Some(old)).await.map_err(|e| ApiError::invalid(t.info, name, &[e]))?
    } else {
        Default::default()
    };
    if out == old_cmp {
        // A no-op update keeps the resourceVersion, as upstream.
        return Ok(Some(old.clone()));
    }
    if dry_run {
        s.alloc.release(&allocated).await;
        return Ok(Some(out));
    }
    let key = t.info.key(t.namespace.as_deref(), name);
    match s.store.update(&key, codec::to_stored(&out), old_kv.mod_revision).await {
        Ok(kv) => {
            if t.info.kind == "Service" {
                s.alloc.release_unused(old, &out).await;
            }
            codec::set_resource_version(&mut out, kv.mod_revision);
            // Removing the last finalizer of an object being deleted completes the delete.
            if super::delete::ready_to_finalize(t.info, old, &out) {
                super::delete::finalize(s, t, &out, kv.mod_revision).await?;
            }
            Ok(Some(out))
        }
        Err(StoreError::Conflict { .. }) => {
            s.alloc.release(&allocated).await;
            Ok(None)
        }
        Err(e) => {
            s.alloc.release(&allocated).await;
            Err(ApiError::from_store(t.info, name, e))
        }
    }
}

pub async fn update(s: &Arc<ApiServer>, t: &Target, r: &Req) -> Result<Response, ApiError> {
    let format = codec::negotiate(&r.headers)?;
    let include = IncludeObject::parse(r.q("includeObject"))?;
    let name = t.name.as_deref().unwrap_or_default();
    let mut obj = codec::decode_object(&r.headers, &r.body)?;
    check_type(t.info, &mut obj)?;
    check_namespace(t, &mut obj)?;
    if name_of(&obj) != name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            name_of(&obj)
        )));
    }
    let warning = check_fields(t.info, &obj, r)?;
    let precondition = body_resource_version(&obj)?;
    for _ in 0..MAX_RETRIES {
        let (old, old_kv) = load(s, t, name).await?;
        if precondition.is_some_and(|rv| rv != old_kv.mod_revision) {
            return Err(ApiError::modified(t.info, name));
        }
        if let Some(out) = store_update(s, t, t.sub, obj.clone(), &old, &old_kv, r.dry_run()).await? {
            return Ok(with_warning(codec::object_response(StatusCode::OK, t.info, &out, format, include), warning));
        }
        if precondition.is_some() {
            return Err(ApiError::modified(t.info, name));
        }
    }
    Err(ApiError::modified(t.info, name))
}

/// RFC 6902 as upstream's API server applies it (evanphx/json-patch v4): a `replace` of a key missing from an object
/// that exists adds the key (`kubectl rollout undo` replaces `/metadata/annotations`, which may be missing). The
/// operations apply in order; on an error the caller drops the half-patched copy.
///
/// Bounded as upstream bounds it: at most [`MAX_JSON_PATCH_OPS`] operations, and `copy` operations together copy at
/// most [`MAX_JSON_PATCH_COPY_BYTES`] (each one can double the document). Every value an operation puts in place is
/// kept within [`codec::MAX_OBJECT_DEPTH`] as it goes, so that no later operation works on a value deeper than the
/// stack allows to clone or drop: added, replaced and copied values are measured (their sizes are bounded by the body
/// and the copy limit), a moved value only when it moves deeper, within a budget of visited nodes.
fn json_patch_lenient(doc: &mut Value, patch: json_patch::Patch) -> Result<(), ApiError> {
    use json_patch::{AddOperation, PatchOperation};
    if patch.0.len() > MAX_JSON_PATCH_OPS {
        return Err(ApiError::new(
            413,
            "RequestEntityTooLarge",
            format!("The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPS}, got {}", patch.0.len()),
        ));
    }
    let failed = |e: String| ApiError::new(422, "Invalid", format!("the JSON patch could not be applied: {e}"));
    let tokens = |p: &json_patch::jsonptr::PointerBuf| p.as_str().matches('/').count();
    let mut copied = 0usize;
    let mut walk_budget = MAX_JSON_PATCH_WALK_NODES;
    for op in patch.0 {
        if let PatchOperation::Copy(c) = &op {
            let size = doc.pointer(c.from.as_str()).map_or(0, |v| json_size_capped(v, MAX_JSON_PATCH_COPY_BYTES));
            copied = copied.saturating_add(size);
            if copied > MAX_JSON_PATCH_COPY_BYTES {
                return Err(failed(format!("the copy operations copy more than {MAX_JSON_PATCH_COPY_BYTES} bytes")));
            }
        }
        // Where the operation puts a value, and whether that value needs measuring.
        let placed = match &op {
            PatchOperation::Add(o) => Some((o.path.clone(), true)),
            PatchOperation::Replace(o) => Some((o.path.clone(), true)),
            PatchOperation::Copy(o) => Some((o.path.clone(), true)),
            PatchOperation::Move(o) => Some((o.path.clone(), tokens(&o.path) > tokens(&o.from))),
            _ => None,
        };
        let op = match op {
            PatchOperation::Replace(r) => {
                let missing_key = r.path.split_back().is_some_and(|(parent, key)| {
                    doc.pointer(parent.as_str()).and_then(Value::as_object).is_some_and(|o| !o.contains_key(key.decoded().as_ref()))
                });
                if missing_key {
                    PatchOperation::Add(AddOperation { path: r.path, value: r.value })
                } else {
                    PatchOperation::Replace(r)
                }
            }
            op => op,
        };
        json_patch::patch(doc, std::slice::from_ref(&op)).map_err(|e| failed(e.to_string()))?;
        if let Some((path, measure)) = placed {
            let deep = || failed(format!("the result is nested deeper than {} levels", codec::MAX_OBJECT_DEPTH));
            let levels = tokens(&path);
            if levels > codec::MAX_OBJECT_DEPTH {
                return Err(deep());
            }
            // The value now at `path` (for an array's "-", the parent array) sits `levels` deep.
            let at = doc.pointer(path.as_str()).or_else(|| path.split_back().and_then(|(parent, _)| doc.pointer(parent.as_str())));
            if let (true, Some(v)) = (measure, at) {
                let room = codec::MAX_OBJECT_DEPTH - levels;
                if codec::depth_counting(v, room, &mut walk_budget) > room {
                    return Err(deep());
                }
                if walk_budget == 0 {
                    return Err(failed("the patch moves too much to check".into()));
                }
            }
        }
    }
    Ok(())
}

/// Upstream's maxJSONPatchOperations.
const MAX_JSON_PATCH_OPS: usize = 10_000;
/// Arrays and objects the depth checks of one patch may visit.
const MAX_JSON_PATCH_WALK_NODES: usize = 20_000_000;
/// What `copy` operations may copy in all (upstream: 3 × the largest request body).
const MAX_JSON_PATCH_COPY_BYTES: usize = 3 * 3 * 1024 * 1024;

/// The size of `v` as compact JSON, counting no further than `limit + 1` (iterative, as [`codec::depth_capped`]).
fn json_size_capped(v: &Value, limit: usize) -> usize {
    let mut size = 0usize;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        size += match v {
            Value::Null => 4,
            Value::Bool(b) => 4 + usize::from(!b),
            Value::Number(n) => n.to_string().len(),
            Value::String(s) => s.len() + 2,
            Value::Array(a) => {
                stack.extend(a.iter());
                2 + a.len()
            }
            Value::Object(o) => {
                stack.extend(o.values());
                o.keys().map(|k| k.len() + 4).sum::<usize>() + 2
            }
        };
        if size > limit {
            return size;
        }
    }
    size
}

/// Apply a patch document of the request's patch type to `doc`.
fn apply_patch(info: &ResourceInfo, r: &Req, doc: &Value) -> Result<Value, ApiError> {
    let ct = codec::content_type(&r.headers);
    match ct.as_str() {
        "application/json-patch+json" => {
            let patch: json_patch::Patch = serde_json::from_slice(&r.body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
            let mut out = doc.clone();
            json_patch_lenient(&mut out, patch)?;
            Ok(out)
        }
        "application/merge-patch+json" => {
            let patch = codec::decode_json(&r.body)?;
            if !patch.is_object() {
                return Err(ApiError::bad_request("a merge patch must be a JSON object"));
            }
            let mut out = doc.clone();
            json_patch::merge(&mut out, &patch);
            Ok(out)
        }
        "application/strategic-merge-patch+json" => {
            let patch = codec::decode_json(&r.body)?;
            strategic::apply(&info.type_key(), doc, &patch).map_err(|e| ApiError::bad_request(format!("invalid strategic merge patch: {e}")))
        }
        "application/apply-patch+yaml" | "application/apply-patch+json" => {
            let patch = codec::decode_yaml(&r.body)?;
            strategic::apply(&info.type_key(), doc, &patch).map_err(|e| ApiError::bad_request(format!("invalid apply patch: {e}")))
        }
        other => Err(ApiError::unsupported_media(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
        ))),
    }
}

pub async fn patch(s: &Arc<ApiServer>, t: &Target, r: &Req) -> Result<Response, ApiError> {
    let format = codec::negotiate(&r.headers)?;
    let include = IncludeObject::parse(r.q("includeObject"))?;
    let name = t.name.as_deref().unwrap_or_default();
    let is_apply = codec::content_type(&r.headers).starts_with("application/apply-patch");
    if is_apply && r.q("fieldManager").is_none() {
        return Err(ApiError::bad_request("PATCH with apply requires a fieldManager"));
    }
    for _ in 0..MAX_RETRIES {
        let (old, old_kv) = match load(s, t, name).await {
            Ok(x) => x,
            // Server-side apply creates what does not exist yet.
            Err(e) if e.code == 404 && is_apply && t.sub.is_none() => {
                let mut obj = codec::decode_yaml(&r.body)?;
                if !obj.is_object() {
                    return Err(ApiError::bad_request("the apply body must be an object"));
                }
                if name_of(&obj) != name {
                    return Err(ApiError::bad_request(format!(
                        "the name of the object ({}) does not match the name on the URL ({name})",
                        name_of(&obj)
                    )));
                }
                if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                match create_object(s, t, obj, r).await {
                    Ok((created, warning)) => {
                        return Ok(with_warning(codec::object_response(StatusCode::CREATED, t.info, &created, format, include), warning))
                    }
                    // Lost a race with another creator: patch what they made.
                    Err(e) if e.reason == "AlreadyExists" => continue,
                    Err(e) => return Err(e),
                }
            }
            Err(e) => return Err(e),
        };
        let mut patched = apply_patch(t.info, r, &old)?;
        check_type(t.info, &mut patched)?;
        check_namespace(t, &mut patched)?;
        if name_of(&patched) != name {
            return Err(ApiError::bad_request("a patch may not change the object's name"));
        }
        let warning = check_fields(t.info, &patched, r)?;
        // A resourceVersion in the patch is a precondition.
        let precondition = body_resource_version(&patched)?;
        if precondition.is_some_and(|rv| rv != old_kv.mod_revision) {
            return Err(ApiError::modified(t.info, name));
        }
        if let Some(out) = store_update(s, t, t.sub, patched, &old, &old_kv, r.dry_run()).await? {
            return Ok(with_warning(codec::object_response(StatusCode::OK, t.info, &out, format, include), warning));
        }
    }
    Err(ApiError::modified(t.info, name))
}

fn scale_of(t: &Target, obj: &Value) -> Result<Value, ApiError> {
    let selector = match obj.pointer("/spec/selector") {
        Some(sel) => LabelSelector::from_json(sel).map(|s| s.to_string()).unwrap_or_default(),
        None => String::new(),
    };
    let meta = obj.get("metadata").cloned().unwrap_or_default();
    let _ = t;
    Ok(json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"),
            "namespace": meta.get("namespace"),
            "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"),
            "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    }))
}

pub async fn get_scale(s: &Arc<ApiServer>, t: &Target) -> Result<Response, ApiError> {
    let (obj, _) = load(s, t, t.name.as_deref().unwrap_or_default()).await?;
    Ok(codec::json_response(StatusCode::OK, &scale_of(t, &obj)?))
}

/// Set spec.replicas from a Scale, computed from the current object by `f`.
async fn scale_with(
    s: &Arc<ApiServer>,
    t: &Target,
    r: &Req,
    f: impl Fn(&Value) -> Result<Value, ApiError>,
) -> Result<Response, ApiError> {
    let name = t.name.as_deref().unwrap_or_default();
    for _ in 0..MAX_RETRIES {
        let (old, old_kv) = load(s, t, name).await?;
        let scale = f(&scale_of(t, &old)?)?;
        let precondition = body_resource_version(&scale)?;
        if precondition.is_some_and(|rv| rv != old_kv.mod_revision) {
            return Err(ApiError::modified(t.info, name));
        }
        let replicas = match scale.pointer("/spec/replicas") {
            Some(Value::Number(n)) if n.as_i64().is_some_and(|n| (0..=i32::MAX as i64).contains(&n)) => n.clone(),
            other => {
                let v = other.cloned().unwrap_or(Value::Null);
                return Err(ApiError::invalid(t.info, name, &[validation::FieldError::invalid("spec.replicas", &v, "must be greater than or equal to 0")]));
            }
        };
        let mut new = old.clone();
        new["spec"]["replicas"] = Value::Number(replicas);
        let main = Target { sub: None, ..t.clone() };
        if let Some(out) = store_update(s, &main, None, new, &old, &old_kv, r.dry_run()).await? {
            return Ok(codec::json_response(StatusCode::OK, &scale_of(t, &out)?));
        }
    }
    Err(ApiError::modified(t.info, name))
}

pub async fn update_scale(s: &Arc<ApiServer>, t: &Target, r: &Req) -> Result<Response, ApiError> {
    let body = codec::decode_object(&r.headers, &r.body)?;
    scale_with(s, t, r, |_| Ok(body.clone())).await
}

pub async fn patch_scale(s: &Arc<ApiServer>, t: &Target, r: &Req) -> Result<Response, ApiError> {
    let scale_info = ResourceInfo { kind: "Scale", group: "autoscaling", ..*t.info };
    scale_with(s, t, r, |current| apply_patch(&scale_info, r, current)).await
}

/// POST pods/<name>/binding: the scheduler's (or a user's) assignment of a pod to a node.
pub async fn bind(s: &Arc<ApiServer>, t: &Target, r: &Req) -> Result<Response, ApiError> {
    let body = codec::decode_object(&r.headers, &r.body)?;
    let name = t.name.as_deref().unwrap_or_default();
    let node = body.pointer("/target/name").and_then(Value::as_str).unwrap_or_default().to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(t.info, name, &[validation::FieldError::required("target.name")]));
    }
    let main = Target { sub: None, ..t.clone() };
    for _ in 0..MAX_RETRIES {
        let (old, old_kv) = load(s, &main, name).await?;
        if let Some(uid) = body.pointer("/metadata/uid").and_then(Value::as_str) {
            if old.pointer("/metadata/uid").and_then(Value::as_str) != Some(uid) {
                return Err(ApiError::conflict(t.info, name, "the UID in the binding does not match the pod"));
            }
        }
        if let Some(current) = old.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
            return Err(ApiError::conflict(t.info, name, &format!("pod {name} is already assigned to node \"{current}\"")));
        }
        if old.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
            return Err(ApiError::conflict(t.info, name, &format!("pod {name} is being deleted, cannot be assigned to a host")));
        }
        let mut new = old.clone();
        new["spec"]["nodeName"] = json!(node);
        let mut status = new.get("status").cloned().unwrap_or_else(|| json!({}));
        let conds = status.get("conditions").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut conds: Vec<Value> = conds.into_iter().filter(|c| c["type"] != "PodScheduled").collect();
        conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now_rfc3339()}));
        status["conditions"] = Value::Array(conds);
        new["status"] = status;
        let key = main.info.key(main.namespace.as_deref(), name);
        if r.dry_run() {
            break;
        }
        match s.store.update(&key, codec::to_stored(&new), old_kv.mod_revision).await {
            Ok(_) => break,
            Err(StoreError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_store(t.info, name, e)),
        }
    }
    Ok(codec::json_response(StatusCode::CREATED, &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201})))
}

/// Create an object the server itself keeps (bootstrap policy, system namespaces, namespace defaults, the
/// default StorageClass) unless it exists. Ok(true): created now.
pub async fn create_if_missing(s: &ApiServer, info: &'static ResourceInfo, namespace: Option<&str>, obj: Value) -> Result<bool, ApiError> {
    let t = Target { info, namespace: namespace.map(str::to_string), name: None, sub: None };
    let req = Req { user: None, method: axum::http::Method::POST, headers: Default::default(), query: Default::default(), body: Default::default() };
    match create_object(s, &t, obj, &req).await {
        Ok(_) => Ok(true),
        Err(e) if e.reason == "AlreadyExists" => Ok(false),
        Err(e) => Err(e),
    }
}

/// Create the default ClusterRoles and ClusterRoleBindings that do not exist, and reconcile the existing ones.
pub async fn ensure_bootstrap_policy(s: &Arc<ApiServer>) -> Result<(), ApiError> {
    let (roles, bindings) = crate::auth::bootstrap_policy();
    for (plural, objs) in [("clusterroles", roles), ("clusterrolebindings", bindings)] {
        let info = resources::find("rbac.authorization.k8s.io", "v1", plural).ok_or_else(|| ApiError::internal("no RBAC resources"))?;
        for obj in objs {
            let name = name_of(&obj).to_string();
            if !create_if_missing(s, info, None, obj.clone()).await? {
                reconcile_bootstrap(s, info, &name, &obj).await?;
            }
        }
    }
    Ok(())
}

/// An existing default role or binding marked `rbac.authorization.kubernetes.io/autoupdate: "true"` gets what a
/// newer Skiff adds to it (missing rules, aggregation selectors, subjects), as upstream reconciles its bootstrap
/// policy at start; an administrator who set the annotation to "false" keeps theirs untouched.
async fn reconcile_bootstrap(s: &ApiServer, info: &'static ResourceInfo, name: &str, want: &Value) -> Result<(), ApiError> {
    let key = info.key(None, name);
    let Some(kv) = s.store.get(&key).await.map_err(|e| ApiError::from_store(info, name, e))? else { return Ok(()) };
    let mut have = codec::object_from_kv(&kv)?;
    if have.pointer("/metadata/annotations/rbac.authorization.kubernetes.io~1autoupdate").and_then(Value::as_str) != Some("true") {
        return Ok(());
    }
    let mut changed = false;
    let mut union = |have: &mut Value, field: &str, want: &Value| {
        let Some(wanted) = want.pointer(field).and_then(Value::as_array) else { return };
        if have.pointer(field).is_none_or(|v| !v.is_array()) {
            let (parent, leaf) = field.rsplit_once('/').unwrap_or(("", field));
            if let Some(p) = if parent.is_empty() { Some(&mut *have) } else { have.pointer_mut(parent) }.and_then(Value::as_object_mut) {
                p.insert(leaf.to_string(), json!([]));
            } else {
                return;
            }
        }
        let Some(list) = have.pointer_mut(field).and_then(Value::as_array_mut) else { return };
        for w in wanted {
            if !list.contains(w) {
                list.push(w.clone());
                changed = true;
            }
        }
    };
    union(&mut have, "/rules", want);
    union(&mut have, "/subjects", want);
    if want.get("aggregationRule").is_some() {
        if have.get("aggregationRule").is_none() {
            have["aggregationRule"] = json!({"clusterRoleSelectors": []});
        }
        union(&mut have, "/aggregationRule/clusterRoleSelectors", want);
    }
    if !changed {
        return Ok(());
    }
    if let Some(m) = have.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    match s.store.update(&key, codec::to_stored(&have), kv.mod_revision).await {
        Ok(_) => tracing::info!(kind = info.kind, name, "default RBAC object brought up to date"),
        // Another API server did it first.
        Err(e) => tracing::debug!(kind = info.kind, name, error = %e, "reconciling a default RBAC object"),
    }
    Ok(())
}

pub async fn ensure_system_namespaces(s: &Arc<ApiServer>) -> Result<(), ApiError> {
    let info = resources::find("", "v1", "namespaces").ok_or_else(|| ApiError::internal("no namespaces resource"))?;
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        create_if_missing(s, info, None, json!({"metadata": {"name": ns}})).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::json_patch_lenient;
    use serde_json::json;

    fn apply(doc: serde_json::Value, patch: serde_json::Value) -> Result<serde_json::Value, String> {
        let mut doc = doc;
        json_patch_lenient(&mut doc, serde_json::from_value(patch).unwrap()).map_err(|e| e.to_string())?;
        Ok(doc)
    }

    #[test]
    fn replace_of_a_missing_key_adds_it_as_upstream_does() {
        let doc = json!({"metadata": {"name": "web"}, "spec": {"replicas": 1}});
        let out = apply(
            doc.clone(),
            json!([{"op": "replace", "path": "/spec/replicas", "value": 3},
                   {"op": "replace", "path": "/metadata/annotations", "value": {"a": "b"}}]),
        )
        .unwrap();
        assert_eq!(out, json!({"metadata": {"name": "web", "annotations": {"a": "b"}}, "spec": {"replicas": 3}}));
        // Still errors: a missing parent, an index past the end, a failed test.
        assert!(apply(doc.clone(), json!([{"op": "replace", "path": "/status/x", "value": 1}])).is_err());
        assert!(apply(json!({"a": [1]}), json!([{"op": "replace", "path": "/a/5", "value": 1}])).is_err());
        assert!(apply(doc, json!([{"op": "test", "path": "/spec/replicas", "value": 2}])).is_err());
    }
}
