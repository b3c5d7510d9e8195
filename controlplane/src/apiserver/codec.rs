//! Request bodies in (JSON, YAML, protobuf) and responses out (JSON objects, lists, Tables).

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::errors::ApiError;
use crate::api::protobuf;
use crate::api::resources::ResourceInfo;
use crate::api::tables;
use crate::store::KeyValue;

pub const TABLE_CONTENT_TYPE: &str = "application/json;as=Table;v=v1;g=meta.k8s.io";

/// The body's media type, without parameters.
pub fn content_type(headers: &HeaderMap) -> String {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase())
        .unwrap_or_default()
}

/// Decode a create/update body into a JSON object.
pub fn decode_object(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = content_type(headers);
    let value = match ct.as_str() {
        "" | "application/json" => decode_json(body)?,
        "application/yaml" | "application/x-yaml" | "text/yaml" => decode_yaml(body)?,
        "application/vnd.kubernetes.protobuf" => protobuf::decode(body).map_err(|e| match e {
            protobuf::ProtobufError::UnsupportedType { .. } | protobuf::ProtobufError::UnsupportedField { .. } => {
                ApiError::unsupported_media(format!("{e}; send this object as application/json"))
            }
            other => ApiError::bad_request(format!("unable to decode protobuf body: {other}")),
        })?,
        other => {
            return Err(ApiError::unsupported_media(format!(
                "the body of the request was in an unknown format - accepted media types include: application/json, application/yaml, application/vnd.kubernetes.protobuf (got {other:?})"
            )))
        }
    };
    if !value.is_object() {
        return Err(ApiError::bad_request("the request body must be a JSON object"));
    }
    Ok(value)
}

pub fn decode_json(body: &[u8]) -> Result<Value, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request("the request body is empty"));
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("unable to decode JSON body: {e}")))
}

pub fn decode_yaml(body: &[u8]) -> Result<Value, ApiError> {
    let text = std::str::from_utf8(body).map_err(|e| ApiError::bad_request(format!("the YAML body is not UTF-8: {e}")))?;
    check_yaml_nesting(text)?;
    serde_yaml_ng::from_str::<Value>(text).map_err(|e| ApiError::bad_request(format!("unable to decode YAML body: {e}")))
}

/// serde_yaml_ng's own limit: a deeper document could not be decoded anyway.
const MAX_YAML_DEPTH: usize = 128;

/// Reject YAML nested deeper than [`MAX_YAML_DEPTH`] before serde_yaml_ng sees it. Its libyaml
/// scanner loads a whole document before the recursion limit applies, and walks every open flow
/// level for every token: 100,000 `[` took 12 s of CPU and 200,000 took 47 s (3 MiB: hours).
/// saphyr-parser streams events with its own nesting limit, so this pass stops at the first too
/// deep level and costs one linear scan. Every document of the stream is checked.
fn check_yaml_nesting(text: &str) -> Result<(), ApiError> {
    use saphyr_parser::{Event, Parser};
    let mut depth = 0usize;
    for event in Parser::new_from_str(text) {
        let (event, span) = event.map_err(|e| ApiError::bad_request(format!("unable to decode YAML body: {e}")))?;
        match event {
            Event::SequenceStart(..) | Event::MappingStart(..) => {
                depth += 1;
                if depth > MAX_YAML_DEPTH {
                    return Err(ApiError::bad_request(format!(
                        "unable to decode YAML body: nested deeper than {MAX_YAML_DEPTH} levels at line {} column {}",
                        span.start.line(),
                        span.start.col() + 1
                    )));
                }
            }
            Event::SequenceEnd | Event::MappingEnd => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

/// Objects nested deeper than this are refused: stored JSON is read back with serde_json, which stops at 128
/// levels, and an object the server cannot read back would break every list of its resource.
pub const MAX_OBJECT_DEPTH: usize = 100;

/// How deeply `v` nests arrays and objects (a scalar is 0), counting no further than `limit + 1`. Iterative: a
/// patched value may be deeper than the stack allows to recurse.
pub fn depth_capped(v: &Value, limit: usize) -> usize {
    let mut unlimited = usize::MAX;
    depth_counting(v, limit, &mut unlimited)
}

/// [`depth_capped`], taking one from `nodes` for every array or object visited; stops (returning what it has
/// so far) when `nodes` runs out, which the caller sees as `*nodes == 0`.
pub fn depth_counting(v: &Value, limit: usize, nodes: &mut usize) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 1usize)];
    while let Some((v, d)) = stack.pop() {
        if !(v.is_array() || v.is_object()) {
            continue;
        }
        deepest = deepest.max(d);
        if deepest > limit || *nodes == 0 {
            return deepest;
        }
        *nodes -= 1;
        match v {
            Value::Array(a) => stack.extend(a.iter().map(|c| (c, d + 1))),
            Value::Object(o) => stack.extend(o.values().map(|c| (c, d + 1))),
            _ => {}
        }
    }
    deepest
}

/// Refuse an object nested deeper than [`MAX_OBJECT_DEPTH`] (before it is type-checked or stored).
pub fn check_depth(kind: &str, obj: &Value) -> Result<(), ApiError> {
    if depth_capped(obj, MAX_OBJECT_DEPTH) > MAX_OBJECT_DEPTH {
        return Err(ApiError::new(
            422,
            "Invalid",
            format!("{kind} is invalid: the object is nested deeper than {MAX_OBJECT_DEPTH} levels"),
        ));
    }
    Ok(())
}

/// What the client asked for in `Accept`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Json,
    Table,
}

pub fn negotiate(headers: &HeaderMap) -> Result<Format, ApiError> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    if accept.trim().is_empty() {
        return Ok(Format::Json);
    }
    let mut json_ok = false;
    for part in accept.split(',') {
        let part = part.trim().to_ascii_lowercase();
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        let media = params[0];
        if params.contains(&"as=table") && params.contains(&"g=meta.k8s.io") {
            if media == "application/json" {
                return Ok(Format::Table);
            }
            continue;
        }
        if params.iter().any(|p| p.starts_with("as=")) {
            // Other transformations (PartialObjectMetadata, ...) are not offered; a later entry may match.
            continue;
        }
        if matches!(media, "application/json" | "*/*" | "application/*" | "application/yaml") {
            json_ok = true;
        }
    }
    if json_ok {
        Ok(Format::Json)
    } else {
        Err(ApiError::not_acceptable(format!(
            "only the following media types are accepted: application/json, {TABLE_CONTENT_TYPE} (got {accept:?})"
        )))
    }
}

/// The stored object with `metadata.resourceVersion` set from the store.
pub fn object_from_kv(kv: &KeyValue) -> Result<Value, ApiError> {
    let mut obj: Value = serde_json::from_slice(&kv.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is not JSON: {e}", kv.key)))?;
    set_resource_version(&mut obj, kv.mod_revision);
    Ok(obj)
}

pub fn set_resource_version(obj: &mut Value, rev: i64) {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), json!(rev.to_string()));
    }
}

/// Serialize an object for storage: without `resourceVersion`, which the store supplies.
pub fn to_stored(obj: &Value) -> Vec<u8> {
    let mut obj = obj.clone();
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.remove("resourceVersion");
    }
    serde_json::to_vec(&obj).unwrap_or_default()
}

/// How much of each object a Table row carries (`includeObject`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IncludeObject {
    None,
    Metadata,
    Object,
}

impl IncludeObject {
    pub fn parse(s: Option<&str>) -> Result<Self, ApiError> {
        match s {
            None | Some("") | Some("Metadata") => Ok(IncludeObject::Metadata),
            Some("None") => Ok(IncludeObject::None),
            Some("Object") => Ok(IncludeObject::Object),
            Some(other) => Err(ApiError::bad_request(format!("includeObject={other:?}: must be None, Metadata or Object"))),
        }
    }
}

fn row_object(obj: &Value, include: IncludeObject) -> Value {
    match include {
        IncludeObject::None => Value::Null,
        IncludeObject::Object => obj.clone(),
        IncludeObject::Metadata => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
        }),
    }
}

/// One Table row.
pub fn table_row(info: &ResourceInfo, obj: &Value, include: IncludeObject, now: chrono::DateTime<chrono::Utc>) -> Value {
    json!({
        "cells": tables::row_cells(info.group, info.plural, obj, now),
        "object": row_object(obj, include),
    })
}

/// A `meta.k8s.io/v1` Table of `objects`.
pub fn table(
    info: &ResourceInfo,
    objects: &[Value],
    list_meta: Value,
    include: IncludeObject,
    with_columns: bool,
) -> Value {
    let now = chrono::Utc::now();
    let rows: Vec<Value> = objects.iter().map(|o| table_row(info, o, include, now)).collect();
    let mut t = json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "rows": rows,
    });
    if with_columns {
        t["columnDefinitions"] = Value::Array(tables::column_definitions(info.group, info.plural));
    }
    t
}

/// A JSON response with the given status code and content type.
pub fn respond(code: StatusCode, content_type: &'static str, body: &Value) -> Response {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    (code, [(header::CONTENT_TYPE, HeaderValue::from_static(content_type))], bytes).into_response()
}

pub fn json_response(code: StatusCode, body: &Value) -> Response {
    respond(code, "application/json", body)
}

/// A single object, as JSON or as a one-row Table.
pub fn object_response(code: StatusCode, info: &ResourceInfo, obj: &Value, format: Format, include: IncludeObject) -> Response {
    match format {
        Format::Json => json_response(code, obj),
        Format::Table => {
            let rv = obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null);
            respond(code, TABLE_CONTENT_TYPE, &table(info, std::slice::from_ref(obj), json!({"resourceVersion": rv}), include, true))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{{\"apiVersion\": \"v1\", \"kind\": \"ConfigMap\", \"x\": {}1{}}}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn yaml_and_json_bodies_decode_as_before() {
        let manifest = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: a # comment\n  labels: {app: web, 'q': \"x\"}\ndata:\n  script: |\n    if [ -f x ]; then echo '[[[['; fi\n  list: [1, 2.5, true, null, \"s\"]\n";
        let v = decode_yaml(manifest.as_bytes()).unwrap();
        assert_eq!(v["metadata"]["labels"], json!({"app": "web", "q": "x"}));
        assert_eq!(v["data"]["script"], json!("if [ -f x ]; then echo '[[[['; fi\n"));
        assert_eq!(v["data"]["list"], json!([1, 2.5, true, null, "s"]));
        // kubectl's server-side apply sends JSON under application/apply-patch+yaml.
        let body = br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"a","annotations":{"x":"\u003ctag\u003e \/ \"q\""}},"data":{"k":"v"}}"#;
        let v = decode_yaml(body).unwrap();
        assert_eq!(v["metadata"]["annotations"]["x"], json!("<tag> / \"q\""));
        // The deepest document serde_yaml_ng itself can decode still passes the nesting check.
        let deepest = (1..=MAX_YAML_DEPTH).rev().find(|&d| serde_yaml_ng::from_str::<Value>(&nested(d)).is_ok()).unwrap();
        assert!(decode_yaml(nested(deepest).as_bytes()).is_ok());
    }

    #[test]
    fn depth_is_counted_without_recursion_and_capped() {
        assert_eq!(depth_capped(&json!(1), 10), 0);
        assert_eq!(depth_capped(&json!({"a": [1, {"b": {}}], "c": 2}), 10), 4);
        let mut deep = json!(1);
        for _ in 0..200_000 {
            deep = Value::Array(vec![deep]);
        }
        assert_eq!(depth_capped(&deep, MAX_OBJECT_DEPTH), MAX_OBJECT_DEPTH + 1);
        assert!(check_depth("ConfigMap", &deep).is_err());
        // Drop it without recursing 200,000 frames.
        let mut v = deep;
        while let Value::Array(mut a) = v {
            v = a.pop().unwrap_or(Value::Null);
        }
    }

    #[test]
    fn deeply_nested_yaml_is_refused_before_libyaml_scans_it() {
        for text in [
            format!("{{\"spec\": {}", "[".repeat(200_000)),
            format!("a: {}", "{a: ".repeat(200_000)),
            (0..300).map(|i| format!("{}- \n", " ".repeat(i))).collect(),
            // The check covers every document of the stream, not only the first.
            format!("a: 1\n---\nb: {}", "[".repeat(200_000)),
        ] {
            let err = decode_yaml(text.as_bytes()).unwrap_err();
            let msg = format!("{err:?}");
            // Ours, or saphyr-parser's own limit ("... at byte N"): never libyaml's.
            assert!(
                msg.contains("nested deeper than 128 levels") || msg.contains("recursion limit exceeded at byte"),
                "{msg}"
            );
        }
        let err = decode_yaml(format!("a: {}", "{a: ".repeat(200_000)).as_bytes()).unwrap_err();
        assert!(format!("{err:?}").contains("nested deeper than 128 levels at line 1"), "{err:?}");
    }
}
