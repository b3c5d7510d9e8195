//! Pods of this node: a watcher on `spec.nodeName=<node>` dispatching to one worker per pod uid.

pub mod actions;
pub mod downward;
pub mod env;
pub mod objects;
pub mod service_env;
pub mod worker;

use std::collections::HashMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use crate::container::runtime::Runtime;
use crate::sandbox::ipam::{Cidr, Ipam};
use crate::Config;

/// What every pod worker shares.
pub struct PodEnv {
    pub client: kube::Client,
    pub config: Config,
    pub cidr: Cidr,
    pub ipam: Ipam,
    pub images: skiff_images::Store,
    pub runtime: Runtime,
    pub netlink: rtnetlink::Handle,
    pub bridge_index: u32,
    /// The node's allocatable resources: the downward API's default for missing limits.
    pub allocatable: downward::NodeAllocatable,
    /// tmpfs mounts of volumes.
    pub mounter: Arc<dyn crate::volumes::mounter::Mounter>,
    pub events: crate::events::Recorder,
    /// Every Service of the cluster, for the pods' service environment variables (the kubelet's service
    /// informer); filled by the reflector that [`run`] drives.
    pub services: kube::runtime::reflector::Store<Service>,
    services_writer: std::sync::Mutex<Option<kube::runtime::reflector::store::Writer<Service>>>,
    /// True once the Services were listed (kube-runtime's `Store::wait_until_ready` wakes only one of several
    /// waiters, and every starting container waits for this).
    pub services_synced: tokio::sync::watch::Receiver<bool>,
    services_synced_tx: tokio::sync::watch::Sender<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum EnvError {
    #[error(transparent)]
    Ipam(#[from] crate::sandbox::ipam::IpamError),
    #[error("opening the image store: {0}")]
    Images(#[from] skiff_images::Error),
    #[error("setting up the bridge: {0}")]
    Network(#[from] crate::sandbox::network::NetworkError),
}

impl PodEnv {
    pub async fn new(client: kube::Client, config: Config, pod_cidr: String) -> Result<Arc<PodEnv>, EnvError> {
        let cidr = Cidr::parse(&pod_cidr)?;
        let images = skiff_images::Store::open(&config.images_dir(), Default::default())?;
        let netlink = crate::sandbox::network::connect()?;
        let bridge_index = crate::sandbox::network::ensure_bridge(&netlink, &config.bridge, cidr).await?;
        if let Err(e) = crate::sandbox::network::ensure_bridge_netfilter() {
            tracing::warn!(error = %e, "bridged pod traffic bypasses iptables: Services whose endpoint is on this node will not answer pods here");
        }
        let allocatable = downward::NodeAllocatable::from_json(&crate::node::host_facts(&config, 0).allocatable);
        let (services, services_writer) = kube::runtime::reflector::store();
        let (services_synced_tx, services_synced) = tokio::sync::watch::channel(false);
        Ok(Arc::new(PodEnv {
            services,
            services_writer: std::sync::Mutex::new(Some(services_writer)),
            services_synced,
            services_synced_tx,
            allocatable,
            mounter: Arc::new(crate::volumes::mounter::SysMounter),
            events: crate::events::Recorder::start(client.clone(), config.node_name.clone()),
            ipam: Ipam::new(&config.ipam_dir(), cidr),
            runtime: Runtime { bin: config.runtime_bin.clone(), root: config.runtime_root() },
            client,
            config,
            cidr,
            images,
            netlink,
            bridge_index,
        }))
    }
}

/// Watches this node's pods until `stop` flips; containers are left running when it returns.
pub async fn run(env: Arc<PodEnv>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let writer = env.services_writer.lock().expect("services writer lock").take();
    let _services = writer
        .map(|w| AbortOnDrop(tokio::spawn(reflect_services(env.client.clone(), w, env.services_synced_tx.clone()))));
    let api: Api<Pod> = Api::all(env.client.clone());
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={}", env.config.node_name));
    let mut stream = watcher(api, wc).boxed();
    let mut workers: HashMap<String, tokio::sync::watch::Sender<Option<Pod>>> = HashMap::new();
    let mut listing: Option<Vec<String>> = None;
    loop {
        let event = tokio::select! {
            _ = stop.changed() => return,
            e = stream.next() => e,
        };
        workers.retain(|_, tx| !tx.is_closed());
        let Some(event) = event else { return };
        let event = match event {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "pod watch failed; it resumes");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
        };
        match event {
            watcher::Event::Init => listing = Some(vec![]),
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                let Some(uid) = pod.metadata.uid.clone() else { continue };
                if let Some(l) = listing.as_mut() {
                    l.push(uid.clone());
                }
                deliver(&env, &mut workers, uid, Some(pod));
            }
            watcher::Event::Delete(pod) => {
                // A pod's worker ends once it has removed everything of its pod and deleted it from the API, and
                // that deletion is what brings this event: another cleanup would only repeat the scans (IPAM,
                // mountinfo, cgroups, logs) for nothing, and a burst of deletions would hold up the pods starting
                // meanwhile.
                if let Some(uid) = pod.metadata.uid.clone() {
                    if workers.contains_key(&uid) || worker::has_leftovers(&env.config, &uid) {
                        deliver(&env, &mut workers, uid, None);
                    }
                }
            }
            watcher::Event::InitDone => {
                let seen = listing.take().unwrap_or_default();
                let gone: Vec<String> = workers.keys().filter(|u| !seen.contains(u)).cloned().collect();
                for uid in gone {
                    deliver(&env, &mut workers, uid, None);
                }
                // Pods removed from the API while the agent was down: clean up what they left.
                for uid in worker::orphaned_pods(&env.config, &seen) {
                    if !workers.contains_key(&uid) {
                        tracing::info!(pod_uid = %uid, "cleaning up a pod that is gone from the API");
                        deliver(&env, &mut workers, uid, None);
                    }
                }
            }
        }
    }
}

fn deliver(env: &Arc<PodEnv>, workers: &mut HashMap<String, tokio::sync::watch::Sender<Option<Pod>>>, uid: String, pod: Option<Pod>) {
    if let Some(tx) = workers.get(&uid) {
        match tx.send(pod) {
            Ok(()) => return,
            // The worker ended just now: a new one takes over.
            Err(tokio::sync::watch::error::SendError(p)) => return spawn_worker(env, workers, uid, p),
        }
    }
    spawn_worker(env, workers, uid, pod)
}

fn spawn_worker(env: &Arc<PodEnv>, workers: &mut HashMap<String, tokio::sync::watch::Sender<Option<Pod>>>, uid: String, pod: Option<Pod>) {
    let name = pod.as_ref().map(|p| format!("{}/{}", p.namespace().unwrap_or_default(), p.name_any())).unwrap_or_default();
    let (tx, rx) = tokio::sync::watch::channel(pod);
    tokio::spawn(worker::run(env.clone(), uid.clone(), name, rx));
    workers.insert(uid, tx);
}

/// Keeps [`PodEnv::services`] in step with the cluster's Services (list, then watch; resumes after errors).
async fn reflect_services(
    client: kube::Client,
    writer: kube::runtime::reflector::store::Writer<Service>,
    synced: tokio::sync::watch::Sender<bool>,
) {
    let api: Api<Service> = Api::all(client);
    let stream = kube::runtime::reflector(writer, watcher(api, watcher::Config::default()));
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::InitDone) => {
                synced.send_replace(true);
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "service watch failed; it resumes");
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
