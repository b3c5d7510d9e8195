//! The scheduler: binds pending pods to nodes.
//!
//! Each pass reads the pod and node informers, works out what every node already holds (bound pods plus the
//! pods this scheduler has just bound but the cache does not show yet: the "assumed" pods), places the pending
//! pods in priority order with the [`plugins`] filters and scores, then binds them through `pods/binding`
//! concurrently. A pod that fits nowhere gets `PodScheduled=False` with upstream's message and a
//! `FailedScheduling` event, and is retried with backoff, or at once when a node changes. A pod that preempted
//! others keeps the room they leave ([`nominator`]) until it is bound.

pub mod nominator;
pub mod plugins;
pub mod preemption;
pub mod topology;
pub mod volumes;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use crate::controllers::Informers;
use nominator::Nominations;
use topology::NamespaceLabels;
use plugins::{filter_view, score_view, unschedulable_message, NodeUsage, NodeView, PodView, Unfit};
use crate::controllers::cached_pod::CachedPod;

#[derive(Clone, Debug)]
pub struct SchedulerConfig {
    /// Pods whose `spec.schedulerName` is this (or unset) are ours.
    pub name: String,
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    /// Bindings in flight at once.
    pub parallel_binds: usize,
    /// How long a preemptor's nomination (the room its victims leave) is kept for it without it being bound.
    pub nomination_timeout: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            name: "default-scheduler".into(),
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            parallel_binds: 16,
            nomination_timeout: Duration::from_secs(60),
        }
    }
}

struct Backoff {
    until: Instant,
    delay: Duration,
}

#[derive(Default)]
struct State {
    /// Bound by us, not yet seen bound in the cache: pod uid → (node, pod).
    assumed: HashMap<String, (String, CachedPod)>,
    backoff: HashMap<String, Backoff>,
    /// The unschedulable message last reported per pod uid (reported again only when it changes).
    reported: HashMap<String, String>,
    /// Pods that preempted others: uid → (the node they are nominated to, since when). No new preemption for
    /// them while their victims go, and the room stays theirs (see [`nominator`]).
    nominated: HashMap<String, (String, Instant)>,
    /// Pods whose expired nomination was cleared, while their status may still show it.
    nomination_cleared: std::collections::HashSet<String>,
}

/// One pass's decision for a pending pod.
#[derive(Debug, PartialEq)]
pub enum Decision {
    Bind(String),
    Unschedulable(String),
}

fn is_active(p: &CachedPod) -> bool {
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    phase != "Succeeded" && phase != "Failed"
}

/// How many feasible nodes to find before choosing (upstream's percentageOfNodesToScore, adaptive): all of a
/// small cluster, down to 5% (at least 100) of a large one.
pub fn feasible_nodes_to_find(nodes: usize) -> usize {
    if nodes < 100 {
        return nodes;
    }
    let percent = (50i64 - nodes as i64 / 125).max(5) as usize;
    (nodes * percent / 100).max(100).min(nodes)
}

/// Place `pending` (in order) on `nodes`, updating `usage` as pods are placed. Pure.
///
/// Like upstream, each pod's search starts where the previous one stopped and ends once enough feasible nodes
/// were found, so large clusters are not scanned whole for every pod.
pub fn place(pending: &[&CachedPod], nodes: &[&Node], usage: &mut HashMap<String, NodeUsage>, namespaces: &NamespaceLabels) -> Vec<Decision> {
    let views: Vec<NodeView> = nodes.iter().map(|n| NodeView::new(n)).collect();
    place_views(pending, &views, usage, namespaces, &mut Nominations::default())
}

/// [`place`] with the node views already built (a scheduling pass builds them once), and the nominated pods,
/// whose room on their node is kept for them: a pod placed ends its nomination.
pub fn place_views(
    pending: &[&CachedPod],
    nodes: &[NodeView],
    usage: &mut HashMap<String, NodeUsage>,
    namespaces: &NamespaceLabels,
    nominations: &mut Nominations,
) -> Vec<Decision> {
    let mut placer = Placer::new(nodes);
    pending.iter().map(|p| placer.place(p, usage, namespaces, nominations)).collect()
}

/// Places pods one after another on one set of nodes: what a scheduling pass does for its pending pods. It keeps
/// the node index by name (built once) and where the last search stopped, so that each pod's search starts there
/// (upstream's round-robin over nodes when not all are scored).
pub struct Placer<'v, 'n> {
    nodes: &'v [NodeView<'n>],
    index: topology::NodeIndex<'n>,
    want: usize,
    start: usize,
}

impl<'v, 'n> Placer<'v, 'n> {
    pub fn new(nodes: &'v [NodeView<'n>]) -> Self {
        Placer { nodes, index: topology::node_index(nodes), want: feasible_nodes_to_find(nodes.len()), start: 0 }
    }

    /// Decide for `p`, updating `usage` (and ending its nomination) when it is placed.
    pub fn place(&mut self, p: &CachedPod, usage: &mut HashMap<String, NodeUsage>, namespaces: &NamespaceLabels, nominations: &mut Nominations) -> Decision {
        let empty = NodeUsage::default();
        let nodes = self.nodes;
        let pv = PodView::new(p);
        let topo = topology::Topology::for_pod(&pv, nodes, &self.index, usage, namespaces);
        let pod_uid = p.metadata.uid.as_deref().unwrap_or_default();
        let prio = priority(p);
        let fits = |n: &NodeView| -> Result<(), Vec<Unfit>> {
            let u = nominations.usage_for(n.name, usage.get(n.name).unwrap_or(&empty), pod_uid, prio);
            let unfit = filter_view(&pv, n, &u);
            if !unfit.is_empty() {
                return Err(unfit);
            }
            match topo.as_ref().and_then(|t| t.filter(n)) {
                Some(u) => Err(vec![u]),
                None => Ok(()),
            }
        };
        // A nominated pod goes to its node if it fits there now (upstream's PreferNominatedNode).
        let preferred = nominations.node_of(pod_uid).and_then(|nn| self.index.get(nn).map(|&i| &nodes[i])).filter(|n| fits(n).is_ok());
        let chosen = match preferred {
            Some(n) => Ok(n.name.to_string()),
            None => {
                let mut best: Option<(i64, u64, usize)> = None;
                let mut reasons: Vec<Vec<Unfit>> = Vec::new();
                let mut feasible = 0;
                let mut examined = 0;
                for i in 0..nodes.len() {
                    let idx = (self.start + i) % nodes.len();
                    let n = &nodes[idx];
                    examined += 1;
                    if let Err(unfit) = fits(n) {
                        reasons.push(unfit);
                        continue;
                    }
                    feasible += 1;
                    let u = nominations.usage_for(n.name, usage.get(n.name).unwrap_or(&empty), pod_uid, prio);
                    let s = score_view(&pv, n, &u) + topo.as_ref().map(|t| t.score(n)).unwrap_or(0);
                    // Ties go to a node picked by a hash of pod and node, so equal nodes share the load.
                    let tie = fnv2(pod_uid, n.name);
                    if best.is_none_or(|(bs, bt, _)| (s, tie) > (bs, bt)) {
                        best = Some((s, tie, idx));
                    }
                    if feasible >= self.want {
                        break;
                    }
                }
                if !nodes.is_empty() {
                    self.start = (self.start + examined) % nodes.len();
                }
                match best {
                    Some((_, _, idx)) => Ok(nodes[idx].name.to_string()),
                    None => Err(unschedulable_message(nodes.len(), &reasons)),
                }
            }
        };
        match chosen {
            Ok(name) => {
                usage.entry(name.clone()).or_default().add_pod(p);
                nominations.remove(pod_uid);
                Decision::Bind(name)
            }
            Err(msg) => Decision::Unschedulable(msg),
        }
    }
}

/// FNV-1a of `a/b`, without building the string.
fn fnv2(a: &str, b: &str) -> u64 {
    a.bytes().chain(std::iter::once(b'/')).chain(b.bytes()).fold(0xcbf29ce484222325u64, |h, x| (h ^ x as u64).wrapping_mul(0x100000001b3))
}

fn priority(p: &CachedPod) -> i32 {
    p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

pub struct Scheduler {
    client: Client,
    config: SchedulerConfig,
    pods: Store<CachedPod>,
    nodes: Store<Node>,
    /// Their labels, for the namespaceSelector of affinity terms.
    namespaces: Store<Namespace>,
    /// Claims, volumes and classes, for pods with PersistentVolumeClaims.
    claims: Store<k8s_openapi::api::core::v1::PersistentVolumeClaim>,
    volumes: Store<k8s_openapi::api::core::v1::PersistentVolume>,
    classes: Store<k8s_openapi::api::storage::v1::StorageClass>,
    state: tokio::sync::Mutex<State>,
}

impl Scheduler {
    /// One scheduling pass. Returns how many pods were bound.
    pub async fn pass(&self) -> usize {
        let mut st = self.state.lock().await;
        let nodes = self.nodes.state();
        let pods = self.pods.state();
        let mut usage: HashMap<String, NodeUsage> = HashMap::new();
        let mut present = std::collections::HashSet::new();
        for p in pods.iter() {
            let uid = p.uid().unwrap_or_default();
            present.insert(uid.clone());
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone()).filter(|n| !n.is_empty());
            if let Some(node) = node {
                st.assumed.remove(&uid);
                st.reported.remove(&uid);
                st.nominated.remove(&uid);
                if is_active(p) {
                    usage.entry(node).or_default().add_pod(p);
                }
            }
        }
        st.assumed.retain(|uid, _| present.contains(uid));
        st.backoff.retain(|uid, _| present.contains(uid));
        st.reported.retain(|uid, _| present.contains(uid));
        st.nominated.retain(|uid, _| present.contains(uid));
        st.nomination_cleared.retain(|uid| present.contains(uid));
        for (node, p) in st.assumed.values() {
            usage.entry(node.clone()).or_default().add_pod(p);
        }
        let now = Instant::now();
        // Pods waiting for their victims to go keep the room they made: from this scheduler's memory, or from
        // their status after a restart. A nomination that has not led to a binding in time is dropped (and
        // cleared from the status), so that the pod may preempt afresh and its room is not held forever.
        let mut nominations = Nominations::default();
        let mut expired: Vec<CachedPod> = Vec::new();
        for p in pods.iter().filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()).is_none_or(str::is_empty)) {
            let uid = p.uid().unwrap_or_default();
            let in_status = p.status.as_ref().and_then(|s| s.nominated_node_name.clone()).filter(|n| !n.is_empty());
            if in_status.is_none() {
                st.nomination_cleared.remove(&uid);
            }
            let remembered = st.nominated.get(&uid).map(|(n, _)| n.clone());
            let Some(node) = remembered.or(in_status.filter(|_| !st.nomination_cleared.contains(&uid))) else { continue };
            if p.metadata.deletion_timestamp.is_some() || !is_active(p) {
                continue;
            }
            let since = st.nominated.entry(uid.clone()).or_insert_with(|| (node.clone(), now)).1;
            if now.duration_since(since) >= self.config.nomination_timeout {
                st.nominated.remove(&uid);
                st.nomination_cleared.insert(uid);
                expired.push(p.as_ref().clone());
                continue;
            }
            nominations.add(&node, p);
        }
        let mut pending: Vec<&CachedPod> = pods
            .iter()
            .map(|p| p.as_ref())
            .filter(|p| {
                let spec = p.spec.as_ref();
                let uid = p.uid().unwrap_or_default();
                spec.and_then(|s| s.node_name.as_deref()).is_none_or(str::is_empty)
                    && spec.and_then(|s| s.scheduler_name.as_deref()).unwrap_or("default-scheduler") == self.config.name
                    && p.metadata.deletion_timestamp.is_none()
                    && is_active(p)
                    && !st.assumed.contains_key(&uid)
                    // A nominated pod is tried every pass: it binds as soon as its victims are gone.
                    && (st.backoff.get(&uid).is_none_or(|b| b.until <= now) || nominations.node_of(&uid).is_some())
            })
            .collect();
        pending.sort_by(|a, b| {
            priority(b).cmp(&priority(a)).then_with(|| a.metadata.creation_timestamp.as_ref().map(|t| t.0).cmp(&b.metadata.creation_timestamp.as_ref().map(|t| t.0)))
        });
        // Pods with claims: those that cannot be placed now wait; the others carry their volumes' node
        // restrictions in their required node affinity (VolumeBinding).
        let mut volume_unschedulable: Vec<(CachedPod, String)> = Vec::new();
        let mut restricted: Vec<CachedPod> = Vec::new();
        let mut annotate: HashMap<String, Vec<String>> = HashMap::new();
        if pending.iter().any(|p| volumes::has_claims(p)) {
            let view = volumes::VolumeView::new(self.claims.state(), self.volumes.state(), self.classes.state());
            let mut keep: Vec<&CachedPod> = Vec::new();
            let mut swap: Vec<usize> = Vec::new();
            for p in pending.drain(..) {
                if !volumes::has_claims(p) {
                    keep.push(p);
                    continue;
                }
                match view.needs(p) {
                    Err(why) => volume_unschedulable.push((p.clone(), why)),
                    Ok(needs) => {
                        annotate.insert(p.uid().unwrap_or_default(), needs.to_annotate);
                        if needs.terms.is_empty() {
                            keep.push(p);
                        } else {
                            swap.push(keep.len());
                            restricted.push(volumes::restrict(p, &needs.terms));
                            keep.push(p);
                        }
                    }
                }
            }
            let mut it = restricted.iter();
            for (i, p) in keep.into_iter().enumerate() {
                pending.push(if swap.contains(&i) { it.next().unwrap_or(p) } else { p });
            }
        }
        let views: Vec<NodeView> = nodes.iter().map(|n| NodeView::new(n)).collect();
        let namespaces: NamespaceLabels =
            self.namespaces.state().iter().map(|n| (n.name_any(), n.metadata.labels.clone().unwrap_or_default())).collect();
        let decisions = place_views(&pending, &views, &mut usage, &namespaces, &mut nominations);
        let mut binds = Vec::new();
        let mut preemptions = Vec::new();
        for (p, d) in pending.iter().zip(decisions) {
            let uid = p.uid().unwrap_or_default();
            match d {
                Decision::Bind(node) => {
                    st.assumed.insert(uid, (node.clone(), (*p).clone()));
                    binds.push(((*p).clone(), node));
                }
                Decision::Unschedulable(msg) => {
                    if !st.nominated.contains_key(&uid) {
                        // Rooms reserved for more important nominated pods are not this pod's to take by
                        // preemption either.
                        let seen = nominations.usage_map_for(&usage, &uid, priority(p));
                        if let Some(pre) = preemption::preempt(p, &views, &seen) {
                            // The victims' resources are reserved for this pod until it is bound, for this pass's
                            // later pods and for the passes to come.
                            nominations.add(&pre.node, p);
                            st.nominated.insert(uid.clone(), (pre.node.clone(), now));
                            preemptions.push(((*p).clone(), pre));
                        }
                    }
                    let delay = st.backoff.get(&uid).map(|b| (b.delay * 2).min(self.config.backoff_max)).unwrap_or(self.config.backoff_initial);
                    st.backoff.insert(uid.clone(), Backoff { until: now + delay, delay });
                    if st.reported.get(&uid) != Some(&msg) {
                        st.reported.insert(uid, msg.clone());
                        self.report_unschedulable(p, &msg).await;
                    }
                }
            }
        }
        for (p, why) in &volume_unschedulable {
            let uid = p.uid().unwrap_or_default();
            let n = views.len();
            let msg = format!("0/{n} nodes are available: {why}. preemption: 0/{n} nodes are available: {n} Preemption is not helpful for scheduling.");
            let delay = st.backoff.get(&uid).map(|b| (b.delay * 2).min(self.config.backoff_max)).unwrap_or(self.config.backoff_initial);
            st.backoff.insert(uid.clone(), Backoff { until: now + delay, delay });
            if st.reported.get(&uid) != Some(&msg) {
                st.reported.insert(uid, msg.clone());
                self.report_unschedulable(p, &msg).await;
            }
        }
        drop(st);
        for p in expired {
            self.clear_nomination(&p).await;
        }
        for (p, pre) in preemptions {
            self.preempt(&p, &pre).await;
        }
        let results: Vec<(String, bool)> = futures::stream::iter(binds)
            .map(|(p, node)| {
                let claims = annotate.get(&p.uid().unwrap_or_default()).cloned().unwrap_or_default();
                async move {
                let ok = self.annotate_claims(&p, &claims, &node).await && self.bind(&p, &node).await;
                (p.uid().unwrap_or_default(), ok)
            }})
            .buffer_unordered(self.config.parallel_binds.max(1))
            .collect()
            .await;
        let mut st = self.state.lock().await;
        let mut bound = 0;
        for (uid, ok) in results {
            if ok {
                bound += 1;
            } else {
                st.assumed.remove(&uid);
                st.backoff.insert(uid, Backoff { until: Instant::now() + self.config.backoff_initial, delay: self.config.backoff_initial });
            }
        }
        bound
    }

    /// Tell the volume controller where the pod goes: `volume.kubernetes.io/selected-node` on its unbound
    /// WaitForFirstConsumer claims (before the binding, as upstream's PreBind).
    async fn annotate_claims(&self, p: &CachedPod, claims: &[String], node: &str) -> bool {
        let api: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &p.namespace().unwrap_or_default());
        for c in claims {
            let patch = json!({"metadata": {"annotations": {crate::controllers::volume::SELECTED_NODE: node}}});
            if let Err(e) = api.patch(c, &PatchParams::default(), &Patch::Merge(&patch)).await {
                tracing::warn!(claim = %c, node, error = %e, "could not record the selected node on a claim; will retry");
                return false;
            }
        }
        true
    }

    async fn bind(&self, p: &CachedPod, node: &str) -> bool {
        let ns = p.namespace().unwrap_or_default();
        let name = p.name_any();
        let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": name, "uid": p.uid()},
                             "target": {"apiVersion": "v1", "kind": "Node", "name": node}});
        let req = axum::http::Request::post(format!("/api/v1/namespaces/{ns}/pods/{name}/binding"))
            .header("Content-Type", "application/json")
            .body(serde_json::to_vec(&binding).unwrap_or_default());
        let Ok(req) = req else { return false };
        match self.client.request_text(req).await {
            Ok(_) => {
                tracing::debug!(pod = %format!("{ns}/{name}"), node, "bound");
                true
            }
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {
                // Bound by someone else, or gone: nothing to retry.
                true
            }
            Err(e) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), node, error = %e, "binding failed; will retry");
                false
            }
        }
    }

    /// Evicts the victims (graceful delete, a `Preempted` event each) and nominates the node for the preemptor.
    async fn preempt(&self, p: &CachedPod, pre: &preemption::Preemption) {
        let ns = p.namespace().unwrap_or_default();
        let name = p.name_any();
        tracing::info!(pod = %format!("{ns}/{name}"), node = %pre.node, victims = pre.victims.len(), "preempting");
        for v in &pre.victims {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &v.namespace);
            let dp = kube::api::DeleteParams {
                preconditions: Some(kube::api::Preconditions { uid: Some(v.uid.clone()), resource_version: None }),
                ..Default::default()
            };
            match api.delete(&v.name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => continue,
                Err(e) => {
                    tracing::warn!(victim = %format!("{}/{}", v.namespace, v.name), error = %e, "evicting a preemption victim failed");
                    continue;
                }
            }
            let msg = format!("Preempted by pod {} on node {}", p.uid().unwrap_or_default(), pre.node);
            self.event(&v.namespace, &v.name, &v.uid, "Preempted", &msg, "Normal").await;
        }
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let patch = json!({"status": {"nominatedNodeName": pre.node}});
        if let Err(e) = pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            tracing::debug!(pod = %name, error = %e, "could not set nominatedNodeName");
        }
    }

    async fn clear_nomination(&self, p: &CachedPod) {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &p.namespace().unwrap_or_default());
        let patch = json!({"status": {"nominatedNodeName": null}});
        match pods.patch_status(&p.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => tracing::info!(pod = %p.name_any(), "nomination expired before the pod could be bound; cleared"),
            Err(e) => tracing::debug!(pod = %p.name_any(), error = %e, "could not clear nominatedNodeName"),
        }
    }

    async fn event(&self, ns: &str, name: &str, uid: &str, reason: &str, msg: &str, kind: &str) {
        let involved = crate::controllers::object_ref("v1", "Pod", ns, name, uid);
        let mut ev = crate::controllers::core_event(involved, reason, msg.into(), kind, &self.config.name);
        ev.reporting_instance = Some(self.config.name.clone());
        if let Err(e) = crate::controllers::record_event(&self.client, &ev).await {
            tracing::debug!(pod = %name, error = %e, reason, "could not record an event");
        }
    }

    async fn report_unschedulable(&self, p: &CachedPod, msg: &str) {
        let ns = p.namespace().unwrap_or_default();
        let name = p.name_any();
        let now = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let cond = json!({"status": {"conditions": [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
            "message": msg, "lastProbeTime": null, "lastTransitionTime": now}]}});
        if let Err(e) = pods.patch_status(&name, &PatchParams::default(), &Patch::Strategic(&cond)).await {
            tracing::debug!(pod = %name, error = %e, "could not set PodScheduled=False");
        }
        self.event(&ns, &name, &p.uid().unwrap_or_default(), "FailedScheduling", msg, "Warning").await;
        tracing::info!(pod = %format!("{ns}/{name}"), message = msg, "unschedulable");
    }
}

/// Run the scheduler until `shutdown` resolves, with informers of its own.
pub async fn run(client: Client, config: SchedulerConfig, shutdown: impl Future<Output = ()> + Send + 'static) {
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    run_with(Informers::new(client, shutdown.clone()), config, shutdown).await
}

/// Run the scheduler until `shutdown` resolves, on the process's shared pod and node informers (those of the
/// controller manager, when it runs in the same process).
pub async fn run_with(informers: Informers, config: SchedulerConfig, shutdown: impl Future<Output = ()> + Send + 'static) {
    let (pod_informer, node_informer, ns_informer) = (informers.get::<CachedPod>(), informers.get::<Node>(), informers.get::<Namespace>());
    let (mut pod_changes, mut node_changes) = (pod_informer.subscribe(), node_informer.subscribe());
    let claim_informer = informers.get::<k8s_openapi::api::core::v1::PersistentVolumeClaim>();
    let volume_informer = informers.get::<k8s_openapi::api::core::v1::PersistentVolume>();
    let class_informer = informers.get::<k8s_openapi::api::storage::v1::StorageClass>();
    let mut claim_changes = claim_informer.subscribe();
    let sched = Arc::new(Scheduler {
        client: informers.client().clone(),
        config,
        pods: pod_informer.store(),
        nodes: node_informer.store(),
        namespaces: ns_informer.store(),
        claims: claim_informer.store(),
        volumes: volume_informer.store(),
        classes: class_informer.store(),
        state: Default::default(),
    });
    let wake = Arc::new(Notify::new());
    let (w1, w2, w3) = (wake.clone(), wake.clone(), wake.clone());
    let (s2, s3) = (sched.clone(), sched.clone());
    let drivers = [
        tokio::spawn(async move {
            while claim_changes.recv().await.is_some() {
                // A claim was bound or made: pods waiting for it may fit now.
                s3.state.lock().await.backoff.clear();
                w3.notify_one();
            }
        }),
        tokio::spawn(async move {
            while pod_changes.recv().await.is_some() {
                w1.notify_one();
            }
        }),
        tokio::spawn(async move {
            while node_changes.recv().await.is_some() {
                // A node changed: pods waiting for one may fit now.
                s2.state.lock().await.backoff.clear();
                w2.notify_one();
            }
        }),
    ];
    tokio::join!(
        pod_informer.ready(),
        node_informer.ready(),
        ns_informer.ready(),
        claim_informer.ready(),
        volume_informer.ready(),
        class_informer.ready()
    );
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        sched.pass().await;
    }
    for d in drivers {
        d.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, cpu: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name}, "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]}}))
        .unwrap()
    }

    fn pod(name: &str, cpu: &str) -> CachedPod {
        serde_json::from_value(json!({"metadata": {"name": name, "uid": name}, "spec": {"containers": [{"name": "c", "image": "x",
            "resources": {"requests": {"cpu": cpu}}}]}}))
        .unwrap()
    }

    #[test]
    fn placement_accounts_for_earlier_decisions() {
        let nodes = [node("a", "2"), node("b", "2")];
        let pods = [pod("p1", "1500m"), pod("p2", "1500m"), pod("p3", "1500m")];
        let node_refs: Vec<&Node> = nodes.iter().collect();
        let pod_refs: Vec<&CachedPod> = pods.iter().collect();
        let d = place(&pod_refs, &node_refs, &mut HashMap::new(), &NamespaceLabels::new());
        let bound: Vec<&Decision> = d.iter().filter(|d| matches!(d, Decision::Bind(_))).collect();
        assert_eq!(bound.len(), 2);
        assert_ne!(d[0], d[1], "two big pods go to different nodes");
        assert_eq!(d[2], Decision::Unschedulable("0/2 nodes are available: 2 Insufficient cpu.".into()));
    }

    #[test]
    fn large_clusters_are_sampled() {
        assert_eq!(feasible_nodes_to_find(50), 50);
        assert_eq!(feasible_nodes_to_find(1000), 420);
        assert_eq!(feasible_nodes_to_find(5000), 500);
        assert_eq!(feasible_nodes_to_find(100_000), 5000);
    }

    #[test]
    fn spreads_small_pods() {
        let nodes = [node("a", "4"), node("b", "4")];
        let pods: Vec<CachedPod> = (0..10).map(|i| pod(&format!("p{i}"), "100m")).collect();
        let d = place(&pods.iter().collect::<Vec<_>>(), &nodes.iter().collect::<Vec<_>>(), &mut HashMap::new(), &NamespaceLabels::new());
        let on_a = d.iter().filter(|d| **d == Decision::Bind("a".into())).count();
        assert!((4..=6).contains(&on_a), "{d:?}");
    }

    fn pod_p(name: &str, cpu: &str, prio: i32) -> CachedPod {
        let mut p = pod(name, cpu);
        p.spec.as_mut().unwrap().priority = Some(prio);
        p
    }

    fn views(nodes: &[Node]) -> Vec<NodeView<'_>> {
        nodes.iter().map(NodeView::new).collect()
    }

    #[test]
    fn nominated_room_is_kept_from_less_or_equally_important_pods() {
        let nodes = [node("a", "2")];
        let mut noms = Nominations::default();
        // The preemptor (priority 100) waits on a for its victims to go; they have gone.
        noms.add("a", &pod_p("preemptor", "1500m", 100));
        let ns = NamespaceLabels::new();
        for (name, prio) in [("low", 10), ("peer", 100)] {
            let q = pod_p(name, "1", prio);
            let d = place_views(&[&q], &views(&nodes), &mut HashMap::new(), &ns, &mut noms.clone());
            assert_eq!(d, vec![Decision::Unschedulable("0/1 nodes are available: 1 Insufficient cpu.".into())], "{name}");
        }
        // A more important pod may take it (upstream lets it).
        let vip = pod_p("vip", "1", 1000);
        assert_eq!(place_views(&[&vip], &views(&nodes), &mut HashMap::new(), &ns, &mut noms.clone()), vec![Decision::Bind("a".into())]);
        // The preemptor itself fits, and its binding ends the reservation for the pods after it.
        let preemptor = pod_p("preemptor", "1500m", 100);
        let small = pod_p("small", "250m", 10);
        let mut usage = HashMap::new();
        let d = place_views(&[&preemptor, &small], &views(&nodes), &mut usage, &ns, &mut noms);
        assert_eq!(d, vec![Decision::Bind("a".into()), Decision::Bind("a".into())]);
        assert!(noms.is_empty());
    }

    #[test]
    fn a_nominated_pod_prefers_its_node() {
        // b scores better (emptier) but the pod was nominated to a, where it fits now.
        let nodes = [node("a", "2"), node("b", "8")];
        let mut usage = HashMap::new();
        usage.entry("a".to_string()).or_insert_with(NodeUsage::default).add_pod(&pod("other", "500m"));
        let p = pod_p("p", "1", 100);
        let mut noms = Nominations::default();
        noms.add("a", &p);
        let d = place_views(&[&p], &views(&nodes), &mut usage.clone(), &NamespaceLabels::new(), &mut noms);
        assert_eq!(d, vec![Decision::Bind("a".into())]);
        // Where it does not fit (yet), it goes where it fits, like any pod.
        usage.entry("a".to_string()).or_default().add_pod(&pod("victim", "1"));
        let mut noms = Nominations::default();
        noms.add("a", &p);
        let d = place_views(&[&p], &views(&nodes), &mut usage, &NamespaceLabels::new(), &mut noms);
        assert_eq!(d, vec![Decision::Bind("b".into())]);
    }
}
