//! The pure renderer: [`DesiredState`] → the nat and filter chains netproxy owns ([`Ruleset`]).
//!
//! The shape is deliberately leaner than kube-proxy's (4 chains and 11 rules for a ClusterIP Service with 3
//! endpoints): one `SKIFF-SVC-<hash>` chain per Service port that DNATs straight from `-m statistic` rules — no
//! per-endpoint chains, no comments — and off-cluster clients of cluster IPs are masqueraded by one POSTROUTING
//! rule matching the connection's original destination in the Service CIDR. That is 1 chain and 4 rules for the
//! same Service (hairpin rules only for endpoints on this node). Session affinity needs no
//! extra chains either: each endpoint's rule checks and refreshes its own `-m recent` list in one rule.
//!
//! Chains (all prefixed `SKIFF-`):
//! - nat `SKIFF-SERVICES` (from PREROUTING and OUTPUT): cluster IPs, external IPs and load-balancer IPs → the
//!   Service's chain; the last rule sends traffic to local addresses to `SKIFF-NODEPORTS`.
//! - nat `SKIFF-SVC-<h>`: marks hairpin traffic for masquerade, then DNATs to one endpoint
//!   (`SKIFF-SVL-<h>`: the same over this node's endpoints, for `Local` traffic policies).
//! - nat `SKIFF-EXT-<h>`: external traffic (NodePort, external and LB IPs): masquerade unless the external policy
//!   is `Local`, then the cluster or local chain.
//! - nat `SKIFF-MARK-MASQ`, `SKIFF-POSTROUTING`: mark, then MASQUERADE marked traffic, off-cluster clients of
//!   cluster IPs, and pod egress leaving the cluster CIDR.
//! - filter `SKIFF-SERVICES` (OUTPUT, FORWARD) and `SKIFF-EXTERNAL-SERVICES` (INPUT, FORWARD): REJECT for
//!   Services without endpoints (DROP when only the `Local` policy leaves none); `SKIFF-FORWARD`: accept marked,
//!   established and pod traffic even when the FORWARD policy is DROP.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use crate::model::{DesiredState, Endpoint, NodeConfig, ServicePort, ServicePortName};

pub const PREFIX: &str = "SKIFF-";
pub const SERVICES: &str = "SKIFF-SERVICES";
pub const NODEPORTS: &str = "SKIFF-NODEPORTS";
pub const POSTROUTING: &str = "SKIFF-POSTROUTING";
pub const MARK_MASQ: &str = "SKIFF-MARK-MASQ";
pub const EXTERNAL_SERVICES: &str = "SKIFF-EXTERNAL-SERVICES";
pub const FORWARD: &str = "SKIFF-FORWARD";
/// The packet mark bit meaning "masquerade me" (kube-proxy's default bit).
pub const MASQ_MARK: &str = "0x4000";

/// A table's chains we own: name → rules (each a full `-A CHAIN ...` line). Ordered by name so that output
/// is deterministic.
pub type Chains = BTreeMap<String, Arc<Vec<String>>>;

/// The rendered nat and filter state: the shared chains by name, and each Service port's own nat chains in its
/// [`Fragment`], in Service-port order (so that a planner can compare two rulesets by walking them side by side).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Ruleset {
    /// Shared nat chains (SKIFF-SERVICES, SKIFF-NODEPORTS, SKIFF-MARK-MASQ, SKIFF-POSTROUTING).
    pub nat: Chains,
    /// All filter chains (all shared).
    pub filter: Chains,
    /// Per Service port, sorted by id.
    pub fragments: Vec<Arc<Fragment>>,
}

impl Ruleset {
    /// Every nat chain: shared ones, then each fragment's.
    pub fn nat_chains(&self) -> impl Iterator<Item = (&String, &Arc<Vec<String>>)> {
        self.nat.iter().chain(self.fragments.iter().flat_map(|f| f.nat_chains.iter().map(|(n, r)| (n, r))))
    }
    /// A nat chain by name (linear in the number of fragments; for tests and tools).
    pub fn nat_chain(&self, name: &str) -> Option<&Arc<Vec<String>>> {
        self.nat_chains().find(|(n, _)| n.as_str() == name).map(|(_, r)| r)
    }
    pub fn nat_rule_count(&self) -> usize {
        self.nat_chains().map(|(_, r)| r.len()).sum()
    }
    pub fn nat_chain_count(&self) -> usize {
        self.nat.len() + self.fragments.iter().map(|f| f.nat_chains.len()).sum::<usize>()
    }
    pub fn rule_count(&self) -> usize {
        self.nat_rule_count() + self.filter.values().map(|r| r.len()).sum::<usize>()
    }
    pub fn chain_count(&self) -> usize {
        self.nat_chain_count() + self.filter.len()
    }
}

/// The rules in built-in chains that send traffic to ours, as `(table, chain, match-and-target)`. They are
/// inserted once (when missing) at the top of their chain and never rewritten, so other rule owners' rules in
/// those chains stay put. Each `-I` lands above the previous one: FORWARD ends up SKIFF-SERVICES,
/// SKIFF-EXTERNAL-SERVICES, SKIFF-FORWARD — the REJECTs must come before SKIFF-FORWARD's ACCEPTs.
pub const JUMPS: &[(&str, &str, &str)] = &[
    ("nat", "PREROUTING", "-j SKIFF-SERVICES"),
    ("nat", "OUTPUT", "-j SKIFF-SERVICES"),
    ("nat", "POSTROUTING", "-j SKIFF-POSTROUTING"),
    ("filter", "INPUT", "-m conntrack --ctstate NEW -j SKIFF-EXTERNAL-SERVICES"),
    ("filter", "FORWARD", "-j SKIFF-FORWARD"),
    ("filter", "FORWARD", "-m conntrack --ctstate NEW -j SKIFF-EXTERNAL-SERVICES"),
    ("filter", "FORWARD", "-m conntrack --ctstate NEW -j SKIFF-SERVICES"),
    ("filter", "OUTPUT", "-m conntrack --ctstate NEW -j SKIFF-SERVICES"),
];

/// FNV-1a, 64 bits, as 16 hex digits: a stable short name for a Service port (kube-proxy uses SHA-256 in base32;
/// any stable hash works, and this one needs no crate). `SKIFF-SVC-` + 16 = 26 characters, under iptables' 28.
pub fn hash16(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016X}")
}

pub fn svc_chain(sp: &ServicePort) -> String {
    format!("SKIFF-SVC-{}", hash16(&sp.id.to_string()))
}
pub fn svl_chain(sp: &ServicePort) -> String {
    format!("SKIFF-SVL-{}", hash16(&sp.id.to_string()))
}
pub fn ext_chain(sp: &ServicePort) -> String {
    format!("SKIFF-EXT-{}", hash16(&sp.id.to_string()))
}
fn recent_name(sp: &ServicePort, ep: &Endpoint) -> String {
    format!("SKIFF-{}", hash16(&format!("{}>{}:{}", sp.id, ep.ip, ep.port)))
}

/// The rules of one Service port: its own chains and its lines in the shared chains.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fragment {
    pub id: ServicePortName,
    pub nat_chains: Vec<(String, Arc<Vec<String>>)>,
    pub services: Vec<String>,
    pub nodeports: Vec<String>,
    pub filter_services: Vec<String>,
    pub filter_external: Vec<String>,
}

/// Renders the whole desired state. Pure: same input, same output, byte for byte.
pub fn render(state: &DesiredState) -> Ruleset {
    let fragments: Vec<Arc<Fragment>> = state.services.iter().map(|sp| Arc::new(render_service(&state.node, sp))).collect();
    assemble(&state.node, fragments)
}

/// [`render`] with a memo: a Service port that is the same `Arc` (or equal) as last time reuses last time's
/// fragment, and the shared chains are reused when no fragment's lines in them changed. The output equals
/// [`render`]'s; only the work is skipped, so a one-Service change at 10,000 Services costs a walk over
/// pointers rather than 50,000 formatted rules.
#[derive(Default)]
pub struct Renderer {
    node: Option<NodeConfig>,
    /// Last input and output, in Service-port order.
    last: Vec<(Arc<ServicePort>, Arc<Fragment>)>,
    last_ruleset: Option<Ruleset>,
}

impl Renderer {
    pub fn render(&mut self, state: &DesiredState) -> Ruleset {
        if self.node.as_ref() != Some(&state.node) {
            self.last.clear();
            self.last_ruleset = None;
            self.node = Some(state.node.clone());
        }
        let mut next = Vec::with_capacity(state.services.len());
        let mut shared_lines_changed = self.last.len() != state.services.len();
        let mut old = self.last.iter().peekable();
        for sp in &state.services {
            // Both lists are sorted by id: skip old entries that sort before this one (removed Service ports).
            while let Some((o, _)) = old.peek() {
                if Arc::ptr_eq(o, sp) || o.id >= sp.id {
                    break;
                }
                old.next();
                shared_lines_changed = true;
            }
            let fragment = match old.peek() {
                Some((o, f)) if Arc::ptr_eq(o, sp) || **o == **sp => {
                    let f = Arc::clone(f);
                    old.next();
                    f
                }
                Some((o, f)) if o.id == sp.id => {
                    let new = Arc::new(render_service(&state.node, sp));
                    shared_lines_changed |= !same_shared_lines(f, &new);
                    old.next();
                    new
                }
                _ => {
                    shared_lines_changed = true;
                    Arc::new(render_service(&state.node, sp))
                }
            };
            next.push((Arc::clone(sp), fragment));
        }
        let fragments: Vec<Arc<Fragment>> = next.iter().map(|(_, f)| Arc::clone(f)).collect();
        let ruleset = match &self.last_ruleset {
            Some(last) if !shared_lines_changed => Ruleset { nat: last.nat.clone(), filter: last.filter.clone(), fragments },
            _ => assemble(&state.node, fragments),
        };
        self.last = next;
        self.last_ruleset = Some(ruleset.clone());
        ruleset
    }
}

fn same_shared_lines(a: &Fragment, b: &Fragment) -> bool {
    a.services == b.services && a.nodeports == b.nodeports && a.filter_services == b.filter_services && a.filter_external == b.filter_external
}

/// The fixed chains plus every Service port's fragment, in the order of `fragments`.
fn assemble(node: &NodeConfig, fragments: Vec<Arc<Fragment>>) -> Ruleset {
    let cidr = node.cluster_cidr.to_string();
    let mut nat = Chains::new();
    let mut filter = Chains::new();
    nat.insert(MARK_MASQ.into(), Arc::new(vec![format!("-A {MARK_MASQ} -j MARK --or-mark {MASQ_MARK}")]));
    nat.insert(
        POSTROUTING.into(),
        Arc::new(vec![
            // Pod egress leaving the cluster network takes the node's address.
            format!("-A {POSTROUTING} -s {cidr} ! -d {cidr} -j MASQUERADE --random-fully"),
        ]
        .into_iter()
        .chain(node.service_cidr.map(|svc| {
            // Off-cluster clients of a cluster IP (by the original destination, so after DNAT), in one rule
            // rather than one per Service port as kube-proxy does.
            let src = if node.masquerade_all { String::new() } else { format!("! -s {cidr} ") };
            format!("-A {POSTROUTING} {src}-m conntrack --ctstate DNAT --ctorigdst {svc} -j MASQUERADE --random-fully")
        }))
        .chain([
            format!("-A {POSTROUTING} -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"),
            format!("-A {POSTROUTING} -j MARK --xor-mark {MASQ_MARK}"),
            format!("-A {POSTROUTING} -j MASQUERADE --random-fully"),
        ])
        .collect::<Vec<String>>()),
    );
    filter.insert(
        FORWARD.into(),
        Arc::new(vec![
            format!("-A {FORWARD} -m conntrack --ctstate INVALID -j DROP"),
            format!("-A {FORWARD} -m mark --mark {MASQ_MARK}/{MASQ_MARK} -j ACCEPT"),
            format!("-A {FORWARD} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"),
            format!("-A {FORWARD} -s {cidr} -j ACCEPT"),
            format!("-A {FORWARD} -d {cidr} -j ACCEPT"),
        ]),
    );
    let gather = |pick: fn(&Fragment) -> &Vec<String>| -> Vec<String> {
        fragments.iter().flat_map(|f| pick(f).iter().cloned()).collect()
    };
    let mut services = gather(|f| &f.services);
    // Must stay last: anything else addressed to this node may be a NodePort.
    services.push(format!("-A {SERVICES} -m addrtype --dst-type LOCAL -j {NODEPORTS}"));
    nat.insert(SERVICES.into(), Arc::new(services));
    nat.insert(NODEPORTS.into(), Arc::new(gather(|f| &f.nodeports)));
    filter.insert(SERVICES.into(), Arc::new(gather(|f| &f.filter_services)));
    filter.insert(EXTERNAL_SERVICES.into(), Arc::new(gather(|f| &f.filter_external)));
    Ruleset { nat, filter, fragments }
}

/// The rules of one Service port.
pub fn render_service(node: &NodeConfig, sp: &ServicePort) -> Fragment {
    let cidr = node.cluster_cidr.to_string();
    let mut f = Fragment {
        id: sp.id.clone(),
        nat_chains: Vec::new(),
        services: Vec::new(),
        nodeports: Vec::new(),
        filter_services: Vec::new(),
        filter_external: Vec::new(),
    };
    let proto = sp.id.protocol.as_str();
    let dport = format!("-p {proto} -m {proto} --dport {}", sp.port);
    let cluster_dst = format!("-d {}/32 {dport}", sp.cluster_ip);
    let all = sp.usable_endpoints(&node.node_name, false);
    let local = sp.usable_endpoints(&node.node_name, true);
    let svc = svc_chain(sp);
    let svl = svl_chain(sp);
    let needs_svc = !all.is_empty() && (!sp.internal_policy_local || sp.has_external());
    let needs_svl = !local.is_empty() && (sp.internal_policy_local || (sp.external_policy_local && sp.has_external()));
    let masq_internal = match (node.service_cidr.filter(|c| c.contains(sp.cluster_ip)), node.masquerade_all) {
        (Some(_), _) => None, // one rule in SKIFF-POSTROUTING covers it
        (None, true) => Some(format!("{cluster_dst} -j {MARK_MASQ}")),
        (None, false) => Some(format!("{cluster_dst} ! -s {cidr} -j {MARK_MASQ}")),
    };
    if needs_svc {
        f.nat_chains.push((svc.clone(), Arc::new(endpoint_rules(&svc, sp, &all, &masq_internal, &node.node_name))));
    }
    if needs_svl {
        f.nat_chains.push((svl.clone(), Arc::new(endpoint_rules(&svl, sp, &local, &masq_internal, &node.node_name))));
    }

    // Traffic to the cluster IP.
    let internal = if sp.internal_policy_local { (!local.is_empty()).then_some(&svl) } else { (!all.is_empty()).then_some(&svc) };
    match internal {
        Some(chain) => f.services.push(format!("-A {SERVICES} {cluster_dst} -j {chain}")),
        None if sp.internal_policy_local && !all.is_empty() => f.filter_services.push(format!("-A {SERVICES} {cluster_dst} -j DROP")),
        None => f.filter_services.push(format!("-A {SERVICES} {cluster_dst} -j REJECT --reject-with icmp-port-unreachable")),
    }
    if !sp.has_external() {
        return f;
    }

    // Traffic from outside: NodePort, external IPs, load-balancer IPs.
    let ext = ext_chain(sp);
    let ext_rules = if sp.external_policy_local {
        let mut r = Vec::new();
        if !all.is_empty() {
            // Pods and the node itself may use any endpoint; the node's own traffic is masqueraded.
            r.push(format!("-A {ext} -s {cidr} -j {svc}"));
            r.push(format!("-A {ext} -m addrtype --src-type LOCAL -j {MARK_MASQ}"));
            r.push(format!("-A {ext} -m addrtype --src-type LOCAL -j {svc}"));
        }
        if !local.is_empty() {
            r.push(format!("-A {ext} -j {svl}"));
        }
        r
    } else if !all.is_empty() {
        vec![format!("-A {ext} -j {MARK_MASQ}"), format!("-A {ext} -j {svc}")]
    } else {
        Vec::new()
    };
    // Without a usable endpoint for external traffic, the filter table answers instead.
    let ext_verdict = if sp.external_policy_local && local.is_empty() && !all.is_empty() {
        Some("DROP")
    } else if all.is_empty() {
        Some("REJECT --reject-with icmp-port-unreachable")
    } else {
        None
    };
    let has_ext_chain = !ext_rules.is_empty();
    if has_ext_chain {
        f.nat_chains.push((ext.clone(), Arc::new(ext_rules)));
    }
    for ip in sp.external_ips.iter().chain(&sp.load_balancer_ips) {
        let m = format!("-d {ip}/32 {dport}");
        if has_ext_chain {
            f.services.push(format!("-A {SERVICES} {m} -j {ext}"));
        }
        if let Some(v) = ext_verdict {
            f.filter_external.push(format!("-A {EXTERNAL_SERVICES} {m} -j {v}"));
        }
    }
    if let Some(np) = sp.node_port {
        let m = format!("-p {proto} -m {proto} --dport {np}");
        if has_ext_chain {
            f.nodeports.push(format!("-A {NODEPORTS} {m} -j {ext}"));
        }
        if let Some(v) = ext_verdict {
            f.filter_external.push(format!("-A {EXTERNAL_SERVICES} -m addrtype --dst-type LOCAL {m} -j {v}"));
        }
    }
    f
}

/// The rules of a SVC/SVL chain: masquerade off-cluster and hairpin traffic, then pick an endpoint.
fn endpoint_rules(chain: &str, sp: &ServicePort, eps: &[&Endpoint], masq_internal: &Option<String>, node: &str) -> Vec<String> {
    let proto = sp.id.protocol.as_str();
    let mut r = Vec::with_capacity(eps.len() * 2 + 1);
    if let Some(m) = masq_internal {
        r.push(format!("-A {chain} {m}"));
    }
    // Hairpin: a pod reaching itself through the Service must see the node as the source, or its reply would
    // skip the un-DNAT. Only endpoints on this node can be their own client here.
    for ep in eps.iter().filter(|e| e.node_name.as_deref().is_none_or(|n| n == node)) {
        r.push(format!("-A {chain} -s {}/32 -j {MARK_MASQ}", ep.ip));
    }
    if let Some(timeout) = sp.affinity_timeout {
        // A client seen within the timeout goes back to its endpoint, refreshing the entry in the same rule.
        for ep in eps {
            let name = recent_name(sp, ep);
            r.push(format!(
                "-A {chain} -p {proto} -m recent --rcheck --seconds {timeout} --reap --name {name} --mask 255.255.255.255 --rsource -m recent --set --name {name} --mask 255.255.255.255 --rsource -j DNAT --to-destination {}:{}",
                ep.ip, ep.port
            ));
        }
    }
    let n = eps.len();
    for (i, ep) in eps.iter().enumerate() {
        let mut line = format!("-A {chain} -p {proto}");
        if i + 1 < n {
            let _ = write!(line, " -m statistic --mode random --probability {:.10}", 1.0 / (n - i) as f64);
        }
        if sp.affinity_timeout.is_some() {
            let _ = write!(line, " -m recent --set --name {} --mask 255.255.255.255 --rsource", recent_name(sp, ep));
        }
        let _ = write!(line, " -j DNAT --to-destination {}:{}", ep.ip, ep.port);
        r.push(line);
    }
    r
}

#[cfg(test)]
mod tests {
    #[test]
    fn chain_hash_is_stable_and_short() {
        // Chain names must not change between versions: a rename would rewrite every chain on upgrade.
        assert_eq!(super::hash16("default/web:http/tcp"), super::hash16("default/web:http/tcp"));
        assert_eq!(super::hash16("").len(), 16);
        assert_eq!(super::hash16("a"), "AF63DC4C8601EC8C");
        assert!(format!("SKIFF-SVC-{}", super::hash16("x")).len() <= 28);
    }
}
