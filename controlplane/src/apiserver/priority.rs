//! PriorityClasses (scheduling.k8s.io/v1) and upstream's `Priority` admission: every new pod gets `spec.priority`
//! and `spec.preemptionPolicy` from the class its `priorityClassName` names (or from the class marked
//! `globalDefault`, or 0 and PreemptLowerPriority when there is none); a class that does not exist, or a priority
//! the pod states that is not its class's, is refused. The two system classes are made at start and cannot be
//! deleted; names starting with `system-` and values above one billion are reserved for them; one class at most is
//! the global default.

use std::sync::Arc;

use serde_json::{json, Value};

use super::errors::ApiError;
use super::write::create_if_missing;
use super::ApiServer;
use crate::api::resources::{self, ResourceInfo};
use crate::api::validation::FieldError;

/// Upstream's `HighestUserDefinablePriority`.
pub const HIGHEST_USER_DEFINABLE: i64 = 1_000_000_000;
/// (name, value, description) of the system classes, as upstream's.
pub const SYSTEM_CLASSES: [(&str, i64, &str); 2] = [
    ("system-node-critical", 2_000_001_000, "Used for system critical pods that must not be moved from their current node."),
    ("system-cluster-critical", 2_000_000_000, "Used for system critical pods that must run in the cluster, but can be moved to another node if necessary."),
];

fn info() -> Result<&'static ResourceInfo, ApiError> {
    resources::find("scheduling.k8s.io", "v1", "priorityclasses").ok_or_else(|| ApiError::internal("no priorityclasses resource"))
}

pub fn is_system_class(name: &str) -> bool {
    SYSTEM_CLASSES.iter().any(|(n, _, _)| *n == name)
}

/// Field errors of a class, as upstream's validation.
pub fn validate(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let value = obj.get("value").and_then(Value::as_i64);
    match value {
        None => errs.push(FieldError::required("value")),
        Some(v) => {
            let system = SYSTEM_CLASSES.iter().any(|(n, val, _)| *n == name && *val == v);
            if !system && name.starts_with("system-") {
                errs.push(FieldError::forbidden("metadata.name", "priority class names with 'system-' prefix are reserved for system use only"));
            } else if !system && v > HIGHEST_USER_DEFINABLE {
                errs.push(FieldError::forbidden("value", &format!("maximum allowed value of a user defined priority is {HIGHEST_USER_DEFINABLE}")));
            }
        }
    }
    if let Some(p) = obj.get("preemptionPolicy").and_then(Value::as_str) {
        if !["PreemptLowerPriority", "Never"].contains(&p) {
            errs.push(FieldError::not_supported("preemptionPolicy", &Value::from(p), &["Never", "PreemptLowerPriority"]));
        }
    }
    errs
}

/// What an update may not change.
pub fn validate_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if old.get("value") != new.get("value") {
        errs.push(FieldError::forbidden("value", "may not be changed in an update."));
    }
    if old.get("preemptionPolicy") != new.get("preemptionPolicy") {
        errs.push(FieldError::invalid("preemptionPolicy", new.get("preemptionPolicy").unwrap_or(&Value::Null), "field is immutable"));
    }
    errs
}

async fn classes(s: &ApiServer) -> Result<Vec<Value>, ApiError> {
    let info = info()?;
    let list = s.store.list(&info.prefix(None), Default::default()).await.map_err(|e| ApiError::from_store(info, "", e))?;
    list.items.iter().map(super::codec::object_from_kv).collect()
}

/// Create and update of a class: at most one global default.
pub async fn admit_class(s: &ApiServer, obj: &Value) -> Result<(), ApiError> {
    if obj.get("globalDefault").and_then(Value::as_bool) != Some(true) {
        return Ok(());
    }
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    for c in classes(s).await? {
        let other = c.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
        if other != name && c.get("globalDefault").and_then(Value::as_bool) == Some(true) {
            return Err(ApiError::forbidden(format!(
                "priorityclasses.scheduling.k8s.io \"{name}\" is forbidden: PriorityClass {other} is already marked as default. Only one default can exist"
            )));
        }
    }
    Ok(())
}

/// A new pod's priority and preemption policy from its class.
pub async fn admit_pod(s: &ApiServer, pod: &mut Value) -> Result<(), ApiError> {
    let pod_name = pod.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
    let forbidden = |why: String| ApiError::forbidden(format!("pods \"{pod_name}\" is forbidden: {why}"));
    let wanted = pod.pointer("/spec/priorityClassName").and_then(Value::as_str).filter(|n| !n.is_empty()).map(str::to_string);
    let all = classes(s).await?;
    let (class_name, value, policy) = match &wanted {
        Some(n) => match all.iter().find(|c| c.pointer("/metadata/name").and_then(Value::as_str) == Some(n)) {
            Some(c) => (Some(n.clone()), c.get("value").and_then(Value::as_i64).unwrap_or(0), c.get("preemptionPolicy").and_then(Value::as_str).unwrap_or("PreemptLowerPriority").to_string()),
            None => return Err(forbidden(format!("no PriorityClass with name {n} was found"))),
        },
        None => match all.iter().find(|c| c.get("globalDefault").and_then(Value::as_bool) == Some(true)) {
            Some(c) => (
                c.pointer("/metadata/name").and_then(Value::as_str).map(str::to_string),
                c.get("value").and_then(Value::as_i64).unwrap_or(0),
                c.get("preemptionPolicy").and_then(Value::as_str).unwrap_or("PreemptLowerPriority").to_string(),
            ),
            None => (None, 0, "PreemptLowerPriority".to_string()),
        },
    };
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(()) };
    if let Some(given) = spec.get("priority").filter(|p| !p.is_null()) {
        if given.as_i64() != Some(value) {
            return Err(forbidden(format!(
                "the integer value of priority ({given}) must not be provided in pod spec; priority admission controller computed {value} from the given PriorityClass name"
            )));
        }
    }
    if let Some(given) = spec.get("preemptionPolicy").and_then(Value::as_str) {
        if given != policy {
            return Err(forbidden(format!(
                "the string value of PreemptionPolicy ({given}) must not be provided in pod spec; priority admission controller computed {policy} from the given PriorityClass name"
            )));
        }
    }
    if let Some(n) = class_name {
        spec.insert("priorityClassName".into(), json!(n));
    }
    spec.insert("priority".into(), json!(value));
    spec.insert("preemptionPolicy".into(), json!(policy));
    Ok(())
}

/// The system classes, made at start where missing.
pub async fn ensure_system_classes(s: &Arc<ApiServer>) -> Result<(), ApiError> {
    let info = info()?;
    for (name, value, description) in SYSTEM_CLASSES {
        let pc = json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": name},
                        "value": value, "description": description, "preemptionPolicy": "PreemptLowerPriority"});
        create_if_missing(s, info, None, pc).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_names_values_and_immutability() {
        let pc = |name: &str, value: i64| json!({"metadata": {"name": name}, "value": value});
        assert!(validate(&pc("high", 1000)).is_empty());
        assert!(validate(&pc("system-node-critical", 2_000_001_000)).is_empty());
        assert!(validate(&pc("system-mine", 10))[0].message.contains("reserved for system use"));
        assert!(validate(&pc("huge", HIGHEST_USER_DEFINABLE + 1))[0].message.contains("maximum allowed value"));
        assert!(validate(&json!({"metadata": {"name": "x"}}))[0].message.contains("Required"));
        let errs = validate_update(&pc("high", 2000), &pc("high", 1000));
        assert_eq!(errs[0].field, "value");
        assert!(errs[0].message.contains("may not be changed"));
    }
}
