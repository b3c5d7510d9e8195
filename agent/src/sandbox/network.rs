//! Pod networking over rtnetlink: the node bridge holding the podCIDR's gateway, one veth per pod, and inside the
//! pod's namespace eth0 with the pod IP, lo up and a default route via the bridge.
//!
//! Netlink work inside a pod namespace runs on a thread that entered it ([`super::netns::run_in`]) with its own
//! single-threaded tokio runtime, so its netlink socket belongs to the pod's namespace.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use futures::TryStreamExt;
use rtnetlink::{Handle, LinkBridge, LinkBridgePort, LinkUnspec, LinkVeth, RouteMessageBuilder};

use super::ipam::Cidr;
use super::netns;

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("opening a netlink socket: {0}")]
    Connect(std::io::Error),
    #[error("{step}: {source}")]
    Netlink { step: String, source: rtnetlink::Error },
    #[error("link {0} not found")]
    NoLink(String),
    #[error("building a runtime for the namespace thread: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
}

fn nl(step: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let step = step.into();
    move |source| NetworkError::Netlink { step, source }
}

fn is_errno(e: &rtnetlink::Error, errno: nix::errno::Errno) -> bool {
    matches!(e, rtnetlink::Error::NetlinkError(m) if m.raw_code().abs() == errno as i32)
}

/// A netlink handle on the calling context's namespace; the connection runs on the current tokio runtime.
pub fn connect() -> Result<Handle, NetworkError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(NetworkError::Connect)?;
    tokio::spawn(conn);
    Ok(handle)
}

pub async fn link_index(handle: &Handle, name: &str) -> Result<Option<u32>, NetworkError> {
    match handle.link().get().match_name(name.to_string()).execute().try_next().await {
        Ok(Some(msg)) => Ok(Some(msg.header.index)),
        Ok(None) => Ok(None),
        Err(e) if is_errno(&e, nix::errno::Errno::ENODEV) => Ok(None),
        Err(e) => Err(nl(format!("looking up link {name}"))(e)),
    }
}

async fn add_address(handle: &Handle, index: u32, ip: Ipv4Addr, prefix: u8, what: &str) -> Result<(), NetworkError> {
    match handle.address().add(index, IpAddr::V4(ip), prefix).execute().await {
        Err(e) if is_errno(&e, nix::errno::Errno::EEXIST) => Ok(()),
        r => r.map_err(nl(format!("adding {ip}/{prefix} to {what}"))),
    }
}

/// Bridged traffic between pods must pass iptables, as kubenet and the CNI bridge plugin require: a pod reaching a
/// Service whose chosen endpoint sits on the same bridge gets its reply un-DNATed only when bridged frames go
/// through conntrack. Loads `br_netfilter` where `/proc/sys/net/bridge` is missing (kubenet runs the same
/// modprobe), then sets `bridge-nf-call-iptables` (and `ip6tables`) to 1 in this network namespace. An error means
/// such Service traffic will fail on this node: the caller reports it and goes on.
pub fn ensure_bridge_netfilter() -> Result<(), String> {
    let dir = std::path::Path::new("/proc/sys/net/bridge");
    if !dir.exists() {
        let out = std::process::Command::new("modprobe").arg("br_netfilter").output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => return Err(format!("modprobe br_netfilter: {}", String::from_utf8_lossy(&o.stderr).trim())),
            Err(e) => return Err(format!("running modprobe br_netfilter: {e}")),
        }
    }
    for name in ["bridge-nf-call-iptables", "bridge-nf-call-ip6tables"] {
        let path = dir.join(name);
        if std::fs::read_to_string(&path).is_ok_and(|v| v.trim() == "1") {
            continue;
        }
        std::fs::write(&path, "1").map_err(|e| format!("setting {}: {e}", path.display()))?;
    }
    Ok(())
}

/// Creates the bridge if missing, gives it the gateway address and brings it up (idempotent).
pub async fn ensure_bridge(handle: &Handle, name: &str, cidr: Cidr) -> Result<u32, NetworkError> {
    if link_index(handle, name).await?.is_none() {
        match handle.link().add(LinkBridge::new(name).build()).execute().await {
            Err(e) if is_errno(&e, nix::errno::Errno::EEXIST) => {}
            r => r.map_err(nl(format!("creating bridge {name}")))?,
        }
    }
    let index = link_index(handle, name).await?.ok_or_else(|| NetworkError::NoLink(name.into()))?;
    add_address(handle, index, cidr.gateway(), cidr.prefix, name).await?;
    handle.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await.map_err(nl(format!("bringing {name} up")))?;
    Ok(index)
}

/// Host-side name of a pod's veth (≤ 15 bytes, derived from the uid).
pub fn host_veth_name(uid: &str) -> String {
    let hex: String = uid.chars().filter(char::is_ascii_alphanumeric).take(11).collect();
    format!("skv{hex}")
}

/// Name of a pod's peer veth while it sat in the host namespace before being moved in: what agents before
/// 2026-12-07 made. Only deleted now (a retry after such an agent crashed midway).
fn peer_temp_name(uid: &str) -> String {
    let hex: String = uid.chars().filter(char::is_ascii_alphanumeric).take(11).collect();
    format!("skp{hex}")
}

/// Plugs the pod's namespace into the bridge (idempotent enough for a retry: an existing host veth is deleted and
/// recreated).
///
/// One request makes the pair: the host end enslaved to the bridge and up, the peer made inside the pod's namespace
/// as eth0. Making the peer in the host namespace and moving it in (`ip link set ... netns`) costs an RCU grace
/// period under the kernel's RTNL lock, ~18 ms on this machine, which serialized every pod's sandbox: with 50 pods
/// created at once the last one's network took over 1 s. Made in place, 50 pairs take ~100 ms.
pub async fn attach_pod(
    handle: &Handle,
    bridge_index: u32,
    netns_path: &Path,
    uid: &str,
    ip: Ipv4Addr,
    cidr: Cidr,
) -> Result<(), NetworkError> {
    use rtnetlink::packet_route::link::{InfoData, InfoKind, InfoVeth};
    use rtnetlink::LinkMessageBuilder;
    use std::os::fd::AsRawFd;
    let host = host_veth_name(uid);
    detach_pod(handle, uid).await?;
    let ns_file = std::fs::File::open(netns_path).map_err(|source| netns::NetnsError::Open { path: netns_path.into(), source })?;
    let peer = LinkMessageBuilder::<LinkUnspec>::new().name(POD_IFACE.to_string()).setns_by_fd(ns_file.as_raw_fd()).build();
    let pair = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host.clone())
        .controller(bridge_index)
        .up()
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
        .build();
    handle.link().add(pair).execute().await.map_err(nl(format!("creating veth {host} with {POD_IFACE} in the pod namespace")))?;
    drop(ns_file);
    let host_index = link_index(handle, &host).await?.ok_or_else(|| NetworkError::NoLink(host.clone()))?;
    // Hairpin: a pod that reaches itself through a Service (DNAT back to its own IP) leaves and re-enters the bridge
    // on the same port, which a bridge drops unless the port is in hairpin mode (the kubelet's hairpin-veth).
    handle
        .link()
        .set_port(LinkBridgePort::new(host_index).hairpin(true).build())
        .execute()
        .await
        .map_err(nl(format!("setting hairpin mode on {host}")))?;
    let gateway = cidr.gateway();
    netns::run_in(netns_path, move || configure_inside(ip, cidr.prefix, gateway))??;
    Ok(())
}

/// The pod's interface, inside its namespace.
const POD_IFACE: &str = "eth0";

fn configure_inside(ip: Ipv4Addr, prefix: u8, gateway: Ipv4Addr) -> Result<(), NetworkError> {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(NetworkError::Runtime)?;
    rt.block_on(async move {
        let handle = connect()?;
        let lo = link_index(&handle, "lo").await?.ok_or_else(|| NetworkError::NoLink("lo".into()))?;
        handle.link().set(LinkUnspec::new_with_index(lo).up().build()).execute().await.map_err(nl("bringing lo up"))?;
        let index = link_index(&handle, POD_IFACE).await?.ok_or_else(|| NetworkError::NoLink(POD_IFACE.into()))?;
        add_address(&handle, index, ip, prefix, POD_IFACE).await?;
        handle.link().set(LinkUnspec::new_with_index(index).up().build()).execute().await.map_err(nl("bringing eth0 up"))?;
        let route = RouteMessageBuilder::<Ipv4Addr>::new().gateway(gateway).output_interface(index).build();
        match handle.route().add(route).execute().await {
            Err(e) if is_errno(&e, nix::errno::Errno::EEXIST) => Ok(()),
            r => r.map_err(nl(format!("adding the default route via {gateway}"))),
        }
    })
}

/// Deletes the pod's host veth (its peer goes with it); a missing one is fine.
pub async fn detach_pod(handle: &Handle, uid: &str) -> Result<(), NetworkError> {
    for name in [host_veth_name(uid), peer_temp_name(uid)] {
        if let Some(index) = link_index(handle, &name).await? {
            match handle.link().del(index).execute().await {
                Err(e) if is_errno(&e, nix::errno::Errno::ENODEV) => {}
                r => r.map_err(nl(format!("deleting {name}")))?,
            }
        }
    }
    Ok(())
}
