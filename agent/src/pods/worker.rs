//! One pod's worker: syncing → terminating → terminated. Each sync observes the pod's containers on disk, asks
//! [`compute_pod_actions`] what to do, does it, and writes the status if it changed.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, ResourceExt};
use tracing::Instrument;

use super::actions::{compute_pod_actions, Action, Desired, Observed};
use super::downward::PodContext;
use super::objects::PodObjects;
use super::{env, objects, PodEnv};
use crate::container::monitor::MonitorArgs;
use crate::container::state::{self, attempt_dir};
use crate::container::{container_id, security, spec};
use crate::events::{Kind, PodEvent};
use crate::probes::{self, HealthMap};
use crate::sandbox::{files, ipam, netns, network};
use crate::status::{self, Waiting};
use crate::volumes;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("sandbox: {0}")]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error("image {image}: {source}")]
    Image { image: String, source: skiff_images::Error },
    #[error("container image {image:?} is not present with pull policy of Never")]
    ImageNeverPull { image: String },
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("runtime: {0}")]
    Runtime(#[from] crate::container::runtime::RuntimeError),
    #[error("pod API: {0}")]
    Api(#[from] kube::Error),
    /// The container's config cannot be made (env, security context): `CreateContainerConfigError`.
    #[error("{0}")]
    Config(String),
    #[error("volumes: {0}")]
    Volume(#[from] volumes::VolumeError),
    #[error("pod cgroup: {0}")]
    Cgroup(#[from] crate::cgroups::CgroupError),
    #[error("{first}; also: {others}")]
    Many { first: Box<WorkerError>, others: String },
}

impl From<netns::NetnsError> for WorkerError {
    fn from(e: netns::NetnsError) -> Self {
        WorkerError::Sandbox(e.into())
    }
}
impl From<network::NetworkError> for WorkerError {
    fn from(e: network::NetworkError) -> Self {
        WorkerError::Sandbox(e.into())
    }
}
impl From<ipam::IpamError> for WorkerError {
    fn from(e: ipam::IpamError) -> Self {
        WorkerError::Sandbox(e.into())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Lifecycle {
    Syncing,
    Terminating,
    Terminated,
}

struct Worker {
    env: Arc<PodEnv>,
    uid: String,
    sandbox_ready: bool,
    pod_ip: Option<Ipv4Addr>,
    start_time: DateTime<Utc>,
    start_failures: BTreeMap<String, (DateTime<Utc>, u32)>,
    waiting: Waiting,
    last_status: Option<serde_json::Value>,
    /// The ConfigMaps and Secrets the pod refers to, and when they were fetched.
    objects: Option<(tokio::time::Instant, PodObjects)>,
    /// The pod's volumes once set up (or why not), and for which objects fetch and pod resourceVersion.
    volumes: Option<Result<BTreeMap<String, volumes::Mounted>, String>>,
    volumes_key: Option<(tokio::time::Instant, String)>,
    /// Containers whose config could not be made, for which objects fetch and pod resourceVersion.
    config_failed: BTreeMap<String, (tokio::time::Instant, String)>,
    /// Probe tasks by container: (attempt, task).
    probes: BTreeMap<String, (u32, tokio::task::JoinHandle<()>)>,
    health: HealthMap,
    /// Probe results wake the worker to rewrite the status at once.
    wake: Arc<tokio::sync::Notify>,
    /// The back-off deadline last reported as an event, per container (one BackOff event per back-off).
    backoff_reported: BTreeMap<String, DateTime<Utc>>,
    host_network: bool,
}

impl Drop for Worker {
    fn drop(&mut self) {
        for (_, (_, task)) in std::mem::take(&mut self.probes) {
            task.abort();
        }
    }
}

/// How often a pod's ConfigMaps and Secrets are fetched again (for env of new containers and volume updates).
const OBJECTS_REFRESH: Duration = Duration::from_secs(10);
/// How long a container start waits for the first list of Services before it reports a config error (retried).
const SERVICES_SYNC_WAIT: Duration = Duration::from_secs(10);

/// Whether anything of pod `uid` is still on the node: its state, sandbox or disk directory, or its network
/// namespace.
pub fn has_leftovers(config: &crate::Config, uid: &str) -> bool {
    [config.pod_state_dir(uid), config.sandbox_dir(uid), config.pod_dir(uid), config.netns_dir().join(uid)].iter().any(|p| p.exists())
}

/// Pod uids with state on this node that are not in `known`.
pub fn orphaned_pods(config: &crate::Config, known: &[String]) -> Vec<String> {
    let mut out = vec![];
    for dir in [config.run_dir.join("pods"), config.run_dir.join("sandboxes"), config.root_dir.join("pods"), config.netns_dir()] {
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if let Some(uid) = e.file_name().to_str() {
                if !known.iter().any(|k| k == uid) && !out.iter().any(|o| o == uid) {
                    out.push(uid.to_string());
                }
            }
        }
    }
    out
}

pub async fn run(env: Arc<PodEnv>, uid: String, name: String, mut rx: tokio::sync::watch::Receiver<Option<Pod>>) {
    let span = tracing::info_span!("pod", pod = %name, uid = %uid);
    async move {
        let mut w = Worker {
            env,
            uid,
            sandbox_ready: false,
            pod_ip: None,
            start_time: Utc::now(),
            start_failures: BTreeMap::new(),
            waiting: Waiting::new(),
            last_status: None,
            objects: None,
            volumes: None,
            volumes_key: None,
            config_failed: BTreeMap::new(),
            probes: BTreeMap::new(),
            health: Default::default(),
            wake: Arc::new(tokio::sync::Notify::new()),
            backoff_reported: BTreeMap::new(),
            host_network: false,
        };
        let wake = w.wake.clone();
        let mut state = Lifecycle::Syncing;
        loop {
            let pod = rx.borrow_and_update().clone();
            let mut terminate_failed = false;
            state = match state {
                Lifecycle::Syncing => match &pod {
                    Some(p) if p.metadata.deletion_timestamp.is_none() => {
                        if let Err(e) = w.sync(p).await {
                            tracing::warn!(error = %e, "pod sync failed; retrying");
                        }
                        Lifecycle::Syncing
                    }
                    _ => Lifecycle::Terminating,
                },
                Lifecycle::Terminating => match w.terminate(pod.as_ref()).await {
                    Ok(()) => Lifecycle::Terminated,
                    Err(e) => {
                        tracing::warn!(error = %e, "pod termination failed; retrying");
                        terminate_failed = true;
                        Lifecycle::Terminating
                    }
                },
                Lifecycle::Terminated => {
                    tracing::info!("pod terminated and cleaned up");
                    return;
                }
            };
            // A failed termination (an unmount or removal the kernel refused) is retried after the wait below, not
            // at once: retrying in a loop would take a whole core until the cause goes away.
            if state == Lifecycle::Terminating
                && !terminate_failed
                && pod.as_ref().is_none_or(|p| p.metadata.deletion_timestamp.is_some())
            {
                // Go straight on; the termination itself waits for the grace period.
                if w.last_status.is_some() || w.sandbox_ready {
                    continue;
                }
            }
            if state == Lifecycle::Terminated {
                continue;
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
    .instrument(span)
    .await
}

/// Waits until every writer of the pipe `read` has closed it (or `limit` passes).
async fn wait_until_closed(read: std::os::fd::OwnedFd, limit: Duration) {
    use tokio::io::AsyncReadExt;
    let Ok(mut rx) = tokio::net::unix::pipe::Receiver::from_owned_fd(read) else { return };
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(limit, async {
        while rx.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    })
    .await;
}

fn default_pull_policy(image: &str) -> &'static str {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') {
        "IfNotPresent"
    } else if !last.contains(':') || last.ends_with(":latest") {
        "Always"
    } else {
        "IfNotPresent"
    }
}

impl Worker {
    fn pod_state_dir(&self) -> PathBuf {
        self.env.config.pod_state_dir(&self.uid)
    }
    fn netns_path(&self) -> PathBuf {
        self.env.config.netns_dir().join(&self.uid)
    }
    /// config.json and the rootfs mount point, under the run dir.
    fn bundle_dir(&self, name: &str, restart: u32) -> PathBuf {
        self.env.config.sandbox_dir(&self.uid).join("containers").join(format!("{name}-{restart}"))
    }
    /// The writable layer (`upper/`, `work/`), on disk.
    fn layer_dir(&self, name: &str, restart: u32) -> PathBuf {
        self.env.config.pod_dir(&self.uid).join(format!("{name}-{restart}"))
    }

    async fn sync(&mut self, pod: &Pod) -> Result<(), WorkerError> {
        let spec = pod.spec.clone().unwrap_or_default();
        self.host_network = spec.host_network == Some(true);
        if !self.sandbox_ready {
            // Re-adopt a sandbox that survived an agent restart.
            self.sandbox_ready = if self.host_network {
                self.env.config.sandbox_dir(&self.uid).join("etc-hosts").exists()
            } else {
                netns::is_mounted(&self.netns_path())
                    && network::link_index(&self.env.netlink, &network::host_veth_name(&self.uid)).await?.is_some()
            };
            if self.sandbox_ready && !self.host_network {
                self.pod_ip = Some(self.allocate_ip().await?);
            }
        }
        let desired = Desired::from_pod(pod);
        let observed = Observed {
            sandbox_ready: self.sandbox_ready,
            attempts: state::scan(&self.pod_state_dir()),
            start_failures: self.start_failures.clone(),
        };
        let now = Utc::now();
        let mut result = Ok(());
        let actions = compute_pod_actions(&desired, &observed, now);
        if actions.contains(&Action::CreateSandbox) {
            self.create_sandbox(pod).await?;
            self.sandbox_ready = true;
        }
        let objects = self.refresh_objects(pod).await?;
        let volumes = self.ensure_volumes(pod, &objects);
        for action in actions {
            match action {
                Action::CreateSandbox => {}
                Action::Start { name, restart } => {
                    let mut all = spec.containers.iter().chain(spec.init_containers.iter().flatten());
                    let Some(c) = all.find(|c| c.name == name) else { continue };
                    let volumes = match &volumes {
                        Ok(v) => v,
                        Err(message) => {
                            // As upstream, the pod waits for its volumes (the kubelet's FailedMount event text).
                            self.waiting.insert(name, ("ContainerCreating".into(), message.clone()));
                            continue;
                        }
                    };
                    // A config error is retried, without back-off, once the pod or its objects changed (they are
                    // fetched again every OBJECTS_REFRESH).
                    if self.volumes_key.is_some() && self.config_failed.get(&name) == self.volumes_key.as_ref() {
                        continue;
                    }
                    match self.start_container(pod, c, restart, &observed, &objects, volumes).await {
                        Ok(()) => {
                            self.waiting.remove(&name);
                            self.start_failures.remove(&name);
                            self.backoff_reported.remove(&name);
                            self.post_start(pod, c, restart).await;
                            self.config_failed.remove(&name);
                        }
                        Err(WorkerError::Config(message)) => {
                            let reason = "CreateContainerConfigError".to_string();
                            if self.waiting.get(&name) != Some(&(reason.clone(), message.clone())) {
                                tracing::warn!(container = %name, error = %message, "container config error");
                                let text = format!("Error: {message}");
                                self.env.events.record(PodEvent::new(pod, Some(&name), Kind::Warning, "Failed", text));
                            }
                            self.waiting.insert(name.clone(), (reason, message));
                            if let Some(key) = self.volumes_key.clone() {
                                self.config_failed.insert(name, key);
                            }
                        }
                        Err(e) => {
                            let reason = match e {
                                WorkerError::Image { .. } => "ErrImagePull",
                                WorkerError::ImageNeverPull { .. } => "ErrImageNeverPull",
                                _ => "CreateContainerError",
                            };
                            tracing::warn!(container = %name, error = %e, reason, "starting a container failed");
                            let ev = |r, m: String| PodEvent::new(pod, Some(&name), Kind::Warning, r, m);
                            match &e {
                                WorkerError::Image { image, source } => {
                                    self.env.events.record(ev("Failed", format!("Failed to pull image {image:?}: {source}")))
                                }
                                WorkerError::ImageNeverPull { image } => self.env.events.record(ev(
                                    "ErrImageNeverPull",
                                    format!("Container image {image:?} is not present with pull policy of Never"),
                                )),
                                _ => {}
                            }
                            self.env.events.record(ev("Failed", format!("Error: {}", if reason == "CreateContainerError" { e.to_string() } else { reason.to_string() })));
                            self.waiting.insert(name.clone(), (reason.to_string(), e.to_string()));
                            let n = self.start_failures.get(&name).map(|(_, n)| n + 1).unwrap_or(1);
                            self.start_failures.insert(name, (now, n));
                        }
                    }
                }
                Action::BackOff { name, until } => {
                    let image_failing = self.waiting.get(&name).is_some_and(|(r, _)| r == "ErrImagePull" || r == "ImagePullBackOff");
                    let reason = if image_failing { "ImagePullBackOff" } else { "CrashLoopBackOff" };
                    let secs = (until - now).num_seconds().max(0);
                    let message = format!("back-off {secs}s restarting failed container={name} pod={}", pod.name_any());
                    if self.backoff_reported.get(&name) != Some(&until) {
                        self.backoff_reported.insert(name.clone(), until);
                        let text = if image_failing {
                            let image = spec.containers.iter().find(|c| c.name == name).and_then(|c| c.image.clone()).unwrap_or_default();
                            format!("Back-off pulling image {image:?}")
                        } else {
                            format!("Back-off restarting failed container {name} in pod {}_{}({})", pod.name_any(), pod.namespace().unwrap_or_default(), self.uid)
                        };
                        self.env.events.record(PodEvent::new(pod, Some(&name), Kind::Warning, "BackOff", text));
                    }
                    self.waiting.insert(name, (reason.to_string(), message));
                }
            }
        }
        self.reconcile_probes(pod, &spec);
        if let Err(e) = self.write_status(pod).await {
            result = Err(e);
        }
        result
    }

    /// The pod's ConfigMaps and Secrets, fetched again when older than [`OBJECTS_REFRESH`]. A failed fetch keeps
    /// the previous ones when there are any.
    async fn refresh_objects(&mut self, pod: &Pod) -> Result<PodObjects, WorkerError> {
        // A claim not bound yet is asked about again at every sync: the pod starts as soon as it is.
        let fresh = self.objects.as_ref().is_some_and(|(at, o)| at.elapsed() < OBJECTS_REFRESH && !o.waiting_for_claims());
        if !fresh {
            let previous = self.objects.as_ref().map(|(_, o)| o);
            match objects::fetch(&self.env.client, &pod.namespace().unwrap_or_default(), pod, previous).await {
                Ok(o) => self.objects = Some((tokio::time::Instant::now(), o)),
                Err(e) if self.objects.is_some() => tracing::warn!(error = %e, "fetching the pod's configmaps and secrets failed"),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(self.objects.as_ref().map(|(_, o)| o.clone()).unwrap_or_default())
    }

    /// Sets the pod's volumes up, again whenever its objects were fetched again or the pod changed (ConfigMap,
    /// Secret and downward API updates). After a first success a failed update keeps the previous volumes.
    fn ensure_volumes(&mut self, pod: &Pod, objects: &PodObjects) -> Result<BTreeMap<String, volumes::Mounted>, String> {
        let fetched = self.objects.as_ref().map(|(at, _)| *at).unwrap_or_else(tokio::time::Instant::now);
        let key = (fetched, pod.resource_version().unwrap_or_default());
        if let (Some(v), true) = (&self.volumes, self.volumes_key.as_ref() == Some(&key)) {
            return v.clone();
        }
        let plans = volumes::plan(pod, objects, &self.pod_context());
        let fs_group = pod.spec.as_ref().and_then(|s| s.security_context.as_ref()).and_then(|s| s.fs_group).and_then(|g| u32::try_from(g).ok());
        let dirs = self.volume_dirs();
        let result = volumes::setup(&dirs, plans, fs_group, self.env.mounter.as_ref()).map_err(|e| e.to_string());
        let result = match (result, &self.volumes) {
            (Err(e), Some(Ok(previous))) => {
                tracing::warn!(error = %e, "updating the pod's volumes failed; keeping the previous contents");
                Ok(previous.clone())
            }
            (Err(e), previous) => {
                if previous.as_ref().and_then(|p| p.as_ref().err()) != Some(&e) {
                    tracing::warn!(error = %e, "setting up the pod's volumes failed");
                    self.env.events.record(PodEvent::new(pod, None, Kind::Warning, "FailedMount", e.clone()));
                }
                Err(e)
            }
            (ok, _) => ok,
        };
        self.volumes = Some(result.clone());
        self.volumes_key = Some(key);
        result
    }

    fn pod_context(&self) -> PodContext {
        PodContext {
            host_ip: self.env.config.node_ip.to_string(),
            pod_ips: self.pod_ip.iter().map(ToString::to_string).collect(),
            node: self.env.allocatable.clone(),
        }
    }

    /// The pod's IP as probes and status see it: the node's for hostNetwork pods.
    fn ip_string(&self) -> String {
        if self.host_network {
            self.env.config.node_ip.to_string()
        } else {
            self.pod_ip.map(|i| i.to_string()).unwrap_or_default()
        }
    }

    fn grace(pod: &Pod) -> Duration {
        let s = pod.metadata.deletion_grace_period_seconds.or(pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds)).unwrap_or(30);
        Duration::from_secs(s.clamp(0, 3600) as u64)
    }

    /// One probe task per running container attempt that has probes; tasks of attempts that ended go.
    fn reconcile_probes(&mut self, pod: &Pod, spec: &k8s_openapi::api::core::v1::PodSpec) {
        let attempts = state::scan(&self.pod_state_dir());
        let running: BTreeMap<String, u32> = attempts
            .iter()
            .filter_map(|(name, list)| list.last().filter(|a| a.started.is_some() && a.exited.is_none()).map(|a| (name.clone(), a.restart)))
            .collect();
        self.probes.retain(|name, (restart, task)| {
            let keep = running.get(name) == Some(restart) && !task.is_finished();
            if !keep {
                task.abort();
            }
            keep
        });
        let mut health = self.health.lock().unwrap_or_else(|e| e.into_inner());
        health.retain(|name, h| running.get(name) == Some(&h.restart));
        for c in &spec.containers {
            let Some(&restart) = running.get(&c.name) else { continue };
            if !health.contains_key(&c.name) {
                health.insert(c.name.clone(), probes::initial_health(c, restart));
            }
            if !probes::has_probes(c) || self.probes.contains_key(&c.name) {
                continue;
            }
            let target = probes::ProbeTarget {
                runtime: self.env.runtime.clone(),
                events: self.env.events.clone(),
                pod: pod.clone(),
                container: c.clone(),
                restart,
                container_id: container_id(&self.uid, &c.name, restart),
                pod_ip: self.ip_string(),
                state_dir: attempt_dir(&self.pod_state_dir(), &c.name, restart),
                grace: c.liveness_probe.as_ref().and_then(|p| p.termination_grace_period_seconds).map(|s| Duration::from_secs(s.clamp(1, 3600) as u64)).unwrap_or_else(|| Self::grace(pod)),
            };
            let task = tokio::spawn(probes::probe_loop(target, self.health.clone(), self.wake.clone()));
            self.probes.insert(c.name.clone(), (restart, task));
        }
    }

    /// The postStart hook, as the kubelet runs it: right after the start, before the container counts as running for
    /// anything else; when it fails the container is killed (and restarted per policy).
    async fn post_start(&mut self, pod: &Pod, c: &Container, restart: u32) {
        let Some(h) = c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) else { return };
        let id = container_id(&self.uid, &c.name, restart);
        let ip = self.ip_string();
        let result = match probes::hook_handler(h, c, &ip) {
            Ok(handler) => probes::run(&handler, &self.env.runtime, &id, Self::grace(pod).max(Duration::from_secs(30))).await,
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            let ev = |r, m: String| PodEvent::new(pod, Some(&c.name), Kind::Warning, r, m);
            self.env.events.record(ev("FailedPostStartHook", format!("PostStartHook failed: {e}")));
            self.env.events.record(PodEvent::new(pod, Some(&c.name), Kind::Normal, "Killing", format!("FailedPostStartHook: stopping container {}", c.name)));
            let dir = attempt_dir(&self.pod_state_dir(), &c.name, restart);
            let c = Container { lifecycle: None, ..c.clone() };
            let ctx = probes::Ctx { runtime: &self.env.runtime, events: &self.env.events, pod, container: &c, id: &id, pod_ip: &ip };
            probes::stop_container(&ctx, &dir, Self::grace(pod)).await;
        }
    }

    async fn create_sandbox(&mut self, pod: &Pod) -> Result<(), WorkerError> {
        if self.host_network {
            // The node's network: no namespace, veth or IP of its own; the node's name and address in /etc/hosts.
            let ip = match self.env.config.node_ip {
                std::net::IpAddr::V4(ip) => ip,
                std::net::IpAddr::V6(_) => Ipv4Addr::LOCALHOST,
            };
            files::write(&self.env.config.sandbox_dir(&self.uid), &self.env.config.node_name, ip)?;
            tracing::info!("sandbox ready (host network)");
            return Ok(());
        }
        let path = self.netns_path();
        let p = path.clone();
        tokio::task::spawn_blocking(move || netns::create(&p)).await.map_err(|_| netns::NetnsError::Thread)??;
        let ip = self.allocate_ip().await?;
        let (env, uid, p) = (self.env.clone(), self.uid.clone(), path.clone());
        network::attach_pod(&env.netlink, env.bridge_index, &p, &uid, ip, env.cidr).await?;
        files::write(&self.env.config.sandbox_dir(&self.uid), &pod.name_any(), ip)?;
        self.pod_ip = Some(ip);
        tracing::info!(pod_ip = %ip, "sandbox ready");
        Ok(())
    }

    /// The pod's address from the node's IPAM, on a blocking thread: the allocation reads the IPAM directory and
    /// fsyncs its new file, which must not hold one of the runtime's two worker threads.
    async fn allocate_ip(&self) -> Result<std::net::Ipv4Addr, WorkerError> {
        let (env, uid) = (self.env.clone(), self.uid.clone());
        let ip = tokio::task::spawn_blocking(move || env.ipam.allocate(&uid)).await.map_err(|e| WorkerError::Io {
            what: "allocating an address in",
            path: self.env.config.ipam_dir(),
            source: std::io::Error::other(e),
        })??;
        Ok(ip)
    }

    async fn ensure_image(&self, pod: &Pod, c: &Container) -> Result<String, WorkerError> {
        let image = c.image.clone().unwrap_or_default();
        let err = |source| WorkerError::Image { image: image.clone(), source };
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| default_pull_policy(&image).to_string());
        let present = self.env.images.get(&image).is_ok();
        match policy.as_str() {
            "Never" if !present => Err(WorkerError::ImageNeverPull { image: image.clone() }),
            "Never" | "IfNotPresent" if present => {
                let msg = format!("Container image {image:?} already present on machine");
                self.env.events.record(PodEvent::new(pod, Some(&c.name), Kind::Normal, "Pulled", msg));
                Ok(image.clone())
            }
            _ => {
                let reference: skiff_images::Reference = image.parse().map_err(|e: skiff_images::reference::ReferenceError| err(e.into()))?;
                self.env.events.record(PodEvent::new(pod, Some(&c.name), Kind::Normal, "Pulling", format!("Pulling image {image:?}")));
                let t = std::time::Instant::now();
                self.env.images.pull(&reference).await.map_err(err)?;
                let msg = format!("Successfully pulled image {image:?} in {:.3}s", t.elapsed().as_secs_f64());
                self.env.events.record(PodEvent::new(pod, Some(&c.name), Kind::Normal, "Pulled", msg));
                Ok(image.clone())
            }
        }
    }

    /// The pod's service environment variables; an error (retried) until the Services were listed once, as the
    /// kubelet's "services have not yet been read at least once, cannot construct envvars".
    async fn service_env(&self, pod: &Pod) -> Result<Vec<(String, String)>, WorkerError> {
        let store = &self.env.services;
        // Static pods may start before there is an API server (as the kubelet: they do not wait).
        let is_static = pod.metadata.annotations.as_ref().and_then(|a| a.get(crate::static_pods::SOURCE)).is_some_and(|s| s != "api");
        let mut synced = self.env.services_synced.clone();
        if !is_static && tokio::time::timeout(SERVICES_SYNC_WAIT, synced.wait_for(|s| *s)).await.is_err() {
            return Err(WorkerError::Config("services have not yet been read at least once, cannot construct envvars".into()));
        }
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let links = pod.spec.as_ref().and_then(|s| s.enable_service_links).unwrap_or(true);
        Ok(super::service_env::service_env(&store.state(), ns, links))
    }

    async fn start_container(
        &mut self,
        pod: &Pod,
        c: &Container,
        restart: u32,
        observed: &Observed,
        objects: &PodObjects,
        pod_volumes: &BTreeMap<String, volumes::Mounted>,
    ) -> Result<(), WorkerError> {
        let config_err = |e: &dyn std::fmt::Display| WorkerError::Config(e.to_string());
        let services = self.service_env(pod).await?;
        let resolved = env::resolve(pod, c, objects, &self.pod_context(), &services).map_err(|e| config_err(&e))?;
        let mounts = volumes::mounts::plan(c, pod_volumes, &resolved).map_err(|e| config_err(&e))?;
        let mounts = volumes::mounts::resolve_sub_paths(mounts).map_err(|e| config_err(&e))?;
        if !resolved.skipped.is_empty() {
            tracing::warn!(container = %c.name, keys = ?resolved.skipped, "envFrom keys skipped: not valid env var names");
            let text = format!(
                "Keys [{}] from the EnvFrom were skipped since they are considered invalid environment variable names.",
                resolved.skipped.join(", ")
            );
            self.env.events.record(PodEvent::new(pod, Some(&c.name), Kind::Warning, "InvalidEnvironmentVariableNames", text));
        }
        let c = &env::expand_command_and_args(c, &resolved);
        let image = self.ensure_image(pod, c).await?;
        // The previous attempt's container and rootfs go; its log file stays for `--previous`.
        for a in observed.attempts.get(&c.name).into_iter().flatten() {
            self.env.runtime.delete(&container_id(&self.uid, &c.name, a.restart)).await?;
            self.unmount(&c.name, a.restart).await?;
            let bundle = self.bundle_dir(&c.name, a.restart);
            match std::fs::remove_dir_all(&bundle) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(WorkerError::Io { what: "removing", path: bundle, source: e });
                }
                _ => {}
            }
        }
        let id = container_id(&self.uid, &c.name, restart);
        let bundle = self.bundle_dir(&c.name, restart);
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| WorkerError::Io { what, path, source }
        };
        std::fs::create_dir_all(&bundle).map_err(io("creating", &bundle))?;
        // What an earlier failed try of this same attempt may have left mounted.
        self.unmount(&c.name, restart).await?;
        // The writable layer and the lease; the runtime mounts the overlay inside the container's mount namespace
        // (see `spec::ContainerConfig::rootfs_overlay`). `rootfs` stays an empty directory on the host.
        let (store, img, layer) = (self.env.images.clone(), image.clone(), self.layer_dir(&c.name, restart));
        let rootfs = bundle.join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(io("creating", &rootfs))?;
        let layers = tokio::task::spawn_blocking(move || store.prepare_rootfs(&img, &layer))
            .await
            .map_err(|e| WorkerError::Io { what: "preparing the rootfs in", path: bundle.clone(), source: std::io::Error::other(e) })?
            .map_err(|source| WorkerError::Image { image: image.clone(), source })?;
        let run_config = self.env.images.run_config(&image).map_err(|source| WorkerError::Image { image: image.clone(), source })?;
        let security = {
            // The image's /etc/passwd and /etc/group resolve a named `User`, read through the image's layers as the
            // overlay shows them; symlinks are not followed.
            let read = |name: &str| match self.env.images.read_image_file(&image, &Path::new("etc").join(name)) {
                Ok(Some(bytes)) => String::from_utf8(bytes).unwrap_or_default(),
                Ok(None) => String::new(),
                Err(e) => {
                    tracing::warn!(error = %e, file = name, "reading the image's file failed");
                    String::new()
                }
            };
            let user = run_config.user.clone().unwrap_or_default();
            let (passwd, group, available_caps) = (read("passwd"), read("group"), security::current_caps());
            security::resolve(pod, c, &security::ImageUser { user: &user, passwd: &passwd, group: &group, available_caps: &available_caps })
        };
        let security = match security {
            Ok(s) => s,
            Err(e) => {
                if let Err(u) = self.unmount(&c.name, restart).await {
                    tracing::warn!(error = %u, "unmounting the rootfs of a container that cannot start failed");
                }
                return Err(config_err(&e));
            }
        };
        let pod_dir = self.env.config.sandbox_dir(&self.uid);
        let pod_files = files::PodFiles {
            hosts: pod_dir.join("etc-hosts"),
            resolv_conf: pod_dir.join("resolv.conf"),
            hostname: pod_dir.join("hostname"),
        };
        let qos = status::qos_class(pod).to_lowercase();
        // The pod's own cgroup and its limits come first, so the containers start inside them.
        crate::cgroups::apply_pod_resources(&self.env.config.cgroup_root, &qos, &self.uid, &crate::cgroups::pod_resources(pod))
?;
        let netns = self.netns_path();
        let name = pod.name_any();
        let inputs = spec::SpecInputs {
            hostname: &name,
            netns: (!self.host_network).then_some(netns.as_path()),
            files: &pod_files,
            cgroups_path: format!("/{}/{qos}/pod{}/{id}", self.env.config.cgroup_root, self.uid),
            config: spec::ContainerConfig { env: resolved.vars.clone(), mounts, security, rootfs_overlay: layers.mount_options() },
        };
        let config_json = spec::render(c, &run_config, &inputs);
        let config_path = bundle.join("config.json");
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config_json).unwrap_or_default()).map_err(io("writing", &config_path))?;
        let state_dir = attempt_dir(&self.pod_state_dir(), &c.name, restart);
        std::fs::create_dir_all(&state_dir).map_err(io("creating", &state_dir))?;
        let ns = pod.namespace().unwrap_or_default();
        let log_file = self.env.config.pod_log_dir(&ns, &name, &self.uid).join(&c.name).join(format!("{restart}.log"));
        let args = MonitorArgs {
            runtime: self.env.runtime.bin.clone(),
            runtime_root: self.env.runtime.root.clone(),
            id: id.clone(),
            bundle: bundle.clone(),
            log_file,
            state_dir: state_dir.clone(),
            log_max_size: self.env.config.log_max_size,
            log_max_files: self.env.config.log_max_files,
            stdin: c.stdin == Some(true),
            stdin_once: c.stdin == Some(true) && c.stdin_once == Some(true),
            tty: c.tty == Some(true),
        };
        let command = crate::container::monitor::command(&args).map_err(io("locating", Path::new("/proc/self/exe")))?;
        let out_path = state_dir.join("monitor.log");
        let err = std::fs::File::create(&out_path).map_err(io("creating", &out_path))?;
        // The monitor's stdout is a pipe it closes once started.json or exit.json is written (see
        // `monitor::signal_ready`), so the container's start is seen at once instead of by polling for the files.
        let (ready, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| WorkerError::Io { what: "making a pipe for", path: bundle.clone(), source: e.into() })?;
        let mut child = tokio::process::Command::from(command)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::from(ready_w))
            .stderr(err)
            .spawn()
            .map_err(io("spawning the monitor for", &bundle))?;
        // Reap the monitor when it ends; it outlives us if the agent goes first.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        wait_until_closed(ready, Duration::from_secs(10)).await;
        tracing::info!(container = %c.name, restart, container_id = %id, "container started");
        let ev = |r, m: String| PodEvent::new(pod, Some(&c.name), Kind::Normal, r, m);
        self.env.events.record(ev("Created", format!("Created container {}", c.name)));
        self.env.events.record(ev("Started", format!("Started container {}", c.name)));
        Ok(())
    }

    /// Unmounts an attempt's rootfs and removes its writable layer (the bundle's config.json stays).
    async fn unmount(&self, name: &str, restart: u32) -> Result<(), WorkerError> {
        let (store, layer, rootfs) = (self.env.images.clone(), self.layer_dir(name, restart), self.bundle_dir(name, restart).join("rootfs"));
        // Agents before 2026-12 kept the whole bundle on disk: `<pod_dir>/containers/<name>-<restart>`.
        let legacy = self.env.config.pod_dir(&self.uid).join("containers").join(format!("{name}-{restart}"));
        let path = rootfs.clone();
        tokio::task::spawn_blocking(move || {
            if legacy.exists() {
                store.unmount_rootfs(&legacy)?;
            }
            store.unmount_rootfs_at(&layer, &rootfs)?;
            match std::fs::remove_dir(&layer) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(skiff_images::Error::Io { what: "removing", path: layer, source: e }),
                _ => Ok(()),
            }
        })
        .await
        .map_err(|e| WorkerError::Io { what: "unmounting", path, source: std::io::Error::other(e) })?
        .map_err(|source| WorkerError::Image { image: String::new(), source })
    }

    fn volume_dirs(&self) -> volumes::VolumeDirs {
        volumes::VolumeDirs { disk: self.env.config.pod_dir(&self.uid), memory: self.env.config.sandbox_dir(&self.uid) }
    }

    async fn write_status(&mut self, pod: &Pod) -> Result<(), WorkerError> {
        let inputs = status::StatusInputs {
            pod,
            observed: &Observed { sandbox_ready: self.sandbox_ready, attempts: state::scan(&self.pod_state_dir()), start_failures: Default::default() },
            waiting: &self.waiting,
            health: &self.health.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            host_ip: self.env.config.node_ip.to_string(),
            pod_ip: Some(self.ip_string()).filter(|s| !s.is_empty()),
            start_time: pod.status.as_ref().and_then(|s| s.start_time.as_ref()).map(|t| t.0).unwrap_or(self.start_time),
            now: Utc::now(),
        };
        let status = status::render(&inputs);
        if self.last_status.as_ref() == Some(&status) {
            return Ok(());
        }
        let api: Api<Pod> = Api::namespaced(self.env.client.clone(), &pod.namespace().unwrap_or_default());
        api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(serde_json::json!({"status": status})))
            .await?;
        tracing::debug!(phase = %status["phase"], "status written");
        self.last_status = Some(status);
        Ok(())
    }

    /// Stops every container within the grace period, removes everything the pod had on the node, then deletes the
    /// pod from the API with gracePeriodSeconds=0.
    async fn terminate(&mut self, pod: Option<&Pod>) -> Result<(), WorkerError> {
        let grace = pod
            .and_then(|p| p.metadata.deletion_grace_period_seconds.or(p.spec.as_ref()?.termination_grace_period_seconds))
            .unwrap_or(if pod.is_some() { 30 } else { 2 })
            .clamp(0, 3600) as u64;
        let attempts = state::scan(&self.pod_state_dir());
        let running: Vec<(String, PathBuf)> = attempts
            .iter()
            .flat_map(|(name, list)| list.iter().map(move |a| (name, a)))
            .filter(|(_, a)| a.exited.is_none())
            .map(|(name, a)| (container_id(&self.uid, name, a.restart), a.dir.clone()))
            .collect();
        for (_, (_, task)) in std::mem::take(&mut self.probes) {
            task.abort();
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(grace);
        // preStop hooks of the running containers, together, within the grace period; then SIGTERM.
        if let Some(pod) = pod {
            let ip = self.ip_string();
            let containers = pod.spec.as_ref().map(|s| s.containers.clone()).unwrap_or_default();
            let mut hooks = vec![];
            for c in &containers {
                let Some(list) = attempts.get(&c.name) else { continue };
                let Some(a) = list.last().filter(|a| a.started.is_some() && a.exited.is_none()) else { continue };
                self.env.events.record(PodEvent::new(pod, Some(&c.name), Kind::Normal, "Killing", format!("Stopping container {}", c.name)));
                let id = container_id(&self.uid, &c.name, a.restart);
                let (rt, ev, ip) = (self.env.runtime.clone(), self.env.events.clone(), ip.clone());
                let (pod, c) = (pod.clone(), c.clone());
                hooks.push(async move {
                    let ctx = probes::Ctx { runtime: &rt, events: &ev, pod: &pod, container: &c, id: &id, pod_ip: &ip };
                    probes::run_pre_stop(&ctx, Duration::from_secs(grace)).await
                });
            }
            let _ = tokio::time::timeout_at(deadline, futures::future::join_all(hooks)).await;
        }
        let mut errors: Vec<WorkerError> = vec![];
        for (id, _) in &running {
            if let Err(e) = self.env.runtime.kill(id, "TERM").await {
                errors.push(e.into());
            }
        }
        let all_exited = |running: &[(String, PathBuf)]| running.iter().all(|(_, d)| d.join(state::EXIT).exists() || !d.join(state::STARTED).exists() && !d.join("pid").exists());
        while !all_exited(&running) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !all_exited(&running) {
            for (id, _) in &running {
                if let Err(e) = self.env.runtime.kill(id, "KILL").await {
                    errors.push(e.into());
                }
            }
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !all_exited(&running) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        for (name, list) in &attempts {
            for a in list {
                if let Err(e) = self.env.runtime.delete(&container_id(&self.uid, name, a.restart)).await {
                    errors.push(e.into());
                }
                if let Err(e) = self.unmount(name, a.restart).await {
                    errors.push(e);
                }
            }
        }
        if let Err(e) = volumes::teardown(&self.volume_dirs(), self.env.mounter.as_ref()) {
            errors.push(e.into());
        }
        self.volumes = None;
        if let Err(e) = network::detach_pod(&self.env.netlink, &self.uid).await {
            errors.push(e.into());
        }
        let p = self.netns_path();
        match tokio::task::spawn_blocking(move || netns::remove(&p)).await {
            Ok(Err(e)) => errors.push(e.into()),
            Err(_) => errors.push(netns::NetnsError::Thread.into()),
            Ok(Ok(())) => {}
        }
        if let Err(e) = self.env.ipam.release(&self.uid) {
            errors.push(e.into());
        }
        crate::cgroups::remove_pod(&self.env.config.cgroup_root, &self.uid);
        let mut dirs = vec![self.env.config.pod_dir(&self.uid), self.env.config.sandbox_dir(&self.uid), self.pod_state_dir()];
        for e in std::fs::read_dir(&self.env.config.log_dir).into_iter().flatten().flatten() {
            if e.file_name().to_string_lossy().ends_with(&format!("_{}", self.uid)) {
                dirs.push(e.path());
            }
        }
        if errors.is_empty() {
            for d in dirs {
                match std::fs::remove_dir_all(&d) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => errors.push(WorkerError::Io { what: "removing", path: d, source: e }),
                    _ => {}
                }
            }
        }
        self.sandbox_ready = false;
        if !errors.is_empty() {
            let first = errors.remove(0);
            if errors.is_empty() {
                return Err(first);
            }
            let others = errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ");
            return Err(WorkerError::Many { first: Box::new(first), others });
        }
        if let Some(pod) = pod {
            let api: Api<Pod> = Api::namespaced(self.env.client.clone(), &pod.namespace().unwrap_or_default());
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions { uid: Some(self.uid.clone()), resource_version: None }),
                ..Default::default()
            };
            match api.delete(&pod.name_any(), &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}

