//! What an object counts against a ResourceQuota (upstream's quota evaluators), pure: the usage of a pod (count,
//! requests and limits of cpu, memory and ephemeral storage), of a service (count, node ports, load balancers), of
//! a claim (count, storage), and the object count `count/<resource>[.<group>]` of anything served. Amounts are in
//! thousandths of their unit (as [`parse_quantity_milli`]), counts too (one object = 1000).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::scheduler::plugins::parse_quantity_milli;

pub type Usage = BTreeMap<String, i128>;

const ONE: i128 = 1000;

/// The resource names a pod's usage has, for the "must specify" check and scopes.
pub const POD_COMPUTE: &[&str] = &["requests.cpu", "requests.memory", "limits.cpu", "limits.memory", "cpu", "memory"];

/// Does a pod count at all: not finished, and not past its deletion deadline.
pub fn pod_counts(pod: &Value, now: DateTime<Utc>) -> bool {
    if matches!(pod.pointer("/status/phase").and_then(Value::as_str), Some("Succeeded" | "Failed")) {
        return false;
    }
    match pod.pointer("/metadata/deletionTimestamp").and_then(Value::as_str).and_then(|t| DateTime::parse_from_rfc3339(t).ok()) {
        Some(deadline) => now < deadline,
        None => true,
    }
}

fn quantity(v: Option<&Value>) -> Option<i128> {
    match v? {
        Value::String(s) => parse_quantity_milli(s),
        Value::Number(n) => n.as_f64().map(|f| crate::scheduler::plugins::clamp_milli(f * 1000.0)),
        _ => None,
    }
}

/// A container's request for `res` (its limit where it states no request, as defaulting makes it).
fn request(c: &Value, res: &str) -> Option<i128> {
    quantity(c.pointer(&format!("/resources/requests/{res}"))).or_else(|| quantity(c.pointer(&format!("/resources/limits/{res}"))))
}

fn limit(c: &Value, res: &str) -> Option<i128> {
    quantity(c.pointer(&format!("/resources/limits/{res}")))
}

/// The pod's effective amount: the larger of the containers' sum and the largest init container, plus overhead.
fn pod_amount(pod: &Value, res: &str, f: fn(&Value, &str) -> Option<i128>) -> i128 {
    let list = |k: &str| pod.pointer(&format!("/spec/{k}")).and_then(Value::as_array).cloned().unwrap_or_default();
    let sum: i128 = list("containers").iter().filter_map(|c| f(c, res)).sum();
    let init = list("initContainers").iter().filter_map(|c| f(c, res)).max().unwrap_or(0);
    sum.max(init) + quantity(pod.pointer(&format!("/spec/overhead/{res}"))).unwrap_or(0)
}

pub fn pod_usage(pod: &Value) -> Usage {
    let mut u = Usage::new();
    u.insert("pods".into(), ONE);
    u.insert("count/pods".into(), ONE);
    for res in ["cpu", "memory", "ephemeral-storage"] {
        let r = pod_amount(pod, res, request);
        let l = pod_amount(pod, res, limit);
        u.insert(format!("requests.{res}"), r);
        u.insert(format!("limits.{res}"), l);
        if res != "ephemeral-storage" {
            u.insert(res.into(), r);
        }
    }
    u
}

/// Usage of any object of the resource `plural` in `group`.
pub fn object_usage(group: &str, plural: &str, obj: &Value) -> Usage {
    if group.is_empty() && plural == "pods" {
        return pod_usage(obj);
    }
    let mut u = Usage::new();
    let count_key = if group.is_empty() { format!("count/{plural}") } else { format!("count/{plural}.{group}") };
    u.insert(count_key, ONE);
    if group.is_empty() {
        match plural {
            "services" => {
                u.insert("services".into(), ONE);
                let t = obj.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP");
                let ports = obj.pointer("/spec/ports").and_then(Value::as_array).map_or(0, Vec::len) as i128;
                if t == "NodePort" || t == "LoadBalancer" {
                    u.insert("services.nodeports".into(), ports * ONE);
                }
                if t == "LoadBalancer" {
                    u.insert("services.loadbalancers".into(), ONE);
                }
            }
            "persistentvolumeclaims" => {
                u.insert("persistentvolumeclaims".into(), ONE);
                let storage = quantity(obj.pointer("/spec/resources/requests/storage")).unwrap_or(0);
                u.insert("requests.storage".into(), storage);
                if let Some(class) = obj.pointer("/spec/storageClassName").and_then(Value::as_str) {
                    u.insert(format!("{class}.storageclass.storage.k8s.io/persistentvolumeclaims"), ONE);
                    u.insert(format!("{class}.storageclass.storage.k8s.io/requests.storage"), storage);
                }
            }
            "configmaps" | "secrets" | "resourcequotas" | "replicationcontrollers" => {
                u.insert(plural.into(), ONE);
            }
            _ => {}
        }
    }
    u
}

fn best_effort(pod: &Value) -> bool {
    ["containers", "initContainers"].iter().flat_map(|k| pod.pointer(&format!("/spec/{k}")).and_then(Value::as_array).into_iter().flatten()).all(|c| {
        c.pointer("/resources/requests").and_then(Value::as_object).is_none_or(|m| m.is_empty())
            && c.pointer("/resources/limits").and_then(Value::as_object).is_none_or(|m| m.is_empty())
    })
}

/// Does the quota's `scopes` / `scopeSelector` take in this pod? Non-pod objects are only in unscoped quotas.
pub fn in_scope(quota: &Value, is_pod: bool, obj: &Value) -> bool {
    let mut scopes: Vec<(String, String, Vec<String>)> =
        quota.pointer("/spec/scopes").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(|s| (s.to_string(), "Exists".to_string(), Vec::new())).collect();
    for e in quota.pointer("/spec/scopeSelector/matchExpressions").and_then(Value::as_array).into_iter().flatten() {
        let name = e.get("scopeName").and_then(Value::as_str).unwrap_or_default().to_string();
        let op = e.get("operator").and_then(Value::as_str).unwrap_or_default().to_string();
        let values = e.get("values").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).map(str::to_string).collect();
        scopes.push((name, op, values));
    }
    if scopes.is_empty() {
        return true;
    }
    if !is_pod {
        return false;
    }
    scopes.iter().all(|(scope, op, values)| match scope.as_str() {
        "Terminating" => obj.pointer("/spec/activeDeadlineSeconds").is_some_and(|v| !v.is_null()),
        "NotTerminating" => obj.pointer("/spec/activeDeadlineSeconds").is_none_or(Value::is_null),
        "BestEffort" => best_effort(obj),
        "NotBestEffort" => !best_effort(obj),
        "PriorityClass" => {
            let class = obj.pointer("/spec/priorityClassName").and_then(Value::as_str).filter(|c| !c.is_empty());
            match op.as_str() {
                "In" => class.is_some_and(|c| values.iter().any(|v| v == c)),
                "NotIn" => class.is_none_or(|c| !values.iter().any(|v| v == c)),
                "Exists" => class.is_some(),
                "DoesNotExist" => class.is_none(),
                _ => false,
            }
        }
        "CrossNamespacePodAffinity" => false,
        _ => false,
    })
}

/// The containers that do not state `key` (one of [`POD_COMPUTE`]), for the "must specify" refusal.
pub fn missing(pod: &Value, key: &str) -> Vec<String> {
    let (kind, res) = match key.split_once('.') {
        Some((k, r)) => (k, r),
        None => ("requests", key),
    };
    ["initContainers", "containers"]
        .iter()
        .flat_map(|k| pod.pointer(&format!("/spec/{k}")).and_then(Value::as_array).into_iter().flatten())
        .filter(|c| if kind == "limits" { limit(c, res).is_none() } else { request(c, res).is_none() })
        .filter_map(|c| c.get("name").and_then(Value::as_str).map(str::to_string))
        .collect()
}

/// An amount in thousandths as a quantity string: cpu in cores or millicores, bytes with a binary suffix when
/// they divide evenly, counts as numbers.
pub fn format(key: &str, milli: i128) -> String {
    let cpu = key == "cpu" || key.ends_with(".cpu");
    if cpu {
        return if milli % 1000 == 0 { (milli / 1000).to_string() } else { format!("{milli}m") };
    }
    let whole = milli / 1000;
    let bytes = key == "memory" || key.ends_with(".memory") || key.contains("storage");
    if bytes && whole != 0 {
        for (suffix, f) in [("Gi", 1i128 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)] {
            if whole % f == 0 {
                return format!("{}{suffix}", whole / f);
            }
        }
    }
    whole.to_string()
}

/// Parse a quota's `hard` (or `used`) map.
pub fn amounts(map: Option<&Value>) -> Usage {
    map.and_then(Value::as_object).into_iter().flatten().filter_map(|(k, v)| quantity(Some(v)).map(|q| (k.clone(), q))).collect()
}

/// Is this resource name one a quota may hold? (Field check for `spec.hard`.)
pub fn valid_name(key: &str) -> bool {
    let standard = [
        "pods", "services", "services.nodeports", "services.loadbalancers", "configmaps", "secrets", "persistentvolumeclaims",
        "replicationcontrollers", "resourcequotas", "requests.storage", "cpu", "memory", "requests.cpu", "requests.memory",
        "limits.cpu", "limits.memory", "requests.ephemeral-storage", "limits.ephemeral-storage", "ephemeral-storage",
    ];
    standard.contains(&key) || key.starts_with("count/") || key.contains(".storageclass.storage.k8s.io/") || key.starts_with("requests.hugepages-")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pod_usage_takes_init_containers_and_limits_as_requests() {
        let pod = json!({"spec": {
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "100m"}, "limits": {"memory": "64Mi"}}},
                           {"name": "b", "resources": {"limits": {"cpu": "200m", "memory": "64Mi"}}}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1"}}}]}});
        let u = pod_usage(&pod);
        assert_eq!(u["pods"], 1000);
        assert_eq!(u["requests.cpu"], 1000, "the init container's 1 core is more than 300m");
        assert_eq!(format("requests.memory", u["requests.memory"]), "128Mi");
        assert_eq!(format("limits.cpu", u["limits.cpu"]), "200m");
        assert_eq!(missing(&pod, "limits.cpu"), ["i", "a"]);
        assert!(missing(&pod, "requests.memory").contains(&"i".to_string()));
    }

    #[test]
    fn services_claims_and_counts() {
        let lb = json!({"spec": {"type": "LoadBalancer", "ports": [{"port": 80}, {"port": 443}]}});
        let u = object_usage("", "services", &lb);
        assert_eq!((u["services"], u["services.nodeports"], u["services.loadbalancers"]), (1000, 2000, 1000));
        let pvc = json!({"spec": {"storageClassName": "fast", "resources": {"requests": {"storage": "1Gi"}}}});
        let u = object_usage("", "persistentvolumeclaims", &pvc);
        assert_eq!(format("requests.storage", u["requests.storage"]), "1Gi");
        assert_eq!(u["fast.storageclass.storage.k8s.io/persistentvolumeclaims"], 1000);
        assert_eq!(object_usage("apps", "deployments", &json!({}))["count/deployments.apps"], 1000);
    }

    #[test]
    fn scopes() {
        let be = json!({"spec": {"containers": [{"name": "a"}]}});
        let burst = json!({"spec": {"containers": [{"name": "a", "resources": {"requests": {"cpu": "1"}}}], "priorityClassName": "high"}});
        let q = |spec: Value| json!({"spec": spec});
        assert!(in_scope(&q(json!({"scopes": ["BestEffort"]})), true, &be));
        assert!(!in_scope(&q(json!({"scopes": ["BestEffort"]})), true, &burst));
        assert!(in_scope(&q(json!({"scopeSelector": {"matchExpressions": [{"scopeName": "PriorityClass", "operator": "In", "values": ["high"]}]}})), true, &burst));
        assert!(!in_scope(&q(json!({"scopes": ["NotBestEffort"]})), false, &json!({})));
        assert!(in_scope(&q(json!({})), false, &json!({})));
    }
}
