//! The pod's /etc/hosts, /etc/resolv.conf and /etc/hostname, bind-mounted into every container.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use super::SandboxError;

pub struct PodFiles {
    pub hosts: PathBuf,
    pub resolv_conf: PathBuf,
    pub hostname: PathBuf,
}

pub fn render_hosts(hostname: &str, ip: Ipv4Addr) -> String {
    format!(
        "# Managed by skiff-agent.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n{ip}\t{hostname}\n"
    )
}

pub fn write(pod_dir: &Path, hostname: &str, ip: Ipv4Addr) -> Result<PodFiles, SandboxError> {
    let files = PodFiles {
        hosts: pod_dir.join("etc-hosts"),
        resolv_conf: pod_dir.join("resolv.conf"),
        hostname: pod_dir.join("hostname"),
    };
    let resolv = std::fs::read("/etc/resolv.conf").unwrap_or_default();
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| SandboxError::Files { path, source }
    };
    std::fs::create_dir_all(pod_dir).map_err(err(pod_dir))?;
    std::fs::write(&files.hosts, render_hosts(hostname, ip)).map_err(err(&files.hosts))?;
    std::fs::write(&files.resolv_conf, resolv).map_err(err(&files.resolv_conf))?;
    std::fs::write(&files.hostname, format!("{hostname}\n")).map_err(err(&files.hostname))?;
    Ok(files)
}
