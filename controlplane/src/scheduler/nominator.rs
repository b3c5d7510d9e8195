//! Nominated pods (upstream's nominator): a pod that preempted others is nominated to the node it made room on
//! (`status.nominatedNodeName`), and that room stays reserved for it while its victims terminate, across
//! scheduling passes. Pure.
//!
//! When a pod is judged against a node, the node's usage includes the pods nominated to it of equal or higher
//! priority (but not the pod itself): a lower- or equal-priority pod cannot take the freed resources, a
//! higher-priority pod can (it may preempt the nominee's claim, as upstream allows). A nominated pod tries its
//! nominated node first (upstream's PreferNominatedNode).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;


use super::plugins::NodeUsage;
use super::topology::{PodInfo, PodRef};
use crate::controllers::cached_pod::CachedPod;

/// The pods nominated to each node.
#[derive(Clone, Debug, Default)]
pub struct Nominations {
    by_node: HashMap<String, Vec<PodRef>>,
    node_of: HashMap<String, String>,
}

impl Nominations {
    /// Nominate `p` to `node` (replacing an earlier nomination of it).
    pub fn add(&mut self, node: &str, p: &CachedPod) {
        let info = Arc::new(PodInfo::new(p));
        self.remove(&info.uid);
        self.node_of.insert(info.uid.clone(), node.to_string());
        self.by_node.entry(node.to_string()).or_default().push(info);
    }

    /// The pod is placed (or no longer waits): its reservation ends.
    pub fn remove(&mut self, uid: &str) {
        if let Some(node) = self.node_of.remove(uid) {
            if let Some(list) = self.by_node.get_mut(&node) {
                list.retain(|p| p.uid != uid);
                if list.is_empty() {
                    self.by_node.remove(&node);
                }
            }
        }
    }

    pub fn node_of(&self, uid: &str) -> Option<&str> {
        self.node_of.get(uid).map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.node_of.is_empty()
    }

    /// `base` (the usage of `node`) as a pod with `uid` and `priority` must see it: with the resources of the pods
    /// nominated there that are at least as important, other than itself.
    pub fn usage_for<'a>(&self, node: &str, base: &'a NodeUsage, uid: &str, priority: i32) -> Cow<'a, NodeUsage> {
        let Some(list) = self.by_node.get(node) else { return Cow::Borrowed(base) };
        let mut reserved = list.iter().filter(|p| p.uid != uid && p.priority >= priority).peekable();
        if reserved.peek().is_none() {
            return Cow::Borrowed(base);
        }
        let mut u = base.clone();
        for p in reserved {
            u.add_info(p.clone());
        }
        Cow::Owned(u)
    }

    /// The usage of every node as a pod with `uid` and `priority` must see it (for preemption, which looks at all
    /// nodes); borrowed when no nomination matters to it.
    pub fn usage_map_for<'a>(&self, usage: &'a HashMap<String, NodeUsage>, uid: &str, priority: i32) -> Cow<'a, HashMap<String, NodeUsage>> {
        let matters = self.by_node.values().flatten().any(|p| p.uid != uid && p.priority >= priority);
        if !matters {
            return Cow::Borrowed(usage);
        }
        let mut all = usage.clone();
        let empty = NodeUsage::default();
        for node in self.by_node.keys() {
            let u = self.usage_for(node, usage.get(node).unwrap_or(&empty), uid, priority).into_owned();
            all.insert(node.clone(), u);
        }
        Cow::Owned(all)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(name: &str, cpu: &str, priority: i32) -> CachedPod {
        serde_json::from_value(json!({"metadata": {"name": name, "uid": name, "namespace": "default"},
            "spec": {"priority": priority, "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": cpu}}}]}}))
        .unwrap()
    }

    #[test]
    fn reservations_count_for_less_or_equally_important_pods_only() {
        let mut n = Nominations::default();
        n.add("a", &pod("high", "1500m", 100));
        let base = NodeUsage::default();
        assert_eq!(n.usage_for("a", &base, "low", 10).requested.cpu, 1500);
        assert_eq!(n.usage_for("a", &base, "peer", 100).requested.cpu, 1500);
        assert_eq!(n.usage_for("a", &base, "higher", 1000).requested.cpu, 0);
        assert_eq!(n.usage_for("a", &base, "high", 100).requested.cpu, 0, "not against itself");
        assert_eq!(n.usage_for("b", &base, "low", 10).requested.cpu, 0, "other nodes are free");
        assert!(matches!(n.usage_for("b", &base, "low", 10), Cow::Borrowed(_)));
    }

    #[test]
    fn a_new_nomination_replaces_the_old_and_removal_frees() {
        let mut n = Nominations::default();
        let p = pod("p", "1", 5);
        n.add("a", &p);
        n.add("b", &p);
        assert_eq!(n.node_of("p"), Some("b"));
        let base = NodeUsage::default();
        assert_eq!(n.usage_for("a", &base, "q", 0).requested.cpu, 0);
        assert_eq!(n.usage_for("b", &base, "q", 0).requested.cpu, 1000);
        n.remove("p");
        assert!(n.is_empty());
        assert_eq!(n.usage_for("b", &base, "q", 0).requested.cpu, 0);
    }

    #[test]
    fn usage_map_adds_reservations_where_they_matter() {
        let mut n = Nominations::default();
        n.add("a", &pod("p", "1", 50));
        let usage: HashMap<String, NodeUsage> = HashMap::new();
        let m = n.usage_map_for(&usage, "q", 10);
        assert_eq!(m.get("a").map(|u| u.requested.cpu), Some(1000));
        assert!(matches!(n.usage_map_for(&usage, "q", 60), Cow::Borrowed(_)));
    }
}
