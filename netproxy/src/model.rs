//! The proxy's model: what the node must do for each Service port, built from the API objects (Services and
//! EndpointSlices) by a pure function. Bad input is skipped with a warning, never a failure: a Service or endpoint
//! we cannot use must not stop the other 9,999 from being programmed.

use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

/// Label that ties an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Upstream's default ClientIP affinity timeout (3 hours).
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

/// FNV-1a as a `HashMap` hasher: the per-sync maps here are keyed by short strings and pointers, where SipHash's
/// DoS resistance buys nothing (the keys come from our own API server) and costs most of a 10,000-Service
/// sync's CPU. Hand-written because it is ten lines; the `fnv` crate would do the same.
#[derive(Clone, Copy)]
pub struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// A `HashMap` with the [`Fnv`] hasher.
pub type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

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
    /// Where cluster IPs come from. With it, one POSTROUTING rule masquerades off-cluster traffic to any cluster
    /// IP (by the connection's original destination) instead of one rule per Service port.
    pub service_cidr: Option<Cidr>,
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
    /// Sorted by id. Shared, so that unchanged Service ports are not copied from one sync to the next.
    pub services: Vec<Arc<ServicePort>>,
}

impl DesiredState {
    /// Builds the model from Services and EndpointSlices. Returns the warnings about input it had to skip
    /// (the caller logs them; they never make the sync fail).
    pub fn build<S, E>(node: NodeConfig, services: &[S], slices: &[E]) -> (DesiredState, Vec<String>)
    where
        S: Borrow<Service>,
        E: Borrow<EndpointSlice>,
    {
        let by_service = group_slices(slices);
        let mut warnings = Vec::new();
        let mut out = Vec::new();
        for svc in services {
            let svc: &Service = svc.borrow();
            let key = (svc.metadata.namespace.as_deref().unwrap_or_default(), svc.metadata.name.as_deref().unwrap_or_default());
            let slices = by_service.get(&key).map(Vec::as_slice).unwrap_or_default();
            out.extend(service_ports(svc, slices, &mut warnings).into_iter().map(Arc::new));
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        (DesiredState { node, services: out }, warnings)
    }
}

/// Slices by (namespace, service name), each list sorted by slice name (so results do not depend on cache order).
fn group_slices<E: Borrow<EndpointSlice>>(slices: &[E]) -> FastMap<(&str, &str), Vec<&E>> {
    let mut by: FastMap<(&str, &str), Vec<&E>> = FastMap::with_capacity_and_hasher(slices.len(), Default::default());
    for s in slices {
        let slice: &EndpointSlice = s.borrow();
        let Some(svc) = slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL)) else { continue };
        by.entry((slice.metadata.namespace.as_deref().unwrap_or_default(), svc.as_str())).or_default().push(s);
    }
    for list in by.values_mut() {
        list.sort_by(|a, b| (*a).borrow().metadata.name.cmp(&(*b).borrow().metadata.name));
    }
    by
}

/// Builds the model like [`DesiredState::build`], but reuses the result for every Service whose object and
/// slices are the very same (`Arc::ptr_eq`) as last time — the informer cache hands out the same `Arc` until an
/// object changes — so a sync after one change costs one Service's work, not 10,000. Warnings come out only
/// when a Service is (re)computed, so they are logged once per change rather than once per sync.
#[derive(Default)]
pub struct ModelCache {
    /// Keyed by the address of the Service's `Arc`: a changed Service is a new `Arc`, so a miss.
    entries: FastMap<usize, CacheEntry>,
    /// Every Service port of the last build, kept sorted across builds so that a change costs no re-sort.
    sorted: BTreeMap<ServicePortName, Arc<ServicePort>>,
    generation: u64,
}

struct CacheEntry {
    service: Arc<Service>,
    slices: Vec<Arc<EndpointSlice>>,
    ports: Vec<Arc<ServicePort>>,
    /// The last build that saw this Service.
    seen: u64,
}

impl ModelCache {
    pub fn build(
        &mut self,
        node: NodeConfig,
        services: &[Arc<Service>],
        slices: &[Arc<EndpointSlice>],
    ) -> (DesiredState, Vec<String>) {
        self.generation += 1;
        let generation = self.generation;
        let by_service = group_slices(slices);
        let mut warnings = Vec::new();
        let mut removed: Vec<Arc<ServicePort>> = Vec::new();
        let mut added: Vec<Arc<ServicePort>> = Vec::new();
        for svc in services {
            let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
            let name = svc.metadata.name.as_deref().unwrap_or_default();
            let mine: &[&Arc<EndpointSlice>] = by_service.get(&(ns, name)).map(Vec::as_slice).unwrap_or_default();
            let key = Arc::as_ptr(svc) as usize;
            match self.entries.get_mut(&key) {
                Some(e)
                    if Arc::ptr_eq(&e.service, svc)
                        && e.slices.len() == mine.len()
                        && e.slices.iter().zip(mine).all(|(a, b)| Arc::ptr_eq(a, b)) =>
                {
                    e.seen = generation;
                }
                old => {
                    if let Some(e) = old {
                        removed.append(&mut e.ports);
                    }
                    let ports: Vec<Arc<ServicePort>> = service_ports(svc, mine, &mut warnings).into_iter().map(Arc::new).collect();
                    added.extend(ports.iter().cloned());
                    let entry = CacheEntry { service: Arc::clone(svc), slices: mine.iter().map(|s| Arc::clone(s)).collect(), ports, seen: generation };
                    self.entries.insert(key, entry);
                }
            }
        }
        // Entries not seen belong to Services that changed (new Arc) or went away.
        self.entries.retain(|_, e| {
            if e.seen != generation {
                removed.append(&mut e.ports);
            }
            e.seen == generation
        });
        for p in &removed {
            self.sorted.remove(&p.id);
        }
        for p in added {
            self.sorted.insert(p.id.clone(), p);
        }
        (DesiredState { node, services: self.sorted.values().cloned().collect() }, warnings)
    }
}

/// The model of one Service: one entry per usable port, with that port's endpoints from the Service's slices.
fn service_ports<E: Borrow<EndpointSlice>>(svc: &Service, slices: &[&E], warnings: &mut Vec<String>) -> Vec<ServicePort> {
    let ns = svc.metadata.namespace.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let Some(spec) = svc.spec.as_ref() else { return Vec::new() };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let cluster_ip = match spec.cluster_ip.as_deref() {
        None | Some("") | Some("None") => return Vec::new(), // headless: DNS only
        Some(ip) => match ip.parse::<Ipv4Addr>() {
            Ok(ip) => ip,
            Err(_) => {
                warnings.push(format!("service {ns}/{name}: clusterIP {ip:?} is not IPv4; skipped"));
                return Vec::new();
            }
        },
    };
    let endpoints_by_port = slice_endpoints(slices, warnings);
    let external_ips = parse_ips(spec.external_ips.iter().flatten().map(String::as_str), &ns, &name, "externalIP", warnings);
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
        warnings,
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
    let mut seen_names = BTreeSet::new();
    let mut seen_ports = BTreeSet::new();
    let mut out = Vec::new();
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
        if !seen_names.insert((port_name.clone(), protocol)) || !seen_ports.insert((protocol, port)) {
            warnings.push(format!("service {ns}/{name}: duplicate port {port_name:?} {port}/{}; the first one wins", protocol.as_str()));
            continue;
        }
        let node_port = p.node_port.and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0);
        let mut endpoints: Vec<Endpoint> = endpoints_by_port
            .iter()
            .filter(|(pn, proto, _)| *pn == port_name.as_str() && *proto == protocol)
            .map(|(_, _, e)| e.clone())
            .collect();
        endpoints.sort();
        endpoints.dedup_by(|a, b| a.ip == b.ip && a.port == b.port);
        out.push(ServicePort {
            id: ServicePortName { namespace: ns.clone(), name: name.clone(), port_name, protocol },
            cluster_ip,
            port,
            node_port,
            external_ips: external_ips.clone(),
            load_balancer_ips: lb_ips.clone(),
            affinity_timeout,
            external_policy_local,
            internal_policy_local,
            endpoints,
        });
    }
    out
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

/// (port name, protocol, endpoint) for every usable address of a Service's slices.
fn slice_endpoints<'a, E: Borrow<EndpointSlice>>(slices: &[&'a E], warnings: &mut Vec<String>) -> Vec<(&'a str, Protocol, Endpoint)> {
    let mut out = Vec::new();
    for slice in slices {
        let slice: &'a EndpointSlice = (*slice).borrow();
        let ns = slice.metadata.namespace.as_deref().unwrap_or_default();
        let slice_name = slice.metadata.name.as_deref().unwrap_or_default();
        if slice.address_type != "IPv4" {
            continue; // IPv6 and FQDN slices are not ours to program
        }
        for port in slice.ports.iter().flatten() {
            let port_name = port.name.as_deref().unwrap_or_default();
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
                out.push((port_name, protocol, Endpoint { ip, port: number, node_name: ep.node_name.clone(), ready, serving, terminating }));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parses_and_contains() {
        let c: Cidr = "10.244.0.0/16".parse().expect("cidr");
        assert!(c.contains("10.244.3.4".parse().expect("ip")));
        assert!(!c.contains("10.245.0.1".parse().expect("ip")));
        assert_eq!(c.to_string(), "10.244.0.0/16");
        for bad in ["10.244.0.0", "10.244.0.0/33", "x/8", "10.0.0.0/x"] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
        assert!("0.0.0.0/0".parse::<Cidr>().expect("all").contains(Ipv4Addr::new(1, 2, 3, 4)));
    }

    #[test]
    fn terminating_endpoints_serve_only_when_none_is_ready() {
        let ep = |ip: [u8; 4], ready, terminating| Endpoint {
            ip: ip.into(), port: 80, node_name: Some("a".into()), ready, serving: true, terminating,
        };
        let mut sp = ServicePort {
            id: ServicePortName { namespace: "n".into(), name: "s".into(), port_name: String::new(), protocol: Protocol::Tcp },
            cluster_ip: Ipv4Addr::new(10, 96, 0, 1), port: 80, node_port: None, external_ips: vec![], load_balancer_ips: vec![],
            affinity_timeout: None, external_policy_local: false, internal_policy_local: false,
            endpoints: vec![ep([10, 0, 0, 1], true, false), ep([10, 0, 0, 2], false, true)],
        };
        assert_eq!(sp.usable_endpoints("a", false).len(), 1);
        sp.endpoints[0].ready = false;
        assert_eq!(sp.usable_endpoints("a", false)[0].ip, Ipv4Addr::new(10, 0, 0, 2), "terminating fallback");
        assert!(sp.usable_endpoints("b", true).is_empty(), "none on node b");
    }
}
