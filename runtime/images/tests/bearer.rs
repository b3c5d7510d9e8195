//! Bearer-token auth and retries, through a small front server that asks for a token (like Docker
//! Hub) and fails the first blob requests with 503, forwarding everything else to a real registry.

mod common;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use common::*;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

struct Front {
    upstream: String,
    realm: String,
    failures_left: AtomicU32,
    scopes: Mutex<Vec<String>>,
    http: reqwest::Client,
}

async fn handle(State(front): State<Arc<Front>>, req: Request) -> Response {
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    if path == "/token" {
        front.scopes.lock().unwrap().push(query);
        return Response::new(Body::from(r#"{"token":"good-token","expires_in":300}"#));
    }
    let authorized = req.headers().get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer good-token");
    if path != "/v2/" && !authorized {
        let repo = path.trim_start_matches("/v2/").split("/manifests/").next().unwrap().split("/blobs/").next().unwrap();
        return Response::builder()
            .status(StatusCode::UNAUTHORIZED)
            .header("www-authenticate", format!(r#"Bearer realm="{}",service="front",scope="repository:{repo}:pull""#, front.realm))
            .body(Body::empty())
            .unwrap();
    }
    if path.contains("/blobs/") && front.failures_left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
        return Response::builder().status(StatusCode::SERVICE_UNAVAILABLE).body(Body::from("try later")).unwrap();
    }
    let mut up = front.http.get(format!("{}{path}", front.upstream));
    if let Some(accept) = req.headers().get("accept") {
        up = up.header("accept", accept.clone());
    }
    let resp = up.send().await.unwrap();
    let mut out = Response::builder().status(resp.status().as_u16());
    let headers: &HeaderMap = resp.headers();
    for name in ["content-type", "docker-content-digest"] {
        if let Some(v) = headers.get(name) {
            out = out.header(name, v.clone());
        }
    }
    out.body(Body::from(resp.bytes().await.unwrap())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_challenge_and_retries_on_5xx() {
    require_env!();
    let reg = Registry::start().await;
    reg.push_image("team/app", "1.2", &multi_layer_image()).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let front = Arc::new(Front {
        upstream: reg.base(),
        realm: format!("http://{addr}/token"),
        failures_left: AtomicU32::new(2),
        scopes: Mutex::new(Vec::new()),
        http: reqwest::Client::new(),
    });
    let app = axum::Router::new().fallback(handle).with_state(front.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app).with_graceful_shutdown(async { let _ = stopped.await; }).await.unwrap();
    });
    struct StopOnDrop(Option<tokio::sync::oneshot::Sender<()>>);
    impl Drop for StopOnDrop {
        fn drop(&mut self) {
            if let Some(s) = self.0.take() {
                let _ = s.send(());
            }
        }
    }
    let stop_guard = StopOnDrop(Some(stop));

    let tmp = tempfile::tempdir().unwrap();
    let store = store_in(tmp.path());
    let rec = store.pull(&format!("{addr}/team/app:1.2").parse().unwrap()).await.unwrap();
    assert_eq!(rec.layers.len(), 3);
    assert_eq!(front.failures_left.load(Ordering::SeqCst), 0, "the 503s were retried");
    let scopes = front.scopes.lock().unwrap().clone();
    assert_eq!(scopes.len(), 1, "one token serves the whole pull: {scopes:?}");
    assert!(scopes[0].contains("scope=repository%3Ateam%2Fapp%3Apull") && scopes[0].contains("service=front"), "{scopes:?}");
    assert_store_consistent(&store);

    // More failures than retries: a clear error, nothing half-written.
    front.failures_left.store(100, Ordering::SeqCst);
    store.remove(&rec.name).unwrap();
    store.gc().unwrap();
    let err = store.pull(&format!("{addr}/team/app:1.2").parse().unwrap()).await.unwrap_err().to_string();
    assert!(err.contains("503"), "{err}");
    assert_store_consistent(&store);

    drop(stop_guard);
    server.await.unwrap();
}
