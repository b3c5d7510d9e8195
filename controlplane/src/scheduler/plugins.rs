//! Scheduler plugins as pure functions: filters say whether a pod fits a node (and why not, in upstream's words),
//! scores rank the nodes that fit.
//!
//! Filters: NodeUnschedulable, NodeResourcesFit (cpu, memory, pods, ephemeral-storage), NodePorts,
//! TaintToleration, NodeAffinity (required terms and nodeSelector). Scores: LeastAllocated, BalancedAllocation,
//! TaintToleration (PreferNoSchedule), preferred NodeAffinity.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSelectorRequirement, NodeSelectorTerm, Taint, Toleration};
use crate::controllers::cached_pod::CachedPod;

/// Parse a Kubernetes quantity ("100m", "1.5", "64Mi", "1G", "1e3") into thousandths of its unit, the
/// precision the scheduler needs for cpu (millicores) and that is exact enough for bytes. Written by hand: the
/// format is small and no maintained crate covers it.
pub fn parse_quantity_milli(s: &str) -> Option<i128> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-')).unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let value: f64 = num.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    let milli = (value * factor * 1000.0).ceil();
    milli.is_finite().then(|| clamp_milli(milli))
}

/// Quantities are clamped to ±2^100 thousandths (far beyond any real amount): sums of millions of them then stay
/// within i128, wherever they are added up (scheduler, quota, LimitRange).
pub const MAX_MILLI: i128 = 1 << 100;

/// A number of thousandths as i128, clamped to [`MAX_MILLI`].
pub fn clamp_milli(milli: f64) -> i128 {
    (milli.ceil() as i128).clamp(-MAX_MILLI, MAX_MILLI)
}

/// Resource amounts in thousandths: cpu (millicores), memory and ephemeral-storage (milli-bytes), pods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    pub cpu: i128,
    pub memory: i128,
    pub storage: i128,
    pub pods: i128,
}

impl Resources {
    pub fn add(&mut self, o: &Resources) {
        self.cpu += o.cpu;
        self.memory += o.memory;
        self.storage += o.storage;
        self.pods += o.pods;
    }
}

fn from_map(m: Option<&BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>) -> Resources {
    let get = |k: &str| m.and_then(|m| m.get(k)).and_then(|q| parse_quantity_milli(&q.0)).unwrap_or(0);
    Resources { cpu: get("cpu"), memory: get("memory"), storage: get("ephemeral-storage"), pods: get("pods") }
}

/// What a pod asks for: the larger of its containers' sum and its largest init container (upstream's rule), one
/// pod slot.
pub fn pod_requests(p: &CachedPod) -> Resources {
    let Some(spec) = p.spec.as_ref() else { return Resources { pods: 1000, ..Default::default() } };
    let mut sum = Resources::default();
    for c in &spec.containers {
        sum.add(&from_map(c.resources.as_ref().and_then(|r| r.requests.as_ref())));
    }
    for c in spec.init_containers.iter().flatten() {
        let r = from_map(c.resources.as_ref().and_then(|r| r.requests.as_ref()));
        sum.cpu = sum.cpu.max(r.cpu);
        sum.memory = sum.memory.max(r.memory);
        sum.storage = sum.storage.max(r.storage);
    }
    sum.pods = 1000;
    sum
}

pub fn node_allocatable(n: &Node) -> Resources {
    let status = n.status.as_ref();
    from_map(status.and_then(|s| s.allocatable.as_ref()).or(status.and_then(|s| s.capacity.as_ref())))
}

/// What is already placed on a node: requests of its pods, host ports in use, and the pods themselves (for the
/// pod-aware plugins and preemption).
#[derive(Clone, Debug, Default)]
pub struct NodeUsage {
    pub requested: Resources,
    pub host_ports: Vec<(String, String, i32)>,
    pub pods: Vec<super::topology::PodRef>,
    /// Those of `pods` with required anti-affinity terms (which every pod to place is checked against).
    pub anti_affinity_pods: Vec<super::topology::PodRef>,
}

impl NodeUsage {
    pub fn add_pod(&mut self, p: &CachedPod) {
        self.add_info(std::sync::Arc::new(super::topology::PodInfo::new(p)));
    }

    pub fn add_info(&mut self, info: super::topology::PodRef) {
        self.requested.add(&info.requests);
        self.host_ports.extend(info.host_ports.iter().cloned());
        if !info.anti_affinity.is_empty() {
            self.anti_affinity_pods.push(info.clone());
        }
        self.pods.push(info);
    }

    /// The usage of just these pods.
    pub fn of(pods: impl IntoIterator<Item = super::topology::PodRef>) -> NodeUsage {
        let mut u = NodeUsage::default();
        for p in pods {
            u.add_info(p);
        }
        u
    }
}

pub fn host_ports(p: &CachedPod) -> Vec<(String, String, i32)> {
    let mut out = Vec::new();
    for c in p.spec.iter().flat_map(|s| s.containers.iter()) {
        for port in c.ports.iter().flatten() {
            if let Some(hp) = port.host_port.filter(|h| *h > 0) {
                out.push((port.host_ip.clone().unwrap_or_else(|| "0.0.0.0".into()), port.protocol.clone().unwrap_or_else(|| "TCP".into()), hp));
            }
        }
    }
    out
}

/// Why a node does not fit; `Display` gives upstream's words.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Unfit {
    Unschedulable,
    Insufficient(&'static str),
    TooManyPods,
    Ports,
    Affinity,
    Taint(String),
    PodAffinity,
    PodAntiAffinity,
    ExistingAntiAffinity,
    Spread,
    SpreadMissingLabel,
}

impl std::fmt::Display for Unfit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unfit::Unschedulable => write!(f, "node(s) were unschedulable"),
            Unfit::Insufficient(r) => write!(f, "Insufficient {r}"),
            Unfit::TooManyPods => write!(f, "Too many pods"),
            Unfit::Ports => write!(f, "node(s) didn't have free ports for the requested pod ports"),
            Unfit::Affinity => write!(f, "node(s) didn't match Pod's node affinity/selector"),
            Unfit::Taint(t) => write!(f, "node(s) had untolerated taint {t}"),
            Unfit::PodAffinity => write!(f, "node(s) didn't match pod affinity rules"),
            Unfit::PodAntiAffinity => write!(f, "node(s) didn't match pod anti-affinity rules"),
            Unfit::ExistingAntiAffinity => write!(f, "node(s) didn't satisfy existing pods anti-affinity rules"),
            Unfit::Spread => write!(f, "node(s) didn't match pod topology spread constraints"),
            Unfit::SpreadMissingLabel => write!(f, "node(s) didn't match pod topology spread constraints (missing required label)"),
        }
    }
}

fn tolerates(tolerations: &[Toleration], taint: &Taint) -> bool {
    tolerations.iter().any(|t| {
        let effect_ok = t.effect.as_deref().is_none_or(|e| e.is_empty() || e == taint.effect);
        let key_ok = match t.key.as_deref() {
            None | Some("") => t.operator.as_deref() == Some("Exists"),
            Some(k) => k == taint.key,
        };
        let value_ok = match t.operator.as_deref() {
            Some("Exists") => true,
            _ => t.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or(""),
        };
        effect_ok && key_ok && value_ok
    })
}

/// The node's taints, plus the not-ready taint for a node that does not report Ready=True (what the node
/// lifecycle controller puts on it).
pub fn effective_taints(n: &Node) -> Vec<Taint> {
    let mut taints = n.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
    let ready = n
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    if !ready && !taints.iter().any(|t| t.key == "node.kubernetes.io/not-ready") {
        taints.push(Taint { key: "node.kubernetes.io/not-ready".into(), effect: "NoSchedule".into(), ..Default::default() });
    }
    taints
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (value.and_then(|v| v.parse::<i64>().ok()), values.first().and_then(|b| b.parse::<i64>().ok())) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

pub fn term_matches(term: &NodeSelectorTerm, n: &Node) -> bool {
    let labels = n.metadata.labels.as_ref();
    let exprs = term.match_expressions.as_deref().unwrap_or(&[]);
    let fields = term.match_fields.as_deref().unwrap_or(&[]);
    if exprs.is_empty() && fields.is_empty() {
        return false;
    }
    exprs.iter().all(|r| requirement_matches(r, labels.and_then(|l| l.get(&r.key)).map(String::as_str)))
        && fields.iter().all(|r| r.key == "metadata.name" && requirement_matches(r, n.metadata.name.as_deref()))
}

/// nodeSelector and required node affinity.
pub fn node_affinity_ok(p: &CachedPod, n: &Node) -> bool {
    let spec = p.spec.as_ref();
    let labels = n.metadata.labels.as_ref();
    let selector_ok = spec
        .and_then(|s| s.node_selector.as_ref())
        .is_none_or(|sel| sel.iter().all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v)));
    let required = spec
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.required_during_scheduling_ignored_during_execution.as_ref());
    selector_ok && required.is_none_or(|r| r.node_selector_terms.iter().any(|t| term_matches(t, n)))
}

/// Whether a pod may run on a node at all, leaving resources aside: cordon, taints and node affinity (the
/// DaemonSet controller's question).
pub fn node_allows(p: &CachedPod, n: &Node) -> bool {
    let tolerations = p.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default();
    let cordon = Taint { key: "node.kubernetes.io/unschedulable".into(), effect: "NoSchedule".into(), ..Default::default() };
    let cordoned = n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false) && !tolerates(&tolerations, &cordon);
    let tainted = effective_taints(n)
        .iter()
        .any(|t| (t.effect == "NoSchedule" || t.effect == "NoExecute") && !tolerates(&tolerations, t));
    !cordoned && !tainted && node_affinity_ok(p, n)
}

/// What the filters and scores need of a node, computed once per scheduling pass.
pub struct NodeView<'a> {
    pub node: &'a Node,
    pub name: &'a str,
    pub alloc: Resources,
    pub taints: Vec<Taint>,
    pub unschedulable: bool,
}

impl<'a> NodeView<'a> {
    pub fn new(node: &'a Node) -> Self {
        NodeView {
            node,
            name: node.metadata.name.as_deref().unwrap_or_default(),
            alloc: node_allocatable(node),
            taints: effective_taints(node),
            unschedulable: node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false),
        }
    }
}

/// What the filters and scores need of a pod, computed once per pod.
pub struct PodView<'a> {
    pub pod: &'a CachedPod,
    pub requests: Resources,
    pub tolerations: Vec<Toleration>,
    pub host_ports: Vec<(String, String, i32)>,
}

impl<'a> PodView<'a> {
    pub fn new(pod: &'a CachedPod) -> Self {
        PodView {
            pod,
            requests: pod_requests(pod),
            tolerations: pod.spec.as_ref().and_then(|s| s.tolerations.clone()).unwrap_or_default(),
            host_ports: host_ports(pod),
        }
    }
}

/// Run the filters in upstream's order (NodeUnschedulable, TaintToleration, NodeAffinity, NodePorts,
/// NodeResourcesFit) and stop at the first that fails, as upstream does; NodeResourcesFit reports every resource
/// that is short.
pub fn filter(p: &CachedPod, n: &Node, usage: &NodeUsage) -> Vec<Unfit> {
    filter_view(&PodView::new(p), &NodeView::new(n), usage)
}

pub fn filter_view(p: &PodView, n: &NodeView, usage: &NodeUsage) -> Vec<Unfit> {
    if n.unschedulable {
        let t = Taint { key: "node.kubernetes.io/unschedulable".into(), effect: "NoSchedule".into(), ..Default::default() };
        if !tolerates(&p.tolerations, &t) {
            return vec![Unfit::Unschedulable];
        }
    }
    if let Some(t) = n.taints.iter().find(|t| (t.effect == "NoSchedule" || t.effect == "NoExecute") && !tolerates(&p.tolerations, t)) {
        return vec![Unfit::Taint(format!("{{{}: {}}}", t.key, t.value.as_deref().unwrap_or_default()))];
    }
    if !node_affinity_ok(p.pod, n.node) {
        return vec![Unfit::Affinity];
    }
    let conflict = p.host_ports.iter().any(|(ip, proto, port)| {
        usage.host_ports.iter().any(|(uip, uproto, uport)| {
            uport == port && uproto == proto && (uip == ip || uip == "0.0.0.0" || ip == "0.0.0.0")
        })
    });
    if conflict {
        return vec![Unfit::Ports];
    }
    let mut out = Vec::new();
    let (want, alloc, used) = (p.requests, n.alloc, usage.requested);
    if used.pods + want.pods > alloc.pods {
        out.push(Unfit::TooManyPods);
    }
    if want.cpu > 0 && used.cpu + want.cpu > alloc.cpu {
        out.push(Unfit::Insufficient("cpu"));
    }
    if want.memory > 0 && used.memory + want.memory > alloc.memory {
        out.push(Unfit::Insufficient("memory"));
    }
    if want.storage > 0 && used.storage + want.storage > alloc.storage {
        out.push(Unfit::Insufficient("ephemeral-storage"));
    }
    out
}

/// Score a node that fits, higher is better (0..=300).
pub fn score(p: &CachedPod, n: &Node, usage: &NodeUsage) -> i64 {
    score_view(&PodView::new(p), &NodeView::new(n), usage)
}

pub fn score_view(p: &PodView, n: &NodeView, usage: &NodeUsage) -> i64 {
    let (want, alloc) = (p.requests, n.alloc);
    let frac = |used: i128, add: i128, cap: i128| -> f64 {
        if cap <= 0 {
            1.0
        } else {
            ((used + add) as f64 / cap as f64).min(1.0)
        }
    };
    // Upstream counts a request of 0 as 100m cpu / 200Mi memory when scoring.
    let cpu_req = if want.cpu == 0 { 100 } else { want.cpu };
    let mem_req = if want.memory == 0 { 200 * 1024 * 1024 * 1000 } else { want.memory };
    let cpu = frac(usage.requested.cpu, cpu_req, alloc.cpu);
    let mem = frac(usage.requested.memory, mem_req, alloc.memory);
    let least_allocated = ((1.0 - cpu) + (1.0 - mem)) / 2.0 * 100.0;
    let balanced = (1.0 - (cpu - mem).abs()) * 100.0;
    let prefer_no = n.taints.iter().filter(|t| t.effect == "PreferNoSchedule" && !tolerates(&p.tolerations, t)).count();
    let taint_score = 100.0 / (1.0 + prefer_no as f64);
    let preferred: i64 = p
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.affinity.as_ref())
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|na| na.preferred_during_scheduling_ignored_during_execution.as_ref())
        .map(|prefs| prefs.iter().filter(|w| term_matches(&w.preference, n.node)).map(|w| w.weight as i64).sum())
        .unwrap_or(0);
    (least_allocated + balanced + taint_score) as i64 + preferred
}

/// Upstream's summary: `0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {a: b}.`
pub fn unschedulable_message(total: usize, reasons: &[Vec<Unfit>]) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in reasons {
        for u in r {
            *counts.entry(u.to_string()).or_default() += 1;
        }
    }
    // Upstream sorts the "<count> <reason>" strings themselves.
    let mut parts: Vec<String> = counts.iter().map(|(reason, n)| format!("{n} {reason}")).collect();
    parts.sort();
    if parts.is_empty() {
        format!("0/{total} nodes are available.")
    } else {
        format!("0/{total} nodes are available: {}.", parts.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, cpu: &str, mem: &str, extra: serde_json::Value) -> Node {
        let mut n = json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "zone": "a"}},
            "spec": {},
            "status": {"allocatable": {"cpu": cpu, "memory": mem, "pods": "110", "ephemeral-storage": "10Gi"},
                       "conditions": [{"type": "Ready", "status": "True"}]}});
        json_patch::merge(&mut n, &extra);
        serde_json::from_value(n).unwrap()
    }

    fn pod(cpu: &str, mem: &str, extra: serde_json::Value) -> CachedPod {
        let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x",
            "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}});
        json_patch::merge(&mut p, &extra);
        serde_json::from_value(p).unwrap()
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity_milli("100m"), Some(100));
        assert_eq!(parse_quantity_milli("1.5"), Some(1500));
        assert_eq!(parse_quantity_milli("2"), Some(2000));
        assert_eq!(parse_quantity_milli("1Ki"), Some(1024 * 1000));
        assert_eq!(parse_quantity_milli("64Mi"), Some(64 * 1024 * 1024 * 1000));
        assert_eq!(parse_quantity_milli("1G"), Some(1_000_000_000_000));
        assert_eq!(parse_quantity_milli("1e3"), Some(1_000_000));
        assert_eq!(parse_quantity_milli("1e300"), Some(MAX_MILLI));
        assert_eq!(parse_quantity_milli("-1e300"), Some(-MAX_MILLI));
        assert_eq!(parse_quantity_milli("12x"), None);
        assert_eq!(parse_quantity_milli(""), None);
    }

    #[test]
    fn resources_fit() {
        let n = node("n", "2", "4Gi", json!({}));
        assert!(filter(&pod("1", "1Gi", json!({})), &n, &NodeUsage::default()).is_empty());
        let mut usage = NodeUsage::default();
        usage.add_pod(&pod("1500m", "3Gi", json!({})));
        assert_eq!(filter(&pod("1", "2Gi", json!({})), &n, &usage), [Unfit::Insufficient("cpu"), Unfit::Insufficient("memory")]);
    }

    #[test]
    fn taints_tolerations_and_cordon() {
        let tainted = node("n", "2", "4Gi", json!({"spec": {"taints": [{"key": "dedicated", "value": "gpu", "effect": "NoSchedule"}]}}));
        let p = pod("1", "1Gi", json!({}));
        assert_eq!(filter(&p, &tainted, &NodeUsage::default()), [Unfit::Taint("{dedicated: gpu}".into())]);
        let tolerant = pod("1", "1Gi", json!({"spec": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoSchedule"}]}}));
        assert!(filter(&tolerant, &tainted, &NodeUsage::default()).is_empty());
        let all = pod("1", "1Gi", json!({"spec": {"tolerations": [{"operator": "Exists"}]}}));
        assert!(filter(&all, &tainted, &NodeUsage::default()).is_empty());
        let cordoned = node("n", "2", "4Gi", json!({"spec": {"unschedulable": true}}));
        assert_eq!(filter(&p, &cordoned, &NodeUsage::default()), [Unfit::Unschedulable]);
        let not_ready = node("n", "2", "4Gi", json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}));
        assert_eq!(filter(&p, &not_ready, &NodeUsage::default()), [Unfit::Taint("{node.kubernetes.io/not-ready: }".into())]);
    }

    #[test]
    fn node_selector_and_affinity() {
        let n = node("n1", "2", "4Gi", json!({}));
        assert_eq!(filter(&pod("0", "0", json!({"spec": {"nodeSelector": {"zone": "b"}}})), &n, &NodeUsage::default()), [Unfit::Affinity]);
        assert!(filter(&pod("0", "0", json!({"spec": {"nodeSelector": {"zone": "a"}}})), &n, &NodeUsage::default()).is_empty());
        let aff = |op: &str, vals: serde_json::Value| {
            pod("0", "0", json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": [{"key": "zone", "operator": op, "values": vals}]}]}}}}}))
        };
        assert!(filter(&aff("In", json!(["a", "c"])), &n, &NodeUsage::default()).is_empty());
        assert_eq!(filter(&aff("NotIn", json!(["a"])), &n, &NodeUsage::default()), [Unfit::Affinity]);
        let by_name = pod("0", "0", json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n2"]}]}]}}}}}));
        assert_eq!(filter(&by_name, &n, &NodeUsage::default()), [Unfit::Affinity]);
    }

    #[test]
    fn host_ports_conflict() {
        let n = node("n", "2", "4Gi", json!({}));
        let with_port = pod("0", "0", json!({"spec": {"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}}));
        let mut usage = NodeUsage::default();
        usage.add_pod(&with_port);
        assert_eq!(filter(&with_port, &n, &usage), [Unfit::Ports]);
    }

    #[test]
    fn scores_prefer_emptier_nodes_and_preferences() {
        let n = node("n", "4", "8Gi", json!({}));
        let p = pod("1", "1Gi", json!({}));
        let mut busy = NodeUsage::default();
        busy.add_pod(&pod("2", "4Gi", json!({})));
        assert!(score(&p, &n, &NodeUsage::default()) > score(&p, &n, &busy));
        let prefers = pod("1", "1Gi", json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 50, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["a"]}]}}]}}}}));
        assert_eq!(score(&prefers, &n, &NodeUsage::default()) - score(&p, &n, &NodeUsage::default()), 50);
    }

    #[test]
    fn message_like_upstream() {
        let reasons = vec![vec![Unfit::Insufficient("cpu")], vec![Unfit::Taint("{a: b}".into())], vec![Unfit::Taint("{a: b}".into())]];
        assert_eq!(unschedulable_message(3, &reasons), "0/3 nodes are available: 1 Insufficient cpu, 2 node(s) had untolerated taint {a: b}.");
        assert_eq!(unschedulable_message(0, &[]), "0/0 nodes are available.");
    }
}
