//! The scheduler plugins that look at other pods: InterPodAffinity (required and preferred pod affinity and
//! anti-affinity, and the existing pods' required anti-affinity, which is symmetric) and PodTopologySpread
//! (DoNotSchedule as a filter, ScheduleAnyway as a score). Pure.
//!
//! For each pod to place, [`Topology::for_pod`] reads where matching pods are — by topology domain, the value of a
//! node label such as `kubernetes.io/hostname` or `topology.kubernetes.io/zone` — once, so the per-node filter and
//! score are lookups. A pod without such rules, in a cluster without required anti-affinity, costs nothing.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PodAffinityTerm, TopologySpreadConstraint};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::plugins::{NodeUsage, NodeView, PodView, Unfit};
use crate::controllers::cached_pod::CachedPod;

/// What the scheduler keeps of a pod placed on a node.
#[derive(Clone, Debug, Default)]
pub struct PodInfo {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub priority: i32,
    pub requests: super::plugins::Resources,
    pub host_ports: Vec<(String, String, i32)>,
    /// Being deleted: its resources are about to be free, it is no preemption victim.
    pub terminating: bool,
    /// This pod's required anti-affinity terms (they also keep other pods away from it).
    pub anti_affinity: Vec<PodAffinityTerm>,
}

impl PodInfo {
    pub fn new(p: &CachedPod) -> PodInfo {
        let spec = p.spec.as_ref();
        PodInfo {
            uid: p.metadata.uid.clone().unwrap_or_default(),
            namespace: p.metadata.namespace.clone().unwrap_or_else(|| "default".into()),
            name: p.metadata.name.clone().unwrap_or_default(),
            labels: p.metadata.labels.clone().unwrap_or_default(),
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
            requests: super::plugins::pod_requests(p),
            host_ports: super::plugins::host_ports(p),
            terminating: p.metadata.deletion_timestamp.is_some(),
            anti_affinity: spec
                .and_then(|s| s.affinity.as_ref())
                .and_then(|a| a.pod_anti_affinity.as_ref())
                .and_then(|a| a.required_during_scheduling_ignored_during_execution.clone())
                .unwrap_or_default(),
        }
    }
}

/// A typed label selector against labels: an empty selector matches everything, as in Kubernetes.
pub fn selector_matches(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let by_labels = sel.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    by_labels
        && sel.match_expressions.iter().flatten().all(|r| {
            let v = labels.get(&r.key);
            let values = r.values.as_deref().unwrap_or(&[]);
            match r.operator.as_str() {
                "In" => v.is_some_and(|v| values.contains(v)),
                "NotIn" => v.is_none_or(|v| !values.contains(v)),
                "Exists" => v.is_some(),
                "DoesNotExist" => v.is_none(),
                _ => false,
            }
        })
}

/// Namespace name → its labels: what a term's `namespaceSelector` is matched against.
pub type NamespaceLabels = HashMap<String, BTreeMap<String, String>>;

/// The namespaces an affinity term looks in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceScope<'a> {
    All,
    /// The pod's own (no list, no selector: the common case, without allocating).
    Own(&'a str),
    Only(HashSet<String>),
}

/// Upstream's rules for the namespaces of a term of a pod in `own_ns`: the union of `namespaces` and of the
/// namespaces `namespaceSelector` matches; an empty selector (`{}`) means every namespace; no list and no
/// selector mean the pod's own namespace.
pub fn term_namespaces<'a>(term: &PodAffinityTerm, own_ns: &'a str, namespaces: &NamespaceLabels) -> NamespaceScope<'a> {
    let listed = term.namespaces.as_ref().is_some_and(|l| !l.is_empty());
    if !listed && term.namespace_selector.is_none() {
        return NamespaceScope::Own(own_ns);
    }
    let mut set: HashSet<String> = term.namespaces.iter().flatten().cloned().collect();
    match &term.namespace_selector {
        None => {}
        Some(sel) if sel.match_labels.as_ref().is_none_or(|m| m.is_empty()) && sel.match_expressions.as_ref().is_none_or(|e| e.is_empty()) => {
            return NamespaceScope::All;
        }
        Some(sel) => set.extend(namespaces.iter().filter(|(_, labels)| selector_matches(sel, labels)).map(|(ns, _)| ns.clone())),
    }
    NamespaceScope::Only(set)
}

/// Whether `term`, looking in `scope`, selects `other`. A term without a label selector selects nothing.
fn term_selects(term: &PodAffinityTerm, scope: &NamespaceScope, other: &PodInfo) -> bool {
    let Some(sel) = &term.label_selector else { return false };
    let ns_ok = match scope {
        NamespaceScope::All => true,
        NamespaceScope::Own(ns) => *ns == other.namespace,
        NamespaceScope::Only(set) => set.contains(&other.namespace),
    };
    ns_ok && selector_matches(sel, &other.labels)
}

fn label<'a>(n: &'a NodeView, key: &str) -> Option<&'a str> {
    n.node.metadata.labels.as_ref().and_then(|l| l.get(key)).map(String::as_str)
}

struct TermDomains {
    key: String,
    /// Topology values with at least one matching pod.
    values: HashSet<String>,
    weight: i64,
}

struct Spread {
    key: String,
    max_skew: i64,
    hard: bool,
    counts: HashMap<String, i64>,
    min: i64,
}

/// Everything the pod-aware plugins need to judge one pod on any node.
pub struct Topology {
    affinity: Vec<TermDomains>,
    /// The pod matches all its own required affinity terms and no pod matches any of them: the first pod of a
    /// group may go anywhere (upstream's rule).
    affinity_first_of_group: bool,
    anti_affinity: Vec<TermDomains>,
    /// topology key → the values (domains) where an existing pod's required anti-affinity rejects this pod;
    /// indexed by key so that a node costs one lookup per key, however many such pods there are.
    existing_anti: HashMap<String, HashSet<String>>,
    preferred: Vec<TermDomains>,
    spread: Vec<Spread>,
}

fn domains(term: &PodAffinityTerm, own: &PodInfo, ctx: &Context, weight: i64) -> TermDomains {
    let scope = term_namespaces(term, &own.namespace, ctx.namespaces);
    let mut values = HashSet::new();
    // Walk the nodes that hold pods (not every node), and look a node up only when one of its pods matches.
    for (name, u) in ctx.usage {
        if !u.pods.iter().any(|p| p.uid != own.uid && term_selects(term, &scope, p)) {
            continue;
        }
        let Some(n) = ctx.index.get(name.as_str()).map(|&i| &ctx.nodes[i]) else { continue };
        if let Some(v) = label(n, &term.topology_key) {
            if !values.contains(v) {
                values.insert(v.to_string());
            }
        }
    }
    TermDomains { key: term.topology_key.clone(), values, weight }
}

/// Node name → its position in the node list; built once per scheduling pass.
pub type NodeIndex<'a> = HashMap<&'a str, usize>;

pub fn node_index<'a>(nodes: &[NodeView<'a>]) -> NodeIndex<'a> {
    nodes.iter().enumerate().map(|(i, n)| (n.name, i)).collect()
}

fn spread(c: &TopologySpreadConstraint, own: &PodInfo, pv: &PodView, nodes: &[NodeView], usage: &HashMap<String, NodeUsage>) -> Spread {
    let mut counts: HashMap<String, i64> = HashMap::new();
    for n in nodes {
        // nodeAffinityPolicy Honor (the default): only nodes the pod could go to make domains.
        let Some(v) = label(n, &c.topology_key) else { continue };
        if !super::plugins::node_affinity_ok(pv.pod, n.node) {
            continue;
        }
        let matching = match (&c.label_selector, usage.get(n.name)) {
            (Some(sel), Some(u)) => u.pods.iter().filter(|p| p.namespace == own.namespace && selector_matches(sel, &p.labels)).count() as i64,
            _ => 0,
        };
        *counts.entry(v.to_string()).or_default() += matching;
    }
    let min = counts.values().copied().min().unwrap_or(0);
    Spread { key: c.topology_key.clone(), max_skew: c.max_skew.max(1) as i64, hard: c.when_unsatisfiable != "ScheduleAnyway", counts, min }
}

/// What a pod is judged against: the nodes (and their index by name), the pods on them, the namespaces' labels.
struct Context<'a, 'n> {
    nodes: &'a [NodeView<'n>],
    index: &'a NodeIndex<'n>,
    usage: &'a HashMap<String, NodeUsage>,
    namespaces: &'a NamespaceLabels,
}

impl Topology {
    /// `None` when nothing about other pods matters for this pod. `index` is [`node_index`] of `nodes`.
    pub fn for_pod<'n>(
        pv: &PodView,
        nodes: &[NodeView<'n>],
        index: &NodeIndex<'n>,
        usage: &HashMap<String, NodeUsage>,
        namespaces: &NamespaceLabels,
    ) -> Option<Topology> {
        let ctx = Context { nodes, index, usage, namespaces };
        let spec = pv.pod.spec.as_ref()?;
        let own = PodInfo::new(pv.pod);
        let aff = spec.affinity.as_ref();
        let req_aff = aff.and_then(|a| a.pod_affinity.as_ref()).and_then(|a| a.required_during_scheduling_ignored_during_execution.clone()).unwrap_or_default();
        let req_anti = own.anti_affinity.clone();
        let pref_aff = aff.and_then(|a| a.pod_affinity.as_ref()).and_then(|a| a.preferred_during_scheduling_ignored_during_execution.clone()).unwrap_or_default();
        let pref_anti = aff.and_then(|a| a.pod_anti_affinity.as_ref()).and_then(|a| a.preferred_during_scheduling_ignored_during_execution.clone()).unwrap_or_default();
        let constraints = spec.topology_spread_constraints.clone().unwrap_or_default();
        let others_anti = usage.values().any(|u| !u.anti_affinity_pods.is_empty());
        if req_aff.is_empty() && req_anti.is_empty() && pref_aff.is_empty() && pref_anti.is_empty() && constraints.is_empty() && !others_anti {
            return None;
        }
        let affinity: Vec<TermDomains> = req_aff.iter().map(|t| domains(t, &own, &ctx, 0)).collect();
        let affinity_first_of_group = !affinity.is_empty()
            && affinity.iter().all(|d| d.values.is_empty())
            && req_aff.iter().all(|t| term_selects(t, &term_namespaces(t, &own.namespace, namespaces), &own));
        let anti_affinity = req_anti.iter().map(|t| domains(t, &own, &ctx, 0)).collect();
        let mut existing_anti: HashMap<String, HashSet<String>> = HashMap::new();
        if others_anti {
            for (name, u) in usage.iter().filter(|(_, u)| !u.anti_affinity_pods.is_empty()) {
                let Some(n) = index.get(name.as_str()).map(|&i| &nodes[i]) else { continue };
                for p in &u.anti_affinity_pods {
                    for t in &p.anti_affinity {
                        if term_selects(t, &term_namespaces(t, &p.namespace, namespaces), &own) {
                            if let Some(v) = label(n, &t.topology_key) {
                                existing_anti.entry(t.topology_key.clone()).or_default().insert(v.to_string());
                            }
                        }
                    }
                }
            }
        }
        let mut preferred: Vec<TermDomains> = pref_aff.iter().map(|w| domains(&w.pod_affinity_term, &own, &ctx, w.weight as i64)).collect();
        preferred.extend(pref_anti.iter().map(|w| domains(&w.pod_affinity_term, &own, &ctx, -(w.weight as i64))));
        let spread = constraints.iter().map(|c| spread(c, &own, pv, nodes, usage)).collect();
        Some(Topology { affinity, affinity_first_of_group, anti_affinity, existing_anti, preferred, spread })
    }

    /// The filters, in upstream's order: InterPodAffinity, then PodTopologySpread.
    pub fn filter(&self, n: &NodeView) -> Option<Unfit> {
        for (key, values) in &self.existing_anti {
            if label(n, key).is_some_and(|v| values.contains(v)) {
                return Some(Unfit::ExistingAntiAffinity);
            }
        }
        if !self.affinity_first_of_group {
            for d in &self.affinity {
                if !label(n, &d.key).is_some_and(|v| d.values.contains(v)) {
                    return Some(Unfit::PodAffinity);
                }
            }
        }
        for d in &self.anti_affinity {
            if label(n, &d.key).is_some_and(|v| d.values.contains(v)) {
                return Some(Unfit::PodAntiAffinity);
            }
        }
        for s in self.spread.iter().filter(|s| s.hard) {
            let Some(v) = label(n, &s.key) else { return Some(Unfit::SpreadMissingLabel) };
            let count = s.counts.get(v).copied().unwrap_or(0);
            if count + 1 - s.min > s.max_skew {
                return Some(Unfit::Spread);
            }
        }
        None
    }

    /// Preferred (anti-)affinity weights of the domains this node is in, and fewer matching pods for ScheduleAnyway
    /// spreading (up to 100 per constraint).
    pub fn score(&self, n: &NodeView) -> i64 {
        let mut s = 0;
        for d in &self.preferred {
            if label(n, &d.key).is_some_and(|v| d.values.contains(v)) {
                s += d.weight;
            }
        }
        for sp in self.spread.iter().filter(|s| !s.hard) {
            let Some(v) = label(n, &sp.key) else { continue };
            let count = sp.counts.get(v).copied().unwrap_or(0);
            let max = sp.counts.values().copied().max().unwrap_or(0);
            if max > 0 {
                s += 100 * (max - count) / max;
            } else {
                s += 100;
            }
        }
        s
    }
}

/// Keeps the shared pod list cheap to clone into a node's usage.
pub type PodRef = Arc<PodInfo>;

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;
    use serde_json::json;

    fn node(name: &str, zone: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "zone": zone}},
            "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}, "conditions": [{"type": "Ready", "status": "True"}]}}))
        .unwrap()
    }

    fn pod(name: &str, labels: serde_json::Value, spec_extra: serde_json::Value) -> CachedPod {
        pod_in("default", name, labels, spec_extra)
    }

    fn pod_in(ns: &str, name: &str, labels: serde_json::Value, spec_extra: serde_json::Value) -> CachedPod {
        let mut spec = json!({"containers": [{"name": "c", "image": "x"}]});
        json_patch::merge(&mut spec, &spec_extra);
        serde_json::from_value(json!({"metadata": {"name": name, "uid": name, "namespace": ns, "labels": labels}, "spec": spec})).unwrap()
    }

    /// default, team-a (env=prod), team-b (env=dev), team-c (env=prod).
    fn namespaces() -> NamespaceLabels {
        let l = |env: Option<&str>| env.map(|e| BTreeMap::from([("env".to_string(), e.to_string())])).unwrap_or_default();
        [("default", None), ("team-a", Some("prod")), ("team-b", Some("dev")), ("team-c", Some("prod"))]
            .into_iter()
            .map(|(n, e)| (n.to_string(), l(e)))
            .collect()
    }

    fn usage_with(placed: &[(&str, CachedPod)]) -> HashMap<String, NodeUsage> {
        let mut u: HashMap<String, NodeUsage> = HashMap::new();
        for (n, p) in placed {
            u.entry(n.to_string()).or_default().add_pod(p);
        }
        u
    }

    fn judge(p: &CachedPod, nodes: &[Node], usage: &HashMap<String, NodeUsage>) -> Vec<Option<Unfit>> {
        let views: Vec<NodeView> = nodes.iter().map(NodeView::new).collect();
        let pv = PodView::new(p);
        let t = Topology::for_pod(&pv, &views, &node_index(&views), usage, &namespaces());
        views.iter().map(|n| t.as_ref().and_then(|t| t.filter(n))).collect()
    }

    fn term(key: &str, app: &str) -> serde_json::Value {
        json!({"topologyKey": key, "labelSelector": {"matchLabels": {"app": app}}})
    }

    #[test]
    fn selectors() {
        let l: BTreeMap<String, String> = [("app".to_string(), "web".to_string()), ("tier".into(), "fe".into())].into();
        let sel = |v| serde_json::from_value::<LabelSelector>(v).unwrap();
        assert!(selector_matches(&sel(json!({})), &l));
        assert!(selector_matches(&sel(json!({"matchLabels": {"app": "web"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["fe", "be"]}]})), &l));
        assert!(!selector_matches(&sel(json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["fe"]}]})), &l));
        assert!(selector_matches(&sel(json!({"matchExpressions": [{"key": "x", "operator": "DoesNotExist"}]})), &l));
    }

    #[test]
    fn required_affinity_follows_matching_pods_and_lets_the_first_one_in() {
        let nodes = [node("a", "z1"), node("b", "z1"), node("c", "z2")];
        let db = pod("db", json!({"app": "db"}), json!({}));
        let web = pod("web", json!({"app": "web"}), json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("zone", "db")]}}}));
        let u = usage_with(&[("a", db)]);
        assert_eq!(judge(&web, &nodes, &u), vec![None, None, Some(Unfit::PodAffinity)]);
        // No db anywhere: nowhere to go.
        assert_eq!(judge(&web, &nodes, &HashMap::new()), vec![Some(Unfit::PodAffinity); 3]);
        // A pod that matches its own term may start the group.
        let first = pod("w1", json!({"app": "web"}), json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("zone", "web")]}}}));
        assert_eq!(judge(&first, &nodes, &HashMap::new()), vec![None, None, None]);
    }

    #[test]
    fn required_anti_affinity_both_ways() {
        let nodes = [node("a", "z1"), node("b", "z1"), node("c", "z2")];
        let spec = json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("kubernetes.io/hostname", "web")]}}});
        let w1 = pod("w1", json!({"app": "web"}), spec.clone());
        let w2 = pod("w2", json!({"app": "web"}), spec);
        let u = usage_with(&[("a", w1)]);
        assert_eq!(judge(&w2, &nodes, &u), vec![Some(Unfit::ExistingAntiAffinity), None, None]);
        // Symmetry: a plain web pod is kept off the node of a pod that refuses web neighbours.
        let plain = pod("w3", json!({"app": "web"}), json!({}));
        assert_eq!(judge(&plain, &nodes, &u), vec![Some(Unfit::ExistingAntiAffinity), None, None]);
        let other = pod("o", json!({"app": "other"}), json!({}));
        assert_eq!(judge(&other, &nodes, &u), vec![None, None, None]);
    }

    #[test]
    fn topology_spread_keeps_the_skew() {
        let nodes = [node("a", "z1"), node("b", "z2"), node("c", "z3")];
        let spec = json!({"topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule",
                                                         "labelSelector": {"matchLabels": {"app": "web"}}}]});
        let w = |n: &str| pod(n, json!({"app": "web"}), json!({}));
        let u = usage_with(&[("a", w("w1")), ("b", w("w2"))]);
        let next = pod("w3", json!({"app": "web"}), spec.clone());
        assert_eq!(judge(&next, &nodes, &u), vec![Some(Unfit::Spread), Some(Unfit::Spread), None]);
        let unlabeled: Node = serde_json::from_value(json!({"metadata": {"name": "d"}, "status": {"allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"}}})).unwrap();
        assert_eq!(judge(&next, &[unlabeled], &HashMap::new()), vec![Some(Unfit::SpreadMissingLabel)]);
    }

    #[test]
    fn preferences_score() {
        let nodes = [node("a", "z1"), node("b", "z2")];
        let views: Vec<NodeView> = nodes.iter().map(NodeView::new).collect();
        let cache = pod("cache", json!({"app": "cache"}), json!({}));
        let u = usage_with(&[("a", cache)]);
        let p = pod("web", json!({"app": "web"}), json!({"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 80, "podAffinityTerm": term("zone", "cache")}]}}}));
        let pv = PodView::new(&p);
        let t = Topology::for_pod(&pv, &views, &node_index(&views), &u, &namespaces()).unwrap();
        assert_eq!((t.score(&views[0]), t.score(&views[1])), (80, 0));
        let anti = pod("web2", json!({"app": "web"}), json!({"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
            {"weight": 30, "podAffinityTerm": term("zone", "cache")}]}}}));
        let pv = PodView::new(&anti);
        let t = Topology::for_pod(&pv, &views, &node_index(&views), &u, &namespaces()).unwrap();
        assert_eq!((t.score(&views[0]), t.score(&views[1])), (-30, 0));
        assert!(Topology::for_pod(&PodView::new(&pod("plain", json!({}), json!({}))), &views, &node_index(&views), &u, &namespaces()).is_none());
    }

    fn ns_term(extra: serde_json::Value) -> PodAffinityTerm {
        let mut t = term("zone", "db");
        json_patch::merge(&mut t, &extra);
        serde_json::from_value(t).unwrap()
    }

    fn only(names: &[&str]) -> NamespaceScope<'static> {
        NamespaceScope::Only(names.iter().map(|n| n.to_string()).collect())
    }

    #[test]
    fn term_namespaces_follow_upstream_rules() {
        let ns = namespaces();
        // Neither a list nor a selector: the pod's own namespace.
        assert_eq!(term_namespaces(&ns_term(json!({})), "team-b", &ns), NamespaceScope::Own("team-b"));
        assert_eq!(term_namespaces(&ns_term(json!({"namespaces": []})), "team-b", &ns), NamespaceScope::Own("team-b"));
        // A list alone: exactly those.
        assert_eq!(term_namespaces(&ns_term(json!({"namespaces": ["team-a", "x"]})), "default", &ns), only(&["team-a", "x"]));
        // An empty selector: every namespace, whatever the list says.
        assert_eq!(term_namespaces(&ns_term(json!({"namespaceSelector": {}})), "default", &ns), NamespaceScope::All);
        assert_eq!(term_namespaces(&ns_term(json!({"namespaceSelector": {"matchLabels": {}}, "namespaces": ["a"]})), "default", &ns), NamespaceScope::All);
        // A selector: the namespaces whose labels match (not the pod's own unless it matches)...
        assert_eq!(term_namespaces(&ns_term(json!({"namespaceSelector": {"matchLabels": {"env": "prod"}}})), "default", &ns), only(&["team-a", "team-c"]));
        let expr = json!({"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "NotIn", "values": ["prod"]}]}});
        assert_eq!(term_namespaces(&ns_term(expr), "team-a", &ns), only(&["default", "team-b"]));
        // ...united with the list; a selector that matches nothing selects nothing.
        let both = json!({"namespaces": ["team-b"], "namespaceSelector": {"matchLabels": {"env": "prod"}}});
        assert_eq!(term_namespaces(&ns_term(both), "default", &ns), only(&["team-a", "team-b", "team-c"]));
        assert_eq!(term_namespaces(&ns_term(json!({"namespaceSelector": {"matchLabels": {"env": "qa"}}})), "default", &ns), only(&[]));
    }

    #[test]
    fn affinity_terms_look_in_their_namespaces() {
        let nodes = [node("a", "z1"), node("b", "z2"), node("c", "z3")];
        let u = usage_with(&[("a", pod_in("team-a", "db-a", json!({"app": "db"}), json!({}))), ("b", pod_in("team-b", "db-b", json!({"app": "db"}), json!({}))), ("c", pod("db-c", json!({"app": "db"}), json!({})))]);
        let web = |extra: serde_json::Value| {
            let t = serde_json::to_value(ns_term(extra)).unwrap();
            pod("web", json!({"app": "web"}), json!({"affinity": {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [t]}}}))
        };
        let ok = |v: Vec<Option<Unfit>>| v.iter().map(Option::is_none).collect::<Vec<_>>();
        assert_eq!(ok(judge(&web(json!({})), &nodes, &u)), [false, false, true], "own namespace only");
        assert_eq!(ok(judge(&web(json!({"namespaces": ["team-b"]})), &nodes, &u)), [false, true, false]);
        assert_eq!(ok(judge(&web(json!({"namespaceSelector": {"matchLabels": {"env": "prod"}}})), &nodes, &u)), [true, false, false]);
        assert_eq!(ok(judge(&web(json!({"namespaceSelector": {}})), &nodes, &u)), [true, true, true]);
        let union = json!({"namespaces": ["default"], "namespaceSelector": {"matchLabels": {"env": "dev"}}});
        assert_eq!(ok(judge(&web(union), &nodes, &u)), [false, true, true]);
    }

    #[test]
    fn existing_anti_affinity_looks_in_its_own_namespaces() {
        let nodes = [node("a", "z1"), node("b", "z2")];
        let anti = |extra: serde_json::Value| {
            let mut t = term("kubernetes.io/hostname", "web");
            json_patch::merge(&mut t, &extra);
            json!({"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [t]}}})
        };
        let web = pod("web", json!({"app": "web"}), json!({}));
        // A team-a pod refusing web neighbours of its own namespace does not mind a web pod of default...
        let u = usage_with(&[("a", pod_in("team-a", "guard", json!({}), anti(json!({}))))]);
        assert_eq!(judge(&web, &nodes, &u), vec![None, None]);
        // ...but does when its term names default, or selects it by labels.
        let u = usage_with(&[("a", pod_in("team-a", "guard", json!({}), anti(json!({"namespaces": ["default"]}))))]);
        assert_eq!(judge(&web, &nodes, &u), vec![Some(Unfit::ExistingAntiAffinity), None]);
        let sel = json!({"namespaceSelector": {"matchExpressions": [{"key": "env", "operator": "DoesNotExist"}]}});
        let u = usage_with(&[("a", pod_in("team-a", "guard", json!({}), anti(sel)))]);
        assert_eq!(judge(&web, &nodes, &u), vec![Some(Unfit::ExistingAntiAffinity), None]);
    }
}
