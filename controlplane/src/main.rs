//! `skiff-controlplane`: the API server over the embedded store (or etcd), in the foreground.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use skiff_controlplane::apiserver::{self, kubeconfig, ApiServer, Config};
use skiff_controlplane::auth::pki::{Ca, LeafSpec};
use skiff_controlplane::auth::{self, tls};
use skiff_controlplane::controllers::leader::{self, LeaderConfig};
use skiff_controlplane::controllers::{self, ControllersConfig};
use skiff_controlplane::scheduler::{self, SchedulerConfig};
use skiff_controlplane::store::etcd::{EtcdConfig, EtcdTls, EtcdStore};
use skiff_controlplane::store::sqlite::{Durability, SqliteConfig, SqliteStore};
use skiff_controlplane::store::Store;

#[derive(Parser, Debug)]
#[command(name = "skiff-controlplane", version, about = "Skiff control plane: a Kubernetes-compatible API server", args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Directory for the store and the admin kubeconfig.
    #[arg(long, default_value = "/var/lib/skiff/controlplane", env = "SKIFF_DATA_DIR")]
    data_dir: PathBuf,
    /// Address to serve the API on.
    #[arg(long, default_value = "127.0.0.1:6443")]
    listen: SocketAddr,
    /// Address written into the kubeconfig (default: the listen address; 0.0.0.0 becomes 127.0.0.1).
    #[arg(long)]
    advertise: Option<String>,
    /// Service ClusterIP range.
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: String,
    /// NodePort range, LO-HI.
    #[arg(long, default_value = "30000-32767")]
    node_port_range: String,
    /// etcd client URLs, comma-separated (http://127.0.0.1:2379,...): keep the cluster state in etcd instead of
    /// the embedded SQLite store in --data-dir.
    #[arg(long, value_delimiter = ',', env = "SKIFF_ETCD_SERVERS")]
    etcd_servers: Vec<String>,
    /// Prefix for every key in etcd. The store's keys already start with /registry/, so the default (none) gives
    /// the Kubernetes layout; set one (such as /cluster-a) to share an etcd between clusters.
    #[arg(long, default_value = "")]
    etcd_prefix: String,
    /// The CA (PEM) that signed etcd's serving certificate: talk to etcd over TLS (https:// endpoints).
    #[arg(long)]
    etcd_cafile: Option<PathBuf>,
    /// Client certificate (PEM) for etcd's --client-cert-auth; with --etcd-keyfile.
    #[arg(long, requires = "etcd_keyfile")]
    etcd_certfile: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "etcd_certfile")]
    etcd_keyfile: Option<PathBuf>,
    /// Store durability: full (fsync every commit; survives power loss) or normal (survives a crash).
    #[arg(long, default_value = "full", value_parser = ["full", "normal"])]
    durability: String,
    /// Compact store history older than this many seconds.
    #[arg(long, default_value_t = 300)]
    compaction_interval_secs: u64,
    /// Seconds between watch bookmarks.
    #[arg(long, default_value_t = 30)]
    bookmark_interval_secs: u64,
    /// Cluster pod CIDR, divided among the nodes by node IPAM.
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: String,
    /// Prefix length of each node's pod CIDR.
    #[arg(long, default_value_t = 24)]
    node_cidr_mask_size: u8,
    /// tolerationSeconds given to pods for the not-ready and unreachable taints (eviction delay from a lost node).
    #[arg(long, default_value_t = 300)]
    default_toleration_seconds: i64,
    /// A node that has not renewed its Lease for this long is marked unreachable.
    #[arg(long, default_value_t = 40)]
    node_monitor_grace_period_secs: u64,
    /// Do not run the controllers (ReplicaSet, Deployment, DaemonSet, Job, endpoints, node IPAM, node lifecycle).
    #[arg(long)]
    disable_controllers: bool,
    /// Do not run the scheduler in this process.
    #[arg(long)]
    disable_scheduler: bool,
    /// Run the cloud controller manager with this bare-host inventory (machines and a LoadBalancer address pool).
    #[arg(long)]
    cloud_inventory: Option<PathBuf>,
    /// Serve no API: run only the controllers, scheduler and cloud controllers (those not disabled) against the API
    /// server at this URL (http://HOST:PORT), as a separate kube-controller-manager or kube-scheduler would.
    #[arg(long)]
    api_server: Option<String>,
    /// With --api-server: the kubeconfig holding the credentials (and CA) to use.
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// Bearer tokens, one `token,user,uid,"group1,group2"` per line (kube-apiserver's --token-auth-file).
    #[arg(long)]
    token_auth_file: Option<PathBuf>,
    /// More DNS names or IP addresses for the serving certificate, comma-separated (the listen and advertise
    /// addresses, 127.0.0.1, localhost, the kubernetes Service's names and ClusterIP are always in it).
    #[arg(long, value_delimiter = ',')]
    tls_san: Vec<String>,
    /// Lifetime of the certificates the control plane issues itself (serving, admin, towards agents); each is
    /// renewed in place once two thirds of it have passed.
    #[arg(long, default_value_t = 365 * 24 * 3600)]
    cert_validity_secs: u64,
    /// The `iss` of service account tokens (and the default API audience).
    #[arg(long, default_value = auth::satoken::DEFAULT_ISSUER)]
    service_account_issuer: String,
    /// The ECDSA P-256 private key (PKCS#8 PEM) that signs service account tokens; every API server of a cluster
    /// needs the same one. Default: `<data-dir>/pki/sa.key`, made on first start.
    #[arg(long)]
    service_account_signing_key_file: Option<PathBuf>,
    /// Audiences a token must have to be accepted by the API, comma-separated (default: the issuer).
    #[arg(long, value_delimiter = ',')]
    api_audiences: Vec<String>,
    /// Longest lifetime of a service account token handed out, in seconds (0: as long as asked).
    #[arg(long, default_value_t = 0)]
    service_account_max_token_expiration_secs: u64,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Issue a client certificate from the cluster CA in --data-dir and write a kubeconfig with it (as
    /// `kubeadm kubeconfig user`): for node agents (`--user system:node:NAME --group system:nodes`), a separate
    /// controller manager (`--user system:kube-controller-manager`), or people (then bind them a role with RBAC).
    Kubeconfig {
        #[arg(long, default_value = "/var/lib/skiff/controlplane", env = "SKIFF_DATA_DIR")]
        data_dir: PathBuf,
        /// The user name (the certificate's CN).
        #[arg(long)]
        user: String,
        /// A group (the certificate's O).
        #[arg(long)]
        group: Option<String>,
        /// The API server's URL (https://HOST:PORT).
        #[arg(long)]
        server: String,
        /// Where to write the kubeconfig (mode 0600).
        #[arg(long)]
        out: PathBuf,
        /// Lifetime of the certificate.
        #[arg(long, default_value_t = 365 * 24 * 3600)]
        validity_secs: u64,
    },
}

/// `skiff-controlplane kubeconfig ...`
fn issue_kubeconfig(cmd: &Command) -> anyhow::Result<()> {
    let Command::Kubeconfig { data_dir, user, group, server, out, validity_secs } = cmd;
    anyhow::ensure!(!user.trim().is_empty(), "--user must not be empty");
    anyhow::ensure!(server.starts_with("https://"), "--server must be an https:// URL");
    let _: axum::http::Uri = server.parse().with_context(|| format!("--server {server:?} is not a URL"))?;
    let pki = data_dir.join("pki");
    anyhow::ensure!(pki.join("ca.key").exists(), "no cluster CA in {} (start the control plane once first)", pki.display());
    let ca = Ca::load_or_create(&pki)?;
    let issued = ca.issue(&LeafSpec {
        common_name: user.clone(),
        organization: group.clone(),
        client: true,
        validity: Some(Duration::from_secs((*validity_secs).max(60))),
        ..Default::default()
    })?;
    let text = kubeconfig::render_tls(server, user, &ca.cert_pem, &issued.cert_pem, &issued.key_pem);
    kubeconfig::write_text(out, &text).with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// Resolves when `stop` reads true (or its sender is gone).
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "skiff".into())
}

fn parse_ports(s: &str) -> anyhow::Result<(u16, u16)> {
    let (lo, hi) = s.split_once('-').context("--node-port-range must be LO-HI")?;
    let (lo, hi): (u16, u16) = (lo.trim().parse()?, hi.trim().parse()?);
    anyhow::ensure!(lo > 0 && lo < hi, "--node-port-range: LO must be below HI");
    Ok((lo, hi))
}

/// Start the parts that run behind leader election (controllers, scheduler, cloud controllers; each unless disabled)
/// against the API server at `self_url`, until `stop_rx` reads true.
fn spawn_elected(args: &Args, client_config: &kube::Config, stop_rx: tokio::sync::watch::Receiver<bool>) -> anyhow::Result<[Option<tokio::task::JoinHandle<()>>; 3]> {
    // One set of informers for the process: the controllers, the node lifecycle and the scheduler read the same
    // pod and node caches (started by whichever needs them first; kept across a loss of leadership).
    let informers = {
        let client = kube::Client::try_from(client_config.clone()).context("building the informers' API client")?;
        controllers::Informers::new(client, stopped(stop_rx.clone()))
    };
    // Leader election: of several control planes, one runs the controllers and one the scheduler.
    let identity = format!("{}_{}", hostname(), uuid::Uuid::new_v4());
    let controllers = if args.disable_controllers {
        None
    } else {
        // The controllers talk to this API server over HTTPS, as they would to any other.
        let client = kube::Client::try_from(client_config.clone()).context("building the controllers' API client")?;
        let cluster_cidr = apiserver::parse_cidr(&args.cluster_cidr).map_err(anyhow::Error::msg).context("--cluster-cidr")?;
        anyhow::ensure!(
            args.node_cidr_mask_size >= cluster_cidr.1 && args.node_cidr_mask_size <= 30,
            "--node-cidr-mask-size must be between the cluster CIDR's prefix ({}) and 30",
            cluster_cidr.1
        );
        let lifecycle = controllers::node_lifecycle::LifecycleConfig {
            grace: Duration::from_secs(args.node_monitor_grace_period_secs.max(1)),
            ..Default::default()
        };
        let config =
            ControllersConfig { cluster_cidr, node_cidr_mask: args.node_cidr_mask_size, lifecycle, ..ControllersConfig::default() };
        let elect = LeaderConfig::new("kube-controller-manager", &identity);
        let informers = informers.clone();
        Some(tokio::spawn(leader::run_elected(client, elect, stop_rx.clone(), move |stop| {
            controllers::run_with(informers.clone(), config.clone(), stopped(stop))
        })))
    };
    let scheduler = if args.disable_scheduler {
        None
    } else {
        let client = kube::Client::try_from(client_config.clone()).context("building the scheduler's API client")?;
        let elect = LeaderConfig::new("kube-scheduler", &identity);
        let informers = informers.clone();
        Some(tokio::spawn(leader::run_elected(client, elect, stop_rx.clone(), move |stop| {
            scheduler::run_with(informers.clone(), SchedulerConfig::default(), stopped(stop))
        })))
    };
    let cloud = match &args.cloud_inventory {
        None => None,
        Some(path) => {
            let provider: Arc<dyn skiff_controlplane::cloud::CloudProvider> = Arc::new(
                skiff_controlplane::cloud::inventory::Inventory::open(path.clone()).map_err(anyhow::Error::msg).context("--cloud-inventory")?,
            );
            let client = kube::Client::try_from(client_config.clone()).context("building the cloud controllers' API client")?;
            let elect = LeaderConfig::new("cloud-controller-manager", &identity);
            Some(tokio::spawn(leader::run_elected(client.clone(), elect, stop_rx.clone(), move |stop| {
                skiff_controlplane::cloud::run(client.clone(), provider.clone(), Duration::from_secs(60), stopped(stop))
            })))
        }
    };
    Ok([controllers, scheduler, cloud])
}

/// `--api-server`: no API server here, only the elected parts, until SIGINT or SIGTERM.
async fn run_against(args: &Args, url: &str) -> anyhow::Result<()> {
    let uri: axum::http::Uri = url.parse().with_context(|| format!("--api-server {url:?} is not a URL"))?;
    let mut config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path).with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.with_context(|| format!("using {}", path.display()))?
        }
        None => kube::Config::new(uri.clone()),
    };
    config.cluster_url = uri;
    tracing::info!(api_server = url, "running controllers against a separate API server");
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let tasks = spawn_elected(args, &config, stop_rx)?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).context("SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    // Hand the Leases back before exiting, so that another instance takes over at once.
    for task in tasks.into_iter().flatten() {
        let _ = tokio::time::timeout(Duration::from_secs(12), task).await;
    }
    Ok(())
}

/// What the serving certificate names: loopback, the listen and advertise addresses, the kubernetes Service (names
/// and ClusterIP), the host name, and --tls-san.
fn serving_spec(args: &Args, local: SocketAddr, host: &str, config: &Config, validity: Duration) -> LeafSpec {
    use std::net::IpAddr;
    let mut dns = vec![
        "localhost".to_string(),
        "kubernetes".into(),
        "kubernetes.default".into(),
        "kubernetes.default.svc".into(),
        "kubernetes.default.svc.cluster.local".into(),
    ];
    let mut ips: Vec<IpAddr> = vec![IpAddr::from([127, 0, 0, 1])];
    let (net, _) = config.service_cidr;
    ips.push(IpAddr::V4(std::net::Ipv4Addr::from(u32::from(net) + 1)));
    if !local.ip().is_unspecified() {
        ips.push(local.ip());
    }
    let advertised = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host).trim_matches(['[', ']']);
    let h = hostname();
    for name in std::iter::once(advertised).chain(args.tls_san.iter().map(String::as_str)).chain(std::iter::once(h.as_str())) {
        match name.parse::<IpAddr>() {
            Ok(ip) => ips.push(ip),
            Err(_) if !name.is_empty() => dns.push(name.to_string()),
            Err(_) => {}
        }
    }
    ips.sort();
    ips.dedup();
    dns.sort();
    dns.dedup();
    LeafSpec { common_name: "kube-apiserver".into(), server: true, dns_names: dns, ips, validity: Some(validity), ..Default::default() }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let args = Args::parse();
    if let Some(cmd) = &args.command {
        return issue_kubeconfig(cmd);
    }
    if let Some(url) = &args.api_server {
        return run_against(&args, url).await;
    }
    let config = Config {
        service_cidr: apiserver::parse_cidr(&args.service_cidr).map_err(anyhow::Error::msg).context("--service-cidr")?,
        node_ports: parse_ports(&args.node_port_range)?,
        compaction_interval: Duration::from_secs(args.compaction_interval_secs.max(1)),
        bookmark_interval: Duration::from_secs(args.bookmark_interval_secs.max(1)),
        default_toleration_seconds: args.default_toleration_seconds.max(0),
        ..Config::default()
    };
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("creating {}", args.data_dir.display()))?;
    let (store, sqlite): (Arc<dyn Store>, Option<Arc<SqliteStore>>) = if args.etcd_servers.is_empty() {
        let durability = if args.durability == "normal" { Durability::Normal } else { Durability::Full };
        let store = SqliteStore::open(SqliteConfig { durability, ..SqliteConfig::new(args.data_dir.join("store.db")) })
            .context("opening the store")?;
        let store = Arc::new(store);
        (store.clone(), Some(store))
    } else {
        let read = |flag: &str, p: &PathBuf| std::fs::read(p).with_context(|| format!("{flag} {}", p.display()));
        let tls = match (&args.etcd_cafile, &args.etcd_certfile, &args.etcd_keyfile) {
            (None, None, None) => None,
            (None, _, _) => anyhow::bail!("--etcd-certfile/--etcd-keyfile need --etcd-cafile (the CA of etcd's serving certificate)"),
            (Some(ca), cert, key) => Some(EtcdTls {
                ca_pem: read("--etcd-cafile", ca)?,
                client: match (cert, key) {
                    (Some(c), Some(k)) => Some((read("--etcd-certfile", c)?, read("--etcd-keyfile", k)?)),
                    _ => None,
                },
            }),
        };
        let config = EtcdConfig { endpoints: args.etcd_servers.clone(), prefix: args.etcd_prefix.clone(), tls };
        let store = EtcdStore::connect(config).await.context("connecting to etcd")?;
        tracing::info!(endpoints = %args.etcd_servers.join(","), prefix = %args.etcd_prefix, "store: etcd");
        (Arc::new(store), None)
    };
    // The cluster CA, and the certificates this process presents: serving, and towards node agents.
    let ca = Arc::new(Ca::load_or_create(&args.data_dir.join("pki")).context("the cluster CA")?);
    let validity = Duration::from_secs(args.cert_validity_secs.max(60));
    let tokens = match &args.token_auth_file {
        Some(p) => auth::authn::load_token_file(p).map_err(anyhow::Error::msg).context("--token-auth-file")?,
        None => Default::default(),
    };
    let sa_key = args.service_account_signing_key_file.clone().unwrap_or_else(|| args.data_dir.join("pki").join("sa.key"));
    let issuer = auth::satoken::TokenIssuer::load_or_create(&sa_key, &args.service_account_issuer, args.api_audiences.clone())
        .context("the service account signing key")?;
    let service_accounts = auth::ServiceAccounts {
        issuer: Arc::new(issuer),
        root_ca_pem: ca.cert_pem.clone(),
        max_expiration: Some(args.service_account_max_token_expiration_secs).filter(|s| *s > 0).map(Duration::from_secs),
    };
    let authz = auth::Auth::new(store.clone(), tokens, Some(service_accounts));
    let kubelet_client = tls::RotatingCert::new(
        &ca,
        LeafSpec { common_name: auth::KUBELET_CLIENT_USER.into(), client: true, validity: Some(validity), ..Default::default() },
    )
    .map_err(anyhow::Error::msg)?;
    let kubelet_tls = Arc::new(tls::kubelet_client_config(kubelet_client.clone()).map_err(anyhow::Error::msg)?);
    let server = ApiServer::with_auth(store, config.clone(), Some(authz.clone()), Some(kubelet_tls));
    server.start().await.map_err(|e| anyhow::anyhow!("starting the API server: {e}"))?;
    authz.policy.wait_loaded().await;
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    let local = listener.local_addr()?;
    let host = match &args.advertise {
        Some(a) => a.clone(),
        None if local.ip().is_unspecified() => format!("127.0.0.1:{}", local.port()),
        None => local.to_string(),
    };
    let serving = tls::RotatingCert::new(&ca, serving_spec(&args, local, &host, &config, validity)).map_err(anyhow::Error::msg)?;
    let tls_config = Arc::new(tls::server_config(serving.clone(), &ca.cert_pem, false).map_err(anyhow::Error::msg)?);
    // The in-process clients (controllers, scheduler, cloud) call this server where it listens (0.0.0.0 means
    // loopback), over TLS, with the loopback token.
    let self_url = if local.ip().is_unspecified() { format!("https://127.0.0.1:{}", local.port()) } else { format!("https://{local}") };
    let mut client_config = kube::Config::new(self_url.parse()?);
    client_config.root_cert = Some(auth::pki::pem_blocks(&ca.cert_pem, "CERTIFICATE"));
    client_config.auth_info.token = Some(authz.loopback_token.clone().into());
    let kc = args.data_dir.join("kubeconfig");
    let admin = LeafSpec {
        common_name: "skiff-admin".into(),
        organization: Some(auth::authn::MASTERS.into()),
        client: true,
        validity: Some(validity),
        ..Default::default()
    };
    let write_admin = {
        let (ca, kc, server_url) = (ca.clone(), kc.clone(), format!("https://{host}"));
        move || -> anyhow::Result<std::time::SystemTime> {
            let issued = ca.issue(&admin)?;
            let text = kubeconfig::render_tls(&server_url, "skiff-admin", &ca.cert_pem, &issued.cert_pem, &issued.key_pem);
            kubeconfig::write_text(&kc, &text).with_context(|| format!("writing {}", kc.display()))?;
            Ok(issued.not_after)
        }
    };
    let mut admin_expiry = write_admin()?;
    // Renew the serving, agent-client and admin certificates in place before they expire.
    {
        let (ca, serving, kubelet_client) = (ca.clone(), serving.clone(), kubelet_client.clone());
        let every = (validity / 20).clamp(Duration::from_secs(1), Duration::from_secs(60));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                for (what, cert) in [("serving", &serving), ("agent client", &kubelet_client)] {
                    match cert.rotate_if_due(&ca) {
                        Ok(true) => tracing::info!(certificate = what, "certificate renewed"),
                        Ok(false) => {}
                        Err(e) => tracing::error!(certificate = what, error = %e, "renewing a certificate"),
                    }
                }
                let left = admin_expiry.duration_since(std::time::SystemTime::now()).unwrap_or_default();
                if left < validity / 3 {
                    match write_admin() {
                        Ok(t) => {
                            admin_expiry = t;
                            tracing::info!("admin kubeconfig renewed");
                        }
                        Err(e) => tracing::error!(error = %e, "renewing the admin kubeconfig"),
                    }
                }
            }
        });
    }
    // The default/kubernetes Service and its endpoints: this server's address as pods reach it.
    {
        use std::net::ToSocketAddrs;
        let advertised = host.to_socket_addrs().ok().and_then(|mut a| a.next()).unwrap_or(local);
        let me = apiserver::kubernetes_service::pod_facing_address(advertised);
        match me {
            Some(a) => tracing::info!(address = %a, "endpoint of the kubernetes Service"),
            None => tracing::warn!("no address pods can reach this server at: it is not an endpoint of the kubernetes Service"),
        }
        apiserver::kubernetes_service::spawn(Arc::downgrade(&server), me, advertised.port());
    }
    tracing::info!(listen = %local, kubeconfig = %kc.display(), "skiff control plane serving");
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {},
        }
        tracing::info!("shutting down");
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let [controllers, scheduler, cloud] = spawn_elected(&args, &client_config, stop_rx)?;
    // Node join and renewal: approve and sign CertificateSigningRequests with the cluster CA.
    let signer = tokio::spawn(auth::csr::run(
        kube::Client::try_from(client_config.clone()).context("building the certificate signer's API client")?,
        ca.clone(),
        validity,
    ));
    let stopping = Arc::new(tokio::sync::Notify::new());
    let stopping_tx = stopping.clone();
    let serve = apiserver::serve_tls(listener, server, tls_config, async move {
        shutdown.await;
        let _ = stop_tx.send(true);
        // Keep serving while the elected parts stop and hand their Leases back, so that a restarted or standby
        // control plane takes over at once instead of waiting for the Leases to expire.
        for task in [controllers, scheduler, cloud].into_iter().flatten() {
            let _ = tokio::time::timeout(Duration::from_secs(12), task).await;
        }
        stopping_tx.notify_one();
    });
    // Graceful shutdown waits for open connections (watches of clients that do not go away): bounded.
    tokio::select! {
        r = serve => r?,
        _ = async { stopping.notified().await; tokio::time::sleep(Duration::from_secs(10)).await } => {
            tracing::warn!("connections still open 10 s after shutdown began; exiting anyway");
        }
    }
    signer.abort();
    if let Some(store) = sqlite {
        store.close();
    }
    Ok(())
}
