//! The conformance suite every [`Store`] implementation must pass.
//!
//! Each check gets a fresh, empty store from the factory. Call [`run_all`] from an implementation's tests.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;

use super::{EventKind, ListOptions, Store, StoreError, WatchStream};

/// Run every check, each against a new store from `make`.
pub async fn run_all<S, F, Fut>(make: F)
where
    S: Store,
    F: Fn() -> Fut,
    Fut: Future<Output = S>,
{
    create_get_update_delete(Arc::new(make().await)).await;
    revisions_strictly_increase(Arc::new(make().await)).await;
    compare_and_swap(Arc::new(make().await)).await;
    guarded_delete(Arc::new(make().await)).await;
    list_by_prefix_and_pages(Arc::new(make().await)).await;
    list_at_old_revision(Arc::new(make().await)).await;
    watch_in_order_and_resume(Arc::new(make().await)).await;
    watch_filters_by_prefix(Arc::new(make().await)).await;
    compaction(Arc::new(make().await)).await;
    concurrent_creates_one_wins(Arc::new(make().await)).await;
    concurrent_updates_serialize(Arc::new(make().await)).await;
}

async fn next_event(w: &mut WatchStream) -> super::Event {
    match tokio::time::timeout(Duration::from_secs(10), w.next()).await {
        Ok(Some(Ok(ev))) => ev,
        other => panic!("expected a watch event, got {other:?}"),
    }
}

async fn no_event(w: &mut WatchStream) {
    if let Ok(ev) = tokio::time::timeout(Duration::from_millis(200), w.next()).await {
        panic!("expected no watch event, got {ev:?}");
    }
}

pub async fn create_get_update_delete<S: Store>(s: Arc<S>) {
    assert!(s.get("/a").await.unwrap().is_none());
    let kv = s.create("/a", b"one".to_vec()).await.unwrap();
    assert_eq!(&*kv.value, b"one");
    assert_eq!(kv.create_revision, kv.mod_revision);
    assert!(matches!(s.create("/a", b"x".to_vec()).await, Err(StoreError::AlreadyExists(_))));
    let got = s.get("/a").await.unwrap().unwrap();
    assert_eq!(got, kv);
    let up = s.update("/a", b"two".to_vec(), kv.mod_revision).await.unwrap();
    assert!(up.mod_revision > kv.mod_revision);
    assert_eq!(up.create_revision, kv.create_revision);
    assert_eq!(&*s.get("/a").await.unwrap().unwrap().value, b"two");
    let (deleted, del_rev) = s.delete("/a", None).await.unwrap();
    assert_eq!(&*deleted.value, b"two");
    assert!(del_rev > up.mod_revision);
    assert!(s.get("/a").await.unwrap().is_none());
    assert!(matches!(s.delete("/a", None).await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.update("/a", b"x".to_vec(), up.mod_revision).await, Err(StoreError::NotFound(_))));
    // A key can be created again after a delete, with a new create revision.
    let again = s.create("/a", b"three".to_vec()).await.unwrap();
    assert!(again.create_revision > del_rev);
    assert_eq!(s.current_revision().await.unwrap(), again.mod_revision);
}

pub async fn revisions_strictly_increase<S: Store>(s: Arc<S>) {
    let mut last = s.current_revision().await.unwrap();
    for i in 0..20 {
        let kv = s.create(&format!("/k/{i}"), vec![i as u8]).await.unwrap();
        assert!(kv.mod_revision > last);
        last = kv.mod_revision;
        let kv = s.update(&format!("/k/{i}"), vec![1], kv.mod_revision).await.unwrap();
        assert!(kv.mod_revision > last);
        last = kv.mod_revision;
    }
    let (_, rev) = s.delete("/k/3", None).await.unwrap();
    assert!(rev > last);
    // Failed writes do not consume revisions.
    let _ = s.create("/k/4", vec![]).await;
    assert_eq!(s.current_revision().await.unwrap(), rev);
}

pub async fn compare_and_swap<S: Store>(s: Arc<S>) {
    let kv = s.create("/cas", b"v1".to_vec()).await.unwrap();
    let v2 = s.update("/cas", b"v2".to_vec(), kv.mod_revision).await.unwrap();
    match s.update("/cas", b"stale".to_vec(), kv.mod_revision).await {
        Err(StoreError::Conflict { expected, actual, .. }) => {
            assert_eq!(expected, kv.mod_revision);
            assert_eq!(actual, v2.mod_revision);
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    assert_eq!(&*s.get("/cas").await.unwrap().unwrap().value, b"v2");
}

pub async fn guarded_delete<S: Store>(s: Arc<S>) {
    let kv = s.create("/g", b"v1".to_vec()).await.unwrap();
    let v2 = s.update("/g", b"v2".to_vec(), kv.mod_revision).await.unwrap();
    assert!(matches!(s.delete("/g", Some(kv.mod_revision)).await, Err(StoreError::Conflict { .. })));
    assert!(s.get("/g").await.unwrap().is_some());
    s.delete("/g", Some(v2.mod_revision)).await.unwrap();
    assert!(s.get("/g").await.unwrap().is_none());
}

pub async fn list_by_prefix_and_pages<S: Store>(s: Arc<S>) {
    for name in ["b", "a", "c", "d", "e"] {
        s.create(&format!("/registry/pods/ns1/{name}"), name.as_bytes().to_vec()).await.unwrap();
    }
    s.create("/registry/pods/ns2/x", b"x".to_vec()).await.unwrap();
    s.create("/registry/pods0", b"outside".to_vec()).await.unwrap();
    s.create("/registry/podsx/y", b"outside".to_vec()).await.unwrap();
    let all = s.list("/registry/pods/", ListOptions::default()).await.unwrap();
    let keys: Vec<_> = all.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "/registry/pods/ns1/a",
            "/registry/pods/ns1/b",
            "/registry/pods/ns1/c",
            "/registry/pods/ns1/d",
            "/registry/pods/ns1/e",
            "/registry/pods/ns2/x"
        ]
    );
    assert!(!all.more);
    assert_eq!(all.revision, s.current_revision().await.unwrap());
    assert_eq!(s.count("/registry/pods/").await.unwrap(), 6);
    assert_eq!(s.count("/registry/pods/ns1/").await.unwrap(), 5);

    let p1 = s.list("/registry/pods/ns1/", ListOptions { limit: Some(2), ..Default::default() }).await.unwrap();
    assert_eq!(p1.items.len(), 2);
    assert!(p1.more);
    let p2 = s
        .list(
            "/registry/pods/ns1/",
            ListOptions {
                limit: Some(2),
                start_after: Some(p1.items[1].key.clone()),
                revision: Some(p1.revision),
            },
        )
        .await
        .unwrap();
    assert_eq!(p2.items[0].key, "/registry/pods/ns1/c");
    assert!(p2.more);
    let p3 = s
        .list(
            "/registry/pods/ns1/",
            ListOptions {
                limit: Some(2),
                start_after: Some(p2.items[1].key.clone()),
                revision: Some(p1.revision),
            },
        )
        .await
        .unwrap();
    assert_eq!(p3.items.len(), 1);
    assert!(!p3.more);
    assert_eq!(p3.revision, p1.revision);
    // A start before the prefix never reaches keys outside it.
    let outside = s
        .list(
            "/registry/pods/ns2/",
            ListOptions { start_after: Some("/registry/pods/ns1/".into()), ..Default::default() },
        )
        .await
        .unwrap();
    let keys: Vec<&str> = outside.items.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/registry/pods/ns2/x"]);
    let empty = s.list("/nothing/", ListOptions::default()).await.unwrap();
    assert!(empty.items.is_empty());
    assert_eq!(empty.revision, all.revision);
}

pub async fn list_at_old_revision<S: Store>(s: Arc<S>) {
    let a = s.create("/o/a", b"a1".to_vec()).await.unwrap();
    let b = s.create("/o/b", b"b1".to_vec()).await.unwrap();
    let at = b.mod_revision;
    s.update("/o/a", b"a2".to_vec(), a.mod_revision).await.unwrap();
    s.delete("/o/b", None).await.unwrap();
    s.create("/o/c", b"c1".to_vec()).await.unwrap();
    let old = s.list("/o/", ListOptions { revision: Some(at), ..Default::default() }).await.unwrap();
    let vals: Vec<_> = old.items.iter().map(|kv| (kv.key.as_str(), &*kv.value)).collect();
    assert_eq!(vals, [("/o/a", &b"a1"[..]), ("/o/b", &b"b1"[..])]);
    assert_eq!(old.revision, at);
    let now = s.list("/o/", ListOptions::default()).await.unwrap();
    let vals: Vec<_> = now.items.iter().map(|kv| (kv.key.as_str(), &*kv.value)).collect();
    assert_eq!(vals, [("/o/a", &b"a2"[..]), ("/o/c", &b"c1"[..])]);
    let future = now.revision + 10;
    assert!(matches!(
        s.list("/o/", ListOptions { revision: Some(future), ..Default::default() }).await,
        Err(StoreError::FutureRevision { .. })
    ));
}

pub async fn watch_in_order_and_resume<S: Store>(s: Arc<S>) {
    let start = s.current_revision().await.unwrap();
    let a = s.create("/w/a", b"1".to_vec()).await.unwrap();
    // From history.
    let mut w = s.watch("/w/", start).await.unwrap();
    let ev = next_event(&mut w).await;
    assert_eq!((ev.kind, ev.kv.key.as_str(), ev.revision), (EventKind::Create, "/w/a", a.mod_revision));
    assert!(ev.prev.is_none());
    // Live.
    let a2 = s.update("/w/a", b"2".to_vec(), a.mod_revision).await.unwrap();
    let ev = next_event(&mut w).await;
    assert_eq!((ev.kind, ev.revision), (EventKind::Update, a2.mod_revision));
    assert_eq!(&*ev.prev.as_ref().unwrap().value, b"1");
    let (_, del) = s.delete("/w/a", None).await.unwrap();
    let ev = next_event(&mut w).await;
    assert_eq!((ev.kind, ev.revision), (EventKind::Delete, del));
    assert_eq!(&*ev.kv.value, b"2", "a delete event carries the last value");
    // Many writes arrive in order.
    let mut revs = Vec::new();
    for i in 0..300 {
        revs.push(s.create(&format!("/w/n{i:03}"), vec![1]).await.unwrap().mod_revision);
    }
    for r in &revs {
        assert_eq!(next_event(&mut w).await.revision, *r);
    }
    // Resume from the middle.
    let mut w2 = s.watch("/w/", revs[149]).await.unwrap();
    for r in &revs[150..] {
        assert_eq!(next_event(&mut w2).await.revision, *r);
    }
    no_event(&mut w2).await;
    // A watch from the current revision sees only later changes.
    let mut w3 = s.watch("/w/", s.current_revision().await.unwrap()).await.unwrap();
    no_event(&mut w3).await;
    let c = s.create("/w/late", vec![]).await.unwrap();
    assert_eq!(next_event(&mut w3).await.revision, c.mod_revision);
}

pub async fn watch_filters_by_prefix<S: Store>(s: Arc<S>) {
    let start = s.current_revision().await.unwrap();
    let mut w = s.watch("/p/ns1/", start).await.unwrap();
    s.create("/p/ns2/x", vec![]).await.unwrap();
    s.create("/p/ns1", vec![]).await.unwrap();
    let mine = s.create("/p/ns1/y", vec![]).await.unwrap();
    let ev = next_event(&mut w).await;
    assert_eq!(ev.kv.key, "/p/ns1/y");
    assert_eq!(ev.revision, mine.mod_revision);
    no_event(&mut w).await;
}

pub async fn compaction<S: Store>(s: Arc<S>) {
    let a = s.create("/c/a", b"1".to_vec()).await.unwrap();
    let a2 = s.update("/c/a", b"2".to_vec(), a.mod_revision).await.unwrap();
    let b = s.create("/c/b", b"b".to_vec()).await.unwrap();
    s.delete("/c/b", None).await.unwrap();
    let keep = s.create("/c/k", b"k".to_vec()).await.unwrap();
    let at = s.current_revision().await.unwrap();
    let after = s.update("/c/a", b"3".to_vec(), a2.mod_revision).await.unwrap();
    s.compact(at).await.unwrap();
    assert_eq!(s.compacted_revision().await.unwrap(), at);
    assert!(matches!(s.watch("/c/", b.mod_revision).await, Err(StoreError::Compacted { .. })));
    assert!(matches!(
        s.list("/c/", ListOptions { revision: Some(a2.mod_revision), ..Default::default() }).await,
        Err(StoreError::Compacted { .. })
    ));
    assert!(matches!(s.compact(at).await, Err(StoreError::Compacted { .. })));
    // Live data is intact; the list at the compaction point still sees every key.
    assert_eq!(&*s.get("/c/k").await.unwrap().unwrap().value, b"k");
    assert_eq!(s.get("/c/k").await.unwrap().unwrap(), keep);
    let at_list = s.list("/c/", ListOptions { revision: Some(at), ..Default::default() }).await.unwrap();
    let vals: Vec<_> = at_list.items.iter().map(|kv| (kv.key.as_str(), &*kv.value)).collect();
    assert_eq!(vals, [("/c/a", &b"2"[..]), ("/c/k", &b"k"[..])]);
    // A watch from the compaction point still works and sees the later update.
    let mut w = s.watch("/c/", at).await.unwrap();
    let ev = next_event(&mut w).await;
    assert_eq!(ev.revision, after.mod_revision);
    // The revision keeps increasing after compaction.
    let n = s.create("/c/n", vec![]).await.unwrap();
    assert!(n.mod_revision > after.mod_revision);
}

pub async fn concurrent_creates_one_wins<S: Store>(s: Arc<S>) {
    let mut tasks = Vec::new();
    for i in 0..32u8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move { s.create("/race", vec![i]).await }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::AlreadyExists(_)) => {}
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(ok, 1);
}

pub async fn concurrent_updates_serialize<S: Store>(s: Arc<S>) {
    s.create("/counter", b"0".to_vec()).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..10 {
                loop {
                    let cur = s.get("/counter").await.unwrap().unwrap();
                    let n: u64 = std::str::from_utf8(&cur.value).unwrap().parse().unwrap();
                    match s.update("/counter", (n + 1).to_string().into_bytes(), cur.mod_revision).await {
                        Ok(_) => break,
                        Err(StoreError::Conflict { .. }) => continue,
                        Err(e) => panic!("unexpected error {e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(&*s.get("/counter").await.unwrap().unwrap().value, b"80");
}
