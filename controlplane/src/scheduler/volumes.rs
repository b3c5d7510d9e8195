//! Volume binding for the scheduler (upstream's VolumeBinding plugin, cut to what Skiff's storage does): a pod
//! whose PersistentVolumeClaims are missing, being deleted, or unbound with `Immediate` binding waits; a claim
//! bound to a volume with node affinity restricts the pod to those nodes; an unbound `WaitForFirstConsumer` claim
//! restricts it to nodes where a fitting volume is (or to any node when Skiff's local-path provisioner will make one
//! there). The restrictions are folded into the pod's required node affinity for the filters; once placed, the
//! claims get the `volume.kubernetes.io/selected-node` annotation the volume controller acts on.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{NodeSelectorTerm, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::ResourceExt;

use crate::controllers::volume::{fits, pod_claims, PROVISIONER, SELECTED_NODE};
use crate::controllers::cached_pod::CachedPod;

pub struct VolumeView {
    claims: HashMap<(String, String), Arc<PersistentVolumeClaim>>,
    volumes: HashMap<String, Arc<PersistentVolume>>,
    classes: HashMap<String, Arc<StorageClass>>,
}

/// What the volumes of a pod ask of its node.
#[derive(Debug, Default, PartialEq)]
pub struct Needs {
    /// Each entry: the node must match one of these terms.
    pub terms: Vec<Vec<NodeSelectorTerm>>,
    /// Claims to annotate with the chosen node.
    pub to_annotate: Vec<String>,
}

impl VolumeView {
    pub fn new(claims: Vec<Arc<PersistentVolumeClaim>>, volumes: Vec<Arc<PersistentVolume>>, classes: Vec<Arc<StorageClass>>) -> Self {
        VolumeView {
            claims: claims.into_iter().map(|c| ((c.namespace().unwrap_or_default(), c.name_any()), c)).collect(),
            volumes: volumes.into_iter().map(|v| (v.name_any(), v)).collect(),
            classes: classes.into_iter().map(|c| (c.name_any(), c)).collect(),
        }
    }

    /// What `p`'s claims need, or why it cannot be scheduled now.
    pub fn needs(&self, p: &CachedPod) -> Result<Needs, String> {
        let ns = p.namespace().unwrap_or_default();
        let mut out = Needs::default();
        for name in pod_claims(p) {
            let Some(c) = self.claims.get(&(ns.clone(), name.to_string())) else {
                return Err(format!("persistentvolumeclaim \"{name}\" not found"));
            };
            if c.metadata.deletion_timestamp.is_some() {
                return Err(format!("persistentvolumeclaim \"{name}\" is being deleted"));
            }
            match c.spec.as_ref().and_then(|s| s.volume_name.as_deref()).filter(|v| !v.is_empty()) {
                Some(v) => {
                    let Some(pv) = self.volumes.get(v) else { return Err("pvc(s) bound to non-existent pv(s)".into()) };
                    if let Some(req) = pv.spec.as_ref().and_then(|s| s.node_affinity.as_ref()).and_then(|a| a.required.as_ref()) {
                        out.terms.push(req.node_selector_terms.clone());
                    }
                }
                None => {
                    let class_name = c.spec.as_ref().and_then(|s| s.storage_class_name.clone()).unwrap_or_default();
                    let class = self.classes.get(&class_name);
                    let wait = class.and_then(|c| c.volume_binding_mode.as_deref()) == Some("WaitForFirstConsumer");
                    if !wait {
                        return Err("pod has unbound immediate PersistentVolumeClaims".into());
                    }
                    if class.is_some_and(|c| c.provisioner == PROVISIONER) {
                        // Any node: a volume is made where the pod goes (or a fitting static one is taken there).
                    } else {
                        let mut terms = Vec::new();
                        let mut anywhere = false;
                        for v in self.volumes.values().filter(|v| v.spec.as_ref().is_some_and(|s| s.claim_ref.is_none()) && fits(c, v, None)) {
                            match v.spec.as_ref().and_then(|s| s.node_affinity.as_ref()).and_then(|a| a.required.as_ref()) {
                                Some(r) => terms.extend(r.node_selector_terms.clone()),
                                None => anywhere = true,
                            }
                        }
                        if !anywhere {
                            if terms.is_empty() {
                                return Err("node(s) didn't find available persistent volumes to bind".into());
                            }
                            out.terms.push(terms);
                        }
                    }
                    if !c.annotations().contains_key(SELECTED_NODE) {
                        out.to_annotate.push(name.to_string());
                    }
                }
            }
        }
        Ok(out)
    }
}

pub fn has_claims(p: &CachedPod) -> bool {
    pod_claims(p).next().is_some()
}

fn merge(a: &NodeSelectorTerm, b: &NodeSelectorTerm) -> NodeSelectorTerm {
    let join = |x: &Option<Vec<_>>, y: &Option<Vec<_>>| {
        let v: Vec<_> = x.iter().flatten().chain(y.iter().flatten()).cloned().collect();
        (!v.is_empty()).then_some(v)
    };
    NodeSelectorTerm { match_expressions: join(&a.match_expressions, &b.match_expressions), match_fields: join(&a.match_fields, &b.match_fields) }
}

/// `p` with `terms` ANDed into its required node affinity (terms are ORed, so the result is every combination).
pub fn restrict(p: &CachedPod, groups: &[Vec<NodeSelectorTerm>]) -> CachedPod {
    use k8s_openapi::api::core::v1::{NodeAffinity, NodeSelector};
    let mut p = p.clone();
    let spec = p.spec.get_or_insert_with(Default::default);
    let affinity = spec.affinity.get_or_insert_with(Box::default);
    let na = affinity.node_affinity.get_or_insert_with(NodeAffinity::default);
    let mut current: Vec<NodeSelectorTerm> = na
        .required_during_scheduling_ignored_during_execution
        .as_ref()
        .map(|r| r.node_selector_terms.clone())
        .unwrap_or_else(|| vec![NodeSelectorTerm::default()]);
    for group in groups {
        current = current.iter().flat_map(|t| group.iter().map(move |g| merge(t, g))).collect();
    }
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector { node_selector_terms: current });
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::plugins::node_affinity_ok;
    use k8s_openapi::api::core::v1::Node;
    use serde_json::json;

    fn view() -> VolumeView {
        let claim = |name: &str, extra: serde_json::Value| -> Arc<PersistentVolumeClaim> {
            let mut c = json!({"metadata": {"name": name, "namespace": "ns", "uid": name},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
            json_patch::merge(&mut c, &extra);
            Arc::new(serde_json::from_value(c).unwrap())
        };
        let on = |node: &str| json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}});
        VolumeView::new(
            vec![
                claim("bound", json!({"spec": {"volumeName": "pv-a"}})),
                claim("lazy", json!({"spec": {"storageClassName": "local-path"}})),
                claim("eager", json!({"spec": {"storageClassName": "fast"}})),
                claim("static", json!({"spec": {"storageClassName": "manual"}})),
            ],
            vec![
                Arc::new(serde_json::from_value(json!({"metadata": {"name": "pv-a"}, "spec": {"capacity": {"storage": "1Gi"}, "nodeAffinity": on("a")}})).unwrap()),
                Arc::new(serde_json::from_value(json!({"metadata": {"name": "pv-b"}, "spec": {"capacity": {"storage": "5Gi"}, "accessModes": ["ReadWriteOnce"],
                    "storageClassName": "manual", "nodeAffinity": on("b")}})).unwrap()),
            ],
            vec![
                Arc::new(serde_json::from_value(json!({"metadata": {"name": "local-path"}, "provisioner": PROVISIONER, "volumeBindingMode": "WaitForFirstConsumer"})).unwrap()),
                Arc::new(serde_json::from_value(json!({"metadata": {"name": "fast"}, "provisioner": "x", "volumeBindingMode": "Immediate"})).unwrap()),
                Arc::new(serde_json::from_value(json!({"metadata": {"name": "manual"}, "provisioner": "kubernetes.io/no-provisioner", "volumeBindingMode": "WaitForFirstConsumer"})).unwrap()),
            ],
        )
    }

    fn pod(claims: &[&str]) -> CachedPod {
        let vols: Vec<_> = claims.iter().map(|c| json!({"name": c, "persistentVolumeClaim": {"claimName": c}})).collect();
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": [], "volumes": vols,
            "nodeSelector": {"disk": "ssd"}}})).unwrap()
    }

    fn node(name: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "disk": "ssd"}}})).unwrap()
    }

    #[test]
    fn claims_decide_where_a_pod_may_go() {
        let v = view();
        assert_eq!(v.needs(&pod(&["nope"])).unwrap_err(), "persistentvolumeclaim \"nope\" not found");
        assert_eq!(v.needs(&pod(&["eager"])).unwrap_err(), "pod has unbound immediate PersistentVolumeClaims");
        let n = v.needs(&pod(&["lazy"])).unwrap();
        assert!(n.terms.is_empty());
        assert_eq!(n.to_annotate, ["lazy"]);
        // Bound to a volume on node a: only a.
        let p = restrict(&pod(&["bound"]), &v.needs(&pod(&["bound"])).unwrap().terms);
        assert!(node_affinity_ok(&p, &node("a")) && !node_affinity_ok(&p, &node("b")));
        // A static WaitForFirstConsumer volume exists only on b.
        let n = v.needs(&pod(&["static", "lazy"])).unwrap();
        let p = restrict(&pod(&["static"]), &n.terms);
        assert!(node_affinity_ok(&p, &node("b")) && !node_affinity_ok(&p, &node("a")));
        assert_eq!(n.to_annotate, ["static", "lazy"]);
        // Both constraints at once: no node.
        let n = v.needs(&pod(&["bound", "static"])).unwrap();
        let p = restrict(&pod(&["bound", "static"]), &n.terms);
        assert!(!node_affinity_ok(&p, &node("a")) && !node_affinity_ok(&p, &node("b")));
    }
}
