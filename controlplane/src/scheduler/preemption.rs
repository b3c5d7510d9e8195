//! Preemption (upstream's DefaultPreemption, simplified): when a pod fits nowhere, find the node where evicting
//! the fewest, least important lower-priority pods makes it fit. Pure.
//!
//! Per node: take away every pod of lower priority; if the pod still does not fit (a taint, affinity, a port held
//! by a more important pod, ...), the node cannot help. Otherwise give back as many of them as still leave room,
//! most important first ("reprieve"); the rest are the victims. The node chosen has the lowest highest-victim
//! priority, then the lowest sum of victim priorities, then the fewest victims.

use std::collections::HashMap;


use super::plugins::{filter_view, NodeUsage, NodeView, PodView};
use super::topology::PodRef;
use crate::controllers::cached_pod::CachedPod;

#[derive(Debug)]
pub struct Preemption {
    pub node: String,
    pub victims: Vec<PodRef>,
}

pub fn can_preempt(p: &CachedPod) -> bool {
    p.spec.as_ref().and_then(|s| s.preemption_policy.as_deref()) != Some("Never")
}

pub fn preempt(p: &CachedPod, nodes: &[NodeView], usage: &HashMap<String, NodeUsage>) -> Option<Preemption> {
    if !can_preempt(p) {
        return None;
    }
    let prio = p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
    let pv = PodView::new(p);
    let empty = NodeUsage::default();
    let mut best: Option<((i32, i64, usize), Preemption)> = None;
    for n in nodes {
        let u = usage.get(n.name).unwrap_or(&empty);
        let (mut lower, keep): (Vec<PodRef>, Vec<PodRef>) = u.pods.iter().cloned().partition(|q| q.priority < prio && !q.terminating);
        if lower.is_empty() {
            continue;
        }
        let mut current = NodeUsage::of(keep);
        if !filter_view(&pv, n, &current).is_empty() {
            continue;
        }
        lower.sort_by(|a, b| b.priority.cmp(&a.priority).then_with(|| a.name.cmp(&b.name)));
        let mut victims = vec![];
        for q in lower {
            let mut with = current.clone();
            with.add_info(q.clone());
            if filter_view(&pv, n, &with).is_empty() {
                current = with;
            } else {
                victims.push(q);
            }
        }
        if victims.is_empty() {
            // It fits without evicting anyone: not a preemption case (the filters said no for another reason).
            continue;
        }
        let key = (
            victims.iter().map(|v| v.priority).max().unwrap_or(i32::MIN),
            victims.iter().map(|v| v.priority as i64).sum::<i64>(),
            victims.len(),
        );
        if best.as_ref().is_none_or(|(k, b)| key < *k || (key == *k && n.name < b.node.as_str())) {
            best = Some((key, Preemption { node: n.name.to_string(), victims }));
        }
    }
    best.map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Node;
    use serde_json::json;

    fn node(name: &str, cpu: &str) -> Node {
        serde_json::from_value(json!({"metadata": {"name": name}, "status": {"allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]}}))
        .unwrap()
    }

    fn pod(name: &str, cpu: &str, priority: i32) -> CachedPod {
        serde_json::from_value(json!({"metadata": {"name": name, "uid": name, "namespace": "default"},
            "spec": {"priority": priority, "containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": cpu}}}]}}))
        .unwrap()
    }

    fn usage(placed: &[(&str, CachedPod)]) -> HashMap<String, NodeUsage> {
        let mut u: HashMap<String, NodeUsage> = HashMap::new();
        for (n, p) in placed {
            u.entry(n.to_string()).or_default().add_pod(p);
        }
        u
    }

    #[test]
    fn evicts_the_fewest_least_important_pods() {
        let nodes = [node("a", "2"), node("b", "2")];
        let views: Vec<NodeView> = nodes.iter().map(NodeView::new).collect();
        let u = usage(&[("a", pod("a-low", "1", 1)), ("a", pod("a-mid", "1", 5)), ("b", pod("b-low1", "1", 1)), ("b", pod("b-low2", "1", 1))]);
        let big = pod("big", "1", 10);
        // On a: evicting a-low suffices (max victim priority 1); on b one of the two priority-1 pods too: same key,
        // fewer victims tie, the node name decides.
        let p = preempt(&big, &views, &u).unwrap();
        assert_eq!(p.node, "a");
        assert_eq!(p.victims.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["a-low"]);
        let huge = pod("huge", "2", 10);
        let p = preempt(&huge, &views, &u).unwrap();
        assert_eq!(p.node, "b", "b's victims are less important");
        assert_eq!(p.victims.len(), 2);
    }

    #[test]
    fn never_preempts_equal_or_higher_priority_or_with_policy_never() {
        let nodes = [node("a", "1")];
        let views: Vec<NodeView> = nodes.iter().map(NodeView::new).collect();
        let u = usage(&[("a", pod("same", "1", 5))]);
        assert!(preempt(&pod("p", "1", 5), &views, &u).is_none());
        let mut polite = pod("p", "1", 9);
        polite.spec.as_mut().unwrap().preemption_policy = Some("Never".into());
        assert!(preempt(&polite, &views, &u).is_none());
        assert!(preempt(&pod("p", "1", 9), &views, &u).is_some());
        // A pod that cannot fit even on an empty node evicts nobody.
        assert!(preempt(&pod("p", "3", 9), &views, &u).is_none());
    }
}
