//! The ConfigMaps and Secrets a pod refers to (env, envFrom, volumes), and the service account tokens its
//! projected volumes ask for, fetched together so that the env and volume planners stay pure: they get a
//! [`PodObjects`] in which `None` means "not found".
//!
//! Tokens are asked for with a TokenRequest bound to the pod (so that they die with it), and kept until they are
//! due for refresh as the kubelet's token manager does: past 80 % of their life or older than 24 hours. When a
//! refresh fails, a token that has not expired yet is kept.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::authentication::v1::{BoundObjectReference, TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolume, PersistentVolumeClaim, Pod, Secret, ServiceAccount};
use kube::api::PostParams;
use kube::{Api, ResourceExt};

/// A projected token: (audience, or "" for the API server's; expirationSeconds).
pub type TokenKey = (String, i64);

/// A service account token as the API server issued it.
#[derive(Clone, PartialEq, Eq)]
pub struct ProjectedToken {
    pub token: String,
    pub issued: SystemTime,
    pub expires: SystemTime,
}

impl std::fmt::Debug for ProjectedToken {
    // Never print a token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProjectedToken").field("issued", &self.issued).field("expires", &self.expires).finish_non_exhaustive()
    }
}

impl ProjectedToken {
    /// The kubelet's requiresRefresh: past 80 % of its lifetime, or older than 24 hours.
    pub fn due(&self, now: SystemTime) -> bool {
        let life = self.expires.duration_since(self.issued).unwrap_or_default();
        let age = now.duration_since(self.issued).unwrap_or_default();
        age >= life.mul_f64(0.8) || age >= Duration::from_secs(24 * 3600)
    }
}

#[derive(Clone, Debug, Default)]
pub struct PodObjects {
    pub config_maps: BTreeMap<String, Option<ConfigMap>>,
    pub secrets: BTreeMap<String, Option<Secret>>,
    /// The tokens of the pod's serviceAccountToken projections, or why there is none.
    pub tokens: BTreeMap<TokenKey, Result<ProjectedToken, String>>,
    /// The pod's PersistentVolumeClaims, and the volumes they are bound to.
    pub claims: BTreeMap<String, Option<PersistentVolumeClaim>>,
    pub volumes: BTreeMap<String, Option<PersistentVolume>>,
}

impl PodObjects {
    /// A claim that is missing or not bound yet: worth asking again soon (the volume controller is at work).
    pub fn waiting_for_claims(&self) -> bool {
        self.claims.values().any(|c| c.as_ref().and_then(|c| c.spec.as_ref()).and_then(|s| s.volume_name.as_deref()).is_none_or(str::is_empty))
    }

    pub fn config_map(&self, name: &str) -> Option<&ConfigMap> {
        self.config_maps.get(name).and_then(Option::as_ref)
    }
    pub fn secret(&self, name: &str) -> Option<&Secret> {
        self.secrets.get(name).and_then(Option::as_ref)
    }
}

/// `configmap "x" not found`: the kubelet's configmap/secret managers report a missing object with these
/// singular resource names.
pub fn not_found(kind: &str, name: &str) -> String {
    format!("{kind} \"{name}\" not found")
}

/// Secret data as strings: `data` (bytes) with `stringData` on top, as the API server would have merged them.
pub fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> =
        s.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
    for (k, v) in s.string_data.iter().flatten() {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    out
}

/// ConfigMap `data` and `binaryData` as bytes.
pub fn config_map_data(c: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> =
        c.binary_data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect();
    for (k, v) in c.data.iter().flatten() {
        out.insert(k.clone(), v.clone().into_bytes());
    }
    out
}

/// Names of the ConfigMaps and Secrets the pod refers to, from every container's env and envFrom and from the
/// configMap, secret and projected volumes.
pub fn referenced(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut cms, mut secrets) = (BTreeSet::new(), BTreeSet::new());
    let Some(spec) = pod.spec.as_ref() else { return (cms, secrets) };
    for c in spec.containers.iter().chain(spec.init_containers.iter().flatten()) {
        for e in c.env.iter().flatten() {
            if let Some(vf) = &e.value_from {
                if let Some(r) = &vf.config_map_key_ref {
                    cms.insert(r.name.clone());
                }
                if let Some(r) = &vf.secret_key_ref {
                    secrets.insert(r.name.clone());
                }
            }
        }
        for e in c.env_from.iter().flatten() {
            if let Some(r) = &e.config_map_ref {
                cms.insert(r.name.clone());
            }
            if let Some(r) = &e.secret_ref {
                secrets.insert(r.name.clone());
            }
        }
    }
    for v in spec.volumes.iter().flatten() {
        if let Some(c) = &v.config_map {
            cms.insert(c.name.clone());
        }
        if let Some(s) = &v.secret {
            secrets.insert(s.secret_name.clone().unwrap_or_default());
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &src.config_map {
                cms.insert(c.name.clone());
            }
            if let Some(s) = &src.secret {
                secrets.insert(s.name.clone());
            }
        }
    }
    cms.remove("");
    secrets.remove("");
    (cms, secrets)
}

/// The tokens the pod's projected volumes ask for.
pub fn token_requests(pod: &Pod) -> BTreeSet<TokenKey> {
    let Some(spec) = pod.spec.as_ref() else { return BTreeSet::new() };
    spec.volumes
        .iter()
        .flatten()
        .flat_map(|v| v.projected.iter().flat_map(|p| p.sources.iter().flatten()))
        .filter_map(|src| src.service_account_token.as_ref())
        .map(|t| (t.audience.clone().unwrap_or_default(), t.expiration_seconds.unwrap_or(3600)))
        .collect()
}

/// Ask the API server for a token of the pod's service account, bound to the pod.
async fn request_token(client: &kube::Client, namespace: &str, pod: &Pod, key: &TokenKey) -> Result<ProjectedToken, String> {
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone().filter(|n| !n.is_empty()))
        .unwrap_or_else(|| "default".into());
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: if key.0.is_empty() { vec![] } else { vec![key.0.clone()] },
            expiration_seconds: Some(key.1),
            bound_object_ref: Some(BoundObjectReference {
                kind: Some("Pod".into()),
                api_version: Some("v1".into()),
                name: Some(pod.name_any()),
                uid: pod.uid(),
            }),
        },
        ..Default::default()
    };
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let issued = SystemTime::now();
    let answer = api
        .create_token_request(&account, &PostParams::default(), &request)
        .await
        .map_err(|e| format!("failed to fetch token: {e}"))?;
    let status = answer.status.ok_or("failed to fetch token: the answer has no status")?;
    if status.token.is_empty() {
        return Err("failed to fetch token: the answer has no token".into());
    }
    Ok(ProjectedToken { token: status.token, issued, expires: SystemTime::from(status.expiration_timestamp.0) })
}

/// GETs every referenced object; a 404 becomes `None`, any other error fails the whole fetch (retried later).
/// Tokens of `previous` that are not due for refresh are kept; a token that cannot be had is an `Err` entry.
pub async fn fetch(client: &kube::Client, namespace: &str, pod: &Pod, previous: Option<&PodObjects>) -> Result<PodObjects, kube::Error> {
    let (cms, secrets) = referenced(pod);
    let mut out = PodObjects::default();
    let now = SystemTime::now();
    for key in token_requests(pod) {
        let kept = previous.and_then(|p| p.tokens.get(&key)).and_then(|t| t.as_ref().ok());
        let entry = match kept {
            Some(t) if !t.due(now) => Ok(t.clone()),
            _ => match request_token(client, namespace, pod, &key).await {
                Ok(t) => {
                    tracing::debug!(audience = %key.0, "service account token fetched");
                    Ok(t)
                }
                Err(e) => match kept {
                    Some(t) if t.expires > now => {
                        tracing::warn!(error = %e, "refreshing a service account token failed; keeping the current one");
                        Ok(t.clone())
                    }
                    _ => Err(e),
                },
            },
        };
        out.tokens.insert(key, entry);
    }
    let cm_api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    for name in cms {
        let v = cm_api.get_opt(&name).await?;
        out.config_maps.insert(name, v);
    }
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    for name in secrets {
        let v = secret_api.get_opt(&name).await?;
        out.secrets.insert(name, v);
    }
    let claim_api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let volume_api: Api<PersistentVolume> = Api::all(client.clone());
    let claim_names: BTreeSet<String> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter_map(|v| v.persistent_volume_claim.as_ref().map(|c| c.claim_name.clone()))
        .collect();
    for name in claim_names {
        let c = claim_api.get_opt(&name).await?;
        if let Some(pv) = c.as_ref().and_then(|c| c.spec.as_ref()).and_then(|s| s.volume_name.clone()).filter(|v| !v.is_empty()) {
            let v = volume_api.get_opt(&pv).await?;
            out.volumes.insert(pv, v);
        }
        out.claims.insert(name, c);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_reference_is_collected() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {
            "initContainers": [{"name": "i", "envFrom": [{"secretRef": {"name": "s1"}}]}],
            "containers": [{"name": "c",
                "env": [{"name": "A", "valueFrom": {"configMapKeyRef": {"name": "cm1", "key": "k"}}},
                        {"name": "B", "valueFrom": {"secretKeyRef": {"name": "s2", "key": "k"}}}],
                "envFrom": [{"configMapRef": {"name": "cm2"}}]}],
            "volumes": [{"name": "v1", "configMap": {"name": "cm3"}}, {"name": "v2", "secret": {"secretName": "s3"}},
                        {"name": "v3", "projected": {"sources": [{"configMap": {"name": "cm4"}}, {"secret": {"name": "s4"}}]}}]
        }}))
        .unwrap();
        let (cms, secrets) = referenced(&pod);
        assert_eq!(cms.into_iter().collect::<Vec<_>>(), ["cm1", "cm2", "cm3", "cm4"]);
        assert_eq!(secrets.into_iter().collect::<Vec<_>>(), ["s1", "s2", "s3", "s4"]);
    }

    #[test]
    fn tokens_are_refreshed_as_the_kubelet_does() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let hour = ProjectedToken { token: "t".into(), issued: t0, expires: t0 + Duration::from_secs(3600) };
        assert!(!hour.due(t0 + Duration::from_secs(2879)));
        assert!(hour.due(t0 + Duration::from_secs(2880)), "at 80 % of its life");
        let year = ProjectedToken { token: "t".into(), issued: t0, expires: t0 + Duration::from_secs(365 * 86400) };
        assert!(!year.due(t0 + Duration::from_secs(23 * 3600)));
        assert!(year.due(t0 + Duration::from_secs(24 * 3600)), "after a day at the latest");
        assert!(!format!("{hour:?}").contains("\"t\""), "a token is never printed");
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": [],
            "volumes": [{"name": "a", "projected": {"sources": [{"serviceAccountToken": {"path": "token"}},
                                                                  {"serviceAccountToken": {"path": "vault", "audience": "vault", "expirationSeconds": 600}}]}}]}}))
        .unwrap();
        assert_eq!(token_requests(&pod).into_iter().collect::<Vec<_>>(), [("".to_string(), 3600), ("vault".to_string(), 600)]);
    }

    #[test]
    fn secret_and_config_map_data_merge() {
        let s: Secret = serde_json::from_value(json!({"data": {"a": "eA=="}, "stringData": {"b": "y"}})).unwrap();
        let d = secret_data(&s);
        assert_eq!(d["a"], b"x");
        assert_eq!(d["b"], b"y");
        let c: ConfigMap = serde_json::from_value(json!({"data": {"a": "1"}, "binaryData": {"b": "eA=="}})).unwrap();
        let d = config_map_data(&c);
        assert_eq!(d["a"], b"1");
        assert_eq!(d["b"], b"x");
    }
}
