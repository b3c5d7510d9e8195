//! Server-side table rendering (`meta.k8s.io/v1` `Table`), which `kubectl get`
//! asks for with `Accept: application/json;as=Table;v=v1;g=meta.k8s.io`.
//!
//! Column definitions and cell values follow the printers of upstream
//! Kubernetes 1.32 (`pkg/printers/internalversion/printers.go`):
//! the same column names (upstream spelling, e.g. `"Nominated Node"`;
//! kubectl upper-cases them), types, formats, priorities, and the same way of
//! computing each cell. Like upstream's API server, which always prints with
//! `Wide: true`, a row carries every column, wide ones included; kubectl
//! hides columns of priority 1 unless `-o wide`.
//!
//! Objects are read through the typed structs of `k8s-openapi`. When an object
//! does not deserialize, its row falls back to what the raw JSON gives: the
//! name, the age, and `"<unknown>"` elsewhere. Nothing here panics.
//!
//! Where the API server would have defaulted a field that is missing
//! (service type `ClusterIP`, port protocol `TCP`, secret type `Opaque`,
//! `replicas: 1`), the printer shows that default.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Duration, Utc};
use k8s_openapi::api::apps::v1::{ControllerRevision, DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::scheduling::v1::PriorityClass;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, ContainerState, ContainerStateTerminated, ContainerStatus,
    EndpointSubset, Endpoints, Event, Namespace, Node, NodeSystemInfo, Pod, PodSpec, PodStatus,
    Secret, Service, ServiceAccount, ServicePort, ServiceSpec, ServiceStatus,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::serde::de::DeserializeOwned;
use serde_json::{json, Value};

/// Column definitions for a resource (group "" for core), e.g. ("", "pods"), ("apps", "deployments").
/// Each is a JSON object {name, type, format, description, priority}. Resources without a printer get NAME (format "name") and AGE (type "string"), as upstream's default.
pub fn column_definitions(group: &str, plural: &str) -> Vec<serde_json::Value> {
    columns_for(group, plural)
        .iter()
        .copied()
        .map(Column::to_json)
        .collect()
}

/// The cells of one object's row, same order/length as column_definitions. `now` is used for ages.
pub fn row_cells(
    group: &str,
    plural: &str,
    obj: &serde_json::Value,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<serde_json::Value> {
    printer_for(group, plural)
        .and_then(|printer| printer.cells(obj, now))
        .unwrap_or_else(|| fallback_cells(columns_for(group, plural), obj, now))
}

/// Human duration as kubectl prints it (e.g. "5s", "3m20s", "5m", "2d3h", "12d") — upstream's duration.HumanDuration; "<unknown>" for a missing timestamp.
pub fn human_age(created: Option<&str>, now: chrono::DateTime<chrono::Utc>) -> String {
    let created = created
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc));
    since(created, now)
}

// ---------------------------------------------------------------------------
// Columns
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Column {
    name: &'static str,
    kind: &'static str,
    format: &'static str,
    priority: i64,
    description: &'static str,
}

impl Column {
    fn to_json(self) -> Value {
        json!({
            "name": self.name,
            "type": self.kind,
            "format": self.format,
            "description": self.description,
            "priority": self.priority,
        })
    }
}

const fn col(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        name,
        kind,
        format: "",
        priority: 0,
        description,
    }
}

const fn wide(name: &'static str, kind: &'static str, description: &'static str) -> Column {
    Column {
        priority: 1,
        ..col(name, kind, description)
    }
}

const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
const AGE_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";
const CONTAINERS_DESC: &str = "Names of each container in the template.";
const IMAGES_DESC: &str = "Images referenced by each container in the template.";
const SELECTOR_DESC: &str = "Label query over pods that should match the replica count.";

const NAME: Column = Column {
    name: "Name",
    kind: "string",
    format: "name",
    priority: 0,
    description: NAME_DESC,
};
const AGE: Column = col("Age", "string", AGE_DESC);
const WIDE_CONTAINERS: Column = wide("Containers", "string", CONTAINERS_DESC);
const WIDE_IMAGES: Column = wide("Images", "string", IMAGES_DESC);
const WIDE_SELECTOR: Column = wide("Selector", "string", SELECTOR_DESC);

const DEFAULT_COLUMNS: &[Column] = &[NAME, AGE];

const POD_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    col("Status", "string", "The aggregate status of the containers in this pod."),
    col("Restarts", "string", "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted."),
    AGE,
    wide("IP", "string", "IP address allocated to the pod. Routable at least within the cluster."),
    wide("Node", "string", "NodeName indicates in which node this pod is scheduled."),
    wide("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the node."),
    wide("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness."),
];

const NODE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", "Kubelet Version reported by the node."),
    wide("Internal-IP", "string", "List of addresses reachable to the node."),
    wide("External-IP", "string", "List of addresses reachable to the node."),
    wide("OS-Image", "string", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
    wide("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
    wide("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
];

const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", "type determines how the Service is exposed."),
    col("Cluster-IP", "string", "clusterIP is the IP address of the service and is usually assigned randomly."),
    col("External-IP", "string", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
    col("Port(s)", "string", "The list of ports that are exposed by this service."),
    AGE,
    wide("Selector", "string", "Route service traffic to pods with label keys and values matching this selector."),
];

const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Endpoints",
        "string",
        "The set of all endpoints is the union of all subsets.",
    ),
    AGE,
];

const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the namespace"),
    AGE,
];

const EVENT_COLUMNS: &[Column] = &[
    col("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
    col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
    col("Reason", "string", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
    col("Object", "string", "The object that this event is about."),
    wide("Subobject", "string", "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement."),
    wide("Source", "string", "The component reporting this event. Should be a short machine understandable string."),
    col("Message", "string", "A human-readable description of the status of this operation."),
    wide("First Seen", "string", "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)"),
    wide("Count", "string", "The number of times this event has occurred."),
    Column { priority: 1, ..NAME },
];

const CONFIG_MAP_COLUMNS: &[Column] = &[
    NAME,
    col("Data", "string", "Data contains the configuration data."),
    AGE,
];

const SECRET_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        "Used to facilitate programmatic handling of secret data.",
    ),
    col("Data", "string", "Data contains the secret data."),
    AGE,
];

const SERVICE_ACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    col("Secrets", "string", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
    AGE,
];

const PV_COLUMNS: &[Column] = &[
    NAME,
    col("Capacity", "string", "capacity is the description of the persistent volume's resources and capacity."),
    col("Access Modes", "string", "accessModes contains all ways the volume can be mounted."),
    col("Reclaim Policy", "string", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim."),
    col("Status", "string", "phase indicates if a volume is available, bound to a claim, or released by a claim."),
    col("Claim", "string", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim."),
    col("StorageClass", "string", "storageClassName is the name of StorageClass to which this persistent volume belongs."),
    col("VolumeAttributesClass", "string", "Name of VolumeAttributesClass to which this persistent volume belongs."),
    col("Reason", "string", "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI."),
    AGE,
];

const PVC_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "phase represents the current phase of PersistentVolumeClaim."),
    col("Volume", "string", "volumeName is the binding reference to the PersistentVolume backing this claim."),
    col("Capacity", "string", "capacity represents the actual resources of the underlying volume."),
    col("Access Modes", "string", "accessModes contains the actual access modes the volume backing the PVC has."),
    col("StorageClass", "string", "storageClassName is the name of the StorageClass required by the claim."),
    col("VolumeAttributesClass", "string", "volumeAttributesClassName may be used to set the VolumeAttributesClass used by this claim."),
    AGE,
];

const STORAGE_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col("Provisioner", "string", "provisioner indicates the type of the provisioner."),
    col("ReclaimPolicy", "string", "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class."),
    col("VolumeBindingMode", "string", "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound."),
    col("AllowVolumeExpansion", "string", "allowVolumeExpansion shows whether the storage class allow volume expand."),
    AGE,
];

const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    col("Up-to-date", "string", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
    col("Available", "string", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
    AGE,
    WIDE_CONTAINERS,
    WIDE_IMAGES,
    WIDE_SELECTOR,
];

const REPLICA_SET_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "Replicas is the number of desired replicas.",
    ),
    col(
        "Current",
        "integer",
        "Replicas is the most recently observed number of replicas.",
    ),
    col(
        "Ready",
        "integer",
        "The number of ready replicas for this replica set.",
    ),
    AGE,
    WIDE_CONTAINERS,
    WIDE_IMAGES,
    WIDE_SELECTOR,
];

const STATEFUL_SET_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    AGE,
    WIDE_CONTAINERS,
    WIDE_IMAGES,
];

const CONTROLLER_REVISION_COLUMNS: &[Column] = &[
    NAME,
    col("Controller", "string", "Controller of the object"),
    col("Revision", "string", "Revision of the ControllerRevision"),
    AGE,
];

const DAEMON_SET_COLUMNS: &[Column] = &[
    NAME,
    col("Desired", "integer", "The total number of nodes that should be running the daemon pod."),
    col("Current", "integer", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."),
    col("Ready", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."),
    col("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
    col("Available", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available."),
    col("Node Selector", "string", "NodeSelector is a selector which must be true for the pod to fit on a node."),
    AGE,
    WIDE_CONTAINERS,
    WIDE_IMAGES,
    WIDE_SELECTOR,
];

const RESOURCE_QUOTA_COLUMNS: &[Column] = &[
    NAME,
    AGE,
    col("Request", "string", "Request represents a minimum amount of cpu/memory that a container may consume."),
    col("Limit", "string", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
];

/// `name: used/hard` for the quota's resources, the limits.* ones in the second cell (upstream's printResourceQuota).
fn resource_quota_cells(q: &k8s_openapi::api::core::v1::ResourceQuota, now: DateTime<Utc>) -> Vec<Value> {
    let status = q.status.as_ref();
    let hard = status.and_then(|s| s.hard.as_ref()).cloned().unwrap_or_default();
    let used = status.and_then(|s| s.used.as_ref());
    let (mut request, mut limit) = (Vec::new(), Vec::new());
    for (k, h) in &hard {
        let u = used.and_then(|u| u.get(k)).map_or("0", |q| q.0.as_str());
        let cell = format!("{k}: {u}/{}", h.0);
        if k.starts_with("limits.") { limit.push(cell) } else { request.push(cell) }
    }
    vec![name_cell(&q.metadata), age_cell(&q.metadata, now), Value::from(request.join(", ")), Value::from(limit.join(", "))]
}

const LIMIT_RANGE_COLUMNS: &[Column] = &[NAME, col("Created At", "date", "CreationTimestamp is a timestamp representing the server time when this object was created.")];

const PRIORITY_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col("Value", "integer", "value represents the integer value of this priority class. This is the actual priority that pods receive when they have the name of this class in their pod spec."),
    col("Global-Default", "boolean", "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class."),
    AGE,
    col("PreemptionPolicy", "string", "preemptionPolicy is the Policy for preempting pods with lower priority."),
];

const PDB_COLUMNS: &[Column] = &[
    NAME,
    col("Min Available", "string", "The minimum number of pods that must be available."),
    col("Max Unavailable", "string", "The maximum number of pods that may be unavailable."),
    col("Allowed Disruptions", "integer", "Calculated number of pods that may be disrupted at this time."),
    AGE,
];

const CRON_JOB_COLUMNS: &[Column] = &[
    NAME,
    col("Schedule", "string", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
    col("Timezone", "string", "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones."),
    col("Suspend", "boolean", "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions.  Defaults to false."),
    col("Active", "integer", "A list of pointers to currently running jobs."),
    col("Last Schedule", "string", "Information when was the last time the job was successfully scheduled."),
    AGE,
    WIDE_CONTAINERS,
    WIDE_IMAGES,
    WIDE_SELECTOR,
];

const JOB_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "Status of the job."),
    col(
        "Completions",
        "string",
        "The number of pods which reached phase Succeeded.",
    ),
    col("Duration", "string", "Time required to complete the job."),
    AGE,
    WIDE_CONTAINERS,
    WIDE_IMAGES,
    WIDE_SELECTOR,
];

const CSR_COLUMNS: &[Column] = &[
    NAME,
    AGE,
    col("SignerName", "string", "Name of the signer that will be asked to sign the certificate."),
    col("Requestor", "string", "Name of the user who requested the certificate."),
    col("RequestedDuration", "string", "The requested lifetime of the certificate."),
    col("Condition", "string", "Approved, Issued, Denied, Failed or Pending."),
];

const LEASE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Holder",
        "string",
        "holderIdentity contains the identity of the holder of a current lease.",
    ),
    AGE,
];

const ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "AddressType",
        "string",
        "addressType specifies the type of address carried by this EndpointSlice.",
    ),
    col(
        "Ports",
        "string",
        "ports specifies the list of network ports exposed by each endpoint in this slice.",
    ),
    col(
        "Endpoints",
        "string",
        "endpoints is a list of unique endpoints in this slice.",
    ),
    AGE,
];

// ---------------------------------------------------------------------------
// Dispatch
// ---------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Printer {
    Pod,
    Node,
    Service,
    Endpoints,
    Namespace,
    Event,
    ConfigMap,
    Secret,
    ServiceAccount,
    Deployment,
    ReplicaSet,
    DaemonSet,
    StatefulSet,
    ControllerRevision,
    Job,
    CronJob,
    PodDisruptionBudget,
    PriorityClass,
    LimitRange,
    ResourceQuota,
    Lease,
    EndpointSlice,
    Csr,
    PersistentVolume,
    PersistentVolumeClaim,
    StorageClass,
}

fn printer_for(group: &str, plural: &str) -> Option<Printer> {
    let printer = match (group, plural) {
        ("", "pods") => Printer::Pod,
        ("", "nodes") => Printer::Node,
        ("", "services") => Printer::Service,
        ("", "endpoints") => Printer::Endpoints,
        ("", "namespaces") => Printer::Namespace,
        ("", "events") => Printer::Event,
        ("", "configmaps") => Printer::ConfigMap,
        ("", "secrets") => Printer::Secret,
        ("", "serviceaccounts") => Printer::ServiceAccount,
        ("apps", "deployments") => Printer::Deployment,
        ("apps", "replicasets") => Printer::ReplicaSet,
        ("apps", "daemonsets") => Printer::DaemonSet,
        ("apps", "statefulsets") => Printer::StatefulSet,
        ("apps", "controllerrevisions") => Printer::ControllerRevision,
        ("batch", "jobs") => Printer::Job,
        ("batch", "cronjobs") => Printer::CronJob,
        ("policy", "poddisruptionbudgets") => Printer::PodDisruptionBudget,
        ("scheduling.k8s.io", "priorityclasses") => Printer::PriorityClass,
        ("", "limitranges") => Printer::LimitRange,
        ("", "resourcequotas") => Printer::ResourceQuota,
        ("coordination.k8s.io", "leases") => Printer::Lease,
        ("discovery.k8s.io", "endpointslices") => Printer::EndpointSlice,
        ("certificates.k8s.io", "certificatesigningrequests") => Printer::Csr,
        ("", "persistentvolumes") => Printer::PersistentVolume,
        ("", "persistentvolumeclaims") => Printer::PersistentVolumeClaim,
        ("storage.k8s.io", "storageclasses") => Printer::StorageClass,
        _ => return None,
    };
    Some(printer)
}

fn columns_for(group: &str, plural: &str) -> &'static [Column] {
    printer_for(group, plural).map_or(DEFAULT_COLUMNS, Printer::columns)
}

impl Printer {
    fn columns(self) -> &'static [Column] {
        match self {
            Printer::Pod => POD_COLUMNS,
            Printer::Node => NODE_COLUMNS,
            Printer::Service => SERVICE_COLUMNS,
            Printer::Endpoints => ENDPOINTS_COLUMNS,
            Printer::Namespace => NAMESPACE_COLUMNS,
            Printer::Event => EVENT_COLUMNS,
            Printer::ConfigMap => CONFIG_MAP_COLUMNS,
            Printer::Secret => SECRET_COLUMNS,
            Printer::ServiceAccount => SERVICE_ACCOUNT_COLUMNS,
            Printer::Deployment => DEPLOYMENT_COLUMNS,
            Printer::ReplicaSet => REPLICA_SET_COLUMNS,
            Printer::DaemonSet => DAEMON_SET_COLUMNS,
            Printer::StatefulSet => STATEFUL_SET_COLUMNS,
            Printer::ControllerRevision => CONTROLLER_REVISION_COLUMNS,
            Printer::Job => JOB_COLUMNS,
            Printer::CronJob => CRON_JOB_COLUMNS,
            Printer::PodDisruptionBudget => PDB_COLUMNS,
            Printer::PriorityClass => PRIORITY_CLASS_COLUMNS,
            Printer::LimitRange => LIMIT_RANGE_COLUMNS,
            Printer::ResourceQuota => RESOURCE_QUOTA_COLUMNS,
            Printer::Lease => LEASE_COLUMNS,
            Printer::EndpointSlice => ENDPOINT_SLICE_COLUMNS,
            Printer::Csr => CSR_COLUMNS,
            Printer::PersistentVolume => PV_COLUMNS,
            Printer::PersistentVolumeClaim => PVC_COLUMNS,
            Printer::StorageClass => STORAGE_CLASS_COLUMNS,
        }
    }

    /// The typed row, or `None` when the object does not deserialize.
    fn cells(self, obj: &Value, now: DateTime<Utc>) -> Option<Vec<Value>> {
        match self {
            Printer::Pod => decode(obj).map(|o| pod_cells(&o, now)),
            Printer::Node => decode(obj).map(|o| node_cells(&o, now)),
            Printer::Service => decode(obj).map(|o| service_cells(&o, now)),
            Printer::Endpoints => decode(obj).map(|o| endpoints_cells(&o, now)),
            Printer::Namespace => decode(obj).map(|o| namespace_cells(&o, now)),
            Printer::Event => decode(obj).map(|o| event_cells(&o, now)),
            Printer::ConfigMap => decode(obj).map(|o| config_map_cells(&o, now)),
            Printer::Secret => decode(obj).map(|o| secret_cells(&o, now)),
            Printer::ServiceAccount => decode(obj).map(|o| service_account_cells(&o, now)),
            Printer::Deployment => decode(obj).map(|o| deployment_cells(&o, now)),
            Printer::ReplicaSet => decode(obj).map(|o| replica_set_cells(&o, now)),
            Printer::DaemonSet => decode(obj).map(|o| daemon_set_cells(&o, now)),
            Printer::StatefulSet => decode(obj).map(|o| stateful_set_cells(&o, now)),
            Printer::ControllerRevision => decode(obj).map(|o| controller_revision_cells(&o, now)),
            Printer::Job => decode(obj).map(|o| job_cells(&o, now)),
            Printer::CronJob => decode(obj).map(|o| cron_job_cells(&o, now)),
            Printer::PodDisruptionBudget => decode(obj).map(|o| pdb_cells(&o, now)),
            Printer::PriorityClass => decode(obj).map(|o| priority_class_cells(&o, now)),
            Printer::ResourceQuota => decode::<k8s_openapi::api::core::v1::ResourceQuota>(obj).map(|o| resource_quota_cells(&o, now)),
            Printer::LimitRange => decode::<k8s_openapi::api::core::v1::LimitRange>(obj).map(|o| {
                let created = o.metadata.creation_timestamp.as_ref().map(|t| t.0.format("%Y-%m-%dT%H:%M:%SZ").to_string()).unwrap_or_default();
                vec![name_cell(&o.metadata), Value::from(created)]
            }),
            Printer::Lease => decode(obj).map(|o| lease_cells(&o, now)),
            Printer::Csr => decode(obj).map(|o| csr_cells(&o, now)),
            Printer::EndpointSlice => decode(obj).map(|o| endpoint_slice_cells(&o, now)),
            Printer::PersistentVolume => decode(obj).map(|o| pv_cells(&o, now)),
            Printer::PersistentVolumeClaim => decode(obj).map(|o| pvc_cells(&o, now)),
            Printer::StorageClass => decode(obj).map(|o| storage_class_cells(&o, now)),
        }
    }
}

/// Deserializes into a typed object, ignoring `apiVersion`/`kind` (k8s-openapi
/// rejects any version but the one it was generated for).
fn decode<T: DeserializeOwned>(obj: &Value) -> Option<T> {
    let mut obj = obj.clone();
    if let Some(map) = obj.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
    }
    serde_json::from_value(obj).ok()
}

/// Cells from the raw JSON when the typed route fails: name, age, `<unknown>`.
fn fallback_cells(columns: &[Column], obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let raw_str = |pointer: &str| obj.pointer(pointer).and_then(Value::as_str);
    columns
        .iter()
        .map(|column| {
            if column.format == "name" {
                Value::from(raw_str("/metadata/name").unwrap_or_default())
            } else if column.name == AGE.name {
                Value::from(human_age(raw_str("/metadata/creationTimestamp"), now))
            } else {
                Value::from("<unknown>")
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Shared helpers
// ---------------------------------------------------------------------------

/// Upstream's `duration.HumanDuration`.
fn human_duration(d: Duration) -> String {
    let seconds = d.num_seconds();
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    if seconds < 0 {
        return "0s".to_string();
    }
    if seconds < 60 * 2 {
        return format!("{seconds}s");
    }
    let minutes = d.num_minutes();
    if minutes < 10 {
        return with_remainder(minutes, "m", seconds % 60, "s");
    }
    if minutes < 60 * 3 {
        return format!("{minutes}m");
    }
    let hours = d.num_hours();
    if hours < 8 {
        return with_remainder(hours, "h", minutes % 60, "m");
    }
    if hours < 48 {
        return format!("{hours}h");
    }
    if hours < 24 * 8 {
        return with_remainder(hours / 24, "d", hours % 24, "h");
    }
    if hours < 24 * 365 * 2 {
        return format!("{}d", hours / 24);
    }
    if hours < 24 * 365 * 8 {
        return with_remainder(hours / 24 / 365, "y", (hours / 24) % 365, "d");
    }
    format!("{}y", hours / 24 / 365)
}

/// `"3m20s"`, or `"3m"` when the smaller unit is zero.
fn with_remainder(big: i64, big_unit: &str, small: i64, small_unit: &str) -> String {
    if small == 0 {
        format!("{big}{big_unit}")
    } else {
        format!("{big}{big_unit}{small}{small_unit}")
    }
}

/// Elapsed time since `t`, or `<unknown>` when there is no timestamp.
fn since(t: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    t.map_or_else(|| "<unknown>".to_string(), |t| human_duration(now - t))
}

fn name_cell(meta: &ObjectMeta) -> Value {
    Value::from(meta.name.as_deref().unwrap_or_default())
}

fn age_cell(meta: &ObjectMeta, now: DateTime<Utc>) -> Value {
    Value::from(since(meta.creation_timestamp.as_ref().map(|t| t.0), now))
}

fn int_cell(n: Option<i32>) -> Value {
    Value::from(i64::from(n.unwrap_or(0)))
}

fn non_empty(s: Option<&str>) -> Option<&str> {
    s.filter(|s| !s.is_empty())
}

fn or_placeholder(s: Option<&str>, placeholder: &str) -> String {
    non_empty(s).unwrap_or(placeholder).to_string()
}

/// True when the first condition of type `ty` has status `True`.
fn first_condition_true<'a>(mut conds: impl Iterator<Item = (&'a str, &'a str)>, ty: &str) -> bool {
    conds
        .find(|(t, _)| *t == ty)
        .is_some_and(|(_, status)| status == "True")
}

/// Upstream's `labels.FormatLabels`: `a=b,c=d` sorted by key, `<none>` when empty.
fn format_labels(labels: Option<&BTreeMap<String, String>>) -> String {
    let text = labels
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    if text.is_empty() {
        "<none>".to_string()
    } else {
        text
    }
}

/// Upstream's `metav1.FormatLabelSelector`: `<none>` when empty, `<error>` when invalid.
fn format_label_selector(selector: Option<&LabelSelector>) -> String {
    match label_selector_string(selector) {
        Ok(text) if text.is_empty() => "<none>".to_string(),
        Ok(text) => text,
        Err(()) => "<error>".to_string(),
    }
}

/// Upstream's `layoutContainerCells`: comma-joined names and images.
fn container_cells(spec: Option<&PodSpec>) -> (Value, Value) {
    let containers: &[Container] = spec.map_or(&[], |s| &s.containers);
    let names: Vec<&str> = containers.iter().map(|c| c.name.as_str()).collect();
    let images: Vec<&str> = containers
        .iter()
        .map(|c| c.image.as_deref().unwrap_or_default())
        .collect();
    (Value::from(names.join(",")), Value::from(images.join(",")))
}

const MAX_LISTED: usize = 3;

/// Keeps the first three items and counts them all.
fn first_few(items: impl Iterator<Item = String>) -> (Vec<String>, usize) {
    let mut shown = Vec::new();
    let mut total = 0;
    for item in items {
        if shown.len() < MAX_LISTED {
            shown.push(item);
        }
        total += 1;
    }
    (shown, total)
}

/// `a,b,c + 2 more...` when items were left out.
fn with_more((shown, total): (Vec<String>, usize)) -> String {
    let text = shown.join(",");
    if total > MAX_LISTED {
        format!("{text} + {} more...", total - MAX_LISTED)
    } else {
        text
    }
}

/// Go's `net.JoinHostPort`.
fn join_host_port(host: &str, port: i32) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

// ---------------------------------------------------------------------------
// Label selectors (upstream's `LabelSelectorAsSelector(...).String()`)
// ---------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq)]
enum Operator {
    Equals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

struct Requirement<'a> {
    key: &'a str,
    operator: Operator,
    values: Vec<&'a str>,
}

/// The selector as text (requirements sorted by key), `""` for a missing or
/// empty selector, `Err` for one the API would reject.
fn label_selector_string(selector: Option<&LabelSelector>) -> Result<String, ()> {
    let Some(selector) = selector else {
        return Ok(String::new());
    };
    let mut requirements = selector_requirements(selector)?;
    requirements.sort_by(|a, b| a.key.cmp(b.key));
    let parts: Vec<String> = requirements.iter().map(render_requirement).collect();
    Ok(parts.join(","))
}

fn selector_requirements(selector: &LabelSelector) -> Result<Vec<Requirement<'_>>, ()> {
    let mut requirements = Vec::new();
    for (key, value) in selector.match_labels.iter().flatten() {
        requirements.push(Requirement {
            key,
            operator: Operator::Equals,
            values: vec![value],
        });
    }
    for expr in selector.match_expressions.iter().flatten() {
        let operator = match expr.operator.as_str() {
            "In" => Operator::In,
            "NotIn" => Operator::NotIn,
            "Exists" => Operator::Exists,
            "DoesNotExist" => Operator::DoesNotExist,
            _ => return Err(()),
        };
        let values = expr.values.iter().flatten().map(String::as_str).collect();
        requirements.push(Requirement {
            key: &expr.key,
            operator,
            values,
        });
    }
    if requirements.iter().all(Requirement::is_valid) {
        Ok(requirements)
    } else {
        Err(())
    }
}

impl Requirement<'_> {
    fn is_valid(&self) -> bool {
        let count_ok = match self.operator {
            Operator::Equals => self.values.len() == 1,
            Operator::In | Operator::NotIn => !self.values.is_empty(),
            Operator::Exists | Operator::DoesNotExist => self.values.is_empty(),
        };
        count_ok && is_qualified_name(self.key) && self.values.iter().all(|v| is_label_value(v))
    }
}

fn render_requirement(r: &Requirement<'_>) -> String {
    let mut values = r.values.clone();
    values.sort_unstable();
    let list = values.join(",");
    match r.operator {
        Operator::Equals => format!("{}={}", r.key, list),
        Operator::In => format!("{} in ({})", r.key, list),
        Operator::NotIn => format!("{} notin ({})", r.key, list),
        Operator::Exists => r.key.to_string(),
        Operator::DoesNotExist => format!("!{}", r.key),
    }
}

/// A label name or value: at most 63 of `[A-Za-z0-9_.-]`, alphanumeric at both ends.
fn is_label_name(s: &str) -> bool {
    let edge_ok = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && edge_ok(s.chars().next())
        && edge_ok(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

fn is_label_value(s: &str) -> bool {
    s.is_empty() || is_label_name(s)
}

/// A DNS-1123 subdomain, as a label key's prefix must be.
fn is_dns_subdomain(s: &str) -> bool {
    let label_ok = |l: &str| {
        let edge_ok =
            |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        edge_ok(l.chars().next())
            && edge_ok(l.chars().last())
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    s.len() <= 253 && s.split('.').all(label_ok)
}

/// A label key: `name` or `prefix/name`.
fn is_qualified_name(s: &str) -> bool {
    match s.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(s),
    }
}

// ---------------------------------------------------------------------------
// Pods
// ---------------------------------------------------------------------------

/// Restart count and the time of the latest restart.
#[derive(Default, Clone, Copy)]
struct Restarts {
    count: i64,
    last: Option<DateTime<Utc>>,
}

impl Restarts {
    fn add(&mut self, status: &ContainerStatus) {
        self.count += i64::from(status.restart_count);
        let finished = status
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .and_then(|t| t.finished_at.as_ref())
            .map(|t| t.0);
        self.last = self.last.max(finished);
    }

    /// `"2"`, or `"2 (5m ago)"` when the last restart time is known.
    fn cell(self, now: DateTime<Utc>) -> Value {
        match self.last {
            Some(last) if self.count != 0 => Value::from(format!(
                "{} ({} ago)",
                self.count,
                human_duration(now - last)
            )),
            _ => Value::from(self.count.to_string()),
        }
    }
}

/// What the READY, STATUS and RESTARTS columns summarize.
struct PodSummary {
    ready: usize,
    total: usize,
    reason: String,
    restarts: Restarts,
}

fn pod_cells(pod: &Pod, now: DateTime<Utc>) -> Vec<Value> {
    let default_spec = PodSpec::default();
    let default_status = PodStatus::default();
    let spec = pod.spec.as_ref().unwrap_or(&default_spec);
    let status = pod.status.as_ref().unwrap_or(&default_status);
    let summary = summarize_pod(&pod.metadata, spec, status);
    let pod_ip = status
        .pod_ips
        .iter()
        .flatten()
        .map(|ip| ip.ip.as_str())
        .next()
        .or(status.pod_ip.as_deref());
    vec![
        name_cell(&pod.metadata),
        Value::from(format!("{}/{}", summary.ready, summary.total)),
        Value::from(summary.reason),
        summary.restarts.cell(now),
        age_cell(&pod.metadata, now),
        Value::from(or_placeholder(pod_ip, "<none>")),
        Value::from(or_placeholder(spec.node_name.as_deref(), "<none>")),
        Value::from(or_placeholder(
            status.nominated_node_name.as_deref(),
            "<none>",
        )),
        Value::from(readiness_gates(spec, status)),
    ]
}

fn summarize_pod(meta: &ObjectMeta, spec: &PodSpec, status: &PodStatus) -> PodSummary {
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| is_sidecar(c))
        .count();
    let mut summary = PodSummary {
        ready: 0,
        total: spec.containers.len() + sidecars,
        reason: initial_pod_reason(status),
        restarts: Restarts::default(),
    };
    let (initializing, sidecar_restarts) = scan_init_containers(spec, status, &mut summary);
    if !initializing || pod_condition_true(status, "Initialized") {
        summary.restarts = sidecar_restarts;
        scan_containers(status, &mut summary);
    }
    if meta.deletion_timestamp.is_some() {
        apply_deletion(status, &mut summary.reason);
    }
    summary
}

/// The pod's reason, else its phase; `SchedulingGated` when scheduling is gated.
fn initial_pod_reason(status: &PodStatus) -> String {
    let gated = status
        .conditions
        .iter()
        .flatten()
        .any(|c| c.type_ == "PodScheduled" && c.reason.as_deref() == Some("SchedulingGated"));
    if gated {
        return "SchedulingGated".to_string();
    }
    non_empty(status.reason.as_deref())
        .or(status.phase.as_deref())
        .unwrap_or_default()
        .to_string()
}

/// A restartable (sidecar) init container.
fn is_sidecar(container: &Container) -> bool {
    container.restart_policy.as_deref() == Some("Always")
}

fn is_sidecar_named(spec: &PodSpec, name: &str) -> bool {
    spec.init_containers
        .iter()
        .flatten()
        .any(|c| c.name == name && is_sidecar(c))
}

/// Walks init containers up to the first unfinished one. Returns whether the
/// pod is still initializing, and the restarts of sidecar containers.
fn scan_init_containers(
    spec: &PodSpec,
    status: &PodStatus,
    summary: &mut PodSummary,
) -> (bool, Restarts) {
    let declared = spec.init_containers.as_ref().map_or(0, Vec::len);
    let mut sidecar_restarts = Restarts::default();
    for (index, container) in status.init_container_statuses.iter().flatten().enumerate() {
        summary.restarts.add(container);
        let sidecar = is_sidecar_named(spec, &container.name);
        if sidecar {
            sidecar_restarts.add(container);
        }
        let terminated = terminated_state(container.state.as_ref());
        if terminated.is_some_and(|t| t.exit_code == 0) {
            continue;
        }
        if sidecar && container.started == Some(true) {
            summary.ready += usize::from(container.ready);
            continue;
        }
        summary.reason = match (terminated, waiting_reason(container.state.as_ref())) {
            (Some(t), _) => terminated_reason(t, "Init:"),
            (None, Some(waiting)) if waiting != "PodInitializing" => format!("Init:{waiting}"),
            _ => format!("Init:{index}/{declared}"),
        };
        return (true, sidecar_restarts);
    }
    (false, sidecar_restarts)
}

/// Regular containers, last to first: the last non-running one names the status.
fn scan_containers(status: &PodStatus, summary: &mut PodSummary) {
    let mut has_running = false;
    for container in status.container_statuses.iter().flatten().rev() {
        summary.restarts.add(container);
        let state = container.state.as_ref();
        if let Some(waiting) = waiting_reason(state) {
            summary.reason = waiting.to_string();
        } else if let Some(terminated) = terminated_state(state) {
            summary.reason = terminated_reason(terminated, "");
        } else if container.ready && state.is_some_and(|s| s.running.is_some()) {
            has_running = true;
            summary.ready += 1;
        }
    }
    if summary.reason == "Completed" && has_running {
        let ready = status
            .conditions
            .iter()
            .flatten()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        summary.reason = if ready { "Running" } else { "NotReady" }.to_string();
    }
}

fn apply_deletion(status: &PodStatus, reason: &mut String) {
    let phase = status.phase.as_deref().unwrap_or_default();
    if status.reason.as_deref() == Some("NodeLost") {
        *reason = "Unknown".to_string();
    } else if phase != "Succeeded" && phase != "Failed" {
        *reason = "Terminating".to_string();
    }
}

fn waiting_reason(state: Option<&ContainerState>) -> Option<&str> {
    non_empty(state?.waiting.as_ref()?.reason.as_deref())
}

fn terminated_state(state: Option<&ContainerState>) -> Option<&ContainerStateTerminated> {
    state?.terminated.as_ref()
}

/// `Reason`, else `Signal:N`, else `ExitCode:N`, after `prefix`.
fn terminated_reason(terminated: &ContainerStateTerminated, prefix: &str) -> String {
    if let Some(reason) = non_empty(terminated.reason.as_deref()) {
        return format!("{prefix}{reason}");
    }
    match terminated.signal.unwrap_or(0) {
        0 => format!("{prefix}ExitCode:{}", terminated.exit_code),
        signal => format!("{prefix}Signal:{signal}"),
    }
}

fn pod_condition_true(status: &PodStatus, ty: &str) -> bool {
    let conds = status.conditions.iter().flatten();
    first_condition_true(conds.map(|c| (c.type_.as_str(), c.status.as_str())), ty)
}

/// `true/total` over readiness gates, `<none>` without gates.
fn readiness_gates(spec: &PodSpec, status: &PodStatus) -> String {
    let gates = spec.readiness_gates.as_deref().unwrap_or_default();
    if gates.is_empty() {
        return "<none>".to_string();
    }
    let passed = gates
        .iter()
        .filter(|gate| pod_condition_true(status, &gate.condition_type))
        .count();
    format!("{passed}/{}", gates.len())
}

// ---------------------------------------------------------------------------
// Nodes
// ---------------------------------------------------------------------------

const NODE_ROLE_PREFIX: &str = "node-role.kubernetes.io/";
const NODE_ROLE_LABEL: &str = "kubernetes.io/role";

fn node_cells(node: &Node, now: DateTime<Utc>) -> Vec<Value> {
    let info = node.status.as_ref().and_then(|s| s.node_info.as_ref());
    let info_field =
        |get: fn(&NodeSystemInfo) -> &str| Value::from(or_placeholder(info.map(get), "<unknown>"));
    vec![
        name_cell(&node.metadata),
        Value::from(node_status(node)),
        Value::from(node_roles(node.metadata.labels.as_ref())),
        age_cell(&node.metadata, now),
        Value::from(info.map(|i| i.kubelet_version.as_str()).unwrap_or_default()),
        Value::from(node_address(node, "InternalIP")),
        Value::from(node_address(node, "ExternalIP")),
        info_field(|i| &i.os_image),
        info_field(|i| &i.kernel_version),
        info_field(|i| &i.container_runtime_version),
    ]
}

/// `Ready`, `NotReady` or `Unknown`, plus `SchedulingDisabled` when cordoned.
fn node_status(node: &Node) -> String {
    let ready = node
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten())
        .rfind(|c| c.type_ == "Ready");
    let mut parts = vec![match ready {
        Some(c) if c.status == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true) {
        parts.push("SchedulingDisabled");
    }
    parts.join(",")
}

/// Roles from `node-role.kubernetes.io/<role>` and `kubernetes.io/role=<role>` labels.
fn node_roles(labels: Option<&BTreeMap<String, String>>) -> String {
    let mut roles = BTreeSet::new();
    for (key, value) in labels.into_iter().flatten() {
        if let Some(role) = key.strip_prefix(NODE_ROLE_PREFIX) {
            if !role.is_empty() {
                roles.insert(role);
            }
        } else if key == NODE_ROLE_LABEL && !value.is_empty() {
            roles.insert(value.as_str());
        }
    }
    if roles.is_empty() {
        return "<none>".to_string();
    }
    roles.into_iter().collect::<Vec<_>>().join(",")
}

fn node_address(node: &Node, kind: &str) -> String {
    node.status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .find(|a| a.type_ == kind)
        .map_or_else(|| "<none>".to_string(), |a| a.address.clone())
}

// ---------------------------------------------------------------------------
// Services, endpoints, endpoint slices
// ---------------------------------------------------------------------------

fn service_cells(service: &Service, now: DateTime<Utc>) -> Vec<Value> {
    let default_spec = ServiceSpec::default();
    let spec = service.spec.as_ref().unwrap_or(&default_spec);
    let service_type = spec.type_.as_deref().unwrap_or("ClusterIP");
    let cluster_ip = spec
        .cluster_ips
        .iter()
        .flatten()
        .next()
        .map(String::as_str)
        .or(spec.cluster_ip.as_deref());
    let ports = service_ports(spec.ports.as_deref().unwrap_or_default());
    vec![
        name_cell(&service.metadata),
        Value::from(service_type),
        Value::from(or_placeholder(cluster_ip, "<none>")),
        Value::from(external_ip(service_type, spec, service.status.as_ref())),
        Value::from(if ports.is_empty() {
            "<none>".to_string()
        } else {
            ports
        }),
        age_cell(&service.metadata, now),
        Value::from(format_labels(spec.selector.as_ref())),
    ]
}

fn external_ip(service_type: &str, spec: &ServiceSpec, status: Option<&ServiceStatus>) -> String {
    let external_ips = spec.external_ips.as_deref().unwrap_or_default();
    match service_type {
        "ClusterIP" | "NodePort" if external_ips.is_empty() => "<none>".to_string(),
        "ClusterIP" | "NodePort" => external_ips.join(","),
        "LoadBalancer" => {
            let mut all = load_balancer_addresses(status);
            all.extend(external_ips.iter().cloned());
            if all.is_empty() {
                "<pending>".to_string()
            } else {
                all.join(",")
            }
        }
        "ExternalName" => spec.external_name.clone().unwrap_or_default(),
        _ => "<unknown>".to_string(),
    }
}

/// Load-balancer ingress IPs (else hostnames), sorted and de-duplicated.
fn load_balancer_addresses(status: Option<&ServiceStatus>) -> Vec<String> {
    let ingress = status
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref());
    let addresses: BTreeSet<String> = ingress
        .into_iter()
        .flatten()
        .filter_map(|i| non_empty(i.ip.as_deref()).or(non_empty(i.hostname.as_deref())))
        .map(str::to_string)
        .collect();
    addresses.into_iter().collect()
}

/// `80/TCP`, or `80:30080/TCP` with a node port.
fn service_ports(ports: &[ServicePort]) -> String {
    let pieces: Vec<String> = ports
        .iter()
        .map(|p| {
            let protocol = p.protocol.as_deref().unwrap_or("TCP");
            match p.node_port.filter(|n| *n > 0) {
                Some(node_port) => format!("{}:{}/{}", p.port, node_port, protocol),
                None => format!("{}/{}", p.port, protocol),
            }
        })
        .collect();
    pieces.join(",")
}

fn endpoints_cells(endpoints: &Endpoints, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name_cell(&endpoints.metadata),
        Value::from(format_endpoints(
            endpoints.subsets.as_deref().unwrap_or_default(),
        )),
        age_cell(&endpoints.metadata, now),
    ]
}

/// Up to three `ip:port` entries, then `+ N more...`; `<none>` without subsets.
fn format_endpoints(subsets: &[EndpointSubset]) -> String {
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let entries = subsets.iter().flat_map(|subset| {
        let addresses = subset.addresses.as_deref().unwrap_or_default();
        let ports: Vec<Option<i32>> = match subset.ports.as_deref() {
            Some(ports) if !ports.is_empty() => ports.iter().map(|p| Some(p.port)).collect(),
            _ => vec![None],
        };
        ports.into_iter().flat_map(move |port| {
            addresses.iter().map(move |a| match port {
                Some(port) => join_host_port(&a.ip, port),
                None => a.ip.clone(),
            })
        })
    });
    with_more(first_few(entries))
}

fn endpoint_slice_cells(slice: &EndpointSlice, now: DateTime<Utc>) -> Vec<Value> {
    let ports = slice
        .ports
        .iter()
        .flatten()
        .map(|p| match (p.port, &p.name) {
            (Some(port), _) => port.to_string(),
            (None, Some(name)) => name.clone(),
            (None, None) => "*".to_string(),
        });
    let addresses = slice
        .endpoints
        .iter()
        .flat_map(|e| e.addresses.iter().cloned());
    vec![
        name_cell(&slice.metadata),
        Value::from(slice.address_type.as_str()),
        Value::from(unset_if_empty(with_more(first_few(ports)))),
        Value::from(unset_if_empty(with_more(first_few(addresses)))),
        age_cell(&slice.metadata, now),
    ]
}

fn unset_if_empty(text: String) -> String {
    if text.is_empty() {
        "<unset>".to_string()
    } else {
        text
    }
}

// ---------------------------------------------------------------------------
// Other core resources
// ---------------------------------------------------------------------------

fn namespace_cells(namespace: &Namespace, now: DateTime<Utc>) -> Vec<Value> {
    let phase = namespace.status.as_ref().and_then(|s| s.phase.as_deref());
    vec![
        name_cell(&namespace.metadata),
        Value::from(phase.unwrap_or_default()),
        age_cell(&namespace.metadata, now),
    ]
}

fn config_map_cells(config_map: &ConfigMap, now: DateTime<Utc>) -> Vec<Value> {
    let data = config_map.data.as_ref().map_or(0, BTreeMap::len);
    let binary = config_map.binary_data.as_ref().map_or(0, BTreeMap::len);
    vec![
        name_cell(&config_map.metadata),
        Value::from(data + binary),
        age_cell(&config_map.metadata, now),
    ]
}

fn secret_cells(secret: &Secret, now: DateTime<Utc>) -> Vec<Value> {
    // The API server folds stringData into data, so count the union of keys.
    let keys: BTreeSet<&String> = secret
        .data
        .iter()
        .flat_map(BTreeMap::keys)
        .chain(secret.string_data.iter().flat_map(BTreeMap::keys))
        .collect();
    vec![
        name_cell(&secret.metadata),
        Value::from(secret.type_.as_deref().unwrap_or("Opaque")),
        Value::from(keys.len()),
        age_cell(&secret.metadata, now),
    ]
}

/// kubectl's short access modes: RWO, ROX, RWX, RWOP.
fn access_modes(modes: Option<&Vec<String>>) -> String {
    let short = |m: &str| match m {
        "ReadWriteOnce" => "RWO",
        "ReadOnlyMany" => "ROX",
        "ReadWriteMany" => "RWX",
        "ReadWriteOncePod" => "RWOP",
        _ => "",
    };
    modes.into_iter().flatten().map(|m| short(m)).filter(|m| !m.is_empty()).collect::<Vec<_>>().join(",")
}

fn storage(q: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>) -> String {
    q.and_then(|m| m.get("storage")).map(|q| q.0.clone()).unwrap_or_default()
}

fn pv_cells(pv: &k8s_openapi::api::core::v1::PersistentVolume, now: DateTime<Utc>) -> Vec<Value> {
    let spec = pv.spec.clone().unwrap_or_default();
    let status = pv.status.clone().unwrap_or_default();
    let claim = spec
        .claim_ref
        .as_ref()
        .map(|c| format!("{}/{}", c.namespace.as_deref().unwrap_or_default(), c.name.as_deref().unwrap_or_default()))
        .unwrap_or_default();
    vec![
        name_cell(&pv.metadata),
        Value::from(storage(spec.capacity.as_ref())),
        Value::from(access_modes(spec.access_modes.as_ref())),
        Value::from(spec.persistent_volume_reclaim_policy.unwrap_or_default()),
        Value::from(status.phase.unwrap_or_default()),
        Value::from(claim),
        Value::from(spec.storage_class_name.unwrap_or_default()),
        Value::from(spec.volume_attributes_class_name.unwrap_or_else(|| "<unset>".into())),
        Value::from(status.reason.unwrap_or_default()),
        age_cell(&pv.metadata, now),
    ]
}

fn pvc_cells(pvc: &k8s_openapi::api::core::v1::PersistentVolumeClaim, now: DateTime<Utc>) -> Vec<Value> {
    let spec = pvc.spec.clone().unwrap_or_default();
    let status = pvc.status.clone().unwrap_or_default();
    let phase = if pvc.metadata.deletion_timestamp.is_some() { "Terminating".to_string() } else { status.phase.unwrap_or_default() };
    vec![
        name_cell(&pvc.metadata),
        Value::from(phase),
        Value::from(spec.volume_name.unwrap_or_default()),
        Value::from(storage(status.capacity.as_ref())),
        Value::from(access_modes(status.access_modes.as_ref())),
        Value::from(spec.storage_class_name.unwrap_or_default()),
        Value::from(spec.volume_attributes_class_name.unwrap_or_else(|| "<unset>".into())),
        age_cell(&pvc.metadata, now),
    ]
}

fn storage_class_cells(sc: &k8s_openapi::api::storage::v1::StorageClass, now: DateTime<Utc>) -> Vec<Value> {
    let mut name = sc.metadata.name.clone().unwrap_or_default();
    let default = sc.metadata.annotations.as_ref().and_then(|a| a.get("storageclass.kubernetes.io/is-default-class")).map(String::as_str);
    if default == Some("true") {
        name.push_str(" (default)");
    }
    vec![
        Value::from(name),
        Value::from(sc.provisioner.clone()),
        Value::from(sc.reclaim_policy.clone().unwrap_or_else(|| "Delete".into())),
        Value::from(sc.volume_binding_mode.clone().unwrap_or_else(|| "Immediate".into())),
        Value::from(sc.allow_volume_expansion.unwrap_or(false)),
        age_cell(&sc.metadata, now),
    ]
}

fn service_account_cells(account: &ServiceAccount, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name_cell(&account.metadata),
        Value::from(account.secrets.as_ref().map_or(0, Vec::len)),
        age_cell(&account.metadata, now),
    ]
}

fn event_cells(event: &Event, now: DateTime<Utc>) -> Vec<Value> {
    let first_seen = match &event.first_timestamp {
        Some(t) => since(Some(t.0), now),
        None => since(event.event_time.as_ref().map(|t| t.0), now),
    };
    let mut last_seen = match &event.last_timestamp {
        Some(t) => since(Some(t.0), now),
        None => first_seen.clone(),
    };
    let mut count = event.count.unwrap_or(0);
    if let Some(series) = &event.series {
        last_seen = since(series.last_observed_time.as_ref().map(|t| t.0), now);
        count = series.count.unwrap_or(0);
    } else if count == 0 {
        count = 1; // singleton events of the new API carry no count
    }
    let involved = &event.involved_object;
    let kind = involved.kind.as_deref().unwrap_or_default().to_lowercase();
    let object = match non_empty(involved.name.as_deref()) {
        Some(name) => format!("{kind}/{name}"),
        None => kind,
    };
    vec![
        Value::from(last_seen),
        Value::from(event.type_.as_deref().unwrap_or_default()),
        Value::from(event.reason.as_deref().unwrap_or_default()),
        Value::from(object),
        Value::from(involved.field_path.as_deref().unwrap_or_default()),
        Value::from(event_source(event)),
        Value::from(event.message.as_deref().unwrap_or_default().trim()),
        Value::from(first_seen),
        Value::from(i64::from(count)),
        name_cell(&event.metadata),
    ]
}

/// `component, host`, falling back on the reporting controller and instance.
fn event_source(event: &Event) -> String {
    let source = event.source.as_ref();
    let component = non_empty(source.and_then(|s| s.component.as_deref()))
        .or(event.reporting_component.as_deref())
        .unwrap_or_default();
    let host = non_empty(source.and_then(|s| s.host.as_deref()))
        .or(event.reporting_instance.as_deref())
        .unwrap_or_default();
    if host.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {host}")
    }
}

/// Upstream's printer: the True conditions joined by commas, "Issued" once there is a certificate, else "Pending".
fn csr_cells(csr: &CertificateSigningRequest, now: DateTime<Utc>) -> Vec<Value> {
    let status = csr.status.as_ref();
    let mut conds: Vec<String> =
        status.and_then(|s| s.conditions.as_ref()).into_iter().flatten().filter(|c| c.status == "True").map(|c| c.type_.clone()).collect();
    if status.and_then(|s| s.certificate.as_ref()).is_some_and(|c| !c.0.is_empty()) {
        conds.push("Issued".into());
    }
    let condition = if conds.is_empty() { "Pending".to_string() } else { conds.join(",") };
    let requested = csr.spec.expiration_seconds.map(|s| human_duration(Duration::seconds(s as i64))).unwrap_or_else(|| "<none>".into());
    vec![
        name_cell(&csr.metadata),
        age_cell(&csr.metadata, now),
        Value::from(csr.spec.signer_name.clone()),
        Value::from(csr.spec.username.clone().unwrap_or_default()),
        Value::from(requested),
        Value::from(condition),
    ]
}

fn lease_cells(lease: &Lease, now: DateTime<Utc>) -> Vec<Value> {
    let holder = lease
        .spec
        .as_ref()
        .and_then(|s| s.holder_identity.as_deref());
    vec![
        name_cell(&lease.metadata),
        Value::from(holder.unwrap_or_default()),
        age_cell(&lease.metadata, now),
    ]
}

// ---------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------

fn deployment_cells(deployment: &Deployment, now: DateTime<Utc>) -> Vec<Value> {
    let spec = deployment.spec.as_ref();
    let status = deployment.status.as_ref();
    let desired = spec.and_then(|s| s.replicas).unwrap_or(1);
    let ready = status.and_then(|s| s.ready_replicas).unwrap_or(0);
    let (names, images) = container_cells(spec.and_then(|s| s.template.spec.as_ref()));
    let selector = label_selector_string(spec.map(|s| &s.selector))
        .unwrap_or_else(|()| "<invalid>".to_string());
    vec![
        name_cell(&deployment.metadata),
        Value::from(format!("{ready}/{desired}")),
        int_cell(status.and_then(|s| s.updated_replicas)),
        int_cell(status.and_then(|s| s.available_replicas)),
        age_cell(&deployment.metadata, now),
        names,
        images,
        Value::from(selector),
    ]
}

fn replica_set_cells(replica_set: &ReplicaSet, now: DateTime<Utc>) -> Vec<Value> {
    let spec = replica_set.spec.as_ref();
    let status = replica_set.status.as_ref();
    let template = spec
        .and_then(|s| s.template.as_ref())
        .and_then(|t| t.spec.as_ref());
    let (names, images) = container_cells(template);
    vec![
        name_cell(&replica_set.metadata),
        int_cell(Some(spec.and_then(|s| s.replicas).unwrap_or(1))),
        int_cell(status.map(|s| s.replicas)),
        int_cell(status.and_then(|s| s.ready_replicas)),
        age_cell(&replica_set.metadata, now),
        names,
        images,
        Value::from(format_label_selector(spec.map(|s| &s.selector))),
    ]
}

fn stateful_set_cells(set: &StatefulSet, now: DateTime<Utc>) -> Vec<Value> {
    let spec = set.spec.as_ref();
    let status = set.status.as_ref();
    let (names, images) = container_cells(spec.and_then(|s| s.template.spec.as_ref()));
    vec![
        name_cell(&set.metadata),
        Value::from(format!(
            "{}/{}",
            status.and_then(|s| s.ready_replicas).unwrap_or(0),
            spec.and_then(|s| s.replicas).unwrap_or(1)
        )),
        age_cell(&set.metadata, now),
        names,
        images,
    ]
}

fn controller_revision_cells(rev: &ControllerRevision, now: DateTime<Utc>) -> Vec<Value> {
    let controller = rev
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
        .map(|o| {
            let group = o.api_version.split_once('/').map(|(g, _)| g).unwrap_or_default();
            let kind = if group.is_empty() { o.kind.to_lowercase() } else { format!("{}.{group}", o.kind.to_lowercase()) };
            format!("{kind}/{}", o.name)
        })
        .unwrap_or_else(|| "<none>".into());
    vec![name_cell(&rev.metadata), Value::from(controller), Value::from(rev.revision), age_cell(&rev.metadata, now)]
}

fn daemon_set_cells(daemon_set: &DaemonSet, now: DateTime<Utc>) -> Vec<Value> {
    let spec = daemon_set.spec.as_ref();
    let status = daemon_set.status.as_ref();
    let pod_spec = spec.and_then(|s| s.template.spec.as_ref());
    let (names, images) = container_cells(pod_spec);
    vec![
        name_cell(&daemon_set.metadata),
        int_cell(status.map(|s| s.desired_number_scheduled)),
        int_cell(status.map(|s| s.current_number_scheduled)),
        int_cell(status.map(|s| s.number_ready)),
        int_cell(status.and_then(|s| s.updated_number_scheduled)),
        int_cell(status.and_then(|s| s.number_available)),
        Value::from(format_labels(
            pod_spec.and_then(|s| s.node_selector.as_ref()),
        )),
        age_cell(&daemon_set.metadata, now),
        names,
        images,
        Value::from(format_label_selector(spec.map(|s| &s.selector))),
    ]
}

fn priority_class_cells(pc: &PriorityClass, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name_cell(&pc.metadata),
        Value::from(pc.value),
        Value::from(pc.global_default.unwrap_or(false)),
        age_cell(&pc.metadata, now),
        Value::from(pc.preemption_policy.as_deref().unwrap_or("PreemptLowerPriority")),
    ]
}

fn pdb_cells(pdb: &PodDisruptionBudget, now: DateTime<Utc>) -> Vec<Value> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let show = |v: Option<&IntOrString>| match v {
        Some(IntOrString::Int(n)) => n.to_string(),
        Some(IntOrString::String(s)) => s.clone(),
        None => "N/A".into(),
    };
    let spec = pdb.spec.as_ref();
    vec![
        name_cell(&pdb.metadata),
        Value::from(show(spec.and_then(|s| s.min_available.as_ref()))),
        Value::from(show(spec.and_then(|s| s.max_unavailable.as_ref()))),
        int_cell(pdb.status.as_ref().map(|s| s.disruptions_allowed)),
        age_cell(&pdb.metadata, now),
    ]
}

fn cron_job_cells(cj: &CronJob, now: DateTime<Utc>) -> Vec<Value> {
    let spec = cj.spec.as_ref();
    let job_spec = spec.and_then(|s| s.job_template.spec.as_ref());
    let (names, images) = container_cells(job_spec.and_then(|s| s.template.spec.as_ref()));
    let status = cj.status.as_ref();
    vec![
        name_cell(&cj.metadata),
        Value::from(spec.map(|s| s.schedule.as_str()).unwrap_or_default()),
        Value::from(or_placeholder(spec.and_then(|s| s.time_zone.as_deref()), "<none>")),
        Value::from(match spec.and_then(|s| s.suspend) {
            Some(true) => "True",
            Some(false) => "False",
            None => "<unset>",
        }),
        Value::from(status.and_then(|s| s.active.as_ref()).map_or(0, Vec::len) as i64),
        Value::from(status.and_then(|s| s.last_schedule_time.as_ref()).map_or_else(|| "<none>".to_string(), |t| human_duration(now - t.0))),
        age_cell(&cj.metadata, now),
        names,
        images,
        Value::from(job_spec.and_then(|s| s.selector.as_ref()).map_or_else(|| "<none>".to_string(), |s| format_label_selector(Some(s)))),
    ]
}

fn job_cells(job: &Job, now: DateTime<Utc>) -> Vec<Value> {
    let spec = job.spec.as_ref();
    let (names, images) = container_cells(spec.and_then(|s| s.template.spec.as_ref()));
    vec![
        name_cell(&job.metadata),
        Value::from(job_status(job)),
        Value::from(job_completions(job)),
        Value::from(job_duration(job, now)),
        age_cell(&job.metadata, now),
        names,
        images,
        Value::from(format_label_selector(
            spec.and_then(|s| s.selector.as_ref()),
        )),
    ]
}

fn job_status(job: &Job) -> &'static str {
    let conds = job
        .status
        .iter()
        .flat_map(|s| s.conditions.iter().flatten());
    let is = |ty: &str| {
        first_condition_true(
            conds.clone().map(|c| (c.type_.as_str(), c.status.as_str())),
            ty,
        )
    };
    if is("Complete") {
        "Complete"
    } else if is("Failed") {
        "Failed"
    } else if job.metadata.deletion_timestamp.is_some() {
        "Terminating"
    } else if is("Suspended") {
        "Suspended"
    } else if is("FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    }
}

/// `succeeded/completions`; without completions `n/1`, or `n/1 of P` when parallel.
fn job_completions(job: &Job) -> String {
    let succeeded = job.status.as_ref().and_then(|s| s.succeeded).unwrap_or(0);
    let spec = job.spec.as_ref();
    if let Some(completions) = spec.and_then(|s| s.completions) {
        return format!("{succeeded}/{completions}");
    }
    match spec.and_then(|s| s.parallelism).unwrap_or(0) {
        parallelism if parallelism > 1 => format!("{succeeded}/1 of {parallelism}"),
        _ => format!("{succeeded}/1"),
    }
}

/// Run time so far, or start to completion; empty before the job starts.
fn job_duration(job: &Job, now: DateTime<Utc>) -> String {
    let status = job.status.as_ref();
    let start = status.and_then(|s| s.start_time.as_ref()).map(|t| t.0);
    let end = status.and_then(|s| s.completion_time.as_ref()).map(|t| t.0);
    match (start, end) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now - start),
        (Some(start), Some(end)) => human_duration(end - start),
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        at("2024-05-01T12:00:00Z")
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// `now` minus the given seconds, as an RFC 3339 string.
    fn ago(seconds: i64) -> String {
        (now() - Duration::seconds(seconds)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    }

    fn column_names(group: &str, plural: &str) -> Vec<String> {
        column_definitions(group, plural)
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    }

    fn cells(group: &str, plural: &str, obj: Value) -> Vec<Value> {
        let cells = row_cells(group, plural, &obj, now());
        assert_eq!(
            cells.len(),
            column_definitions(group, plural).len(),
            "{group}/{plural}"
        );
        cells
    }

    fn container_status(
        name: &str,
        ready: bool,
        restarts: i32,
        state: Value,
        last_state: Value,
    ) -> Value {
        json!({
            "name": name, "image": "nginx:1.27", "imageID": "docker.io/library/nginx@sha256:0d17",
            "ready": ready, "restartCount": restarts, "started": ready,
            "state": state, "lastState": last_state,
        })
    }

    fn pod(name: &str, status: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default", "creationTimestamp": "2024-04-29T09:00:00Z"},
            "spec": {"nodeName": "node-a", "containers": [{"name": "web", "image": "nginx:1.27"}]},
            "status": status,
        })
    }

    fn running_pod(name: &str) -> Value {
        pod(
            name,
            json!({
                "phase": "Running", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}],
                "conditions": [
                    {"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"},
                    {"type": "ContainersReady", "status": "True"}, {"type": "PodScheduled", "status": "True"},
                ],
                "containerStatuses": [container_status(
                    "web", true, 1,
                    json!({"running": {"startedAt": ago(300)}}),
                    json!({"terminated": {"exitCode": 137, "reason": "OOMKilled", "finishedAt": ago(300)}}),
                )],
            }),
        )
    }

    #[test]
    fn human_age_matches_upstream() {
        let age = |secs: i64| human_age(Some(&ago(secs)), now());
        assert_eq!(age(0), "0s");
        assert_eq!(age(59), "59s");
        assert_eq!(age(119), "119s");
        assert_eq!(age(200), "3m20s");
        assert_eq!(age(300), "5m");
        assert_eq!(age(2 * 3600), "120m"); // upstream prints minutes below 3h
        assert_eq!(age(3 * 3600), "3h");
        assert_eq!(age(3 * 3600 + 25 * 60), "3h25m");
        assert_eq!(age(20 * 3600), "20h");
        assert_eq!(age(51 * 3600), "2d3h");
        assert_eq!(age(5 * 86400), "5d");
        assert_eq!(age(12 * 86400), "12d");
        assert_eq!(age(400 * 86400), "400d");
        assert_eq!(age(3 * 365 * 86400 + 10 * 86400), "3y10d");
        assert_eq!(age(10 * 365 * 86400), "10y");
        assert_eq!(age(-1), "0s");
        assert_eq!(age(-5), "<invalid>");
        assert_eq!(human_age(None, now()), "<unknown>");
        assert_eq!(human_age(Some("not a time"), now()), "<unknown>");
        assert_eq!(human_age(Some("2024-05-01T11:59:30.123456Z"), now()), "29s");
    }

    #[test]
    fn pod_columns_match_upstream() {
        assert_eq!(
            column_names("", "pods"),
            [
                "Name",
                "Ready",
                "Status",
                "Restarts",
                "Age",
                "IP",
                "Node",
                "Nominated Node",
                "Readiness Gates"
            ]
        );
        let defs = column_definitions("", "pods");
        assert_eq!(defs[0]["format"], "name");
        assert_eq!(defs[3]["type"], "string");
        assert_eq!(defs[4]["priority"], 0);
        assert_eq!(defs[5]["priority"], 1);
        let keys: Vec<&String> = defs[0].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["name", "type", "format", "description", "priority"]);
    }

    #[test]
    fn running_pod_with_a_restart() {
        assert_eq!(
            cells("", "pods", running_pod("web-7d4b9c")),
            json!([
                "web-7d4b9c",
                "1/1",
                "Running",
                "1 (5m ago)",
                "2d3h",
                "10.244.1.5",
                "node-a",
                "<none>",
                "<none>"
            ])
            .as_array()
            .unwrap()
            .clone()
        );
    }

    #[test]
    fn pending_pod() {
        let mut obj = pod(
            "pending",
            json!({
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable"}],
            }),
        );
        obj["metadata"]["creationTimestamp"] = json!(ago(30));
        obj["spec"].as_object_mut().unwrap().remove("nodeName");
        let row = cells("", "pods", obj);
        assert_eq!(
            row,
            json!([
                "pending", "0/1", "Pending", "0", "30s", "<none>", "<none>", "<none>", "<none>"
            ])
            .as_array()
            .unwrap()
            .clone()
        );
    }

    #[test]
    fn scheduling_gated_pod() {
        let obj = pod(
            "gated",
            json!({
                "phase": "Pending",
                "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}],
            }),
        );
        assert_eq!(cells("", "pods", obj)[2], "SchedulingGated");
    }

    #[test]
    fn terminating_pod() {
        let mut obj = running_pod("going");
        obj["metadata"]["deletionTimestamp"] = json!(ago(10));
        let row = cells("", "pods", obj);
        assert_eq!(row[1], "1/1");
        assert_eq!(row[2], "Terminating");

        let mut lost = running_pod("lost");
        lost["metadata"]["deletionTimestamp"] = json!(ago(10));
        lost["status"]["reason"] = json!("NodeLost");
        assert_eq!(cells("", "pods", lost)[2], "Unknown");
    }

    #[test]
    fn crash_loop_back_off_pod() {
        let obj = pod(
            "crashy",
            json!({
                "phase": "Running",
                "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "False"}],
                "containerStatuses": [container_status(
                    "web", false, 5,
                    json!({"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 2m40s"}}),
                    json!({"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": ago(40)}}),
                )],
            }),
        );
        let row = cells("", "pods", obj);
        assert_eq!(row[1], "0/1");
        assert_eq!(row[2], "CrashLoopBackOff");
        assert_eq!(row[3], "5 (40s ago)");
    }

    #[test]
    fn initializing_pod() {
        let mut obj = pod(
            "init",
            json!({
                "phase": "Pending",
                "conditions": [{"type": "Initialized", "status": "False"}],
                "initContainerStatuses": [
                    container_status("init-db", false, 0, json!({"terminated": {"exitCode": 0, "reason": "Completed"}}), json!({})),
                    container_status("init-cache", false, 2, json!({"running": {}}), json!({})),
                ],
                "containerStatuses": [container_status("web", false, 0, json!({"waiting": {"reason": "PodInitializing"}}), json!({}))],
            }),
        );
        obj["spec"]["initContainers"] = json!([{"name": "init-db"}, {"name": "init-cache"}]);
        let row = cells("", "pods", obj.clone());
        assert_eq!(row[1], "0/1");
        assert_eq!(row[2], "Init:1/2");
        assert_eq!(row[3], "2");

        obj["status"]["initContainerStatuses"][1]["state"] =
            json!({"waiting": {"reason": "ImagePullBackOff"}});
        assert_eq!(cells("", "pods", obj.clone())[2], "Init:ImagePullBackOff");

        obj["status"]["initContainerStatuses"][1]["state"] = json!({"terminated": {"exitCode": 3}});
        assert_eq!(cells("", "pods", obj)[2], "Init:ExitCode:3");
    }

    #[test]
    fn completed_pod_and_sidecars() {
        let done = pod(
            "done",
            json!({
                "phase": "Succeeded",
                "containerStatuses": [container_status("web", false, 0, json!({"terminated": {"exitCode": 0, "reason": "Completed"}}), json!({}))],
            }),
        );
        let row = cells("", "pods", done);
        assert_eq!(row[1], "0/1");
        assert_eq!(row[2], "Completed");

        let mut sidecar = running_pod("with-sidecar");
        sidecar["spec"]["initContainers"] =
            json!([{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}]);
        sidecar["status"]["initContainerStatuses"] = json!([container_status(
            "proxy",
            true,
            0,
            json!({"running": {}}),
            json!({})
        )]);
        let row = cells("", "pods", sidecar);
        assert_eq!(row[1], "2/2");
        assert_eq!(row[2], "Running");
    }

    #[test]
    fn pod_readiness_gates() {
        let mut obj = running_pod("gates");
        obj["spec"]["readinessGates"] =
            json!([{"conditionType": "example.com/lb"}, {"conditionType": "example.com/dns"}]);
        obj["status"]["conditions"]
            .as_array_mut()
            .unwrap()
            .push(json!({"type": "example.com/lb", "status": "True"}));
        obj["status"]["nominatedNodeName"] = json!("node-b");
        let row = cells("", "pods", obj);
        assert_eq!(row[7], "node-b");
        assert_eq!(row[8], "1/2");
    }

    #[test]
    fn undecodable_pod_falls_back_to_raw_fields() {
        let mut obj = running_pod("broken");
        obj["spec"]["containers"] = json!("not a list");
        let row = cells("", "pods", obj);
        assert_eq!(row[0], "broken");
        assert_eq!(row[1], "<unknown>");
        assert_eq!(row[4], "2d3h");
        assert_eq!(row[8], "<unknown>");
        let row = cells("", "pods", json!("garbage"));
        assert_eq!(row[0], "");
        assert_eq!(row[4], "<unknown>");
    }

    fn node(name: &str, labels: Value, unschedulable: bool, ready: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": labels, "creationTimestamp": ago(12 * 86400)},
            "spec": {"unschedulable": unschedulable},
            "status": {
                "conditions": [
                    {"type": "MemoryPressure", "status": "False"},
                    {"type": "Ready", "status": ready, "reason": "KubeletReady"},
                ],
                "addresses": [{"type": "InternalIP", "address": "192.168.1.10"}, {"type": "Hostname", "address": name}],
                "nodeInfo": {
                    "architecture": "amd64", "bootID": "b", "containerRuntimeVersion": "containerd://1.7.13",
                    "kernelVersion": "6.1.0-18-amd64", "kubeProxyVersion": "", "kubeletVersion": "v1.32.0",
                    "machineID": "m", "operatingSystem": "linux", "osImage": "Debian GNU/Linux 12 (bookworm)",
                    "systemUUID": "u",
                },
            },
        })
    }

    #[test]
    fn nodes() {
        assert_eq!(
            column_names("", "nodes"),
            [
                "Name",
                "Status",
                "Roles",
                "Age",
                "Version",
                "Internal-IP",
                "External-IP",
                "OS-Image",
                "Kernel-Version",
                "Container-Runtime"
            ]
        );
        let ready = node(
            "cp-1",
            json!({"node-role.kubernetes.io/control-plane": "", "kubernetes.io/role": "master"}),
            false,
            "True",
        );
        assert_eq!(
            cells("", "nodes", ready),
            json!([
                "cp-1",
                "Ready",
                "control-plane,master",
                "12d",
                "v1.32.0",
                "192.168.1.10",
                "<none>",
                "Debian GNU/Linux 12 (bookworm)",
                "6.1.0-18-amd64",
                "containerd://1.7.13"
            ])
            .as_array()
            .unwrap()
            .clone()
        );
        let cordoned = node(
            "worker-1",
            json!({"kubernetes.io/hostname": "worker-1"}),
            true,
            "True",
        );
        let row = cells("", "nodes", cordoned);
        assert_eq!(row[1], "Ready,SchedulingDisabled");
        assert_eq!(row[2], "<none>");
        assert_eq!(
            cells("", "nodes", node("w2", json!({}), false, "Unknown"))[1],
            "NotReady"
        );
        let bare = json!({"metadata": {"name": "bare"}});
        assert_eq!(
            cells("", "nodes", bare),
            json!([
                "bare",
                "Unknown",
                "<none>",
                "<unknown>",
                "",
                "<none>",
                "<none>",
                "<unknown>",
                "<unknown>",
                "<unknown>"
            ])
            .as_array()
            .unwrap()
            .clone()
        );
    }

    #[test]
    fn services() {
        assert_eq!(
            column_names("", "services"),
            [
                "Name",
                "Type",
                "Cluster-IP",
                "External-IP",
                "Port(s)",
                "Age",
                "Selector"
            ]
        );
        let dns = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "kube-dns", "namespace": "kube-system", "creationTimestamp": ago(5 * 86400)},
            "spec": {
                "type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                "ports": [{"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53},
                          {"name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53}],
                "selector": {"k8s-app": "kube-dns"},
            },
        });
        assert_eq!(
            cells("", "services", dns),
            json!([
                "kube-dns",
                "ClusterIP",
                "10.96.0.10",
                "<none>",
                "53/UDP,53/TCP",
                "5d",
                "k8s-app=kube-dns"
            ])
            .as_array()
            .unwrap()
            .clone()
        );
        let node_port = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(90)},
            "spec": {"type": "NodePort", "clusterIP": "10.96.12.7",
                     "ports": [{"port": 80, "nodePort": 30080, "targetPort": 8080}],
                     "selector": {"app": "web", "tier": "frontend"}},
        });
        assert_eq!(
            cells("", "services", node_port),
            json!([
                "web",
                "NodePort",
                "10.96.12.7",
                "<none>",
                "80:30080/TCP",
                "90s",
                "app=web,tier=frontend"
            ])
            .as_array()
            .unwrap()
            .clone()
        );
        let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "ports": [{"port": 443, "nodePort": 31443}]}});
        assert_eq!(cells("", "services", lb.clone())[3], "<pending>");
        let mut lb_ready = lb;
        lb_ready["status"] = json!({"loadBalancer": {"ingress": [{"ip": "203.0.113.9"}, {"hostname": "lb.example.com"}]}});
        lb_ready["spec"]["externalIPs"] = json!(["198.51.100.1"]);
        assert_eq!(
            cells("", "services", lb_ready)[3],
            "203.0.113.9,lb.example.com,198.51.100.1"
        );
        let external = json!({"metadata": {"name": "ext"}, "spec": {"type": "ExternalName", "externalName": "db.example.com"}});
        let row = cells("", "services", external);
        assert_eq!(
            (
                row[2].as_str(),
                row[3].as_str(),
                row[4].as_str(),
                row[6].as_str()
            ),
            (
                Some("<none>"),
                Some("db.example.com"),
                Some("<none>"),
                Some("<none>")
            )
        );
    }

    #[test]
    fn endpoints_truncate_after_three() {
        let addresses: Vec<Value> = (1..=5)
            .map(|i| json!({"ip": format!("10.0.0.{i}")}))
            .collect();
        let obj = json!({"metadata": {"name": "web"}, "subsets": [{"addresses": addresses, "ports": [{"port": 80}]}]});
        assert_eq!(
            cells("", "endpoints", obj)[1],
            "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 2 more..."
        );
        let v6 = json!({"metadata": {"name": "v6"}, "subsets": [{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]});
        assert_eq!(cells("", "endpoints", v6)[1], "[fd00::1]:80");
        let headless = json!({"metadata": {"name": "h"}, "subsets": [{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}]}]});
        assert_eq!(cells("", "endpoints", headless)[1], "10.0.0.1,10.0.0.2");
        assert_eq!(
            cells("", "endpoints", json!({"metadata": {"name": "none"}}))[1],
            "<none>"
        );
    }

    #[test]
    fn endpoint_slices() {
        assert_eq!(
            column_names("discovery.k8s.io", "endpointslices"),
            ["Name", "AddressType", "Ports", "Endpoints", "Age"]
        );
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "web-x7k2p", "creationTimestamp": ago(600)},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"]}],
            "ports": [{"name": "http", "port": 80}, {"name": "metrics"}],
        });
        assert_eq!(
            cells("discovery.k8s.io", "endpointslices", slice),
            json!([
                "web-x7k2p",
                "IPv4",
                "80,metrics",
                "10.0.0.1,10.0.0.2",
                "10m"
            ])
            .as_array()
            .unwrap()
            .clone()
        );
        let empty = json!({"metadata": {"name": "e"}, "addressType": "IPv6", "endpoints": []});
        let row = cells("discovery.k8s.io", "endpointslices", empty);
        assert_eq!(
            (row[2].as_str(), row[3].as_str()),
            (Some("<unset>"), Some("<unset>"))
        );
    }

    #[test]
    fn events() {
        assert_eq!(
            column_names("", "events"),
            [
                "Last Seen",
                "Type",
                "Reason",
                "Object",
                "Subobject",
                "Source",
                "Message",
                "First Seen",
                "Count",
                "Name"
            ]
        );
        let event = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web-1.17c4b2", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "fieldPath": "spec.containers{web}"},
            "reason": "BackOff", "message": "  Back-off restarting failed container  ", "type": "Warning",
            "source": {"component": "kubelet", "host": "node-a"},
            "firstTimestamp": ago(600), "lastTimestamp": ago(120), "count": 3,
        });
        assert_eq!(
            cells("", "events", event),
            json!([
                "2m",
                "Warning",
                "BackOff",
                "pod/web-1",
                "spec.containers{web}",
                "kubelet, node-a",
                "Back-off restarting failed container",
                "10m",
                3,
                "web-1.17c4b2"
            ])
            .as_array()
            .unwrap()
            .clone()
        );
        let new_style = json!({
            "metadata": {"name": "n"}, "involvedObject": {"kind": "Node"}, "type": "Normal",
            "eventTime": format!("{}", (now() - Duration::seconds(45)).format("%Y-%m-%dT%H:%M:%S%.6fZ")),
            "reportingComponent": "skiff-scheduler",
        });
        let row = cells("", "events", new_style);
        assert_eq!(
            (row[0].as_str(), row[3].as_str(), row[5].as_str()),
            (Some("45s"), Some("node"), Some("skiff-scheduler"))
        );
        assert_eq!(row[8], 1);
    }

    #[test]
    fn deployments() {
        assert_eq!(
            column_names("apps", "deployments"),
            [
                "Name",
                "Ready",
                "Up-to-date",
                "Available",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let deployment = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "creationTimestamp": ago(3 * 3600)},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                    {"name": "web", "image": "nginx:1.27"}, {"name": "log", "image": "busybox:1.36"}]}},
            },
            "status": {"replicas": 3, "updatedReplicas": 3, "readyReplicas": 2, "availableReplicas": 2},
        });
        assert_eq!(
            cells("apps", "deployments", deployment),
            json!([
                "web",
                "2/3",
                3,
                2,
                "3h",
                "web,log",
                "nginx:1.27,busybox:1.36",
                "app=web"
            ])
            .as_array()
            .unwrap()
            .clone()
        );
    }

    #[test]
    fn replica_sets_and_daemon_sets() {
        let rs = json!({
            "metadata": {"name": "web-5d8f", "creationTimestamp": ago(60)},
            "spec": {"selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d8f"}},
                     "template": {"spec": {"containers": [{"name": "web", "image": "nginx:1.27"}]}}},
            "status": {"replicas": 1},
        });
        assert_eq!(
            cells("apps", "replicasets", rs),
            json!([
                "web-5d8f",
                1,
                1,
                0,
                "60s",
                "web",
                "nginx:1.27",
                "app=web,pod-template-hash=5d8f"
            ])
            .as_array()
            .unwrap()
            .clone()
        );
        let sts = json!({
            "metadata": {"name": "db", "creationTimestamp": ago(120)},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "db"}}, "serviceName": "db",
                     "template": {"spec": {"containers": [{"name": "pg", "image": "postgres:16"}]}}},
            "status": {"replicas": 2, "readyReplicas": 1},
        });
        assert_eq!(cells("apps", "statefulsets", sts), json!(["db", "1/3", "2m", "pg", "postgres:16"]).as_array().unwrap().clone());
        let rev = json!({
            "metadata": {"name": "db-5d8f", "creationTimestamp": ago(120),
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "u", "controller": true}]},
            "revision": 2,
        });
        assert_eq!(cells("apps", "controllerrevisions", rev), json!(["db-5d8f", "statefulset.apps/db", 2, "2m"]).as_array().unwrap().clone());
        let pc = json!({"metadata": {"name": "high", "creationTimestamp": ago(60)}, "value": 1000, "globalDefault": true});
        assert_eq!(cells("scheduling.k8s.io", "priorityclasses", pc), json!(["high", 1000, true, "60s", "PreemptLowerPriority"]).as_array().unwrap().clone());
        let pdb = json!({
            "metadata": {"name": "web", "creationTimestamp": ago(60)},
            "spec": {"minAvailable": "50%", "selector": {"matchLabels": {"app": "web"}}},
            "status": {"disruptionsAllowed": 1, "currentHealthy": 3, "desiredHealthy": 2, "expectedPods": 3},
        });
        assert_eq!(cells("policy", "poddisruptionbudgets", pdb), json!(["web", "50%", "N/A", 1, "60s"]).as_array().unwrap().clone());
        let cj = json!({
            "metadata": {"name": "backup", "creationTimestamp": ago(3600)},
            "spec": {"schedule": "*/5 * * * *", "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "b", "image": "busybox"}]}}}}},
            "status": {"active": [{"name": "backup-1"}], "lastScheduleTime": ago(120)},
        });
        assert_eq!(
            cells("batch", "cronjobs", cj),
            json!(["backup", "*/5 * * * *", "<none>", "<unset>", 1, "2m", "60m", "b", "busybox", "<none>"]).as_array().unwrap().clone()
        );
        let ds = json!({
            "metadata": {"name": "proxy", "creationTimestamp": ago(86400)},
            "spec": {"selector": {"matchLabels": {"k8s-app": "proxy"}},
                     "template": {"spec": {"nodeSelector": {"kubernetes.io/os": "linux"},
                                           "containers": [{"name": "proxy", "image": "skiff/netproxy:0.1"}]}}},
            "status": {"desiredNumberScheduled": 2, "currentNumberScheduled": 2, "numberReady": 1,
                       "numberMisscheduled": 0, "updatedNumberScheduled": 2, "numberAvailable": 1},
        });
        assert_eq!(
            cells("apps", "daemonsets", ds),
            json!([
                "proxy",
                2,
                2,
                1,
                2,
                1,
                "kubernetes.io/os=linux",
                "24h",
                "proxy",
                "skiff/netproxy:0.1",
                "k8s-app=proxy"
            ])
            .as_array()
            .unwrap()
            .clone()
        );
    }

    #[test]
    fn jobs() {
        assert_eq!(
            column_names("batch", "jobs"),
            [
                "Name",
                "Status",
                "Completions",
                "Duration",
                "Age",
                "Containers",
                "Images",
                "Selector"
            ]
        );
        let done = json!({
            "apiVersion": "batch/v1", "kind": "Job",
            "metadata": {"name": "pi", "creationTimestamp": ago(400)},
            "spec": {"completions": 1, "parallelism": 1,
                     "selector": {"matchLabels": {"batch.kubernetes.io/controller-uid": "6f1c"}},
                     "template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "pi", "image": "perl:5.34"}]}}},
            "status": {"startTime": ago(390), "completionTime": ago(365), "succeeded": 1,
                       "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]},
        });
        assert_eq!(
            cells("batch", "jobs", done),
            json!([
                "pi",
                "Complete",
                "1/1",
                "25s",
                "6m40s",
                "pi",
                "perl:5.34",
                "batch.kubernetes.io/controller-uid=6f1c"
            ])
            .as_array()
            .unwrap()
            .clone()
        );
        let running = json!({
            "metadata": {"name": "work", "creationTimestamp": ago(100)},
            "spec": {"parallelism": 2, "template": {"spec": {"containers": [{"name": "w", "image": "busybox"}]}}},
            "status": {"startTime": ago(95), "active": 2},
        });
        let row = cells("batch", "jobs", running);
        assert_eq!(
            (
                row[1].as_str(),
                row[2].as_str(),
                row[3].as_str(),
                row[7].as_str()
            ),
            (
                Some("Running"),
                Some("0/1 of 2"),
                Some("95s"),
                Some("<none>")
            )
        );
        let failed = json!({
            "metadata": {"name": "f"}, "spec": {"template": {"spec": {"containers": []}}},
            "status": {"conditions": [{"type": "Failed", "status": "True"}]},
        });
        assert_eq!(cells("batch", "jobs", failed)[1], "Failed");
    }

    #[test]
    fn small_core_resources() {
        let ns = json!({"metadata": {"name": "default", "creationTimestamp": ago(4 * 3600)}, "status": {"phase": "Active"}});
        assert_eq!(
            cells("", "namespaces", ns),
            json!(["default", "Active", "4h"])
                .as_array()
                .unwrap()
                .clone()
        );
        let cm = json!({"metadata": {"name": "cfg"}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(cells("", "configmaps", cm)[1], 3);
        let secret = json!({"metadata": {"name": "tls"}, "type": "kubernetes.io/tls", "data": {"tls.crt": "AA==", "tls.key": "AA=="}});
        assert_eq!(
            cells("", "secrets", secret),
            json!(["tls", "kubernetes.io/tls", 2, "<unknown>"])
                .as_array()
                .unwrap()
                .clone()
        );
        let sa = json!({"metadata": {"name": "default"}, "secrets": [{"name": "default-token"}]});
        assert_eq!(cells("", "serviceaccounts", sa)[1], 1);
        let lease = json!({"metadata": {"name": "kube-scheduler"}, "spec": {"holderIdentity": "cp-1_4f2a"}});
        assert_eq!(
            cells("coordination.k8s.io", "leases", lease)[1],
            "cp-1_4f2a"
        );
    }

    #[test]
    fn resources_without_printer_get_name_and_age() {
        assert_eq!(
            column_names("rbac.authorization.k8s.io", "roles"),
            ["Name", "Age"]
        );
        let role =
            json!({"metadata": {"name": "reader", "creationTimestamp": ago(59)}, "rules": []});
        assert_eq!(
            cells("rbac.authorization.k8s.io", "roles", role),
            json!(["reader", "59s"]).as_array().unwrap().clone()
        );
    }

    #[test]
    fn every_printer_keeps_row_and_columns_aligned() {
        let resources = [
            ("", "pods"),
            ("", "nodes"),
            ("", "services"),
            ("", "endpoints"),
            ("", "namespaces"),
            ("", "events"),
            ("", "configmaps"),
            ("", "secrets"),
            ("", "serviceaccounts"),
            ("apps", "deployments"),
            ("apps", "replicasets"),
            ("apps", "daemonsets"),
            ("apps", "statefulsets"),
            ("apps", "controllerrevisions"),
            ("batch", "jobs"),
            ("batch", "cronjobs"),
            ("policy", "poddisruptionbudgets"),
            ("scheduling.k8s.io", "priorityclasses"),
            ("", "limitranges"),
            ("", "resourcequotas"),
            ("coordination.k8s.io", "leases"),
            ("discovery.k8s.io", "endpointslices"),
            ("example.com", "widgets"),
        ];
        for (group, plural) in resources {
            for obj in [
                json!({"metadata": {"name": "x"}}),
                json!({}),
                json!(null),
                json!({"metadata": 7}),
            ] {
                cells(group, plural, obj);
            }
        }
    }

    fn selector(value: Value) -> LabelSelector {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn label_selectors_print_like_upstream() {
        let sel = selector(json!({
            "matchLabels": {"app": "web"},
            "matchExpressions": [
                {"key": "tier", "operator": "In", "values": ["b", "a"]},
                {"key": "env", "operator": "Exists"},
                {"key": "canary", "operator": "DoesNotExist"},
                {"key": "zone", "operator": "NotIn", "values": ["z1"]},
            ],
        }));
        assert_eq!(
            format_label_selector(Some(&sel)),
            "app=web,!canary,env,tier in (a,b),zone notin (z1)"
        );
        assert_eq!(format_label_selector(None), "<none>");
        assert_eq!(format_label_selector(Some(&selector(json!({})))), "<none>");
        let bad = selector(json!({"matchExpressions": [{"key": "a", "operator": "Near"}]}));
        assert_eq!(format_label_selector(Some(&bad)), "<error>");
        let empty_in =
            selector(json!({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}));
        assert_eq!(format_label_selector(Some(&empty_in)), "<error>");
        let bad_key = selector(json!({"matchLabels": {"-bad": "x"}}));
        assert_eq!(label_selector_string(Some(&bad_key)), Err(()));
        let prefixed = selector(json!({"matchLabels": {"app.kubernetes.io/name": "web"}}));
        assert_eq!(
            format_label_selector(Some(&prefixed)),
            "app.kubernetes.io/name=web"
        );
        assert_eq!(format_labels(None), "<none>");
    }

    #[test]
    fn deployment_with_invalid_selector_prints_invalid() {
        let deployment = json!({
            "metadata": {"name": "d"},
            "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Near"}]},
                     "template": {"spec": {"containers": []}}},
        });
        let row = cells("apps", "deployments", deployment);
        assert_eq!(
            (row[1].as_str(), row[7].as_str()),
            (Some("0/1"), Some("<invalid>"))
        );
    }
}
