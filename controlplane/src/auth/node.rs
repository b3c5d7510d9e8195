//! The node authorizer (upstream's Node authorizer with the NodeRestriction admission plugin folded in): a node
//! agent, authenticated as `system:node:<name>` in `system:nodes`, may
//! - read nodes, pods, services, endpoints, endpoint slices and namespaces (what its pods and its proxy need);
//! - create, change and delete only its own Node, and its own Lease in kube-node-lease;
//! - create only mirror pods bound to itself, and change the status of / delete only pods bound to it;
//! - read a secret, configmap or service account only when a pod bound to it uses it, and create service account
//!   tokens only bound to such a pod, for its service account;
//! - read persistent volumes, and claims its pods use; change only local-path volumes provisioned on it;
//! - write events;
//! - create and read CertificateSigningRequests (to renew its certificate; only its own name is auto-approved).
//!
//! Anything else gets no opinion here and goes on to RBAC.

use serde_json::Value;

use super::rbac::Attributes;
use crate::store::{ListOptions, Store};

#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    /// Not allowed by this authorizer, with the reason; RBAC may still allow it.
    NoOpinion(String),
}

fn reads(verb: &str) -> bool {
    matches!(verb, "get" | "list" | "watch")
}

/// `body`: the request body of a create (its name and, for pods, the node it is bound to).
pub async fn authorize(node: &str, a: &Attributes, body: Option<&Value>, store: &dyn Store) -> Decision {
    use Decision::*;
    if !a.resource_request {
        return NoOpinion(String::new());
    }
    let body_name = body.and_then(|b| b.pointer("/metadata/name")).and_then(Value::as_str).unwrap_or("");
    let name = if a.name.is_empty() { body_name } else { a.name.as_str() };
    let verb = a.verb.as_str();
    let own = |what: &str| NoOpinion(format!("node {node:?} can only change its own {what}"));
    match (a.api_group.as_str(), a.resource.as_str(), a.subresource.as_str()) {
        ("", "nodes", "") | ("", "nodes", "status") if reads(verb) => Allow,
        ("", "nodes", "") | ("", "nodes", "status") => {
            if name == node && matches!(verb, "create" | "update" | "patch" | "delete") {
                Allow
            } else {
                own("Node")
            }
        }
        ("coordination.k8s.io", "leases", "") => {
            if a.namespace == "kube-node-lease" && name == node && matches!(verb, "get" | "create" | "update" | "patch") {
                Allow
            } else {
                own("Lease in kube-node-lease")
            }
        }
        ("", "pods", "") | ("", "pods", "status") if reads(verb) => Allow,
        ("", "services", "") | ("", "endpoints", "") | ("discovery.k8s.io", "endpointslices", "") if reads(verb) => Allow,
        ("", "namespaces", "") if verb == "get" => Allow,
        ("", "pods", "") if verb == "create" => {
            let bound = body.and_then(|b| b.pointer("/spec/nodeName")).and_then(Value::as_str) == Some(node);
            let mirror = body.and_then(|b| b.pointer("/metadata/annotations/kubernetes.io~1config.mirror")).is_some();
            if bound && mirror {
                Allow
            } else {
                NoOpinion(format!("node {node:?} can only create mirror pods bound to itself"))
            }
        }
        ("", "pods", "") | ("", "pods", "status") if matches!(verb, "delete" | "update" | "patch") => {
            match pod_node(store, &a.namespace, name).await {
                Some(n) if n == node => Allow,
                _ => NoOpinion(format!("node {node:?} can only change pods bound to it")),
            }
        }
        // Persistent volumes: read (the agent mounts them and sweeps the data of deleted local-path ones); change
        // only a local-path volume provisioned on this node (to release its data finalizer).
        ("", "persistentvolumes", "") if reads(verb) => Allow,
        ("", "persistentvolumes", "") if matches!(verb, "update" | "patch") => match pv_node(store, name).await {
            Some(n) if n == node => Allow,
            _ => NoOpinion(format!("node {node:?} can only change local-path volumes provisioned on it")),
        },
        ("", kind @ ("secrets" | "configmaps" | "serviceaccounts" | "persistentvolumeclaims"), "") if verb == "get" => {
            if used_by_node(store, node, &a.namespace, kind, name).await {
                Allow
            } else {
                NoOpinion(format!("no relationship found between node {node:?} and this object"))
            }
        }
        ("", "serviceaccounts", "token") if verb == "create" => {
            // Tokens only for a pod bound to this node that runs as that service account, and bound to that pod.
            let bound = body.and_then(|b| b.pointer("/spec/boundObjectRef"));
            let pod_name = bound.and_then(|r| r.get("name")).and_then(Value::as_str).unwrap_or_default();
            let is_pod = bound.and_then(|r| r.get("kind")).and_then(Value::as_str) == Some("Pod");
            match pod_of(store, &a.namespace, pod_name).await {
                Some(pod) if is_pod && pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node) && references(&pod, "serviceaccounts", &a.name) => Allow,
                _ => NoOpinion(format!("node {node:?} can only create tokens bound to pods scheduled on it, for their service accounts")),
            }
        }
        ("", "events", "") | ("events.k8s.io", "events", "") if matches!(verb, "create" | "update" | "patch") => Allow,
        // Certificate renewal: a node asks for its next certificate itself (the approver signs only its own name).
        ("certificates.k8s.io", "certificatesigningrequests", "") if matches!(verb, "create" | "get" | "list" | "watch") => Allow,
        _ => NoOpinion(String::new()),
    }
}

async fn pod_of(store: &dyn Store, ns: &str, name: &str) -> Option<Value> {
    if name.is_empty() {
        return None;
    }
    let kv = store.get(&format!("/registry/core/pods/{ns}/{name}")).await.ok()??;
    serde_json::from_slice(&kv.value).ok()
}

/// The node a local-path volume was provisioned on.
async fn pv_node(store: &dyn Store, name: &str) -> Option<String> {
    if name.is_empty() {
        return None;
    }
    let kv = store.get(&format!("/registry/core/persistentvolumes/{name}")).await.ok()??;
    let pv: Value = serde_json::from_slice(&kv.value).ok()?;
    if pv.pointer("/metadata/annotations/pv.kubernetes.io~1provisioned-by").and_then(Value::as_str) != Some("skiff.io/local-path") {
        return None;
    }
    pv.pointer("/metadata/annotations/volume.kubernetes.io~1selected-node").and_then(Value::as_str).map(str::to_string)
}

async fn pod_node(store: &dyn Store, ns: &str, name: &str) -> Option<String> {
    pod_of(store, ns, name).await?.pointer("/spec/nodeName").and_then(Value::as_str).map(str::to_string)
}

/// Does a pod bound to `node` in `ns` use the `kind` object `name`? (upstream builds a graph; reading the
/// namespace's pods when a node asks is enough at Skiff's scale: nodes read these only when they start pods)
async fn used_by_node(store: &dyn Store, node: &str, ns: &str, kind: &str, name: &str) -> bool {
    if name.is_empty() {
        return false;
    }
    let Ok(list) = store.list(&format!("/registry/core/pods/{ns}/"), ListOptions::default()).await else { return false };
    list.items.iter().filter_map(|kv| serde_json::from_slice::<Value>(&kv.value).ok()).any(|pod| {
        pod.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node) && references(&pod, kind, name)
    })
}

/// The objects of `kind` a pod refers to: volumes (also projected), env and envFrom of every container,
/// imagePullSecrets, its service account.
pub fn references(pod: &Value, kind: &str, name: &str) -> bool {
    let spec = pod.get("spec").unwrap_or(&Value::Null);
    let is = |v: Option<&Value>| v.and_then(Value::as_str) == Some(name);
    let arr = |v: Option<&Value>| v.and_then(Value::as_array).cloned().unwrap_or_default();
    let containers: Vec<Value> = ["containers", "initContainers", "ephemeralContainers"].iter().flat_map(|k| arr(spec.get(*k))).collect();
    match kind {
        "serviceaccounts" => is(spec.get("serviceAccountName")) || (name == "default" && spec.get("serviceAccountName").is_none()),
        "secrets" => {
            arr(spec.get("imagePullSecrets")).iter().any(|s| is(s.get("name")))
                || arr(spec.get("volumes")).iter().any(|v| {
                    is(v.pointer("/secret/secretName"))
                        || arr(v.pointer("/projected/sources")).iter().any(|s| is(s.pointer("/secret/name")))
                })
                || containers.iter().any(|c| {
                    arr(c.get("env")).iter().any(|e| is(e.pointer("/valueFrom/secretKeyRef/name")))
                        || arr(c.get("envFrom")).iter().any(|e| is(e.pointer("/secretRef/name")))
                })
        }
        "persistentvolumeclaims" => arr(spec.get("volumes")).iter().any(|v| is(v.pointer("/persistentVolumeClaim/claimName"))),
        "configmaps" => {
            arr(spec.get("volumes")).iter().any(|v| {
                is(v.pointer("/configMap/name")) || arr(v.pointer("/projected/sources")).iter().any(|s| is(s.pointer("/configMap/name")))
            }) || containers.iter().any(|c| {
                arr(c.get("env")).iter().any(|e| is(e.pointer("/valueFrom/configMapKeyRef/name")))
                    || arr(c.get("envFrom")).iter().any(|e| is(e.pointer("/configMapRef/name")))
            })
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_references() {
        let pod = json!({"spec": {
            "serviceAccountName": "bot",
            "imagePullSecrets": [{"name": "pull"}],
            "volumes": [
                {"name": "a", "secret": {"secretName": "vol-secret"}},
                {"name": "b", "configMap": {"name": "vol-cm"}},
                {"name": "c", "projected": {"sources": [{"secret": {"name": "proj-secret"}}, {"configMap": {"name": "proj-cm"}}]}}
            ],
            "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "init-secret"}}]}],
            "containers": [{"name": "c", "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "env-cm", "key": "k"}}}],
                            "envFrom": [{"configMapRef": {"name": "from-cm"}}]}]
        }});
        for s in ["pull", "vol-secret", "proj-secret", "init-secret"] {
            assert!(references(&pod, "secrets", s), "{s}");
        }
        for c in ["vol-cm", "proj-cm", "env-cm", "from-cm"] {
            assert!(references(&pod, "configmaps", c), "{c}");
        }
        assert!(!references(&pod, "secrets", "vol-cm"));
        assert!(!references(&pod, "configmaps", "other"));
        assert!(references(&pod, "serviceaccounts", "bot"));
        assert!(!references(&pod, "serviceaccounts", "default"));
        assert!(references(&json!({"spec": {}}), "serviceaccounts", "default"));
    }
}
