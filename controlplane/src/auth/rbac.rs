//! RBAC: Roles, ClusterRoles, RoleBindings and ClusterRoleBindings decide what a user may do, with upstream's rules
//! (a request is allowed when any rule of any role bound to the user or one of its groups covers it; there are no
//! deny rules). The evaluation is a pure function over a [`Policy`] snapshot; [`PolicyCache`] keeps the snapshot in
//! step with the store through a watch.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject};

use super::authn::Identity;
use crate::store::{EventKind, ListOptions, Store};

/// What a request asks to do, as the authorizer sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attributes {
    /// get, list, watch, create, update, patch, delete, deletecollection (resources); get, post, ... (others);
    /// impersonate.
    pub verb: String,
    pub resource_request: bool,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
    /// For non-resource requests.
    pub path: String,
}

impl Attributes {
    /// The upstream message of a 403.
    pub fn forbidden_message(&self, user: &str) -> String {
        if !self.resource_request {
            return format!("forbidden: User \"{user}\" cannot {} path \"{}\"", self.verb, self.path);
        }
        let res = if self.subresource.is_empty() { self.resource.clone() } else { format!("{}/{}", self.resource, self.subresource) };
        let what = if self.api_group.is_empty() { res.clone() } else { format!("{res}.{}", self.api_group) };
        let subject = if self.name.is_empty() { what } else { format!("{what} \"{}\"", self.name) };
        let scope = if self.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace \"{}\"", self.namespace)
        };
        format!(
            "{subject} is forbidden: User \"{user}\" cannot {} resource \"{res}\" in API group \"{}\" {scope}",
            self.verb, self.api_group
        )
    }
}

/// All RBAC objects, by namespace/name.
#[derive(Default, Clone, Debug)]
pub struct Policy {
    pub roles: BTreeMap<(String, String), Role>,
    pub cluster_roles: BTreeMap<String, ClusterRole>,
    pub role_bindings: BTreeMap<(String, String), RoleBinding>,
    pub cluster_role_bindings: BTreeMap<String, ClusterRoleBinding>,
}

fn subject_matches(s: &Subject, id: &Identity, binding_ns: &str) -> bool {
    match s.kind.as_str() {
        "User" => s.name == id.user,
        "Group" => id.in_group(&s.name),
        "ServiceAccount" => {
            let ns = s.namespace.as_deref().filter(|n| !n.is_empty()).unwrap_or(binding_ns);
            id.user == format!("system:serviceaccount:{ns}:{}", s.name)
        }
        _ => false,
    }
}

fn has(list: &[String], v: &str) -> bool {
    list.iter().any(|x| x == "*" || x == v)
}

/// Does `rule` cover the request? (upstream's RuleAllows)
pub fn rule_allows(rule: &PolicyRule, a: &Attributes) -> bool {
    if !has(&rule.verbs, &a.verb) {
        return false;
    }
    if !a.resource_request {
        return rule.non_resource_urls.as_deref().unwrap_or_default().iter().any(|u| {
            u == "*" || u == &a.path || (u.ends_with('*') && a.path.starts_with(&u[..u.len() - 1]))
        });
    }
    if !has(rule.api_groups.as_deref().unwrap_or_default(), &a.api_group) {
        return false;
    }
    let resources = rule.resources.as_deref().unwrap_or_default();
    let resource_ok = if a.subresource.is_empty() {
        has(resources, &a.resource)
    } else {
        let combined = format!("{}/{}", a.resource, a.subresource);
        let any_of_sub = format!("*/{}", a.subresource);
        resources.iter().any(|r| r == "*" || *r == combined || *r == any_of_sub)
    };
    if !resource_ok {
        return false;
    }
    match rule.resource_names.as_deref() {
        None | Some([]) => true,
        Some(names) => !a.name.is_empty() && names.iter().any(|n| n == &a.name),
    }
}

impl Policy {
    fn cluster_role_rules(&self, name: &str) -> Vec<&PolicyRule> {
        let Some(cr) = self.cluster_roles.get(name) else { return Vec::new() };
        let mut rules: Vec<&PolicyRule> = cr.rules.iter().flatten().collect();
        // Aggregated ClusterRoles (admin/edit/view style): the rules of every ClusterRole their selectors pick.
        if let Some(agg) = &cr.aggregation_rule {
            for sel in agg.cluster_role_selectors.iter().flatten() {
                for other in self.cluster_roles.values() {
                    if other.metadata.name.as_deref() != Some(name) && label_selector_matches(sel, other.metadata.labels.as_ref()) {
                        rules.extend(other.rules.iter().flatten());
                    }
                }
            }
        }
        rules
    }

    /// Upstream's RBAC authorizer: allowed, or not.
    pub fn allows(&self, id: &Identity, a: &Attributes) -> bool {
        self.allowed_by(id, a).is_some()
    }

    /// Why `a` is allowed (upstream's reason: the binding, its role and the subject that matched), or None.
    pub fn allowed_by(&self, id: &Identity, a: &Attributes) -> Option<String> {
        let subject_text = |s: &Subject| format!("{} \"{}\"", s.kind, s.name);
        for (name, crb) in &self.cluster_role_bindings {
            if crb.role_ref.kind != "ClusterRole" {
                continue;
            }
            let Some(subject) = crb.subjects.iter().flatten().find(|s| subject_matches(s, id, "")) else { continue };
            if self.cluster_role_rules(&crb.role_ref.name).into_iter().any(|r| rule_allows(r, a)) {
                return Some(format!(
                    "RBAC: allowed by ClusterRoleBinding \"{name}\" of ClusterRole \"{}\" to {}",
                    crb.role_ref.name,
                    subject_text(subject)
                ));
            }
        }
        if a.namespace.is_empty() {
            return None;
        }
        for ((ns, name), rb) in self.bindings_in(&a.namespace) {
            let Some(subject) = rb.subjects.iter().flatten().find(|s| subject_matches(s, id, ns)) else { continue };
            if self.binding_rules(ns, rb).into_iter().any(|r| rule_allows(r, a)) {
                return Some(format!(
                    "RBAC: allowed by RoleBinding \"{name}/{ns}\" of {} \"{}\" to {}",
                    rb.role_ref.kind,
                    rb.role_ref.name,
                    subject_text(subject)
                ));
            }
        }
        None
    }

    fn bindings_in<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = (&'a (String, String), &'a RoleBinding)> + 'a {
        let lo = (namespace.to_string(), String::new());
        self.role_bindings.range(lo..).take_while(move |((ns, _), _)| ns == namespace)
    }

    fn binding_rules(&self, ns: &str, rb: &RoleBinding) -> Vec<&PolicyRule> {
        match rb.role_ref.kind.as_str() {
            "ClusterRole" => self.cluster_role_rules(&rb.role_ref.name),
            "Role" => self.roles.get(&(ns.to_string(), rb.role_ref.name.clone())).map(|r| r.rules.iter().flatten().collect()).unwrap_or_default(),
            _ => Vec::new(),
        }
    }

    /// Every rule that applies to `id` in `namespace` (cluster-wide bindings, then the namespace's), for
    /// SelfSubjectRulesReview.
    pub fn rules_for(&self, id: &Identity, namespace: &str) -> Vec<PolicyRule> {
        let mut out: Vec<PolicyRule> = Vec::new();
        for crb in self.cluster_role_bindings.values() {
            if crb.role_ref.kind == "ClusterRole" && crb.subjects.iter().flatten().any(|s| subject_matches(s, id, "")) {
                out.extend(self.cluster_role_rules(&crb.role_ref.name).into_iter().cloned());
            }
        }
        for ((ns, _), rb) in self.bindings_in(namespace) {
            if rb.subjects.iter().flatten().any(|s| subject_matches(s, id, ns)) {
                out.extend(self.binding_rules(ns, rb).into_iter().cloned());
            }
        }
        out
    }

    /// Apply one stored object (None: deleted) under its store key.
    pub fn apply(&mut self, key: &str, value: Option<&[u8]>) {
        // /registry/rbac.authorization.k8s.io/<plural>/[<ns>/]<name>
        let Some(rest) = key.strip_prefix("/registry/rbac.authorization.k8s.io/") else { return };
        let parts: Vec<&str> = rest.split('/').collect();
        fn parse<T: serde::de::DeserializeOwned>(v: Option<&[u8]>) -> Option<T> {
            v.and_then(|b| serde_json::from_slice(b).ok())
        }
        match parts.as_slice() {
            ["roles", ns, name] => set(&mut self.roles, (ns.to_string(), name.to_string()), parse(value)),
            ["rolebindings", ns, name] => set(&mut self.role_bindings, (ns.to_string(), name.to_string()), parse(value)),
            ["clusterroles", name] => set(&mut self.cluster_roles, name.to_string(), parse(value)),
            ["clusterrolebindings", name] => set(&mut self.cluster_role_bindings, name.to_string(), parse(value)),
            _ => {}
        }
    }
}

fn set<K: Ord, V>(m: &mut BTreeMap<K, V>, k: K, v: Option<V>) {
    match v {
        Some(v) => {
            m.insert(k, v);
        }
        None => {
            m.remove(&k);
        }
    }
}

fn label_selector_matches(
    sel: &k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    let ml = sel.match_labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let me = sel.match_expressions.iter().flatten().all(|e| {
        let vals = e.values.as_deref().unwrap_or_default();
        match e.operator.as_str() {
            "In" => labels.get(&e.key).is_some_and(|v| vals.contains(v)),
            "NotIn" => labels.get(&e.key).is_none_or(|v| !vals.contains(v)),
            "Exists" => labels.contains_key(&e.key),
            "DoesNotExist" => !labels.contains_key(&e.key),
            _ => false,
        }
    });
    ml && me
}

pub const PREFIX: &str = "/registry/rbac.authorization.k8s.io/";

/// The current [`Policy`], kept in step with the store by [`PolicyCache::run`].
#[derive(Default)]
pub struct PolicyCache {
    policy: RwLock<Arc<Policy>>,
    ready: tokio::sync::Notify,
    loaded: std::sync::atomic::AtomicBool,
}

impl PolicyCache {
    pub fn snapshot(&self) -> Arc<Policy> {
        self.policy.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Wait until the first list has been loaded.
    pub async fn wait_loaded(&self) {
        loop {
            let n = self.ready.notified();
            if self.loaded.load(std::sync::atomic::Ordering::Acquire) {
                return;
            }
            n.await;
        }
    }

    /// List, then watch, the RBAC objects; relist when the watch ends or falls behind compaction. Never returns.
    pub async fn run(self: Arc<Self>, store: Arc<dyn Store>) {
        use futures::StreamExt;
        loop {
            let listed = store.list(PREFIX, ListOptions::default()).await;
            let (mut policy, rev) = match listed {
                Ok(l) => {
                    let mut p = Policy::default();
                    for kv in &l.items {
                        p.apply(&kv.key, Some(&kv.value));
                    }
                    (p, l.revision)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "listing RBAC objects");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy.clone());
            self.loaded.store(true, std::sync::atomic::Ordering::Release);
            self.ready.notify_waiters();
            let mut stream = match store.watch(PREFIX, rev).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "watching RBAC objects");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            while let Some(ev) = stream.next().await {
                let Ok(ev) = ev else { break };
                match ev.kind {
                    EventKind::Create | EventKind::Update => policy.apply(&ev.kv.key, Some(&ev.kv.value)),
                    EventKind::Delete => policy.apply(&ev.kv.key, None),
                }
                *self.policy.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(policy.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(verb: &str, group: &str, resource: &str, sub: &str, ns: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            resource: resource.into(),
            subresource: sub.into(),
            namespace: ns.into(),
            name: name.into(),
            path: String::new(),
        }
    }

    fn policy() -> Policy {
        let mut p = Policy::default();
        let put = |p: &mut Policy, key: &str, v: serde_json::Value| p.apply(key, Some(&serde_json::to_vec(&v).unwrap()));
        put(&mut p, "/registry/rbac.authorization.k8s.io/clusterroles/view", json!({
            "metadata": {"name": "view"},
            "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"agg-view": "true"}}]}
        }));
        put(&mut p, "/registry/rbac.authorization.k8s.io/clusterroles/view-pods", json!({
            "metadata": {"name": "view-pods", "labels": {"agg-view": "true"}},
            "rules": [{"apiGroups": [""], "resources": ["pods", "pods/log"], "verbs": ["get", "list", "watch"]}]
        }));
        put(&mut p, "/registry/rbac.authorization.k8s.io/roles/team/cm-one", json!({
            "metadata": {"name": "cm-one", "namespace": "team"},
            "rules": [{"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["one"], "verbs": ["get", "update"]}]
        }));
        put(&mut p, "/registry/rbac.authorization.k8s.io/rolebindings/team/alice-view", json!({
            "metadata": {"name": "alice-view", "namespace": "team"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "ServiceAccount", "name": "bot"}]
        }));
        put(&mut p, "/registry/rbac.authorization.k8s.io/rolebindings/team/devs-cm", json!({
            "metadata": {"name": "devs-cm", "namespace": "team"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "cm-one"},
            "subjects": [{"kind": "Group", "name": "devs"}]
        }));
        put(&mut p, "/registry/rbac.authorization.k8s.io/clusterroles/health", json!({
            "metadata": {"name": "health"},
            "rules": [{"nonResourceURLs": ["/healthz", "/api*"], "verbs": ["get"]}]
        }));
        put(&mut p, "/registry/rbac.authorization.k8s.io/clusterrolebindings/health", json!({
            "metadata": {"name": "health"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "health"},
            "subjects": [{"kind": "Group", "name": "system:authenticated"}]
        }));
        p
    }

    #[test]
    fn bindings_roles_and_rules() {
        let p = policy();
        let alice = Identity::new("alice", &["system:authenticated"]);
        let bob = Identity::new("bob", &["devs", "system:authenticated"]);
        let bot = Identity::new("system:serviceaccount:team:bot", &[]);
        // Aggregated ClusterRole through a RoleBinding: only in that namespace.
        assert!(p.allows(&alice, &attrs("list", "", "pods", "", "team", "")));
        assert!(p.allows(&alice, &attrs("get", "", "pods", "log", "team", "web")));
        assert!(p.allows(&bot, &attrs("watch", "", "pods", "", "team", "")));
        assert!(!p.allows(&alice, &attrs("list", "", "pods", "", "other", "")));
        assert!(!p.allows(&alice, &attrs("list", "", "pods", "", "", "")), "a RoleBinding grants nothing cluster-wide");
        assert!(!p.allows(&alice, &attrs("delete", "", "pods", "", "team", "web")));
        assert!(!p.allows(&alice, &attrs("create", "", "pods", "exec", "team", "web")), "subresources are separate");
        assert!(!p.allows(&alice, &attrs("list", "apps", "pods", "", "team", "")), "API groups must match");
        // resourceNames.
        assert!(p.allows(&bob, &attrs("get", "", "configmaps", "", "team", "one")));
        assert!(!p.allows(&bob, &attrs("get", "", "configmaps", "", "team", "two")));
        assert!(!p.allows(&bob, &attrs("list", "", "configmaps", "", "team", "")));
        // Non-resource URLs with a trailing *.
        let nr = |path: &str| Attributes { verb: "get".into(), path: path.into(), ..Default::default() };
        assert!(p.allows(&alice, &nr("/healthz")));
        assert!(p.allows(&alice, &nr("/apis/apps/v1")));
        assert!(!p.allows(&alice, &nr("/metrics")));
        assert!(!p.allows(&Identity::new("x", &[]), &nr("/healthz")));
    }

    #[test]
    fn deletes_and_messages() {
        let mut p = policy();
        let bob = Identity::new("bob", &["devs"]);
        p.apply("/registry/rbac.authorization.k8s.io/rolebindings/team/devs-cm", None);
        assert!(!p.allows(&bob, &attrs("get", "", "configmaps", "", "team", "one")));
        p.apply("/registry/rbac.authorization.k8s.io/clusterroles/garbage", Some(b"{not json"));
        assert!(!p.cluster_roles.contains_key("garbage"));
        assert_eq!(
            attrs("list", "", "pods", "", "team", "").forbidden_message("bob"),
            "pods is forbidden: User \"bob\" cannot list resource \"pods\" in API group \"\" in the namespace \"team\""
        );
        assert_eq!(
            attrs("get", "apps", "deployments", "scale", "", "web").forbidden_message("bob"),
            "deployments/scale.apps \"web\" is forbidden: User \"bob\" cannot get resource \"deployments/scale\" in API group \"apps\" at the cluster scope"
        );
    }
}
