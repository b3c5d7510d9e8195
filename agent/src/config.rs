//! The agent's configuration: node identity, directories, and where the runtime binary is.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("reading the kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("inferring the client config: {0}")]
    Infer(#[from] kube::config::InferConfigError),
    #[error("API server failover: {0}")]
    Failover(String),
    #[error("building the client: {0}")]
    Build(#[from] kube::Error),
    #[error("building the client: {0}")]
    Rotating(String),
}

#[derive(Clone, Debug)]
pub struct Config {
    pub node_name: String,
    pub node_ip: IpAddr,
    /// 0 binds an ephemeral port (tests); the bound port is what the Node reports.
    pub port: u16,
    pub kubeconfig: Option<PathBuf>,
    /// Several API servers (`host:port`) to fail over between with the kubeconfig's credentials; empty: its server.
    pub api_servers: Vec<String>,
    /// A kubeconfig with a bootstrap token: used to obtain `kubeconfig` (TLS bootstrap) when it does not exist.
    pub bootstrap_kubeconfig: Option<PathBuf>,
    /// Images, bundles, IPAM state (`/var/lib/skiff`).
    pub root_dir: PathBuf,
    /// Runtime state, netns bind mounts, monitor state and exit files (`/run/skiff`).
    pub run_dir: PathBuf,
    /// CRI log files (`/var/log/pods`).
    pub log_dir: PathBuf,
    /// The `skiff-runtime` binary.
    pub runtime_bin: PathBuf,
    /// Top of the pod cgroups: `<cgroup_root>/<qos>/pod<uid>/<container-id>`.
    pub cgroup_root: String,
    pub bridge: String,
    pub max_pods: u32,
    /// A container's log file is rotated when it reaches this size (the kubelet's containerLogMaxSize).
    pub log_max_size: u64,
    /// Log files kept per container, the current one included (containerLogMaxFiles).
    pub log_max_files: u32,
    /// A directory of static pod manifests (`--pod-manifest-path`).
    pub pod_manifest_path: Option<PathBuf>,
    /// Hard eviction thresholds: when the host crosses one, the node reports the pressure condition.
    pub eviction: crate::node::Thresholds,
}

impl Config {
    pub fn images_dir(&self) -> PathBuf {
        self.root_dir.join("images")
    }
    pub fn runtime_root(&self) -> PathBuf {
        self.run_dir.join("runtime")
    }
    pub fn netns_dir(&self) -> PathBuf {
        self.run_dir.join("netns")
    }
    pub fn ipam_dir(&self) -> PathBuf {
        self.root_dir.join("ipam")
    }
    /// Per-pod directory on disk: the containers' writable layers (`<name>-<restart>/{upper,work}`) and the
    /// volumes that live on disk (emptyDir, configMap, downwardAPI).
    pub fn pod_dir(&self, uid: &str) -> PathBuf {
        self.root_dir.join("pods").join(uid)
    }
    /// Per-pod directory under the run dir (a tmpfs on a real host, as containerd's bundles under /run): the
    /// /etc files, the containers' bundles (config.json and the rootfs mount point) and the secret and projected
    /// volumes. Nothing here needs to outlive a reboot, and none of it costs a disk inode.
    pub fn sandbox_dir(&self, uid: &str) -> PathBuf {
        self.run_dir.join("sandboxes").join(uid)
    }
    /// Per-pod directory of monitor state: `<run>/pods/<uid>/<container>/<restart>/`.
    pub fn pod_state_dir(&self, uid: &str) -> PathBuf {
        self.run_dir.join("pods").join(uid)
    }
    pub fn pod_log_dir(&self, namespace: &str, name: &str, uid: &str) -> PathBuf {
        self.log_dir.join(format!("{namespace}_{name}_{uid}"))
    }

    /// The API server's address, CA and this node's credentials: --kubeconfig, else the usual places.
    pub async fn kube_config(&self) -> Result<kube::Config, ClientError> {
        let config = match &self.kubeconfig {
            Some(path) => {
                let kc = kube::config::Kubeconfig::read_from(path)?;
                kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?
            }
            None => kube::Config::infer().await?,
        };
        skiff_tls::failover::apply(config, &self.api_servers).await.map_err(ClientError::Failover)
    }

    pub async fn client(&self) -> Result<kube::Client, ClientError> {
        let config = self.kube_config().await?;
        self.client_for(config)
    }

    /// A client for `config` (from [`Config::kube_config`]). When --kubeconfig holds a client certificate, new
    /// connections take the certificate the file holds then, so that a renewed one is used without a restart.
    pub fn client_for(&self, config: kube::Config) -> Result<kube::Client, ClientError> {
        match &self.kubeconfig {
            Some(path) if skiff_tls::client::kubeconfig_credentials(path).is_ok() => {
                skiff_tls::client::rotating_client(&config, path).map_err(ClientError::Rotating)
            }
            _ => Ok(kube::Client::try_from(config)?),
        }
    }
}

/// The directory of the running executable, where the sibling `skiff-runtime` usually is.
pub fn sibling_binary(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .map(|d| d.join(name))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(name))
}
