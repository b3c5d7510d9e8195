//! The controller manager: controllers that drive the cluster's objects toward their spec, over the API (never
//! the store), as the upstream kube-controller-manager does.
//!
//! Built on kube-rs: informers (list + watch into a reflector cache, relisting on 410, with backoff) feed the
//! controllers; each controller is a `kube_runtime::Controller` whose
//! reconcile first decides with a pure planner (unit-tested) and then acts. Errors requeue with backoff; a
//! successful reconcile requeues after the resync period.
//!
//! Modules: [`informers`] (the per-process shared informers), [`cached_pod`] (the pod as they cache it), [`replicaset`], [`deployment`], [`daemonset`],
//! [`statefulset`], [`job`], [`cronjob`], [`disruption`] (PodDisruptionBudget status), [`resourcequota`], [`endpoints`] (Endpoints and EndpointSlices), [`node_ipam`] (a pod CIDR per node), [`node_lifecycle`],
//! [`gc`] (the garbage collector over ownerReferences), [`volume`] (persistent volume binding, local-path
//! provisioning, reclaim, protection), [`leader`] (leader election), [`expectations`] (no duplicate pods while the
//! cache catches up).

pub mod cached_pod;
pub mod cronjob;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod expectations;
pub mod gc;
pub mod informers;
pub mod job;
pub mod leader;
pub mod node_ipam;
pub mod node_lifecycle;
pub mod replicaset;
pub mod resourcequota;
pub mod statefulset;
pub mod volume;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use crate::controllers::cached_pod::CachedPod;

pub use informers::Informers;
use kube::{Api, Client};

#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("{object}: API request failed: {source}")]
    Api { object: String, source: Box<kube::Error> },
    #[error("{object}: {reason}")]
    Invalid { object: String, reason: String },
}

#[derive(Clone, Debug)]
pub struct ControllersConfig {
    /// Every object is reconciled at least this often.
    pub resync: Duration,
    /// Cluster pod CIDR that node IPAM divides.
    pub cluster_cidr: (std::net::Ipv4Addr, u8),
    /// Prefix length of each node's pod CIDR.
    pub node_cidr_mask: u8,
    /// Node lifecycle: grace period and check period.
    pub lifecycle: node_lifecycle::LifecycleConfig,
    /// How long a controller waits for its informer to see the pods it created or deleted before acting again.
    pub expectations_timeout: Duration,
}

impl Default for ControllersConfig {
    fn default() -> Self {
        ControllersConfig {
            resync: Duration::from_secs(300),
            cluster_cidr: (std::net::Ipv4Addr::new(10, 244, 0, 0), 16),
            node_cidr_mask: 24,
            lifecycle: node_lifecycle::LifecycleConfig::default(),
            expectations_timeout: Duration::from_secs(60),
        }
    }
}

/// Run every controller until `shutdown` resolves, with informers of their own.
pub async fn run(client: Client, config: ControllersConfig, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let informers = Informers::new(client, shutdown.clone());
    run_with(informers, config, shutdown).await
}

/// Run every controller until `shutdown` resolves, on the process's shared informers.
pub async fn run_with(informers: Informers, config: ControllersConfig, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let client = informers.client().clone();
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    // One pod cache for the controllers; each controller woken by pod changes gets its own stream of them.
    let pod_informer = informers.get::<CachedPod>();
    let pods = pod_informer.store();
    let (pod_events, pod_events_for_endpoints, pod_events_for_jobs, pod_events_for_ds) =
        (pod_informer.touched(), pod_informer.touched(), pod_informer.touched(), pod_informer.touched());
    let (pods_for_endpoints, pods_for_jobs, pods_for_ds) = (pods.clone(), pods.clone(), pods.clone());
    let node_informer = informers.get::<k8s_openapi::api::core::v1::Node>();
    let (nodes_for_ds, node_events_for_ds) = (node_informer.store(), node_informer.touched());
    let rs_informer = informers.get::<ReplicaSet>();
    let (replicasets, rs_events) = (rs_informer.store(), rs_informer.touched());
    // No controller acts on an empty cache: after a restart, a ReplicaSet reconciled before the pods are listed
    // would look short of pods and create surplus ones.
    tokio::join!(pod_informer.ready(), node_informer.ready(), rs_informer.ready());
    let rs = replicaset::run(
        rs_informer.clone(),
        Arc::new(replicaset::Context::new(client.clone(), pods.clone(), config.clone())),
        pod_events,
        shutdown.clone(),
    );
    let deploy = deployment::run(
        Api::all(client.clone()),
        Arc::new(deployment::Context::new(client.clone(), replicasets, pods, config.clone())),
        rs_events,
        shutdown.clone(),
    );
    let ipam = node_ipam::run(
        node_informer.clone(),
        Arc::new(node_ipam::Context::new(client.clone(), config.cluster_cidr, config.node_cidr_mask, config.clone())),
        shutdown.clone(),
    );
    let endpoints = endpoints::run(
        Api::all(client.clone()),
        Arc::new(endpoints::Context::new(client.clone(), pods_for_endpoints, config.clone())),
        pod_events_for_endpoints,
        shutdown.clone(),
    );
    let jobs = job::run(
        Api::all(client.clone()),
        Arc::new(job::Context::new(client.clone(), pods_for_jobs, config.clone())),
        pod_events_for_jobs,
        shutdown.clone(),
    );
    let daemonsets = daemonset::run(
        Api::all(client.clone()),
        Arc::new(daemonset::Context::new(client.clone(), pods_for_ds, nodes_for_ds, config.clone())),
        pod_events_for_ds,
        node_events_for_ds,
        shutdown.clone(),
    );
    let lifecycle = node_lifecycle::run(informers.clone(), config.lifecycle.clone(), shutdown.clone());
    let gc = gc::run(informers.clone(), gc::GcConfig::default(), shutdown.clone());
    let volumes = volume::run(informers.clone(), shutdown.clone());
    let statefulsets = statefulset::run(informers.clone(), config.clone(), shutdown.clone());
    let cronjobs = cronjob::run(informers.clone(), config.clone(), shutdown.clone());
    let disruption = disruption::run(informers.clone(), config.clone(), shutdown.clone());
    let quotas = resourcequota::run(informers.clone(), config.clone(), shutdown.clone());
    tokio::join!(rs, deploy, ipam, endpoints, jobs, daemonsets, lifecycle, gc, volumes, statefulsets, cronjobs, disruption, quotas);
}

/// The reference to an object that an Event is about.
pub fn object_ref(api_version: &str, kind: &str, namespace: &str, name: &str, uid: &str) -> k8s_openapi::api::core::v1::ObjectReference {
    k8s_openapi::api::core::v1::ObjectReference {
        api_version: Some(api_version.into()),
        kind: Some(kind.into()),
        name: Some(name.into()),
        namespace: Some(namespace.into()),
        uid: Some(uid.into()),
        ..Default::default()
    }
}

/// A core/v1 Event about `involved`, reported by `component`: recorded in the object's namespace, or in `default`
/// for a cluster-scoped object (as upstream's recorder does). Shared by the controllers and the scheduler.
pub fn core_event(involved: k8s_openapi::api::core::v1::ObjectReference, reason: &str, message: String, type_: &str, component: &str) -> k8s_openapi::api::core::v1::Event {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    let now = Time(chrono::Utc::now());
    let namespace = involved.namespace.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| "default".into());
    k8s_openapi::api::core::v1::Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}.", involved.name.as_deref().unwrap_or_default())),
            namespace: Some(namespace),
            ..Default::default()
        },
        involved_object: involved,
        reason: Some(reason.into()),
        message: Some(message),
        type_: Some(type_.into()),
        count: Some(1),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        source: Some(k8s_openapi::api::core::v1::EventSource { component: Some(component.into()), host: None }),
        reporting_component: Some(component.into()),
        ..Default::default()
    }
}

/// Records `event` (from [`core_event`]) in its namespace.
pub async fn record_event(client: &Client, event: &k8s_openapi::api::core::v1::Event) -> Result<(), kube::Error> {
    let ns = event.metadata.namespace.as_deref().unwrap_or("default");
    Api::<k8s_openapi::api::core::v1::Event>::namespaced(client.clone(), ns).create(&kube::api::PostParams::default(), event).await.map(|_| ())
}

/// `namespace/name` of an object, for messages.
pub fn object_name<K: kube::Resource>(o: &K) -> String {
    format!("{}/{}", o.meta().namespace.as_deref().unwrap_or_default(), o.meta().name.as_deref().unwrap_or_default())
}

/// A pod from `owner`'s template (generateName `<owner>-`), controlled by `owner`: what the ReplicaSet, Job and
/// DaemonSet controllers create.
pub fn owned_pod<K>(owner: &K, template: Option<k8s_openapi::api::core::v1::PodTemplateSpec>) -> Result<Pod, ControllerError>
where
    K: kube::Resource<DynamicType = ()>,
{
    let template = template.ok_or_else(|| ControllerError::Invalid { object: object_name(owner), reason: "spec.template is missing".into() })?;
    let meta = template.metadata.unwrap_or_default();
    let name = owner.meta().name.clone().unwrap_or_default();
    Ok(Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            generate_name: Some(format!("{name}-")),
            namespace: owner.meta().namespace.clone(),
            labels: meta.labels,
            annotations: meta.annotations,
            finalizers: meta.finalizers,
            owner_references: Some(vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                api_version: K::api_version(&()).into_owned(),
                kind: K::kind(&()).into_owned(),
                name,
                uid: owner.meta().uid.clone().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    })
}

/// Delete the pods `names` of the owner with `uid`, expecting each delete to show up in the cache; a pod already
/// gone is fine.
pub async fn delete_owned_pods(
    pods: &Api<Pod>,
    names: &[String],
    expectations: &expectations::Expectations,
    uid: &str,
    object: &str,
) -> Result<(), ControllerError> {
    for victim in names {
        match pods.delete(victim, &kube::api::DeleteParams::default()).await {
            Ok(_) => expectations.expect_delete(uid, victim.clone()),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(ControllerError::Api { object: object.to_string(), source: Box::new(e) }),
        }
    }
    Ok(())
}

/// A mapper for `Controller::watches_stream`: an object in a namespace concerns every object of `store` there.
pub fn all_in_namespace<K>(store: kube::runtime::reflector::Store<K>) -> impl Fn(Option<String>) -> Vec<kube::runtime::reflector::ObjectRef<K>> + Clone
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    move |ns| store.state().iter().filter(|o| o.meta().namespace == ns).map(|o| kube::runtime::reflector::ObjectRef::from_obj(o.as_ref())).collect()
}

/// Is `o` controlled by the object with `uid`?
pub fn controlled_by<K: kube::Resource>(o: &K, uid: &str) -> bool {
    o.meta()
        .owner_references
        .as_ref()
        .is_some_and(|refs| refs.iter().any(|r| r.controller == Some(true) && r.uid == uid))
}

/// Requeue with backoff on error; never stop the loop.
pub fn error_policy<K>(obj: Arc<K>, err: &ControllerError, _ctx: Arc<impl Sized>) -> kube::runtime::controller::Action
where
    K: kube::Resource,
{
    tracing::warn!(object = %object_name(obj.as_ref()), error = %err, "reconcile failed; retrying");
    kube::runtime::controller::Action::requeue(Duration::from_secs(2))
}
