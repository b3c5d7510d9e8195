//! The garbage collector (upstream's in kube-controller-manager): deletes objects whose owners are gone, and
//! carries out the foreground and orphan deletions the API server only marks.
//!
//! The API server's part of a delete is to remove the object at once (background propagation), or to set its
//! deletionTimestamp with the `foregroundDeletion` or `orphan` finalizer. This collector keeps a [`graph`] of
//! every object's ownerReferences, fed by informers over the served resources (the process's shared pod, node and
//! ReplicaSet informers, and a watch of each other resource whose objects it reduces to their owners at once, keeping no
//! copy), and looks at an object whenever a change could concern it:
//! - an object whose owners are all gone (or being deleted in the foreground) is deleted; references to gone owners
//!   are dropped from an object that still has a live owner;
//! - an object being deleted in the foreground loses its finalizer once no dependent with `blockOwnerDeletion`
//!   is left;
//! - an object being deleted with the orphan policy has its references removed from its dependents, then loses
//!   its finalizer.
//!
//! An owner missing from the graph is looked up on the API server before anything is deleted for it (the graph
//! may lag), so a dependent is never collected on a stale cache. Failed actions are retried with backoff. After a
//! restart, the first list of every resource brings each object with owners up for a look, so work cut short
//! resumes.

pub mod graph;

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Node as K8sNode;
use crate::controllers::cached_pod::CachedPod;
use kube::api::{DeleteParams, DynamicObject, PostParams, Preconditions, PropagationPolicy};
use kube::core::ApiResource;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::Notify;

use super::informers::{Change, Informable, Informers};
use crate::api::resources::{self, ResourceInfo, RESOURCES};
use graph::{Action, Graph, Node, OwnerState, FOREGROUND, ORPHAN};

/// Resources the collector does not watch (upstream's default ignored resources).
const IGNORED: &[&str] = &["events"];

#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("looking up owner {kind} {name}: {source}")]
    LookupOwner { kind: String, name: String, source: Box<kube::Error> },
    #[error("deleting {resource} {name}: {source}")]
    Delete { resource: String, name: String, source: Box<kube::Error> },
    #[error("updating {resource} {name}: {source}")]
    Update { resource: String, name: String, source: Box<kube::Error> },
    #[error("updating {resource} {name}: conflicts kept coming")]
    Contended { resource: String, name: String },
}

#[derive(Clone, Debug)]
pub struct GcConfig {
    /// Objects processed at once.
    pub workers: usize,
    /// How long the collector waits for its informers' first lists before it starts acting anyway.
    pub sync_timeout: Duration,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl Default for GcConfig {
    fn default() -> Self {
        GcConfig { workers: 8, sync_timeout: Duration::from_secs(30), backoff_initial: Duration::from_millis(200), backoff_max: Duration::from_secs(30) }
    }
}

/// Work queue of uids: each at most once, retried with per-uid backoff.
#[derive(Default)]
struct Queue {
    ready: VecDeque<String>,
    queued: HashSet<String>,
    failures: HashMap<String, u32>,
}

pub struct GarbageCollector {
    client: Client,
    config: GcConfig,
    graph: Mutex<Graph>,
    queue: Mutex<Queue>,
    wake: Notify,
    synced: AtomicUsize,
    /// (dependent uid, owner uid) already reported as OwnerRefInvalidNamespace: one event each, not one per look.
    reported_invalid: Mutex<HashSet<(String, String)>>,
}

fn api_resource(info: &ResourceInfo) -> ApiResource {
    ApiResource { group: info.group.into(), version: info.version.into(), api_version: info.api_version(), kind: info.kind.into(), plural: info.plural.into() }
}

fn resource_index(plural: &str, group: &str) -> usize {
    RESOURCES.iter().position(|r| r.plural == plural && r.group == group).expect("served resource")
}

/// Upstream's message: `ownerRef [apiVersion/kind, namespace: ns, name: n, uid: u] does not exist in namespace "ns"`.
fn invalid_owner_message(o: &graph::Owner, dependent_namespace: &str) -> String {
    format!(
        "ownerRef [{}/{}, namespace: {dependent_namespace}, name: {}, uid: {}] does not exist in namespace {dependent_namespace:?}",
        o.api_version, o.kind, o.name, o.uid
    )
}

fn not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(r) if r.code == 404)
}

impl GarbageCollector {
    pub fn new(client: Client, config: GcConfig) -> Arc<Self> {
        Arc::new(GarbageCollector {
            client,
            config,
            graph: Mutex::default(),
            queue: Mutex::default(),
            wake: Notify::new(),
            synced: AtomicUsize::new(0),
            reported_invalid: Mutex::default(),
        })
    }

    /// How many objects the graph holds.
    pub fn graph_len(&self) -> usize {
        self.graph.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn enqueue(&self, uids: Vec<String>) {
        if uids.is_empty() {
            return;
        }
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        for uid in uids {
            if q.queued.insert(uid.clone()) {
                q.ready.push_back(uid);
            }
        }
        drop(q);
        self.wake.notify_one();
    }

    fn upsert(&self, resource: usize, meta: &kube::api::ObjectMeta) {
        if let Some((uid, node)) = Node::from_meta(resource, meta) {
            let look = self.graph.lock().unwrap_or_else(|e| e.into_inner()).upsert(uid, node);
            self.enqueue(look);
        }
    }

    fn remove(&self, uid: &str) {
        let look = self.graph.lock().unwrap_or_else(|e| e.into_inner()).remove(uid);
        self.enqueue(look);
    }

    fn api(&self, info: &ResourceInfo, namespace: Option<&str>) -> Api<DynamicObject> {
        let ar = api_resource(info);
        match namespace {
            Some(ns) if info.namespaced => Api::namespaced_with(self.client.clone(), ns, &ar),
            _ => Api::all_with(self.client.clone(), &ar),
        }
    }

    /// Feed the graph from a shared informer of the process.
    async fn follow_shared<K: Informable>(self: Arc<Self>, informers: Informers, resource: usize) {
        let informer = informers.get::<K>();
        let mut changes = informer.subscribe();
        informer.ready().await;
        for o in informer.store().state() {
            self.upsert(resource, o.meta());
        }
        self.synced.fetch_add(1, Ordering::SeqCst);
        while let Some(change) = changes.recv().await {
            match change {
                Change::Applied(o) => self.upsert(resource, o.meta()),
                Change::Deleted(o) => self.remove(o.meta().uid.as_deref().unwrap_or_default()),
            }
        }
    }

    /// Feed the graph from a watch of one resource, keeping nothing of its objects but their graph nodes.
    async fn follow_dynamic(self: Arc<Self>, resource: usize) {
        let api = self.api(&RESOURCES[resource], None);
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        let mut relisted: Option<HashSet<String>> = None;
        let mut first = true;
        while let Some(event) = stream.next().await {
            let event = match event {
                Ok(e) => e,
                Err(e) => {
                    tracing::debug!(error = %e, resource = RESOURCES[resource].plural, "garbage collector watch error; retrying");
                    continue;
                }
            };
            match event {
                watcher::Event::Apply(o) => self.upsert(resource, &o.metadata),
                watcher::Event::Delete(o) => self.remove(o.metadata.uid.as_deref().unwrap_or_default()),
                watcher::Event::Init => relisted = Some(HashSet::new()),
                watcher::Event::InitApply(o) => {
                    relisted.get_or_insert_with(HashSet::new).extend(o.metadata.uid.clone());
                    self.upsert(resource, &o.metadata);
                }
                watcher::Event::InitDone => {
                    let seen = relisted.take().unwrap_or_default();
                    let known = self.graph.lock().unwrap_or_else(|e| e.into_inner()).uids_of(resource);
                    for gone in known.difference(&seen) {
                        self.remove(gone);
                    }
                    if std::mem::take(&mut first) {
                                        self.synced.fetch_add(1, Ordering::SeqCst);
                    }
                }
            }
        }
    }

    /// The state of `node`'s owners: from the graph, or asked of the API server for owners the graph lacks.
    async fn owner_states(&self, uid: &str, node: &Node) -> Result<HashMap<String, OwnerState>, GcError> {
        let mut states = HashMap::new();
        let mut unknown = Vec::new();
        let mut invalid = Vec::new();
        {
            let g = self.graph.lock().unwrap_or_else(|e| e.into_inner());
            for o in &node.owners {
                match g.get(&o.uid) {
                    // A namespaced owner must be in its dependent's namespace: one elsewhere is treated as absent
                    // (looked up in the dependent's namespace, where it is not), as upstream, and reported.
                    Some(owner) if owner.namespace.is_some() && owner.namespace != node.namespace => {
                        invalid.push(o.clone());
                        unknown.push(o.clone());
                    }
                    Some(owner) if owner.foreground => {
                        states.insert(o.uid.clone(), OwnerState::WaitingForDependents);
                    }
                    Some(_) => {
                        states.insert(o.uid.clone(), OwnerState::Solid);
                    }
                    None => unknown.push(o.clone()),
                }
            }
        }
        for o in unknown {
            let Some(info) = resources::by_kind(&o.api_version, &o.kind) else {
                // Not a kind this cluster serves: it cannot be looked up, so it keeps its dependents.
                tracing::debug!(kind = %o.kind, api_version = %o.api_version, "owner of an unknown kind; keeping the dependent");
                continue;
            };
            if info.namespaced && node.namespace.is_none() {
                // A cluster-scoped object cannot be owned by a namespaced one: the reference cannot be resolved, so
                // the object is kept (as upstream) and the reference reported.
                invalid.push(o.clone());
                continue;
            }
            let state = match self.api(info, node.namespace.as_deref()).get(&o.name).await {
                Ok(owner) if owner.metadata.uid.as_deref() == Some(o.uid.as_str()) => {
                    let foreground = owner.metadata.deletion_timestamp.is_some()
                        && owner.metadata.finalizers.iter().flatten().any(|f| f == FOREGROUND);
                    if foreground {
                        OwnerState::WaitingForDependents
                    } else {
                        OwnerState::Solid
                    }
                }
                Ok(_) => OwnerState::Dangling,
                Err(e) if not_found(&e) => OwnerState::Dangling,
                Err(e) => return Err(GcError::LookupOwner { kind: o.kind.clone(), name: o.name.clone(), source: Box::new(e) }),
            };
            states.insert(o.uid.clone(), state);
        }
        for o in invalid {
            self.report_invalid_owner(uid, node, &o).await;
        }
        Ok(states)
    }

    /// A Warning event `OwnerRefInvalidNamespace` on the dependent, once per dependent and reference (upstream's
    /// reason and message).
    async fn report_invalid_owner(&self, uid: &str, node: &Node, o: &graph::Owner) {
        if !self.reported_invalid.lock().unwrap_or_else(|e| e.into_inner()).insert((uid.to_string(), o.uid.clone())) {
            return;
        }
        let info = &RESOURCES[node.resource];
        let dep_ns = node.namespace.as_deref().unwrap_or("");
        let msg = invalid_owner_message(o, dep_ns);
        tracing::warn!(resource = info.plural, namespace = dep_ns, name = %node.name, "{msg}");
        let involved = super::object_ref(&info.api_version(), info.kind, dep_ns, &node.name, uid);
        let ev = super::core_event(involved, "OwnerRefInvalidNamespace", msg, "Warning", "garbage-collector-controller");
        if let Err(e) = super::record_event(&self.client, &ev).await {
            tracing::debug!(error = %e, "could not record an OwnerRefInvalidNamespace event");
        }
    }

    /// Look at one object and do what the plan says.
    async fn process(&self, uid: &str) -> Result<(), GcError> {
        let Some(node) = self.graph.lock().unwrap_or_else(|e| e.into_inner()).get(uid).cloned() else { return Ok(()) };
        let states = if node.deleting || node.owners.is_empty() { HashMap::new() } else { self.owner_states(uid, &node).await? };
        let action = graph::plan(&self.graph.lock().unwrap_or_else(|e| e.into_inner()), uid, &states);
        let info = &RESOURCES[node.resource];
        let span = tracing::debug_span!("gc", resource = info.plural, namespace = node.namespace.as_deref().unwrap_or(""), name = %node.name);
        let _enter = span.enter();
        match action {
            Action::Nothing => Ok(()),
            Action::Delete { foreground } => {
                tracing::info!(resource = info.plural, namespace = node.namespace.as_deref().unwrap_or(""), name = %node.name, foreground, "garbage collecting an object whose owners are gone");
                let policy = if foreground { PropagationPolicy::Foreground } else { PropagationPolicy::Background };
                self.delete(&node, uid, policy).await
            }
            Action::RemoveOwnerRefs(owners) => self.update(&node, uid, |o| drop_owner_refs(o, &owners)).await,
            Action::Orphan(dependents) => {
                let nodes: Vec<(String, Node)> = {
                    let g = self.graph.lock().unwrap_or_else(|e| e.into_inner());
                    dependents.into_iter().filter_map(|d| g.get(&d).cloned().map(|n| (d, n))).collect()
                };
                let owners = [uid.to_string()];
                for (d, dn) in nodes {
                    self.update(&dn, &d, |o| drop_owner_refs(o, &owners)).await?;
                }
                self.update(&node, uid, |o| drop_finalizer(o, ORPHAN)).await
            }
            Action::FinishForeground => self.update(&node, uid, |o| drop_finalizer(o, FOREGROUND)).await,
            Action::DeleteDependents(dependents) => {
                // Each dependent's own look deletes it; this owner is looked at again as they go.
                self.enqueue(dependents);
                Ok(())
            }
        }
    }

    async fn delete(&self, node: &Node, uid: &str, policy: PropagationPolicy) -> Result<(), GcError> {
        let info = &RESOURCES[node.resource];
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions { uid: Some(uid.to_string()), resource_version: None }),
            ..Default::default()
        };
        match self.api(info, node.namespace.as_deref()).delete(&node.name, &dp).await {
            Ok(_) => Ok(()),
            // Gone, or replaced by another object of that name (the uid precondition failed).
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Ok(()),
            Err(e) => Err(GcError::Delete { resource: info.plural.into(), name: node.name.clone(), source: Box::new(e) }),
        }
    }

    /// Read the object, change it with `edit` (which says whether it changed anything), write it back; again on
    /// conflicts. An object gone or replaced needs nothing.
    async fn update(&self, node: &Node, uid: &str, edit: impl Fn(&mut DynamicObject) -> bool) -> Result<(), GcError> {
        let info = &RESOURCES[node.resource];
        let api = self.api(info, node.namespace.as_deref());
        let err = |e: kube::Error| GcError::Update { resource: info.plural.into(), name: node.name.clone(), source: Box::new(e) };
        for _ in 0..8 {
            let mut obj = match api.get(&node.name).await {
                Ok(o) => o,
                Err(e) if not_found(&e) => return Ok(()),
                Err(e) => return Err(err(e)),
            };
            if obj.metadata.uid.as_deref() != Some(uid) || !edit(&mut obj) {
                return Ok(());
            }
            match api.replace(&node.name, &PostParams::default(), &obj).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(e)) if e.code == 409 => continue,
                Err(e) if not_found(&e) => return Ok(()),
                Err(e) => return Err(err(e)),
            }
        }
        Err(GcError::Contended { resource: info.plural.into(), name: node.name.clone() })
    }

    /// Process the queue until `shutdown`, `workers` objects at a time.
    async fn work(self: Arc<Self>, sources: usize, shutdown: impl Future<Output = ()> + Send) {
        // Act on a complete graph, so that owners are found in it rather than looked up one by one.
        tokio::pin!(shutdown);
        let waited = tokio::time::Instant::now();
        while self.synced.load(Ordering::SeqCst) < sources && waited.elapsed() < self.config.sync_timeout {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
        tracing::info!(objects = self.graph_len(), "garbage collector synced");
        loop {
            let batch: Vec<String> = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                let n = q.ready.len().min(self.config.workers.max(1) * 8);
                let batch: Vec<String> = q.ready.drain(..n).collect();
                for uid in &batch {
                    q.queued.remove(uid);
                }
                batch
            };
            if batch.is_empty() {
                tokio::select! {
                    _ = &mut shutdown => return,
                    _ = self.wake.notified() => continue,
                }
            }
            let this = &self;
            futures::stream::iter(batch)
                .for_each_concurrent(self.config.workers.max(1), |uid| async move {
                    match this.process(&uid).await {
                        Ok(()) => {
                            this.queue.lock().unwrap_or_else(|e| e.into_inner()).failures.remove(&uid);
                        }
                        Err(e) => this.retry_later(uid, e),
                    }
                })
                .await;
        }
    }

    fn retry_later(self: &Arc<Self>, uid: String, e: GcError) {
        let failures = {
            let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
            let f = q.failures.entry(uid.clone()).or_default();
            *f = f.saturating_add(1);
            *f
        };
        let delay = self.config.backoff_initial.saturating_mul(1 << failures.min(16)).min(self.config.backoff_max);
        tracing::warn!(uid = %uid, error = %e, retry_in = ?delay, "garbage collection failed; retrying");
        let this = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            this.enqueue(vec![uid]);
        });
    }
}

fn drop_owner_refs(obj: &mut DynamicObject, owners: &[String]) -> bool {
    let Some(refs) = obj.metadata.owner_references.as_mut() else { return false };
    let before = refs.len();
    refs.retain(|r| !owners.contains(&r.uid));
    let changed = refs.len() != before;
    // No references left: no field, as upstream's (omitempty) objects have it.
    if refs.is_empty() {
        obj.metadata.owner_references = None;
    }
    changed
}

fn drop_finalizer(obj: &mut DynamicObject, finalizer: &str) -> bool {
    let Some(fins) = obj.metadata.finalizers.as_mut() else { return false };
    let before = fins.len();
    fins.retain(|f| f != finalizer);
    let changed = fins.len() != before;
    if fins.is_empty() {
        obj.metadata.finalizers = None;
    }
    changed
}

/// Run the garbage collector until `shutdown` resolves.
pub async fn run(informers: Informers, config: GcConfig, shutdown: impl Future<Output = ()> + Send + 'static) {
    let gc = GarbageCollector::new(informers.client().clone(), config);
    // The types the controllers and the scheduler cache anyway come from the shared informers.
    let (pods, nodes, replicasets) = (resource_index("pods", ""), resource_index("nodes", ""), resource_index("replicasets", "apps"));
    let mut feeds = vec![
        tokio::spawn(gc.clone().follow_shared::<CachedPod>(informers.clone(), pods)),
        tokio::spawn(gc.clone().follow_shared::<K8sNode>(informers.clone(), nodes)),
        tokio::spawn(gc.clone().follow_shared::<ReplicaSet>(informers.clone(), replicasets)),
    ];
    for (i, info) in RESOURCES.iter().enumerate() {
        if ![pods, nodes, replicasets].contains(&i) && !IGNORED.contains(&info.plural) && info.is_stored() {
            feeds.push(tokio::spawn(gc.clone().follow_dynamic(i)));
        }
    }
    gc.clone().work(feeds.len(), shutdown).await;
    for f in feeds {
        f.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_report_whether_they_changed_anything() {
        let mut o: DynamicObject = serde_json::from_value(serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "finalizers": ["orphan", "x"],
                         "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "a", "uid": "a"},
                                             {"apiVersion": "v1", "kind": "ConfigMap", "name": "b", "uid": "b"}]}}))
        .unwrap();
        assert!(drop_owner_refs(&mut o, &["a".into()]));
        assert!(!drop_owner_refs(&mut o, &["a".into()]));
        assert_eq!(o.metadata.owner_references.as_ref().unwrap()[0].uid, "b");
        assert!(drop_owner_refs(&mut o, &["b".into()]));
        assert_eq!(o.metadata.owner_references, None, "an empty list is no field");
        assert!(drop_finalizer(&mut o, ORPHAN));
        assert!(!drop_finalizer(&mut o, FOREGROUND));
        assert_eq!(o.metadata.finalizers.as_deref().unwrap(), ["x"]);
        assert!(drop_finalizer(&mut o, "x"));
        assert_eq!(o.metadata.finalizers, None);
    }

    #[test]
    fn every_served_resource_but_events_is_watched() {
        let watched: Vec<&str> = RESOURCES.iter().filter(|r| !IGNORED.contains(&r.plural)).map(|r| r.plural).collect();
        assert!(watched.contains(&"pods") && watched.contains(&"replicasets") && watched.contains(&"configmaps"));
        assert!(!watched.contains(&"events"));
    }
}
