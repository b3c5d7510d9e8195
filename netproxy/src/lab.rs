//! Throwaway network namespaces for the privileged tests and the benchmark (`ip netns add`/`del`). Nothing here
//! touches the caller's own namespace: every interface, route and rule goes into a namespace made here, with no
//! route out of the machine, and the namespace is deleted when its guard drops — also when a test fails.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("running {cmd}: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("{cmd} failed ({status}): {stderr}")]
    Failed { cmd: String, status: std::process::ExitStatus, stderr: String },
}

/// A named network namespace that is deleted on drop.
#[derive(Debug)]
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// Creates `/run/netns/<name>` with loopback up.
    pub fn create(name: &str) -> Result<Netns, LabError> {
        let _ = Command::new("ip").args(["netns", "del", name]).stderr(Stdio::null()).status();
        run("ip", &["netns", "add", name])?;
        let ns = Netns { name: name.to_string() };
        ns.exec(&["ip", "link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }

    /// Runs a command inside the namespace; fails on a non-zero exit.
    pub fn exec(&self, args: &[&str]) -> Result<Output, LabError> {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).stderr(Stdio::null()).status();
    }
}

/// Runs a command, failing on a non-zero exit.
pub fn run(cmd: &str, args: &[&str]) -> Result<Output, LabError> {
    let line = format!("{cmd} {}", args.join(" "));
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|source| LabError::Spawn { cmd: line.clone(), source })?;
    if !out.status.success() {
        return Err(LabError::Failed { cmd: line, status: out.status, stderr: String::from_utf8_lossy(&out.stderr).trim().into() });
    }
    Ok(out)
}

/// Can this process make network namespaces (root, `ip netns` present)? Tests skip cleanly when not.
pub fn available() -> bool {
    let name = format!("skiff-np-probe-{}", std::process::id());
    nix::unistd::geteuid().is_root() && Netns::create(&name).is_ok()
}
