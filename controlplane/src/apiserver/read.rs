//! get and list.

use std::sync::Arc;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde_json::{json, Value};

use super::codec::{self, Format, IncludeObject};
use super::errors::ApiError;
use super::{ApiServer, Req, Target};
use crate::api::selectors::{FieldSelector, LabelSelector};
use crate::store::{KeyValue, ListOptions, Revision};

/// Load one object and its store version.
pub async fn load(s: &ApiServer, t: &Target, name: &str) -> Result<(Value, KeyValue), ApiError> {
    let key = t.info.key(t.namespace.as_deref(), name);
    match s.store.get(&key).await.map_err(|e| ApiError::from_store(t.info, name, e))? {
        Some(kv) => Ok((codec::object_from_kv(&kv)?, kv)),
        None => Err(ApiError::not_found(t.info, name)),
    }
}

pub async fn get(s: &Arc<ApiServer>, t: &Target, r: &Req) -> Result<Response, ApiError> {
    let format = codec::negotiate(&r.headers)?;
    let include = IncludeObject::parse(r.q("includeObject"))?;
    let name = t.name.as_deref().unwrap_or_default();
    let (obj, _) = load(s, t, name).await?;
    Ok(codec::object_response(StatusCode::OK, t.info, &obj, format, include))
}

/// Label and field selectors of a list or watch request.
pub struct Filter {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
}

impl Filter {
    pub fn from_request(t: &Target, r: &Req) -> Result<Self, ApiError> {
        let labels = LabelSelector::parse(r.q("labelSelector").unwrap_or("")).map_err(|e| ApiError::bad_request(e.to_string()))?;
        let fields = FieldSelector::parse(r.q("fieldSelector").unwrap_or(""), t.info.group, t.info.plural)
            .map_err(|e| ApiError::bad_request(e.to_string()))?;
        Ok(Filter { labels, fields })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.labels.matches(obj) && self.fields.matches(obj)
    }

    /// The store prefix to read: narrowed to one namespace when the path or a field selector names it.
    pub fn prefix(&self, t: &Target) -> String {
        let ns = t.namespace.as_deref().or_else(|| self.fields.required("metadata.namespace"));
        t.info.prefix(ns)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Continue {
    rv: Revision,
    start: String,
}

fn decode_continue(token: &str) -> Result<Continue, ApiError> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .map_err(|_| ApiError::bad_request("invalid continue token"))?;
    serde_json::from_slice(&bytes).map_err(|_| ApiError::bad_request("invalid continue token"))
}

fn encode_continue(c: &Continue) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(c).unwrap_or_default())
}

pub struct Page {
    pub items: Vec<Value>,
    pub revision: Revision,
    pub continue_token: Option<String>,
}

/// Visit matching objects, `limit` at most, continuing a previous page when asked. Objects are parsed one at
/// a time and handed to `visit`, so a large list is never held as parsed JSON all at once. Returns the revision
/// read at and the continue token, if more objects follow.
pub async fn list_visit(
    s: &ApiServer,
    t: &Target,
    filter: &Filter,
    limit: Option<usize>,
    cont: Option<&str>,
    mut visit: impl FnMut(Value) -> Result<(), ApiError>,
) -> Result<(Revision, Option<String>), ApiError> {
    let prefix = filter.prefix(t);
    let (mut revision, mut start) = match cont {
        Some(c) => {
            let c = decode_continue(c)?;
            // The token is not signed: it may only continue within this list's own keys.
            if !c.start.starts_with(&prefix) {
                return Err(ApiError::bad_request("continue key is not valid: it is not a key of this list"));
            }
            (Some(c.rv), Some(c.start))
        }
        None => (None, None),
    };
    let mut matched = 0;
    // The store is read in chunks (until `limit` objects matched, with selectors).
    let chunk = Some(limit.map_or(1000, |l| l.max(100)));
    loop {
        let res = s
            .store
            .list(&prefix, ListOptions { start_after: start.clone(), limit: chunk, revision })
            .await
            .map_err(|e| match e {
                crate::store::StoreError::Compacted { .. } => ApiError::expired(
                    "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                ),
                e => ApiError::from_store(t.info, "", e),
            })?;
        revision = Some(res.revision);
        let n = res.items.len();
        for (i, kv) in res.items.iter().enumerate() {
            let obj = codec::object_from_kv(kv)?;
            if filter.matches(&obj) {
                visit(obj)?;
                matched += 1;
                if limit.is_some_and(|l| matched >= l) {
                    let more = res.more || i + 1 < n;
                    let token = more.then(|| encode_continue(&Continue { rv: res.revision, start: kv.key.clone() }));
                    return Ok((res.revision, token));
                }
            }
        }
        if !res.more {
            return Ok((res.revision, None));
        }
        start = res.items.last().map(|kv| kv.key.clone());
    }
}

/// Read matching objects into memory (for internal callers and small results).
pub async fn list_objects(
    s: &ApiServer,
    t: &Target,
    filter: &Filter,
    limit: Option<usize>,
    cont: Option<&str>,
) -> Result<Page, ApiError> {
    let mut items = Vec::new();
    let (revision, continue_token) = list_visit(s, t, filter, limit, cont, |o| {
        items.push(o);
        Ok(())
    })
    .await?;
    Ok(Page { items, revision, continue_token })
}

pub async fn list(s: &Arc<ApiServer>, t: &Target, r: &Req) -> Result<Response, ApiError> {
    let format = codec::negotiate(&r.headers)?;
    let include = IncludeObject::parse(r.q("includeObject"))?;
    let filter = Filter::from_request(t, r)?;
    let limit = match r.q("limit") {
        None => None,
        Some(l) => match l.parse::<i64>() {
            Ok(n) if n > 0 => Some(n as usize),
            Ok(_) => None,
            Err(_) => return Err(ApiError::bad_request(format!("limit={l:?} is not an integer"))),
        },
    };
    // The list is written out item by item; the list metadata (known at the end) goes last.
    let now = chrono::Utc::now();
    let (head, items_key) = match format {
        Format::Json => (json!({"kind": t.info.list_kind(), "apiVersion": t.info.api_version()}), "items"),
        Format::Table => (
            json!({"kind": "Table", "apiVersion": "meta.k8s.io/v1", "columnDefinitions": crate::api::tables::column_definitions(t.info.group, t.info.plural)}),
            "rows",
        ),
    };
    let mut buf = serde_json::to_vec(&head).map_err(|e| ApiError::internal(e.to_string()))?;
    buf.pop(); // the closing brace
    buf.extend_from_slice(format!(",\"{items_key}\":[").as_bytes());
    let mut first = true;
    let (revision, token) = list_visit(s, t, &filter, limit, r.q("continue"), |obj| {
        if !first {
            buf.push(b',');
        }
        first = false;
        let item = match format {
            Format::Json => serde_json::to_writer(&mut buf, &obj),
            Format::Table => serde_json::to_writer(&mut buf, &codec::table_row(t.info, &obj, include, now)),
        };
        item.map_err(|e| ApiError::internal(e.to_string()))
    })
    .await?;
    let mut meta = json!({"resourceVersion": revision.to_string()});
    if let Some(c) = &token {
        meta["continue"] = json!(c);
    }
    buf.extend_from_slice(b"],\"metadata\":");
    serde_json::to_writer(&mut buf, &meta).map_err(|e| ApiError::internal(e.to_string()))?;
    buf.push(b'}');
    let ct = match format {
        Format::Json => "application/json",
        Format::Table => codec::TABLE_CONTENT_TYPE,
    };
    Ok((StatusCode::OK, [(axum::http::header::CONTENT_TYPE, ct)], buf).into_response())
}
