//! The persistent volume controller (upstream's PV binder, the local-path provisioner k3s ships, and the
//! pvc/pv-protection controllers), over the shared informers:
//!
//! - **Binding**: a Pending claim gets the smallest Available volume that fits (same class, every access mode
//!   asked, enough capacity, same volume mode, the claim's selector; a volume pre-bound to the claim first). For a
//!   class with `volumeBindingMode: WaitForFirstConsumer` nothing happens until the scheduler has chosen a node for
//!   the first pod using the claim (annotation `volume.kubernetes.io/selected-node`); then the volume must be
//!   usable on that node. Binding writes both halves (the volume's `claimRef`, the claim's `volumeName`) and the
//!   phases (Bound), as upstream.
//! - **Provisioning** for classes of `skiff.io/local-path`: a `hostPath` volume (type DirectoryOrCreate) at
//!   `<nodePath>/pvc-<uid>_<namespace>_<name>` on the selected node, with node affinity to it, pre-bound to the claim.
//!   It carries the `skiff.io/local-path-data` finalizer: the agent of that node removes the directory when the
//!   volume is deleted and then lets it go.
//! - **Release and reclaim**: a volume whose claim is gone becomes Released (checked against the API, never only
//!   the cache); `Delete` deletes provisioned volumes, `Retain` keeps them; volumes nobody can delete are Failed.
//!   A Bound claim whose volume disappeared is Lost.
//! - **Protection**: the `kubernetes.io/pvc-protection` finalizer goes once no running pod uses the claim,
//!   `kubernetes.io/pv-protection` once the volume is no longer bound.
//!
//! [`plan`] decides from a snapshot (pure, unit-tested); [`run`] acts on it after every change, at most every 50 ms,
//! and every 15 s anyway.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::StorageClass;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use serde_json::{json, Value};

use super::informers::Informers;
use crate::scheduler::plugins::{parse_quantity_milli, term_matches};
use crate::controllers::cached_pod::CachedPod;

pub use crate::apiserver::storage::{DEFAULT_NODE_PATH, LOCAL_PATH_PROVISIONER as PROVISIONER, PVC_PROTECTION, PV_PROTECTION};
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
pub const DATA_FINALIZER: &str = "skiff.io/local-path-data";
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Set the volume's claimRef to the claim.
    ClaimVolume { pv: String, ns: String, claim: String, uid: String },
    /// Set the claim's volumeName.
    BindClaim { ns: String, claim: String, pv: String },
    ClaimPhase { ns: String, claim: String, phase: &'static str, capacity: Option<String>, access_modes: Vec<String> },
    VolumePhase { pv: String, phase: &'static str, message: Option<String> },
    /// A claim that looks gone: released once the API confirms it.
    Release { pv: String, ns: String, claim: String, uid: String },
    Provision(Box<Value>),
    DeleteVolume { pv: String },
    RemoveClaimFinalizer { ns: String, claim: String },
    RemoveVolumeFinalizer { pv: String },
    Event { ns: String, claim: String, uid: String, reason: &'static str, message: String, warning: bool },
}

/// What the controller sees.
#[derive(Default)]
pub struct Snapshot {
    pub claims: Vec<Arc<PersistentVolumeClaim>>,
    pub volumes: Vec<Arc<PersistentVolume>>,
    pub classes: Vec<Arc<StorageClass>>,
    pub pods: Vec<Arc<CachedPod>>,
    pub nodes: Vec<Arc<Node>>,
}

fn storage(q: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>) -> Option<i128> {
    q.and_then(|m| m.get("storage")).and_then(|q| parse_quantity_milli(&q.0))
}

fn has_finalizer<K: kube::Resource>(o: &K, f: &str) -> bool {
    o.meta().finalizers.as_ref().is_some_and(|l| l.iter().any(|x| x == f))
}

fn claim_class(c: &PersistentVolumeClaim) -> String {
    c.spec.as_ref().and_then(|s| s.storage_class_name.clone()).unwrap_or_default()
}

fn claim_phase(c: &PersistentVolumeClaim) -> &str {
    c.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

fn volume_phase(v: &PersistentVolume) -> &str {
    v.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

/// Claims a pod refers to.
pub fn pod_claims(p: &CachedPod) -> impl Iterator<Item = &str> {
    p.spec.iter().flat_map(|s| s.volumes.iter().flatten()).filter_map(|v| v.persistent_volume_claim.as_ref().map(|c| c.claim_name.as_str()))
}

fn pod_done(p: &CachedPod) -> bool {
    matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded") | Some("Failed"))
}

/// Does `v` fit claim `c`? (class, modes, size, volume mode, selector; the node when given)
pub fn fits(c: &PersistentVolumeClaim, v: &PersistentVolume, node: Option<&Node>) -> bool {
    let (Some(cs), Some(vs)) = (c.spec.as_ref(), v.spec.as_ref()) else { return false };
    if v.metadata.deletion_timestamp.is_some() {
        return false;
    }
    if vs.storage_class_name.clone().unwrap_or_default() != claim_class(c) {
        return false;
    }
    let have: HashSet<&String> = vs.access_modes.iter().flatten().collect();
    if !cs.access_modes.iter().flatten().all(|m| have.contains(m)) {
        return false;
    }
    let want = storage(cs.resources.as_ref().and_then(|r| r.requests.as_ref())).unwrap_or(0);
    if storage(vs.capacity.as_ref()).unwrap_or(0) < want {
        return false;
    }
    if cs.volume_mode.as_deref().unwrap_or("Filesystem") != vs.volume_mode.as_deref().unwrap_or("Filesystem") {
        return false;
    }
    if let Some(sel) = &cs.selector {
        let labels = v.metadata.labels.clone().unwrap_or_default();
        let ok_labels = sel.match_labels.iter().flatten().all(|(k, val)| labels.get(k) == Some(val));
        let ok_exprs = sel.match_expressions.iter().flatten().all(|e| {
            let value = labels.get(&e.key);
            let values = e.values.clone().unwrap_or_default();
            match e.operator.as_str() {
                "In" => value.is_some_and(|x| values.contains(x)),
                "NotIn" => value.is_none_or(|x| !values.contains(x)),
                "Exists" => value.is_some(),
                "DoesNotExist" => value.is_none(),
                _ => false,
            }
        });
        if !(ok_labels && ok_exprs) {
            return false;
        }
    }
    match node {
        Some(n) => volume_allows_node(v, n),
        None => true,
    }
}

/// A volume's node affinity (none: every node).
pub fn volume_allows_node(v: &PersistentVolume, n: &Node) -> bool {
    let required = v.spec.as_ref().and_then(|s| s.node_affinity.as_ref()).and_then(|a| a.required.as_ref());
    required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, n)))
}

/// The volume this claim should bind to: one pre-bound to it, else the smallest that fits.
fn best_volume<'a>(c: &PersistentVolumeClaim, volumes: &'a [Arc<PersistentVolume>], node: Option<&Node>) -> Option<&'a PersistentVolume> {
    let (ns, name, uid) = (c.namespace().unwrap_or_default(), c.name_any(), c.uid().unwrap_or_default());
    let free = |v: &PersistentVolume| {
        match v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()) {
            None => Some(false),
            Some(r) if r.namespace.as_deref() == Some(ns.as_str()) && r.name.as_deref() == Some(name.as_str())
                && r.uid.as_deref().is_none_or(|u| u.is_empty() || u == uid) => Some(true),
            Some(_) => None,
        }
    };
    volumes
        .iter()
        .filter_map(|v| free(v).map(|pre| (pre, v.as_ref())))
        .filter(|(_, v)| !matches!(volume_phase(v), "Released" | "Failed") && fits(c, v, node))
        .min_by_key(|(pre, v)| (!pre, storage(v.spec.as_ref().and_then(|s| s.capacity.as_ref())).unwrap_or(0), v.name_any()))
        .map(|(_, v)| v)
}

/// The PersistentVolume the local-path provisioner makes for claim `c` on `node`.
pub fn provisioned_volume(c: &PersistentVolumeClaim, class: &StorageClass, node: &str) -> Value {
    let (ns, name, uid) = (c.namespace().unwrap_or_default(), c.name_any(), c.uid().unwrap_or_default());
    let spec = c.spec.clone().unwrap_or_default();
    let size = spec.resources.as_ref().and_then(|r| r.requests.as_ref()).and_then(|r| r.get("storage")).map(|q| q.0.clone()).unwrap_or_default();
    let root = class.parameters.as_ref().and_then(|p| p.get("nodePath")).cloned().unwrap_or_else(|| DEFAULT_NODE_PATH.into());
    json!({
        "apiVersion": "v1", "kind": "PersistentVolume",
        "metadata": {"name": format!("pvc-{uid}"), "annotations": {PROVISIONED_BY: PROVISIONER, SELECTED_NODE: node},
                     "finalizers": [DATA_FINALIZER]},
        "spec": {
            "capacity": {"storage": size},
            "accessModes": spec.access_modes.clone().unwrap_or_default(),
            "persistentVolumeReclaimPolicy": class.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
            "storageClassName": claim_class(c),
            "volumeMode": spec.volume_mode.clone().unwrap_or_else(|| "Filesystem".into()),
            "hostPath": {"path": format!("{}/pvc-{uid}_{ns}_{name}", root.trim_end_matches('/')), "type": "DirectoryOrCreate"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}},
            "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": name, "uid": uid},
        }
    })
}

/// Everything to do now (see the module doc).
pub fn plan(s: &Snapshot) -> Vec<Action> {
    let mut out = Vec::new();
    let classes: HashMap<String, &StorageClass> = s.classes.iter().map(|c| (c.name_any(), c.as_ref())).collect();
    let nodes: HashMap<String, &Node> = s.nodes.iter().map(|n| (n.name_any(), n.as_ref())).collect();
    let volumes: HashMap<String, &PersistentVolume> = s.volumes.iter().map(|v| (v.name_any(), v.as_ref())).collect();
    let claims: HashMap<(String, String), &PersistentVolumeClaim> =
        s.claims.iter().map(|c| ((c.namespace().unwrap_or_default(), c.name_any()), c.as_ref())).collect();
    let in_use: HashSet<(String, String)> = s
        .pods
        .iter()
        .filter(|p| !pod_done(p))
        .flat_map(|p| {
            let ns = p.namespace().unwrap_or_default();
            pod_claims(p).map(move |c| (ns.clone(), c.to_string())).collect::<Vec<_>>()
        })
        .collect();
    let mut provisioning: HashSet<String> = HashSet::new();
    for c in &s.claims {
        let (ns, name, uid) = (c.namespace().unwrap_or_default(), c.name_any(), c.uid().unwrap_or_default());
        let event = |reason: &'static str, message: String, warning: bool| Action::Event {
            ns: ns.clone(),
            claim: name.clone(),
            uid: uid.clone(),
            reason,
            message,
            warning,
        };
        if c.metadata.deletion_timestamp.is_some() {
            if has_finalizer(c.as_ref(), PVC_PROTECTION) && !in_use.contains(&(ns.clone(), name.clone())) {
                out.push(Action::RemoveClaimFinalizer { ns: ns.clone(), claim: name.clone() });
            }
            continue;
        }
        let spec = c.spec.clone().unwrap_or_default();
        match spec.volume_name.as_deref().filter(|v| !v.is_empty()) {
            None => {
                let class_name = claim_class(c);
                let class = classes.get(&class_name).copied();
                let wait = class.and_then(|c| c.volume_binding_mode.as_deref()) == Some("WaitForFirstConsumer");
                let selected = c.annotations().get(SELECTED_NODE).cloned();
                if wait && selected.is_none() {
                    out.push(event("WaitForFirstConsumer", "waiting for first consumer to be created before binding".into(), false));
                    continue;
                }
                let node = selected.as_ref().and_then(|n| nodes.get(n).copied());
                if let Some(v) = best_volume(c, &s.volumes, node) {
                    let pv = v.name_any();
                    if v.spec.as_ref().and_then(|s| s.claim_ref.as_ref()).and_then(|r| r.uid.as_deref()).is_none_or(str::is_empty) {
                        out.push(Action::ClaimVolume { pv: pv.clone(), ns: ns.clone(), claim: name.clone(), uid: uid.clone() });
                    }
                    out.push(Action::BindClaim { ns: ns.clone(), claim: name.clone(), pv });
                    continue;
                }
                match class {
                    Some(cl) if cl.provisioner == PROVISIONER => match (&selected, wait) {
                        (Some(node), true) => {
                            let pv = format!("pvc-{uid}");
                            if !volumes.contains_key(&pv) && provisioning.insert(pv) {
                                out.push(Action::Provision(Box::new(provisioned_volume(c, cl, node))));
                                out.push(event("Provisioning", format!("External provisioner is provisioning volume for claim \"{ns}/{name}\""), false));
                            }
                        }
                        _ => out.push(event(
                            "ProvisioningFailed",
                            format!("{PROVISIONER} provisions only for volumeBindingMode WaitForFirstConsumer (a volume lives on the node of its first pod); storageclass {class_name:?} has Immediate"),
                            true,
                        )),
                    },
                    Some(cl) => out.push(event(
                        "ExternalProvisioning",
                        format!("Waiting for a volume to be created either by the external provisioner '{}' or manually by the system administrator. If volume creation is delayed, please verify that the provisioner is running and correctly registered.", cl.provisioner),
                        false,
                    )),
                    None if class_name.is_empty() => out.push(event("FailedBinding", "no persistent volumes available for this claim and no storage class is set".into(), false)),
                    None => out.push(event("ProvisioningFailed", format!("storageclass.storage.k8s.io \"{class_name}\" not found"), true)),
                }
            }
            Some(pv_name) => match volumes.get(pv_name) {
                None => {
                    if claim_phase(c) == "Bound" {
                        out.push(Action::ClaimPhase { ns: ns.clone(), claim: name.clone(), phase: "Lost", capacity: None, access_modes: vec![] });
                        out.push(event("ClaimLost", "Bound claim has lost its PersistentVolume. Data on the volume is lost!".into(), true));
                    }
                }
                Some(v) => {
                    let claim_ref = v.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
                    let ours = claim_ref.is_some_and(|r| r.namespace.as_deref() == Some(ns.as_str()) && r.name.as_deref() == Some(name.as_str()));
                    let ref_uid = claim_ref.and_then(|r| r.uid.clone()).unwrap_or_default();
                    if claim_ref.is_none() || (ours && ref_uid.is_empty()) {
                        out.push(Action::ClaimVolume { pv: pv_name.to_string(), ns: ns.clone(), claim: name.clone(), uid: uid.clone() });
                    } else if ours && ref_uid == uid {
                        let vs = v.spec.clone().unwrap_or_default();
                        let cap = vs.capacity.as_ref().and_then(|m| m.get("storage")).map(|q| q.0.clone());
                        let status = c.status.clone().unwrap_or_default();
                        let current_cap = status.capacity.as_ref().and_then(|m| m.get("storage")).map(|q| q.0.clone());
                        if claim_phase(c) != "Bound" || current_cap != cap {
                            out.push(Action::ClaimPhase {
                                ns: ns.clone(),
                                claim: name.clone(),
                                phase: "Bound",
                                capacity: cap,
                                access_modes: vs.access_modes.clone().unwrap_or_default(),
                            });
                        }
                    } else if claim_phase(c) != "Lost" {
                        out.push(event("FailedBinding", format!("volume \"{pv_name}\" already bound to a different claim."), true));
                    }
                }
            },
        }
    }
    for v in &s.volumes {
        let pv = v.name_any();
        let spec = v.spec.clone().unwrap_or_default();
        let phase = volume_phase(v);
        let bound_claim = spec.claim_ref.as_ref().and_then(|r| {
            let c = claims.get(&(r.namespace.clone().unwrap_or_default(), r.name.clone().unwrap_or_default()))?;
            let same = r.uid.as_deref().is_none_or(|u| u.is_empty() || Some(u) == c.uid().as_deref());
            same.then_some(*c)
        });
        if v.metadata.deletion_timestamp.is_some() {
            let bound = bound_claim.is_some_and(|c| c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(pv.as_str()));
            if has_finalizer(v.as_ref(), PV_PROTECTION) && !bound {
                out.push(Action::RemoveVolumeFinalizer { pv: pv.clone() });
            }
            continue;
        }
        match (&spec.claim_ref, bound_claim) {
            (None, _) => {
                if phase != "Available" {
                    out.push(Action::VolumePhase { pv, phase: "Available", message: None });
                }
            }
            (Some(_), Some(c)) => {
                let bound = c.spec.as_ref().and_then(|s| s.volume_name.as_deref()) == Some(pv.as_str());
                let want = if bound { "Bound" } else { "Available" };
                if phase != want && (bound || phase != "Bound") {
                    out.push(Action::VolumePhase { pv, phase: want, message: None });
                }
            }
            (Some(r), None) => {
                // Pre-bound by name to a claim that does not exist yet: still available to it.
                if r.uid.as_deref().is_none_or(str::is_empty) {
                    if phase != "Available" {
                        out.push(Action::VolumePhase { pv, phase: "Available", message: None });
                    }
                    continue;
                }
                match phase {
                    "Released" => {
                        let policy = spec.persistent_volume_reclaim_policy.as_deref().unwrap_or("Retain");
                        let ours = v.annotations().get(PROVISIONED_BY).map(String::as_str) == Some(PROVISIONER);
                        match policy {
                            "Delete" if ours => out.push(Action::DeleteVolume { pv }),
                            "Delete" => out.push(Action::VolumePhase {
                                pv: pv.clone(),
                                phase: "Failed",
                                message: Some(format!("error getting deleter volume plugin for volume \"{pv}\": no deletable volume plugin matched")),
                            }),
                            "Recycle" => out.push(Action::VolumePhase {
                                pv: pv.clone(),
                                phase: "Failed",
                                message: Some(format!("error getting recycler volume plugin for volume \"{pv}\": no recyclable volume plugin matched")),
                            }),
                            _ => {}
                        }
                    }
                    "Failed" => {}
                    _ => out.push(Action::Release {
                        pv,
                        ns: r.namespace.clone().unwrap_or_default(),
                        claim: r.name.clone().unwrap_or_default(),
                        uid: r.uid.clone().unwrap_or_default(),
                    }),
                }
            }
        }
    }
    out
}

struct Runner {
    client: Client,
    /// Events already recorded, by (claim uid, reason): one of each, as upstream's recorder would aggregate.
    reported: HashSet<(String, &'static str)>,
}

fn api_err(e: kube::Error) -> Option<kube::Error> {
    match &e {
        kube::Error::Api(a) if a.code == 404 || a.code == 409 => None,
        _ => Some(e),
    }
}

impl Runner {
    async fn act(&mut self, a: Action) -> Result<(), kube::Error> {
        let pp = PatchParams::default();
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let r = match &a {
            Action::ClaimVolume { pv, ns, claim, uid } => {
                let patch = json!({"metadata": {"annotations": {"pv.kubernetes.io/bound-by-controller": "yes"}},
                    "spec": {"claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": ns, "name": claim, "uid": uid}}});
                volumes.patch(pv, &pp, &Patch::Merge(&patch)).await.map(|_| ())
            }
            Action::BindClaim { ns, claim, pv } => {
                let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
                let patch = json!({"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes", "pv.kubernetes.io/bound-by-controller": "yes"}},
                    "spec": {"volumeName": pv}});
                let r = claims.patch(claim, &pp, &Patch::Merge(&patch)).await.map(|_| ());
                if r.is_ok() {
                    tracing::info!(claim = %format!("{ns}/{claim}"), volume = %pv, "claim bound");
                }
                r
            }
            Action::ClaimPhase { ns, claim, phase, capacity, access_modes } => {
                let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
                let mut status = json!({"phase": phase});
                if let Some(c) = capacity {
                    status["capacity"] = json!({"storage": c});
                    status["accessModes"] = json!(access_modes);
                }
                claims.patch_status(claim, &pp, &Patch::Merge(&json!({"status": status}))).await.map(|_| ())
            }
            Action::VolumePhase { pv, phase, message } => {
                let status = match message {
                    Some(m) => json!({"phase": phase, "message": m, "reason": ""}),
                    None => json!({"phase": phase, "message": null, "reason": null}),
                };
                volumes.patch_status(pv, &pp, &Patch::Merge(&json!({"status": status}))).await.map(|_| ())
            }
            Action::Release { pv, ns, claim, uid } => {
                // The cache may be behind: ask the API whether the claim is really gone.
                let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
                match claims.get_opt(claim).await? {
                    Some(c) if c.uid().as_deref() == Some(uid.as_str()) => Ok(()),
                    _ => {
                        tracing::info!(volume = %pv, claim = %format!("{ns}/{claim}"), "claim gone: volume released");
                        volumes.patch_status(pv, &pp, &Patch::Merge(&json!({"status": {"phase": "Released"}}))).await.map(|_| ())
                    }
                }
            }
            Action::Provision(v) => {
                let v: PersistentVolume = serde_json::from_value((**v).clone()).map_err(kube::Error::SerdeError)?;
                let name = v.name_any();
                let r = volumes.create(&PostParams::default(), &v).await.map(|_| ());
                if r.is_ok() {
                    tracing::info!(volume = %name, "volume provisioned");
                }
                r
            }
            Action::DeleteVolume { pv } => {
                tracing::info!(volume = %pv, "reclaim policy Delete: deleting the released volume");
                volumes.delete(pv, &DeleteParams::default()).await.map(|_| ())
            }
            Action::RemoveClaimFinalizer { ns, claim } => {
                let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), ns);
                let Some(c) = claims.get_opt(claim).await? else { return Ok(()) };
                let rest: Vec<String> = c.finalizers().iter().filter(|f| *f != PVC_PROTECTION).cloned().collect();
                let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": c.resource_version()}});
                claims.patch(claim, &pp, &Patch::Merge(&patch)).await.map(|_| ())
            }
            Action::RemoveVolumeFinalizer { pv } => {
                let Some(v) = volumes.get_opt(pv).await? else { return Ok(()) };
                let rest: Vec<String> = v.finalizers().iter().filter(|f| *f != PV_PROTECTION).cloned().collect();
                let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": v.resource_version()}});
                volumes.patch(pv, &pp, &Patch::Merge(&patch)).await.map(|_| ())
            }
            Action::Event { ns, claim, uid, reason, message, warning } => {
                if !self.reported.insert((uid.clone(), *reason)) {
                    return Ok(());
                }
                let involved = super::object_ref("v1", "PersistentVolumeClaim", ns, claim, uid);
                let ev = super::core_event(involved, reason, message.clone(), if *warning { "Warning" } else { "Normal" }, "persistentvolume-controller");
                super::record_event(&self.client, &ev).await
            }
        };
        match r {
            Ok(()) => Ok(()),
            Err(e) => match api_err(e) {
                None => Ok(()),
                Some(e) => Err(e),
            },
        }
    }
}

/// Run the controller until `shutdown` resolves.
pub async fn run(informers: Informers, shutdown: impl Future<Output = ()> + Send + 'static) {
    let claims = informers.get::<PersistentVolumeClaim>();
    let volumes = informers.get::<PersistentVolume>();
    let classes = informers.get::<StorageClass>();
    let pods = informers.get::<CachedPod>();
    let nodes = informers.get::<Node>();
    tokio::join!(claims.ready(), volumes.ready(), classes.ready(), pods.ready(), nodes.ready());
    let (mut c_rx, mut v_rx, mut s_rx, mut p_rx) = (claims.subscribe(), volumes.subscribe(), classes.subscribe(), pods.subscribe());
    let (claims, volumes, classes, pods, nodes) = (claims.store(), volumes.store(), classes.store(), pods.store(), nodes.store());
    let mut runner = Runner { client: informers.client().clone(), reported: HashSet::new() };
    tokio::pin!(shutdown);
    loop {
        let snapshot = Snapshot {
            claims: claims.state(),
            volumes: volumes.state(),
            classes: classes.state(),
            pods: pods.state().into_iter().filter(|p| pod_claims(p).next().is_some()).collect(),
            nodes: nodes.state(),
        };
        for a in plan(&snapshot) {
            if let Err(e) = runner.act(a.clone()).await {
                tracing::warn!(action = ?a, error = %e, "volume controller");
            }
        }
        // Forget the events of claims that are gone.
        let live: HashSet<String> = snapshot.claims.iter().filter_map(|c| c.uid()).collect();
        runner.reported.retain(|(uid, _)| live.contains(uid));
        // Wait for a change that matters (pods without claims do not), or the resync.
        let resync = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep_until(resync) => break,
                Some(_) = c_rx.recv() => break,
                Some(_) = v_rx.recv() => break,
                Some(_) = s_rx.recv() => break,
                Some(ch) = p_rx.recv() => {
                    if pod_claims(ch.object()).next().is_some() {
                        break;
                    }
                }
            }
        }
        // Let a burst of changes settle into one pass.
        tokio::time::sleep(Duration::from_millis(50)).await;
        while c_rx.try_recv().is_ok() || v_rx.try_recv().is_ok() || s_rx.try_recv().is_ok() || p_rx.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claim(name: &str, size: &str, class: Option<&str>, extra: Value) -> Arc<PersistentVolumeClaim> {
        let mut c = json!({"metadata": {"name": name, "namespace": "ns", "uid": format!("u-{name}"), "finalizers": [PVC_PROTECTION]},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
            "status": {"phase": "Pending"}});
        if let Some(cl) = class {
            c["spec"]["storageClassName"] = json!(cl);
        }
        json_patch::merge(&mut c, &extra);
        Arc::new(serde_json::from_value(c).unwrap())
    }

    fn volume(name: &str, size: &str, class: &str, extra: Value) -> Arc<PersistentVolume> {
        let mut v = json!({"metadata": {"name": name, "finalizers": [PV_PROTECTION]},
            "spec": {"capacity": {"storage": size}, "accessModes": ["ReadWriteOnce", "ReadOnlyMany"], "storageClassName": class,
                     "hostPath": {"path": format!("/data/{name}")}, "persistentVolumeReclaimPolicy": "Retain"},
            "status": {"phase": "Available"}});
        json_patch::merge(&mut v, &extra);
        Arc::new(serde_json::from_value(v).unwrap())
    }

    fn class(name: &str, provisioner: &str, mode: &str) -> Arc<StorageClass> {
        Arc::new(serde_json::from_value(json!({"metadata": {"name": name}, "provisioner": provisioner, "volumeBindingMode": mode,
            "reclaimPolicy": "Delete", "parameters": {"nodePath": "/srv/skiff"}})).unwrap())
    }

    fn node(name: &str) -> Arc<Node> {
        Arc::new(serde_json::from_value(json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}}})).unwrap())
    }

    #[test]
    fn binds_the_smallest_fitting_volume() {
        let s = Snapshot {
            claims: vec![claim("data", "1Gi", Some(""), json!({}))],
            volumes: vec![
                volume("big", "10Gi", "", json!({})),
                volume("small", "1Gi", "", json!({})),
                volume("tiny", "500Mi", "", json!({})),
                volume("fast", "1Gi", "ssd", json!({})),
            ],
            ..Default::default()
        };
        let a = plan(&s);
        assert!(a.contains(&Action::ClaimVolume { pv: "small".into(), ns: "ns".into(), claim: "data".into(), uid: "u-data".into() }), "{a:?}");
        assert!(a.contains(&Action::BindClaim { ns: "ns".into(), claim: "data".into(), pv: "small".into() }));
        assert!(!a.iter().any(|x| matches!(x, Action::ClaimVolume { pv, .. } if pv != "small")));
    }

    #[test]
    fn selectors_modes_and_pre_binding() {
        let c = claim("data", "1Gi", Some(""), json!({"spec": {"accessModes": ["ReadWriteMany"]}}));
        let v = volume("v", "1Gi", "", json!({}));
        assert!(!fits(&c, &v, None), "RWX asked, volume has RWO/ROX");
        let c = claim("data", "1Gi", Some(""), json!({"spec": {"selector": {"matchLabels": {"tier": "db"}}}}));
        assert!(!fits(&c, &v, None));
        assert!(fits(&c, &volume("v", "1Gi", "", json!({"metadata": {"labels": {"tier": "db"}}})), None));
        // A volume pre-bound to the claim by name wins over a smaller free one.
        let s = Snapshot {
            claims: vec![claim("data", "1Gi", Some(""), json!({}))],
            volumes: vec![
                volume("mine", "5Gi", "", json!({"spec": {"claimRef": {"namespace": "ns", "name": "data"}}})),
                volume("other", "1Gi", "", json!({})),
            ],
            ..Default::default()
        };
        assert!(plan(&s).contains(&Action::BindClaim { ns: "ns".into(), claim: "data".into(), pv: "mine".into() }));
    }

    #[test]
    fn waits_for_the_first_consumer_then_provisions_on_its_node() {
        let local = class("local-path", PROVISIONER, "WaitForFirstConsumer");
        let mut s = Snapshot { claims: vec![claim("data", "2Gi", Some("local-path"), json!({}))], classes: vec![local.clone()], nodes: vec![node("n1")], ..Default::default() };
        let a = plan(&s);
        assert!(matches!(&a[..], [Action::Event { reason: "WaitForFirstConsumer", .. }]), "{a:?}");
        s.claims = vec![claim("data", "2Gi", Some("local-path"), json!({"metadata": {"annotations": {SELECTED_NODE: "n1"}}}))];
        let a = plan(&s);
        let Some(Action::Provision(v)) = a.first() else { panic!("{a:?}") };
        assert_eq!(v["metadata"]["name"], "pvc-u-data");
        assert_eq!(v["spec"]["hostPath"]["path"], "/srv/skiff/pvc-u-data_ns_data");
        assert_eq!(v["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]["values"][0], "n1");
        assert_eq!(v["spec"]["claimRef"]["uid"], "u-data");
        assert_eq!(v["spec"]["persistentVolumeReclaimPolicy"], "Delete");
        // Once it exists, it is bound (pre-bound with the uid: only the claim's half is left).
        let pv: PersistentVolume = serde_json::from_value((**v).clone()).unwrap();
        s.volumes = vec![Arc::new(pv)];
        let a = plan(&s);
        assert!(a.contains(&Action::BindClaim { ns: "ns".into(), claim: "data".into(), pv: "pvc-u-data".into() }), "{a:?}");
        assert!(!a.iter().any(|x| matches!(x, Action::Provision(_))));
        // A static volume on another node does not fit the selected node.
        let elsewhere = volume("far", "5Gi", "local-path", json!({"spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}]}}}}));
        assert!(!fits(&s.claims[0], &elsewhere, Some(&node("n1"))));
        assert!(fits(&s.claims[0], &elsewhere, Some(&node("n2"))));
        // Immediate with this provisioner cannot work: said so.
        let s = Snapshot { claims: vec![claim("d", "1Gi", Some("imm"), json!({}))], classes: vec![class("imm", PROVISIONER, "Immediate")], ..Default::default() };
        assert!(matches!(&plan(&s)[..], [Action::Event { reason: "ProvisioningFailed", .. }]));
    }

    #[test]
    fn statuses_release_reclaim_and_protection() {
        let bound_claim = claim("data", "1Gi", Some(""), json!({"spec": {"volumeName": "v"}}));
        let bound_volume = volume("v", "1Gi", "", json!({"spec": {"claimRef": {"namespace": "ns", "name": "data", "uid": "u-data"}}}));
        let a = plan(&Snapshot { claims: vec![bound_claim.clone()], volumes: vec![bound_volume.clone()], ..Default::default() });
        assert!(a.contains(&Action::ClaimPhase { ns: "ns".into(), claim: "data".into(), phase: "Bound", capacity: Some("1Gi".into()), access_modes: vec!["ReadWriteOnce".into(), "ReadOnlyMany".into()] }), "{a:?}");
        assert!(a.contains(&Action::VolumePhase { pv: "v".into(), phase: "Bound", message: None }));
        // The claim is gone: release (confirmed against the API when acting).
        let a = plan(&Snapshot { volumes: vec![bound_volume.clone()], ..Default::default() });
        assert_eq!(a, [Action::Release { pv: "v".into(), ns: "ns".into(), claim: "data".into(), uid: "u-data".into() }]);
        // Released: Retain keeps it; Delete deletes what this provisioner made and fails the others.
        let released = |extra: Value| {
            let mut base = json!({"spec": {"claimRef": {"namespace": "ns", "name": "data", "uid": "u-data"}}, "status": {"phase": "Released"}});
            json_patch::merge(&mut base, &extra);
            volume("v", "1Gi", "", base)
        };
        assert!(plan(&Snapshot { volumes: vec![released(json!({}))], ..Default::default() }).is_empty());
        let a = plan(&Snapshot { volumes: vec![released(json!({"spec": {"persistentVolumeReclaimPolicy": "Delete"}, "metadata": {"annotations": {PROVISIONED_BY: PROVISIONER}}}))], ..Default::default() });
        assert_eq!(a, [Action::DeleteVolume { pv: "v".into() }]);
        let a = plan(&Snapshot { volumes: vec![released(json!({"spec": {"persistentVolumeReclaimPolicy": "Delete"}}))], ..Default::default() });
        assert!(matches!(&a[..], [Action::VolumePhase { phase: "Failed", .. }]));
        // A claim being deleted keeps its finalizer while a running pod uses it.
        let deleting = claim("data", "1Gi", Some(""), json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"volumeName": "v"}}));
        let user: Arc<CachedPod> = Arc::new(serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": [], "volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]}, "status": {"phase": "Running"}})).unwrap());
        let a = plan(&Snapshot { claims: vec![deleting.clone()], volumes: vec![bound_volume.clone()], pods: vec![user], ..Default::default() });
        assert!(!a.iter().any(|x| matches!(x, Action::RemoveClaimFinalizer { .. })), "{a:?}");
        let a = plan(&Snapshot { claims: vec![deleting], volumes: vec![bound_volume.clone()], ..Default::default() });
        assert!(a.contains(&Action::RemoveClaimFinalizer { ns: "ns".into(), claim: "data".into() }));
        // A volume being deleted keeps pv-protection while bound.
        let deleting_volume = volume("v", "1Gi", "", json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}, "spec": {"claimRef": {"namespace": "ns", "name": "data", "uid": "u-data"}}}));
        assert!(plan(&Snapshot { claims: vec![bound_claim], volumes: vec![deleting_volume.clone()], ..Default::default() }).iter().all(|x| !matches!(x, Action::RemoveVolumeFinalizer { .. })));
        assert!(plan(&Snapshot { volumes: vec![deleting_volume], ..Default::default() }).contains(&Action::RemoveVolumeFinalizer { pv: "v".into() }));
        // A bound claim whose volume vanished is Lost.
        let lost = claim("data", "1Gi", Some(""), json!({"spec": {"volumeName": "gone"}, "status": {"phase": "Bound"}}));
        assert!(plan(&Snapshot { claims: vec![lost], ..Default::default() }).iter().any(|x| matches!(x, Action::ClaimPhase { phase: "Lost", .. })));
    }
}
