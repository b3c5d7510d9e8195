//! Stale UDP conntrack entries. UDP has no connection end, so a client that kept sending to a Service keeps its
//! conntrack entry — and its old DNAT to an endpoint that is gone — until the entry times out. When endpoints go
//! away (or a Service gets its first endpoint after answering with REJECT), we delete those entries.
//! [`stale_flows`] decides (pure); the [`Conntrack`] trait does it (the `conntrack` CLI from the Debian package
//! `conntrack`; netlink conntrack has no maintained Rust crate).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};

use crate::model::{DesiredState, Protocol, ServicePort};

#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("starting conntrack: {0}")]
    Spawn(std::io::Error),
    #[error("conntrack {args} failed ({status}): {stderr}")]
    Failed { args: String, status: std::process::ExitStatus, stderr: String },
}

/// A set of UDP conntrack entries to delete: those whose original destination (and port) match, optionally only
/// the ones DNATed to `dnat_to`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Flow {
    /// `None`: any destination (NodePorts, which arrive on any node address).
    pub orig_dst: Option<Ipv4Addr>,
    pub orig_dport: u16,
    pub dnat_to: Option<Ipv4Addr>,
}

pub trait Conntrack: Send + Sync {
    fn delete_udp(&self, flow: &Flow) -> Result<(), ConntrackError>;
}

/// The entries that became stale between two states.
pub fn stale_flows(old: &DesiredState, new: &DesiredState) -> Vec<Flow> {
    let node = &new.node.node_name;
    let mut out = BTreeSet::new();
    let udp = |s: &DesiredState| s.services.iter().any(|p| p.id.protocol == Protocol::Udp);
    if !udp(old) && !udp(new) {
        return Vec::new();
    }
    let new_by_id: std::collections::BTreeMap<_, _> = new.services.iter().map(|s| (&s.id, s)).collect();
    for o in old.services.iter().filter(|s| s.id.protocol == Protocol::Udp) {
        let old_eps: BTreeSet<Ipv4Addr> = o.usable_endpoints(node, false).iter().map(|e| e.ip).collect();
        let n = new_by_id.get(&o.id);
        let new_eps: BTreeSet<Ipv4Addr> =
            n.map(|n| n.usable_endpoints(node, false).iter().map(|e| e.ip).collect()).unwrap_or_default();
        for gone in old_eps.difference(&new_eps) {
            for (dst, port) in destinations(o) {
                out.insert(Flow { orig_dst: dst, orig_dport: port, dnat_to: Some(*gone) });
            }
        }
    }
    // A Service that had no endpoint: clients' entries recorded the REJECTed (un-NATed) flow; drop them so the
    // next packet is DNATed.
    let old_by_id: std::collections::BTreeMap<_, _> = old.services.iter().map(|s| (&s.id, s)).collect();
    for n in new.services.iter().filter(|s| s.id.protocol == Protocol::Udp) {
        let had = old_by_id.get(&n.id).is_some_and(|o| !o.usable_endpoints(node, false).is_empty());
        if !had && !n.usable_endpoints(node, false).is_empty() {
            for (dst, port) in destinations(n) {
                out.insert(Flow { orig_dst: dst, orig_dport: port, dnat_to: None });
            }
        }
    }
    out.into_iter().collect()
}

fn destinations(sp: &ServicePort) -> Vec<(Option<Ipv4Addr>, u16)> {
    let mut d = vec![(Some(sp.cluster_ip), sp.port)];
    d.extend(sp.external_ips.iter().chain(&sp.load_balancer_ips).map(|ip| (Some(*ip), sp.port)));
    if let Some(np) = sp.node_port {
        d.push((None, np));
    }
    d
}

/// The `conntrack` CLI, optionally inside a network namespace.
#[derive(Clone, Debug, Default)]
pub struct ConntrackCli {
    pub netns: Option<PathBuf>,
}

impl Conntrack for ConntrackCli {
    fn delete_udp(&self, flow: &Flow) -> Result<(), ConntrackError> {
        let mut args: Vec<String> = vec!["-D".into(), "-p".into(), "udp".into()];
        if let Some(d) = flow.orig_dst {
            args.extend(["--orig-dst".into(), d.to_string()]);
        }
        args.extend(["--orig-port-dst".into(), flow.orig_dport.to_string()]);
        if let Some(ep) = flow.dnat_to {
            args.extend(["--dst-nat".into(), ep.to_string()]);
        }
        let mut cmd = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg("conntrack");
                c
            }
            None => Command::new("conntrack"),
        };
        let out = cmd.args(&args).stdin(Stdio::null()).output().map_err(ConntrackError::Spawn)?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        // Exit status 1 with "0 flow entries have been deleted" just means there was nothing to delete.
        if out.status.success() || stderr.contains("0 flow entries") {
            return Ok(());
        }
        Err(ConntrackError::Failed { args: args.join(" "), status: out.status, stderr: stderr.trim().to_string() })
    }
}

/// Records the flows it was asked to delete.
#[derive(Clone, Default)]
pub struct RecordingConntrack {
    pub deleted: Arc<Mutex<Vec<Flow>>>,
}

impl Conntrack for RecordingConntrack {
    fn delete_udp(&self, flow: &Flow) -> Result<(), ConntrackError> {
        self.deleted.lock().expect("fake lock").push(flow.clone());
        Ok(())
    }
}
