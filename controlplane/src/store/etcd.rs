//! The external store: an etcd v3 cluster, over gRPC with the `etcd-client` crate.
//!
//! Layout: each store key `k` is the etcd key `<prefix><k>`. The API server's keys already start with
//! `/registry/` (`/registry/core/pods/default/web`), so with the default empty prefix etcd holds the familiar
//! Kubernetes layout; a prefix such as `/cluster-a` lets several clusters share one etcd.
//!
//! Revisions are etcd's: a version's `mod_revision` is the store revision and the API's `resourceVersion`.
//! Creates are a transaction guarded by `create_revision == 0`, updates and guarded deletes by
//! `mod_revision == expected`; a failed guard reads the key in the same transaction, so the error says what is
//! there now, and consumes no revision. Lists read at one revision (the first page's) and page by key; watches
//! start at `after + 1` with `prev_kv`, so updates and deletes carry the version they replaced.
//!
//! Difference from SQLite: etcd's revision counts every write to the whole etcd cluster, so when other clients
//! (or another prefix) share the etcd, this store's revisions are strictly increasing but not contiguous.
//! Callers only ever compare revisions, never count them, so nothing depends on contiguity. Compaction is
//! likewise cluster-wide: compacting one prefix compacts all of them.
//!
//! Connection loss: the gRPC channel reconnects on its own (balancing over all `--etcd-servers`); reads and
//! writes that failed to reach any member are retried for a short while, then reported as
//! [`StoreError::Backend`] naming the endpoints. A watch whose stream breaks resumes from the last revision it
//! delivered, so a watcher sees no gap and no duplicate.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, WatchOptions,
};

use super::{prefix_end, Event, EventKind, KeyValue, ListOptions, ListResult, Revision, Store, StoreError, WatchStream};

/// How long a request keeps retrying while no etcd member can be reached.
const RETRY_FOR: Duration = Duration::from_secs(15);
/// Per-request deadline.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Errors of connecting to etcd and of single etcd requests.
#[derive(Debug, thiserror::Error)]
pub enum EtcdError {
    #[error("etcd at {endpoints}: {what}")]
    Config { endpoints: String, what: String },
    #[error("connecting to etcd at {endpoints}: {source}")]
    Connect { endpoints: String, source: etcd_client::Error },
    #[error("etcd {op} (endpoints {endpoints}): {source}")]
    Request { op: &'static str, endpoints: String, source: etcd_client::Error },
    #[error("etcd {op}: unexpected response: {what}")]
    Response { op: &'static str, what: String },
}

impl From<EtcdError> for StoreError {
    fn from(e: EtcdError) -> Self {
        StoreError::Backend(e.to_string())
    }
}

#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// Client URLs, such as `http://127.0.0.1:2379`.
    pub endpoints: Vec<String>,
    /// Prepended to every store key.
    pub prefix: String,
    /// TLS towards etcd (`https://` endpoints): the CA that signed etcd's serving certificate and, for etcd's
    /// `--client-cert-auth`, a client certificate and key. PEM.
    pub tls: Option<EtcdTls>,
}

#[derive(Clone, Default)]
pub struct EtcdTls {
    pub ca_pem: Vec<u8>,
    pub client: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for EtcdTls {
    // Never print a private key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdTls").field("client_certificate", &self.client.is_some()).finish_non_exhaustive()
    }
}

impl EtcdConfig {
    pub fn new(endpoints: Vec<String>) -> Self {
        EtcdConfig { endpoints, prefix: String::new(), tls: None }
    }

    /// Endpoints and TLS must agree: every endpoint `https://` with TLS settings, `http://` without.
    pub fn check(&self) -> Result<(), String> {
        if self.endpoints.is_empty() {
            return Err("no etcd endpoints".into());
        }
        for e in &self.endpoints {
            match (e.split_once("://").map(|(s, _)| s), self.tls.is_some()) {
                (Some("https"), true) | (Some("http"), false) => {}
                (Some("http"), true) => return Err(format!("{e}: TLS settings are given, so the endpoint must be https://")),
                (Some("https"), false) => return Err(format!("{e}: an https:// endpoint needs the CA of etcd's certificate (--etcd-cafile)")),
                _ => return Err(format!("{e}: not an http:// or https:// URL")),
            }
        }
        Ok(())
    }
}

/// etcd-backed [`Store`].
pub struct EtcdStore {
    client: Client,
    prefix: String,
    endpoints: String,
}

/// What an etcd error means to the store.
enum Kind {
    /// The request did not reach a working member (connection refused, no leader, timeout): safe to retry.
    Unavailable,
    Other,
}

fn classify(e: &etcd_client::Error) -> Kind {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            let m = s.message();
            // 14 Unavailable, 4 DeadlineExceeded; 1 Cancelled is what tonic reports when the member's connection
            // closes under a request in flight (a member killed or restarting: "operation was canceled", with the
            // transport error as its source). The store never cancels a request itself (a dropped future returns
            // nothing), so a Cancelled status is always the connection's; writes retried after one are safe as
            // for the others (`create` and the compare-and-swaps recognise their own earlier success). 2 Unknown with
            // the message "transport error" is tonic's status for the same broken connection when the write side
            // fails first (a broken pipe to the killed member).
            let transport = i32::from(s.code()) == 2 && m.contains("transport error");
            if matches!(i32::from(s.code()), 14 | 4 | 1) || transport || m.contains("no leader") || m.contains("leader changed")
            {
                Kind::Unavailable
            } else {
                Kind::Other
            }
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => Kind::Unavailable,
        _ => Kind::Other,
    }
}

fn to_kv(prefix_len: usize, kv: &etcd_client::KeyValue) -> KeyValue {
    let key = String::from_utf8_lossy(kv.key().get(prefix_len..).unwrap_or_default()).into_owned();
    KeyValue { key, value: Arc::from(kv.value()), create_revision: kv.create_revision(), mod_revision: kv.mod_revision() }
}

impl EtcdStore {
    /// Connect to the etcd cluster and check that it answers.
    pub async fn connect(config: EtcdConfig) -> Result<Self, EtcdError> {
        let endpoints = config.endpoints.join(",");
        config.check().map_err(|what| EtcdError::Config { endpoints: endpoints.clone(), what })?;
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(3))
            .with_timeout(REQUEST_TIMEOUT)
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_require_leader(true);
        if let Some(tls) = &config.tls {
            let mut t = etcd_client::TlsOptions::new().ca_certificate(etcd_client::Certificate::from_pem(&tls.ca_pem));
            if let Some((cert, key)) = &tls.client {
                t = t.identity(etcd_client::Identity::from_pem(cert, key));
            }
            opts = opts.with_tls(t);
        }
        let client = Client::connect(&config.endpoints, Some(opts))
            .await
            .map_err(|source| EtcdError::Connect { endpoints: endpoints.clone(), source })?;
        let store = EtcdStore { client, prefix: config.prefix, endpoints };
        store.header_revision().await.map_err(|e| match e {
            RetryError::Etcd(source) => EtcdError::Connect { endpoints: store.endpoints.clone(), source },
            RetryError::Other(e) => e,
        })?;
        Ok(store)
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The start of the etcd range holding every store key starting with `prefix` (etcd rejects an empty key;
    /// "\0" is the smallest non-empty one).
    fn range_start(&self, prefix: &str) -> String {
        match self.key(prefix) {
            k if k.is_empty() => "\u{0}".into(),
            k => k,
        }
    }

    fn request_error(&self, op: &'static str, source: etcd_client::Error) -> StoreError {
        EtcdError::Request { op, endpoints: self.endpoints.clone(), source }.into()
    }

    /// Run `f`, retrying while etcd is unreachable (for at most [`RETRY_FOR`]).
    async fn retry<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        self.retry_tracked(op, f).await.map(|(v, _)| v)
    }

    /// [`Self::retry`], also saying whether the answer came from a retry: a write whose first try timed out or
    /// lost its member may have been applied, and its retry then finds its own result.
    async fn retry_tracked<T, F, Fut>(&self, op: &'static str, mut f: F) -> Result<(T, bool), StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: std::future::Future<Output = Result<T, etcd_client::Error>>,
    {
        let start = Instant::now();
        let mut delay = Duration::from_millis(50);
        let mut retried = false;
        loop {
            match f(self.client.clone()).await {
                Ok(v) => return Ok((v, retried)),
                Err(e) if matches!(classify(&e), Kind::Unavailable) && start.elapsed() < RETRY_FOR => {
                    tracing::debug!(op, error = %e, "etcd unavailable, retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(1));
                    retried = true;
                }
                Err(e) => return Err(self.request_error(op, e)),
            }
        }
    }

    async fn header_revision(&self) -> Result<Revision, RetryError> {
        // A count-only read of one key is the cheapest request that returns the cluster's revision.
        let mut kv = self.client.kv_client();
        let resp = kv
            .get(self.range_start(""), Some(GetOptions::new().with_count_only()))
            .await
            .map_err(RetryError::Etcd)?;
        resp.header()
            .map(|h| h.revision())
            .ok_or(RetryError::Other(EtcdError::Response { op: "get", what: "no header".into() }))
    }

    /// The revision etcd has compacted to. etcd has no request for it; a watch from revision 1 is cancelled
    /// with the compaction revision when history has been compacted.
    async fn etcd_compacted(&self) -> Result<Revision, StoreError> {
        let mut wc = self.client.watch_client();
        let key = self.key("/\u{0}compaction-probe");
        let mut stream = wc
            .watch(key, Some(WatchOptions::new().with_start_revision(1)))
            .await
            .map_err(|e| self.request_error("watch", e))?;
        let deadline = Duration::from_secs(2);
        let mut compacted = 0;
        // The first response confirms creation; a compacted start revision is reported right after it.
        for _ in 0..2 {
            match tokio::time::timeout(deadline, stream.message()).await {
                Ok(Ok(Some(r))) if r.compact_revision() > 0 => {
                    compacted = r.compact_revision();
                    break;
                }
                Ok(Ok(Some(r))) if r.canceled() => break,
                Ok(Ok(Some(_))) => continue,
                Ok(Ok(None)) | Err(_) => break,
                Ok(Err(e)) => return Err(self.request_error("watch", e)),
            }
        }
        Ok(compacted)
    }

    async fn compacted_error(&self, requested: Revision) -> StoreError {
        match self.etcd_compacted().await {
            Ok(compacted) => StoreError::Compacted { requested, compacted },
            Err(e) => e,
        }
    }

    async fn map_read_error(&self, requested: Revision, e: StoreError) -> StoreError {
        revision_error(e, requested, self).await
    }
}

enum RetryError {
    Etcd(etcd_client::Error),
    Other(EtcdError),
}

/// Turn a backend error that says "compacted" or "future revision" into the store's own error.
async fn revision_error(e: StoreError, requested: Revision, s: &EtcdStore) -> StoreError {
    match &e {
        StoreError::Backend(m) if m.contains("required revision has been compacted") => s.compacted_error(requested).await,
        StoreError::Backend(m) if m.contains("required revision is a future revision") => {
            match s.header_revision().await {
                Ok(current) => StoreError::FutureRevision { requested, current },
                Err(_) => e,
            }
        }
        _ => e,
    }
}

/// The first `Get` response of a transaction's branch.
fn first_get(ops: Vec<TxnOpResponse>) -> Option<etcd_client::GetResponse> {
    ops.into_iter().find_map(|op| match op {
        TxnOpResponse::Get(g) => Some(g),
        _ => None,
    })
}

fn header_rev(h: Option<&etcd_client::ResponseHeader>, op: &'static str) -> Result<Revision, StoreError> {
    h.map(|h| h.revision()).ok_or_else(|| EtcdError::Response { op, what: "no header".into() }.into())
}

#[async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let k = self.key(key);
        let resp = self.retry("get", |c| {
            let k = k.clone();
            async move { c.kv_client().get(k, None).await }
        });
        let resp = resp.await?;
        Ok(resp.kvs().first().map(|kv| to_kv(self.prefix.len(), kv)))
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult, StoreError> {
        let start = match &opts.start_after {
            // The smallest key greater than `after`; never before the prefix (as the SQLite store).
            Some(after) if after.as_str() >= prefix => format!("{}\u{0}", self.key(after)),
            _ => self.range_start(prefix),
        };
        let end = prefix_end(&self.key(prefix)).unwrap_or_else(|| "\u{0}".into());
        let mut get = GetOptions::new().with_range(end);
        if let Some(limit) = opts.limit {
            get = get.with_limit(limit as i64);
        }
        if let Some(rev) = opts.revision {
            get = get.with_revision(rev);
        }
        let requested = opts.revision.unwrap_or_default();
        let resp = self.retry("range", |c| {
            let (start, get) = (start.clone(), get.clone());
            async move { c.kv_client().get(start, Some(get)).await }
        });
        let resp = match resp.await {
            Ok(r) => r,
            Err(e) => return Err(self.map_read_error(requested, e).await),
        };
        let revision = match opts.revision {
            Some(r) => r,
            None => header_rev(resp.header(), "range")?,
        };
        let items = resp.kvs().iter().map(|kv| to_kv(self.prefix.len(), kv)).collect();
        Ok(ListResult { items, revision, more: resp.more() })
    }

    async fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        let start = self.range_start(prefix);
        let end = prefix_end(&self.key(prefix)).unwrap_or_else(|| "\u{0}".into());
        let resp = self.retry("count", |c| {
            let (start, end) = (start.clone(), end.clone());
            async move { c.kv_client().get(start, Some(GetOptions::new().with_range(end).with_count_only())).await }
        });
        Ok(resp.await?.count().max(0) as u64)
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        let k = self.key(key);
        let txn = Txn::new()
            .when([Compare::create_revision(k.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(k.clone(), value.clone(), None)])
            .or_else([TxnOp::get(k.clone(), None)]);
        let resp = self.retry_tracked("create", |c| {
            let txn = txn.clone();
            async move { c.kv_client().txn(txn).await }
        });
        let (resp, retried) = resp.await?;
        if !resp.succeeded() {
            // A retry that finds exactly what it wrote: the first try was applied (the stored objects carry
            // their uid and creation time, so an equal value is this write, not another's).
            let existing = first_get(resp.op_responses()).and_then(|g| g.kvs().first().map(|kv| to_kv(self.prefix.len(), kv)));
            if let Some(kv) = existing.filter(|kv| retried && *kv.value == *value) {
                return Ok(kv);
            }
            return Err(StoreError::AlreadyExists(key.to_string()));
        }
        let rev = header_rev(resp.header(), "create")?;
        Ok(KeyValue { key: key.to_string(), value: value.into(), create_revision: rev, mod_revision: rev })
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue, StoreError> {
        let k = self.key(key);
        let txn = Txn::new()
            .when([Compare::mod_revision(k.clone(), CompareOp::Equal, expected)])
            .and_then([TxnOp::put(k.clone(), value.clone(), Some(PutOptions::new().with_prev_key()))])
            .or_else([TxnOp::get(k.clone(), None)]);
        let resp = self.retry_tracked("update", |c| {
            let txn = txn.clone();
            async move { c.kv_client().txn(txn).await }
        });
        let (resp, retried) = resp.await?;
        let rev = header_rev(resp.header(), "update")?;
        if !resp.succeeded() {
            let current = first_get(resp.op_responses()).and_then(|g| g.kvs().first().map(|kv| to_kv(self.prefix.len(), kv)));
            return match current {
                None => Err(StoreError::NotFound(key.to_string())),
                // As for create: the retry of an update that was applied finds its own value.
                Some(kv) if retried && kv.mod_revision > expected && *kv.value == *value => Ok(kv),
                Some(kv) => Err(StoreError::Conflict { key: key.to_string(), expected, actual: kv.mod_revision }),
            };
        }
        let create_revision = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Put(p) => p.prev_key().map(|kv| kv.create_revision()),
                _ => None,
            })
            .ok_or_else(|| StoreError::from(EtcdError::Response { op: "update", what: "no previous version".into() }))?;
        Ok(KeyValue { key: key.to_string(), value: value.into(), create_revision, mod_revision: rev })
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision), StoreError> {
        let k = self.key(key);
        // Unguarded: the key must exist (create_revision > 0); guarded: it must be at `expected`.
        let guard = match expected {
            Some(e) => Compare::mod_revision(k.clone(), CompareOp::Equal, e),
            None => Compare::create_revision(k.clone(), CompareOp::Greater, 0),
        };
        let txn = Txn::new()
            .when([guard])
            .and_then([TxnOp::delete(k.clone(), Some(DeleteOptions::new().with_prev_key()))])
            .or_else([TxnOp::get(k.clone(), None)]);
        let resp = self.retry("delete", |c| {
            let txn = txn.clone();
            async move { c.kv_client().txn(txn).await }
        });
        let resp = resp.await?;
        let rev = header_rev(resp.header(), "delete")?;
        if !resp.succeeded() {
            return match first_get(resp.op_responses()).and_then(|g| g.kvs().first().map(|kv| kv.mod_revision())) {
                None => Err(StoreError::NotFound(key.to_string())),
                Some(actual) => {
                    Err(StoreError::Conflict { key: key.to_string(), expected: expected.unwrap_or_default(), actual })
                }
            };
        }
        let prev = resp
            .op_responses()
            .into_iter()
            .find_map(|op| match op {
                TxnOpResponse::Delete(d) => d.prev_kvs().first().map(|kv| to_kv(self.prefix.len(), kv)),
                _ => None,
            })
            // Deleted between the compare and the delete cannot happen inside one transaction.
            .ok_or_else(|| StoreError::NotFound(key.to_string()))?;
        Ok((prev, rev))
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        if after > 0 {
            // Fail up front, as the trait asks, if `after` is compacted or in the future: a count-only read at
            // that revision fails exactly then (etcd serves the compaction revision itself, as SQLite does).
            let k = self.range_start(prefix);
            let check = self.retry("watch", |c| {
                let k = k.clone();
                async move { c.kv_client().get(k, Some(GetOptions::new().with_count_only().with_revision(after))).await }
            });
            if let Err(e) = check.await {
                return Err(self.map_read_error(after, e).await);
            }
        }
        let watcher = Watcher {
            client: self.client.clone(),
            prefix_len: self.prefix.len(),
            key: self.range_start(prefix),
            end: prefix_end(&self.key(prefix)).unwrap_or_else(|| "\u{0}".into()),
            last: after,
            stream: None,
            pending: VecDeque::new(),
            endpoints: self.endpoints.clone(),
            done: false,
        };
        Ok(Box::pin(futures::stream::unfold(watcher, |mut w| async move {
            let item = w.next().await?;
            Some((item, w))
        })))
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        let k = self.range_start("");
        let resp = self.retry("get", |c| {
            let k = k.clone();
            async move { c.kv_client().get(k, Some(GetOptions::new().with_count_only())).await }
        });
        header_rev(resp.await?.header(), "get")
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        // Physical: return only once the compaction is applied, so that the next read sees it.
        let resp = self.retry("compact", |c| async move {
            c.kv_client().compact(revision, Some(etcd_client::CompactionOptions::new().with_physical())).await
        });
        match resp.await {
            Ok(_) => Ok(()),
            Err(e) => Err(self.map_read_error(revision, e).await),
        }
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        self.etcd_compacted().await
    }
}

/// One watch: the etcd stream, re-created from the last delivered revision when it breaks.
struct Watcher {
    client: Client,
    prefix_len: usize,
    key: String,
    end: String,
    /// Revision of the last event delivered.
    last: Revision,
    stream: Option<etcd_client::WatchStream>,
    pending: VecDeque<Event>,
    endpoints: String,
    done: bool,
}

impl Watcher {
    async fn open(&mut self) -> Result<(), etcd_client::Error> {
        let opts = WatchOptions::new().with_range(self.end.clone()).with_start_revision(self.last + 1).with_prev_key();
        let stream = self.client.watch_client().watch(self.key.clone(), Some(opts)).await?;
        self.stream = Some(stream);
        Ok(())
    }

    fn convert(&self, ev: &etcd_client::Event) -> Option<Event> {
        let kv = ev.kv()?;
        let prev = ev.prev_kv().map(|p| to_kv(self.prefix_len, p));
        let revision = kv.mod_revision();
        Some(match ev.event_type() {
            EventType::Put => {
                let kind = if kv.create_revision() == kv.mod_revision() { EventKind::Create } else { EventKind::Update };
                let prev = if kind == EventKind::Create { None } else { prev };
                Event { kind, revision, kv: to_kv(self.prefix_len, kv), prev }
            }
            EventType::Delete => {
                // A delete event carries the last version, stamped with the delete's revision.
                let last = prev.clone().unwrap_or_else(|| to_kv(self.prefix_len, kv));
                Event { kind: EventKind::Delete, revision, kv: KeyValue { mod_revision: revision, ..last }, prev }
            }
        })
    }

    /// The next event, or an error that ends the stream, or None when the stream is over.
    async fn next(&mut self) -> Option<Result<Event, StoreError>> {
        let mut broken_since: Option<Instant> = None;
        loop {
            if let Some(ev) = self.pending.pop_front() {
                self.last = ev.revision;
                return Some(Ok(ev));
            }
            if self.done {
                return None;
            }
            if self.stream.is_none() {
                if let Err(e) = self.open().await {
                    if let Some(err) = self.give_up(&mut broken_since, e).await {
                        return Some(Err(err));
                    }
                    continue;
                }
            }
            let Some(stream) = self.stream.as_mut() else { continue };
            match stream.message().await {
                Ok(Some(resp)) => {
                    broken_since = None;
                    if resp.compact_revision() > 0 {
                        self.done = true;
                        return Some(Err(StoreError::Compacted {
                            requested: self.last,
                            compacted: resp.compact_revision(),
                        }));
                    }
                    if resp.canceled() {
                        // Cancelled for another reason (such as losing the leader): watch again.
                        self.stream = None;
                        continue;
                    }
                    let events: Vec<Event> = resp.events().iter().filter_map(|e| self.convert(e)).collect();
                    self.pending.extend(events.into_iter().filter(|e| e.revision > self.last));
                }
                Ok(None) => {
                    self.stream = None;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    self.stream = None;
                    if let Some(err) = self.give_up(&mut broken_since, e).await {
                        return Some(Err(err));
                    }
                }
            }
        }
    }

    /// After a broken stream: wait and let the caller retry, or give up with an error after [`RETRY_FOR`].
    async fn give_up(&mut self, since: &mut Option<Instant>, e: etcd_client::Error) -> Option<StoreError> {
        let start = *since.get_or_insert_with(Instant::now);
        if start.elapsed() >= RETRY_FOR {
            self.done = true;
            return Some(EtcdError::Request { op: "watch", endpoints: self.endpoints.clone(), source: e }.into());
        }
        tracing::debug!(error = %e, last = self.last, "etcd watch broken, resuming");
        tokio::time::sleep(Duration::from_millis(200)).await;
        None
    }
}

#[cfg(test)]
mod classify_tests {
    use super::*;

    #[test]
    fn a_broken_connection_is_retried_other_errors_are_not() {
        let status = |code, msg: &str| etcd_client::Error::GRpcStatus(tonic::Status::new(code, msg));
        for e in [
            status(tonic::Code::Unavailable, "connection refused"),
            status(tonic::Code::Cancelled, "operation was canceled"),
            status(tonic::Code::Unknown, "transport error"),
            status(tonic::Code::Unknown, "etcdserver: no leader"),
        ] {
            assert!(matches!(classify(&e), Kind::Unavailable), "{e}");
        }
        for e in [status(tonic::Code::Unknown, "something else"), status(tonic::Code::InvalidArgument, "transport error")] {
            assert!(matches!(classify(&e), Kind::Other), "{e}");
        }
    }
}
