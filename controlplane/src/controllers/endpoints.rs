//! The endpoints controller: for every Service with a selector, the Endpoints object and the EndpointSlices that
//! list its pods' addresses (ready ones as ready, others as not ready), with named target ports resolved
//! against each pod's containers. Both are owned by the Service, so they go with it.
//!
//! [`desired`] computes them from the Service and the pods (pure); [`reconcile`] applies them and removes
//! slices that are no longer wanted.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use super::replicaset::{is_active, is_ready};
use super::{error_policy, object_name, ControllerError, ControllersConfig};
use crate::controllers::cached_pod::CachedPod;

pub const MANAGER: &str = "endpointslice-controller.k8s.io";
const FIELD_MANAGER: &str = "skiff-endpoints-controller";

pub struct Context {
    client: Client,
    pods: Store<CachedPod>,
    config: ControllersConfig,
}

impl Context {
    pub fn new(client: Client, pods: Store<CachedPod>, config: ControllersConfig) -> Self {
        Context { client, pods, config }
    }
}

fn selects(svc: &Service, pod: &CachedPod) -> bool {
    let Some(sel) = svc.spec.as_ref().and_then(|s| s.selector.as_ref()).filter(|s| !s.is_empty()) else { return false };
    svc.namespace() == pod.namespace() && sel.iter().all(|(k, v)| pod.labels().get(k) == Some(v))
}

/// The pod's port for a service port's targetPort: a number as is, a name looked up in its containers.
fn resolve_port(pod: &CachedPod, target: &Value, protocol: &str) -> Option<i64> {
    match target {
        Value::Number(n) => n.as_i64(),
        Value::String(name) => pod.spec.as_ref()?.containers.iter().flat_map(|c| c.ports.iter().flatten()).find_map(|p| {
            (p.name.as_deref() == Some(name.as_str()) && p.protocol.as_deref().unwrap_or("TCP") == protocol)
                .then_some(p.container_port as i64)
        }),
        _ => None,
    }
}

/// Endpoints and EndpointSlices (JSON, ready to apply) for a Service and the pods it selects.
pub fn desired(svc: &Service, pods: &[&CachedPod]) -> (Value, Vec<Value>) {
    let name = svc.name_any();
    let ns = svc.namespace().unwrap_or_default();
    let publish_not_ready = svc.spec.as_ref().and_then(|s| s.publish_not_ready_addresses).unwrap_or(false);
    let svc_ports: Vec<(String, Value, String)> = svc
        .spec
        .as_ref()
        .and_then(|s| s.ports.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|p| {
            let target = match p.target_port {
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(i)) => json!(i),
                Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::String(s)) => json!(s),
                None => json!(p.port),
            };
            (p.name.unwrap_or_default(), target, p.protocol.unwrap_or_else(|| "TCP".into()))
        })
        .collect();
    // Pods grouped by their resolved port list (a subset / slice per distinct list).
    let mut groups: BTreeMap<Vec<ResolvedPort>, Vec<(&CachedPod, bool)>> = BTreeMap::new();
    for p in pods.iter().copied().filter(|p| selects(svc, p) && is_active(p)) {
        let has_ip = p.status.as_ref().and_then(|s| s.pod_ip.as_deref()).is_some_and(|ip| !ip.is_empty());
        if !has_ip {
            continue;
        }
        let terminating = p.metadata.deletion_timestamp.is_some();
        let ready = (is_ready(p) && !terminating) || publish_not_ready;
        let ports: Vec<ResolvedPort> = svc_ports
            .iter()
            .filter_map(|(n, target, proto)| resolve_port(p, target, proto).map(|port| (n.clone(), port, proto.clone())))
            .collect();
        if ports.is_empty() && !svc_ports.is_empty() {
            continue;
        }
        groups.entry(ports).or_default().push((p, ready));
    }
    let owner = json!([{"apiVersion": "v1", "kind": "Service", "name": name, "uid": svc.uid(), "controller": true, "blockOwnerDeletion": true}]);
    let target_ref = |p: &CachedPod| json!({"kind": "Pod", "name": p.name_any(), "namespace": ns, "uid": p.uid()});
    let address = |p: &CachedPod| {
        let mut a = json!({"ip": p.status.as_ref().and_then(|s| s.pod_ip.clone()), "targetRef": target_ref(p)});
        if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
            a["nodeName"] = json!(n);
        }
        a
    };
    let mut subsets = Vec::new();
    let mut slices = Vec::new();
    for (ports, members) in &groups {
        let mut ready: Vec<Value> = members.iter().filter(|(_, r)| *r).map(|(p, _)| address(p)).collect();
        let mut not_ready: Vec<Value> = members.iter().filter(|(_, r)| !*r).map(|(p, _)| address(p)).collect();
        ready.sort_by_key(|a| a["ip"].as_str().unwrap_or_default().to_string());
        not_ready.sort_by_key(|a| a["ip"].as_str().unwrap_or_default().to_string());
        let port_json: Vec<Value> = ports.iter().map(|(n, p, proto)| {
            let mut v = json!({"port": p, "protocol": proto});
            if !n.is_empty() {
                v["name"] = json!(n);
            }
            v
        }).collect();
        let mut subset = json!({"ports": port_json});
        if !ready.is_empty() {
            subset["addresses"] = json!(ready);
        }
        if !not_ready.is_empty() {
            subset["notReadyAddresses"] = json!(not_ready);
        }
        subsets.push(subset);
        let mut endpoints: Vec<Value> = members
            .iter()
            .map(|(p, r)| {
                let mut e = json!({
                    "addresses": [p.status.as_ref().and_then(|s| s.pod_ip.clone())],
                    "conditions": {"ready": r, "serving": is_ready(p), "terminating": p.metadata.deletion_timestamp.is_some()},
                    "targetRef": target_ref(p),
                });
                if let Some(n) = p.spec.as_ref().and_then(|s| s.node_name.clone()) {
                    e["nodeName"] = json!(n);
                }
                e
            })
            .collect();
        endpoints.sort_by_key(|e| e["addresses"][0].as_str().unwrap_or_default().to_string());
        let key: String = ports.iter().map(|(n, p, proto)| format!("{n}:{p}/{proto};")).collect();
        let slice_name = format!("{name}-{:08x}", fnv(&key));
        slices.push(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": slice_name, "namespace": ns, "ownerReferences": owner,
                         "labels": {"kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": MANAGER}},
            "addressType": "IPv4", "endpoints": endpoints, "ports": port_json,
        }));
    }
    if slices.is_empty() {
        // An empty slice says "no endpoints" (as upstream keeps one).
        let port_json: Vec<Value> = Vec::new();
        slices.push(json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-empty"), "namespace": ns, "ownerReferences": owner,
                         "labels": {"kubernetes.io/service-name": name, "endpointslice.kubernetes.io/managed-by": MANAGER}},
            "addressType": "IPv4", "endpoints": [], "ports": port_json,
        }));
    }
    let endpoints = json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": name, "namespace": ns, "ownerReferences": owner,
                     "labels": svc.labels().clone()},
        "subsets": subsets,
    });
    (endpoints, slices)
}

/// (port name, the pod's port number, protocol).
type ResolvedPort = (String, i64, String);

fn fnv(s: &str) -> u32 {
    s.bytes().fold(0x811c9dc5u32, |h, b| (h ^ b as u32).wrapping_mul(0x01000193))
}

pub async fn reconcile(svc: Arc<Service>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let has_selector = svc.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some_and(|s| !s.is_empty());
    if !has_selector || svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::requeue(ctx.config.resync));
    }
    let ns = svc.namespace().unwrap_or_default();
    let name = object_name(svc.as_ref());
    let all = ctx.pods.state();
    let pods: Vec<&CachedPod> = all.iter().map(|p| p.as_ref()).filter(|p| p.namespace().as_deref() == Some(&ns)).collect();
    let (endpoints, slices) = desired(&svc, &pods);
    let err = |e| ControllerError::Api { object: name.clone(), source: Box::new(e) };
    let pp = PatchParams::apply(FIELD_MANAGER).force();
    let ep_api: Api<k8s_openapi::api::core::v1::Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    ep_api.patch(&svc.name_any(), &pp, &Patch::Apply(&endpoints)).await.map_err(err)?;
    let slice_api: Api<k8s_openapi::api::discovery::v1::EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let mut wanted = Vec::new();
    for s in &slices {
        let slice_name = s["metadata"]["name"].as_str().unwrap_or_default().to_string();
        slice_api.patch(&slice_name, &pp, &Patch::Apply(s)).await.map_err(err)?;
        wanted.push(slice_name);
    }
    let existing = slice_api
        .list(&ListParams::default().labels(&format!("kubernetes.io/service-name={}", svc.name_any())))
        .await
        .map_err(err)?;
    for old in existing.items.iter().filter(|s| !wanted.contains(&s.name_any())) {
        if old.labels().get("endpointslice.kubernetes.io/managed-by").map(String::as_str) == Some(MANAGER) {
            match slice_api.delete(&old.name_any(), &DeleteParams::default()).await {
                Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404, .. })) => {}
                Err(e) => return Err(err(e)),
            }
        }
    }
    Ok(Action::requeue(ctx.config.resync))
}

pub fn run(
    services: Api<Service>,
    ctx: Arc<Context>,
    pod_events: impl futures::Stream<Item = Result<CachedPod, kube::runtime::watcher::Error>> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    let controller = Controller::new(services, kube::runtime::watcher::Config::default());
    let svc_store = controller.store();
    // A pod change wakes every Service with a selector in its namespace: the watch event carries only the new
    // labels, and a pod that stopped matching must leave the endpoints of the Service it matched before.
    controller
        .watches_stream(pod_events, move |pod: CachedPod| {
            let ns = pod.namespace();
            svc_store
                .state()
                .iter()
                .filter(|s| s.namespace() == ns && s.spec.as_ref().and_then(|sp| sp.selector.as_ref()).is_some_and(|sel| !sel.is_empty()))
                .map(|s| ObjectRef::from_obj(s.as_ref()))
                .collect::<Vec<_>>()
        })
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(target: Value) -> Service {
        serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "default", "uid": "svc-uid"},
            "spec": {"selector": {"app": "web"}, "ports": [{"name": "http", "port": 80, "targetPort": target, "protocol": "TCP"}]}}))
        .unwrap()
    }

    fn pod(name: &str, ip: &str, ready: bool, port_name: Option<(&str, i32)>) -> CachedPod {
        let ports = port_name.map(|(n, p)| json!([{"name": n, "containerPort": p}])).unwrap_or(json!([]));
        serde_json::from_value(json!({"metadata": {"name": name, "namespace": "default", "uid": name, "labels": {"app": "web"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x", "ports": ports}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}}))
        .unwrap()
    }

    #[test]
    fn ready_and_not_ready_addresses() {
        let pods = [pod("a", "10.244.0.5", true, None), pod("b", "10.244.1.7", false, None)];
        let (ep, slices) = desired(&svc(json!(8080)), &pods.iter().collect::<Vec<_>>());
        assert_eq!(ep["subsets"][0]["addresses"][0]["ip"], "10.244.0.5");
        assert_eq!(ep["subsets"][0]["notReadyAddresses"][0]["ip"], "10.244.1.7");
        assert_eq!(ep["subsets"][0]["ports"][0], json!({"port": 8080, "protocol": "TCP", "name": "http"}));
        assert_eq!(slices.len(), 1);
        assert_eq!(slices[0]["endpoints"][1]["conditions"]["ready"], false);
        assert_eq!(slices[0]["metadata"]["labels"]["kubernetes.io/service-name"], "web");
        assert_eq!(slices[0]["metadata"]["ownerReferences"][0]["uid"], "svc-uid");
    }

    #[test]
    fn named_ports_resolve_per_pod() {
        let pods = [pod("a", "10.244.0.5", true, Some(("web", 8080))), pod("b", "10.244.0.6", true, Some(("web", 9090))), pod("c", "10.244.0.7", true, None)];
        let (ep, slices) = desired(&svc(json!("web")), &pods.iter().collect::<Vec<_>>());
        assert_eq!(ep["subsets"].as_array().unwrap().len(), 2, "one subset per resolved port");
        assert_eq!(slices.len(), 2);
        let ports: Vec<i64> = slices.iter().map(|s| s["ports"][0]["port"].as_i64().unwrap()).collect();
        assert!(ports.contains(&8080) && ports.contains(&9090));
    }

    #[test]
    fn pods_without_ip_or_not_selected_are_left_out() {
        let mut other = pod("x", "10.244.0.9", true, None);
        other.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
        let no_ip = pod("y", "", true, None);
        let (ep, slices) = desired(&svc(json!(80)), &[&other, &no_ip]);
        assert_eq!(ep["subsets"], json!([]));
        assert_eq!(slices[0]["endpoints"], json!([]));
        assert_eq!(slices[0]["metadata"]["name"], "web-empty");
    }
}
