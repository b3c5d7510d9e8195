//! The Kubernetes-compatible API server over a [`Store`].
//!
//! Modules: [`discovery`] (version, discovery documents), [`codec`] (bodies in, JSON/Table out), [`read`] (get,
//! list), [`watch`], [`write`] (create, update, patch and the write subresources), [`delete`] (delete,
//! deletecollection, namespace cleanup; propagationPolicy as finalizers for the garbage collector), [`alloc`] (ClusterIP and NodePort allocation),
//! [`proxy`] (pods/log and pods/exec to the node agent), [`metrics`], [`kubeconfig`].
//!
//! Every request goes through [`ApiServer::handle`]: the path is parsed into a [`Target`] (resource, namespace,
//! name, subresource), the verb picks the handler, and any failure becomes a `v1 Status`.

pub mod alloc;
pub mod codec;
pub mod delete;
pub mod discovery;
pub mod errors;
pub mod kubeconfig;
pub mod kubernetes_service;
pub mod limits;
pub mod metrics;
pub mod priority;
pub mod proxy;
pub mod quota;
pub mod read;
pub mod resource_metrics;
pub mod reviews;
pub mod serviceaccounts;
pub mod storage;
pub mod watch;
pub mod write;

use std::collections::HashMap;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use tokio::net::TcpListener;

use crate::api::resources::{self, ResourceInfo, Subresource};
use crate::store::Store;
use errors::ApiError;
use metrics::{MeteredStore, Metrics};

#[derive(Clone, Debug)]
pub struct Config {
    /// Service ClusterIP range (IPv4 CIDR).
    pub service_cidr: (Ipv4Addr, u8),
    /// NodePort range, inclusive.
    pub node_ports: (u16, u16),
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// How often a watch that asked for bookmarks gets one.
    pub bookmark_interval: Duration,
    /// Longest a watch stays open.
    pub max_watch: Duration,
    /// Compact store history older than this, at this interval.
    pub compaction_interval: Duration,
    /// tolerationSeconds of the not-ready/unreachable tolerations given to pods without them.
    pub default_toleration_seconds: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            service_cidr: (Ipv4Addr::new(10, 96, 0, 0), 12),
            node_ports: (30000, 32767),
            max_body_bytes: 3 * 1024 * 1024,
            bookmark_interval: Duration::from_secs(30),
            max_watch: Duration::from_secs(30 * 60),
            compaction_interval: Duration::from_secs(5 * 60),
            default_toleration_seconds: 300,
        }
    }
}

pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (ip, len) = s.split_once('/').ok_or_else(|| format!("{s:?} is not a CIDR (a.b.c.d/n)"))?;
    let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{s:?}: {e}"))?;
    let len: u8 = len.parse().map_err(|e| format!("{s:?}: {e}"))?;
    if !(8..=30).contains(&len) {
        return Err(format!("{s:?}: prefix length must be between 8 and 30"));
    }
    Ok((ip, len))
}

pub struct ApiServer {
    pub store: Arc<dyn Store>,
    pub config: Config,
    pub metrics: Arc<Metrics>,
    pub alloc: alloc::Allocator,
    pub http: reqwest::Client,
    /// Flips to true on shutdown so that open watches end.
    closing: tokio::sync::watch::Sender<bool>,
    /// Recently decoded store events, shared by the watch streams.
    pub events: Arc<watch::EventCache>,
    /// Authentication and authorization; None only for in-process test servers on plain HTTP.
    pub auth: Option<Arc<crate::auth::Auth>>,
    /// TLS client settings for the node agents' endpoints (logs, exec, attach, port-forward).
    pub kubelet_tls: Option<Arc<rustls::ClientConfig>>,
}

/// What a resource path names.
#[derive(Debug, Clone)]
pub struct Target {
    pub info: &'static ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub sub: Option<Subresource>,
}

/// A request, taken apart once.
pub struct Req {
    /// Who sent it (None on servers without authentication).
    pub user: Option<crate::auth::authn::Identity>,
    pub method: Method,
    pub headers: HeaderMap,
    pub query: HashMap<String, String>,
    pub body: bytes::Bytes,
}

impl Req {
    pub fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str).filter(|v| !v.is_empty())
    }

    pub fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true") | Some("1"))
    }

    pub fn dry_run(&self) -> bool {
        self.q("dryRun") == Some("All")
    }
}

fn parse_target(path: &str) -> Result<Option<Target>, ApiError> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", "v1", rest @ ..] if !rest.is_empty() => ("", "v1", rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return Ok(None),
    };
    let lookup = |plural: &str| {
        resources::find(group, version, plural).ok_or_else(|| ApiError::path_not_found(path))
    };
    let sub = |s: &str, info: &ResourceInfo| -> Result<Subresource, ApiError> {
        Subresource::parse(s).filter(|x| info.has(*x)).ok_or_else(|| ApiError::path_not_found(path))
    };
    let t = match rest {
        ["namespaces", ns, plural, tail @ ..] if resources::find(group, version, plural).is_some_and(|i| i.namespaced) => {
            let info = lookup(plural)?;
            match tail {
                [] => Target { info, namespace: Some(ns.to_string()), name: None, sub: None },
                [name] => Target { info, namespace: Some(ns.to_string()), name: Some(name.to_string()), sub: None },
                [name, s] => Target {
                    info,
                    namespace: Some(ns.to_string()),
                    name: Some(name.to_string()),
                    sub: Some(sub(s, info)?),
                },
                _ => return Err(ApiError::path_not_found(path)),
            }
        }
        [plural] => Target { info: lookup(plural)?, namespace: None, name: None, sub: None },
        [plural, name] => {
            let info = lookup(plural)?;
            if info.namespaced {
                return Err(ApiError::path_not_found(path));
            }
            Target { info, namespace: None, name: Some(name.to_string()), sub: None }
        }
        [plural, name, s] => {
            let info = lookup(plural)?;
            if info.namespaced {
                return Err(ApiError::path_not_found(path));
            }
            Target { info, namespace: None, name: Some(name.to_string()), sub: Some(sub(s, info)?) }
        }
        _ => return Err(ApiError::path_not_found(path)),
    };
    Ok(Some(t))
}

fn verb_of(method: &Method, t: &Target, watch: bool) -> &'static str {
    match (method.as_str(), t.name.is_some()) {
        ("GET", false) if watch => "WATCH",
        ("GET", false) => "LIST",
        ("GET", true) => "GET",
        ("POST", _) => "POST",
        ("PUT", _) => "PUT",
        ("PATCH", _) => "PATCH",
        ("DELETE", false) => "DELETECOLLECTION",
        ("DELETE", true) => "DELETE",
        _ => "OTHER",
    }
}

impl ApiServer {
    pub fn new(store: Arc<dyn Store>, config: Config) -> Arc<Self> {
        Self::with_auth(store, config, None, None)
    }

    /// A server that authenticates and authorizes every request with `auth`, and reaches node agents over TLS
    /// with `kubelet_tls`.
    pub fn with_auth(
        store: Arc<dyn Store>,
        config: Config,
        auth: Option<Arc<crate::auth::Auth>>,
        kubelet_tls: Option<Arc<rustls::ClientConfig>>,
    ) -> Arc<Self> {
        let metrics = Arc::new(Metrics::new());
        let store: Arc<dyn Store> = Arc::new(MeteredStore::new(store, metrics.clone()));
        let alloc = alloc::Allocator::new(config.service_cidr, config.node_ports).with_store(store.clone());
        let (closing, _) = tokio::sync::watch::channel(false);
        Arc::new(ApiServer {
            store,
            config,
            metrics,
            alloc,
            http: {
                let b = reqwest::Client::builder().connect_timeout(Duration::from_secs(5));
                let b = match &kubelet_tls {
                    Some(tls) => b.use_preconfigured_tls((**tls).clone()),
                    None => b,
                };
                b.build().unwrap_or_default()
            },
            closing,
            events: Arc::new(watch::EventCache::new()),
            auth,
            kubelet_tls,
        })
    }

    /// Service account tokens and defaults, when this server has them (servers with authentication).
    pub fn service_accounts(&self) -> Option<&crate::auth::ServiceAccounts> {
        self.auth.as_ref()?.service_accounts.as_ref()
    }

    pub fn closing(&self) -> tokio::sync::watch::Receiver<bool> {
        self.closing.subscribe()
    }

    /// Bring derived state in line with the store at start: bootstrap namespaces, allocator repair, resume the
    /// cleanup of namespaces that were being deleted.
    pub async fn start(self: &Arc<Self>) -> Result<(), ApiError> {
        write::ensure_system_namespaces(self).await?;
        storage::ensure_default_class(self).await?;
        priority::ensure_system_classes(self).await?;
        if self.auth.is_some() {
            write::ensure_bootstrap_policy(self).await?;
        }
        self.alloc.repair(self.store.as_ref()).await.map_err(ApiError::internal)?;
        // Every minute: pick up what other API servers allocated and released, release leaked claims.
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                let Some(s) = me.upgrade() else { return };
                if let Err(e) = s.alloc.repair(s.store.as_ref()).await {
                    tracing::warn!(error = %e, "allocation repair");
                }
            }
        });
        delete::resume_namespace_cleanup(self).await;
        if let Some(sa) = self.service_accounts() {
            serviceaccounts::repair_all(self, sa).await?;
            tokio::spawn(serviceaccounts::repair_loop(Arc::downgrade(self)));
        }
        Ok(())
    }

    /// [`Self::handle`], answering 500 when a handler panics instead of dropping the connection (as
    /// upstream's panic recovery filter does); the panic is logged with its request.
    async fn handle_recovering(self: Arc<Self>, req: Request) -> Response {
        use futures::FutureExt;
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        match std::panic::AssertUnwindSafe(self.handle(req)).catch_unwind().await {
            Ok(resp) => resp,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                tracing::error!(%method, %path, panic = %what, "request handler panicked");
                ApiError::internal(format!("the server failed handling {method} {path}")).into_response()
            }
        }
    }

    async fn handle(self: Arc<Self>, req: Request) -> Response {
        let start = Instant::now();
        let path = req.uri().path().to_string();
        let method = req.method().clone();
        let peer = req.extensions().get::<crate::auth::tls::PeerCert>().and_then(crate::auth::tls::peer_identity);
        let identity = match self.authenticate(&path, peer, req.headers()).await {
            Ok(id) => id,
            Err(resp) => {
                let code = resp.status().as_u16().to_string();
                self.metrics.requests.with_label_values(&["OTHER", "", "", &code]).inc();
                return resp;
            }
        };
        let (resp, verb, resource, subresource) = match parse_target(&path) {
            Ok(Some(t)) => {
                let query: HashMap<String, String> = req
                    .uri()
                    .query()
                    .map(|q| {
                        q.split('&')
                            .filter_map(|kv| {
                                let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                                Some((decode_component(k)?, decode_component(v)?))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                let watch = matches!(query.get("watch").map(String::as_str), Some("true") | Some("1"));
                let verb = verb_of(&method, &t, watch);
                let resource = t.info.plural;
                let subresource = t.sub.map(|s| s.name()).unwrap_or("");
                let resp = self.clone().handle_resource(t, req, query, identity).await;
                (resp, verb, resource, subresource)
            }
            Ok(None) => {
                let verb = if method == Method::GET { "GET" } else { "OTHER" };
                let resp = match self.authorize_path(identity.as_ref(), &method, &path).await {
                    Ok(()) => self.handle_other(&path, req).await,
                    Err(e) => e.into_response(),
                };
                (resp, verb, "", "")
            }
            Err(e) => (e.into_response(), "GET", "", ""),
        };
        let code = resp.status().as_u16().to_string();
        self.metrics.requests.with_label_values(&[verb, resource, subresource, &code]).inc();
        self.metrics.latency.with_label_values(&[verb, resource]).observe(start.elapsed().as_secs_f64());
        tracing::debug!(%method, %path, code = %code, elapsed_us = start.elapsed().as_micros() as u64, "request");
        resp
    }

    async fn handle_other(&self, path: &str, req: Request) -> Response {
        if let Some(r) = discovery::handle(path, req.headers()) {
            return r;
        }
        match path {
            "/.well-known/openid-configuration" | "/openid/v1/jwks" => match self.service_accounts() {
                Some(sa) if path == "/openid/v1/jwks" => {
                    codec::respond(StatusCode::OK, "application/jwk-set+json", &sa.issuer.jwks())
                }
                Some(sa) => codec::json_response(StatusCode::OK, &sa.issuer.openid_configuration()),
                None => ApiError::path_not_found(path).into_response(),
            },
            "/healthz" | "/livez" | "/readyz" => match self.store.current_revision().await {
                Ok(_) => (StatusCode::OK, "ok").into_response(),
                Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("store: {e}")).into_response(),
            },
            "/metrics" => (
                StatusCode::OK,
                [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                self.metrics.render(),
            )
                .into_response(),
            _ => ApiError::path_not_found(path).into_response(),
        }
    }

    /// Who sent the request (None: no authentication configured, or an anonymous request for a public path).
    /// Err: the 401 or 403 to answer.
    async fn authenticate(
        &self,
        path: &str,
        peer: Option<crate::auth::authn::Identity>,
        headers: &HeaderMap,
    ) -> Result<Option<crate::auth::authn::Identity>, Response> {
        use crate::auth::Refusal;
        let Some(auth) = &self.auth else { return Ok(None) };
        let refuse = |r: Refusal| match r {
            Refusal::Unauthenticated(why) => {
                tracing::debug!(path, why, "unauthenticated request");
                ApiError::unauthorized().into_response()
            }
            Refusal::Forbidden(msg) => ApiError::forbidden(msg).into_response(),
        };
        match auth.authenticate(peer.as_ref(), headers).await {
            Ok(Some(id)) => auth.impersonate(id, headers).await.map(Some).map_err(refuse),
            Ok(None) if crate::auth::is_public(path) => Ok(None),
            Ok(None) => Err(ApiError::unauthorized().into_response()),
            Err(r) => Err(refuse(r)),
        }
    }

    async fn authorize_path(&self, id: Option<&crate::auth::authn::Identity>, method: &Method, path: &str) -> Result<(), ApiError> {
        let (Some(auth), Some(id)) = (&self.auth, id) else { return Ok(()) };
        let a = crate::auth::rbac::Attributes { verb: method.as_str().to_ascii_lowercase(), path: path.to_string(), ..Default::default() };
        auth.authorize(id, &a, None).await.map_err(refusal_error)
    }

    async fn authorize_resource(
        &self,
        id: Option<&crate::auth::authn::Identity>,
        t: &Target,
        method: &Method,
        query: &HashMap<String, String>,
        body: Option<(&HeaderMap, &bytes::Bytes)>,
    ) -> Result<(), ApiError> {
        let (Some(auth), Some(id)) = (&self.auth, id) else { return Ok(()) };
        let watch = matches!(query.get("watch").map(String::as_str), Some("true") | Some("1"));
        let verb = match (method.as_str(), t.sub) {
            // Connect subresources need create, whatever the method (upstream, since websockets use GET).
            (_, Some(Subresource::Exec) | Some(Subresource::Attach) | Some(Subresource::PortForward)) => "create",
            _ => match verb_of(method, t, watch) {
                "WATCH" => "watch",
                "LIST" => "list",
                "GET" => "get",
                "POST" => "create",
                "PUT" => "update",
                "PATCH" => "patch",
                "DELETE" => "delete",
                "DELETECOLLECTION" => "deletecollection",
                _ => "unknown",
            },
        };
        let a = crate::auth::rbac::Attributes {
            verb: verb.into(),
            resource_request: true,
            api_group: t.info.group.into(),
            resource: t.info.plural.into(),
            subresource: t.sub.map(|s| s.name().to_string()).unwrap_or_default(),
            // A namespace object's own namespace is its name (upstream's attributes for namespaces/<name>).
            namespace: match (&t.namespace, t.info.plural, &t.name) {
                (Some(ns), _, _) => ns.clone(),
                (None, "namespaces", Some(n)) => n.clone(),
                _ => String::new(),
            },
            name: t.name.clone().unwrap_or_default(),
            path: String::new(),
        };
        // Only the node authorizer reads bodies (the name and node of what a node creates).
        let parsed = match (id.node_name(), verb, body) {
            (Some(_), "create", Some((h, b))) => codec::decode_object(h, b).ok(),
            _ => None,
        };
        auth.authorize(id, &a, parsed.as_ref()).await.map_err(refusal_error)
    }

    async fn handle_resource(
        self: Arc<Self>,
        t: Target,
        req: Request,
        query: HashMap<String, String>,
        identity: Option<crate::auth::authn::Identity>,
    ) -> Response {
        // Exec, attach and port-forward are upgraded connections: proxied before the body is read.
        if matches!(t.sub, Some(Subresource::Exec) | Some(Subresource::Attach) | Some(Subresource::PortForward)) {
            if let Err(e) = self.authorize_resource(identity.as_ref(), &t, req.method(), &query, None).await {
                return e.into_response();
            }
            return proxy::upgrade(&self, &t, req).await.unwrap_or_else(IntoResponse::into_response);
        }
        let (parts, body) = req.into_parts();
        // A body that trickles in (a slow client holding a connection) is cut off after a minute.
        let body = match tokio::time::timeout(Duration::from_secs(60), read_body(body, self.config.max_body_bytes)).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return e.into_response(),
            Err(_) => return ApiError::new(408, "Timeout", "the request body did not arrive within 60 s").into_response(),
        };
        if let Err(e) = self.authorize_resource(identity.as_ref(), &t, &parts.method, &query, Some((&parts.headers, &body))).await {
            return e.into_response();
        }
        let r = Req { user: identity, method: parts.method, headers: parts.headers, query, body };
        self.dispatch(t, r).await.unwrap_or_else(IntoResponse::into_response)
    }

    async fn dispatch(self: Arc<Self>, t: Target, r: Req) -> Result<Response, ApiError> {
        use Subresource as S;
        let m = r.method.clone();
        if t.info.is_metrics() {
            return resource_metrics::dispatch(&self, &t, &r).await;
        }
        if t.info.is_review() {
            return match (m.as_str(), t.name.is_some()) {
                ("POST", false) => reviews::create(&self, &t, &r).await,
                _ => Err(ApiError::method_not_allowed(&format!("{m} {}", t.info.qualified()))),
            };
        }
        match (m.as_str(), t.name.is_some(), t.sub) {
            ("GET", false, None) if r.flag("watch") => watch::watch(self, &t, &r).await,
            ("GET", false, None) => read::list(&self, &t, &r).await,
            ("GET", true, None) | ("GET", true, Some(S::Status)) | ("GET", true, Some(S::Approval)) => read::get(&self, &t, &r).await,
            ("GET", true, Some(S::Scale)) => write::get_scale(&self, &t).await,
            ("GET", true, Some(S::Log)) => proxy::logs(&self, &t, &r).await,
            ("POST", false, None) => write::create(&self, &t, &r).await,
            ("POST", true, Some(S::Binding)) => write::bind(&self, &t, &r).await,
            ("POST", true, Some(S::Eviction)) => delete::evict(&self, &t, &r).await,
            ("POST", true, Some(S::Token)) => serviceaccounts::token_request(&self, &t, &r).await,
            ("PUT", true, None) | ("PUT", true, Some(S::Status)) | ("PUT", true, Some(S::Approval)) => write::update(&self, &t, &r).await,
            ("PUT", true, Some(S::Scale)) => write::update_scale(&self, &t, &r).await,
            ("PATCH", true, None) | ("PATCH", true, Some(S::Status)) | ("PATCH", true, Some(S::Approval)) => write::patch(&self, &t, &r).await,
            ("PATCH", true, Some(S::Scale)) => write::patch_scale(&self, &t, &r).await,
            ("DELETE", true, None) => delete::delete(&self, &t, &r).await,
            ("DELETE", false, None) => delete::delete_collection(&self, &t, &r).await,
            _ => Err(ApiError::method_not_allowed(&format!(
                "{} {}{}",
                m,
                t.info.qualified(),
                t.sub.map(|s| format!("/{}", s.name())).unwrap_or_default()
            ))),
        }
    }
}

fn refusal_error(r: crate::auth::Refusal) -> ApiError {
    match r {
        crate::auth::Refusal::Unauthenticated(_) => ApiError::unauthorized(),
        crate::auth::Refusal::Forbidden(msg) => ApiError::forbidden(msg),
    }
}

/// Read a request body of at most `max` bytes. A larger one is still read (and dropped) up to a bound before
/// the 413 goes out, so that the client gets the answer instead of a reset connection.
async fn read_body(body: Body, max: usize) -> Result<bytes::Bytes, ApiError> {
    use http_body_util::BodyExt;
    const DRAIN_LIMIT: usize = 64 * 1024 * 1024;
    let mut body = body;
    let mut buf = bytes::BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| ApiError::bad_request(format!("reading the request body: {e}")))?;
        if let Ok(data) = frame.into_data() {
            seen += data.len();
            if seen <= max {
                buf.extend_from_slice(&data);
            } else if seen > DRAIN_LIMIT {
                break;
            }
        }
    }
    if seen > max {
        return Err(ApiError::too_large(max));
    }
    Ok(buf.freeze())
}

/// Percent-decode one query component ('+' is a space). None if it is malformed.
fn decode_component(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Serve the API on `listener` until `shutdown` resolves; open watches are ended then.
pub async fn serve(
    listener: TcpListener,
    server: Arc<ApiServer>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = Router::new()
        .fallback(|State(s): State<Arc<ApiServer>>, req: Request<Body>| async move { s.handle_recovering(req).await })
        .with_state(server.clone());
    let closing = server.closing.clone();
    let compactor = tokio::spawn(delete::compaction_loop(server.clone()));
    let res = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            let _ = closing.send(true);
        })
        .await;
    compactor.abort();
    res
}

/// Serve the API over TLS on `listener` (client certificates, tokens, RBAC: the server needs `auth`) until
/// `shutdown` resolves; open watches are ended then.
pub async fn serve_tls(
    listener: TcpListener,
    server: Arc<ApiServer>,
    tls: Arc<rustls::ServerConfig>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_tls_with(listener, server, tls, crate::auth::tls::Limits::default(), shutdown).await
}

/// [`serve_tls`] with other bounds on clients.
pub async fn serve_tls_with(
    listener: TcpListener,
    server: Arc<ApiServer>,
    tls: Arc<rustls::ServerConfig>,
    limits: crate::auth::tls::Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let closing = server.closing.clone();
    let compactor = tokio::spawn(delete::compaction_loop(server.clone()));
    let s = server.clone();
    let handle = move |req: Request| {
        let s = s.clone();
        async move { s.handle_recovering(req).await }
    };
    let res = crate::auth::tls::serve(listener, tls, limits, handle, async move {
        shutdown.await;
        let _ = closing.send(true);
    })
    .await;
    compactor.abort();
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("/api/v1/namespaces/default/pods/web/status").unwrap().unwrap();
        assert_eq!((t.info.plural, t.namespace.as_deref(), t.name.as_deref()), ("pods", Some("default"), Some("web")));
        assert_eq!(t.sub, Some(Subresource::Status));
        let t = parse_target("/api/v1/namespaces/default").unwrap().unwrap();
        assert_eq!((t.info.plural, t.name.as_deref()), ("namespaces", Some("default")));
        let t = parse_target("/api/v1/namespaces/kube-system/status").unwrap().unwrap();
        assert_eq!((t.info.plural, t.sub), ("namespaces", Some(Subresource::Status)));
        let t = parse_target("/apis/apps/v1/deployments").unwrap().unwrap();
        assert_eq!((t.info.plural, t.namespace.as_deref()), ("deployments", None));
        assert!(parse_target("/apis/apps/v1/namespaces/x/widgets").is_err());
        assert!(parse_target("/api/v1/pods/x").is_err());
        assert!(parse_target("/api").unwrap().is_none());
        assert!(parse_target("/api/v1/namespaces/d/pods/x/bogus").is_err());
    }

    #[test]
    fn query_decoding() {
        assert_eq!(decode_component("app%3Dweb%2Ctier+in+%28a%29").as_deref(), Some("app=web,tier in (a)"));
        assert_eq!(decode_component("%zz"), None);
    }
}
