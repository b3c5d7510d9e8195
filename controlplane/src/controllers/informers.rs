//! Shared informers (upstream's SharedInformerFactory): one list + watch and one reflector cache per resource type
//! per process, read by every controller and the scheduler, each of which subscribes to the stream of changes.
//!
//! An [`Informers`] factory is made once per process and handed to the controller manager and the scheduler; the
//! first to ask for a type starts its informer, which then runs until the factory's shutdown (not until the
//! asker stops: a controller manager that loses and regains its Lease finds a warm cache).
//!
//! Subscribers get [`Change`]s: objects applied, and objects deleted — including those whose deletion was only
//! noticed when a relist (after a 410 or a broken watch) no longer showed them, which a plain reflector would
//! drop silently. The cache is updated before a change is sent, except for the objects of a relist, which the
//! cache takes all at once when the relist is complete.

use std::any::{Any, TypeId};
use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// What a subscriber hears.
#[derive(Debug, Clone)]
pub enum Change<K> {
    Applied(Arc<K>),
    Deleted(Arc<K>),
}

impl<K> Change<K> {
    pub fn object(&self) -> &Arc<K> {
        match self {
            Change::Applied(o) | Change::Deleted(o) => o,
        }
    }
}

/// The bounds of a type an informer can hold.
pub trait Informable: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static {}
impl<K> Informable for K where K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static {}

/// One running informer: its cache and its subscribers. Cheap to clone.
pub struct SharedInformer<K: Informable> {
    store: Store<K>,
    subscribers: Arc<Mutex<Vec<UnboundedSender<Change<K>>>>>,
    ready: tokio::sync::watch::Receiver<bool>,
}

impl<K: Informable> Clone for SharedInformer<K> {
    fn clone(&self) -> Self {
        SharedInformer { store: self.store.clone(), subscribers: self.subscribers.clone(), ready: self.ready.clone() }
    }
}

fn uid<K: kube::Resource>(o: &K) -> String {
    o.meta().uid.clone().unwrap_or_default()
}

impl<K: Informable> SharedInformer<K> {
    /// Start list + watch of `api` until `shutdown` resolves. Watch errors are logged; the watcher retries with
    /// backoff and relists on 410.
    pub fn start(api: Api<K>, shutdown: impl Future<Output = ()> + Send + 'static) -> Self {
        let (store, mut writer) = reflector::store();
        let subscribers: Arc<Mutex<Vec<UnboundedSender<Change<K>>>>> = Arc::default();
        let (ready_tx, ready) = tokio::sync::watch::channel(false);
        let informer = SharedInformer { store: store.clone(), subscribers: subscribers.clone(), ready };
        tokio::spawn(async move {
            let stream = watcher(api, watcher::Config::default()).default_backoff();
            futures::pin_mut!(stream);
            futures::pin_mut!(shutdown);
            // uids listed so far by the relist under way.
            let mut relisted: Option<HashSet<String>> = None;
            loop {
                let event = tokio::select! {
                    _ = &mut shutdown => return,
                    e = stream.next() => match e {
                        None => return,
                        Some(Ok(e)) => e,
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, kind = %K::kind(&()), "informer watch error; retrying");
                            continue;
                        }
                    },
                };
                // Subscribers get the cached object itself (one copy of each object in the process, not one more
                // per change in flight), looked up once the cache has it.
                let cached = |o: &K| store.get(&reflector::ObjectRef::from_obj(o)).unwrap_or_else(|| Arc::new(o.clone()));
                let changes = match &event {
                    watcher::Event::Apply(_) => vec![],
                    watcher::Event::Delete(o) => vec![Change::Deleted(Arc::new(o.clone()))],
                    watcher::Event::Init => {
                        relisted = Some(HashSet::new());
                        vec![]
                    }
                    watcher::Event::InitApply(o) => {
                        relisted.get_or_insert_with(HashSet::new).insert(uid(o));
                        // The cache takes a relist's objects at its end: this one is not cached yet.
                        vec![Change::Applied(Arc::new(o.clone()))]
                    }
                    watcher::Event::InitDone => {
                        // The cache still holds what was there before the relist: whatever the relist did not
                        // show was deleted meanwhile.
                        let seen = relisted.take().unwrap_or_default();
                        store.state().into_iter().filter(|o| !seen.contains(&uid(o.as_ref()))).map(Change::Deleted).collect()
                    }
                };
                writer.apply_watcher_event(&event);
                let changes = match &event {
                    watcher::Event::Apply(o) => vec![Change::Applied(cached(o))],
                    _ => changes,
                };
                if matches!(event, watcher::Event::InitDone) {
                    ready_tx.send_replace(true);
                }
                if changes.is_empty() {
                    continue;
                }
                let mut subs = subscribers.lock().unwrap_or_else(|e| e.into_inner());
                subs.retain(|tx| changes.iter().all(|c| tx.send(c.clone()).is_ok()));
            }
        });
        informer
    }

    /// The cache (complete once [`Self::ready`] has resolved).
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Resolves once the first list is in the cache. Wait here, not in `Store::wait_until_ready`: that one wakes
    /// only the last of several waiters (kube-runtime 0.98's `DelayedInit` keeps one waker), and a shared store
    /// has many; once this has resolved, `Store::wait_until_ready` (which `kube_runtime::Controller` calls)
    /// returns at once.
    pub async fn ready(&self) {
        let mut ready = self.ready.clone();
        // Err: the informer stopped (shutdown) before its first list; nothing will come.
        let _ = ready.wait_for(|r| *r).await;
    }

    /// Changes from now on. Dropping the receiver unsubscribes.
    pub fn subscribe(&self) -> UnboundedReceiver<Change<K>> {
        let (tx, rx) = unbounded_channel();
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
        rx
    }

    /// The objects that changed (deleted ones included), as the stream a `kube_runtime::Controller` is
    /// triggered by: first every object the cache holds now, then each change — so a controller that starts after
    /// the first list (after a restart, or once the caches it waits for are ready) still looks at every object once,
    /// as one fed by its own watch would. They carry their metadata only: a trigger is mapped to the objects to
    /// reconcile by name, namespace, labels and owner references, and reconciles read the cache; a copy of every
    /// spec and status for each subscriber would only cost memory.
    pub fn touched(&self) -> impl futures::Stream<Item = Result<K, watcher::Error>> + Send + 'static
    where
        K: Default,
    {
        let trigger = |o: &K| {
            let mut t = K::default();
            *t.meta_mut() = o.meta().clone();
            t
        };
        // Subscribed before the cache is read: a change lands in one or the other (or both; a second look is
        // harmless), never in neither.
        let rx = self.subscribe();
        let now: Vec<Result<K, watcher::Error>> = self.store.state().iter().map(|o| Ok(trigger(o))).collect();
        let changes = futures::stream::unfold(rx, move |mut rx| async move { rx.recv().await.map(|c| (Ok(trigger(c.object())), rx)) });
        futures::stream::iter(now).chain(changes)
    }
}

/// The per-process informer factory. Cheap to clone; every clone hands out the same informers.
#[derive(Clone)]
pub struct Informers {
    client: Client,
    shutdown: Shared<BoxFuture<'static, ()>>,
    started: Arc<Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>>,
}

impl Informers {
    /// Informers over `client` (all namespaces) that stop when `shutdown` resolves.
    pub fn new(client: Client, shutdown: impl Future<Output = ()> + Send + 'static) -> Self {
        Informers { client, shutdown: shutdown.boxed().shared(), started: Arc::default() }
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The informer of `K`, started by the first caller.
    pub fn get<K: Informable>(&self) -> SharedInformer<K> {
        let mut started = self.started.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = started.get(&TypeId::of::<K>()).and_then(|b| b.downcast_ref::<SharedInformer<K>>()) {
            return i.clone();
        }
        let informer = SharedInformer::start(Api::<K>::all(self.client.clone()), self.shutdown.clone());
        started.insert(TypeId::of::<K>(), Box::new(informer.clone()));
        informer
    }
}
