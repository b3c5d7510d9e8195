//! Fixtures shared by the renderer and lab tests: Services and EndpointSlices written as the API would hold them.
#![allow(dead_code)]

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use serde_json::{json, Value};
use skiff_netproxy::model::{DesiredState, NodeConfig};

pub fn node(name: &str) -> NodeConfig {
    NodeConfig {
        node_name: name.into(),
        cluster_cidr: "10.244.0.0/16".parse().expect("cidr"),
        masquerade_all: false,
        service_cidr: Some("10.96.0.0/12".parse().expect("cidr")),
    }
}

pub fn service(ns: &str, name: &str, spec: Value) -> Service {
    service_with_status(ns, name, spec, json!({}))
}

pub fn service_with_status(ns: &str, name: &str, spec: Value, status: Value) -> Service {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec, "status": status,
    }))
    .expect("service fixture")
}

/// `endpoints`: (address, node, ready).
pub fn slice(ns: &str, service: &str, suffix: &str, ports: Value, endpoints: &[(&str, &str, bool)]) -> EndpointSlice {
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|(ip, node, ready)| json!({"addresses": [ip], "nodeName": node, "conditions": {"ready": ready, "serving": ready, "terminating": false}}))
        .collect();
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": format!("{service}-{suffix}"), "namespace": ns, "labels": {"kubernetes.io/service-name": service}},
        "addressType": "IPv4", "ports": ports, "endpoints": eps,
    }))
    .expect("slice fixture")
}

/// A state with every feature the renderer has, seen from node `node-a`.
pub fn kitchen_sink() -> (DesiredState, Vec<String>) {
    let services = vec![
        service("default", "web", json!({"clusterIP": "10.96.0.10", "ports": [
            {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"},
            {"name": "dns", "port": 53, "protocol": "UDP"},
            {"name": "sctp", "port": 3868, "protocol": "SCTP"}]})),
        service_with_status("default", "np", json!({"type": "LoadBalancer", "clusterIP": "10.96.0.11",
            "externalIPs": ["192.0.2.10", "bogus"], "externalTrafficPolicy": "Local",
            "ports": [{"port": 80, "nodePort": 30080, "protocol": "TCP"}]}),
            json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.7"}]}})),
        service("default", "sticky", json!({"clusterIP": "10.96.0.12", "sessionAffinity": "ClientIP",
            "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}, "ports": [{"port": 80}]})),
        service("default", "empty", json!({"type": "NodePort", "clusterIP": "10.96.0.13",
            "ports": [{"port": 80, "nodePort": 30081}]})),
        service("default", "itp", json!({"clusterIP": "10.96.0.14", "internalTrafficPolicy": "Local",
            "ports": [{"port": 80}]})),
        service("default", "manual", json!({"clusterIP": "10.96.0.15", "ports": [
            {"name": "a", "port": 80}, {"name": "nomatch", "port": 81}, {"name": "dup", "port": 80}]})),
        service("default", "headless", json!({"clusterIP": "None", "ports": [{"port": 80}]})),
        service("default", "ext", json!({"type": "ExternalName", "externalName": "example.com"})),
    ];
    let slices = vec![
        slice("default", "web", "1", json!([{"name": "http", "port": 8080, "protocol": "TCP"},
            {"name": "dns", "port": 53, "protocol": "UDP"}, {"name": "sctp", "port": 3868, "protocol": "SCTP"}]),
            &[("10.244.1.5", "node-a", true), ("10.244.2.7", "node-b", true), ("10.244.2.8", "node-b", false)]),
        slice("default", "np", "1", json!([{"port": 8080, "protocol": "TCP"}]),
            &[("10.244.1.9", "node-a", true), ("10.244.2.9", "node-b", true)]),
        slice("default", "sticky", "1", json!([{"port": 80, "protocol": "TCP"}]),
            &[("10.244.1.20", "node-a", true), ("10.244.2.20", "node-b", true)]),
        slice("default", "empty", "1", json!([]), &[]),
        slice("default", "itp", "1", json!([{"port": 80, "protocol": "TCP"}]), &[("10.244.2.30", "node-b", true)]),
        slice("default", "manual", "x", json!([{"name": "a", "port": 9000, "protocol": "TCP"}]),
            &[("192.168.50.1", "", true), ("not-an-ip", "", true), ("127.0.0.1", "", true)]),
    ];
    DesiredState::build(node("node-a"), &services, &slices)
}
