//! The embedded store: SQLite in WAL mode, with group commit.
//!
//! Layout: `log` holds every version of every key (revision = SQLite rowid, so revisions are strictly
//! increasing); `current` maps each live key to the revision of its latest version; `meta` holds the current
//! and the compacted revision. A delete is a `log` row of kind 2 whose value is the deleted version.
//!
//! Durability: `synchronous=FULL`, so a commit is on disk (the WAL is fsynced) before any writer hears "ok";
//! that survives `kill -9` and a power cut. To get throughput anyway, every write goes through one writer
//! thread that takes all the writes waiting at that moment and commits them in one transaction with one fsync
//! (group commit). Each write in a batch still gets its own revision and its own success or failure. Watchers
//! hear about a batch only after it is durable.
//!
//! Reads use a small pool of read connections; WAL lets them run beside the writer on a consistent snapshot.

use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread;

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use tokio::sync::{broadcast, oneshot};

use super::{
    prefix_end, Event, EventKind, KeyValue, ListOptions, ListResult, Revision, Store, StoreError, WatchStream,
};

const KIND_CREATE: i64 = 0;
const KIND_UPDATE: i64 = 1;
const KIND_DELETE: i64 = 2;

/// Most writes committed in one transaction.
const MAX_BATCH: usize = 512;
/// Batches of events buffered for watchers before a slow watcher has to re-read history from disk.
const WATCH_BUFFER: usize = 4096;
/// History rows read per query when a watcher catches up from disk.
const HISTORY_PAGE: usize = 1000;

/// How hard a commit is pushed to disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: every acknowledged write survives a power cut (default).
    #[default]
    Full,
    /// `synchronous=NORMAL`: survives a crash of the process, may lose the last commits on a power cut.
    Normal,
}

#[derive(Clone, Debug)]
pub struct SqliteConfig {
    pub path: PathBuf,
    pub durability: Durability,
    /// Whether the writer batches waiting writes into one transaction (group commit).
    pub group_commit: bool,
}

impl SqliteConfig {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteConfig { path: path.into(), durability: Durability::Full, group_commit: true }
    }
}

enum WriteOp {
    Create { key: String, value: Vec<u8> },
    Update { key: String, value: Vec<u8>, expected: Revision },
    Delete { key: String, expected: Option<Revision> },
    Compact { revision: Revision },
}

enum WriteOk {
    Put(KeyValue),
    Deleted(KeyValue, Revision),
    Compacted,
}

struct WriteReq {
    op: WriteOp,
    reply: oneshot::Sender<Result<WriteOk, StoreError>>,
}

struct Shared {
    path: PathBuf,
    readers: Mutex<Vec<Connection>>,
}

type EventSender = broadcast::Sender<Arc<Vec<Event>>>;

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    shared: Arc<Shared>,
    /// Dropped on close, with the writer's clone, so that watch streams end.
    events: Mutex<Option<EventSender>>,
    writer: Mutex<Option<std_mpsc::Sender<WriteReq>>>,
    writer_thread: Mutex<Option<thread::JoinHandle<()>>>,
}

fn backend(e: impl std::fmt::Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn open_conn(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let conn = Connection::open(path).map_err(backend)?;
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous={sync}; PRAGMA busy_timeout=10000; \
         PRAGMA foreign_keys=OFF; PRAGMA cache_size=-8000;"
    ))
    .map_err(backend)?;
    Ok(conn)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS log (
    rev INTEGER PRIMARY KEY,
    key TEXT NOT NULL,
    kind INTEGER NOT NULL,
    create_rev INTEGER NOT NULL,
    prev_rev INTEGER,
    value BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS log_key_rev ON log(key, rev);
CREATE TABLE IF NOT EXISTS current (key TEXT PRIMARY KEY, rev INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT OR IGNORE INTO meta(name, value) VALUES ('rev', 0), ('compacted', 0);
";

impl SqliteStore {
    /// Open (or create) the database at `config.path` and start the writer thread.
    pub fn open(config: SqliteConfig) -> Result<Self, StoreError> {
        if let Some(dir) = config.path.parent() {
            if !dir.as_os_str().is_empty() {
                std::fs::create_dir_all(dir).map_err(backend)?;
            }
        }
        let conn = open_conn(&config.path, config.durability)?;
        conn.execute_batch(SCHEMA).map_err(backend)?;
        // The rowid must never be reused after a compaction deleted the newest rows; the meta 'rev' row is the
        // source of truth for the next revision.
        let rev: Revision =
            conn.query_row("SELECT value FROM meta WHERE name='rev'", [], |r| r.get(0)).map_err(backend)?;
        let (events, _) = broadcast::channel(WATCH_BUFFER);
        let shared = Arc::new(Shared { path: config.path.clone(), readers: Mutex::new(Vec::new()) });
        let (tx, rx) = std_mpsc::channel();
        let writer_events = events.clone();
        let group = config.group_commit;
        let handle = thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer_loop(conn, rev, rx, writer_events, group))
            .map_err(backend)?;
        Ok(SqliteStore {
            shared,
            events: Mutex::new(Some(events)),
            writer: Mutex::new(Some(tx)),
            writer_thread: Mutex::new(Some(handle)),
        })
    }

    /// Stop accepting writes and wait for the writer to finish the ones it has.
    pub fn close(&self) {
        let tx = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(tx);
        let events = self.events.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(events);
        let handle = self.writer_thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    async fn write(&self, op: WriteOp) -> Result<WriteOk, StoreError> {
        let (reply, rx) = oneshot::channel();
        {
            let guard = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            let tx = guard.as_ref().ok_or(StoreError::Closed)?;
            tx.send(WriteReq { op, reply }).map_err(|_| StoreError::Closed)?;
        }
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.with_reader(f)).await.map_err(backend)?
    }
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    fn with_reader<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let conn = self.readers.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let mut conn = match conn {
            Some(c) => c,
            None => {
                let c = open_conn(&self.path, Durability::Full)?;
                c.execute_batch("PRAGMA query_only=ON;").map_err(backend)?;
                c
            }
        };
        let out = f(&mut conn);
        let mut pool = self.readers.lock().unwrap_or_else(|e| e.into_inner());
        if pool.len() < 16 {
            pool.push(conn);
        }
        out
    }
}

fn meta(conn: &Connection, name: &str) -> Result<Revision, StoreError> {
    conn.query_row("SELECT value FROM meta WHERE name=?1", [name], |r| r.get(0)).map_err(backend)
}

fn row_kv(key: String, create_rev: i64, rev: i64, value: Vec<u8>) -> KeyValue {
    KeyValue { key, value: value.into(), create_revision: create_rev, mod_revision: rev }
}

fn get_current(conn: &Connection, key: &str) -> Result<Option<KeyValue>, StoreError> {
    conn.prepare_cached(
        "SELECT l.create_rev, l.rev, l.value FROM current c JOIN log l ON l.rev = c.rev WHERE c.key = ?1",
    )
    .and_then(|mut st| {
        st.query_row([key], |r| Ok(row_kv(key.to_string(), r.get(0)?, r.get(1)?, r.get(2)?))).optional()
    })
    .map_err(backend)
}

fn list_at(conn: &mut Connection, prefix: &str, opts: &ListOptions) -> Result<ListResult, StoreError> {
    let tx = conn.transaction().map_err(backend)?;
    let current = meta(&tx, "rev")?;
    let compacted = meta(&tx, "compacted")?;
    let revision = match opts.revision {
        Some(r) if r > current => return Err(StoreError::FutureRevision { requested: r, current }),
        Some(r) if r < compacted => return Err(StoreError::Compacted { requested: r, compacted }),
        Some(r) if r > 0 => r,
        _ => current,
    };
    let start = match &opts.start_after {
        // The smallest key after `s` is `s` followed by a NUL byte; keys never contain NUL.
        Some(s) if s.as_str() >= prefix => format!("{s}\u{0}"),
        _ => prefix.to_string(),
    };
    let end = prefix_end(prefix);
    let fetch = opts.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX).saturating_add(1)).unwrap_or(-1);
    let mut items = Vec::new();
    {
        let sql = if revision == current {
            "SELECT c.key, l.create_rev, l.rev, l.value FROM current c JOIN log l ON l.rev = c.rev \
             WHERE c.key >= ?1 AND (?2 IS NULL OR c.key < ?2) ORDER BY c.key LIMIT ?3"
        } else {
            "SELECT l.key, l.create_rev, l.rev, l.value FROM log l \
             WHERE l.rev = (SELECT max(rev) FROM log l2 WHERE l2.key = l.key AND l2.rev <= ?4) AND l.kind != 2 \
             AND l.key >= ?1 AND (?2 IS NULL OR l.key < ?2) ORDER BY l.key LIMIT ?3"
        };
        let mut st = tx.prepare_cached(sql).map_err(backend)?;
        let mut rows = if revision == current {
            st.query(params![start, end, fetch])
        } else {
            st.query(params![start, end, fetch, revision])
        }
        .map_err(backend)?;
        while let Some(r) = rows.next().map_err(backend)? {
            let key: String = r.get(0).map_err(backend)?;
            if !key.starts_with(prefix) {
                break;
            }
            items.push(row_kv(key, r.get(1).map_err(backend)?, r.get(2).map_err(backend)?, r.get(3).map_err(backend)?));
        }
    }
    tx.finish().map_err(backend)?;
    let more = matches!(opts.limit, Some(l) if items.len() > l);
    if let Some(l) = opts.limit {
        items.truncate(l);
    }
    Ok(ListResult { items, revision, more })
}

/// Changes to keys under `prefix` with a revision after `after`, at most `limit` of them, and the revision the
/// read saw. A page shorter than `limit` means every change up to that revision has been returned.
fn history(
    conn: &mut Connection,
    prefix: &str,
    after: Revision,
    limit: usize,
) -> Result<(Vec<Event>, Revision), StoreError> {
    let tx = conn.transaction().map_err(backend)?;
    let current = meta(&tx, "rev")?;
    let compacted = meta(&tx, "compacted")?;
    if after < compacted {
        return Err(StoreError::Compacted { requested: after, compacted });
    }
    let end = prefix_end(prefix);
    let mut events = Vec::new();
    {
        let mut st = tx
            .prepare_cached(
                "SELECT l.rev, l.key, l.kind, l.create_rev, l.value, p.rev, p.create_rev, p.value \
                 FROM log l LEFT JOIN log p ON p.rev = l.prev_rev \
                 WHERE l.rev > ?1 AND l.rev <= ?2 AND l.key >= ?3 AND (?4 IS NULL OR l.key < ?4) \
                 ORDER BY l.rev LIMIT ?5",
            )
            .map_err(backend)?;
        let mut rows = st.query(params![after, current, prefix, end, limit as i64]).map_err(backend)?;
        while let Some(r) = rows.next().map_err(backend)? {
            let key: String = r.get(1).map_err(backend)?;
            if !key.starts_with(prefix) {
                continue;
            }
            let rev: i64 = r.get(0).map_err(backend)?;
            let kind = match r.get::<_, i64>(2).map_err(backend)? {
                KIND_CREATE => EventKind::Create,
                KIND_UPDATE => EventKind::Update,
                _ => EventKind::Delete,
            };
            let prev = match r.get::<_, Option<i64>>(5).map_err(backend)? {
                Some(prev_rev) => Some(row_kv(
                    key.clone(),
                    r.get(6).map_err(backend)?,
                    prev_rev,
                    r.get(7).map_err(backend)?,
                )),
                None => None,
            };
            let kv = row_kv(key, r.get(3).map_err(backend)?, rev, r.get(4).map_err(backend)?);
            events.push(Event { kind, revision: rev, kv, prev });
        }
    }
    tx.finish().map_err(backend)?;
    Ok((events, current))
}

/// Send every change under `prefix` after `*last` from disk, advancing `*last`. False when the receiver is gone.
async fn catch_up(
    shared: &Arc<Shared>,
    prefix: &str,
    last: &mut Revision,
    tx: &tokio::sync::mpsc::Sender<Result<Event, StoreError>>,
) -> bool {
    loop {
        let (s, p, from) = (shared.clone(), prefix.to_string(), *last);
        let res = tokio::task::spawn_blocking(move || s.with_reader(|c| history(c, &p, from, HISTORY_PAGE)))
            .await
            .map_err(backend)
            .and_then(|r| r);
        match res {
            Ok((events, current)) => {
                let complete = events.len() < HISTORY_PAGE;
                for ev in events {
                    *last = ev.revision;
                    if tx.send(Ok(ev)).await.is_err() {
                        return false;
                    }
                }
                if complete {
                    *last = (*last).max(current);
                    return true;
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return false;
            }
        }
    }
}

fn writer_loop(
    mut conn: Connection,
    mut rev: Revision,
    rx: std_mpsc::Receiver<WriteReq>,
    events_tx: EventSender,
    group: bool,
) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        if group {
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(req) => batch.push(req),
                    Err(_) => break,
                }
            }
        }
        let start_rev = rev;
        match apply_batch(&mut conn, &mut rev, &batch) {
            Ok((results, events)) => {
                if !events.is_empty() {
                    // No receivers is fine: nobody is watching.
                    let _ = events_tx.send(Arc::new(events));
                }
                for (req, res) in batch.into_iter().zip(results) {
                    let _ = req.reply.send(res);
                }
            }
            Err(e) => {
                rev = start_rev;
                tracing::error!(error = %e, "store batch failed and was rolled back");
                for req in batch {
                    let _ = req.reply.send(Err(StoreError::Backend(e.to_string())));
                }
            }
        }
    }
}

type BatchResult = (Vec<Result<WriteOk, StoreError>>, Vec<Event>);

fn apply_batch(conn: &mut Connection, rev: &mut Revision, batch: &[WriteReq]) -> Result<BatchResult, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate).map_err(backend)?;
    let mut results = Vec::with_capacity(batch.len());
    let mut events = Vec::new();
    for req in batch {
        let res = match &req.op {
            WriteOp::Create { key, value } => match get_current(&tx, key)? {
                Some(_) => Err(StoreError::AlreadyExists(key.clone())),
                None => {
                    *rev += 1;
                    insert_log(&tx, *rev, key, KIND_CREATE, *rev, None, value)?;
                    set_current(&tx, key, *rev)?;
                    let kv = row_kv(key.clone(), *rev, *rev, value.clone());
                    events.push(Event { kind: EventKind::Create, revision: *rev, kv: kv.clone(), prev: None });
                    Ok(WriteOk::Put(kv))
                }
            },
            WriteOp::Update { key, value, expected } => match get_current(&tx, key)? {
                None => Err(StoreError::NotFound(key.clone())),
                Some(cur) if cur.mod_revision != *expected => {
                    Err(StoreError::Conflict { key: key.clone(), expected: *expected, actual: cur.mod_revision })
                }
                Some(cur) => {
                    *rev += 1;
                    insert_log(&tx, *rev, key, KIND_UPDATE, cur.create_revision, Some(cur.mod_revision), value)?;
                    set_current(&tx, key, *rev)?;
                    let kv = row_kv(key.clone(), cur.create_revision, *rev, value.clone());
                    events.push(Event { kind: EventKind::Update, revision: *rev, kv: kv.clone(), prev: Some(cur) });
                    Ok(WriteOk::Put(kv))
                }
            },
            WriteOp::Delete { key, expected } => match get_current(&tx, key)? {
                None => Err(StoreError::NotFound(key.clone())),
                Some(cur) if expected.is_some_and(|e| e != cur.mod_revision) => Err(StoreError::Conflict {
                    key: key.clone(),
                    expected: expected.unwrap_or_default(),
                    actual: cur.mod_revision,
                }),
                Some(cur) => {
                    *rev += 1;
                    insert_log(&tx, *rev, key, KIND_DELETE, cur.create_revision, Some(cur.mod_revision), &cur.value)?;
                    tx.prepare_cached("DELETE FROM current WHERE key = ?1")
                        .and_then(|mut st| st.execute([key]))
                        .map_err(backend)?;
                    let kv = KeyValue { mod_revision: *rev, ..cur.clone() };
                    events.push(Event { kind: EventKind::Delete, revision: *rev, kv, prev: Some(cur.clone()) });
                    Ok(WriteOk::Deleted(cur, *rev))
                }
            },
            WriteOp::Compact { revision } => compact(&tx, *revision, *rev),
        };
        results.push(res);
    }
    tx.prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'rev'")
        .and_then(|mut st| st.execute([*rev]))
        .map_err(backend)?;
    tx.commit().map_err(backend)?;
    Ok((results, events))
}

fn insert_log(
    tx: &Connection,
    rev: Revision,
    key: &str,
    kind: i64,
    create_rev: Revision,
    prev_rev: Option<Revision>,
    value: &[u8],
) -> Result<(), StoreError> {
    tx.prepare_cached("INSERT INTO log(rev, key, kind, create_rev, prev_rev, value) VALUES (?1, ?2, ?3, ?4, ?5, ?6)")
        .and_then(|mut st| st.execute(params![rev, key, kind, create_rev, prev_rev, value]))
        .map_err(backend)?;
    Ok(())
}

fn set_current(tx: &Connection, key: &str, rev: Revision) -> Result<(), StoreError> {
    tx.prepare_cached("INSERT INTO current(key, rev) VALUES (?1, ?2) ON CONFLICT(key) DO UPDATE SET rev = ?2")
        .and_then(|mut st| st.execute(params![key, rev]))
        .map_err(backend)?;
    Ok(())
}

fn compact(tx: &Connection, revision: Revision, current: Revision) -> Result<WriteOk, StoreError> {
    let compacted = meta(tx, "compacted")?;
    if revision > current {
        return Err(StoreError::FutureRevision { requested: revision, current });
    }
    if revision <= compacted {
        return Err(StoreError::Compacted { requested: revision, compacted });
    }
    // Keep, for every key, its newest version at or before `revision` unless that is a delete (etcd's rule), so
    // that lists at any revision after the compaction point still see every key.
    tx.execute(
        "DELETE FROM log WHERE rev <= ?1 AND (kind = 2 OR rev < \
         (SELECT max(l2.rev) FROM log l2 WHERE l2.key = log.key AND l2.rev <= ?1))",
        [revision],
    )
    .map_err(backend)?;
    tx.execute("UPDATE meta SET value = ?1 WHERE name = 'compacted'", [revision]).map_err(backend)?;
    Ok(WriteOk::Compacted)
}

fn put_kv(ok: WriteOk) -> Result<KeyValue, StoreError> {
    match ok {
        WriteOk::Put(kv) => Ok(kv),
        _ => Err(StoreError::Backend("writer answered with the wrong kind of result".into())),
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let key = key.to_string();
        self.read(move |c| get_current(c, &key)).await
    }

    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult, StoreError> {
        let prefix = prefix.to_string();
        self.read(move |c| list_at(c, &prefix, &opts)).await
    }

    async fn count(&self, prefix: &str) -> Result<u64, StoreError> {
        let prefix = prefix.to_string();
        self.read(move |c| {
            let end = prefix_end(&prefix);
            let n: i64 = c
                .query_row(
                    "SELECT count(*) FROM current WHERE key >= ?1 AND (?2 IS NULL OR key < ?2)",
                    params![prefix, end],
                    |r| r.get(0),
                )
                .map_err(backend)?;
            Ok(n as u64)
        })
        .await
    }

    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError> {
        put_kv(self.write(WriteOp::Create { key: key.to_string(), value }).await?)
    }

    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue, StoreError> {
        put_kv(self.write(WriteOp::Update { key: key.to_string(), value, expected }).await?)
    }

    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision), StoreError> {
        match self.write(WriteOp::Delete { key: key.to_string(), expected }).await? {
            WriteOk::Deleted(kv, rev) => Ok((kv, rev)),
            _ => Err(StoreError::Backend("writer answered with the wrong kind of result".into())),
        }
    }

    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError> {
        // Subscribe before reading history so that nothing committed in between is missed; events seen twice are
        // dropped by revision.
        let mut live = match self.events.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            Some(events) => events.subscribe(),
            None => return Err(StoreError::Closed),
        };
        // Fail fast on a compacted or future revision, before the stream starts.
        let (compacted, current) = self
            .read(|c| {
                let tx = c.transaction().map_err(backend)?;
                Ok((meta(&tx, "compacted")?, meta(&tx, "rev")?))
            })
            .await?;
        if after < compacted {
            return Err(StoreError::Compacted { requested: after, compacted });
        }
        if after > current {
            return Err(StoreError::FutureRevision { requested: after, current });
        }
        let shared = self.shared.clone();
        let prefix = prefix.to_string();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Event, StoreError>>(256);
        tokio::spawn(async move {
            let mut last = after;
            if !catch_up(&shared, &prefix, &mut last, &tx).await {
                return;
            }
            loop {
                match live.recv().await {
                    Ok(batch) => {
                        for ev in batch.iter() {
                            if ev.revision <= last {
                                continue;
                            }
                            last = ev.revision;
                            if ev.kv.key.starts_with(&prefix) && tx.send(Ok(ev.clone())).await.is_err() {
                                return;
                            }
                        }
                    }
                    // Fell behind the in-memory buffer: re-read what was missed from disk.
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        if !catch_up(&shared, &prefix, &mut last, &tx).await {
                            return;
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        });
        Ok(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx)))
    }

    async fn current_revision(&self) -> Result<Revision, StoreError> {
        self.read(|c| meta(c, "rev")).await
    }

    async fn compact(&self, revision: Revision) -> Result<(), StoreError> {
        self.write(WriteOp::Compact { revision }).await.map(|_| ())
    }

    async fn compacted_revision(&self) -> Result<Revision, StoreError> {
        self.read(|c| meta(c, "compacted")).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance() {
        let dir = tempfile::tempdir().unwrap();
        let counter = std::sync::atomic::AtomicUsize::new(0);
        crate::store::conformance::run_all(|| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let path = dir.path().join(format!("store-{n}.db"));
            async move { SqliteStore::open(SqliteConfig::new(path)).unwrap() }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn conformance_without_group_commit() {
        let dir = tempfile::tempdir().unwrap();
        let counter = std::sync::atomic::AtomicUsize::new(0);
        crate::store::conformance::run_all(|| {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let path = dir.path().join(format!("store-{n}.db"));
            let cfg = SqliteConfig { group_commit: false, durability: Durability::Normal, ..SqliteConfig::new(path) };
            async move { SqliteStore::open(cfg).unwrap() }
        })
        .await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn state_and_revision_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.db");
        let (rev, compacted) = {
            let s = SqliteStore::open(SqliteConfig::new(&path)).unwrap();
            let a = s.create("/a", b"1".to_vec()).await.unwrap();
            s.update("/a", b"2".to_vec(), a.mod_revision).await.unwrap();
            s.create("/b", b"x".to_vec()).await.unwrap();
            let (_, rev) = s.delete("/b", None).await.unwrap();
            s.compact(rev).await.unwrap();
            (rev, rev)
        };
        let s = SqliteStore::open(SqliteConfig::new(&path)).unwrap();
        assert_eq!(s.current_revision().await.unwrap(), rev);
        assert_eq!(s.compacted_revision().await.unwrap(), compacted);
        assert_eq!(&*s.get("/a").await.unwrap().unwrap().value, b"2");
        assert!(s.get("/b").await.unwrap().is_none());
        // The compaction removed the newest log row (the delete); revisions must still not go back.
        let c = s.create("/c", vec![]).await.unwrap();
        assert_eq!(c.mod_revision, rev + 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn watch_ends_when_store_closes() {
        let dir = tempfile::tempdir().unwrap();
        let s = SqliteStore::open(SqliteConfig::new(dir.path().join("s.db"))).unwrap();
        let mut w = s.watch("/", 0).await.unwrap();
        s.close();
        let end = tokio::time::timeout(std::time::Duration::from_secs(5), futures::StreamExt::next(&mut w)).await;
        assert!(matches!(end, Ok(None)), "{end:?}");
        assert!(matches!(s.create("/x", vec![]).await, Err(StoreError::Closed)));
    }
}
