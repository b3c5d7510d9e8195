//! The garbage collector against a real API server (in-process, 127.0.0.1, port 0): background, foreground and
//! orphan propagation, dangling owners, and a collector restarted in the middle of its work.

mod common;

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::{Api, Client, ResourceExt};
use common::eventually;
use serde_json::json;
use skiff_controlplane::apiserver::{serve, ApiServer, Config};
use skiff_controlplane::controllers::gc::{self, GcConfig};
use skiff_controlplane::controllers::{self, ControllersConfig, Informers};
use skiff_controlplane::store::sqlite::{SqliteConfig, SqliteStore};

/// A stop switch: dropping it stops what it was given to.
struct Stop(Option<tokio::sync::oneshot::Sender<()>>);

impl Stop {
    fn new() -> (Self, impl std::future::Future<Output = ()> + Send + Sync + 'static) {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        (Stop(Some(tx)), async move {
            let _ = rx.await;
        })
    }
}

impl Drop for Stop {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

struct Server {
    client: Client,
    _stop: Stop,
    _dir: tempfile::TempDir,
}

async fn server() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(SqliteConfig::new(dir.path().join("s.db"))).unwrap());
    let api = ApiServer::new(store, Config::default());
    api.start().await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = Stop::new();
    tokio::spawn(serve(listener, api, stopped));
    let client = Client::try_from(kube::Config::new(url.parse().unwrap())).unwrap();
    Server { client, _stop: stop, _dir: dir }
}

/// Start a garbage collector (its own informers) until the returned switch is dropped.
fn start_gc(client: &Client) -> Stop {
    let (stop, stopped) = Stop::new();
    let stopped = futures::FutureExt::shared(Box::pin(stopped));
    let informers = Informers::new(client.clone(), stopped.clone());
    tokio::spawn(gc::run(informers, GcConfig::default(), stopped));
    stop
}

fn cm(name: &str, owners: serde_json::Value, finalizers: &[&str]) -> ConfigMap {
    serde_json::from_value(json!({"metadata": {"name": name, "ownerReferences": owners, "finalizers": finalizers}, "data": {"k": "v"}})).unwrap()
}

fn owned_by(owner: &ConfigMap, block: bool) -> serde_json::Value {
    json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": owner.name_any(), "uid": owner.uid().unwrap(), "blockOwnerDeletion": block}])
}

async fn create(cms: &Api<ConfigMap>, c: ConfigMap) -> ConfigMap {
    cms.create(&PostParams::default(), &c).await.unwrap()
}

async fn gone(cms: &Api<ConfigMap>, name: &str) -> bool {
    matches!(cms.get(name).await, Err(kube::Error::Api(e)) if e.code == 404)
}

fn policy(p: PropagationPolicy) -> DeleteParams {
    DeleteParams { propagation_policy: Some(p), ..Default::default() }
}

async fn release(cms: &Api<ConfigMap>, name: &str) {
    cms.patch(name, &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}}))).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_deletes_dependents_and_their_dependents() {
    let s = server().await;
    let _gc = start_gc(&s.client);
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let owner = create(&cms, cm("owner", json!([]), &[])).await;
    let child = create(&cms, cm("child", owned_by(&owner, false), &[])).await;
    create(&cms, cm("grandchild", owned_by(&child, false), &[])).await;
    create(&cms, cm("bystander", json!([]), &[])).await;
    cms.delete("owner", &policy(PropagationPolicy::Background)).await.unwrap();
    assert!(gone(&cms, "owner").await, "background removes the owner at once");
    eventually("the dependents are collected", || async { gone(&cms, "child").await && gone(&cms, "grandchild").await }).await;
    assert!(!gone(&cms, "bystander").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreground_keeps_the_owner_until_blocking_dependents_are_gone() {
    let s = server().await;
    let _gc = start_gc(&s.client);
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let owner = create(&cms, cm("owner", json!([]), &[])).await;
    // A blocking dependent that lingers (a finalizer holds it), a blocking one that goes at once, a non-blocking one.
    create(&cms, cm("held", owned_by(&owner, true), &["example.com/hold"])).await;
    create(&cms, cm("quick", owned_by(&owner, true), &[])).await;
    create(&cms, cm("loose", owned_by(&owner, false), &[])).await;
    cms.delete("owner", &policy(PropagationPolicy::Foreground)).await.unwrap();
    eventually("every dependent is being deleted", || async {
        gone(&cms, "quick").await
            && gone(&cms, "loose").await
            && cms.get("held").await.is_ok_and(|c| c.metadata.deletion_timestamp.is_some())
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let o = cms.get("owner").await.expect("the owner waits for its blocking dependent");
    assert!(o.metadata.deletion_timestamp.is_some());
    assert_eq!(o.finalizers(), ["foregroundDeletion"]);
    release(&cms, "held").await;
    eventually("the owner goes after its last blocking dependent", || async { gone(&cms, "held").await && gone(&cms, "owner").await }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphan_removes_the_owner_references() {
    let s = server().await;
    let _gc = start_gc(&s.client);
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let owner = create(&cms, cm("owner", json!([]), &[])).await;
    let other = create(&cms, cm("other", json!([]), &[])).await;
    create(&cms, cm("kept", owned_by(&owner, true), &[])).await;
    let mut both = owned_by(&owner, false);
    both.as_array_mut().unwrap().extend(owned_by(&other, false).as_array().unwrap().iter().cloned());
    create(&cms, cm("shared", both, &[])).await;
    cms.delete("owner", &policy(PropagationPolicy::Orphan)).await.unwrap();
    eventually("the orphaned owner is gone", || async { gone(&cms, "owner").await }).await;
    let kept = cms.get("kept").await.expect("an orphan stays");
    assert!(kept.owner_references().is_empty(), "{:?}", kept.owner_references());
    let shared = cms.get("shared").await.expect("an orphan stays");
    assert_eq!(shared.owner_references().iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["other"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dangling_owners_are_collected_and_live_ones_kept() {
    let s = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let live = create(&cms, cm("live", json!([]), &[])).await;
    // Owner never existed; owner replaced by another object of the same name (other uid); owner alive; one dead
    // owner beside a live one (the reference is dropped, the object kept).
    let missing = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "nobody", "uid": "00000000-0000-0000-0000-000000000000"}]);
    create(&cms, cm("dangling", missing.clone(), &[])).await;
    let replaced = json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "live", "uid": "11111111-1111-1111-1111-111111111111"}]);
    create(&cms, cm("replaced", replaced, &[])).await;
    create(&cms, cm("child", owned_by(&live, true), &[])).await;
    let mut mixed = owned_by(&live, false);
    mixed.as_array_mut().unwrap().extend(missing.as_array().unwrap().iter().cloned());
    create(&cms, cm("mixed", mixed, &[])).await;
    // An owner of a kind this cluster does not serve: nothing to decide, the dependent stays.
    let unknown = json!([{"apiVersion": "example.com/v1", "kind": "Widget", "name": "w", "uid": "22222222-2222-2222-2222-222222222222"}]);
    create(&cms, cm("unknown-kind", unknown, &[])).await;
    let _gc = start_gc(&s.client);
    eventually("objects with dead owners are collected", || async { gone(&cms, "dangling").await && gone(&cms, "replaced").await }).await;
    eventually("the dead reference is dropped", || async {
        cms.get("mixed").await.is_ok_and(|m| m.owner_references().iter().map(|r| r.name.as_str()).collect::<Vec<_>>() == ["live"])
    })
    .await;
    assert!(!gone(&cms, "child").await);
    assert!(!gone(&cms, "unknown-kind").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_collector_finishes_the_work() {
    let s = server().await;
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let gc = start_gc(&s.client);
    // A foreground deletion under way when the collector stops.
    let a = create(&cms, cm("a", json!([]), &[])).await;
    create(&cms, cm("a1", owned_by(&a, true), &["example.com/hold"])).await;
    create(&cms, cm("a2", owned_by(&a, true), &[])).await;
    cms.delete("a", &policy(PropagationPolicy::Foreground)).await.unwrap();
    eventually("the first dependents are handled", || async {
        gone(&cms, "a2").await && cms.get("a1").await.is_ok_and(|c| c.metadata.deletion_timestamp.is_some())
    })
    .await;
    drop(gc);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Meanwhile: the held dependent goes, an owner is deleted in the background, another with orphan.
    release(&cms, "a1").await;
    let b = create(&cms, cm("b", json!([]), &[])).await;
    create(&cms, cm("b1", owned_by(&b, false), &[])).await;
    create(&cms, cm("b2", owned_by(&b, false), &[])).await;
    let c = create(&cms, cm("c", json!([]), &[])).await;
    create(&cms, cm("c1", owned_by(&c, false), &[])).await;
    cms.delete("b", &policy(PropagationPolicy::Background)).await.unwrap();
    cms.delete("c", &policy(PropagationPolicy::Orphan)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert!(!gone(&cms, "b1").await && !gone(&cms, "a").await && !gone(&cms, "c").await, "no collector runs now");
    let _gc = start_gc(&s.client);
    eventually("the new collector converges", || async {
        gone(&cms, "a").await && gone(&cms, "b1").await && gone(&cms, "b2").await && gone(&cms, "c").await
    })
    .await;
    assert!(cms.get("c1").await.unwrap().owner_references().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicaset_deleted_in_foreground_after_its_pods() {
    let s = server().await;
    let (stop, stopped) = Stop::new();
    tokio::spawn(controllers::run(s.client.clone(), ControllersConfig::default(), stopped));
    let rs_api: Api<ReplicaSet> = Api::namespaced(s.client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(s.client.clone(), "default");
    let rs: ReplicaSet = serde_json::from_value(json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "rs"},
        "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "rs"}},
                 "template": {"metadata": {"labels": {"app": "rs"}}, "spec": {"containers": [{"name": "c", "image": "busybox"}]}}}}))
    .unwrap();
    rs_api.create(&PostParams::default(), &rs).await.unwrap();
    eventually("three pods", || async { pods.list(&ListParams::default()).await.is_ok_and(|l| l.items.len() == 3) }).await;
    rs_api.delete("rs", &policy(PropagationPolicy::Foreground)).await.unwrap();
    eventually("pods and then the ReplicaSet are gone", || async {
        pods.list(&ListParams::default()).await.is_ok_and(|l| l.items.is_empty())
            && matches!(rs_api.get("rs").await, Err(kube::Error::Api(e)) if e.code == 404)
    })
    .await;
    drop(stop);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_in_another_namespace_are_absent_and_reported() {
    use k8s_openapi::api::core::v1::{Event, Namespace};
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let s = server().await;
    let namespaces: Api<Namespace> = Api::all(s.client.clone());
    namespaces.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "other"}})).unwrap()).await.unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(s.client.clone(), "default");
    let others: Api<ConfigMap> = Api::namespaced(s.client.clone(), "other");
    let owner = create(&cms, cm("owner", json!([]), &[])).await;
    create(&cms, cm("same-ns", owned_by(&owner, false), &[])).await;
    // A namespaced dependent whose owner lives in another namespace: the owner counts as absent there.
    create(&others, cm("cross", owned_by(&owner, false), &[])).await;
    // A cluster-scoped dependent of a namespaced owner: the reference cannot be resolved; the object stays.
    let roles: Api<ClusterRole> = Api::all(s.client.clone());
    let role: ClusterRole = serde_json::from_value(json!({"metadata": {"name": "owned-role", "ownerReferences": owned_by(&owner, false)}, "rules": []})).unwrap();
    roles.create(&PostParams::default(), &role).await.unwrap();
    let _gc = start_gc(&s.client);
    eventually("the cross-namespace dependent is collected", || async { gone(&others, "cross").await }).await;
    let reason = ListParams::default().fields("reason=OwnerRefInvalidNamespace");
    let (ev_other, ev_default): (Api<Event>, Api<Event>) = (Api::namespaced(s.client.clone(), "other"), Api::namespaced(s.client.clone(), "default"));
    eventually("both invalid references are reported", || async {
        let a = ev_other.list(&reason).await.map(|l| l.items).unwrap_or_default();
        let b = ev_default.list(&reason).await.map(|l| l.items).unwrap_or_default();
        a.iter().any(|e| e.involved_object.name.as_deref() == Some("cross")) && b.iter().any(|e| e.involved_object.name.as_deref() == Some("owned-role"))
    })
    .await;
    let ev = ev_other.list(&reason).await.unwrap().items.into_iter().find(|e| e.involved_object.name.as_deref() == Some("cross")).unwrap();
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    let msg = ev.message.unwrap_or_default();
    assert!(msg.starts_with("ownerRef [v1/ConfigMap, namespace: other, name: owner, uid: ") && msg.ends_with("does not exist in namespace \"other\""), "{msg}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(roles.get("owned-role").await.is_ok(), "a cluster-scoped dependent of a namespaced owner is kept");
    assert!(!gone(&cms, "same-ns").await && !gone(&cms, "owner").await, "the owner and its same-namespace dependent stay");
    let reported = ev_default.list(&reason).await.unwrap().items.iter().filter(|e| e.involved_object.name.as_deref() == Some("owned-role")).count();
    assert_eq!(reported, 1, "reported once, not on every look");
}
