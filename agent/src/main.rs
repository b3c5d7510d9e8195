//! `skiff-agent`: the node agent, and (`skiff-agent monitor ...`) the per-container monitor it spawns when the
//! smaller `skiff-monitor` binary is not beside it.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use skiff_agent::container::monitor::MonitorArgs;
use skiff_agent::exec::tty::ExecTtyArgs;
use skiff_agent::Config;

#[derive(Parser)]
#[command(name = "skiff-agent", version, about = "Skiff node agent")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    agent: AgentArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Runs one container under a monitor (started by the agent, not by hand).
    Monitor(MonitorArgs),
    /// Runs one `kubectl exec -t` session (started by the agent, not by hand).
    ExecTty(ExecTtyArgs),
}

#[derive(clap::Args)]
struct AgentArgs {
    /// Node name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// The node's InternalIP; the agent's server listens on it.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: IpAddr,
    /// Port of the log/exec server (0: any free port, reported in the Node).
    #[arg(long, default_value_t = 10250)]
    port: u16,
    /// This node's credentials. With --bootstrap-kubeconfig, written (and renewed) by the agent itself.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// A kubeconfig holding a bootstrap token (`<id>.<secret>`): when --kubeconfig does not exist yet, the agent
    /// asks the control plane for a node certificate with it and writes --kubeconfig (the kubelet's TLS bootstrap).
    #[arg(long, requires = "kubeconfig")]
    bootstrap_kubeconfig: Option<PathBuf>,
    /// Several API servers (HOST:PORT, comma-separated) to fail over between, with the kubeconfig's credentials
    /// (a local forwarder picks the first that answers, as k3s agents do).
    #[arg(long, value_delimiter = ',')]
    api_servers: Vec<String>,
    #[arg(long, default_value = "/var/lib/skiff")]
    root_dir: PathBuf,
    #[arg(long, default_value = "/run/skiff")]
    run_dir: PathBuf,
    #[arg(long, default_value = "/var/log/pods")]
    log_dir: PathBuf,
    /// The skiff-runtime binary (default: next to this one, else from PATH).
    #[arg(long)]
    runtime: Option<PathBuf>,
    #[arg(long, default_value = "skiff")]
    cgroup_root: String,
    #[arg(long, default_value = "skiff0")]
    bridge: String,
    #[arg(long, default_value_t = 110)]
    max_pods: u32,
    /// Rotate a container's log file at this many bytes (the kubelet's --container-log-max-size, 10Mi).
    #[arg(long, default_value_t = 10 << 20)]
    container_log_max_size: u64,
    /// Log files kept per container, the current one included (--container-log-max-files).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..))]
    container_log_max_files: u32,
    /// A directory of static pod manifests, run on this node and mirrored to the API.
    #[arg(long)]
    pod_manifest_path: Option<PathBuf>,
    /// Hard eviction thresholds, as the kubelet's (`memory.available<100Mi,nodefs.available<10%,...`).
    #[arg(long, default_value = "memory.available<100Mi,nodefs.available<10%,nodefs.inodesFree<5%,pid.available<10%")]
    eviction_hard: skiff_agent::node::Thresholds,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    skiff_agent::init_logging();
    match cli.command {
        // Single-threaded on purpose: they fork the runtime and reap what it leaves them.
        Some(Command::Monitor(args)) => return skiff_agent::container::monitor::run(args),
        Some(Command::ExecTty(args)) => return skiff_agent::exec::tty::run(args),
        None => {}
    }
    let a = cli.agent;
    let node_name = match a.node_name {
        Some(n) => n,
        None => nix::unistd::gethostname().context("reading the host name")?.to_string_lossy().to_lowercase(),
    };
    let config = Config {
        node_name,
        node_ip: a.node_ip,
        port: a.port,
        kubeconfig: a.kubeconfig,
        bootstrap_kubeconfig: a.bootstrap_kubeconfig,
        api_servers: a.api_servers,
        root_dir: a.root_dir,
        run_dir: a.run_dir,
        log_dir: a.log_dir,
        runtime_bin: a.runtime.unwrap_or_else(|| skiff_agent::config::sibling_binary("skiff-runtime")),
        cgroup_root: a.cgroup_root,
        bridge: a.bridge,
        max_pods: a.max_pods,
        log_max_size: a.container_log_max_size.max(1024),
        log_max_files: a.container_log_max_files,
        pod_manifest_path: a.pod_manifest_path,
        eviction: a.eviction_hard,
    };
    // At most 8 blocking-pool threads (mounts, network namespaces, IPAM fsyncs): tokio's default of 512 let a
    // burst of 50 pod starts wake ~35, and glibc gives each thread that allocates an arena of its own (up to 8 per
    // core) whose pages stay with the process: ~1 MiB of RSS each. Eight keep two cores busy.
    let rt = tokio::runtime::Builder::new_multi_thread().max_blocking_threads(8).enable_all().build()?;
    rt.block_on(skiff_agent::run(config, async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }))
}
