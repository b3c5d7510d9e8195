//! The downward API: pod fields (`fieldRef`) and container resources (`resourceFieldRef`) as strings, for env
//! vars and downwardAPI volumes. Pure: the pod, its IPs and the node's allocatable come in as arguments.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::container::spec::{cpu_millis, memory_bytes};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DownwardError {
    /// Upstream's message for a field the kubelet cannot resolve.
    #[error("unsupported fieldPath: {0}")]
    FieldPath(String),
    #[error("unsupported container resource : {0}")]
    Resource(String),
    #[error("container {0:?} not found in the pod")]
    Container(String),
    #[error("invalid divisor {0:?}")]
    Divisor(String),
}

/// What the pod object does not say: the addresses the agent gave it and the node's allocatable resources, which
/// stand in for missing limits (as the kubelet's `defaultPodLimitsForDownwardAPI`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PodContext {
    pub host_ip: String,
    pub pod_ips: Vec<String>,
    pub node: NodeAllocatable,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeAllocatable {
    pub cpu_millis: i64,
    pub memory_bytes: i64,
    pub ephemeral_storage_bytes: i64,
}

impl NodeAllocatable {
    /// From the node's capacity/allocatable object (`{"cpu": "2", "memory": "4026532Ki", ...}`).
    pub fn from_json(v: &serde_json::Value) -> NodeAllocatable {
        let q = |k: &str| v.get(k).and_then(|s| s.as_str()).map(|s| Quantity(s.to_string()));
        NodeAllocatable {
            cpu_millis: q("cpu").as_ref().and_then(cpu_millis).unwrap_or(0),
            memory_bytes: q("memory").as_ref().and_then(memory_bytes).unwrap_or(0),
            ephemeral_storage_bytes: q("ephemeral-storage").as_ref().and_then(memory_bytes).unwrap_or(0),
        }
    }
}

/// `metadata.labels['app']` → ("metadata.labels", Some("app")); anything else → (path, None).
fn split_subscript(path: &str) -> (&str, Option<&str>) {
    if let Some(open) = path.find("['") {
        if let Some(inner) = path[open + 2..].strip_suffix("']") {
            return (&path[..open], Some(inner));
        }
    }
    (path, None)
}

/// Upstream's `FormatMap`: sorted `key="value"` lines.
pub fn format_map(m: &BTreeMap<String, String>) -> String {
    m.iter()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The value of `fieldRef.fieldPath` for `pod`.
pub fn field_value(pod: &Pod, path: &str, ctx: &PodContext) -> Result<String, DownwardError> {
    let spec = pod.spec.as_ref();
    let meta = &pod.metadata;
    let empty = BTreeMap::new();
    let (base, key) = split_subscript(path);
    Ok(match (base, key) {
        ("metadata.labels", Some(k)) => meta.labels.as_ref().unwrap_or(&empty).get(k).cloned().unwrap_or_default(),
        ("metadata.annotations", Some(k)) => {
            meta.annotations.as_ref().unwrap_or(&empty).get(k).cloned().unwrap_or_default()
        }
        ("metadata.labels", None) => format_map(meta.labels.as_ref().unwrap_or(&empty)),
        ("metadata.annotations", None) => format_map(meta.annotations.as_ref().unwrap_or(&empty)),
        ("metadata.name", None) => meta.name.clone().unwrap_or_default(),
        ("metadata.namespace", None) => meta.namespace.clone().unwrap_or_else(|| "default".into()),
        ("metadata.uid", None) => meta.uid.clone().unwrap_or_default(),
        ("spec.nodeName", None) => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        ("spec.serviceAccountName", None) => {
            spec.and_then(|s| s.service_account_name.clone().or_else(|| s.service_account.clone())).unwrap_or_default()
        }
        ("status.hostIP", None) => ctx.host_ip.clone(),
        ("status.hostIPs", None) => ctx.host_ip.clone(),
        ("status.podIP", None) => ctx.pod_ips.first().cloned().unwrap_or_default(),
        ("status.podIPs", None) => ctx.pod_ips.join(","),
        _ => return Err(DownwardError::FieldPath(path.to_string())),
    })
}

fn ceil_div(a: i64, b: i64) -> i64 {
    if b <= 0 {
        return 0;
    }
    a.saturating_add(b - 1).div_euclid(b)
}

/// The value of a `resourceFieldRef` (`limits.cpu`, `requests.memory`, ...) of container `container` of `pod`,
/// divided by `divisor` and rounded up, as upstream's `ExtractContainerResourceValue`. Missing limits are the
/// node's allocatable; a missing request is 0 (the API server defaults requests from limits).
pub fn resource_value(
    pod: &Pod,
    container: &str,
    resource: &str,
    divisor: Option<&Quantity>,
    ctx: &PodContext,
) -> Result<String, DownwardError> {
    let spec = pod.spec.as_ref();
    let c: &Container = spec
        .and_then(|s| s.containers.iter().chain(s.init_containers.iter().flatten()).find(|c| c.name == container))
        .ok_or_else(|| DownwardError::Container(container.to_string()))?;
    let res = c.resources.as_ref();
    let limit = |k: &str| res.and_then(|r| r.limits.as_ref()).and_then(|l| l.get(k));
    let request = |k: &str| res.and_then(|r| r.requests.as_ref()).and_then(|l| l.get(k));
    let divisor_str = divisor.map(|d| d.0.clone()).unwrap_or_else(|| "1".into());
    let bad_divisor = || DownwardError::Divisor(divisor_str.clone());
    let d = Quantity(divisor_str.clone());
    let node = &ctx.node;
    let (value, div) = match resource {
        "limits.cpu" => (limit("cpu").and_then(cpu_millis).unwrap_or(node.cpu_millis), cpu_millis(&d)),
        "requests.cpu" => (request("cpu").and_then(cpu_millis).unwrap_or(0), cpu_millis(&d)),
        "limits.memory" => (limit("memory").and_then(memory_bytes).unwrap_or(node.memory_bytes), memory_bytes(&d)),
        "requests.memory" => (request("memory").and_then(memory_bytes).unwrap_or(0), memory_bytes(&d)),
        "limits.ephemeral-storage" => (
            limit("ephemeral-storage").and_then(memory_bytes).unwrap_or(node.ephemeral_storage_bytes),
            memory_bytes(&d),
        ),
        "requests.ephemeral-storage" => (request("ephemeral-storage").and_then(memory_bytes).unwrap_or(0), memory_bytes(&d)),
        _ => return Err(DownwardError::Resource(resource.to_string())),
    };
    let div = div.filter(|d| *d > 0).ok_or_else(bad_divisor)?;
    Ok(ceil_div(value, div).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod() -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "web", "tier": "a\"b"},
                         "annotations": {"note": "hi"}},
            "spec": {"nodeName": "n1", "serviceAccountName": "sa", "containers": [
                {"name": "c", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "250m"}}},
                {"name": "free"}]}
        }))
        .unwrap()
    }

    fn ctx() -> PodContext {
        PodContext {
            host_ip: "10.0.0.1".into(),
            pod_ips: vec!["10.244.0.5".into()],
            node: NodeAllocatable { cpu_millis: 2000, memory_bytes: 4 << 30, ephemeral_storage_bytes: 10 << 30 },
        }
    }

    #[test]
    fn field_paths() {
        let (p, c) = (pod(), ctx());
        let f = |path: &str| field_value(&p, path, &c);
        assert_eq!(f("metadata.name").unwrap(), "p");
        assert_eq!(f("metadata.namespace").unwrap(), "ns");
        assert_eq!(f("metadata.uid").unwrap(), "u1");
        assert_eq!(f("metadata.labels['app']").unwrap(), "web");
        assert_eq!(f("metadata.labels['missing']").unwrap(), "");
        assert_eq!(f("metadata.annotations['note']").unwrap(), "hi");
        assert_eq!(f("metadata.labels").unwrap(), "app=\"web\"\ntier=\"a\\\"b\"");
        assert_eq!(f("spec.nodeName").unwrap(), "n1");
        assert_eq!(f("spec.serviceAccountName").unwrap(), "sa");
        assert_eq!(f("status.hostIP").unwrap(), "10.0.0.1");
        assert_eq!(f("status.podIP").unwrap(), "10.244.0.5");
        assert_eq!(f("status.podIPs").unwrap(), "10.244.0.5");
        assert_eq!(f("spec.bogus"), Err(DownwardError::FieldPath("spec.bogus".into())));
    }

    #[test]
    fn resources_with_divisors_and_node_defaults() {
        let (p, c) = (pod(), ctx());
        let r = |name: &str, res: &str, div: Option<&str>| {
            resource_value(&p, name, res, div.map(|d| Quantity(d.into())).as_ref(), &c)
        };
        assert_eq!(r("c", "limits.cpu", None).unwrap(), "1"); // 500m rounds up to 1 core
        assert_eq!(r("c", "limits.cpu", Some("1m")).unwrap(), "500");
        assert_eq!(r("c", "requests.cpu", Some("1m")).unwrap(), "250");
        assert_eq!(r("c", "limits.memory", Some("1Mi")).unwrap(), "64");
        assert_eq!(r("c", "requests.memory", None).unwrap(), "0");
        assert_eq!(r("free", "limits.cpu", None).unwrap(), "2");
        assert_eq!(r("free", "limits.memory", Some("1Gi")).unwrap(), "4");
        assert_eq!(r("c", "limits.gpu", None), Err(DownwardError::Resource("limits.gpu".into())));
        assert_eq!(r("nope", "limits.cpu", None), Err(DownwardError::Container("nope".into())));
        assert!(matches!(r("c", "limits.cpu", Some("0")), Err(DownwardError::Divisor(_))));
    }

    #[test]
    fn allocatable_from_the_node_capacity() {
        let a = NodeAllocatable::from_json(&json!({"cpu": "2", "memory": "1024Ki", "ephemeral-storage": "1000"}));
        assert_eq!(a, NodeAllocatable { cpu_millis: 2000, memory_bytes: 1 << 20, ephemeral_storage_bytes: 1000 });
    }
}
