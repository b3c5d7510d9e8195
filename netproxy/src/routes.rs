//! Host-gw pod networking: for every other Node with a podCIDR and an InternalIP, a route `podCIDR via nodeIP`.
//! [`desired_routes`] decides (pure); [`sync_routes`] makes the main table match over rtnetlink. Our routes carry
//! their own protocol number ([`ROUTE_PROTOCOL`]) so that we only ever replace or delete routes we added: a node
//! that leaves takes its route with it, and routes of other owners stay.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Node;
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteMessage, RouteProtocol};
use rtnetlink::{Handle, RouteMessageBuilder};

use crate::model::Cidr;

/// `proto 83` ('S' for Skiff) in `ip route`: marks the routes netproxy owns.
pub const ROUTE_PROTOCOL: u8 = 83;

#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    #[error("opening a netlink socket: {0}")]
    Connect(std::io::Error),
    #[error("listing routes: {0}")]
    List(rtnetlink::Error),
    #[error("adding the route {dst} via {via}: {source}")]
    Add { dst: Cidr, via: Ipv4Addr, source: rtnetlink::Error },
    #[error("deleting the route {dst}: {source}")]
    Delete { dst: Cidr, source: rtnetlink::Error },
    #[error("enabling IPv4 forwarding: {0}")]
    Forwarding(std::io::Error),
}

/// podCIDR → node address, for every node but `me`.
pub fn desired_routes(nodes: &[Node], me: &str) -> (BTreeMap<Cidr, Ipv4Addr>, Vec<String>) {
    let mut routes = BTreeMap::new();
    let mut warnings = Vec::new();
    for node in nodes {
        let name = node.metadata.name.as_deref().unwrap_or_default();
        if name == me {
            continue;
        }
        let spec = node.spec.as_ref();
        let cidrs = spec.and_then(|s| s.pod_cidrs.clone()).unwrap_or_default();
        let cidr = spec.and_then(|s| s.pod_cidr.clone()).into_iter().chain(cidrs).find_map(|c| c.parse::<Cidr>().ok());
        let Some(cidr) = cidr else { continue }; // not assigned yet
        let ip = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter(|a| a.type_ == "InternalIP")
            .find_map(|a| a.address.parse::<Ipv4Addr>().ok());
        let Some(ip) = ip else {
            warnings.push(format!("node {name}: podCIDR {cidr} but no IPv4 InternalIP; no route"));
            continue;
        };
        if let Some(other) = routes.insert(cidr, ip) {
            warnings.push(format!("node {name}: podCIDR {cidr} is also claimed by the node at {other}"));
        }
    }
    (routes, warnings)
}

/// A netlink handle on the calling thread's network namespace; the connection runs on the current runtime.
pub fn connect() -> Result<Handle, RouteError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(RouteError::Connect)?;
    tokio::spawn(conn);
    Ok(handle)
}

/// Our routes now in the main table: destination → gateway.
pub async fn our_routes(handle: &Handle) -> Result<BTreeMap<Cidr, Option<Ipv4Addr>>, RouteError> {
    let mut out = BTreeMap::new();
    let query = RouteMessageBuilder::<Ipv4Addr>::new().build();
    let mut stream = handle.route().get(query).execute();
    while let Some(msg) = stream.try_next().await.map_err(RouteError::List)? {
        if msg.header.protocol != RouteProtocol::Other(ROUTE_PROTOCOL) || msg.header.table != 254 {
            continue;
        }
        let (dst, via) = parse(&msg);
        if let Some(dst) = dst {
            out.insert(Cidr { addr: dst, prefix: msg.header.destination_prefix_length }, via);
        }
    }
    Ok(out)
}

fn parse(msg: &RouteMessage) -> (Option<Ipv4Addr>, Option<Ipv4Addr>) {
    let mut dst = None;
    let mut via = None;
    for a in &msg.attributes {
        match a {
            RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = Some(*ip),
            RouteAttribute::Gateway(RouteAddress::Inet(ip)) => via = Some(*ip),
            _ => {}
        }
    }
    (dst, via)
}

/// What [`sync_routes`] changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RouteReport {
    pub added: usize,
    pub deleted: usize,
    pub total: usize,
    /// Routes that could not be added or deleted (one node's bad address must not keep the others' routes out).
    pub failed: Vec<String>,
}

/// Makes our routes equal `desired`: replaces missing or changed ones, deletes ours that are not desired.
pub async fn sync_routes(handle: &Handle, desired: &BTreeMap<Cidr, Ipv4Addr>) -> Result<RouteReport, RouteError> {
    let have = our_routes(handle).await?;
    let mut report = RouteReport { total: desired.len(), ..Default::default() };
    for (dst, via) in desired {
        if have.get(dst) == Some(&Some(*via)) {
            continue;
        }
        let msg = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.addr, dst.prefix)
            .gateway(*via)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .build();
        match handle.route().add(msg).replace().execute().await {
            Ok(()) => report.added += 1,
            Err(source) => report.failed.push(RouteError::Add { dst: *dst, via: *via, source }.to_string()),
        }
    }
    for (dst, via) in &have {
        if desired.contains_key(dst) {
            continue;
        }
        let mut b = RouteMessageBuilder::<Ipv4Addr>::new()
            .destination_prefix(dst.addr, dst.prefix)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL));
        if let Some(v) = via {
            b = b.gateway(*v);
        }
        match handle.route().del(b.build()).execute().await {
            Ok(()) => report.deleted += 1,
            // ESRCH: already gone.
            Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == 3 => {}
            Err(source) => report.failed.push(RouteError::Delete { dst: *dst, source }.to_string()),
        }
    }
    Ok(report)
}

/// Turns on IPv4 forwarding in the calling thread's network namespace (pods' traffic is routed through the node).
pub fn enable_forwarding() -> Result<(), RouteError> {
    let path = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(path).map(|s| s.trim() == "1").unwrap_or(false) {
        return Ok(());
    }
    std::fs::write(path, "1").map_err(RouteError::Forwarding)
}


/// Route syncs on a thread of their own, optionally inside another network namespace (`/run/netns/NAME`; for
/// tests and several hosts on one machine): a netlink socket belongs to the namespace of the thread that opens
/// it, and a tokio worker thread cannot be moved into one.
pub struct RouteWorker {
    tx: std::sync::mpsc::Sender<RouteJob>,
}

/// Desired routes and where to send the outcome.
type RouteJob = (BTreeMap<Cidr, Ipv4Addr>, tokio::sync::oneshot::Sender<Result<RouteReport, RouteError>>);

impl RouteWorker {
    pub fn start(netns: Option<std::path::PathBuf>) -> Result<RouteWorker, RouteError> {
        let (tx, rx) = std::sync::mpsc::channel::<RouteJob>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("netproxy-routes".into())
            .spawn(move || {
                let setup = (|| {
                    if let Some(path) = &netns {
                        let f = std::fs::File::open(path).map_err(RouteError::Connect)?;
                        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
                            .map_err(|e| RouteError::Connect(std::io::Error::from(e)))?;
                    }
                    enable_forwarding()?;
                    tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(RouteError::Connect)
                })();
                let rt = match setup {
                    Ok(rt) => {
                        let _ = ready_tx.send(Ok(()));
                        rt
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                rt.block_on(async move {
                    let handle = match connect() {
                        Ok(h) => h,
                        Err(e) => {
                            tracing::error!(error = %e, "no route management");
                            return;
                        }
                    };
                    // Blocking receive is fine: this runtime has nothing else to do meanwhile but drive the
                    // netlink connection, which only has work while a request is in flight.
                    while let Ok((desired, reply)) = rx.recv() {
                        let _ = reply.send(sync_routes(&handle, &desired).await);
                    }
                });
            })
            .map_err(RouteError::Connect)?;
        ready_rx.recv().map_err(|_| RouteError::Connect(std::io::Error::other("route thread died")))??;
        Ok(RouteWorker { tx })
    }

    pub async fn sync(&self, desired: BTreeMap<Cidr, Ipv4Addr>) -> Result<RouteReport, RouteError> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx.send((desired, reply)).map_err(|_| RouteError::Connect(std::io::Error::other("route thread gone")))?;
        rx.await.map_err(|_| RouteError::Connect(std::io::Error::other("route thread gone")))?
    }
}
