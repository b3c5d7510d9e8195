//! Service environment variables (`{SVC}_SERVICE_HOST`, Docker-style `{SVC}_PORT_80_TCP_ADDR`, ...), as the
//! kubelet's `getServiceEnvVarMap` + `envvars.FromServices` make them: the Services of the pod's namespace when
//! `enableServiceLinks` is not false, and always the `kubernetes` Service of the `default` namespace. Services
//! without a cluster IP (headless, ExternalName) give none.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;

/// Services of the `default` namespace whose variables every pod gets.
const MASTER_SERVICES: [&str; 1] = ["kubernetes"];

fn cluster_ip(s: &Service) -> Option<&str> {
    s.spec.as_ref()?.cluster_ip.as_deref().filter(|ip| !ip.is_empty() && *ip != "None")
}

fn var_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

/// The variables for a pod in namespace `ns`, sorted by Service name (the kubelet's order is a map's).
pub fn service_env(services: &[Arc<Service>], ns: &str, enable_service_links: bool) -> Vec<(String, String)> {
    let mut chosen: BTreeMap<String, &Service> = BTreeMap::new();
    for s in services {
        if cluster_ip(s).is_none() {
            continue;
        }
        let name = s.metadata.name.clone().unwrap_or_default();
        let s_ns = s.metadata.namespace.as_deref().unwrap_or("default");
        if s_ns == "default" && MASTER_SERVICES.contains(&name.as_str()) {
            chosen.entry(name).or_insert(s);
        } else if s_ns == ns && enable_service_links {
            chosen.insert(name, s);
        }
    }
    let mut out = Vec::new();
    for (name, s) in chosen {
        let ip = cluster_ip(s).unwrap_or_default();
        let ports = s.spec.as_ref().and_then(|sp| sp.ports.clone()).unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        let prefix = var_name(&name);
        out.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((format!("{prefix}_SERVICE_PORT_{}", var_name(pn)), p.port.to_string()));
            }
        }
        // Docker link variables.
        let host = |port: i32| if ip.contains(':') { format!("[{ip}]:{port}") } else { format!("{ip}:{port}") };
        for (i, p) in ports.iter().enumerate() {
            let proto = p.protocol.clone().filter(|p| !p.is_empty()).unwrap_or_else(|| "TCP".into());
            let url = format!("{}://{}", proto.to_lowercase(), host(p.port));
            if i == 0 {
                out.push((format!("{prefix}_PORT"), url.clone()));
            }
            let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
            out.push((pp.clone(), url));
            out.push((format!("{pp}_PROTO"), proto.to_lowercase()));
            out.push((format!("{pp}_PORT"), p.port.to_string()));
            out.push((format!("{pp}_ADDR"), ip.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(json!({
                "metadata": {"name": name, "namespace": ns},
                "spec": {"clusterIP": ip, "ports": ports}
            }))
            .unwrap(),
        )
    }

    fn get<'a>(env: &'a [(String, String)], k: &str) -> Option<&'a str> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn variables_match_the_kubelets() {
        let services = vec![svc(
            "team",
            "web-front",
            "10.96.0.20",
            json!([{"name": "http", "port": 80}, {"name": "dns-udp", "port": 53, "protocol": "UDP"}]),
        )];
        let env = service_env(&services, "team", true);
        let expected = [
            ("WEB_FRONT_SERVICE_HOST", "10.96.0.20"),
            ("WEB_FRONT_SERVICE_PORT", "80"),
            ("WEB_FRONT_SERVICE_PORT_HTTP", "80"),
            ("WEB_FRONT_SERVICE_PORT_DNS_UDP", "53"),
            ("WEB_FRONT_PORT", "tcp://10.96.0.20:80"),
            ("WEB_FRONT_PORT_80_TCP", "tcp://10.96.0.20:80"),
            ("WEB_FRONT_PORT_80_TCP_PROTO", "tcp"),
            ("WEB_FRONT_PORT_80_TCP_PORT", "80"),
            ("WEB_FRONT_PORT_80_TCP_ADDR", "10.96.0.20"),
            ("WEB_FRONT_PORT_53_UDP", "udp://10.96.0.20:53"),
            ("WEB_FRONT_PORT_53_UDP_PROTO", "udp"),
            ("WEB_FRONT_PORT_53_UDP_PORT", "53"),
            ("WEB_FRONT_PORT_53_UDP_ADDR", "10.96.0.20"),
        ];
        let got: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, expected);
    }

    #[test]
    fn namespace_links_master_service_and_headless() {
        let services = vec![
            svc("default", "kubernetes", "10.96.0.1", json!([{"name": "https", "port": 443}])),
            svc("default", "other", "10.96.0.5", json!([{"port": 8080}])),
            svc("team", "db", "10.96.0.7", json!([{"port": 5432}])),
            svc("team", "headless", "None", json!([{"port": 1}])),
            svc("team", "external", "", json!([{"port": 2}])),
        ];
        let env = service_env(&services, "team", true);
        assert_eq!(get(&env, "KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get(&env, "KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get(&env, "DB_SERVICE_PORT"), Some("5432"));
        assert_eq!(get(&env, "OTHER_SERVICE_HOST"), None, "other namespaces are not linked");
        assert!(env.iter().all(|(k, _)| !k.starts_with("HEADLESS_") && !k.starts_with("EXTERNAL_")));

        // enableServiceLinks: false keeps only the master service.
        let env = service_env(&services, "team", false);
        assert_eq!(get(&env, "KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get(&env, "DB_SERVICE_HOST"), None);

        // In the default namespace every Service there is linked.
        let env = service_env(&services, "default", true);
        assert_eq!(get(&env, "OTHER_PORT"), Some("tcp://10.96.0.5:8080"));
    }

    #[test]
    fn a_namespace_service_named_kubernetes_wins_over_the_masters() {
        let services = vec![
            svc("team", "kubernetes", "10.96.0.9", json!([{"port": 1}])),
            svc("default", "kubernetes", "10.96.0.1", json!([{"port": 443}])),
        ];
        assert_eq!(get(&service_env(&services, "team", true), "KUBERNETES_SERVICE_HOST"), Some("10.96.0.9"));
        assert_eq!(get(&service_env(&services, "team", false), "KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
    }

    #[test]
    fn ipv6_cluster_ips_are_bracketed() {
        let env = service_env(&[svc("a", "v6", "fd00::10", json!([{"port": 80}]))], "a", true);
        assert_eq!(get(&env, "V6_PORT"), Some("tcp://[fd00::10]:80"));
        assert_eq!(get(&env, "V6_PORT_80_TCP_ADDR"), Some("fd00::10"));
    }
}
