//! ResourceQuota admission, as upstream's: a new object is checked against every quota of its namespace that takes
//! it in (scopes apply to pods) and charged to them. `status.used` is the running account (the quota controller
//! recomputes it from the objects, which also gives back what deleted objects held); the admission adds the new
//! object's usage with a compare-and-swap on each quota, so concurrent creates cannot overshoot. A quota whose usage
//! the controller has not computed yet refuses what it constrains, as upstream (`status unknown for quota`).

use serde_json::{json, Value};

use super::errors::ApiError;
use super::ApiServer;
use crate::api::quota::{self, Usage};
use crate::api::resources::{self, ResourceInfo};
use crate::store::StoreError;

fn pretty(keys: &[&String], u: &Usage) -> String {
    keys.iter().map(|k| format!("{k}={}", quota::format(k, u.get(*k).copied().unwrap_or(0)))).collect::<Vec<_>>().join(",")
}

/// Check a new object of `info` in `ns` against the namespace's quotas and charge it to them.
pub async fn admit(s: &ApiServer, info: &ResourceInfo, ns: &str, obj: &Value, dry_run: bool) -> Result<(), ApiError> {
    if !info.namespaced {
        return Ok(());
    }
    let quota_info = resources::find("", "v1", "resourcequotas").ok_or_else(|| ApiError::internal("no resourcequotas resource"))?;
    let is_pod = info.group.is_empty() && info.plural == "pods";
    let usage = quota::object_usage(info.group, info.plural, obj);
    let name = obj.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    let forbidden = |why: String| ApiError::forbidden(format!("{}{} \"{name}\" is forbidden: {why}", info.plural, if info.group.is_empty() { String::new() } else { format!(".{}", info.group) }));
    for _attempt in 0..8 {
        let listed = s.store.list(&quota_info.prefix(Some(ns)), Default::default()).await.map_err(|e| ApiError::from_store(quota_info, "", e))?;
        if listed.items.is_empty() {
            return Ok(());
        }
        let mut writes = Vec::new();
        for kv in &listed.items {
            let q = super::codec::object_from_kv(kv)?;
            if !quota::in_scope(&q, is_pod, obj) {
                continue;
            }
            let qname = q.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
            let hard = quota::amounts(q.pointer("/spec/hard"));
            let constrained: Vec<&String> = hard.keys().filter(|k| usage.contains_key(*k)).collect();
            if constrained.is_empty() {
                continue;
            }
            if is_pod {
                let mut failures = Vec::new();
                for key in hard.keys().filter(|k| quota::POD_COMPUTE.contains(&k.as_str())) {
                    let missing = quota::missing(obj, key);
                    if !missing.is_empty() {
                        failures.push(format!("{key} for: {}", missing.join(",")));
                    }
                }
                if !failures.is_empty() {
                    return Err(forbidden(format!("failed quota: {qname}: must specify {}", failures.join("; "))));
                }
            }
            let used = quota::amounts(q.pointer("/status/used"));
            if let Some(unknown) = constrained.iter().find(|k| !used.contains_key(**k)) {
                return Err(forbidden(format!("status unknown for quota: {qname}, resource: {unknown}")));
            }
            let mut next = used.clone();
            for k in &constrained {
                *next.entry((*k).clone()).or_default() += usage[*k];
            }
            let over: Vec<&String> = constrained.iter().copied().filter(|k| next[*k] > hard[*k]).collect();
            if !over.is_empty() {
                return Err(forbidden(format!(
                    "exceeded quota: {qname}, requested: {}, used: {}, limited: {}",
                    pretty(&over, &usage),
                    pretty(&over, &used),
                    pretty(&over, &hard)
                )));
            }
            let mut updated = q.clone();
            for k in &constrained {
                updated["status"]["used"][k.as_str()] = json!(quota::format(k, next[*k]));
            }
            writes.push((kv.key.clone(), kv.mod_revision, updated));
        }
        if dry_run {
            return Ok(());
        }
        // Charge every quota; a conflict (another create, or the controller) means deciding again from fresh state.
        let mut conflict = false;
        for (key, rev, updated) in writes {
            match s.store.update(&key, super::codec::to_stored(&updated), rev).await {
                Ok(_) => {}
                Err(StoreError::Conflict { .. }) => {
                    conflict = true;
                    break;
                }
                Err(e) => return Err(ApiError::from_store(quota_info, "", e)),
            }
        }
        if !conflict {
            return Ok(());
        }
    }
    Err(ApiError::new(409, "Conflict", "Operation cannot be fulfilled on resourcequotas: the quotas kept changing; try again"))
}
