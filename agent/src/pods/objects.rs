//! The ConfigMaps and Secrets a pod refers to (env, envFrom, volumes), fetched together so that the env and volume
//! planners stay pure: they get a [`PodObjects`] in which `None` means "not found".

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret};
use kube::Api;

#[derive(Clone, Debug, Default)]
pub struct PodObjects {
    pub config_maps: BTreeMap<String, Option<ConfigMap>>,
    pub secrets: BTreeMap<String, Option<Secret>>,
}

impl PodObjects {
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

/// GETs every referenced object; a 404 becomes `None`, any other error fails the whole fetch (retried later).
pub async fn fetch(client: &kube::Client, namespace: &str, pod: &Pod) -> Result<PodObjects, kube::Error> {
    let (cms, secrets) = referenced(pod);
    let mut out = PodObjects::default();
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
