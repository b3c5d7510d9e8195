//! The node's half of Skiff's local-path provisioner: when a volume the provisioner made on this node is deleted
//! (it carries the `skiff.io/local-path-data` finalizer and the node in `volume.kubernetes.io/selected-node`), the
//! agent removes its directory and then lets the volume go. Looked at every 10 s.
//!
//! Only directories named `pvc-<uid>_...` as the provisioner names them are ever removed.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::PersistentVolume;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::json;

pub const DATA_FINALIZER: &str = "skiff.io/local-path-data";
const PROVISIONER: &str = "skiff.io/local-path";
const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";

/// The directory to remove for `pv` on `node`, if it is one of ours to remove now.
pub fn data_dir(pv: &PersistentVolume, node: &str) -> Option<String> {
    if pv.metadata.deletion_timestamp.is_none() || !pv.finalizers().iter().any(|f| f == DATA_FINALIZER) {
        return None;
    }
    let ann = pv.annotations();
    if ann.get("pv.kubernetes.io/provisioned-by").map(String::as_str) != Some(PROVISIONER) || ann.get(SELECTED_NODE).map(String::as_str) != Some(node) {
        return None;
    }
    let path = pv.spec.as_ref()?.host_path.as_ref()?.path.clone();
    let p = Path::new(&path);
    let named = p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(&format!("{}_", pv.name_any())));
    let clean = p.is_absolute() && !p.components().any(|c| matches!(c, std::path::Component::ParentDir));
    (named && clean).then_some(path)
}

/// One pass: remove the data of this node's deleted local-path volumes and release their finalizer.
pub async fn sweep(client: &kube::Client, node: &str) -> Result<usize, kube::Error> {
    let api: Api<PersistentVolume> = Api::all(client.clone());
    let mut done = 0;
    for pv in api.list(&Default::default()).await?.items {
        let Some(dir) = data_dir(&pv, node) else { continue };
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => tracing::info!(volume = %pv.name_any(), path = %dir, "local-path volume data removed"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(volume = %pv.name_any(), path = %dir, error = %e, "removing local-path volume data");
                continue;
            }
        }
        let rest: Vec<String> = pv.finalizers().iter().filter(|f| *f != DATA_FINALIZER).cloned().collect();
        let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": pv.resource_version()}});
        match api.patch(&pv.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => done += 1,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Sweep every 10 s until `stop` turns true.
pub async fn run(client: kube::Client, node: String, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        if let Err(e) = sweep(&client, &node).await {
            tracing::debug!(error = %e, "local-path volume sweep");
        }
        tokio::select! {
            _ = stop.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(10)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pv(extra: serde_json::Value) -> PersistentVolume {
        let mut v = json!({"metadata": {"name": "pvc-1", "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": [DATA_FINALIZER],
            "annotations": {"pv.kubernetes.io/provisioned-by": PROVISIONER, SELECTED_NODE: "n1"}},
            "spec": {"hostPath": {"path": "/srv/skiff/pvc-1_ns_data"}}});
        json_patch::merge(&mut v, &extra);
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn only_our_deleted_volumes_on_this_node() {
        assert_eq!(data_dir(&pv(json!({})), "n1").as_deref(), Some("/srv/skiff/pvc-1_ns_data"));
        assert_eq!(data_dir(&pv(json!({})), "n2"), None, "another node's");
        assert_eq!(data_dir(&pv(json!({"metadata": {"deletionTimestamp": null}})), "n1"), None, "not deleted");
        assert_eq!(data_dir(&pv(json!({"metadata": {"annotations": {"pv.kubernetes.io/provisioned-by": "other"}}})), "n1"), None);
        assert_eq!(data_dir(&pv(json!({"spec": {"hostPath": {"path": "/etc"}}})), "n1"), None, "not a directory the provisioner named");
        assert_eq!(data_dir(&pv(json!({"spec": {"hostPath": {"path": "/srv/../pvc-1_x"}}})), "n1"), None);
        assert_eq!(data_dir(&pv(json!({"metadata": {"finalizers": []}})), "n1"), None);
    }
}
