//! The cluster's source of truth: a revisioned key-value store.
//!
//! Every write gets the next value of one global, strictly increasing revision; that revision is what the API
//! server hands out as `metadata.resourceVersion`. The store keeps the history of every key (an MVCC log, as etcd
//! does) so that watchers can resume from a revision and lists can be paged at a fixed revision. History older
//! than the compaction point is dropped; asking for it is a [`StoreError::Compacted`] error (HTTP 410 on the API).
//!
//! Implementations: [`sqlite::SqliteStore`] (embedded, the default) and [`etcd::EtcdStore`] (an etcd v3 cluster). Every implementation must pass
//! [`conformance::run_all`].

pub mod conformance;
pub mod etcd;
pub mod sqlite;

use std::pin::Pin;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Stream;

/// A store revision. Revision 0 means "before any write".
pub type Revision = i64;

/// One stored version of a key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Arc<[u8]>,
    /// Revision of the write that created the key (unchanged by updates).
    pub create_revision: Revision,
    /// Revision of the write that produced this version.
    pub mod_revision: Revision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    Create,
    Update,
    Delete,
}

/// One change, as a watcher sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// Revision of the change.
    pub revision: Revision,
    /// The new version; for a delete, the last version before it (its `mod_revision` is the delete's revision).
    pub kv: KeyValue,
    /// The version this change replaced (None for creates, and when history no longer has it).
    pub prev: Option<KeyValue>,
}

/// Options for [`Store::list`].
#[derive(Clone, Debug, Default)]
pub struct ListOptions {
    /// Return only keys strictly greater than this one (paging).
    pub start_after: Option<String>,
    /// At most this many items (None: all).
    pub limit: Option<usize>,
    /// Read as of this revision instead of the latest (paging at a fixed revision).
    pub revision: Option<Revision>,
}

#[derive(Clone, Debug)]
pub struct ListResult {
    pub items: Vec<KeyValue>,
    /// The revision the list was read at.
    pub revision: Revision,
    /// True when more items follow the last one returned.
    pub more: bool,
}

/// A stream of watch events, in revision order. It ends with an error if the watcher fell behind the compaction
/// point, and ends without one when the store shuts down.
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event, StoreError>> + Send>>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key {0:?} not found")]
    NotFound(String),
    #[error("key {0:?} already exists")]
    AlreadyExists(String),
    #[error("conflict on {key:?}: expected revision {expected}, current revision is {actual}")]
    Conflict { key: String, expected: Revision, actual: Revision },
    #[error("revision {requested} is too old: history before {compacted} has been compacted")]
    Compacted { requested: Revision, compacted: Revision },
    #[error("revision {requested} is in the future (current revision is {current})")]
    FutureRevision { requested: Revision, current: Revision },
    #[error("storage backend: {0}")]
    Backend(String),
    #[error("the store is shut down")]
    Closed,
}

/// The revisioned store. All methods are safe to call concurrently.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The latest version of `key`.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;

    /// Keys starting with `prefix`, in key order, and the revision they were read at.
    async fn list(&self, prefix: &str, opts: ListOptions) -> Result<ListResult, StoreError>;

    /// Number of live keys under `prefix`.
    async fn count(&self, prefix: &str) -> Result<u64, StoreError>;

    /// Create `key`; fails with `AlreadyExists` if it is present. Returns the new version.
    async fn create(&self, key: &str, value: Vec<u8>) -> Result<KeyValue, StoreError>;

    /// Replace `key` if its current `mod_revision` is `expected` (compare-and-swap). Fails with `NotFound` or
    /// `Conflict`.
    async fn update(&self, key: &str, value: Vec<u8>, expected: Revision) -> Result<KeyValue, StoreError>;

    /// Delete `key`, if given only when its `mod_revision` is `expected`. Returns the deleted version and the
    /// revision of the delete.
    async fn delete(&self, key: &str, expected: Option<Revision>) -> Result<(KeyValue, Revision), StoreError>;

    /// Every change to keys under `prefix` with a revision strictly greater than `after`, in order, then live.
    async fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream, StoreError>;

    /// The latest revision.
    async fn current_revision(&self) -> Result<Revision, StoreError>;

    /// Drop history at and before `revision` (keeping each key's latest version). Watches and paged lists from
    /// before it fail with `Compacted` afterwards.
    async fn compact(&self, revision: Revision) -> Result<(), StoreError>;

    /// The revision history starts after (0 if never compacted).
    async fn compacted_revision(&self) -> Result<Revision, StoreError>;
}

/// The smallest string greater than every string that starts with `prefix` (None: no upper bound).
pub fn prefix_end(prefix: &str) -> Option<String> {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0x7f {
            bytes.push(last + 1);
            // Only ASCII bytes are ever incremented, so this stays valid UTF-8.
            return String::from_utf8(bytes).ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end("/registry/pods/").as_deref(), Some("/registry/pods0"));
        assert_eq!(prefix_end("a").as_deref(), Some("b"));
        assert_eq!(prefix_end(""), None);
    }
}
