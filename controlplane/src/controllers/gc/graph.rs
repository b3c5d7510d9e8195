//! The garbage collector's dependency graph and its decisions, without I/O.
//!
//! Every object of the watched resources is a [`Node`] keyed by uid, with the owners its `ownerReferences` name;
//! an index from owner uid to dependents answers "who depends on this?". Changes to the graph say which objects
//! need a look ([`Graph::upsert`], [`Graph::remove`]); [`plan`] decides what a look finds to do.

use std::collections::{HashMap, HashSet};

use kube::api::ObjectMeta;

pub const FOREGROUND: &str = "foregroundDeletion";
pub const ORPHAN: &str = "orphan";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub uid: String,
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// `blockOwnerDeletion`: a foreground deletion of the owner waits for this dependent.
    pub block: bool,
}

/// What the collector keeps of an object (its metadata, reduced).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// Index into [`crate::api::resources::RESOURCES`].
    pub resource: usize,
    pub namespace: Option<String>,
    pub name: String,
    pub owners: Vec<Owner>,
    pub deleting: bool,
    /// Being deleted in the foreground: waits for its blocking dependents.
    pub foreground: bool,
    /// Being deleted with the orphan policy: its dependents lose their references to it first.
    pub orphan: bool,
}

impl Node {
    pub fn from_meta(resource: usize, meta: &ObjectMeta) -> Option<(String, Node)> {
        let uid = meta.uid.clone().filter(|u| !u.is_empty())?;
        let fins = meta.finalizers.as_deref().unwrap_or_default();
        let deleting = meta.deletion_timestamp.is_some();
        let owners = meta
            .owner_references
            .iter()
            .flatten()
            .map(|r| Owner {
                uid: r.uid.clone(),
                api_version: r.api_version.clone(),
                kind: r.kind.clone(),
                name: r.name.clone(),
                block: r.block_owner_deletion == Some(true),
            })
            .collect();
        let node = Node {
            resource,
            namespace: meta.namespace.clone().filter(|n| !n.is_empty()),
            name: meta.name.clone().unwrap_or_default(),
            owners,
            deleting,
            foreground: deleting && fins.iter().any(|f| f == FOREGROUND),
            orphan: deleting && fins.iter().any(|f| f == ORPHAN),
        };
        Some((uid, node))
    }

    fn waits_for_dependents(&self) -> bool {
        self.foreground
    }
}

#[derive(Default, Debug)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    /// owner uid → uids of the objects that name it.
    dependents: HashMap<String, HashSet<String>>,
}

impl Graph {
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// uids of the objects that name `uid` as an owner.
    pub fn dependents(&self, uid: &str) -> Vec<String> {
        self.dependents.get(uid).map(|d| d.iter().cloned().collect()).unwrap_or_default()
    }

    /// uids of every object of `resource` (to find those a relist no longer shows).
    pub fn uids_of(&self, resource: usize) -> HashSet<String> {
        self.nodes.iter().filter(|(_, n)| n.resource == resource).map(|(u, _)| u.clone()).collect()
    }

    /// Add or update an object. Returns the uids to look at.
    pub fn upsert(&mut self, uid: String, node: Node) -> Vec<String> {
        let mut look = Vec::new();
        let old = self.nodes.get(&uid);
        if old == Some(&node) {
            return look;
        }
        let old_owners: Vec<String> = old.map(|o| o.owners.iter().map(|r| r.uid.clone()).collect()).unwrap_or_default();
        for o in &old_owners {
            if let Some(d) = self.dependents.get_mut(o) {
                d.remove(&uid);
                if d.is_empty() {
                    self.dependents.remove(o);
                }
            }
        }
        for o in &node.owners {
            self.dependents.entry(o.uid.clone()).or_default().insert(uid.clone());
        }
        // Owners waiting for their dependents may be done now that this one changed (it may have dropped them).
        for o in old_owners.iter().chain(node.owners.iter().map(|r| &r.uid)) {
            if self.nodes.get(o).is_some_and(Node::waits_for_dependents) {
                look.push(o.clone());
            }
        }
        if node.waits_for_dependents() {
            look.extend(self.dependents(&uid));
        }
        if !node.owners.is_empty() || node.foreground || node.orphan {
            look.push(uid.clone());
        }
        self.nodes.insert(uid, node);
        look
    }

    /// Forget a deleted object. Returns the uids to look at: its dependents (their owner is gone) and its owners
    /// that wait for their dependents.
    pub fn remove(&mut self, uid: &str) -> Vec<String> {
        let mut look = self.dependents(uid);
        if let Some(old) = self.nodes.remove(uid) {
            for o in &old.owners {
                if let Some(d) = self.dependents.get_mut(&o.uid) {
                    d.remove(uid);
                    if d.is_empty() {
                        self.dependents.remove(&o.uid);
                    }
                }
                if self.nodes.get(&o.uid).is_some_and(Node::waits_for_dependents) {
                    look.push(o.uid.clone());
                }
            }
        }
        look
    }
}

/// The state of one owner, as a dependent sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OwnerState {
    /// Exists and is not waiting for its dependents to go.
    Solid,
    /// Gone (or replaced by another object with the same name).
    Dangling,
    /// Being deleted in the foreground.
    WaitingForDependents,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// Drop the references to these owners from the object.
    RemoveOwnerRefs(Vec<String>),
    /// Remove the orphan finalizer once these dependents no longer reference the object.
    Orphan(Vec<String>),
    /// Remove the `foregroundDeletion` finalizer: no blocking dependent is left.
    FinishForeground,
    /// Foreground deletion waits for these blocking dependents; delete those not being deleted yet.
    DeleteDependents(Vec<String>),
    /// Delete the object, in the background or (it has dependents of its own, and an owner waits) foreground.
    Delete { foreground: bool },
}

/// Decide what to do about the object `uid` (as upstream's `attemptToDeleteItem`, `orphanDependents` and
/// `processDeletingDependentsItem`). `owner_states` holds the state of each of its owners (by uid); owners
/// missing from it are unknown and keep the object.
pub fn plan(graph: &Graph, uid: &str, owner_states: &HashMap<String, OwnerState>) -> Action {
    let Some(node) = graph.get(uid) else { return Action::Nothing };
    if node.orphan {
        return Action::Orphan(graph.dependents(uid));
    }
    if node.foreground {
        let blocking: Vec<String> = graph
            .dependents(uid)
            .into_iter()
            .filter(|d| graph.get(d).is_some_and(|dn| dn.owners.iter().any(|o| o.uid == uid && o.block)))
            .collect();
        if blocking.is_empty() {
            return Action::FinishForeground;
        }
        let mut to_delete: Vec<String> = blocking.into_iter().filter(|d| graph.get(d).is_some_and(|dn| !dn.deleting)).collect();
        to_delete.sort();
        return Action::DeleteDependents(to_delete);
    }
    if node.deleting || node.owners.is_empty() {
        return Action::Nothing;
    }
    let mut solid = false;
    let mut waiting = false;
    let mut drop = Vec::new();
    for o in &node.owners {
        match owner_states.get(&o.uid) {
            None | Some(OwnerState::Solid) => solid = true,
            Some(OwnerState::Dangling) => drop.push(o.uid.clone()),
            Some(OwnerState::WaitingForDependents) => {
                waiting = true;
                drop.push(o.uid.clone());
            }
        }
    }
    if solid {
        return if drop.is_empty() { Action::Nothing } else { Action::RemoveOwnerRefs(drop) };
    }
    let has_dependents = !graph.dependents(uid).is_empty();
    Action::Delete { foreground: waiting && has_dependents }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(uid: &str, block: bool) -> Owner {
        Owner { uid: uid.into(), api_version: "apps/v1".into(), kind: "ReplicaSet".into(), name: uid.into(), block }
    }

    fn node(name: &str, owners: Vec<Owner>) -> Node {
        Node { resource: 0, namespace: Some("default".into()), name: name.into(), owners, deleting: false, foreground: false, orphan: false }
    }

    fn states(s: &[(&str, OwnerState)]) -> HashMap<String, OwnerState> {
        s.iter().map(|(u, st)| (u.to_string(), *st)).collect()
    }

    #[test]
    fn from_meta_reads_owners_and_finalizers() {
        let meta: ObjectMeta = serde_json::from_value(serde_json::json!({"name": "p", "namespace": "ns", "uid": "u1",
            "deletionTimestamp": "2026-01-01T00:00:00Z", "finalizers": ["foregroundDeletion"],
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "uid": "o1", "blockOwnerDeletion": true}]}))
        .unwrap();
        let (uid, n) = Node::from_meta(3, &meta).unwrap();
        assert_eq!(uid, "u1");
        assert_eq!((n.resource, n.namespace.as_deref(), n.name.as_str()), (3, Some("ns"), "p"));
        assert!(n.deleting && n.foreground && !n.orphan);
        assert_eq!(n.owners, vec![Owner { name: "rs".into(), ..owner("o1", true) }]);
        // A finalizer without a deletionTimestamp is not a deletion in progress.
        let meta: ObjectMeta = serde_json::from_value(serde_json::json!({"name": "p", "uid": "u2", "finalizers": ["orphan"]})).unwrap();
        let (_, n) = Node::from_meta(0, &meta).unwrap();
        assert!(!n.orphan && !n.deleting);
        assert!(Node::from_meta(0, &ObjectMeta::default()).is_none(), "no uid, no node");
    }

    #[test]
    fn index_follows_upserts_and_removals() {
        let mut g = Graph::default();
        assert!(g.upsert("o".into(), node("o", vec![])).is_empty(), "an object without owners needs no look");
        assert_eq!(g.upsert("d".into(), node("d", vec![owner("o", true)])), ["d"]);
        assert_eq!(g.upsert("d".into(), node("d", vec![owner("o", true)])), Vec::<String>::new(), "unchanged: nothing");
        assert_eq!(g.dependents("o"), ["d"]);
        // The dependent drops its owner: the index follows.
        g.upsert("d".into(), node("d", vec![owner("x", false)]));
        assert!(g.dependents("o").is_empty());
        assert_eq!(g.dependents("x"), ["d"]);
        // The owner goes: its dependents are looked at.
        assert_eq!(g.remove("x"), ["d"]);
        assert_eq!(g.remove("d"), Vec::<String>::new());
        assert!(g.dependents("x").is_empty());
        assert_eq!(g.len(), 1);
        assert_eq!(g.uids_of(0), HashSet::from(["o".to_string()]));
    }

    #[test]
    fn foreground_owner_is_looked_at_when_a_dependent_goes() {
        let mut g = Graph::default();
        g.upsert("d".into(), node("d", vec![owner("o", true)]));
        let waiting = Node { deleting: true, foreground: true, ..node("o", vec![]) };
        let look = g.upsert("o".into(), waiting);
        assert!(look.contains(&"d".to_string()) && look.contains(&"o".to_string()), "{look:?}");
        assert_eq!(g.remove("d"), ["o"]);
    }

    #[test]
    fn dependent_of_solid_owner_stays() {
        let mut g = Graph::default();
        g.upsert("d".into(), node("d", vec![owner("o", false)]));
        assert_eq!(plan(&g, "d", &states(&[("o", OwnerState::Solid)])), Action::Nothing);
        assert_eq!(plan(&g, "d", &states(&[])), Action::Nothing, "unknown owner state keeps it");
        assert_eq!(plan(&g, "missing", &states(&[])), Action::Nothing);
    }

    #[test]
    fn dependent_of_gone_owner_is_deleted_in_background() {
        let mut g = Graph::default();
        g.upsert("d".into(), node("d", vec![owner("o", false)]));
        assert_eq!(plan(&g, "d", &states(&[("o", OwnerState::Dangling)])), Action::Delete { foreground: false });
        // Already being deleted: nothing more to do.
        g.upsert("d".into(), Node { deleting: true, ..node("d", vec![owner("o", false)]) });
        assert_eq!(plan(&g, "d", &states(&[("o", OwnerState::Dangling)])), Action::Nothing);
    }

    #[test]
    fn one_solid_owner_keeps_the_dependent_and_drops_the_others() {
        let mut g = Graph::default();
        g.upsert("d".into(), node("d", vec![owner("a", false), owner("b", false), owner("c", true)]));
        let s = states(&[("a", OwnerState::Solid), ("b", OwnerState::Dangling), ("c", OwnerState::WaitingForDependents)]);
        assert_eq!(plan(&g, "d", &s), Action::RemoveOwnerRefs(vec!["b".into(), "c".into()]));
    }

    #[test]
    fn waiting_owner_deletes_dependents_in_foreground_when_they_have_their_own() {
        let mut g = Graph::default();
        g.upsert("rs".into(), node("rs", vec![owner("deploy", true)]));
        let s = states(&[("deploy", OwnerState::WaitingForDependents)]);
        assert_eq!(plan(&g, "rs", &s), Action::Delete { foreground: false });
        g.upsert("pod".into(), node("pod", vec![owner("rs", true)]));
        assert_eq!(plan(&g, "rs", &s), Action::Delete { foreground: true });
    }

    #[test]
    fn foreground_deletion_waits_for_blocking_dependents_only() {
        let mut g = Graph::default();
        g.upsert("o".into(), Node { deleting: true, foreground: true, ..node("o", vec![]) });
        assert_eq!(plan(&g, "o", &states(&[])), Action::FinishForeground);
        g.upsert("free".into(), node("free", vec![owner("o", false)]));
        assert_eq!(plan(&g, "o", &states(&[])), Action::FinishForeground, "a non-blocking dependent does not hold it");
        g.upsert("b1".into(), node("b1", vec![owner("o", true)]));
        g.upsert("b2".into(), Node { deleting: true, ..node("b2", vec![owner("o", true)]) });
        assert_eq!(plan(&g, "o", &states(&[])), Action::DeleteDependents(vec!["b1".into()]));
        g.remove("b1");
        assert_eq!(plan(&g, "o", &states(&[])), Action::DeleteDependents(vec![]), "b2 is going: wait");
        g.remove("b2");
        assert_eq!(plan(&g, "o", &states(&[])), Action::FinishForeground);
    }

    #[test]
    fn orphan_deletion_lists_the_dependents() {
        let mut g = Graph::default();
        g.upsert("o".into(), Node { deleting: true, orphan: true, ..node("o", vec![]) });
        assert_eq!(plan(&g, "o", &states(&[])), Action::Orphan(vec![]));
        g.upsert("d".into(), node("d", vec![owner("o", true)]));
        assert_eq!(plan(&g, "o", &states(&[])), Action::Orphan(vec!["d".into()]));
    }
}
