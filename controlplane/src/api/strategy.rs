//! What the API server does to an object on create and update besides storing it (upstream's "strategies"):
//! system metadata, status reset, generation, and which part of an object each endpoint may change.

use serde_json::{json, Map, Value};

use super::defaults;
use super::resources::{ResourceInfo, Subresource};

/// Resources whose `metadata.generation` counts spec changes.
pub fn tracks_generation(info: &ResourceInfo) -> bool {
    matches!(info.kind, "Deployment" | "ReplicaSet" | "DaemonSet" | "StatefulSet" | "Job" | "CronJob" | "PodDisruptionBudget")
}

/// Resources whose create resets any client-supplied status (the status belongs to controllers/agents).
fn resets_status_on_create(info: &ResourceInfo) -> bool {
    info.has(Subresource::Status) && info.kind != "Node"
}

/// `obj.metadata`, created empty if absent or not an object. None only if `obj` itself is not an object.
fn meta_mut(obj: &mut Value) -> Option<&mut Map<String, Value>> {
    let m = obj.as_object_mut()?;
    let meta = m.entry("metadata").or_insert_with(|| json!({}));
    if !meta.is_object() {
        *meta = json!({});
    }
    meta.as_object_mut()
}

/// Prepare a new object for storage: system metadata, defaults, status.
pub fn prepare_create(info: &ResourceInfo, obj: &mut Value, uid: &str, now: &str) {
    let type_key = info.type_key();
    if let Some(m) = meta_mut(obj) {
        m.insert("uid".into(), json!(uid));
        m.insert("creationTimestamp".into(), json!(now));
        for k in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "generation"] {
            m.remove(k);
        }
        if m.get("labels").is_some_and(Value::is_null) {
            m.remove("labels");
        }
    }
    if tracks_generation(info) {
        if let Some(m) = meta_mut(obj) {
            m.insert("generation".into(), json!(1));
        }
    }
    if info.kind == "Job" {
        job_selector(obj, uid);
    }
    defaults::apply(&type_key, obj);
    if resets_status_on_create(info) {
        let status = match info.kind {
            "Pod" => {
                let qos = defaults::pod_qos_class(obj.get("spec").unwrap_or(&Value::Null));
                json!({"phase": "Pending", "qosClass": qos})
            }
            "Namespace" => json!({"phase": "Active"}),
            "PersistentVolume" | "PersistentVolumeClaim" => json!({"phase": "Pending"}),
            "Service" => json!({"loadBalancer": {}}),
            _ => json!({}),
        };
        if let Some(m) = obj.as_object_mut() {
            m.insert("status".into(), status);
        }
    }
}

/// Upstream's job strategy: unless `manualSelector`, the selector is generated from the job's uid and the
/// template gets the matching labels.
fn job_selector(obj: &mut Value, uid: &str) {
    let manual = obj.pointer("/spec/manualSelector").and_then(Value::as_bool).unwrap_or(false);
    if manual {
        return;
    }
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) else { return };
    spec.insert(
        "selector".into(),
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
    let template = spec.entry("template").or_insert_with(|| json!({}));
    if let Some(t) = template.as_object_mut() {
        let meta = t.entry("metadata").or_insert_with(|| json!({}));
        if let Some(meta) = meta.as_object_mut() {
            let labels = meta.entry("labels").or_insert_with(|| json!({}));
            if let Some(labels) = labels.as_object_mut() {
                labels.insert("batch.kubernetes.io/controller-uid".into(), json!(uid));
                labels.insert("batch.kubernetes.io/job-name".into(), json!(name));
                labels.insert("controller-uid".into(), json!(uid));
                labels.insert("job-name".into(), json!(name));
            }
        }
    }
}

/// Metadata fields clients cannot change on update.
const SYSTEM_META: &[&str] =
    &["uid", "creationTimestamp", "deletionTimestamp", "deletionGracePeriodSeconds", "generation", "namespace", "name"];

/// Build the object to store from an update through the main resource (`sub` None) or `/status`.
pub fn prepare_update(info: &ResourceInfo, sub: Option<Subresource>, new: Value, old: &Value) -> Value {
    let type_key = info.type_key();
    let mut out = match sub {
        // Through /status only the status changes (and metadata the status writer may not touch stays).
        Some(Subresource::Status) => {
            let mut out = old.clone();
            if let Some(m) = out.as_object_mut() {
                match new.get("status") {
                    Some(s) => m.insert("status".into(), s.clone()),
                    None => m.remove("status"),
                };
            }
            out
        }
        // Through /approval only the conditions change (certificates.k8s.io).
        Some(Subresource::Approval) => {
            let mut out = old.clone();
            let conditions = new.pointer("/status/conditions").cloned();
            if let Some(m) = out.as_object_mut() {
                let status = m.entry("status").or_insert_with(|| json!({}));
                if let Some(st) = status.as_object_mut() {
                    match conditions {
                        Some(c) => st.insert("conditions".into(), c),
                        None => st.remove("conditions"),
                    };
                }
            }
            out
        }
        // A CertificateSigningRequest's spec never changes after create (upstream's update strategy).
        None if info.kind == "CertificateSigningRequest" => {
            let mut out = new;
            if let Some(m) = out.as_object_mut() {
                for k in ["spec", "status"] {
                    match old.get(k) {
                        Some(v) => m.insert(k.into(), v.clone()),
                        None => m.remove(k),
                    };
                }
            }
            out
        }
        _ => {
            let mut out = new;
            defaults::apply(&type_key, &mut out);
            if info.has(Subresource::Status) {
                if let Some(m) = out.as_object_mut() {
                    match old.get("status") {
                        Some(s) => m.insert("status".into(), s.clone()),
                        None => m.remove("status"),
                    };
                }
            }
            out
        }
    };
    let old_meta = old.get("metadata").and_then(Value::as_object);
    if let Some(m) = meta_mut(&mut out) {
        m.remove("resourceVersion");
        m.remove("selfLink");
        for k in SYSTEM_META {
            match old_meta.and_then(|om| om.get(*k)) {
                Some(v) => m.insert((*k).to_string(), v.clone()),
                None => m.remove(*k),
            };
        }
    }
    if info.kind == "Service" && sub.is_none() {
        drop_type_dependent_fields(&mut out, old);
    }
    if tracks_generation(info) && out.get("spec") != old.get("spec") {
        let generation = old.pointer("/metadata/generation").and_then(Value::as_i64).unwrap_or(0) + 1;
        if let Some(m) = meta_mut(&mut out) {
            m.insert("generation".into(), json!(generation));
        }
    }
    out
}

/// Upstream's `dropTypeDependentFields`: a Service that stops being NodePort/LoadBalancer loses the node ports
/// it kept from before (unless the client changed them on purpose, which validation then rejects).
fn drop_type_dependent_fields(new: &mut Value, old: &Value) {
    let ty = |v: &Value| v.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
    let (new_ty, old_ty) = (ty(new), ty(old));
    let needs_ports = |t: &str| t == "NodePort" || t == "LoadBalancer";
    if needs_ports(&new_ty) || !needs_ports(&old_ty) {
        return;
    }
    let old_ports: Vec<Value> = old
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ps| ps.iter().filter_map(|p| p.get("nodePort").cloned()).collect())
        .unwrap_or_default();
    if let Some(ports) = new.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for p in ports {
            if p.get("nodePort").is_some_and(|np| old_ports.contains(np)) {
                if let Some(m) = p.as_object_mut() {
                    m.remove("nodePort");
                }
            }
        }
    }
    if let Some(spec) = new.get_mut("spec").and_then(Value::as_object_mut) {
        if new_ty != "LoadBalancer" {
            // These apply only to NodePort/LoadBalancer Services; kept values from before go.
            for k in ["externalTrafficPolicy", "allocateLoadBalancerNodePorts", "healthCheckNodePort"] {
                if old.pointer(&format!("/spec/{k}")) == spec.get(k) {
                    spec.remove(k);
                }
            }
        }
    }
}

/// For a delete with `requested` grace seconds: how long the object should linger with a deletionTimestamp
/// before it is removed. None means remove now. Only pods bound to a node and still running are deleted
/// gracefully: their node agent stops the containers and then removes the pod with grace 0.
pub fn graceful_delete_seconds(info: &ResourceInfo, obj: &Value, requested: Option<i64>) -> Option<i64> {
    if info.kind != "Pod" {
        return None;
    }
    let bound = obj.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty());
    let phase = obj.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default();
    if !bound || phase == "Succeeded" || phase == "Failed" {
        return None;
    }
    let grace = requested
        .or_else(|| obj.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
        .unwrap_or(30)
        .max(0);
    // Grace 0 from a client means "now" (kubectl --force --grace-period=0).
    (grace > 0).then_some(grace)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::resources::{by_kind, find};

    #[test]
    fn create_sets_system_fields_and_resets_status() {
        let pods = find("", "v1", "pods").unwrap();
        let mut pod = json!({"metadata": {"name": "p", "resourceVersion": "5", "uid": "client"},
            "spec": {"containers": [{"name": "c", "image": "x:1"}]}, "status": {"phase": "Running"}});
        prepare_create(pods, &mut pod, "u1", "2024-01-01T00:00:00Z");
        assert_eq!(pod["metadata"]["uid"], "u1");
        assert!(pod["metadata"].get("resourceVersion").is_none());
        assert_eq!(pod["status"], json!({"phase": "Pending", "qosClass": "BestEffort"}));
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert!(pod["metadata"].get("generation").is_none());
        let deploy = by_kind("apps/v1", "Deployment").unwrap();
        let mut d = json!({"metadata": {"name": "d"}, "spec": {"template": {}}});
        prepare_create(deploy, &mut d, "u2", "now");
        assert_eq!(d["metadata"]["generation"], 1);
    }

    #[test]
    fn update_keeps_status_and_bumps_generation_on_spec_change() {
        let deploy = by_kind("apps/v1", "Deployment").unwrap();
        let old = json!({"metadata": {"name": "d", "uid": "u", "generation": 3, "creationTimestamp": "t"},
            "spec": {"replicas": 1}, "status": {"replicas": 1}});
        let new = json!({"metadata": {"name": "d", "uid": "other"}, "spec": {"replicas": 2}, "status": {"replicas": 9}});
        let out = prepare_update(deploy, None, new, &old);
        assert_eq!(out["status"]["replicas"], 1);
        assert_eq!(out["metadata"]["uid"], "u");
        assert_eq!(out["metadata"]["generation"], 4);
        assert_eq!(out["metadata"]["creationTimestamp"], "t");
        let status_only = json!({"metadata": {"name": "d"}, "spec": {"replicas": 7}, "status": {"replicas": 2}});
        let out = prepare_update(deploy, Some(Subresource::Status), status_only, &old);
        assert_eq!(out["spec"]["replicas"], 1);
        assert_eq!(out["status"]["replicas"], 2);
        assert_eq!(out["metadata"]["generation"], 3);
    }

    #[test]
    fn job_gets_generated_selector() {
        let jobs = by_kind("batch/v1", "Job").unwrap();
        let mut j = json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "x"}]}}}});
        prepare_create(jobs, &mut j, "uid-1", "now");
        assert_eq!(j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"], "uid-1");
        assert_eq!(j["spec"]["template"]["metadata"]["labels"]["job-name"], "j");
    }

    #[test]
    fn graceful_delete_only_for_bound_running_pods() {
        let pods = find("", "v1", "pods").unwrap();
        let bound = json!({"spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 5}, "status": {"phase": "Running"}});
        assert_eq!(graceful_delete_seconds(pods, &bound, None), Some(5));
        assert_eq!(graceful_delete_seconds(pods, &bound, Some(0)), None);
        assert_eq!(graceful_delete_seconds(pods, &json!({"spec": {}}), None), None);
        let done = json!({"spec": {"nodeName": "n1"}, "status": {"phase": "Succeeded"}});
        assert_eq!(graceful_delete_seconds(pods, &done, None), None);
    }
}
