//! Discovery: `/version`, legacy (`/api`, `/apis`, `/api/v1`, `/apis/<g>/<v>`) and aggregated
//! (`apidiscovery.k8s.io/v2`) documents, all generated from the resource table.

use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::codec::{json_response, respond};
use crate::api::resources::{self, ResourceInfo};

pub const AGGREGATED_CONTENT_TYPE: &str = "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";

pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "32",
        "gitVersion": concat!("v1.32.0-skiff.", env!("CARGO_PKG_VERSION")),
        "gitCommit": "skiff",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": format!("linux/{}", std::env::consts::ARCH),
    })
}

fn wants_aggregated(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("g=apidiscovery.k8s.io") && a.contains("as=APIGroupDiscoveryList") && a.contains("v=v2"))
}

fn legacy_resources(group: &str, version: &str) -> Value {
    let mut list = Vec::new();
    for r in resources::in_group(group, version) {
        let mut entry = json!({
            "name": r.plural,
            "singularName": r.singular,
            "namespaced": r.namespaced,
            "kind": r.kind,
            "verbs": r.verbs(),
        });
        if !r.short_names.is_empty() {
            entry["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            entry["categories"] = json!(r.categories);
        }
        list.push(entry);
        for sub in r.subresources {
            let (g, v, kind, verbs) = sub.discovery(r);
            let mut e = json!({
                "name": format!("{}/{}", r.plural, sub.name()),
                "singularName": "",
                "namespaced": r.namespaced,
                "kind": kind,
                "verbs": verbs,
            });
            if g != group || v != version {
                e["group"] = json!(g);
                e["version"] = json!(v);
            }
            list.push(e);
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": list})
}

fn aggregated_resource(r: &ResourceInfo) -> Value {
    let subs: Vec<Value> = r
        .subresources
        .iter()
        .map(|s| {
            let (g, v, kind, verbs) = s.discovery(r);
            json!({"subresource": s.name(), "responseKind": {"group": g, "version": v, "kind": kind}, "verbs": verbs})
        })
        .collect();
    let mut e = json!({
        "resource": r.plural,
        "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
        "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
        "singularResource": r.singular,
        "verbs": r.verbs(),
    });
    if !r.short_names.is_empty() {
        e["shortNames"] = json!(r.short_names);
    }
    if !r.categories.is_empty() {
        e["categories"] = json!(r.categories);
    }
    if !subs.is_empty() {
        e["subresources"] = Value::Array(subs);
    }
    e
}

fn aggregated(groups: &[(&str, &str)]) -> Value {
    let items: Vec<Value> = groups
        .iter()
        .map(|(g, v)| {
            let res: Vec<Value> = resources::in_group(g, v).map(aggregated_resource).collect();
            let mut item = json!({
                "metadata": {"creationTimestamp": null},
                "versions": [{"version": v, "resources": res, "freshness": "Current"}],
            });
            if !g.is_empty() {
                item["metadata"]["name"] = json!(g);
            }
            item
        })
        .collect();
    json!({"kind": "APIGroupDiscoveryList", "apiVersion": "apidiscovery.k8s.io/v2", "metadata": {}, "items": items})
}

fn group_json(g: &str, v: &str) -> Value {
    let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
    json!({"kind": "APIGroup", "apiVersion": "v1", "name": g, "versions": [gv.clone()], "preferredVersion": gv})
}

/// Answer a discovery path, or None if `path` is not one.
pub fn handle(path: &str, headers: &HeaderMap) -> Option<Response> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let resp = match segs.as_slice() {
        ["version"] => json_response(StatusCode::OK, &version()),
        ["api"] if wants_aggregated(headers) => respond(StatusCode::OK, AGGREGATED_CONTENT_TYPE, &aggregated(&[("", "v1")])),
        ["api"] => json_response(
            StatusCode::OK,
            &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}),
        ),
        ["api", "v1"] => json_response(StatusCode::OK, &legacy_resources("", "v1")),
        ["apis"] if wants_aggregated(headers) => {
            respond(StatusCode::OK, AGGREGATED_CONTENT_TYPE, &aggregated(&resources::groups()))
        }
        ["apis"] => {
            let groups: Vec<Value> = resources::groups().iter().map(|(g, v)| group_json(g, v)).collect();
            json_response(StatusCode::OK, &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
        }
        ["apis", g] => {
            let (g, v) = resources::groups().into_iter().find(|(x, _)| x == g)?;
            json_response(StatusCode::OK, &group_json(g, v))
        }
        ["apis", g, v] => {
            resources::groups().into_iter().find(|(x, y)| x == g && y == v)?;
            json_response(StatusCode::OK, &legacy_resources(g, v))
        }
        // kubectl validates with OpenAPI when the server has it. An empty v2 document makes it leave validation
        // to the server (fieldValidation=Strict), which checks unknown fields itself.
        ["openapi", "v2"] => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/com.github.proto-openapi.spec.v2.v1.0+protobuf")],
            Vec::<u8>::new(),
        )
            .into_response(),
        _ => return None,
    };
    Some(resp)
}
