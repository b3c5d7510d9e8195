//! LimitRanges (core/v1) and upstream's `LimitRanger` admission: a new pod's containers get the namespace's default
//! requests and limits where they name none (recorded in the `kubernetes.io/limit-ranger` annotation), and a pod or
//! claim outside a range's min, max or limit/request ratio is refused with upstream's messages.

use serde_json::{json, Map, Value};

use super::errors::ApiError;
use super::ApiServer;
use crate::api::resources;
use crate::api::validation::FieldError;
use crate::scheduler::plugins::parse_quantity_milli;

pub const ANNOTATION: &str = "kubernetes.io/limit-ranger";

fn q(v: &Value) -> Option<i128> {
    match v {
        Value::String(s) => parse_quantity_milli(s),
        Value::Number(n) => n.as_f64().map(|f| crate::scheduler::plugins::clamp_milli(f * 1000.0)),
        _ => None,
    }
}

/// A quantity as upstream prints it in messages: the client's own string.
fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn list<'a>(item: &'a Value, key: &str) -> impl Iterator<Item = (&'a String, &'a Value)> {
    item.get(key).and_then(Value::as_object).into_iter().flatten()
}

/// Upstream's `SetDefaults_LimitRangeItem`: for Container items, the default limit falls back to max, the default
/// request to the default limit, then to min.
pub fn apply_defaults(obj: &mut Value) {
    let Some(items) = obj.pointer_mut("/spec/limits").and_then(Value::as_array_mut) else { return };
    for item in items {
        if item.get("type").and_then(Value::as_str) != Some("Container") {
            continue;
        }
        let Some(m) = item.as_object_mut() else { continue };
        let mut default: Map<String, Value> = m.get("default").and_then(Value::as_object).cloned().unwrap_or_default();
        let mut default_request: Map<String, Value> = m.get("defaultRequest").and_then(Value::as_object).cloned().unwrap_or_default();
        for (k, v) in m.get("max").and_then(Value::as_object).into_iter().flatten() {
            default.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in &default {
            default_request.entry(k.clone()).or_insert_with(|| v.clone());
        }
        for (k, v) in m.get("min").and_then(Value::as_object).into_iter().flatten() {
            default_request.entry(k.clone()).or_insert_with(|| v.clone());
        }
        m.insert("default".into(), Value::Object(default));
        m.insert("defaultRequest".into(), Value::Object(default_request));
    }
}

/// Field errors of a LimitRange, as upstream's validation.
pub fn validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, item) in obj.pointer("/spec/limits").and_then(Value::as_array).into_iter().flatten().enumerate() {
        let at = format!("spec.limits[{i}]");
        let kind = item.get("type").and_then(Value::as_str).unwrap_or_default();
        if !["Pod", "Container", "PersistentVolumeClaim"].contains(&kind) {
            errs.push(FieldError::not_supported(format!("{at}.type"), &Value::from(kind), &["Container", "PersistentVolumeClaim", "Pod"]));
            continue;
        }
        if kind == "Pod" && (item.get("default").is_some_and(|d| d.as_object().is_some_and(|m| !m.is_empty())) || item.get("defaultRequest").is_some_and(|d| d.as_object().is_some_and(|m| !m.is_empty()))) {
            errs.push(FieldError::forbidden(format!("{at}.default"), "may not be specified when `type` is 'Pod'"));
        }
        for key in ["min", "max", "default", "defaultRequest", "maxLimitRequestRatio"] {
            for (res, v) in list(item, key) {
                if q(v).is_none_or(|n| n < 0) {
                    errs.push(FieldError::invalid(format!("{at}.{key}[{res}]"), v, "must be a valid non-negative quantity"));
                }
            }
        }
        let get = |key: &str, res: &str| item.get(key).and_then(|m| m.get(res)).and_then(q);
        for (res, min) in list(item, "min") {
            let min_q = q(min);
            if let (Some(max), Some(mq)) = (get("max", res), min_q) {
                if mq > max {
                    errs.push(FieldError::invalid(format!("{at}.min[{res}]"), min, &format!("min value {} is greater than max value {}", show(min), show(&item["max"][res]))));
                }
            }
        }
        for (res, d) in list(item, "defaultRequest") {
            if let (Some(dq), Some(min)) = (q(d), get("min", res)) {
                if dq < min {
                    errs.push(FieldError::invalid(format!("{at}.defaultRequest[{res}]"), d, &format!("min value {} is greater than default request value {}", show(&item["min"][res]), show(d))));
                }
            }
            if let (Some(dq), Some(limit)) = (q(d), get("default", res)) {
                if dq > limit {
                    errs.push(FieldError::invalid(format!("{at}.defaultRequest[{res}]"), d, &format!("default request value {} is greater than default limit value {}", show(d), show(&item["default"][res]))));
                }
            }
        }
        for (res, d) in list(item, "default") {
            if let (Some(dq), Some(max)) = (q(d), get("max", res)) {
                if dq > max {
                    errs.push(FieldError::invalid(format!("{at}.default[{res}]"), d, &format!("default value {} is greater than max value {}", show(d), show(&item["max"][res]))));
                }
            }
        }
        for (res, r) in list(item, "maxLimitRequestRatio") {
            if q(r).is_some_and(|n| n < 1000) {
                errs.push(FieldError::invalid(format!("{at}.maxLimitRequestRatio[{res}]"), r, "ratio must be greater than or equal to 1"));
            }
        }
    }
    errs
}

async fn ranges(s: &ApiServer, ns: &str) -> Result<Vec<Value>, ApiError> {
    let info = resources::find("", "v1", "limitranges").ok_or_else(|| ApiError::internal("no limitranges resource"))?;
    let list = s.store.list(&info.prefix(Some(ns)), Default::default()).await.map_err(|e| ApiError::from_store(info, "", e))?;
    list.items.iter().map(super::codec::object_from_kv).collect()
}

/// Defaults then checks for a new pod (pure, for tests): the message of a refusal.
pub fn admit_pod_with(ranges: &[Value], pod: &mut Value) -> Result<(), String> {
    let items: Vec<&Value> = ranges.iter().flat_map(|r| r.pointer("/spec/limits").and_then(Value::as_array).into_iter().flatten()).collect();
    // Defaults: limits, then requests where neither a request nor a limit (which defaulting copies) is given.
    let mut said: Vec<String> = Vec::new();
    for list_key in ["initContainers", "containers"] {
        let Some(containers) = pod.pointer_mut(&format!("/spec/{list_key}")).and_then(Value::as_array_mut) else { continue };
        for c in containers {
            let name = c.get("name").and_then(Value::as_str).unwrap_or_default().to_string();
            let (mut set_requests, mut set_limits) = (Vec::new(), Vec::new());
            for item in items.iter().filter(|i| i.get("type").and_then(Value::as_str) == Some("Container")) {
                let resources = c.as_object_mut().map(|m| m.entry("resources").or_insert_with(|| json!({})));
                let Some(resources) = resources.and_then(Value::as_object_mut) else { continue };
                for (res, v) in list(item, "default") {
                    let limits = resources.entry("limits").or_insert_with(|| json!({}));
                    if let Some(l) = limits.as_object_mut() {
                        if !l.contains_key(res) {
                            l.insert(res.clone(), v.clone());
                            set_limits.push(res.clone());
                        }
                    }
                }
                let limited: Vec<String> = resources.get("limits").and_then(Value::as_object).map(|l| l.keys().cloned().collect()).unwrap_or_default();
                for (res, v) in list(item, "defaultRequest") {
                    let requests = resources.entry("requests").or_insert_with(|| json!({}));
                    if let Some(r) = requests.as_object_mut() {
                        // A limit the client gave becomes the request by defaulting; one set just now does not.
                        let client_limit = limited.contains(res) && !set_limits.contains(res);
                        if !r.contains_key(res) && !client_limit {
                            r.insert(res.clone(), v.clone());
                            set_requests.push(res.clone());
                        }
                    }
                }
                for key in ["limits", "requests"] {
                    if resources.get(key).and_then(Value::as_object).is_some_and(Map::is_empty) {
                        resources.remove(key);
                    }
                }
            }
            if !set_requests.is_empty() {
                said.push(format!("{} request for {} {name}", set_requests.join(", "), if list_key == "containers" { "container" } else { "init container" }));
            }
            if !set_limits.is_empty() {
                said.push(format!("{} limit for {} {name}", set_limits.join(", "), if list_key == "containers" { "container" } else { "init container" }));
            }
        }
    }
    if !said.is_empty() {
        if let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
            let annotations = meta.entry("annotations").or_insert_with(|| json!({}));
            if let Some(a) = annotations.as_object_mut() {
                a.insert(ANNOTATION.into(), json!(format!("LimitRanger plugin set: {}", said.join("; "))));
            }
        }
    }
    // Checks.
    let mut errors: Vec<String> = Vec::new();
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|k| pod.pointer(&format!("/spec/{k}")).and_then(Value::as_array).into_iter().flatten())
        .collect();
    // A container's request for `res`: its request, else its limit (what defaulting makes of it).
    let request = |c: &Value, res: &str| c.pointer(&format!("/resources/requests/{res}")).or_else(|| c.pointer(&format!("/resources/limits/{res}"))).cloned();
    let limit = |c: &Value, res: &str| c.pointer(&format!("/resources/limits/{res}")).cloned();
    for item in &items {
        match item.get("type").and_then(Value::as_str) {
            Some("Container") => {
                for c in &containers {
                    check(&mut errors, item, "Container", &|res| request(c, res), &|res| limit(c, res));
                }
            }
            Some("Pod") => {
                let sum = |f: &dyn Fn(&Value, &str) -> Option<Value>, res: &str| -> Option<Value> {
                    let mut total = 0i128;
                    for c in pod.pointer("/spec/containers").and_then(Value::as_array).into_iter().flatten() {
                        total += f(c, res).as_ref().and_then(q)?;
                    }
                    Some(json!(format_milli(total, res)))
                };
                check(&mut errors, item, "Pod", &|res| sum(&request, res), &|res| sum(&limit, res));
            }
            _ => {}
        }
    }
    match errors.len() {
        0 => Ok(()),
        1 => Err(errors.remove(0)),
        _ => Err(format!("[{}]", errors.join(", "))),
    }
}

/// A total in thousandths as a quantity string: millicores for cpu, whole units otherwise.
fn format_milli(milli: i128, res: &str) -> String {
    if res == "cpu" && milli % 1000 != 0 {
        format!("{milli}m")
    } else {
        (milli / 1000).to_string()
    }
}

fn check(
    errors: &mut Vec<String>,
    item: &Value,
    what: &str,
    request: &dyn Fn(&str) -> Option<Value>,
    limit: &dyn Fn(&str) -> Option<Value>,
) {
    for (res, min) in list(item, "min") {
        match request(res) {
            None => errors.push(format!("minimum {res} usage per {what} is {}.  No request is specified", show(min))),
            Some(r) if q(&r) < q(min) => errors.push(format!("minimum {res} usage per {what} is {}, but request is {}", show(min), show(&r))),
            Some(_) => {}
        }
    }
    for (res, max) in list(item, "max") {
        match limit(res) {
            None => errors.push(format!("maximum {res} usage per {what} is {}.  No limit is specified", show(max))),
            Some(l) if q(&l) > q(max) => errors.push(format!("maximum {res} usage per {what} is {}, but limit is {}", show(max), show(&l))),
            Some(_) => {}
        }
    }
    for (res, ratio) in list(item, "maxLimitRequestRatio") {
        let (Some(l), Some(r)) = (limit(res).as_ref().and_then(q), request(res).as_ref().and_then(q)) else { continue };
        if r > 0 && q(ratio).is_some_and(|max| l * 1000 / r > max) {
            errors.push(format!("{res} max limit to request ratio per {what} is {}, but provided ratio is {:.6}", show(ratio), l as f64 / r as f64));
        }
    }
}

/// Defaults and checks for a new pod in `ns`.
pub async fn admit_pod(s: &ApiServer, ns: &str, pod: &mut Value) -> Result<(), ApiError> {
    let ranges = ranges(s, ns).await?;
    if ranges.is_empty() {
        return Ok(());
    }
    let name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    admit_pod_with(&ranges, pod).map_err(|why| ApiError::forbidden(format!("pods \"{name}\" is forbidden: {why}")))
}

/// Checks for a new claim in `ns`: its storage request within the ranges of type PersistentVolumeClaim.
pub async fn admit_claim(s: &ApiServer, ns: &str, claim: &Value) -> Result<(), ApiError> {
    let ranges = ranges(s, ns).await?;
    let mut errors = Vec::new();
    for item in ranges.iter().flat_map(|r| r.pointer("/spec/limits").and_then(Value::as_array).into_iter().flatten()) {
        if item.get("type").and_then(Value::as_str) == Some("PersistentVolumeClaim") {
            let request = |res: &str| claim.pointer(&format!("/spec/resources/requests/{res}")).cloned();
            let limit = |res: &str| claim.pointer(&format!("/spec/resources/limits/{res}")).cloned().or_else(|| request(res));
            check(&mut errors, item, "PersistentVolumeClaim", &request, &limit);
        }
    }
    if errors.is_empty() {
        return Ok(());
    }
    let name = claim.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    Err(ApiError::forbidden(format!("persistentvolumeclaims \"{name}\" is forbidden: {}", errors.join(", "))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(item: Value) -> Value {
        let mut r = json!({"metadata": {"name": "lr"}, "spec": {"limits": [item]}});
        apply_defaults(&mut r);
        r
    }

    #[test]
    fn defaults_fall_back_as_upstream() {
        let r = range(json!({"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "64Mi"}, "default": {"memory": "256Mi"}}));
        let item = &r["spec"]["limits"][0];
        assert_eq!(item["default"], json!({"cpu": "2", "memory": "256Mi"}));
        assert_eq!(item["defaultRequest"], json!({"cpu": "2", "memory": "256Mi"}));
        assert!(validate(&r).is_empty());
        let bad = range(json!({"type": "Container", "min": {"cpu": "2"}, "max": {"cpu": "1"}}));
        assert!(validate(&bad).iter().any(|e| e.message.contains("min value 2 is greater than max value 1")));
        assert!(!validate(&json!({"spec": {"limits": [{"type": "Node"}]}})).is_empty());
    }

    #[test]
    fn pods_get_defaults_and_an_annotation() {
        let r = range(json!({"type": "Container", "default": {"cpu": "500m", "memory": "128Mi"}, "defaultRequest": {"cpu": "100m"}}));
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a"},
            {"name": "b", "resources": {"limits": {"cpu": "1"}}}]}});
        admit_pod_with(&[r], &mut pod).unwrap();
        assert_eq!(pod["spec"]["containers"][0]["resources"], json!({"limits": {"cpu": "500m", "memory": "128Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}}));
        // b gave a cpu limit: its cpu request is left to defaulting (= the limit), memory comes from the range.
        assert_eq!(pod["spec"]["containers"][1]["resources"], json!({"limits": {"cpu": "1", "memory": "128Mi"}, "requests": {"memory": "128Mi"}}));
        assert_eq!(
            pod["metadata"]["annotations"][ANNOTATION],
            "LimitRanger plugin set: cpu, memory request for container a; cpu, memory limit for container a; memory request for container b; memory limit for container b"
        );
    }

    #[test]
    fn out_of_range_pods_are_refused_with_upstreams_words() {
        let r = range(json!({"type": "Container", "max": {"cpu": "1"}, "min": {"cpu": "100m"}, "maxLimitRequestRatio": {"cpu": "2"}}));
        let mut big = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "2"}, "requests": {"cpu": "500m"}}}]}});
        let e = admit_pod_with(std::slice::from_ref(&r), &mut big).unwrap_err();
        assert!(e.contains("maximum cpu usage per Container is 1, but limit is 2"), "{e}");
        assert!(e.contains("cpu max limit to request ratio per Container is 2, but provided ratio is 4.000000"), "{e}");
        let mut small = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": "50m"}, "limits": {"cpu": "50m"}}}]}});
        assert_eq!(admit_pod_with(std::slice::from_ref(&r), &mut small).unwrap_err(), "minimum cpu usage per Container is 100m, but request is 50m");
        let pod_range = range(json!({"type": "Pod", "max": {"memory": "1Gi"}}));
        let mut two = json!({"metadata": {"name": "p"}, "spec": {"containers": [
            {"name": "a", "resources": {"limits": {"memory": "768Mi"}}}, {"name": "b", "resources": {"limits": {"memory": "512Mi"}}}]}});
        assert!(admit_pod_with(&[pod_range], &mut two).unwrap_err().contains("maximum memory usage per Pod is 1Gi, but limit is"));
    }
}
