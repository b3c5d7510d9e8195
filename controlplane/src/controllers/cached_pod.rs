//! The pod as the informers cache it: [`CachedPod`], the part of a Pod that the controllers and the scheduler read.
//!
//! With 10,000 pods the pod cache decides the controller manager's size, and k8s-openapi's `Pod` is large
//! whatever it holds: 2,128 bytes inline, plus 2,096 per `Container` and 3,184 per `Volume` (every optional field
//! of every kind is laid out inline). This type keeps the same field names and types as `Pod` for what it keeps, so
//! code reads it as it would read a Pod, and it is deserialized straight from the API's JSON (fields it does not
//! name are skipped while parsing, never allocated). Upstream's informers do the like with transforms that drop
//! managedFields; a type of our own goes further because Rust lays every optional field out inline.
//!
//! Kept: the metadata (without managedFields and the last-applied-configuration annotation); of the spec, what
//! scheduling, endpoints, owners and node lifecycle read; of each container its name, image, ports, resources and
//! restart policy; of the volumes only PersistentVolumeClaim references; of the status everything but the
//! container statuses. Nothing writes a cached pod back: updates read the object from the API, or patch.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, Container, ContainerPort, HostIP, PersistentVolumeClaimVolumeSource, Pod, PodCondition, PodIP, PodSchedulingGate,
    PodSpec, PodStatus, ResourceRequirements, Toleration, TopologySpreadConstraint, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use serde::{Deserialize, Serialize};

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// A Pod as the informers cache it (see the module documentation).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CachedPod {
    #[serde(deserialize_with = "slim_metadata")]
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<CachedPodSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CachedPodStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CachedPodSpec {
    pub containers: Vec<CachedContainer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub init_containers: Option<Vec<CachedContainer>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node_selector: Option<BTreeMap<String, String>>,
    // Boxed: most pods have none, and `Affinity` is 144 bytes inline.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Box<Affinity>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tolerations: Option<Vec<Toleration>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub topology_spread_constraints: Option<Vec<TopologySpreadConstraint>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduling_gates: Option<Vec<PodSchedulingGate>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scheduler_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preemption_policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overhead: Option<BTreeMap<String, Quantity>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_network: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subdomain: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub termination_grace_period_seconds: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none", deserialize_with = "claim_volumes")]
    pub volumes: Option<Vec<CachedVolume>>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CachedContainer {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<ContainerPort>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart_policy: Option<String>,
}

/// A volume that references a PersistentVolumeClaim (the only kind kept).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CachedVolume {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub persistent_volume_claim: Option<PersistentVolumeClaimVolumeSource>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CachedPodStatus {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<PodCondition>>,
    #[serde(rename = "hostIP", skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<String>,
    #[serde(rename = "hostIPs", skip_serializing_if = "Option::is_none")]
    pub host_ips: Option<Vec<HostIP>>,
    #[serde(rename = "podIP", skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    #[serde(rename = "podIPs", skip_serializing_if = "Option::is_none")]
    pub pod_ips: Option<Vec<PodIP>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nominated_node_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start_time: Option<Time>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qos_class: Option<String>,
}

fn slim(mut m: ObjectMeta) -> ObjectMeta {
    m.managed_fields = None;
    if let Some(a) = m.annotations.as_mut() {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            m.annotations = None;
        }
    }
    m
}

fn slim_metadata<'de, D: serde::Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    ObjectMeta::deserialize(d).map(slim)
}

fn claim_volumes<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Vec<CachedVolume>>, D::Error> {
    let vols: Option<Vec<CachedVolume>> = Option::deserialize(d)?;
    Ok(vols.map(|v| v.into_iter().filter(|v| v.persistent_volume_claim.is_some()).collect::<Vec<_>>()).filter(|v| !v.is_empty()))
}

impl k8s_openapi::Resource for CachedPod {
    const API_VERSION: &'static str = <Pod as k8s_openapi::Resource>::API_VERSION;
    const GROUP: &'static str = <Pod as k8s_openapi::Resource>::GROUP;
    const KIND: &'static str = <Pod as k8s_openapi::Resource>::KIND;
    const VERSION: &'static str = <Pod as k8s_openapi::Resource>::VERSION;
    const URL_PATH_SEGMENT: &'static str = <Pod as k8s_openapi::Resource>::URL_PATH_SEGMENT;
    type Scope = <Pod as k8s_openapi::Resource>::Scope;
}

impl k8s_openapi::Metadata for CachedPod {
    type Ty = ObjectMeta;
    fn metadata(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn metadata_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl From<&Container> for CachedContainer {
    fn from(c: &Container) -> Self {
        CachedContainer {
            name: c.name.clone(),
            image: c.image.clone(),
            ports: c.ports.clone(),
            resources: c.resources.clone(),
            restart_policy: c.restart_policy.clone(),
        }
    }
}

impl From<&Volume> for CachedVolume {
    fn from(v: &Volume) -> Self {
        CachedVolume { name: v.name.clone(), persistent_volume_claim: v.persistent_volume_claim.clone() }
    }
}

impl From<&PodSpec> for CachedPodSpec {
    fn from(s: &PodSpec) -> Self {
        let volumes: Option<Vec<CachedVolume>> =
            s.volumes.as_ref().map(|v| v.iter().filter(|v| v.persistent_volume_claim.is_some()).map(CachedVolume::from).collect());
        CachedPodSpec {
            containers: s.containers.iter().map(CachedContainer::from).collect(),
            init_containers: s.init_containers.as_ref().map(|c| c.iter().map(CachedContainer::from).collect()),
            node_name: s.node_name.clone(),
            node_selector: s.node_selector.clone(),
            affinity: s.affinity.clone().map(Box::new),
            tolerations: s.tolerations.clone(),
            topology_spread_constraints: s.topology_spread_constraints.clone(),
            scheduling_gates: s.scheduling_gates.clone(),
            scheduler_name: s.scheduler_name.clone(),
            priority: s.priority,
            priority_class_name: s.priority_class_name.clone(),
            preemption_policy: s.preemption_policy.clone(),
            overhead: s.overhead.clone(),
            restart_policy: s.restart_policy.clone(),
            host_network: s.host_network,
            hostname: s.hostname.clone(),
            subdomain: s.subdomain.clone(),
            termination_grace_period_seconds: s.termination_grace_period_seconds,
            volumes: volumes.filter(|v| !v.is_empty()),
        }
    }
}

impl From<&PodStatus> for CachedPodStatus {
    fn from(s: &PodStatus) -> Self {
        CachedPodStatus {
            phase: s.phase.clone(),
            conditions: s.conditions.clone(),
            host_ip: s.host_ip.clone(),
            host_ips: s.host_ips.clone(),
            pod_ip: s.pod_ip.clone(),
            pod_ips: s.pod_ips.clone(),
            nominated_node_name: s.nominated_node_name.clone(),
            start_time: s.start_time.clone(),
            reason: s.reason.clone(),
            message: s.message.clone(),
            qos_class: s.qos_class.clone(),
        }
    }
}

impl From<&Pod> for CachedPod {
    fn from(p: &Pod) -> Self {
        CachedPod {
            metadata: slim(p.metadata.clone()),
            spec: p.spec.as_ref().map(CachedPodSpec::from),
            status: p.status.as_ref().map(CachedPodStatus::from),
        }
    }
}

impl From<Pod> for CachedPod {
    fn from(p: Pod) -> Self {
        CachedPod::from(&p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_pod() -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "namespace": "ns", "labels": {"app": "web"},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "u", "controller": true}],
                         "annotations": {LAST_APPLIED: "{...}", "keep": "me"},
                         "managedFields": [{"manager": "kubectl", "operation": "Apply"}]},
            "spec": {"nodeName": "n1", "tolerations": [{"key": "k", "operator": "Exists"}], "priority": 5, "hostname": "h", "subdomain": "s",
                     "nodeSelector": {"disk": "ssd"}, "schedulingGates": [{"name": "g"}], "schedulerName": "default-scheduler",
                     "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"}],
                     "priorityClassName": "high", "preemptionPolicy": "Never", "overhead": {"cpu": "10m"}, "restartPolicy": "Always",
                     "hostNetwork": false, "terminationGracePeriodSeconds": 30, "serviceAccountName": "default",
                     "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n1"]}]}]}}},
                     "containers": [{"name": "c", "image": "x", "env": [{"name": "A", "value": "1"}], "ports": [{"name": "http", "containerPort": 80, "hostPort": 8080}],
                                     "resources": {"requests": {"cpu": "1"}}, "readinessProbe": {"exec": {"command": ["true"]}},
                                     "volumeMounts": [{"name": "t", "mountPath": "/t"}]}],
                     "initContainers": [{"name": "sidecar", "image": "y", "restartPolicy": "Always"}],
                     "volumes": [{"name": "t", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}}]}},
                                 {"name": "d", "persistentVolumeClaim": {"claimName": "data"}}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}], "hostIP": "192.0.2.1",
                       "hostIPs": [{"ip": "192.0.2.1"}], "nominatedNodeName": "n2", "startTime": "2026-01-01T00:00:00Z",
                       "reason": "r", "message": "m", "qosClass": "BestEffort",
                       "conditions": [{"type": "Ready", "status": "True"}],
                       "containerStatuses": [{"name": "c", "ready": true, "restartCount": 0, "image": "x", "imageID": ""}]}
        })
    }

    fn check(p: &CachedPod) {
        let spec = p.spec.as_ref().unwrap();
        let c = &spec.containers[0];
        assert_eq!(c.ports.as_ref().unwrap()[0].host_port, Some(8080), "host ports and named ports stay");
        assert_eq!(c.ports.as_ref().unwrap()[0].name.as_deref(), Some("http"));
        assert!(c.resources.as_ref().unwrap().requests.as_ref().unwrap().contains_key("cpu"));
        assert_eq!(spec.init_containers.as_ref().unwrap()[0].restart_policy.as_deref(), Some("Always"));
        let vols = spec.volumes.as_ref().unwrap();
        assert_eq!(vols.len(), 1, "only claim references stay");
        assert_eq!(vols[0].persistent_volume_claim.as_ref().unwrap().claim_name, "data");
        assert!(spec.tolerations.is_some() && spec.node_name.as_deref() == Some("n1") && spec.priority == Some(5));
        assert!(spec.affinity.as_ref().unwrap().node_affinity.is_some());
        assert_eq!((spec.hostname.as_deref(), spec.subdomain.as_deref()), (Some("h"), Some("s")));
        let st = p.status.as_ref().unwrap();
        assert!(st.conditions.is_some() && st.pod_ip.as_deref() == Some("10.0.0.1") && st.pod_ips.is_some());
        assert_eq!(st.host_ip.as_deref(), Some("192.0.2.1"));
        let ann = p.metadata.annotations.as_ref().unwrap();
        assert!(!ann.contains_key(LAST_APPLIED) && ann.contains_key("keep"));
        assert!(p.metadata.managed_fields.is_none());
        assert!(p.metadata.owner_references.is_some() && p.metadata.labels.is_some());
    }

    #[test]
    fn parsed_from_the_api_keeps_what_controllers_and_the_scheduler_read() {
        let p: CachedPod = serde_json::from_value(full_pod()).unwrap();
        check(&p);
    }

    #[test]
    fn converted_from_a_pod_keeps_the_same() {
        let pod: Pod = serde_json::from_value(full_pod()).unwrap();
        let p = CachedPod::from(&pod);
        check(&p);
        let parsed: CachedPod = serde_json::from_value(full_pod()).unwrap();
        assert_eq!(p, parsed, "conversion and parsing agree");
    }

    #[test]
    fn every_kept_field_has_the_api_name() {
        // Every field of the spec and status is set in full_pod (under its API name): parsing must fill each one,
        // so serializing gives back as many keys as the types have fields, each spelled as the API spells it.
        let p: CachedPod = serde_json::from_value(full_pod()).unwrap();
        let back = serde_json::to_value(&p).unwrap();
        let orig = full_pod();
        for part in ["spec", "status"] {
            let keys: Vec<&String> = back[part].as_object().unwrap().keys().collect();
            for k in &keys {
                assert!(orig[part].get(k.as_str()).is_some(), "{part}.{k} is not an API field name");
            }
            let fields = if part == "spec" { 19 } else { 11 };
            assert_eq!(keys.len(), fields, "{part}: every field parsed ({keys:?})");
        }
        assert!(back["spec"].get("serviceAccountName").is_none(), "fields not kept are not parsed");
    }

    #[test]
    fn a_pod_without_volumes_or_spec_parses() {
        let p: CachedPod = serde_json::from_value(serde_json::json!({"metadata": {"name": "bare"}})).unwrap();
        assert!(p.spec.is_none() && p.status.is_none());
        let p: CachedPod = serde_json::from_value(serde_json::json!({"metadata": {"name": "v"}, "spec": {"containers": [], "volumes": [{"name": "e", "emptyDir": {}}]}})).unwrap();
        assert!(p.spec.unwrap().volumes.is_none(), "no claim volume: none kept");
    }

    #[test]
    fn smaller_than_a_pod() {
        assert!(std::mem::size_of::<CachedPod>() * 2 < std::mem::size_of::<Pod>());
        assert!(std::mem::size_of::<CachedContainer>() * 5 < std::mem::size_of::<Container>());
    }

    #[test]
    fn is_a_kube_resource_of_pods() {
        use kube::Resource;
        assert_eq!(CachedPod::kind(&()), "Pod");
        assert_eq!(CachedPod::plural(&()), "pods");
        assert_eq!(CachedPod::api_version(&()), "v1");
    }
}
