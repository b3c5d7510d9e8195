//! Storage admission and defaults in the API server (upstream's DefaultStorageClass, StorageObjectInUseProtection
//! admission plugins, and the default StorageClass k3s deploys):
//!
//! - a new PersistentVolumeClaim without `storageClassName` gets the default StorageClass (the one annotated
//!   `storageclass.kubernetes.io/is-default-class: "true"`, the newest if several); `""` means "no class" and is
//!   kept;
//! - new claims get the `kubernetes.io/pvc-protection` finalizer and new volumes `kubernetes.io/pv-protection`,
//!   which the volume controller removes once no pod uses the claim / no claim holds the volume;
//! - at start, the StorageClass `local-path` (provisioner `skiff.io/local-path`, WaitForFirstConsumer, Delete) is
//!   made when missing and marked default when no other class is.

use std::sync::Arc;

use serde_json::{json, Value};

use super::errors::ApiError;
use super::write::create_if_missing;
use super::{codec, ApiServer};
use crate::api::resources;

pub const DEFAULT_CLASS_ANNOTATION: &str = "storageclass.kubernetes.io/is-default-class";
pub const PVC_PROTECTION: &str = "kubernetes.io/pvc-protection";
pub const PV_PROTECTION: &str = "kubernetes.io/pv-protection";
/// Skiff's provisioner: a directory on the node the pod was scheduled to.
pub const LOCAL_PATH_PROVISIONER: &str = "skiff.io/local-path";
pub const LOCAL_PATH_CLASS: &str = "local-path";
/// Where `local-path` volumes live on the nodes (the class's `nodePath` parameter).
pub const DEFAULT_NODE_PATH: &str = "/var/lib/skiff/storage";

fn add_finalizer(obj: &mut Value, f: &str) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else { return };
    let list = meta.entry("finalizers").or_insert_with(|| json!([]));
    if !list.is_array() {
        *list = json!([]);
    }
    if let Some(a) = list.as_array_mut() {
        if !a.iter().any(|x| x.as_str() == Some(f)) {
            a.push(json!(f));
        }
    }
}

/// The name of the default StorageClass, if there is one.
pub async fn default_class(s: &ApiServer) -> Result<Option<String>, ApiError> {
    let info = resources::find("storage.k8s.io", "v1", "storageclasses").ok_or_else(|| ApiError::internal("no storageclasses resource"))?;
    let list = s.store.list(&info.prefix(None), Default::default()).await.map_err(|e| ApiError::from_store(info, "", e))?;
    let mut best: Option<(String, String)> = None;
    for kv in &list.items {
        let sc = codec::object_from_kv(kv)?;
        if sc.pointer(&format!("/metadata/annotations/{}", DEFAULT_CLASS_ANNOTATION.replace('/', "~1"))).and_then(Value::as_str) != Some("true") {
            continue;
        }
        let name = sc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default().to_string();
        let created = sc.pointer("/metadata/creationTimestamp").and_then(Value::as_str).unwrap_or_default().to_string();
        if best.as_ref().is_none_or(|(c, n)| (&created, &name) > (c, n)) {
            best = Some((created, name));
        }
    }
    Ok(best.map(|(_, n)| n))
}

/// Admission of a new PersistentVolumeClaim.
pub async fn admit_claim(s: &ApiServer, obj: &mut Value) -> Result<(), ApiError> {
    add_finalizer(obj, PVC_PROTECTION);
    if obj.pointer("/spec/storageClassName").is_none_or(Value::is_null) {
        if let (Some(class), Some(spec)) = (default_class(s).await?, obj.get_mut("spec").and_then(Value::as_object_mut)) {
            spec.insert("storageClassName".into(), json!(class));
        }
    }
    Ok(())
}

/// Admission of a new PersistentVolume.
pub fn admit_volume(obj: &mut Value) {
    add_finalizer(obj, PV_PROTECTION);
}

/// The `local-path` StorageClass, made when missing; default when no other class is.
pub async fn ensure_default_class(s: &Arc<ApiServer>) -> Result<(), ApiError> {
    let info = resources::find("storage.k8s.io", "v1", "storageclasses").ok_or_else(|| ApiError::internal("no storageclasses resource"))?;
    if s.store.get(&info.key(None, LOCAL_PATH_CLASS)).await.map_err(|e| ApiError::from_store(info, LOCAL_PATH_CLASS, e))?.is_some() {
        return Ok(());
    }
    let default = default_class(s).await?.is_none();
    let sc = json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
        "metadata": {"name": LOCAL_PATH_CLASS, "annotations": {DEFAULT_CLASS_ANNOTATION: if default { "true" } else { "false" }}},
        "provisioner": LOCAL_PATH_PROVISIONER, "reclaimPolicy": "Delete", "volumeBindingMode": "WaitForFirstConsumer",
        "parameters": {"nodePath": DEFAULT_NODE_PATH}});
    create_if_missing(s, info, None, sc).await.map(|_| ())
}
