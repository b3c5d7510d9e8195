//! `metrics.k8s.io/v1beta1` — NodeMetrics and PodMetrics, what `kubectl top` reads. Upstream serves this group from
//! metrics-server through the aggregation layer; Skiff's API server serves it itself, asking the agents of the
//! nodes concerned for their `/stats/summary` (CPU as a rate over the agent's last sampling interval, memory
//! working set; see the agent's `stats` module) when a request comes. Read-only: get and list, no watch.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::codec::{self, Format, IncludeObject};
use super::errors::ApiError;
use super::{ApiServer, Req, Target};
use crate::api::resources;
use crate::api::selectors::{FieldSelector, LabelSelector};

/// The agents' sampling interval, reported as each sample's window.
const WINDOW: &str = "10s";

/// Where a node's agent listens, from the Node object.
pub fn agent_address(node: &Value) -> Option<String> {
    let addresses = node.pointer("/status/addresses").and_then(Value::as_array).cloned().unwrap_or_default();
    let pick = |ty: &str| addresses.iter().find(|a| a["type"] == ty).and_then(|a| a["address"].as_str()).map(String::from);
    let host = pick("InternalIP").or_else(|| pick("ExternalIP")).or_else(|| pick("Hostname"))?;
    let port = node.pointer("/status/daemonEndpoints/kubeletEndpoint/Port").and_then(Value::as_u64).unwrap_or(10250);
    let host = if host.contains(':') { format!("[{host}]") } else { host };
    Some(format!("{host}:{port}"))
}

async fn list_all(s: &ApiServer, group: &str, plural: &str, ns: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let info = resources::find(group, "v1", plural).ok_or_else(|| ApiError::internal(format!("no {plural} resource")))?;
    let list = s.store.list(&info.prefix(ns), Default::default()).await.map_err(|e| ApiError::from_store(info, "", e))?;
    list.items.iter().map(codec::object_from_kv).collect()
}

/// A node's summary, or None when its agent does not answer (within 5 s).
async fn summary(s: &ApiServer, node: &Value) -> Option<Value> {
    let addr = agent_address(node)?;
    let scheme = if s.kubelet_tls.is_some() { "https" } else { "http" };
    let resp = s.http.get(format!("{scheme}://{addr}/stats/summary")).timeout(Duration::from_secs(5)).send().await.ok()?;
    if !resp.status().is_success() {
        return None;
    }
    resp.json::<Value>().await.ok()
}

/// Summaries of several nodes at once.
async fn summaries(s: &ApiServer, nodes: &[Value]) -> Vec<(String, Value)> {
    let fetched = futures::future::join_all(nodes.iter().map(|n| summary(s, n))).await;
    nodes
        .iter()
        .zip(fetched)
        .filter_map(|(n, sm)| Some((n.pointer("/metadata/name")?.as_str()?.to_string(), sm?)))
        .collect()
}

fn usage(cpu: &Value, memory: &Value) -> Option<Value> {
    let nanocores = cpu.get("usageNanoCores")?.as_u64()?;
    let bytes = memory.get("workingSetBytes")?.as_u64()?;
    Some(json!({"cpu": format!("{nanocores}n"), "memory": format!("{}Ki", bytes / 1024)}))
}

fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn node_metrics(node: &Value, summary: &Value) -> Option<Value> {
    let n = &summary["node"];
    Some(json!({
        "kind": "NodeMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": node.pointer("/metadata/name")?, "creationTimestamp": now(),
                     "labels": node.pointer("/metadata/labels").cloned().unwrap_or(json!({}))},
        "timestamp": n.pointer("/cpu/time")?, "window": WINDOW,
        "usage": usage(n.get("cpu")?, n.get("memory")?)?,
    }))
}

fn pod_metrics(pod: &Value, summary_pod: &Value) -> Option<Value> {
    let containers: Vec<Value> = summary_pod
        .get("containers")?
        .as_array()?
        .iter()
        .filter_map(|c| Some(json!({"name": c.get("name")?, "usage": usage(c.get("cpu")?, c.get("memory")?)?})))
        .collect();
    let timestamp = summary_pod.pointer("/containers/0/cpu/time")?.clone();
    Some(json!({
        "kind": "PodMetrics", "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {"name": pod.pointer("/metadata/name")?, "namespace": pod.pointer("/metadata/namespace")?,
                     "creationTimestamp": now(), "labels": pod.pointer("/metadata/labels").cloned().unwrap_or(json!({}))},
        "timestamp": timestamp, "window": WINDOW, "containers": containers,
    }))
}

fn respond(t: &Target, r: &Req, items: Vec<Value>, single: bool) -> Result<Response, ApiError> {
    let format = codec::negotiate(&r.headers)?;
    let include = IncludeObject::parse(r.q("includeObject"))?;
    if single {
        let obj = items.into_iter().next().ok_or_else(|| ApiError::not_found(t.info, t.name.as_deref().unwrap_or_default()))?;
        return Ok(codec::object_response(StatusCode::OK, t.info, &obj, format, include));
    }
    Ok(match format {
        Format::Json => codec::json_response(
            StatusCode::OK,
            &json!({"kind": format!("{}List", t.info.kind), "apiVersion": "metrics.k8s.io/v1beta1", "metadata": {}, "items": items}),
        ),
        Format::Table => codec::respond(StatusCode::OK, codec::TABLE_CONTENT_TYPE, &codec::table(t.info, &items, json!({}), include, true)),
    })
}

pub async fn dispatch(s: &Arc<ApiServer>, t: &Target, r: &Req) -> Result<Response, ApiError> {
    if r.method != axum::http::Method::GET || r.flag("watch") || t.sub.is_some() {
        return Err(ApiError::method_not_allowed(&format!("{} {} (metrics are read with get and list)", r.method, t.info.qualified())));
    }
    let labels = LabelSelector::parse(r.q("labelSelector").unwrap_or("")).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let fields = FieldSelector::parse(r.q("fieldSelector").unwrap_or(""), "", t.info.plural).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let selected = |o: &Value| labels.matches(o) && fields.matches(o);
    let named = |o: &Value| t.name.as_deref().is_none_or(|n| o.pointer("/metadata/name").and_then(Value::as_str) == Some(n));
    match t.info.plural {
        "nodes" => {
            let nodes: Vec<Value> = list_all(s, "", "nodes", None).await?.into_iter().filter(|n| named(n) && selected(n)).collect();
            let items = summaries(s, &nodes)
                .await
                .iter()
                .filter_map(|(name, sm)| nodes.iter().find(|n| n.pointer("/metadata/name").and_then(Value::as_str) == Some(name)).and_then(|n| node_metrics(n, sm)))
                .collect();
            respond(t, r, items, t.name.is_some())
        }
        _ => {
            let pods: Vec<Value> = list_all(s, "", "pods", t.namespace.as_deref())
                .await?
                .into_iter()
                .filter(|p| named(p) && selected(p) && p.pointer("/spec/nodeName").and_then(Value::as_str).is_some_and(|n| !n.is_empty()))
                .collect();
            let wanted: std::collections::HashSet<&str> = pods.iter().filter_map(|p| p.pointer("/spec/nodeName").and_then(Value::as_str)).collect();
            let nodes: Vec<Value> = list_all(s, "", "nodes", None)
                .await?
                .into_iter()
                .filter(|n| n.pointer("/metadata/name").and_then(Value::as_str).is_some_and(|name| wanted.contains(name)))
                .collect();
            let sums = summaries(s, &nodes).await;
            let mut items = Vec::new();
            for pod in &pods {
                let uid = pod.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default();
                let found = sums.iter().flat_map(|(_, sm)| sm.get("pods").and_then(Value::as_array).into_iter().flatten()).find(|p| p.pointer("/podRef/uid").and_then(Value::as_str) == Some(uid));
                if let Some(m) = found.and_then(|sp| pod_metrics(pod, sp)) {
                    items.push(m);
                }
            }
            respond(t, r, items, t.name.is_some())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_from_a_summary() {
        let node = json!({"metadata": {"name": "n1", "labels": {"zone": "a"}},
                          "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.5"}], "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}});
        assert_eq!(agent_address(&node).as_deref(), Some("10.0.0.5:10250"));
        let sm = json!({"node": {"cpu": {"time": "2026-12-07T12:00:00Z", "usageNanoCores": 250_000_000u64}, "memory": {"workingSetBytes": 1_048_576u64}},
                        "pods": [{"podRef": {"uid": "u1"}, "containers": [{"name": "c", "cpu": {"time": "2026-12-07T12:00:00Z", "usageNanoCores": 5_000_000u64}, "memory": {"workingSetBytes": 2048u64}}]}]});
        let nm = node_metrics(&node, &sm).unwrap();
        assert_eq!(nm["usage"], json!({"cpu": "250000000n", "memory": "1024Ki"}));
        assert_eq!(nm["metadata"]["labels"]["zone"], "a");
        let pod = json!({"metadata": {"name": "p", "namespace": "default", "uid": "u1"}});
        let pm = pod_metrics(&pod, &sm["pods"][0]).unwrap();
        assert_eq!(pm["containers"][0], json!({"name": "c", "usage": {"cpu": "5000000n", "memory": "2Ki"}}));
        assert_eq!(pm["timestamp"], "2026-12-07T12:00:00Z");
    }
}
