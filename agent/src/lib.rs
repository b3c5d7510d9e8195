//! skiff-agent: the node agent (kubelet equivalent).
//!
//! Layout and data flow:
//! - [`node`]: registers the Node (addresses, capacity, nodeInfo, daemon endpoint), waits for its podCIDR, then
//!   renews a Lease in `kube-node-lease` every 10 s and rewrites the node conditions at least once a minute.
//! - [`pods`]: a watcher on pods with `spec.nodeName=<node>` feeds one [`pods::worker`] per pod; each worker moves
//!   through syncing → terminating → terminated. On every sync it observes the pod's containers on disk,
//!   [`pods::actions::compute_pod_actions`] (pure) decides what to do (init containers one by one, then the app
//!   containers), and the executor does it. A container's env comes from [`pods::env`] (downward API, ConfigMaps
//!   and Secrets fetched by [`pods::objects`]) and its security settings from [`container::security`].
//! - [`sandbox`]: per-pod network namespace (bind mount under `<run-dir>/netns/<uid>`), bridge `skiff0`, veth,
//!   host-local IPAM persisted under `<root-dir>/ipam`, and the pod's /etc files.
//! - [`container`]: OCI bundle generation (overlay rootfs from `skiff-images` + config.json), the `skiff-runtime`
//!   child process, and the per-container [`container::monitor`] process that owns the container's stdio, writes
//!   the CRI log file and records the exit code, so that containers and their logs outlive an agent restart.
//! - [`probes`]: startup/liveness/readiness probes (one task per started container) and postStart/preStop hooks.
//! - [`events`]: pod events with the kubelet's reasons, written in the background.
//! - [`static_pods`]: pods from manifest files on the node, mirrored to the API.
//! - [`volumes`]: emptyDir, hostPath, configMap, secret, downwardAPI and projected volumes under the pod's
//!   directory (planned purely, then set up; ConfigMap/Secret updates re-projected atomically), and the
//!   containers' bind mounts of them. Env vars from the downward API, ConfigMaps and Secrets are in
//!   [`pods::env`].
//! - [`status`]: PodStatus from the observed state, written through `pods/status` only when it changed.
//! - [`server`]: `/healthz`, `/containerLogs/{ns}/{pod}/{container}`, [`exec`]'s WebSocket exec and attach
//!   sessions, and [`portforward`]'s SPDY/3.1 sessions (plain or tunneled in WebSocket) for the API server;
//!   forwarded connections are dialed inside the pod's network namespace.

pub mod cgroups;
pub mod config;
pub mod bootstrap;
pub mod container;
pub mod events;
pub mod exec;
pub mod logs;
pub mod node;
pub mod pods;
pub mod portforward;
pub mod probes;
pub mod sandbox;
pub mod static_pods;
pub mod server;
pub mod stats;
pub mod status;
pub mod storage;
pub mod volumes;

pub use config::Config;

use std::future::Future;

/// Logging for the agent's binaries: to stderr, filtered by `RUST_LOG` (default `info`).
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
}

/// Runs the agent until `shutdown` resolves. Containers keep running when it returns.
/// Marks `dir` as the top of directory hierarchies for ext4's Orlov allocator (`chattr +T`, as for /home): each
/// pod's directory below it is placed in a block group of its own choosing instead of its parent's, and the files
/// in it follow. Without a journal (this project's CI VM has none) ext4 skips, at every inode allocation, each free
/// inode of the group that was deleted in the last minutes, reading its inode-table block: with every pod's layer,
/// log and volume inodes in one group, pod churn made each new pod's allocations walk all of the previous pods'
/// (half the agent's CPU time in a burst of 50 pod starts). Best effort: other file systems ignore or refuse it.
fn mark_top_dir(dir: &std::path::Path) {
    use rustix::fs::{ioctl_getflags, ioctl_setflags, IFlags};
    let result = std::fs::File::open(dir).map_err(|e| rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO)).and_then(|f| {
        let flags = ioctl_getflags(&f)?;
        if flags.contains(IFlags::TOPDIR) {
            return Ok(());
        }
        ioctl_setflags(&f, flags | IFlags::TOPDIR)
    });
    if let Err(e) = result {
        tracing::debug!(dir = %dir.display(), error = %e, "not marked as a top directory (chattr +T)");
    }
}

pub async fn run(mut config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
    use anyhow::Context;
    // The directories as the kernel names them (symlinks resolved, as the kubelet does with its root dir): mounts
    // under them are found by comparing with mountinfo's paths, and a path through a symlink never matches there.
    for d in [&mut config.root_dir, &mut config.run_dir, &mut config.log_dir] {
        std::fs::create_dir_all(&*d).with_context(|| format!("creating {}", d.display()))?;
        *d = std::fs::canonicalize(&*d).with_context(|| format!("resolving {}", d.display()))?;
    }
    for d in [config.root_dir.join("pods"), config.log_dir.clone()] {
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        mark_top_dir(&d);
    }
    bootstrap::ensure_credentials(&config).await.context("TLS bootstrap")?;
    let kube_config = config.kube_config().await.context("reading the API client configuration")?;
    let client = config.client_for(kube_config.clone()).context("building the API client")?;
    // The node certificate is renewed while the agent runs (with --bootstrap-kubeconfig, as the kubelet's
    // --rotate-certificates).
    let renewal = tokio::spawn(bootstrap::renewal_loop(config.clone(), client.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let listener = tokio::net::TcpListener::bind((config.node_ip, config.port))
        .await
        .with_context(|| format!("binding {}:{}", config.node_ip, config.port))?;
    let port = listener.local_addr()?.port();
    tracing::info!(node = %config.node_name, port, "agent listening");
    let mut server_stop = stop_rx.clone();
    let tls = server::tls_config(&config, &kube_config).context("the agent server's TLS")?;
    stats::spawn_sampler(config.cgroup_root.clone(), stats::shared().clone());
    let server = tokio::spawn(server::serve(listener, config.clone(), tls, async move {
        let _ = server_stop.changed().await;
    }));
    // Registration waits for the API server as long as it takes (with back-off), as the kubelet's does.
    let mut backoff = std::time::Duration::from_secs(1);
    let node = loop {
        match node::register(&client, &config, port).await {
            Ok(n) => break n,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "registering the node");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
            }
        }
    };
    let pod_cidr = node::wait_for_pod_cidr(&client, &config.node_name).await.context("waiting for the podCIDR")?;
    tracing::info!(%pod_cidr, "node has its pod CIDR");
    let heartbeat = tokio::spawn(node::heartbeat(client.clone(), config.clone(), node, stop_rx.clone()));
    let env = pods::PodEnv::new(client.clone(), config.clone(), pod_cidr).await.context("preparing the pod environment")?;
    let pods_task = tokio::spawn(pods::run(env, stop_rx.clone()));
    let storage_task = tokio::spawn(storage::run(client.clone(), config.node_name.clone(), stop_rx.clone()));
    let static_task = config
        .pod_manifest_path
        .clone()
        .map(|dir| tokio::spawn(static_pods::run(client.clone(), config.node_name.clone(), dir, stop_rx.clone())));
    shutdown.await;
    tracing::info!("shutting down (containers keep running)");
    let _ = stop_tx.send(true);
    let _ = pods_task.await;
    if let Some(t) = static_task {
        let _ = t.await;
    }
    let _ = heartbeat.await;
    let _ = server.await;
    let _ = storage_task.await;
    renewal.abort();
    Ok(())
}
