//! The proxy's model: what the node must do for each Service port, built from the API objects (Services and
//! EndpointSlices) by a pure function. Bad input is skipped with a warning, never a failure: a Service or endpoint
//! we cannot use must not stop the other 9,999 from being programmed.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Upstream's default ClientIP affinity timeout (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ModelError {
    #[error("bad CIDR {0:?} (want a.b.c.d/len)")]
    BadCidr(String),
}

/// An IPv4 prefix such as the cluster CIDR or a node's pod CIDR.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(self.prefix)) };
        u32::from(ip) & mask == u32::from(self.addr) & mask
    }
}

impl FromStr for Cidr {
    type Err = ModelError;
    fn from_str(s: &str) -> Result<Self, ModelError> {
        let bad = || ModelError::BadCidr(s.to_string());
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The name iptables uses (`-p tcp`).
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Sctp => "sctp",
        }
    }
    fn parse(s: Option<&str>) -> Option<Protocol> {
        match s.unwrap_or("TCP") {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

/// What is fixed for this node: who we are and which sources count as "inside the cluster".
#[derive(Clone, Debug, PartialEq)]
pub struct NodeConfig {
    pub node_name: String,
    pub cluster_cidr: Cidr,
    /// Masquerade all traffic to Services, not only traffic from outside the cluster CIDR.
    pub masquerade_all: bool,
}

/// One endpoint of one Service port.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Endpoint {
    pub ip: Ipv4Addr,
    pub port: u16,
    pub node_name: Option<String>,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

/// `namespace/name:port-name/protocol`, the identity of a Service port (chain names hash it).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServicePortName {
    pub namespace: String,
    pub name: String,
    pub port_name: String,
    pub protocol: Protocol,
}

impl fmt::Display for ServicePortName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}/{}", self.namespace, self.name, self.port_name, self.protocol.as_str())
    }
}

/// Everything the rules of one Service port depend on.
#[derive(Clone, Debug, PartialEq)]
pub struct ServicePort {
    pub id: ServicePortName,
    pub cluster_ip: Ipv4Addr,
    pub port: u16,
    pub node_port: Option<u16>,
    pub external_ips: Vec<Ipv4Addr>,
    pub load_balancer_ips: Vec<Ipv4Addr>,
    /// ClientIP session affinity timeout in seconds; `None` without affinity.
    pub affinity_timeout: Option<u32>,
    pub external_policy_local: bool,
    pub internal_policy_local: bool,
    /// All endpoints serving this port, whatever their condition, sorted.
    pub endpoints: Vec<Endpoint>,
}

impl ServicePort {
    pub fn has_external(&self) -> bool {
        self.node_port.is_some() || !self.external_ips.is_empty() || !self.load_balancer_ips.is_empty()
    }

    /// Endpoints that get traffic, restricted to this node when `local`: the ready ones, or (as upstream does
    /// during a rollout) the serving-and-terminating ones when none is ready.
    pub fn usable_endpoints(&self, node: &str, local: bool) -> Vec<&Endpoint> {
        let candidates: Vec<&Endpoint> =
            self.endpoints.iter().filter(|e| !local || e.node_name.as_deref() == Some(node)).collect();
        let ready: Vec<&Endpoint> = candidates.iter().copied().filter(|e| e.ready).collect();
        if !ready.is_empty() {
            return ready;
        }
        candidates.into_iter().filter(|e| e.serving && e.terminating).collect()
    }
}

/// The whole input of the renderer.
#[derive(Clone, Debug, PartialEq)]
pub struct DesiredState {
    pub node: NodeConfig,
    /// Sorted by id.
    pub services: Vec<ServicePort>,
}

impl DesiredState {
    /// Builds the model from Services and EndpointSlices. Returns the warnings about input it had to skip
    /// (the caller logs them; they never make the sync fail).
    pub fn build<S, E>(node: NodeConfig, services: &[S], slices: &[E]) -> (DesiredState, Vec<String>)
    where
        S: Borrow<Service>,
        E: Borrow<EndpointSlice>,
    {
        let mut warnings = Vec::new();
        let by_service = index_slices(slices, &mut warnings);
        let mut out: BTreeMap<ServicePortName, ServicePort> = BTreeMap::new();
        for svc in services {
            let svc: &Service = svc.borrow();
            let ns = svc.metadata.namespace.clone().unwrap_or_default();
            let name = svc.metadata.name.clone().unwrap_or_default();
            let Some(spec) = svc.spec.as_ref() else { continue };
            if spec.type_.as_deref() == Some("ExternalName") {
                continue;
            }
            let cluster_ip = match spec.cluster_ip.as_deref() {
                None | Some("") | Some("None") => continue, // headless: DNS only
                Some(ip) => match ip.parse::<Ipv4Addr>() {
                    Ok(ip) => ip,
                    Err(_) => {
                        warnings.push(format!("service {ns}/{name}: clusterIP {ip:?} is not IPv4; skipped"));
                        continue;
                    }
                },
            };
            let external_ips = parse_ips(spec.external_ips.iter().flatten().map(String::as_str), &ns, &name, "externalIP", &mut warnings);
            let lb_ips = parse_ips(
                svc.status
                    .iter()
                    .filter_map(|s| s.load_balancer.as_ref())
                    .filter_map(|lb| lb.ingress.as_ref())
                    .flatten()
                    .filter_map(|i| i.ip.as_deref()),
                &ns,
                &name,
                "load balancer ingress IP",
                &mut warnings,
            );
            let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
                spec.session_affinity_config
                    .as_ref()
                    .and_then(|c| c.client_ip.as_ref())
                    .and_then(|c| c.timeout_seconds)
                    .and_then(|t| u32::try_from(t).ok())
                    .filter(|t| *t > 0)
                    .unwrap_or(DEFAULT_AFFINITY_TIMEOUT)
            });
            let external_policy_local = spec.external_traffic_policy.as_deref() == Some("Local");
            let internal_policy_local = spec.internal_traffic_policy.as_deref() == Some("Local");
            let mut seen_ports = BTreeSet::new();
            for p in spec.ports.iter().flatten() {
                let port_name = p.name.clone().unwrap_or_default();
                let Some(protocol) = Protocol::parse(p.protocol.as_deref()) else {
                    warnings.push(format!("service {ns}/{name}: port {port_name:?} has unknown protocol {:?}; skipped", p.protocol));
                    continue;
                };
                let Ok(port) = u16::try_from(p.port) else {
                    warnings.push(format!("service {ns}/{name}: port {} out of range; skipped", p.port));
                    continue;
                };
                let id = ServicePortName { namespace: ns.clone(), name: name.clone(), port_name: port_name.clone(), protocol };
                if out.contains_key(&id) || !seen_ports.insert((protocol, port)) {
                    warnings.push(format!("service {ns}/{name}: duplicate port {port_name:?} {port}/{}; the first one wins", protocol.as_str()));
                    continue;
                }
                let node_port = p.node_port.and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0);
                let mut endpoints: Vec<Endpoint> = by_service
                    .get(&(ns.as_str(), name.as_str()))
                    .into_iter()
                    .flatten()
                    .filter(|(pn, proto, _)| *pn == port_name && *proto == protocol)
                    .map(|(_, _, e)| e.clone())
                    .collect();
                endpoints.sort();
                endpoints.dedup_by(|a, b| a.ip == b.ip && a.port == b.port);
                out.insert(
                    id.clone(),
                    ServicePort {
                        id,
                        cluster_ip,
                        port,
                        node_port,
                        external_ips: external_ips.clone(),
                        load_balancer_ips: lb_ips.clone(),
                        affinity_timeout,
                        external_policy_local,
                        internal_policy_local,
                        endpoints,
                    },
                );
            }
        }
        (DesiredState { node, services: out.into_values().collect() }, warnings)
    }
}

fn parse_ips<'a>(
    ips: impl Iterator<Item = &'a str>,
    ns: &str,
    name: &str,
    what: &str,
    warnings: &mut Vec<String>,
) -> Vec<Ipv4Addr> {
    let mut out = BTreeSet::new();
    for ip in ips {
        match ip.parse::<Ipv4Addr>() {
            Ok(ip) => {
                out.insert(ip);
            }
            Err(_) => warnings.push(format!("service {ns}/{name}: {what} {ip:?} is not IPv4; skipped")),
        }
    }
    out.into_iter().collect()
}

type SliceIndex<'a> = BTreeMap<(&'a str, &'a str), Vec<(String, Protocol, Endpoint)>>;

/// (namespace, service) → (port name, protocol, endpoint) for every usable address of every slice.
fn index_slices<'a, E: Borrow<EndpointSlice>>(slices: &'a [E], warnings: &mut Vec<String>) -> SliceIndex<'a> {
    let mut index: SliceIndex<'a> = BTreeMap::new();
    for slice in slices {
        let slice: &EndpointSlice = slice.borrow();
        let ns = slice.metadata.namespace.as_deref().unwrap_or_default();
        let slice_name = slice.metadata.name.as_deref().unwrap_or_default();
        let Some(svc) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else { continue };
        if slice.address_type != "IPv4" {
            continue; // IPv6 and FQDN slices are not ours to program
        }
        let entry = index.entry((ns, svc.as_str())).or_default();
        for port in slice.ports.iter().flatten() {
            let port_name = port.name.clone().unwrap_or_default();
            let Some(protocol) = Protocol::parse(port.protocol.as_deref()) else {
                warnings.push(format!("endpointslice {ns}/{slice_name}: port {port_name:?} has unknown protocol; skipped"));
                continue;
            };
            let Some(number) = port.port.and_then(|p| u16::try_from(p).ok()).filter(|p| *p > 0) else {
                warnings.push(format!("endpointslice {ns}/{slice_name}: port {port_name:?} has no valid number; skipped"));
                continue;
            };
            for ep in &slice.endpoints {
                let conditions = ep.conditions.as_ref();
                // Upstream: a missing `ready` means ready; missing serving follows ready.
                let ready = conditions.and_then(|c| c.ready).unwrap_or(true);
                let serving = conditions.and_then(|c| c.serving).unwrap_or(ready);
                let terminating = conditions.and_then(|c| c.terminating).unwrap_or(false);
                // Only the first address counts, as upstream (all addresses of an endpoint are the same pod).
                let Some(addr) = ep.addresses.first() else { continue };
                let Ok(ip) = addr.parse::<Ipv4Addr>() else {
                    warnings.push(format!("endpointslice {ns}/{slice_name}: address {addr:?} is not IPv4; skipped"));
                    continue;
                };
                if ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast() || ip.is_link_local() {
                    warnings.push(format!("endpointslice {ns}/{slice_name}: address {ip} cannot be an endpoint; skipped"));
                    continue;
                }
                entry.push((
                    port_name.clone(),
                    protocol,
                    Endpoint { ip, port: number, node_name: ep.node_name.clone(), ready, serving, terminating },
                ));
            }
        }
    }
    index
}
