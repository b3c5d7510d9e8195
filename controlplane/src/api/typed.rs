//! Type checks against k8s-openapi's structs: a body whose fields have the wrong JSON types is rejected (as
//! upstream's decoder does), and the fields the type does not know are found for `fieldValidation=Strict`.
//! The stored object stays the client's JSON, so nothing is lost in the round trip.

use k8s_openapi::api::{apps, batch, certificates, coordination, core, discovery, policy, rbac, scheduling, storage};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

fn round_trip<T: DeserializeOwned + Serialize>(obj: &Value) -> Result<Value, String> {
    let typed: T = serde_json::from_value(obj.clone()).map_err(|e| e.to_string())?;
    serde_json::to_value(typed).map_err(|e| e.to_string())
}

/// Decode `obj` as `type_key` ("<apiVersion>/<Kind>") and re-encode it. None for types without a struct.
fn typed_round_trip(type_key: &str, obj: &Value) -> Option<Result<Value, String>> {
    Some(match type_key {
        "v1/Namespace" => round_trip::<core::v1::Namespace>(obj),
        "v1/Pod" => round_trip::<core::v1::Pod>(obj),
        "v1/Node" => round_trip::<core::v1::Node>(obj),
        "v1/Service" => round_trip::<core::v1::Service>(obj),
        "v1/Endpoints" => round_trip::<core::v1::Endpoints>(obj),
        "v1/ConfigMap" => round_trip::<core::v1::ConfigMap>(obj),
        "v1/LimitRange" => round_trip::<core::v1::LimitRange>(obj),
        "v1/ResourceQuota" => round_trip::<core::v1::ResourceQuota>(obj),
        "v1/Secret" => round_trip::<core::v1::Secret>(obj),
        "v1/Event" => round_trip::<core::v1::Event>(obj),
        "v1/ServiceAccount" => round_trip::<core::v1::ServiceAccount>(obj),
        "v1/PersistentVolume" => round_trip::<core::v1::PersistentVolume>(obj),
        "v1/PersistentVolumeClaim" => round_trip::<core::v1::PersistentVolumeClaim>(obj),
        "storage.k8s.io/v1/StorageClass" => round_trip::<storage::v1::StorageClass>(obj),
        "apps/v1/Deployment" => round_trip::<apps::v1::Deployment>(obj),
        "apps/v1/ReplicaSet" => round_trip::<apps::v1::ReplicaSet>(obj),
        "apps/v1/DaemonSet" => round_trip::<apps::v1::DaemonSet>(obj),
        "apps/v1/StatefulSet" => round_trip::<apps::v1::StatefulSet>(obj),
        "apps/v1/ControllerRevision" => round_trip::<apps::v1::ControllerRevision>(obj),
        "batch/v1/Job" => round_trip::<batch::v1::Job>(obj),
        "batch/v1/CronJob" => round_trip::<batch::v1::CronJob>(obj),
        "policy/v1/PodDisruptionBudget" => round_trip::<policy::v1::PodDisruptionBudget>(obj),
        "scheduling.k8s.io/v1/PriorityClass" => round_trip::<scheduling::v1::PriorityClass>(obj),
        "coordination.k8s.io/v1/Lease" => round_trip::<coordination::v1::Lease>(obj),
        "discovery.k8s.io/v1/EndpointSlice" => round_trip::<discovery::v1::EndpointSlice>(obj),
        "rbac.authorization.k8s.io/v1/Role" => round_trip::<rbac::v1::Role>(obj),
        "rbac.authorization.k8s.io/v1/RoleBinding" => round_trip::<rbac::v1::RoleBinding>(obj),
        "rbac.authorization.k8s.io/v1/ClusterRole" => round_trip::<rbac::v1::ClusterRole>(obj),
        "rbac.authorization.k8s.io/v1/ClusterRoleBinding" => round_trip::<rbac::v1::ClusterRoleBinding>(obj),
        "certificates.k8s.io/v1/CertificateSigningRequest" => round_trip::<certificates::v1::CertificateSigningRequest>(obj),
        _ => return None,
    })
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// Paths of fields present in `input` but not in `known` (the round-tripped object).
fn diff(input: &Value, known: &Value, path: &str, out: &mut Vec<String>) {
    match (input, known) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match b.get(k) {
                    Some(kv) => diff(v, kv, &p, out),
                    // Nulls and empty values are dropped by the typed encoder but are not unknown.
                    None if is_empty(v) => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                diff(x, y, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

/// Type-check `obj`. Ok(unknown field paths) or Err(the decoder's message).
pub fn check(type_key: &str, obj: &Value) -> Result<Vec<String>, String> {
    match typed_round_trip(type_key, obj) {
        None => Ok(Vec::new()),
        Some(Err(e)) => Err(e),
        Some(Ok(known)) => {
            let mut out = Vec::new();
            diff(obj, &known, "", &mut out);
            // Fields of object metadata that k8s-openapi drops on purpose are not unknown.
            out.retain(|p| p != "metadata.selfLink");
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn finds_unknown_fields() {
        let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "bogus": 1},
            "spec": {"containers": [{"name": "c", "image": "x", "imagee": "typo"}], "nodeName": null}});
        assert_eq!(check("v1/Pod", &pod).unwrap(), ["metadata.bogus", "spec.containers[0].imagee"]);
    }

    #[test]
    fn wrong_types_are_errors() {
        let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": "three", "selector": {}, "template": {}}});
        assert!(check("apps/v1/Deployment", &d).is_err());
    }

    #[test]
    fn clean_objects_pass() {
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "labels": {}},
            "spec": {"ports": [{"port": 80, "targetPort": "http"}], "selector": {"app": "x"}}});
        assert!(check("v1/Service", &svc).unwrap().is_empty());
        assert!(check("unknown/v1/Thing", &svc).unwrap().is_empty());
    }
}
