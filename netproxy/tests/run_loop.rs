//! `skiff_netproxy::run` end to end against a small fake API server on 127.0.0.1 (list + a watch that stays
//! open), with rules and routes going into a lab network namespace (root only; skips otherwise). Proves the
//! informers, the wait for filled caches, the first full sync, routes and metrics, and a clean shutdown.

mod common;
mod lab;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::Uri;
use lab::{Lab, NODE_IP};
use serde_json::{json, Value};

/// API path → (list kind, items).
type Lists = std::collections::BTreeMap<String, (String, Vec<Value>)>;

#[derive(Clone, Default)]
struct Objects {
    by_path: Arc<Mutex<Lists>>,
}

async fn api(State(objects): State<Objects>, uri: Uri, Query(q): Query<std::collections::HashMap<String, String>>) -> axum::response::Response {
    use axum::response::IntoResponse;
    if q.get("watch").map(String::as_str) == Some("true") {
        // A watch that never sends anything and never ends (the test stops first).
        let body = axum::body::Body::from_stream(futures::stream::pending::<Result<axum::body::Bytes, std::io::Error>>());
        return ([("content-type", "application/json")], body).into_response();
    }
    let found = objects.by_path.lock().expect("lock").get(uri.path()).cloned();
    match found {
        Some((kind, items)) => axum::Json(json!({"kind": kind, "apiVersion": "v1", "metadata": {"resourceVersion": "1"}, "items": items})).into_response(),
        None => (axum::http::StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

#[test]
fn run_programs_the_node_from_the_api() {
    let Some(mut lab) = lab::lab("run") else { return };
    lab.http_server(1);
    lab.http_server(2);
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    rt.block_on(async {
        let objects = Objects::default();
        {
            let mut m = objects.by_path.lock().expect("lock");
            let svc = serde_json::to_value(common::service("default", "web", json!({"type": "NodePort", "clusterIP": "10.96.0.10",
                "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]}))).expect("json");
            let eps = [(Lab::pod_ip(1), "node-a", true), (Lab::pod_ip(2), "node-a", true)];
            let eps: Vec<(&str, &str, bool)> = eps.iter().map(|(ip, n, r)| (ip.as_str(), *n, *r)).collect();
            let slice = serde_json::to_value(common::slice("default", "web", "1", json!([{"name": "http", "port": 8080, "protocol": "TCP"}]), &eps)).expect("json");
            let node = |name: &str, cidr: &str, ip: &str| json!({"metadata": {"name": name}, "spec": {"podCIDR": cidr},
                "status": {"addresses": [{"type": "InternalIP", "address": ip}]}});
            m.insert("/api/v1/services".into(), ("ServiceList".into(), vec![svc]));
            m.insert("/apis/discovery.k8s.io/v1/endpointslices".into(), ("EndpointSliceList".into(), vec![slice]));
            m.insert("/api/v1/nodes".into(), ("NodeList".into(), vec![node("node-a", "10.244.1.0/24", NODE_IP), node("node-b", "10.244.2.0/24", "192.168.77.2")]));
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let (stop_api, api_stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            let app = axum::Router::new().fallback(api).with_state(objects);
            let _ = axum::serve(listener, app).with_graceful_shutdown(async { let _ = api_stopped.await; }).await;
        });
        let dir = std::env::temp_dir().join(format!("{}-kubeconfig", lab.tag));
        std::fs::write(&dir, format!("apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://127.0.0.1:{port}\n\
            users:\n- name: anon\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: anon\ncurrent-context: fake\n")).expect("kubeconfig");
        let metrics_port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("probe port");
            l.local_addr().expect("addr").port()
        };
        let config = skiff_netproxy::Config {
            kubeconfig: Some(dir.clone()),
            api_servers: Vec::new(),
            node_name: "node-a".into(),
            node_ips: vec![NODE_IP.parse().expect("ip")],
            cluster_cidr: "10.244.0.0/16".parse().expect("cidr"),
            service_cidr: Some("10.96.0.0/12".parse().expect("cidr")),
            sync_period: Duration::from_secs(3600),
            min_sync_interval: Duration::from_millis(100),
            backend: skiff_netproxy::BackendChoice::Auto,
            masquerade_all: false,
            metrics_addr: Some(format!("127.0.0.1:{metrics_port}").parse().expect("addr")),
            restore_bin: None,
            save_bin: None,
            manage_routes: true,
            netns: Some(lab.node.path()),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let proxy = tokio::spawn(skiff_netproxy::run(config, async { let _ = stopped.await; }));
        let pod3 = lab.pod(3);
        let reached = tokio::task::block_in_place(|| lab::wait_until(Duration::from_secs(15), || Lab::get(pod3, "http://10.96.0.10/", 1).is_ok()));
        assert!(reached, "the ClusterIP never answered");
        assert!(Lab::get(&lab.ext, &format!("http://{NODE_IP}:30080/"), 3).is_ok(), "NodePort");
        let routes = lab.node.exec(&["ip", "route", "show"]).expect("ip route");
        let routes = String::from_utf8_lossy(&routes.stdout);
        assert!(routes.contains("10.244.2.0/24 via 192.168.77.2 dev vext proto 83"), "{routes}");
        let metrics = tokio::task::block_in_place(|| {
            std::process::Command::new("curl").args(["-sS", &format!("http://127.0.0.1:{metrics_port}/metrics")]).output().expect("curl")
        });
        let metrics = String::from_utf8_lossy(&metrics.stdout);
        assert!(metrics.contains("skiff_netproxy_last_successful_sync_timestamp_seconds"), "{metrics}");
        assert!(metrics.contains("skiff_netproxy_rules{table=\"nat\"}"), "{metrics}");
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(10), proxy).await.expect("run stops").expect("join").expect("run ok");
        let _ = stop_api.send(());
        let _ = server.await;
        let _ = std::fs::remove_file(&dir);
    });
}
