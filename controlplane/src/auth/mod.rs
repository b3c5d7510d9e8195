//! Who may do what: the cluster CA ([`pki`]), authentication ([`authn`]), authorization by the node authorizer
//! ([`node`]) then RBAC ([`rbac`]), and the TLS listener ([`tls`]). Members of `system:masters` are always allowed,
//! as upstream's privileged-group authorizer does, so that an administrator cannot lock themselves out.

pub mod authn;
pub mod csr;
pub mod node;
pub mod pki;
pub mod rbac;
pub mod satoken;
pub mod tls;

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::HeaderMap;
use serde_json::{json, Value};

use crate::store::Store;
use authn::Identity;
use rbac::{Attributes, PolicyCache};

/// The user the API server's own loopback clients (controllers, scheduler, cloud controllers) act as.
pub const LOOPBACK_USER: &str = "system:apiserver";
/// The user the API server presents to node agents (logs, exec, attach, port-forward).
pub const KUBELET_CLIENT_USER: &str = "kube-apiserver-kubelet-client";

/// Health endpoints anyone may read (upstream's system:public-info-viewer, which also covers anonymous users).
pub fn is_public(path: &str) -> bool {
    matches!(path, "/healthz" | "/livez" | "/readyz" | "/version" | "/version/")
}

pub struct Auth {
    /// Static tokens (--token-auth-file).
    pub tokens: HashMap<String, Identity>,
    /// The in-process clients' token, new on every start, never written anywhere.
    pub loopback_token: String,
    pub policy: Arc<PolicyCache>,
    pub store: Arc<dyn Store>,
    /// Service account tokens: issued and accepted when configured.
    pub service_accounts: Option<ServiceAccounts>,
}

/// What the API server needs for service accounts: the token signer and the CA that pods get as ca.crt.
pub struct ServiceAccounts {
    pub issuer: Arc<satoken::TokenIssuer>,
    /// The cluster CA (PEM), published in every namespace's `kube-root-ca.crt` ConfigMap.
    pub root_ca_pem: String,
    /// Longest token lifetime handed out (`--service-account-max-token-expiration`); None: as asked.
    pub max_expiration: Option<std::time::Duration>,
}

/// Why a request is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 401: no or bad credentials.
    Unauthenticated(String),
    /// 403.
    Forbidden(String),
}

impl Auth {
    pub fn new(store: Arc<dyn Store>, tokens: HashMap<String, Identity>, service_accounts: Option<ServiceAccounts>) -> Arc<Auth> {
        let mut b = [0u8; 32];
        b[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        b[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        let loopback_token = b.iter().map(|x| format!("{x:02x}")).collect();
        let policy = Arc::new(PolicyCache::default());
        tokio::spawn(policy.clone().run(store.clone()));
        Arc::new(Auth { tokens, loopback_token, policy, store, service_accounts })
    }

    /// The identity of a request: its verified client certificate, else its bearer token. Ok(None): anonymous.
    pub async fn authenticate(&self, peer: Option<&Identity>, headers: &HeaderMap) -> Result<Option<Identity>, Refusal> {
        if let Some(id) = peer {
            return Ok(Some(id.clone().with_authenticated()));
        }
        let Some(token) = authn::bearer(headers) else { return Ok(None) };
        if authn::constant_time_eq(token.as_bytes(), self.loopback_token.as_bytes()) {
            return Ok(Some(Identity::new(LOOPBACK_USER, &[authn::MASTERS]).with_authenticated()));
        }
        if let Some(id) = self.tokens.get(token) {
            return Ok(Some(id.clone().with_authenticated()));
        }
        if let Some((id, secret)) = authn::split_bootstrap_token(token) {
            if let Some(identity) = self.bootstrap_token(id, secret).await {
                return Ok(Some(identity.with_authenticated()));
            }
        }
        if satoken::looks_like_jwt(token) && self.service_accounts.is_some() {
            return match self.service_account_token(token, &[]).await {
                Ok((id, _)) => Ok(Some(id)),
                Err(why) => Err(Refusal::Unauthenticated(why)),
            };
        }
        Err(Refusal::Unauthenticated("invalid bearer token".into()))
    }

    /// A service account token: signature, issuer, audience (`audiences`, or the API's) and time, then the
    /// objects it names, which must all still exist with the same uids (deleting a pod revokes the tokens bound to
    /// it; a legacy token is valid while its Secret holds it). Returns the identity and the audiences matched.
    pub async fn service_account_token(&self, token: &str, audiences: &[String]) -> Result<(Identity, Vec<String>), String> {
        use base64::Engine;
        let sa = self.service_accounts.as_ref().ok_or("service account tokens are not configured")?;
        let subject = sa.issuer.verify(token, audiences, std::time::SystemTime::now())?;
        let get = |key: String| async move {
            let kv = self.store.get(&key).await.map_err(|e| format!("store: {e}"))?;
            kv.map(|kv| serde_json::from_slice::<Value>(&kv.value).map_err(|e| format!("stored object: {e}"))).transpose()
        };
        let uid_of = |v: &Value| v.pointer("/metadata/uid").and_then(Value::as_str).unwrap_or_default().to_string();
        let ns = &subject.namespace;
        let account = get(format!("/registry/core/serviceaccounts/{ns}/{}", subject.name))
            .await?
            .ok_or_else(|| format!("service account {ns}/{} has been deleted", subject.name))?;
        if !subject.uid.is_empty() && uid_of(&account) != subject.uid {
            return Err(format!("service account {ns}/{} has been deleted and made again", subject.name));
        }
        if subject.legacy {
            let secret_name = subject.secret.as_ref().map(|s| s.name.clone()).unwrap_or_default();
            let secret = get(format!("/registry/core/secrets/{ns}/{secret_name}"))
                .await?
                .ok_or_else(|| format!("token secret {ns}/{secret_name} has been deleted"))?;
            let stored = secret
                .pointer("/data/token")
                .and_then(Value::as_str)
                .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                .unwrap_or_default();
            if !authn::constant_time_eq(&stored, token.as_bytes()) {
                return Err(format!("token secret {ns}/{secret_name} no longer holds this token"));
            }
        } else {
            for (plural, r) in [("pods", &subject.pod), ("secrets", &subject.secret)] {
                let Some(r) = r else { continue };
                let obj = get(format!("/registry/core/{plural}/{ns}/{}", r.name))
                    .await?
                    .ok_or_else(|| format!("the {plural} object {ns}/{} the token is bound to has been deleted", r.name))?;
                if uid_of(&obj) != r.uid {
                    return Err(format!("the {plural} object {ns}/{} the token is bound to has been deleted and made again", r.name));
                }
            }
            // A token bound to a node itself (not through a pod) dies with the node.
            if let (Some(n), None) = (&subject.node, &subject.pod) {
                let node = get(format!("/registry/core/nodes/{}", n.name))
                    .await?
                    .ok_or_else(|| format!("the node {} the token is bound to has been deleted", n.name))?;
                if uid_of(&node) != n.uid {
                    return Err(format!("the node {} the token is bound to has been deleted and made again", n.name));
                }
            }
        }
        let mut id = Identity {
            user: subject.user(),
            uid: uid_of(&account),
            groups: vec!["system:serviceaccounts".into(), format!("system:serviceaccounts:{ns}")],
            ..Default::default()
        };
        let mut extra = |k: &str, v: &str| {
            id.extra.insert(format!("authentication.kubernetes.io/{k}"), vec![v.to_string()]);
        };
        if let Some(p) = &subject.pod {
            extra("pod-name", &p.name);
            extra("pod-uid", &p.uid);
        }
        if let Some(n) = &subject.node {
            extra("node-name", &n.name);
            extra("node-uid", &n.uid);
        }
        if let Some(j) = &subject.jti {
            extra("credential-id", &format!("JTI={j}"));
        }
        Ok((id.with_authenticated(), subject.audiences))
    }

    /// A bootstrap token: the Secret `kube-system/bootstrap-token-<id>` of type bootstrap.kubernetes.io/token with
    /// a matching token-secret, usage-bootstrap-authentication "true", and an expiration (if any) in the future.
    async fn bootstrap_token(&self, id: &str, secret: &str) -> Option<Identity> {
        use base64::Engine;
        let kv = self.store.get(&format!("/registry/core/secrets/kube-system/bootstrap-token-{id}")).await.ok()??;
        let s: Value = serde_json::from_slice(&kv.value).ok()?;
        if s.get("type").and_then(Value::as_str) != Some("bootstrap.kubernetes.io/token") {
            return None;
        }
        let field = |k: &str| -> Option<String> {
            if let Some(v) = s.pointer(&format!("/stringData/{k}")).and_then(Value::as_str) {
                return Some(v.to_string());
            }
            let b = s.pointer(&format!("/data/{k}")).and_then(Value::as_str)?;
            String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b).ok()?).ok()
        };
        if field("token-id").as_deref() != Some(id)
            || !authn::constant_time_eq(field("token-secret")?.as_bytes(), secret.as_bytes())
            || field("usage-bootstrap-authentication").as_deref() != Some("true")
        {
            return None;
        }
        if let Some(exp) = field("expiration") {
            let exp = chrono::DateTime::parse_from_rfc3339(&exp).ok()?;
            if exp < chrono::Utc::now() {
                return None;
            }
        }
        let mut groups = vec![authn::BOOTSTRAPPERS.to_string()];
        groups.extend(
            field("auth-extra-groups")
                .unwrap_or_default()
                .split(',')
                .map(str::trim)
                .filter(|g| g.starts_with("system:bootstrappers:"))
                .map(str::to_string),
        );
        Some(Identity { user: format!("system:bootstrap:{id}"), groups, ..Default::default() })
    }

    /// Node authorizer, then RBAC. `body`: a create's body (the node authorizer reads its name and node).
    pub async fn authorize(&self, id: &Identity, a: &Attributes, body: Option<&Value>) -> Result<(), Refusal> {
        if id.in_group(authn::MASTERS) {
            return Ok(());
        }
        let mut reason = String::new();
        if let Some(node) = id.node_name() {
            match node::authorize(node, a, body, self.store.as_ref()).await {
                node::Decision::Allow => return Ok(()),
                node::Decision::NoOpinion(r) => reason = r,
            }
        }
        if self.policy.snapshot().allows(id, a) {
            return Ok(());
        }
        let mut msg = a.forbidden_message(&id.user);
        if !reason.is_empty() {
            msg = format!("{msg}: {reason}");
        }
        Err(Refusal::Forbidden(msg))
    }

    /// `Impersonate-User`/`-Group`/`-Uid` headers (`kubectl --as`): the requester needs the impersonate verb on
    /// each user and group named. Returns the identity to act as.
    pub async fn impersonate(&self, id: Identity, headers: &HeaderMap) -> Result<Identity, Refusal> {
        let Some(user) = headers.get("impersonate-user") else {
            if headers.contains_key("impersonate-group") {
                return Err(Refusal::Forbidden("impersonating groups requires impersonating a user too".into()));
            }
            return Ok(id);
        };
        let user = user.to_str().map_err(|_| Refusal::Forbidden("Impersonate-User is not text".into()))?.to_string();
        let groups: Vec<String> = headers.get_all("impersonate-group").iter().filter_map(|g| g.to_str().ok()).map(str::to_string).collect();
        let check = |resource: &str, name: &str| Attributes {
            verb: "impersonate".into(),
            resource_request: true,
            resource: resource.into(),
            name: name.into(),
            ..Default::default()
        };
        self.authorize(&id, &check("users", &user), None).await?;
        for g in &groups {
            self.authorize(&id, &check("groups", g), None).await?;
        }
        let mut as_id = Identity { user, groups, ..Default::default() };
        if let Some(uid) = headers.get("impersonate-uid").and_then(|u| u.to_str().ok()) {
            self.authorize(&id, &check("uids", uid), None).await?;
            as_id.uid = uid.to_string();
        }
        Ok(as_id.with_authenticated())
    }
}

const RBAC_V1: &str = "rbac.authorization.k8s.io/v1";

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
}

fn cluster_role(name: &str, rules: Vec<Value>, labels: Value) -> Value {
    json!({"apiVersion": RBAC_V1, "kind": "ClusterRole",
           "metadata": {"name": name, "labels": labels, "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
           "rules": rules})
}

fn binding(name: &str, role: &str, subjects: Value) -> Value {
    json!({"apiVersion": RBAC_V1, "kind": "ClusterRoleBinding",
           "metadata": {"name": name, "labels": {"kubernetes.io/bootstrapping": "rbac-defaults"},
                        "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
           "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
           "subjects": subjects})
}

/// The default ClusterRoles and ClusterRoleBindings, created when missing (upstream's bootstrap policy, cut to
/// what Skiff serves): cluster-admin for system:masters, discovery for every authenticated user, the user-facing
/// admin/edit/view roles, and CSR creation for bootstrapping nodes.
pub fn bootstrap_policy() -> (Vec<Value>, Vec<Value>) {
    let read = ["get", "list", "watch"];
    let write = ["create", "delete", "deletecollection", "patch", "update"];
    let all: Vec<&str> = read.iter().chain(write.iter()).copied().collect();
    let bootstrapping = json!({"kubernetes.io/bootstrapping": "rbac-defaults"});
    let workloads_core = ["pods", "services", "endpoints", "configmaps", "serviceaccounts", "persistentvolumeclaims", "replicationcontrollers"];
    let workloads_apps = ["deployments", "replicasets", "daemonsets", "statefulsets", "deployments/scale", "replicasets/scale", "statefulsets/scale"];
    let roles = vec![
        cluster_role(
            "cluster-admin",
            vec![rule(&["*"], &["*"], &["*"]), json!({"nonResourceURLs": ["*"], "verbs": ["*"]})],
            bootstrapping.clone(),
        ),
        cluster_role(
            "system:discovery",
            vec![json!({"nonResourceURLs": ["/api", "/api/*", "/apis", "/apis/*", "/openapi", "/openapi/*", "/version", "/version/", "/healthz", "/livez", "/readyz"], "verbs": ["get"]})],
            bootstrapping.clone(),
        ),
        cluster_role(
            "view",
            vec![
                rule(&[""], &["pods", "pods/log", "pods/status", "services", "services/status", "endpoints", "configmaps", "serviceaccounts", "events", "namespaces", "namespaces/status", "persistentvolumeclaims"], &read),
                rule(&["apps"], &["deployments", "deployments/status", "deployments/scale", "replicasets", "replicasets/status", "replicasets/scale", "daemonsets", "daemonsets/status", "statefulsets", "statefulsets/status", "statefulsets/scale", "controllerrevisions"], &read),
                rule(&["batch"], &["jobs", "jobs/status", "cronjobs", "cronjobs/status"], &read),
                rule(&["policy"], &["poddisruptionbudgets", "poddisruptionbudgets/status"], &read),
                rule(&[""], &["limitranges", "resourcequotas", "resourcequotas/status"], &read),
                rule(&["metrics.k8s.io"], &["pods"], &["get", "list"]),
                rule(&["discovery.k8s.io"], &["endpointslices"], &read),
                rule(&["coordination.k8s.io"], &["leases"], &read),
            ],
            json!({"kubernetes.io/bootstrapping": "rbac-defaults", "rbac.authorization.k8s.io/aggregate-to-edit": "true"}),
        ),
        json!({"apiVersion": RBAC_V1, "kind": "ClusterRole",
               "metadata": {"name": "edit", "labels": {"kubernetes.io/bootstrapping": "rbac-defaults", "rbac.authorization.k8s.io/aggregate-to-admin": "true"},
                            "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
               "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}}]},
               "rules": [
                rule(&[""], &workloads_core, &all),
                rule(&[""], &["secrets"], &all),
                rule(&[""], &["pods/exec", "pods/attach", "pods/portforward", "pods/eviction"], &["create", "get"]),
                rule(&[""], &["serviceaccounts/token"], &["create"]),
                rule(&[""], &["serviceaccounts"], &["impersonate"]),
                rule(&["apps"], &workloads_apps, &all),
                rule(&["batch"], &["jobs", "cronjobs"], &all),
                rule(&["policy"], &["poddisruptionbudgets"], &all),
                rule(&["discovery.k8s.io"], &["endpointslices"], &all),
                rule(&["coordination.k8s.io"], &["leases"], &all),
                rule(&[""], &["events"], &["create", "patch", "update"]),
               ]}),
        json!({"apiVersion": RBAC_V1, "kind": "ClusterRole",
               "metadata": {"name": "admin", "labels": bootstrapping.clone(), "annotations": {"rbac.authorization.kubernetes.io/autoupdate": "true"}},
               "aggregationRule": {"clusterRoleSelectors": [
                   {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-edit": "true"}},
                   {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-admin": "true"}},
                   {"matchLabels": {"rbac.authorization.k8s.io/aggregate-to-admin-extra": "true"}}]},
               "rules": []}),
        cluster_role(
            "skiff:admin-extra",
            vec![rule(&["rbac.authorization.k8s.io"], &["roles", "rolebindings"], &all)],
            json!({"kubernetes.io/bootstrapping": "rbac-defaults", "rbac.authorization.k8s.io/aggregate-to-admin-extra": "true"}),
        ),
        cluster_role(
            "system:basic-user",
            vec![
                rule(&["authorization.k8s.io"], &["selfsubjectaccessreviews", "selfsubjectrulesreviews"], &["create"]),
                rule(&["authentication.k8s.io"], &["selfsubjectreviews"], &["create"]),
            ],
            bootstrapping.clone(),
        ),
        cluster_role(
            "system:service-account-issuer-discovery",
            vec![json!({"nonResourceURLs": ["/.well-known/openid-configuration", "/.well-known/openid-configuration/", "/openid/v1/jwks", "/openid/v1/jwks/"], "verbs": ["get"]})],
            bootstrapping.clone(),
        ),
        cluster_role(
            "system:auth-delegator",
            vec![
                rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]),
                rule(&["authorization.k8s.io"], &["subjectaccessreviews"], &["create"]),
            ],
            bootstrapping.clone(),
        ),
        cluster_role(
            "system:node-bootstrapper",
            vec![rule(&["certificates.k8s.io"], &["certificatesigningrequests"], &["create", "get", "list", "watch"])],
            json!({"kubernetes.io/bootstrapping": "rbac-defaults"}),
        ),
    ];
    let bindings = vec![
        binding("cluster-admin", "cluster-admin", json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:masters"}])),
        binding("system:discovery", "system:discovery", json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}])),
        binding("system:basic-user", "system:basic-user", json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:authenticated"}])),
        binding("system:service-account-issuer-discovery", "system:service-account-issuer-discovery", json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:serviceaccounts"}])),
        binding("system:node-bootstrapper", "system:node-bootstrapper", json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "system:bootstrappers"}])),
        // The controller manager, scheduler and cloud controllers when they run in processes of their own (with a
        // kubeconfig from `skiff-controlplane kubeconfig --user ...`): the whole API, as the loopback client has.
        binding("skiff:control-plane", "cluster-admin", json!([
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:kube-controller-manager"},
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:kube-scheduler"},
            {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:cloud-controller-manager"}])),
    ];
    (roles, bindings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bootstrap_policy_grants_what_it_should() {
        let (roles, bindings) = bootstrap_policy();
        let mut p = rbac::Policy::default();
        for r in roles {
            let name = r["metadata"]["name"].as_str().unwrap().to_string();
            p.apply(&format!("/registry/rbac.authorization.k8s.io/clusterroles/{name}"), Some(&serde_json::to_vec(&r).unwrap()));
        }
        for b in bindings {
            let name = b["metadata"]["name"].as_str().unwrap().to_string();
            p.apply(&format!("/registry/rbac.authorization.k8s.io/clusterrolebindings/{name}"), Some(&serde_json::to_vec(&b).unwrap()));
        }
        let a = |verb: &str, group: &str, res: &str, sub: &str| Attributes {
            verb: verb.into(),
            resource_request: true,
            api_group: group.into(),
            resource: res.into(),
            subresource: sub.into(),
            namespace: "team".into(),
            ..Default::default()
        };
        let admin = Identity::new("root", &["system:masters"]);
        assert!(p.allows(&admin, &a("delete", "apps", "deployments", "")));
        let user = Identity::new("carol", &["system:authenticated"]);
        assert!(p.allows(&user, &Attributes { verb: "get".into(), path: "/apis/apps/v1".into(), ..Default::default() }));
        assert!(!p.allows(&user, &a("list", "", "pods", "")));
        // admin aggregates edit (which aggregates nothing itself but is labelled) and view.
        let mut with = p.clone();
        let rb = json!({"metadata": {"name": "carol-admin", "namespace": "team"},
                        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
                        "subjects": [{"kind": "User", "name": "carol"}]});
        with.apply("/registry/rbac.authorization.k8s.io/rolebindings/team/carol-admin", Some(&serde_json::to_vec(&rb).unwrap()));
        assert!(with.allows(&user, &a("create", "", "pods", "exec")));
        assert!(with.allows(&user, &a("create", "rbac.authorization.k8s.io", "rolebindings", "")));
        assert!(!with.allows(&user, &a("delete", "", "nodes", "")));
    }
}
