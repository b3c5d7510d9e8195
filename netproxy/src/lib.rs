//! skiff-netproxy: the service proxy (kube-proxy's job) and host-gw pod routes for one node.
//!
//! Data flow: informers (list + watch into kube-rs reflector caches) on Services, EndpointSlices and Nodes →
//! [`model::DesiredState::build`] (pure; skips and reports bad input) → [`render::render`] (pure; the nat and
//! filter chains we own, all prefixed `SKIFF-`) → [`restore::plan`] (pure; everything on a full sync, only the
//! changed chains otherwise) → [`iptables::Iptables::restore`] (one `iptables-restore --noflush` per sync, both
//! tables, each atomic) → [`conntrack`] cleanup of stale UDP entries. [`proxier::Proxier`] holds that sequence
//! and what was last applied. [`routes`] keeps a route to every other node's podCIDR. [`metrics`] serves
//! Prometheus metrics. [`run`] wires it all to the API server and stops when its `shutdown` future resolves.

pub mod conntrack;
pub mod iptables;
pub mod lab;
pub mod metrics;
pub mod model;
pub mod proxier;
pub mod render;
pub mod restore;
pub mod routes;

use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};

use crate::iptables::{Backend, IptablesCli};
use crate::model::{Cidr, ModelCache, NodeConfig};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("API server failover: {0}")]
    Failover(String),
    #[error("reading the kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("inferring the client config: {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("building the client: {0}")]
    Client(#[from] kube::Error),
    #[error("building the client: {0}")]
    Rotating(String),
    #[error(transparent)]
    Metrics(#[from] metrics::MetricsError),
    #[error("waiting for the {0} cache: {1}")]
    Cache(&'static str, reflector::store::WriterDropped),
}

/// `--backend`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendChoice {
    Auto,
    Nft,
    Legacy,
}

#[derive(Clone, Debug)]
pub struct Config {
    pub kubeconfig: Option<PathBuf>,
    /// Several API servers (`host:port`) to fail over between (the kubeconfig's credentials and CA are used with
    /// each); empty: the kubeconfig's server.
    pub api_servers: Vec<String>,
    pub node_name: String,
    /// This node's addresses: a Node reporting one of them as InternalIP is this node (no route to it).
    pub node_ips: Vec<Ipv4Addr>,
    pub cluster_cidr: Cidr,
    /// The Service CIDR (one masquerade rule for all cluster IPs in it); `None`: one rule per Service port.
    pub service_cidr: Option<Cidr>,
    /// A full resync (against `iptables-save`) at least this often.
    pub sync_period: Duration,
    /// At most one sync per this interval, however fast changes come (kube-proxy's minSyncPeriod).
    pub min_sync_interval: Duration,
    pub backend: BackendChoice,
    pub masquerade_all: bool,
    pub metrics_addr: Option<SocketAddr>,
    /// Overrides of the restore and save binaries of the chosen backend.
    pub restore_bin: Option<PathBuf>,
    pub save_bin: Option<PathBuf>,
    /// Keep routes to other nodes' pod CIDRs and turn on forwarding.
    pub manage_routes: bool,
    /// Work in this network namespace (`/run/netns/NAME`) instead of our own: rules, conntrack, routes,
    /// forwarding. For tests and for several "hosts" on one machine.
    pub netns: Option<PathBuf>,
}

async fn client(config: &Config) -> Result<Client, RunError> {
    let kc = match &config.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
        }
        None => kube::Config::infer().await?,
    };
    let kc = skiff_tls::failover::apply(kc, &config.api_servers).await.map_err(RunError::Failover)?;
    match &config.kubeconfig {
        // A node kubeconfig whose certificate the agent renews: new connections take the file's current one.
        Some(path) if skiff_tls::client::kubeconfig_credentials(path).is_ok() => {
            skiff_tls::client::rotating_client(&kc, path).map_err(RunError::Rotating)
        }
        _ => Ok(Client::try_from(kc)?),
    }
}

/// A reflector cache fed by list + watch, and a task driving it that pokes `changed` on every event.
fn informer<K>(api: Api<K>, changed: Arc<tokio::sync::Notify>) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
    let task = tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(_) => changed.notify_one(),
                Err(e) => tracing::warn!(error = %e, "watch failed; retrying with backoff"),
            }
        }
    });
    (store, task)
}

pub fn iptables_for(config: &Config) -> (IptablesCli, String) {
    let (backend, why) = match config.backend {
        BackendChoice::Nft => (Backend::Nft, "chosen by --backend".to_string()),
        BackendChoice::Legacy => (Backend::Legacy, "chosen by --backend".to_string()),
        BackendChoice::Auto => iptables::choose_backend(config.netns.clone()),
    };
    let mut cli = IptablesCli::new(backend, config.netns.clone());
    if let Some(b) = &config.restore_bin {
        cli.restore_bin = b.clone();
    }
    if let Some(b) = &config.save_bin {
        cli.save_bin = b.clone();
    }
    (cli, why)
}

/// Runs the proxy until `shutdown` resolves. Rules and routes stay in place when it returns, so a restart
/// does not drop established connections; the next start converges them with a full sync.
pub async fn run(config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), RunError> {
    let client = client(&config).await?;
    let metrics = metrics::Metrics::new()?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let metrics_task = match config.metrics_addr {
        Some(addr) => {
            let listener = tokio::net::TcpListener::bind(addr).await.map_err(|source| metrics::MetricsError::Bind { addr, source })?;
            tracing::info!(addr = %listener.local_addr().unwrap_or(addr), "serving metrics");
            let mut rx = stop_rx.clone();
            Some(tokio::spawn(metrics::serve(listener, metrics.clone(), async move {
                let _ = rx.changed().await;
            })))
        }
        None => None,
    };
    let (ipt, why) = iptables_for(&config);
    tracing::info!(backend = ipt.backend.name(), reason = %why, "iptables backend");
    // Our chains left in the other backend by an earlier run (another backend choice) would still see packets.
    let other = IptablesCli::new(if ipt.backend == Backend::Nft { Backend::Legacy } else { Backend::Nft }, config.netns.clone());
    if other.works() {
        match iptables::cleanup(&other) {
            Ok(0) => {}
            Ok(n) => tracing::info!(backend = other.backend.name(), chains = n, "removed our chains from the backend not in use"),
            Err(e) => tracing::warn!(backend = other.backend.name(), error = %e, "could not remove our chains from the backend not in use"),
        }
    }
    let proxier = Arc::new(Mutex::new(proxier::Proxier::new(Box::new(ipt), Box::new(conntrack::ConntrackCli { netns: config.netns.clone() }))));
    let changed = Arc::new(tokio::sync::Notify::new());
    let (services, t1) = informer(Api::<Service>::all(client.clone()), changed.clone());
    let (slices, t2) = informer(Api::<EndpointSlice>::all(client.clone()), changed.clone());
    let (nodes, t3) = informer(Api::<Node>::all(client.clone()), changed.clone());
    let routes = if config.manage_routes {
        match routes::RouteWorker::start(config.netns.clone()) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::error!(error = %e, "no route management: pods on other nodes will be unreachable");
                None
            }
        }
    } else {
        None
    };

    let mut shutdown = std::pin::pin!(shutdown);
    // An empty cache would render "no Services" and wipe every rule: sync only once all three are filled.
    tokio::select! {
        r = async {
            services.wait_until_ready().await.map_err(|e| RunError::Cache("Service", e))?;
            slices.wait_until_ready().await.map_err(|e| RunError::Cache("EndpointSlice", e))?;
            nodes.wait_until_ready().await.map_err(|e| RunError::Cache("Node", e))
        } => r?,
        _ = &mut shutdown => {
            let _ = stop_tx.send(true);
            return Ok(());
        }
    }
    tracing::info!("caches filled; syncing");
    let mut model = ModelCache::default();
    let mut last_full = None::<Instant>;
    let mut failed = false;
    loop {
        let full = failed || last_full.is_none_or(|t| t.elapsed() >= config.sync_period);
        let node = NodeConfig {
            node_name: config.node_name.clone(),
            cluster_cidr: config.cluster_cidr,
            masquerade_all: config.masquerade_all,
            service_cidr: config.service_cidr,
        };
        let (state, warnings) = model.build(node, &services.state(), &slices.state());
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let p = proxier.clone();
        let result = tokio::task::spawn_blocking(move || p.lock().expect("proxier lock").sync(&state, full)).await;
        match result {
            Ok(Ok(report)) => {
                metrics.record(&report);
                if report.full {
                    last_full = Some(Instant::now());
                }
                failed = false;
                tracing::info!(
                    full = report.full, services = services.len(), chains_written = report.chains_written,
                    chains_deleted = report.chains_deleted, rules_written = report.rules_written,
                    ms = report.duration.as_millis() as u64, stale_udp = report.stale_flows_deleted, "synced"
                );
            }
            Ok(Err(e)) => {
                metrics.sync_errors.inc();
                failed = true;
                tracing::error!(error = %e, "sync failed; the next one rewrites everything");
            }
            Err(e) => {
                metrics.sync_errors.inc();
                failed = true;
                tracing::error!(error = %e, "sync task panicked");
            }
        }
        if let Some(worker) = &routes {
            let mut node_list: Vec<Node> = nodes.state().iter().map(|n| (**n).clone()).collect();
            node_list.retain(|n| !is_me(n, &config));
            let (desired, warnings) = routes::desired_routes(&node_list, &config.node_name);
            for w in &warnings {
                tracing::warn!("{w}");
            }
            match worker.sync(desired).await {
                Ok(r) => {
                    for e in &r.failed {
                        tracing::warn!(error = %e, "a route could not be set; the others are");
                    }
                    metrics.routes.set(r.total as i64);
                    if r.added + r.deleted > 0 {
                        tracing::info!(added = r.added, deleted = r.deleted, total = r.total, "routes synced");
                    }
                }
                Err(e) => tracing::error!(error = %e, "route sync failed; retrying"),
            }
        }
        // Rate limit, then wait for a change, the periodic resync, or shutdown.
        let wait = if failed { Duration::from_secs(2) } else { config.sync_period.saturating_sub(last_full.map(|t| t.elapsed()).unwrap_or_default()) };
        tokio::select! {
            _ = tokio::time::sleep(config.min_sync_interval) => {}
            _ = &mut shutdown => break,
        }
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
            _ = &mut shutdown => break,
        }
    }
    tracing::info!("shutting down (rules and routes stay in place)");
    let _ = stop_tx.send(true);
    for t in [t1, t2, t3] {
        t.abort();
    }
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    Ok(())
}

/// `skiff-netproxy --cleanup`: removes every chain and jump of ours from both backends (rules of other owners
/// stay). Routes are left alone. Returns the number of chains removed.
pub fn cleanup(netns: Option<PathBuf>) -> Result<usize, iptables::IptablesError> {
    let mut n = 0;
    for backend in [Backend::Nft, Backend::Legacy] {
        let cli = IptablesCli::new(backend, netns.clone());
        if cli.works() {
            n += iptables::cleanup(&cli)?;
        }
    }
    Ok(n)
}

/// Is `n` this node (by name, or by one of our addresses)?
fn is_me(n: &Node, config: &Config) -> bool {
    if n.metadata.name.as_deref() == Some(config.node_name.as_str()) {
        return true;
    }
    n.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .any(|a| a.address.parse::<Ipv4Addr>().is_ok_and(|ip| config.node_ips.contains(&ip)))
}
