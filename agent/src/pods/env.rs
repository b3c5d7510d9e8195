//! A container's environment as the kubelet builds it (`makeEnvironmentVariables`): `envFrom` first, then `env`
//! in order, with `$(VAR)` references expanded against what came before; then `$(VAR)` in command and args
//! against the result. Pure: the ConfigMaps and Secrets come in as [`PodObjects`].
//!
//! Not done: service links (`enableServiceLinks` env vars such as `WEB_SERVICE_HOST`).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use super::downward::{self, DownwardError, PodContext};
use super::objects::{not_found, secret_data, PodObjects};

/// Why a container's config cannot be made; the container waits with `CreateContainerConfigError` and this
/// message (upstream's wording).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvError {
    #[error("{0}")]
    NotFound(String),
    #[error("couldn't find key {key} in {kind} {namespace}/{name}")]
    MissingKey { key: String, kind: &'static str, namespace: String, name: String },
    #[error(transparent)]
    Downward(#[from] DownwardError),
}

/// Upstream's `IsEnvVarName`: `[-._a-zA-Z][-._a-zA-Z0-9]*`. Hand-written: a regex crate for one character class
/// is not worth it.
pub fn is_env_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    let ok = |c: char, first: bool| c == '-' || c == '.' || c == '_' || c.is_ascii_alphabetic() || (!first && c.is_ascii_digit());
    match chars.next() {
        Some(c) if ok(c, true) => chars.all(|c| ok(c, false)),
        _ => false,
    }
}

/// Kubernetes' `$(VAR)` expansion (third_party/forked/golang/expansion): `$$` is a literal `$`, `$(NAME)` is the
/// variable when `lookup` knows it and stays as written when not, an unterminated `$(` and any other `$x` stay.
/// Hand-written: no crate implements Kubernetes' rules (shell-style crates expand `$VAR` too).
pub fn expand(input: &str, lookup: impl Fn(&str) -> Option<String>) -> String {
    let b = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut checkpoint = 0;
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'$' && i + 1 < b.len() {
            out.push_str(&input[checkpoint..i]);
            match b[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 1;
                }
                b'(' => match input[i + 2..].find(')') {
                    Some(end) => {
                        let name = &input[i + 2..i + 2 + end];
                        out.push_str(&lookup(name).unwrap_or_else(|| format!("$({name})")));
                        i += 2 + end;
                    }
                    None => {
                        out.push_str("$(");
                        i += 1;
                    }
                },
                _ => {
                    // `$` and the next character are copied as they are (a whole UTF-8 character).
                    let next = input[i + 1..].chars().next().map(char::len_utf8).unwrap_or(1);
                    out.push_str(&input[i..i + 1 + next]);
                    i += next;
                }
            }
            checkpoint = i + 1;
        }
        i += 1;
    }
    out.push_str(&input[checkpoint.min(input.len())..]);
    out
}

/// The container's env vars in order (later names replace earlier ones in place), and the names of envFrom keys
/// that were skipped because they are not valid env var names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Resolved {
    pub vars: Vec<(String, String)>,
    pub skipped: Vec<String>,
}

impl Resolved {
    fn set(&mut self, k: String, v: String) {
        match self.vars.iter_mut().find(|(ek, _)| *ek == k) {
            Some(e) => e.1 = v,
            None => self.vars.push((k, v)),
        }
    }
    pub fn get(&self, k: &str) -> Option<String> {
        self.vars.iter().find(|(ek, _)| ek == k).map(|(_, v)| v.clone())
    }
}

/// The env of container `c` of `pod`. `services` are the pod's service variables ([`super::service_env`]): they
/// can be referenced as `$(VAR)` in values and come last, unless the container defines the same name (as the
/// kubelet's `makeEnvironmentVariables`).
pub fn resolve(
    pod: &Pod,
    c: &Container,
    objects: &PodObjects,
    ctx: &PodContext,
    services: &[(String, String)],
) -> Result<Resolved, EnvError> {
    let service = |name: &str| services.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let ns = pod.metadata.namespace.clone().unwrap_or_else(|| "default".into());
    let mut out = Resolved::default();
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let data: BTreeMap<String, String> = if let Some(r) = &from.config_map_ref {
            match objects.config_map(&r.name) {
                Some(cm) => cm.data.clone().unwrap_or_default(),
                None if r.optional == Some(true) => continue,
                None => return Err(EnvError::NotFound(not_found("configmap", &r.name))),
            }
        } else if let Some(r) = &from.secret_ref {
            match objects.secret(&r.name) {
                Some(s) => secret_data(s).into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned())).collect(),
                None if r.optional == Some(true) => continue,
                None => return Err(EnvError::NotFound(not_found("secret", &r.name))),
            }
        } else {
            continue;
        };
        for (k, v) in data {
            let k = format!("{prefix}{k}");
            if is_env_var_name(&k) {
                out.set(k, v);
            } else {
                out.skipped.push(k);
            }
        }
    }
    for e in c.env.iter().flatten() {
        let value = match &e.value_from {
            None => {
                let v = e.value.clone().unwrap_or_default();
                expand(&v, |name| out.get(name).or_else(|| service(name)))
            }
            Some(vf) => {
                if let Some(f) = &vf.field_ref {
                    downward::field_value(pod, &f.field_path, ctx)?
                } else if let Some(r) = &vf.resource_field_ref {
                    let container = r.container_name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| c.name.clone());
                    downward::resource_value(pod, &container, &r.resource, r.divisor.as_ref(), ctx)?
                } else if let Some(r) = &vf.config_map_key_ref {
                    let optional = r.optional == Some(true);
                    let Some(cm) = objects.config_map(&r.name) else {
                        if optional {
                            continue;
                        }
                        return Err(EnvError::NotFound(not_found("configmap", &r.name)));
                    };
                    match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
                        Some(v) => v.clone(),
                        None if optional => continue,
                        None => {
                            let name = r.name.clone();
                            return Err(EnvError::MissingKey { key: r.key.clone(), kind: "ConfigMap", namespace: ns, name });
                        }
                    }
                } else if let Some(r) = &vf.secret_key_ref {
                    let optional = r.optional == Some(true);
                    let Some(s) = objects.secret(&r.name) else {
                        if optional {
                            continue;
                        }
                        return Err(EnvError::NotFound(not_found("secret", &r.name)));
                    };
                    match secret_data(s).get(&r.key) {
                        Some(v) => String::from_utf8_lossy(v).into_owned(),
                        None if optional => continue,
                        None => {
                            let name = r.name.clone();
                            return Err(EnvError::MissingKey { key: r.key.clone(), kind: "Secret", namespace: ns, name });
                        }
                    }
                } else {
                    String::new()
                }
            }
        };
        out.set(e.name.clone(), value);
    }
    for (k, v) in services {
        if out.get(k).is_none() {
            out.vars.push((k.clone(), v.clone()));
        }
    }
    Ok(out)
}

/// `c` with `$(VAR)` in its command and args expanded against `env` (upstream's
/// `ExpandContainerCommandAndArgs`).
pub fn expand_command_and_args(c: &Container, env: &Resolved) -> Container {
    let mut c = c.clone();
    let ex = |v: &mut Option<Vec<String>>| {
        if let Some(list) = v {
            for s in list.iter_mut() {
                *s = expand(s, |n| env.get(n));
            }
        }
    };
    ex(&mut c.command);
    ex(&mut c.args);
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use serde_json::json;

    fn vars<'a>(m: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |n| m.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string())
    }

    #[test]
    fn expansion_follows_kubernetes_rules() {
        let m = [("A", "x"), ("B", "y")];
        assert_eq!(expand("$(A)", vars(&m)), "x");
        assert_eq!(expand("pre-$(A)-$(B)-post", vars(&m)), "pre-x-y-post");
        assert_eq!(expand("$$(A)", vars(&m)), "$(A)");
        assert_eq!(expand("$$$(A)", vars(&m)), "$x");
        assert_eq!(expand("$(C)", vars(&m)), "$(C)");
        assert_eq!(expand("$(A", vars(&m)), "$(A");
        assert_eq!(expand("$A $", vars(&m)), "$A $");
        assert_eq!(expand("$é", vars(&m)), "$é");
        assert_eq!(expand("$()", vars(&m)), "$()");
        assert_eq!(expand("", vars(&m)), "");
        assert_eq!(expand("no refs", vars(&m)), "no refs");
    }

    #[test]
    fn env_var_names() {
        assert!(is_env_var_name("A_b.c-1") && is_env_var_name("_x") && is_env_var_name(".x"));
        assert!(!is_env_var_name("1A") && !is_env_var_name("a b") && !is_env_var_name("") && !is_env_var_name("a=b"));
    }

    fn pod(env: serde_json::Value, env_from: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u", "labels": {"app": "w"}},
            "spec": {"nodeName": "n", "containers": [{"name": "c", "env": env, "envFrom": env_from,
                     "command": ["echo", "$(A)", "$$(A)", "$(NOPE)"], "args": ["$(B)"],
                     "resources": {"limits": {"memory": "32Mi"}}}]}}))
        .unwrap()
    }

    fn objects() -> PodObjects {
        let cm: ConfigMap = serde_json::from_value(json!({"data": {"k": "v", "K2": "v2", "bad key": "x"}})).unwrap();
        let s: Secret = serde_json::from_value(json!({"data": {"pw": "c2VjcmV0"}})).unwrap();
        PodObjects {
            config_maps: [("cm".to_string(), Some(cm)), ("gone".to_string(), None)].into(),
            secrets: [("s".to_string(), Some(s))].into(),
            ..Default::default()
        }
    }

    fn ctx() -> PodContext {
        PodContext { host_ip: "10.0.0.1".into(), pod_ips: vec!["10.244.0.9".into()], ..Default::default() }
    }

    fn run(env: serde_json::Value, env_from: serde_json::Value) -> Result<Resolved, EnvError> {
        let p = pod(env, env_from);
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        resolve(&p, &c, &objects(), &ctx(), &[])
    }

    #[test]
    fn value_from_every_source() {
        let r = run(
            json!([
                {"name": "A", "value": "lit"},
                {"name": "B", "value": "$(A)-$(K2)-$(POD)"},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "MEM", "valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}},
                {"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "pw"}}},
                {"name": "OPT", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k", "optional": true}}},
                {"name": "OPTKEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "nope", "optional": true}}},
            ]),
            json!([{"configMapRef": {"name": "cm"}, "prefix": "CFG_"}, {"configMapRef": {"name": "cm"}},
                   {"secretRef": {"name": "missing", "optional": true}}]),
        )
        .unwrap();
        let get = |k: &str| r.get(k);
        assert_eq!(get("CFG_k").as_deref(), Some("v"));
        assert_eq!(get("K2").as_deref(), Some("v2"));
        assert_eq!(get("A").as_deref(), Some("lit"));
        // POD is defined after B, so it stays unexpanded, as upstream.
        assert_eq!(get("B").as_deref(), Some("lit-v2-$(POD)"));
        assert_eq!(get("POD").as_deref(), Some("p"));
        assert_eq!(get("IP").as_deref(), Some("10.244.0.9"));
        assert_eq!(get("APP").as_deref(), Some("w"));
        assert_eq!(get("MEM").as_deref(), Some("32"));
        assert_eq!(get("CM").as_deref(), Some("v"));
        assert_eq!(get("PW").as_deref(), Some("secret"));
        assert_eq!(get("OPT"), None);
        assert_eq!(get("OPTKEY"), None);
        assert_eq!(r.skipped, ["CFG_bad key", "bad key"]);
        let names: Vec<&str> = r.vars.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(&names[..3], ["CFG_K2", "CFG_k", "K2"]);
    }

    #[test]
    fn missing_objects_and_keys_use_upstreams_messages() {
        let e = run(json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}]), json!([]));
        assert_eq!(e.unwrap_err().to_string(), "configmap \"gone\" not found");
        let e = run(json!([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "zz"}}}]), json!([]));
        assert_eq!(e.unwrap_err().to_string(), "couldn't find key zz in ConfigMap ns/cm");
        let e = run(json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "zz"}}}]), json!([]));
        assert_eq!(e.unwrap_err().to_string(), "couldn't find key zz in Secret ns/s");
        let e = run(json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]), json!([]));
        assert_eq!(e.unwrap_err().to_string(), "secret \"nope\" not found");
        let e = run(json!([]), json!([{"secretRef": {"name": "nope"}}]));
        assert_eq!(e.unwrap_err().to_string(), "secret \"nope\" not found");
        let e = run(json!([{"name": "X", "valueFrom": {"fieldRef": {"fieldPath": "spec.x"}}}]), json!([]));
        assert_eq!(e.unwrap_err().to_string(), "unsupported fieldPath: spec.x");
    }

    #[test]
    fn command_and_args_expand_against_the_env() {
        let r = run(json!([{"name": "A", "value": "a"}, {"name": "B", "value": "b"}]), json!([])).unwrap();
        let p = pod(json!([]), json!([]));
        let c = expand_command_and_args(&p.spec.as_ref().unwrap().containers[0], &r);
        assert_eq!(c.command.unwrap(), ["echo", "a", "$(A)", "$(NOPE)"]);
        assert_eq!(c.args.unwrap(), ["b"]);
    }

    #[test]
    fn service_variables_expand_and_yield_to_the_containers_own() {
        let p = pod(
            json!([{"name": "DB_SERVICE_PORT", "value": "1"}, {"name": "URL", "value": "http://$(DB_SERVICE_HOST):5432"}]),
            json!([]),
        );
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        let services = [("DB_SERVICE_HOST".to_string(), "10.96.0.7".to_string()), ("DB_SERVICE_PORT".to_string(), "5432".to_string())];
        let r = resolve(&p, &c, &objects(), &ctx(), &services).unwrap();
        assert_eq!(r.get("URL").as_deref(), Some("http://10.96.0.7:5432"));
        assert_eq!(r.get("DB_SERVICE_PORT").as_deref(), Some("1"), "the container's own value wins");
        assert_eq!(r.get("DB_SERVICE_HOST").as_deref(), Some("10.96.0.7"));
        assert_eq!(r.vars.iter().filter(|(k, _)| k == "DB_SERVICE_PORT").count(), 1);
    }
}
