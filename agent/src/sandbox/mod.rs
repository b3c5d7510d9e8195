//! The pod sandbox: network namespace, veth on the node bridge, IP address, and /etc files.

pub mod files;
pub mod ipam;
pub mod netns;
pub mod network;

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error(transparent)]
    Network(#[from] network::NetworkError),
    #[error(transparent)]
    Ipam(#[from] ipam::IpamError),
    #[error("writing {path}: {source}")]
    Files { path: std::path::PathBuf, source: std::io::Error },
}
