//! The shared informers across a forced relist: the API server goes away, objects are deleted and the store's
//! history compacted meanwhile, and the server comes back on the same address. The informer's watch resumes from a
//! compacted revision, gets 410 Gone, relists, and must report the objects deleted while it was away (a plain
//! reflector would drop them silently, and controllers would never hear of them).

mod common;

use std::sync::Arc;

use common::eventually;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::PostParams;
use kube::{Api, Client, ResourceExt};
use skiff_controlplane::apiserver::{serve, ApiServer, Config};
use skiff_controlplane::controllers::informers::{Change, Informers};
use skiff_controlplane::store::sqlite::{SqliteConfig, SqliteStore};
use skiff_controlplane::store::Store;

/// Serve the API over `store` on `addr` until the returned sender fires.
async fn serve_on(store: Arc<SqliteStore>, addr: std::net::SocketAddr) -> tokio::sync::oneshot::Sender<()> {
    let server = ApiServer::new(store, Config::default());
    server.start().await.unwrap();
    let mut listener = None;
    for _ in 0..50 {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => {
                listener = Some(l);
                break;
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener.expect("binding the API server's address again"), server, async move {
        let _ = rx.await;
    }));
    tx
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relist_after_compaction_reports_what_was_deleted_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(SqliteConfig::new(dir.path().join("s.db"))).unwrap());
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let stop = serve_on(store.clone(), addr).await;
    let client = Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap())).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    for name in ["kept", "doomed"] {
        let cm: ConfigMap = serde_json::from_value(serde_json::json!({"metadata": {"name": name}, "data": {"k": "v"}})).unwrap();
        cms.create(&PostParams::default(), &cm).await.unwrap();
    }
    let (_shutdown, never) = tokio::sync::oneshot::channel::<()>();
    let informers = Informers::new(client.clone(), async move {
        let _ = never.await;
    });
    let informer = informers.get::<ConfigMap>();
    let mut changes = informer.subscribe();
    informer.ready().await;
    let names = |i: &skiff_controlplane::controllers::informers::SharedInformer<ConfigMap>| {
        let mut n: Vec<String> = i.store().state().iter().map(|c| c.name_any()).filter(|n| n == "kept" || n == "doomed").collect();
        n.sort();
        n
    };
    assert_eq!(names(&informer), ["doomed", "kept"]);

    // The server goes away; meanwhile "doomed" is deleted, more is written, and history is compacted past the
    // informer's last revision.
    let _ = stop.send(());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    store.delete("/registry/core/configmaps/default/doomed", None).await.unwrap();
    store.create("/registry/core/configmaps/default/filler", br#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"filler","namespace":"default","uid":"f"}}"#.to_vec()).await.unwrap();
    let rev = store.current_revision().await.unwrap();
    store.compact(rev).await.unwrap();
    let _stop = serve_on(store.clone(), addr).await;

    // The informer relists: "doomed" is reported deleted and gone from the cache, "filler" appears.
    let mut deleted = Vec::new();
    eventually("the relist reports the deletion", || {
        while let Ok(c) = changes.try_recv() {
            if let Change::Deleted(o) = c {
                deleted.push(o.name_any());
            }
        }
        let done = deleted.iter().any(|n| n == "doomed");
        async move { done }
    })
    .await;
    eventually("the cache matches the store again", || {
        let ok = names(&informer) == ["kept"] && informer.store().state().iter().any(|c| c.name_any() == "filler");
        async move { ok }
    })
    .await;
    assert!(!deleted.iter().any(|n| n == "kept"), "only what was deleted is reported deleted: {deleted:?}");
}

/// A controller that starts after the first list (after a restart, or after waiting for other caches) is triggered
/// by every object already cached, then by changes: a Node that exists before node IPAM subscribes still gets its
/// pod CIDR (this was missed when the Node's event came before the subscription).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_trigger_stream_starts_with_every_cached_object() {
    use futures::StreamExt;
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(SqliteConfig::new(dir.path().join("s.db"))).unwrap());
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let _stop = serve_on(store, addr).await;
    let client = Client::try_from(kube::Config::new(format!("http://{addr}").parse().unwrap())).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let (_shutdown, never) = tokio::sync::oneshot::channel::<()>();
    let informers = Informers::new(client.clone(), async move {
        let _ = never.await;
    });
    let informer = informers.get::<ConfigMap>();
    informer.ready().await;
    let cm = |name: &str| -> ConfigMap { serde_json::from_value(serde_json::json!({"metadata": {"name": name}})).unwrap() };
    cms.create(&PostParams::default(), &cm("before")).await.unwrap();
    eventually("the cache holds the first object", || async { informer.store().state().iter().any(|c| c.name_any() == "before") }).await;
    let mut triggers = Box::pin(informer.touched());
    cms.create(&PostParams::default(), &cm("after")).await.unwrap();
    let mut seen = Vec::new();
    while !(seen.contains(&"before".to_string()) && seen.contains(&"after".to_string())) {
        let t = tokio::time::timeout(std::time::Duration::from_secs(10), triggers.next()).await.expect("a trigger in time").expect("stream open");
        seen.push(t.unwrap().name_any());
    }
    assert!(seen.iter().position(|n| n == "before") < seen.iter().position(|n| n == "after"), "{seen:?}");
}
