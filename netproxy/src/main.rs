//! `skiff-netproxy`: the service proxy of one node.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use skiff_netproxy::{BackendChoice, Config};

#[derive(Clone, Copy, ValueEnum)]
enum BackendArg {
    /// nft unless only legacy holds other owners' rules (see docs/netproxy.md)
    Auto,
    Nft,
    Legacy,
}

#[derive(Parser)]
#[command(name = "skiff-netproxy", version, about = "Skiff service proxy: Services → iptables, routes to other nodes' pods")]
struct Cli {
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Several API servers (HOST:PORT, comma-separated) to fail over between, with the kubeconfig's credentials.
    #[arg(long, value_delimiter = ',')]
    api_servers: Vec<String>,
    /// Node name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// This node's IPv4 addresses (repeat or comma-separate).
    #[arg(long = "node-ip", alias = "node-ips", value_delimiter = ',')]
    node_ips: Vec<Ipv4Addr>,
    #[arg(long, default_value = "10.244.0.0/16")]
    cluster_cidr: skiff_netproxy::model::Cidr,
    /// The Service CIDR cluster IPs come from ("none": a masquerade rule per Service port, as kube-proxy).
    #[arg(long, default_value = "10.96.0.0/12")]
    service_cidr: String,
    /// Seconds between full resyncs (all chains rewritten and checked against iptables-save); changes are
    /// applied at once in between, rewriting only the chains they touch (kube-proxy also fully resyncs hourly).
    #[arg(long, default_value_t = 3600)]
    sync_period: u64,
    /// Milliseconds between two syncs at least.
    #[arg(long, default_value_t = 1000)]
    min_sync_interval: u64,
    #[arg(long, value_enum, default_value = "auto")]
    backend: BackendArg,
    #[arg(long)]
    masquerade_all: bool,
    /// Where to serve /metrics (e.g. 127.0.0.1:10249); off when not given.
    #[arg(long)]
    metrics_addr: Option<SocketAddr>,
    /// Override the backend's iptables-restore binary.
    #[arg(long)]
    iptables_restore_bin: Option<PathBuf>,
    /// Override the backend's iptables-save binary.
    #[arg(long)]
    iptables_save_bin: Option<PathBuf>,
    /// Do not manage routes to other nodes' pod CIDRs.
    #[arg(long)]
    no_routes: bool,
    /// Apply rules and routes in this network namespace (/run/netns/NAME) instead of our own.
    #[arg(long)]
    netns: Option<PathBuf>,
    /// Remove all our chains and jumps (both backends) and exit.
    #[arg(long)]
    cleanup: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    if cli.cleanup {
        let n = skiff_netproxy::cleanup(cli.netns).context("removing our chains")?;
        tracing::info!(chains = n, "removed");
        return Ok(());
    }
    let node_name = match cli.node_name {
        Some(n) => n,
        None => nix::unistd::gethostname().context("reading the host name")?.to_string_lossy().to_lowercase(),
    };
    let config = Config {
        kubeconfig: cli.kubeconfig,
        api_servers: cli.api_servers,
        node_name,
        node_ips: cli.node_ips,
        cluster_cidr: cli.cluster_cidr,
        service_cidr: match cli.service_cidr.as_str() {
            "none" => None,
            s => Some(s.parse().context("--service-cidr")?),
        },
        sync_period: Duration::from_secs(cli.sync_period.max(1)),
        min_sync_interval: Duration::from_millis(cli.min_sync_interval),
        backend: match cli.backend {
            BackendArg::Auto => BackendChoice::Auto,
            BackendArg::Nft => BackendChoice::Nft,
            BackendArg::Legacy => BackendChoice::Legacy,
        },
        masquerade_all: cli.masquerade_all,
        metrics_addr: cli.metrics_addr,
        restore_bin: cli.iptables_restore_bin,
        save_bin: cli.iptables_save_bin,
        manage_routes: !cli.no_routes,
        netns: cli.netns,
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(skiff_netproxy::run(config, async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }))?;
    Ok(())
}
