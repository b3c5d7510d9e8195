//! API server behaviour over real HTTP on 127.0.0.1 (port 0), in-process, against a temporary store.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use skiff_controlplane::apiserver::{serve, ApiServer, Config};
use skiff_controlplane::store::sqlite::{SqliteConfig, SqliteStore};
use skiff_controlplane::store::Store;

struct TestServer {
    url: String,
    http: Client,
    store: Arc<SqliteStore>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    dir: tempfile::TempDir,
}

impl TestServer {
    async fn start() -> Self {
        Self::start_in(tempfile::tempdir().unwrap()).await
    }

    async fn start_in(dir: tempfile::TempDir) -> Self {
        let store = Arc::new(SqliteStore::open(SqliteConfig::new(dir.path().join("store.db"))).unwrap());
        let config = Config {
            bookmark_interval: Duration::from_millis(200),
            compaction_interval: Duration::from_secs(3600),
            ..Config::default()
        };
        let server = ApiServer::new(store.clone(), config);
        server.start().await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, server, async move {
            let _ = rx.await;
        }));
        TestServer { url, http: Client::new(), store, stop: Some(tx), task: Some(task), dir }
    }

    /// Stop the server and return its data directory (to start again on it).
    async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        self.store.close();
        let dir = tempfile::tempdir().unwrap();
        std::mem::replace(&mut self.dir, dir)
    }

    async fn req(&self, method: &str, path: &str, ct: Option<&str>, body: Option<Vec<u8>>) -> (StatusCode, Value) {
        let mut r = self.http.request(method.parse().unwrap(), format!("{}{path}", self.url));
        if let Some(ct) = ct {
            r = r.header("Content-Type", ct);
        }
        if let Some(b) = body {
            r = r.body(b);
        }
        let resp = r.send().await.unwrap();
        let code = resp.status();
        let bytes = resp.bytes().await.unwrap();
        (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.req("POST", path, Some("application/json"), Some(serde_json::to_vec(&body).unwrap())).await
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.req("PUT", path, Some("application/json"), Some(serde_json::to_vec(&body).unwrap())).await
    }

    async fn merge(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.req("PATCH", path, Some("application/merge-patch+json"), Some(serde_json::to_vec(&body).unwrap())).await
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.req("GET", path, None, None).await
    }

    async fn delete(&self, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.req("DELETE", path, Some("application/json"), body.map(|b| serde_json::to_vec(&b).unwrap())).await
    }

    /// Open a watch and return a reader of its events.
    async fn watch(&self, path: &str) -> Watch {
        let resp = self.http.get(format!("{}{path}", self.url)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "watch {path}");
        Watch { stream: Box::pin(resp.bytes_stream()), buf: Vec::new() }
    }

    async fn eventually_gone(&self, path: &str) {
        for _ in 0..100 {
            if self.get(path).await.0 == StatusCode::NOT_FOUND {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{path} still exists");
    }
}

type ByteStream = std::pin::Pin<Box<dyn futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Send>>;

struct Watch {
    stream: ByteStream,
    buf: Vec<u8>,
}

impl Watch {
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(pos) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Some(serde_json::from_slice(&line).unwrap());
            }
            match tokio::time::timeout(Duration::from_secs(10), self.stream.next()).await {
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
                _ => return None,
            }
        }
    }

    /// The next event that is not a bookmark: (type, name).
    async fn next_change(&mut self) -> (String, String) {
        loop {
            let ev = self.next().await.expect("a watch event");
            let ty = ev["type"].as_str().unwrap().to_string();
            if ty != "BOOKMARK" {
                return (ty, ev["object"]["metadata"]["name"].as_str().unwrap_or_default().to_string());
            }
        }
    }
}

fn pod(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": labels},
           "spec": {"containers": [{"name": "c", "image": "busybox:1.36"}]}})
}

fn cm(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}, "data": {"k": "v"}})
}

const PODS: &str = "/api/v1/namespaces/default/pods";
const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_selector_transitions() {
    let s = TestServer::start().await;
    let (_, list) = s.get(PODS).await;
    let rv = list["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    let mut w = s.watch(&format!("{PODS}?watch=true&labelSelector=app%3Da&resourceVersion={rv}")).await;
    assert_eq!(s.post(PODS, pod("p", json!({"app": "a"}))).await.0, StatusCode::CREATED);
    assert_eq!(w.next_change().await, ("ADDED".into(), "p".into()));
    s.merge(&format!("{PODS}/p"), json!({"metadata": {"labels": {"app": "b"}}})).await;
    assert_eq!(w.next_change().await, ("DELETED".into(), "p".into()));
    s.merge(&format!("{PODS}/p"), json!({"metadata": {"labels": {"x": "1"}}})).await;
    s.merge(&format!("{PODS}/p"), json!({"metadata": {"labels": {"app": "a"}}})).await;
    assert_eq!(w.next_change().await, ("ADDED".into(), "p".into()));
    s.delete(&format!("{PODS}/p"), None).await;
    assert_eq!(w.next_change().await, ("DELETED".into(), "p".into()));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_without_resource_version_starts_with_added_and_sends_bookmarks() {
    let s = TestServer::start().await;
    s.post(CMS, cm("one")).await;
    s.post(CMS, cm("two")).await;
    let mut w = s.watch(&format!("{CMS}?watch=true&allowWatchBookmarks=true")).await;
    assert_eq!(w.next_change().await, ("ADDED".into(), "one".into()));
    assert_eq!(w.next_change().await, ("ADDED".into(), "two".into()));
    let mut bookmark = None;
    for _ in 0..5 {
        let ev = w.next().await.unwrap();
        if ev["type"] == "BOOKMARK" {
            bookmark = Some(ev);
            break;
        }
    }
    let b = bookmark.expect("a bookmark");
    assert!(b["object"]["metadata"]["resourceVersion"].as_str().unwrap().parse::<i64>().unwrap() > 0);
    // timeoutSeconds ends the stream.
    let mut w = s.watch(&format!("{CMS}?watch=true&resourceVersion=1&timeoutSeconds=1")).await;
    let started = std::time::Instant::now();
    while w.next().await.is_some() {}
    assert!(started.elapsed() < Duration::from_secs(5));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compacted_resource_version_is_410() {
    let s = TestServer::start().await;
    let (_, c) = s.post(CMS, cm("a")).await;
    let old_rv = c["metadata"]["resourceVersion"].as_str().unwrap().to_string();
    s.merge(&format!("{CMS}/a"), json!({"data": {"k": "2"}})).await;
    s.post(CMS, cm("b")).await;
    let now = s.store.current_revision().await.unwrap();
    s.store.compact(now).await.unwrap();
    // As kube-apiserver: 200, then one ERROR event with the 410 Status (clients relist on it).
    let (code, event) = s.get(&format!("{CMS}?watch=true&resourceVersion={old_rv}")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(event["type"], "ERROR");
    let status = &event["object"];
    assert_eq!(status["code"], 410);
    assert_eq!(status["reason"], "Expired");
    assert_eq!(status["kind"], "Status");
    // Watching from the compaction point still works.
    let mut w = s.watch(&format!("{CMS}?watch=true&resourceVersion={now}")).await;
    s.post(CMS, cm("c")).await;
    assert_eq!(w.next_change().await, ("ADDED".into(), "c".into()));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paging_with_limit_and_continue() {
    let s = TestServer::start().await;
    for i in 0..7 {
        s.post(CMS, cm(&format!("cm{i}"))).await;
    }
    let mut names = Vec::new();
    let mut cont: Option<String> = None;
    let mut rvs = Vec::new();
    loop {
        let path = match &cont {
            Some(c) => format!("{CMS}?limit=3&continue={c}"),
            None => format!("{CMS}?limit=3"),
        };
        let (code, page) = s.get(&path).await;
        assert_eq!(code, StatusCode::OK);
        assert!(page["items"].as_array().unwrap().len() <= 3);
        names.extend(page["items"].as_array().unwrap().iter().map(|i| i["metadata"]["name"].as_str().unwrap().to_string()));
        rvs.push(page["metadata"]["resourceVersion"].clone());
        // Writes between pages do not show up: the list is at the first page's revision.
        s.post(CMS, cm(&format!("late{}", rvs.len()))).await;
        match page["metadata"]["continue"].as_str() {
            Some(c) => cont = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(names, ["cm0", "cm1", "cm2", "cm3", "cm4", "cm5", "cm6"]);
    assert!(rvs.windows(2).all(|w| w[0] == w[1]), "{rvs:?}");
    assert_eq!(s.get(&format!("{CMS}?continue=garbage")).await.0, StatusCode::BAD_REQUEST);
    // The largest limit is "all of them" (no overflow in the store's page arithmetic).
    let (code, all) = s.get(&format!("{CMS}?limit={}", i64::MAX)).await;
    assert_eq!(code, StatusCode::OK, "{all}");
    assert!(all["items"].as_array().unwrap().len() >= 7 && all["metadata"]["continue"].is_null(), "{all}");
    // A hand-made token may not start the list outside its own keys (secrets of every namespace, ...).
    use base64::Engine;
    let rv = rvs[0].as_str().unwrap();
    for start in ["/registry/", "/registry/core/secrets/", "/registry/core/configmaps/default0"] {
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(r#"{{"rv":{rv},"start":"{start}"}}"#));
        let (code, st) = s.get(&format!("{CMS}?limit=3&continue={token}")).await;
        assert_eq!(code, StatusCode::BAD_REQUEST, "{start}: {st}");
        assert!(st["message"].as_str().unwrap().contains("continue key is not valid"), "{st}");
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_a_status_and_writes_nothing() {
    let s = TestServer::start().await;
    let cases: Vec<(&str, Option<&str>, Vec<u8>, u16)> = vec![
        ("malformed JSON", Some("application/json"), b"{\"metadata\": {".to_vec(), 400),
        ("not an object", Some("application/json"), b"[1,2]".to_vec(), 400),
        ("empty body", Some("application/json"), Vec::new(), 400),
        ("unknown media type", Some("text/plain"), b"hello".to_vec(), 415),
        ("bad protobuf", Some("application/vnd.kubernetes.protobuf"), b"k8s\0\xff\xff".to_vec(), 400),
        ("bad YAML", Some("application/yaml"), b"metadata: [unclosed".to_vec(), 400),
        ("kind mismatch", Some("application/json"), serde_json::to_vec(&json!({"kind": "Service", "apiVersion": "v1", "metadata": {"name": "x"}})).unwrap(), 400),
        ("wrong field type", Some("application/json"), serde_json::to_vec(&json!({"metadata": {"name": "x"}, "spec": {"containers": "nope"}})).unwrap(), 400),
        ("invalid name", Some("application/json"), serde_json::to_vec(&pod("Bad_Name", json!({}))).unwrap(), 422),
        ("too large", Some("application/json"), vec![b' '; 4 * 1024 * 1024], 413),
    ];
    for (what, ct, body, want) in cases {
        let (code, status) = s.req("POST", PODS, ct, Some(body)).await;
        assert_eq!(code.as_u16(), want, "{what}: {status}");
        assert_eq!(status["kind"], "Status", "{what}");
        assert_eq!(status["code"], want, "{what}");
    }
    let (_, invalid) = s.post(PODS, json!({"metadata": {"name": "bad"}, "spec": {"containers": [{"name": "c"}]}})).await;
    assert_eq!(invalid["message"], "Pod \"bad\" is invalid: spec.containers[0].image: Required value");
    assert_eq!(invalid["details"]["causes"][0]["field"], "spec.containers[0].image");
    let (_, strict) = s
        .req("POST", &format!("{PODS}?fieldValidation=Strict"), Some("application/json"),
             Some(serde_json::to_vec(&json!({"metadata": {"name": "x"}, "spec": {"containers": [{"name": "c", "image": "i"}], "bogus": 1}})).unwrap()))
        .await;
    assert!(strict["message"].as_str().unwrap().contains("unknown field \"spec.bogus\""), "{strict}");
    let (_, list) = s.get(PODS).await;
    assert_eq!(list["items"], json!([]), "nothing was written");
    assert_eq!(s.get("/api/v1/namespaces/default/widgets").await.0, StatusCode::NOT_FOUND);
    assert_eq!(s.req("PUT", PODS, None, None).await.0, StatusCode::METHOD_NOT_ALLOWED);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_conflicts_status_and_generation() {
    let s = TestServer::start().await;
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
        "spec": {"containers": [{"name": "c", "image": "x:1"}]}}}});
    let path = "/apis/apps/v1/namespaces/default/deployments";
    let (code, d) = s.post(path, deploy).await;
    assert_eq!(code, StatusCode::CREATED);
    assert_eq!(d["metadata"]["generation"], 1);
    // A stale resourceVersion is a conflict.
    let mut stale = d.clone();
    s.merge(&format!("{path}/d"), json!({"spec": {"replicas": 3}})).await;
    stale["spec"]["replicas"] = json!(5);
    let (code, st) = s.put(&format!("{path}/d"), stale).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(st["reason"], "Conflict");
    // The main resource ignores status; /status ignores spec.
    let (_, cur) = s.get(&format!("{path}/d")).await;
    let mut with_status = cur.clone();
    with_status["status"] = json!({"replicas": 9});
    let (_, after) = s.put(&format!("{path}/d"), with_status.clone()).await;
    assert!(after["status"].get("replicas").is_none());
    assert_eq!(after["metadata"]["resourceVersion"], cur["metadata"]["resourceVersion"], "a no-op update keeps the resourceVersion");
    let mut status_put = after.clone();
    status_put["status"] = json!({"replicas": 2});
    status_put["spec"]["replicas"] = json!(100);
    let (code, after) = s.put(&format!("{path}/d/status"), status_put).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(after["status"]["replicas"], 2);
    assert_eq!(after["spec"]["replicas"], 3);
    assert_eq!(after["metadata"]["generation"], 2, "only spec changes bump the generation");
    // Scale subresource.
    let (_, scale) = s.get(&format!("{path}/d/scale")).await;
    assert_eq!((scale["kind"].as_str(), scale["spec"]["replicas"].as_i64(), scale["status"]["selector"].as_str()), (Some("Scale"), Some(3), Some("a=b")));
    let (code, _) = s.merge(&format!("{path}/d/scale"), json!({"spec": {"replicas": -1}})).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    // Immutable selector.
    let (code, _) = s.merge(&format!("{path}/d"), json!({"spec": {"selector": {"matchLabels": {"a": "c"}}}})).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finalizers_and_graceful_pod_deletion() {
    let s = TestServer::start().await;
    let mut c = cm("held");
    c["metadata"]["finalizers"] = json!(["example.com/hold"]);
    s.post(CMS, c).await;
    let (code, obj) = s.delete(&format!("{CMS}/held"), None).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert!(obj["metadata"]["deletionTimestamp"].is_string());
    assert_eq!(s.get(&format!("{CMS}/held")).await.0, StatusCode::OK);
    s.merge(&format!("{CMS}/held"), json!({"metadata": {"finalizers": null}})).await;
    s.eventually_gone(&format!("{CMS}/held")).await;

    // A pod bound to a node waits for its agent; grace 0 removes it.
    s.post(PODS, pod("p", json!({}))).await;
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}});
    assert_eq!(s.post(&format!("{PODS}/p/binding"), binding.clone()).await.0, StatusCode::CREATED);
    assert_eq!(s.post(&format!("{PODS}/p/binding"), binding).await.0, StatusCode::CONFLICT);
    let (_, p) = s.get(&format!("{PODS}/p")).await;
    assert_eq!(p["spec"]["nodeName"], "n1");
    assert_eq!(p["status"]["conditions"][0]["type"], "PodScheduled");
    let (code, p) = s.delete(&format!("{PODS}/p"), None).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_eq!(p["metadata"]["deletionGracePeriodSeconds"], 30);
    assert_eq!(s.get(&format!("{PODS}/p")).await.0, StatusCode::OK);
    let (code, _) = s.delete(&format!("{PODS}/p"), Some(json!({"gracePeriodSeconds": 0}))).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(s.get(&format!("{PODS}/p")).await.0, StatusCode::NOT_FOUND);

    // Preconditions.
    let (_, q) = s.post(PODS, pod("q", json!({}))).await;
    let (code, _) = s.delete(&format!("{PODS}/q"), Some(json!({"preconditions": {"uid": "wrong"}}))).await;
    assert_eq!(code, StatusCode::CONFLICT);
    let (code, _) = s.delete(&format!("{PODS}/q"), Some(json!({"preconditions": {"uid": q["metadata"]["uid"]}}))).await;
    assert_eq!(code, StatusCode::OK);
    // Eviction is a delete.
    s.post(PODS, pod("e", json!({}))).await;
    let ev = json!({"apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": "e"}});
    assert_eq!(s.post(&format!("{PODS}/e/eviction"), ev).await.0, StatusCode::CREATED);
    assert_eq!(s.get(&format!("{PODS}/e")).await.0, StatusCode::NOT_FOUND);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn propagation_policy_and_namespace_deletion() {
    let s = TestServer::start().await;
    // The API server's part of propagationPolicy (the garbage collector in the controller manager does the rest):
    // Background removes the owner at once and leaves the dependents to the collector...
    let (_, owner) = s.post(CMS, cm("owner")).await;
    let mut d = cm("dep");
    d["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}]);
    s.post(CMS, d).await;
    let (code, _) = s.delete(&format!("{CMS}/owner"), Some(json!({"propagationPolicy": "Background"}))).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(s.get(&format!("{CMS}/owner")).await.0, StatusCode::NOT_FOUND);
    assert_eq!(s.get(&format!("{CMS}/dep")).await.0, StatusCode::OK, "no collector runs in this test");
    // ...Foreground and Orphan mark the owner with their finalizer and keep it.
    for (name, policy, finalizer) in [("fg", "Foreground", "foregroundDeletion"), ("or", "Orphan", "orphan")] {
        s.post(CMS, cm(name)).await;
        let (code, obj) = s.delete(&format!("{CMS}/{name}"), Some(json!({"propagationPolicy": policy}))).await;
        assert_eq!(code, StatusCode::ACCEPTED, "{obj}");
        let (code, obj) = s.get(&format!("{CMS}/{name}")).await;
        assert_eq!(code, StatusCode::OK);
        assert!(obj["metadata"]["deletionTimestamp"].is_string(), "{obj}");
        assert_eq!(obj["metadata"]["finalizers"], json!([finalizer]), "{obj}");
        // Removing the finalizer (the collector's job) lets it go.
        s.merge(&format!("{CMS}/{name}"), json!({"metadata": {"finalizers": null}})).await;
        s.eventually_gone(&format!("{CMS}/{name}")).await;
    }
    let (code, st) = s.delete(&format!("{CMS}/dep"), Some(json!({"propagationPolicy": "Sideways"}))).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{st}");

    // Namespace deletion removes its contents first; creating inside a terminating namespace is forbidden.
    s.post("/api/v1/namespaces", json!({"metadata": {"name": "team"}})).await;
    let mut held = cm("held");
    held["metadata"]["finalizers"] = json!(["example.com/hold"]);
    s.post("/api/v1/namespaces/team/configmaps", held).await;
    s.post("/api/v1/namespaces/team/configmaps", cm("plain")).await;
    let (code, ns) = s.delete("/api/v1/namespaces/team", None).await;
    assert_eq!(code, StatusCode::ACCEPTED);
    assert_eq!(ns["status"]["phase"], "Terminating");
    let (code, st) = s.post("/api/v1/namespaces/team/configmaps", cm("new")).await;
    assert_eq!(code, StatusCode::FORBIDDEN, "{st}");
    s.eventually_gone("/api/v1/namespaces/team/configmaps/plain").await;
    assert_eq!(s.get("/api/v1/namespaces/team").await.0, StatusCode::OK, "waits for the held object");
    s.merge("/api/v1/namespaces/team/configmaps/held", json!({"metadata": {"finalizers": null}})).await;
    s.eventually_gone("/api/v1/namespaces/team").await;
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_allocations_are_unique_and_survive_restart() {
    let s = TestServer::start().await;
    let svc = |name: &str| json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
        "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80}]}});
    let path = "/api/v1/namespaces/default/services";
    let (_, a) = s.post(path, svc("a")).await;
    let dir = s.stop().await;
    let s = TestServer::start_in(dir).await;
    let (_, b) = s.post(path, svc("b")).await;
    assert_ne!(a["spec"]["clusterIP"], b["spec"]["clusterIP"]);
    assert_ne!(a["spec"]["ports"][0]["nodePort"], b["spec"]["ports"][0]["nodePort"]);
    assert_eq!(b["spec"]["ports"][0]["targetPort"], 80);
    // A taken IP cannot be requested; a released one can.
    let mut c = svc("c");
    c["spec"]["clusterIP"] = a["spec"]["clusterIP"].clone();
    let (code, st) = s.post(path, c.clone()).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{st}");
    s.delete(&format!("{path}/a"), None).await;
    let (code, c) = s.post(path, c).await;
    assert_eq!(code, StatusCode::CREATED);
    assert_eq!(c["spec"]["clusterIP"], a["spec"]["clusterIP"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_and_tables() {
    let s = TestServer::start().await;
    let (_, v) = s.get("/version").await;
    assert_eq!(v["minor"], "32");
    let resp = s
        .http
        .get(format!("{}/apis", s.url))
        .header("Accept", "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["items"][0]["metadata"]["name"], "apps");
    let (_, core) = s.get("/api/v1").await;
    let names: Vec<&str> = core["resources"].as_array().unwrap().iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert!(names.contains(&"pods/log") && names.contains(&"pods/eviction") && names.contains(&"services/status"));
    s.post(PODS, pod("t", json!({}))).await;
    let table: Value = s
        .http
        .get(format!("{}{PODS}", s.url))
        .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io,application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(table["kind"], "Table");
    assert_eq!(table["columnDefinitions"][0]["name"], "Name");
    assert_eq!(table["rows"][0]["cells"][0], "t");
    assert_eq!(table["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    s.stop().await;
}

/// A stand-in node agent on 127.0.0.1: serves logs, and echoes bytes on an upgraded exec connection.
async fn fake_agent() -> (u16, tokio::task::JoinHandle<()>) {
    use axum::body::Body;
    use axum::extract::Request;
    use axum::http::{header, StatusCode as S};
    use axum::response::{IntoResponse, Response};
    let app = axum::Router::new().fallback(|mut req: Request<Body>| async move {
        let path = req.uri().path().to_string();
        let query = req.uri().query().unwrap_or("").to_string();
        if path == "/containerLogs/default/p/c" {
            return (S::OK, format!("line1\nline2\nquery={query}\n")).into_response();
        }
        if path == "/exec/default/p/c" && req.headers().contains_key(header::UPGRADE) {
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(io) = upgrade.await {
                    let mut io = hyper_util::rt::TokioIo::new(io);
                    let (mut r, mut w) = tokio::io::split(&mut io);
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                }
            });
            return Response::builder()
                .status(S::SWITCHING_PROTOCOLS)
                .header(header::UPGRADE, "websocket")
                .header(header::CONNECTION, "Upgrade")
                .header("Sec-WebSocket-Protocol", "v5.channel.k8s.io")
                .body(Body::empty())
                .unwrap();
        }
        (S::NOT_FOUND, format!("no such path {path}")).into_response()
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (port, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_exec_are_forwarded_to_the_node_agent() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = TestServer::start().await;
    let (port, agent) = fake_agent().await;
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}],
                   "daemonEndpoints": {"kubeletEndpoint": {"Port": port}}}});
    assert_eq!(s.post("/api/v1/nodes", node).await.0, StatusCode::CREATED);
    s.post(PODS, pod("p", json!({}))).await;
    // Not scheduled yet: a clear error.
    let (code, st) = s.get(&format!("{PODS}/p/log")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(st["message"].as_str().unwrap().contains("does not have a host assigned"));
    // Options are checked first (upstream's ValidatePodLogOptions), then the container, then the node.
    let (code, st) = s.get(&format!("{PODS}/p/log?tailLines=-1")).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{st}");
    assert_eq!(st["details"]["kind"], "PodLogOptions");
    let lost = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n2"}});
    assert_eq!(s.post("/api/v1/nodes", lost).await.0, StatusCode::CREATED);
    s.post(PODS, pod("q", json!({}))).await;
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "q"}, "target": {"kind": "Node", "name": "n2"}});
    s.post(&format!("{PODS}/q/binding"), binding).await;
    let (code, st) = s.get(&format!("{PODS}/q/log?container=nope")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{st}");
    assert!(st["message"].as_str().unwrap().contains("container nope is not valid for pod q"), "{st}");
    let binding = json!({"apiVersion": "v1", "kind": "Binding", "metadata": {"name": "p"}, "target": {"kind": "Node", "name": "n1"}});
    s.post(&format!("{PODS}/p/binding"), binding).await;
    let text = s.http.get(format!("{}{PODS}/p/log?tailLines=5&follow=true", s.url)).send().await.unwrap().text().await.unwrap();
    assert!(text.starts_with("line1\nline2\n"), "{text}");
    assert!(text.contains("follow=true") && text.contains("tailLines=5"), "{text}");
    let (code, _) = s.get(&format!("{PODS}/p/log?container=nope")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);

    // exec: the upgrade is passed through and bytes flow both ways.
    let addr = s.url.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "GET {PODS}/p/exec?command=sh&stdin=true&stdout=true HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: v5.channel.k8s.io\r\n\r\n"
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        conn.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("sec-websocket-protocol: v5.channel.k8s.io"), "{head}");
    conn.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf, b"ping");
    drop(conn);
    agent.abort();
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_patches_and_stored_objects_are_bounded() {
    let s = TestServer::start().await;
    assert_eq!(s.post(CMS, cm("b")).await.0, StatusCode::CREATED);
    let path = format!("{CMS}/b");
    let jp = |ops: Value| s.req("PATCH", &path, Some("application/json-patch+json"), Some(serde_json::to_vec(&ops).unwrap()));
    // An ordinary patch still applies.
    let (code, obj) = jp(json!([{"op": "add", "path": "/data/x", "value": "1"}, {"op": "copy", "from": "/data/x", "path": "/data/y"}])).await;
    assert_eq!(code, StatusCode::OK, "{obj}");
    assert_eq!(obj["data"], json!({"k": "v", "x": "1", "y": "1"}));
    // More operations than upstream allows.
    let many: Vec<Value> = (0..10_001).map(|_| json!({"op": "test", "path": "/data/k", "value": "v"})).collect();
    let (code, st) = jp(Value::Array(many)).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE, "{st}");
    // Copies that double the object each time stop at the copy limit.
    let mut doubling = vec![json!({"op": "add", "path": "/metadata/annotations", "value": {"a": "x".repeat(1000)}})];
    doubling.extend((0..40).map(|i| json!({"op": "copy", "from": "/metadata/annotations", "path": format!("/metadata/annotations/c{i}")})));
    let (code, st) = jp(Value::Array(doubling)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{st}");
    assert!(st["message"].as_str().unwrap().contains("copy operations copy more than"), "{st}");
    // Copies that nest a value into itself stop at the depth limit, long before the stack would.
    let mut nesting = vec![json!({"op": "add", "path": "/metadata/annotations", "value": {}})];
    nesting.push(json!({"op": "add", "path": "/x", "value": {}}));
    nesting.extend((0..5000).map(|_| json!({"op": "copy", "from": "/x", "path": "/x/x"})));
    let (code, st) = jp(Value::Array(nesting)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{st}");
    assert!(st["message"].as_str().unwrap().contains("nested deeper than 100 levels"), "{st}");
    // Moves that push a value deeper and deeper stop there too.
    let mut moving = vec![json!({"op": "add", "path": "/x", "value": {}})];
    for _ in 0..2000 {
        moving.push(json!({"op": "add", "path": "/w", "value": {}}));
        moving.push(json!({"op": "move", "from": "/x", "path": "/w/x"}));
        moving.push(json!({"op": "move", "from": "/w", "path": "/x"}));
    }
    let (code, st) = jp(Value::Array(moving)).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{st}");
    // A body nested deeper than the server could read back is refused, whichever way it comes.
    let deep = |d: usize| (0..d).fold(json!("v"), |v, _| json!([v]));
    let mut obj = cm("deep");
    obj["z"] = deep(110);
    let (code, st) = s.post(CMS, obj).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{st}");
    let (code, st) = s.merge(&path, json!({"z": deep(110)})).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{st}");
    // Nothing of it was stored: the ConfigMap and the list still read back.
    let (code, obj) = s.get(&path).await;
    assert_eq!((code, &obj["data"]), (StatusCode::OK, &json!({"k": "v", "x": "1", "y": "1"})));
    assert_eq!(s.get(CMS).await.0, StatusCode::OK);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_keep_what_a_stored_object_already_got_wrong() {
    let s = TestServer::start().await;
    // A Deployment stored before volume names had to be labels (written straight into the store).
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "old", "namespace": "default", "uid": "u-old", "creationTimestamp": "2026-01-01T00:00:00Z", "generation": 1},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "old"}},
                 "template": {"metadata": {"labels": {"app": "old"}},
                              "spec": {"containers": [{"name": "c", "image": "busybox"}], "volumes": [{"name": "/etc", "emptyDir": {}}]}}}});
    s.store.create("/registry/apps/deployments/default/old", serde_json::to_vec(&d).unwrap()).await.unwrap();
    let path = "/apis/apps/v1/namespaces/default/deployments/old";
    // Its labels and finalizers can still change...
    let (code, obj) = s.merge(path, json!({"metadata": {"labels": {"x": "1"}, "finalizers": ["example.com/keep"]}})).await;
    assert_eq!(code, StatusCode::OK, "{obj}");
    let (code, _) = s.merge(path, json!({"metadata": {"finalizers": null}})).await;
    assert_eq!(code, StatusCode::OK);
    // ... but a new mistake of the same kind is refused.
    let (code, st) = s
        .merge(path, json!({"spec": {"template": {"spec": {"volumes": [{"name": "/etc", "emptyDir": {}}, {"name": "/var", "emptyDir": {}}]}}}}))
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{st}");
    assert!(st["message"].as_str().unwrap().contains("spec.template.spec.volumes[1].name"), "{st}");
    s.stop().await;
}
