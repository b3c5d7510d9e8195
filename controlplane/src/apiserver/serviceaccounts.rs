//! Service accounts in the API server (upstream splits this between the ServiceAccount admission plugin, the
//! TokenRequest storage, and the serviceaccount, root-ca-cert-publisher and token controllers; Skiff does it here,
//! in every API server process, because each of them needs the signing key or the CA anyway):
//!
//! - every active namespace has the ServiceAccount `default` and the ConfigMap `kube-root-ca.crt` (the cluster CA,
//!   for clients in pods): made with the namespace, and put back within [`REPAIR_EVERY`] when deleted or changed;
//! - pod admission: `serviceAccountName` defaults to `default`, the service account must exist, its
//!   imagePullSecrets are copied to pods without any, and unless automounting is off (pod, then service account)
//!   every container gets the `kube-api-access-<random>` projected volume (token, ca.crt, namespace) at
//!   `/var/run/secrets/kubernetes.io/serviceaccount`, as upstream;
//! - `POST serviceaccounts/<name>/token` (TokenRequest, `kubectl create token`): a signed token for the account,
//!   optionally bound to a Pod, Secret or Node;
//! - Secrets of type `kubernetes.io/service-account-token` are filled in (token, ca.crt, namespace) when created.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::errors::ApiError;
use super::write::{create_if_missing, now_rfc3339};
use super::{codec, ApiServer, Req, Target};
use crate::api::resources::{self, ResourceInfo};
use crate::api::validation::FieldError;
use crate::auth::satoken::{ObjectRef, TokenSpec};
use crate::auth::ServiceAccounts;

pub const ROOT_CA_CONFIGMAP: &str = "kube-root-ca.crt";
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
pub const SA_TOKEN_SECRET_TYPE: &str = "kubernetes.io/service-account-token";
/// How often every namespace's `default` service account and CA ConfigMap are checked.
pub const REPAIR_EVERY: Duration = Duration::from_secs(20);
/// The token lifetime of the projected volume the admission adds (upstream's 3607 s).
pub const PROJECTED_EXPIRATION: i64 = 3607;

const ROOT_CA_DESCRIPTION: &str = "Contains a CA bundle that can be used to verify the kube-apiserver when using internal endpoints such as the internal service IP or kubernetes.default.svc. No other usage is guaranteed across distributions of Kubernetes clusters.";

fn info(plural: &str) -> Result<&'static ResourceInfo, ApiError> {
    resources::find("", "v1", plural).ok_or_else(|| ApiError::internal(format!("no {plural} resource")))
}

async fn get(s: &ApiServer, info: &ResourceInfo, ns: &str, name: &str) -> Result<Option<Value>, ApiError> {
    match s.store.get(&info.key(Some(ns), name)).await.map_err(|e| ApiError::from_store(info, name, e))? {
        Some(kv) => Ok(Some(codec::object_from_kv(&kv)?)),
        None => Ok(None),
    }
}

fn root_ca_configmap(sa: &ServiceAccounts) -> Value {
    json!({"metadata": {"name": ROOT_CA_CONFIGMAP, "annotations": {"kubernetes.io/description": ROOT_CA_DESCRIPTION}},
           "data": {"ca.crt": sa.root_ca_pem}})
}

/// Make `default` and `kube-root-ca.crt` in `ns` where missing, and put the CA back where it was changed.
pub async fn ensure_namespace_defaults(s: &ApiServer, sa: &ServiceAccounts, ns: &str) -> Result<(), ApiError> {
    let (sa_info, cm_info) = (info("serviceaccounts")?, info("configmaps")?);
    if get(s, sa_info, ns, "default").await?.is_none() && create_if_missing(s, sa_info, Some(ns), json!({"metadata": {"name": "default"}})).await? {
        tracing::debug!(namespace = ns, "service account default created");
    }
    let key = cm_info.key(Some(ns), ROOT_CA_CONFIGMAP);
    match s.store.get(&key).await.map_err(|e| ApiError::from_store(cm_info, ROOT_CA_CONFIGMAP, e))? {
        None => {
            create_if_missing(s, cm_info, Some(ns), root_ca_configmap(sa)).await?;
        }
        Some(kv) => {
            let cm = codec::object_from_kv(&kv)?;
            if cm.pointer("/data/ca.crt").and_then(Value::as_str) != Some(sa.root_ca_pem.as_str()) {
                let mut fixed = cm;
                fixed["data"] = json!({"ca.crt": sa.root_ca_pem});
                if let Some(m) = fixed.get_mut("metadata").and_then(Value::as_object_mut) {
                    m.remove("resourceVersion");
                }
                // A conflict means someone else wrote it meanwhile: the next pass looks again.
                match s.store.update(&key, codec::to_stored(&fixed), kv.mod_revision).await {
                    Ok(_) => tracing::info!(namespace = ns, "kube-root-ca.crt put back"),
                    Err(e) => tracing::debug!(namespace = ns, error = %e, "kube-root-ca.crt repair"),
                }
            }
        }
    }
    Ok(())
}

/// At start and every [`REPAIR_EVERY`]: the defaults of every namespace that is not being deleted.
pub async fn repair_loop(s: std::sync::Weak<ApiServer>) {
    loop {
        let Some(server) = s.upgrade() else { return };
        if let Some(sa) = server.service_accounts() {
            if let Err(e) = repair_all(&server, sa).await {
                tracing::warn!(error = %e.message, "service account repair");
            }
        }
        drop(server);
        tokio::time::sleep(REPAIR_EVERY).await;
    }
}

pub async fn repair_all(s: &ApiServer, sa: &ServiceAccounts) -> Result<(), ApiError> {
    let ns_info = info("namespaces")?;
    let list = s.store.list(&ns_info.prefix(None), Default::default()).await.map_err(|e| ApiError::from_store(ns_info, "", e))?;
    for kv in &list.items {
        let ns = codec::object_from_kv(kv)?;
        if ns.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
            continue;
        }
        let name = ns.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        if let Err(e) = ensure_namespace_defaults(s, sa, name).await {
            // A namespace deleted meanwhile refuses new content: not an error worth more than a line.
            tracing::debug!(namespace = name, error = %e.message, "namespace defaults");
        }
    }
    Ok(())
}

fn is_mirror_pod(pod: &Value) -> bool {
    pod.pointer("/metadata/annotations/kubernetes.io~1config.mirror").is_some()
}

/// The ServiceAccount admission for a new pod (see the module doc). `pod` is changed in place.
pub async fn admit_pod(s: &ApiServer, ns: &str, pod: &mut Value) -> Result<(), ApiError> {
    if is_mirror_pod(pod) {
        return Ok(());
    }
    let pod_name = pod.pointer("/metadata/name").and_then(Value::as_str).filter(|n| !n.is_empty()).unwrap_or_default().to_string();
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(()) };
    let account = spec
        .get("serviceAccountName")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .or_else(|| spec.get("serviceAccount").and_then(Value::as_str).filter(|n| !n.is_empty()))
        .unwrap_or("default")
        .to_string();
    spec.insert("serviceAccountName".into(), json!(account));
    spec.insert("serviceAccount".into(), json!(account));
    let Some(account_obj) = get(s, info("serviceaccounts")?, ns, &account).await? else {
        let what = if pod_name.is_empty() { "pods".to_string() } else { format!("pods \"{pod_name}\"") };
        return Err(ApiError::forbidden(format!(
            "{what} is forbidden: error looking up service account {ns}/{account}: serviceaccount \"{account}\" not found"
        )));
    };
    if spec.get("imagePullSecrets").and_then(Value::as_array).is_none_or(|a| a.is_empty()) {
        if let Some(secrets) = account_obj.get("imagePullSecrets").and_then(Value::as_array).filter(|a| !a.is_empty()) {
            spec.insert("imagePullSecrets".into(), Value::Array(secrets.clone()));
        }
    }
    let automount = spec
        .get("automountServiceAccountToken")
        .and_then(Value::as_bool)
        .or_else(|| account_obj.get("automountServiceAccountToken").and_then(Value::as_bool))
        .unwrap_or(true);
    if !automount {
        return Ok(());
    }
    let volumes = spec.entry("volumes").or_insert_with(|| json!([]));
    let Some(volumes) = volumes.as_array_mut() else { return Ok(()) };
    // A pod that already has the volume (a re-applied pod spec, or one written by hand) keeps its own.
    let existing = volumes
        .iter()
        .filter_map(|v| v.get("name").and_then(Value::as_str))
        .find(|n| n.starts_with("kube-api-access-"))
        .map(str::to_string);
    let name = match existing {
        Some(n) => n,
        None => {
            let name = format!("kube-api-access-{}", super::write::random_suffix());
            volumes.push(json!({"name": name, "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": PROJECTED_EXPIRATION, "path": "token"}},
                {"configMap": {"name": ROOT_CA_CONFIGMAP, "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}
            ]}}));
            name
        }
    };
    for kind in ["initContainers", "containers"] {
        for c in spec.get_mut(kind).and_then(Value::as_array_mut).into_iter().flatten() {
            let Some(c) = c.as_object_mut() else { continue };
            let mounts = c.entry("volumeMounts").or_insert_with(|| json!([]));
            let Some(mounts) = mounts.as_array_mut() else { continue };
            if mounts.iter().any(|m| m.get("mountPath").and_then(Value::as_str).map(|p| p.trim_end_matches('/')) == Some(TOKEN_MOUNT_PATH)) {
                continue;
            }
            mounts.push(json!({"name": name, "readOnly": true, "mountPath": TOKEN_MOUNT_PATH}));
        }
    }
    Ok(())
}

/// A new Secret of type `kubernetes.io/service-account-token` gets its token, the CA and the namespace (the
/// service account, named by the `kubernetes.io/service-account.name` annotation, must exist).
pub async fn fill_token_secret(s: &ApiServer, sa: &ServiceAccounts, ns: &str, secret: &mut Value) -> Result<(), ApiError> {
    use base64::Engine;
    if secret.get("type").and_then(Value::as_str) != Some(SA_TOKEN_SECRET_TYPE) {
        return Ok(());
    }
    let secret_info = info("secrets")?;
    let name = secret.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let Some(account) = secret.pointer("/metadata/annotations/kubernetes.io~1service-account.name").and_then(Value::as_str).map(str::to_string) else {
        return Err(ApiError::invalid(secret_info, &name, &[FieldError::required("metadata.annotations[kubernetes.io/service-account.name]")]));
    };
    if name.is_empty() {
        return Err(ApiError::invalid(
            secret_info,
            &name,
            &[FieldError::required("metadata.name")],
        ));
    }
    let Some(account_obj) = get(s, info("serviceaccounts")?, ns, &account).await? else {
        return Err(ApiError::invalid(
            secret_info,
            &name,
            &[FieldError::invalid(
                "metadata.annotations[kubernetes.io/service-account.name]",
                &json!(account),
                &format!("serviceaccount \"{account}\" not found in namespace {ns}"),
            )],
        ));
    };
    let uid = account_obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string();
    let token = sa
        .issuer
        .issue_legacy(ns, &ObjectRef { name: account.clone(), uid: uid.clone() }, &name)
        .map_err(ApiError::internal)?;
    let b64 = |v: &str| base64::engine::general_purpose::STANDARD.encode(v);
    secret["metadata"]["annotations"]["kubernetes.io/service-account.uid"] = json!(uid);
    if !secret.get("data").is_some_and(Value::is_object) {
        secret["data"] = json!({});
    }
    secret["data"]["token"] = json!(b64(&token));
    secret["data"]["ca.crt"] = json!(b64(&sa.root_ca_pem));
    secret["data"]["namespace"] = json!(b64(ns));
    Ok(())
}

/// `POST /api/v1/namespaces/<ns>/serviceaccounts/<name>/token`.
pub async fn token_request(s: &Arc<ApiServer>, t: &Target, r: &Req) -> Result<Response, ApiError> {
    let sa = s.service_accounts().ok_or_else(|| ApiError::new(503, "ServiceUnavailable", "this API server issues no service account tokens (it runs without authentication)"))?;
    let ns = t.namespace.clone().unwrap_or_default();
    let name = t.name.clone().unwrap_or_default();
    let body = codec::decode_object(&r.headers, &r.body)?;
    let tr_info = &TOKEN_REQUEST;
    match (body.get("apiVersion").and_then(Value::as_str), body.get("kind").and_then(Value::as_str)) {
        (Some("authentication.k8s.io/v1") | None, Some("TokenRequest") | None) => {}
        (v, k) => return Err(ApiError::bad_request(format!("the body must be an authentication.k8s.io/v1 TokenRequest, not {} {}", v.unwrap_or(""), k.unwrap_or("")))),
    }
    let spec = match body.get("spec") {
        None | Some(Value::Null) => json!({}),
        Some(spec @ Value::Object(_)) => spec.clone(),
        Some(_) => return Err(ApiError::bad_request("unable to decode the TokenRequest body: spec must be an object")),
    };
    let mut errs = Vec::new();
    let audiences: Vec<String> = match spec.get("audiences") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect(),
        Some(other) => {
            errs.push(FieldError::invalid("spec.audiences", other, "must be a list of strings"));
            Vec::new()
        }
    };
    let expiration = match spec.get("expirationSeconds") {
        None | Some(Value::Null) => 3600,
        Some(v) => match v.as_i64() {
            Some(n) if n < 600 => {
                errs.push(FieldError::invalid("spec.expirationSeconds", v, "may not specify a duration less than 10 minutes"));
                n
            }
            Some(n) if n > 1 << 32 => {
                errs.push(FieldError::invalid("spec.expirationSeconds", v, "may not specify a duration larger than 2^32 seconds"));
                n
            }
            Some(n) => n,
            None => {
                errs.push(FieldError::invalid("spec.expirationSeconds", v, "must be an integer"));
                0
            }
        },
    };
    let bound = spec.get("boundObjectRef").filter(|v| !v.is_null()).cloned();
    if bound.as_ref().is_some_and(|b| !b.is_object()) {
        return Err(ApiError::bad_request("unable to decode the TokenRequest body: spec.boundObjectRef must be an object"));
    }
    if let Some(b) = &bound {
        let kind = b.get("kind").and_then(Value::as_str).unwrap_or_default();
        if !matches!(kind, "Pod" | "Secret" | "Node") {
            errs.push(FieldError::not_supported("spec.boundObjectRef.kind", &json!(kind), &["Pod", "Secret", "Node"]));
        }
        if b.get("apiVersion").and_then(Value::as_str).is_some_and(|v| v != "v1") {
            errs.push(FieldError::not_supported("spec.boundObjectRef.apiVersion", &b["apiVersion"], &["v1"]));
        }
        if b.get("name").and_then(Value::as_str).is_none_or(str::is_empty) {
            errs.push(FieldError::required("spec.boundObjectRef.name"));
        }
    }
    if !errs.is_empty() {
        return Err(ApiError::invalid(tr_info, &name, &errs));
    }
    let Some(account) = get(s, info("serviceaccounts")?, &ns, &name).await? else {
        return Err(ApiError::not_found(info("serviceaccounts")?, &name));
    };
    let sa_ref = ObjectRef { name: name.clone(), uid: account.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().into() };
    let mut token_spec = TokenSpec {
        namespace: ns.clone(),
        sa: sa_ref,
        audiences: if audiences.is_empty() { sa.issuer.api_audiences().to_vec() } else { audiences },
        expiration: Duration::from_secs(expiration as u64),
        ..Default::default()
    };
    if let Some(max) = sa.max_expiration {
        token_spec.expiration = token_spec.expiration.min(max);
    }
    if let Some(b) = &bound {
        let kind = b["kind"].as_str().unwrap_or_default();
        let bname = b["name"].as_str().unwrap_or_default();
        let (plural, bns) = match kind {
            "Pod" => ("pods", Some(ns.as_str())),
            "Secret" => ("secrets", Some(ns.as_str())),
            _ => ("nodes", None),
        };
        let binfo = info(plural)?;
        let obj = match s.store.get(&binfo.key(bns, bname)).await.map_err(|e| ApiError::from_store(binfo, bname, e))? {
            Some(kv) => codec::object_from_kv(&kv)?,
            None => return Err(ApiError::not_found(binfo, bname)),
        };
        let uid = obj.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string();
        if let Some(want) = b.get("uid").and_then(Value::as_str).filter(|u| !u.is_empty()) {
            if want != uid {
                return Err(ApiError::conflict(
                    binfo,
                    bname,
                    &format!("the UID in the bound object reference ({want}) does not match the UID in record. The object might have been deleted and then recreated"),
                ));
            }
        }
        let r = ObjectRef { name: bname.into(), uid };
        match kind {
            "Pod" => {
                // The pod's node goes into the token too (upstream 1.30+), when it has one.
                if let Some(node) = obj.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()) {
                    let ninfo = info("nodes")?;
                    if let Some(kv) = s.store.get(&ninfo.key(None, node)).await.map_err(|e| ApiError::from_store(ninfo, node, e))? {
                        let n = codec::object_from_kv(&kv)?;
                        token_spec.node = Some(ObjectRef {
                            name: node.into(),
                            uid: n.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().into(),
                        });
                    }
                }
                token_spec.pod = Some(r);
            }
            "Secret" => token_spec.secret = Some(r),
            _ => token_spec.node = Some(r),
        }
    }
    let mut out_spec = spec.clone();
    out_spec["audiences"] = json!(token_spec.audiences);
    out_spec["expirationSeconds"] = json!(token_spec.expiration.as_secs());
    if bound.is_none() {
        out_spec["boundObjectRef"] = Value::Null;
    }
    let mut out = json!({
        "kind": "TokenRequest",
        "apiVersion": "authentication.k8s.io/v1",
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": now_rfc3339()},
        "spec": out_spec,
        "status": {"token": "", "expirationTimestamp": null},
    });
    if !r.dry_run() {
        let (token, exp) = sa.issuer.issue(&token_spec, SystemTime::now()).map_err(ApiError::internal)?;
        out["status"] = json!({"token": token, "expirationTimestamp": chrono::DateTime::<chrono::Utc>::from(exp).format("%Y-%m-%dT%H:%M:%SZ").to_string()});
        tracing::info!(namespace = %ns, serviceaccount = %name, bound = ?bound.as_ref().map(|b| b["kind"].clone()), "service account token issued");
    }
    Ok(codec::json_response(StatusCode::CREATED, &out))
}

/// For error messages about TokenRequest bodies.
static TOKEN_REQUEST: ResourceInfo = ResourceInfo {
    group: "authentication.k8s.io",
    version: "v1",
    kind: "TokenRequest",
    plural: "serviceaccounts/token",
    singular: "tokenrequest",
    namespaced: true,
    short_names: &[],
    categories: &[],
    subresources: &[],
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_pods_are_recognised() {
        assert!(is_mirror_pod(&json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "x"}}})));
        assert!(!is_mirror_pod(&json!({"metadata": {}})));
    }
}
