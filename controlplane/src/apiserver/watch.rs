//! Watch: a chunked stream of `{"type": ..., "object": ...}` lines.
//!
//! Without a resourceVersion (or with "0") the stream starts with a synthetic ADDED event for every existing
//! object, then continues live from the revision of that list. With a resourceVersion it resumes after it, or
//! ends at once with an ERROR event holding a 410 Expired Status when history has been compacted (kube-apiserver's
//! way). Selectors are applied to both the old and the new
//! version of each change, so that an object that stops matching is reported as DELETED (as upstream does).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::codec::{self, Format, IncludeObject};
use super::errors::ApiError;
use super::read::{list_objects, Filter};
use super::{ApiServer, Req, Target};
use crate::api::resources::ResourceInfo;
use crate::store::{Event, EventKind, Revision, StoreError};

/// One store event, parsed, with its JSON event lines encoded on first use.
pub struct Decoded {
    revision: Revision,
    new: Value,
    old: Option<Value>,
    /// `{"type":T,"object":...}\n` for ADDED, MODIFIED, DELETED.
    lines: [OnceLock<Bytes>; 3],
}

impl Decoded {
    fn line(&self, ty: &'static str) -> Bytes {
        let i = match ty {
            "ADDED" => 0,
            "MODIFIED" => 1,
            _ => 2,
        };
        self.lines[i].get_or_init(|| encode_line(ty, &self.new)).clone()
    }
}

/// Recently decoded events, shared by every watch stream: with many watchers an event is parsed and encoded once,
/// not once per watcher.
pub struct EventCache {
    recent: Mutex<VecDeque<Arc<Decoded>>>,
}

const EVENT_CACHE_SIZE: usize = 1024;

impl EventCache {
    pub fn new() -> Self {
        EventCache { recent: Mutex::new(VecDeque::with_capacity(EVENT_CACHE_SIZE)) }
    }

    fn get(&self, ev: &Event) -> Result<Arc<Decoded>, ApiError> {
        {
            let recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(d) = recent.iter().rev().find(|d| d.revision == ev.revision) {
                return Ok(d.clone());
            }
        }
        let parse = |bytes: &[u8], rev: Revision| -> Result<Value, ApiError> {
            let mut v: Value = serde_json::from_slice(bytes)
                .map_err(|e| ApiError::internal(format!("stored object is not JSON: {e}")))?;
            codec::set_resource_version(&mut v, rev);
            Ok(v)
        };
        let old = match &ev.prev {
            Some(p) if ev.kind == EventKind::Update => Some(parse(&p.value, p.mod_revision)?),
            _ => None,
        };
        let d = Arc::new(Decoded {
            revision: ev.revision,
            new: parse(&ev.kv.value, ev.revision)?,
            old,
            lines: Default::default(),
        });
        let mut recent = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if recent.len() >= EVENT_CACHE_SIZE {
            recent.pop_front();
        }
        recent.push_back(d.clone());
        Ok(d)
    }
}

impl Default for EventCache {
    fn default() -> Self {
        Self::new()
    }
}

/// What one watch stream sends for a store event, given its selectors.
fn classify(filter: &Filter, kind: EventKind, d: &Decoded) -> Option<&'static str> {
    let new_matches = filter.matches(&d.new);
    let old_matches = d.old.as_ref().is_some_and(|o| filter.matches(o));
    match kind {
        EventKind::Create if new_matches => Some("ADDED"),
        EventKind::Delete if new_matches => Some("DELETED"),
        EventKind::Update => match (old_matches, new_matches) {
            (true, true) => Some("MODIFIED"),
            (false, true) => Some("ADDED"),
            (true, false) => Some("DELETED"),
            (false, false) => None,
        },
        _ => None,
    }
}

fn encode_line(ty: &str, obj: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": ty, "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn encode_event(info: &ResourceInfo, ty: &str, obj: Value, format: Format, include: IncludeObject, first: bool) -> Bytes {
    match format {
        Format::Json => encode_line(ty, &obj),
        Format::Table => {
            let rv = obj.pointer("/metadata/resourceVersion").cloned().unwrap_or(Value::Null);
            encode_line(ty, &codec::table(info, std::slice::from_ref(&obj), json!({"resourceVersion": rv}), include, first))
        }
    }
}

fn bookmark(info: &ResourceInfo, rev: Revision) -> Bytes {
    let obj = json!({"kind": info.kind, "apiVersion": info.api_version(), "metadata": {"resourceVersion": rev.to_string()}});
    let mut line = serde_json::to_vec(&json!({"type": "BOOKMARK", "object": obj})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn error_event(e: &ApiError) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": "ERROR", "object": e.status()})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

pub async fn watch(s: Arc<ApiServer>, t: &Target, r: &Req) -> Result<Response, ApiError> {
    let format = codec::negotiate(&r.headers)?;
    let include = IncludeObject::parse(r.q("includeObject"))?;
    let filter = Filter::from_request(t, r)?;
    let bookmarks = r.flag("allowWatchBookmarks");
    let timeout = match r.q("timeoutSeconds") {
        None => s.config.max_watch,
        Some(v) => match v.parse::<u64>() {
            Ok(n) => Duration::from_secs(n).min(s.config.max_watch),
            Err(_) => return Err(ApiError::bad_request(format!("timeoutSeconds={v:?} is not a non-negative integer"))),
        },
    };
    let rv = match r.q("resourceVersion") {
        None | Some("0") => None,
        Some(v) => Some(v.parse::<Revision>().map_err(|_| ApiError::bad_request(format!("invalid resource version: {v:?}")))?),
    };
    let prefix = filter.prefix(t);
    // Initial state for a watch without a resourceVersion.
    let (initial, from) = match rv {
        Some(rv) => (Vec::new(), rv),
        None => {
            let page = list_objects(&s, t, &filter, None, None).await?;
            (page.items, page.revision)
        }
    };
    let ct = match format {
        Format::Json => "application/json",
        Format::Table => codec::TABLE_CONTENT_TYPE,
    };
    let mut events = match s.store.watch(&prefix, from).await {
        Ok(e) => e,
        // As kube-apiserver: the watch starts (200) and its one event is an ERROR with the 410 Status. Clients relist
        // on that event; kube-rs retries a watch refused with a 410 response with the same revision forever.
        Err(StoreError::Compacted { requested, compacted }) => {
            let err = ApiError::expired(format!("too old resource version: {requested} ({compacted})"));
            return Ok((StatusCode::OK, [(header::CONTENT_TYPE, ct), (header::CACHE_CONTROL, "no-cache, private")], Body::from(error_event(&err)))
                .into_response());
        }
        Err(other) => return Err(ApiError::from_store(t.info, "", other)),
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let info = t.info;
    let mut closing = s.closing();
    let metrics = s.metrics.clone();
    let bookmark_every = s.config.bookmark_interval;
    let cache = s.events.clone();
    tokio::spawn(async move {
        metrics.watches.inc();
        let mut first = true;
        let mut last = from;
        'stream: {
            for obj in initial {
                if tx.send(Ok(encode_event(info, "ADDED", obj, format, include, first))).await.is_err() {
                    break 'stream;
                }
                first = false;
            }
            let deadline = tokio::time::sleep(timeout);
            tokio::pin!(deadline);
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + bookmark_every, bookmark_every);
            loop {
                tokio::select! {
                    ev = events.next() => match ev {
                        Some(Ok(ev)) => {
                            last = ev.revision;
                            match cache.get(&ev) {
                                Ok(d) => {
                                    let Some(ty) = classify(&filter, ev.kind, &d) else { continue };
                                    let line = match format {
                                        Format::Json => d.line(ty),
                                        Format::Table => encode_event(info, ty, d.new.clone(), format, include, first),
                                    };
                                    if tx.send(Ok(line)).await.is_err() {
                                        break;
                                    }
                                    first = false;
                                }
                                Err(e) => {
                                    let _ = tx.send(Ok(error_event(&e))).await;
                                    break;
                                }
                            }
                        }
                        Some(Err(e)) => {
                            let err = match e {
                                StoreError::Compacted { requested, compacted } => ApiError::expired(format!("too old resource version: {requested} ({compacted})")),
                                other => ApiError::from_store(info, "", other),
                            };
                            let _ = tx.send(Ok(error_event(&err))).await;
                            break;
                        }
                        None => break,
                    },
                    _ = tick.tick(), if bookmarks => {
                        if tx.send(Ok(bookmark(info, last))).await.is_err() {
                            break;
                        }
                    }
                    _ = &mut deadline => break,
                    _ = closing.changed() => break,
                    _ = tx.closed() => break,
                }
            }
        }
        metrics.watches.dec();
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    Ok((StatusCode::OK, [(header::CONTENT_TYPE, ct), (header::CACHE_CONTROL, "no-cache, private")], body).into_response())
}
