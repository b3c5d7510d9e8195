//! The agent's HTTP server for the API server: `/healthz`, `/containerLogs/{ns}/{pod}/{container}`, the
//! WebSocket `/exec/...` and `/attach/...` sessions ([`crate::exec`]), and `/portForward/{ns}/{pod}`
//! ([`crate::portforward`]), and `/stats/summary` ([`crate::stats`]).

use std::future::Future;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::RawQuery;
use axum::routing::{any, get};
use axum::Router;
use serde::Deserialize;

use crate::container::state::{attempt_dir, EXIT};
use crate::Config;

/// The user the API server shows when it calls agents (its client certificate's CN).
pub const API_SERVER_USER: &str = "kube-apiserver-kubelet-client";

/// TLS for the agent's server when the API server is reached over HTTPS with a known CA: a self-signed serving
/// certificate for the node's address and name (as the kubelet makes when it has none), and client certificates
/// required and verified against the cluster CA. None for a plain-HTTP API server (in-process test servers).
pub fn tls_config(config: &Config, kube: &kube::Config) -> anyhow::Result<Option<std::sync::Arc<skiff_tls::rustls::ServerConfig>>> {
    use std::sync::Arc;
    let https = kube.cluster_url.scheme_str() == Some("https");
    let Some(ca) = kube.root_cert.as_ref().filter(|c| https && !c.is_empty()) else {
        if https {
            anyhow::bail!("the kubeconfig names an https API server but no certificate authority to verify it (and its calls here) with");
        }
        tracing::warn!("API server over plain HTTP: the agent's server runs without TLS");
        return Ok(None);
    };
    let (cert, key) = skiff_tls::self_signed(vec![config.node_ip.to_string(), config.node_name.clone()]).map_err(anyhow::Error::msg)?;
    let key = Arc::new(skiff_tls::certified_key(&cert, &key).map_err(anyhow::Error::msg)?);
    let tls = skiff_tls::server_config_der(Arc::new(skiff_tls::StaticCert(key)), ca, true).map_err(anyhow::Error::msg)?;
    Ok(Some(Arc::new(tls)))
}

/// Only the API server may call: its client certificate (verified by the TLS layer against the cluster CA) must
/// name it, or be an administrator's. Some(refusal) otherwise.
fn refuse_caller(req: &axum::extract::Request) -> Option<Response> {
    let cert = req.extensions().get::<skiff_tls::PeerCert>()?;
    let Some((user, groups)) = cert.0.as_deref().and_then(skiff_tls::subject) else {
        return Some(error(StatusCode::UNAUTHORIZED, "Unauthorized".into()));
    };
    if user == API_SERVER_USER || groups.iter().any(|g| g == "system:masters") {
        None
    } else {
        Some(error(StatusCode::FORBIDDEN, format!("Forbidden (user={user}, only the API server may use this endpoint)")))
    }
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    config: Config,
    tls: Option<std::sync::Arc<skiff_tls::rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        .route("/exec/{ns}/{pod}/{container}", any(exec))
        .route("/attach/{ns}/{pod}/{container}", any(attach))
        .route("/portForward/{ns}/{pod}", any(port_forward))
        .route("/stats/summary", get(stats_summary))
        .with_state(config);
    let res = match tls {
        Some(tls) => {
            let handle = move |req: axum::extract::Request| {
                let mut app = app.clone();
                async move {
                    if let Some(resp) = refuse_caller(&req) {
                        return resp;
                    }
                    use tower::Service;
                    match app.call(req).await {
                        Ok(r) => r,
                        Err(never) => match never {},
                    }
                }
            };
            skiff_tls::serve(listener, tls, skiff_tls::Limits::default(), handle, shutdown).await
        }
        None => axum::serve(listener, app).with_graceful_shutdown(shutdown).await,
    };
    if let Err(e) = res {
        tracing::error!(error = %e, "agent server failed");
    }
}

async fn exec(
    State(config): State<Config>,
    Path(target): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    crate::exec::exec(config, target, q.unwrap_or_default(), ws).await
}

async fn attach(
    State(config): State<Config>,
    Path(target): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    crate::exec::attach(config, target, q.unwrap_or_default(), ws).await
}

/// The kubelet's Summary API, cut to what `kubectl top` needs ([`crate::stats`]).
async fn stats_summary(State(config): State<Config>) -> Response {
    let pods = crate::stats::pods_from_log_dirs(&config.log_dir);
    let body = {
        let samples = crate::stats::shared().lock().unwrap_or_else(|e| e.into_inner());
        crate::stats::summary(&config.node_name, &samples, &pods)
    };
    axum::Json(body).into_response()
}

async fn port_forward(State(config): State<Config>, Path(target): Path<(String, String)>, req: axum::extract::Request) -> Response {
    crate::portforward::port_forward(config, target, req).await
}

#[derive(Deserialize, Default)]
struct LogParams {
    #[serde(default)]
    follow: Option<String>,
    #[serde(default, rename = "tailLines")]
    tail_lines: Option<usize>,
    #[serde(default)]
    timestamps: Option<String>,
    #[serde(default)]
    previous: Option<String>,
    #[serde(default, rename = "sinceSeconds")]
    since_seconds: Option<i64>,
    #[serde(default, rename = "sinceTime")]
    since_time: Option<String>,
    #[serde(default, rename = "limitBytes")]
    limit_bytes: Option<usize>,
}

fn truthy(v: &Option<String>) -> bool {
    matches!(v.as_deref(), Some("true") | Some("1") | Some(""))
}

fn error(code: StatusCode, msg: String) -> Response {
    (code, msg).into_response()
}

/// The log file to serve and the state dir of its attempt.
fn locate(config: &Config, ns: &str, pod: &str, container: &str, previous: bool) -> Result<(PathBuf, PathBuf), String> {
    let prefix = format!("{ns}_{pod}_");
    let pod_dir = std::fs::read_dir(&config.log_dir)
        .map_err(|e| format!("reading {}: {e}", config.log_dir.display()))?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .ok_or_else(|| format!("pod {ns}/{pod} has no logs on this node"))?;
    let uid = pod_dir.file_name().to_string_lossy()[prefix.len()..].to_string();
    let mut restarts: Vec<u32> = std::fs::read_dir(pod_dir.path().join(container))
        .map_err(|_| format!("container {container:?} in pod {ns}/{pod} has no logs"))?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".log")?.parse().ok())
        .collect();
    restarts.sort();
    let pick = if previous { restarts.len().checked_sub(2) } else { restarts.len().checked_sub(1) };
    let restart = pick
        .map(|i| restarts[i])
        .ok_or_else(|| format!("previous terminated container {container:?} in pod {pod:?} not found"))?;
    let file = pod_dir.path().join(container).join(format!("{restart}.log"));
    Ok((file, attempt_dir(&config.pod_state_dir(&uid), container, restart)))
}

/// Reads `path` from `offset` to its last whole line: (text, new offset). A file shorter than `offset` was rotated.
async fn read_from(path: &std::path::Path, offset: u64) -> std::io::Result<Option<(String, u64)>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut f = tokio::fs::File::open(path).await?;
    let len = f.metadata().await?.len();
    if len < offset {
        return Ok(None);
    }
    f.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut data = Vec::with_capacity((len - offset) as usize);
    f.read_to_end(&mut data).await?;
    let end = data.iter().rposition(|&b| b == b'\n').map(|i| i + 1).unwrap_or(0);
    Ok(Some((String::from_utf8_lossy(&data[..end]).into_owned(), offset + end as u64)))
}

/// A followed log file: its path, an open handle, the handle's inode and how far it was read.
struct Follow {
    path: PathBuf,
    handle: tokio::fs::File,
    ino: u64,
    offset: u64,
}

impl Follow {
    /// The whole lines written since the last read.
    async fn read_more(&mut self) -> std::io::Result<String> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        self.handle.seek(std::io::SeekFrom::Start(self.offset)).await?;
        let mut data = vec![];
        self.handle.read_to_end(&mut data).await?;
        let end = data.iter().rposition(|&b| b == b'\n').map(|i| i + 1).unwrap_or(0);
        self.offset += end as u64;
        Ok(String::from_utf8_lossy(&data[..end]).into_owned())
    }
}

async fn container_logs(
    State(config): State<Config>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    Query(q): Query<LogParams>,
) -> Response {
    let (file, state_dir) = match locate(&config, &ns, &pod, &container, truthy(&q.previous)) {
        Ok(x) => x,
        Err(msg) => return error(StatusCode::NOT_FOUND, msg),
    };
    let since = match (&q.since_seconds, &q.since_time) {
        // Any int64: a time before chrono's range means "from the start" (subtracting would panic).
        (Some(s), _) => Some(
            chrono::TimeDelta::try_seconds((*s).max(0))
                .and_then(|d| chrono::Utc::now().checked_sub_signed(d))
                .unwrap_or(chrono::DateTime::<chrono::Utc>::MIN_UTC),
        ),
        (None, Some(t)) => match chrono::DateTime::parse_from_rfc3339(t) {
            Ok(t) => Some(t.with_timezone(&chrono::Utc)),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("sinceTime {t:?} is not RFC 3339: {e}")),
        },
        _ => None,
    };
    // Only whole lines are rendered; a trailing partial write waits for the next read.
    let (text, whole) = match read_from(&file, 0).await {
        Ok(Some(x)) => x,
        Ok(None) => (String::new(), 0),
        Err(e) => return error(StatusCode::NOT_FOUND, format!("reading {}: {e}", file.display())),
    };
    let timestamps = truthy(&q.timestamps);
    let text = match since {
        Some(t) => crate::logs::since(&text, t),
        None => text,
    };
    let text = match q.tail_lines {
        Some(n) => crate::logs::tail(&text, n).to_string(),
        None => text,
    };
    let mut left = q.limit_bytes.unwrap_or(usize::MAX);
    let first = crate::logs::render(&text, timestamps);
    let first = crate::logs::limit(&first, left).to_string();
    left -= first.len();
    if !truthy(&q.follow) || left == 0 {
        return (StatusCode::OK, [("content-type", "text/plain")], first).into_response();
    }
    // Follow through an open handle: the last lines stay readable when the pod's log files are removed right after
    // the container exits, and a rotation (the path renamed to `.1`) is seen as the path naming another inode.
    let Ok(handle) = tokio::fs::File::open(&file).await else {
        return (StatusCode::OK, [("content-type", "text/plain")], first).into_response();
    };
    let ino = handle.metadata().await.map(|m| m.ino()).unwrap_or(0);
    let state = (Some(first), Follow { path: file, handle, ino, offset: whole }, state_dir, left);
    let stream = futures::stream::unfold(state, move |(pending, mut f, state_dir, mut left)| async move {
        if let Some(first) = pending {
            return Some((Ok::<_, std::io::Error>(first), (None, f, state_dir, left)));
        }
        if left == 0 {
            return None;
        }
        loop {
            // Read after checking the exit: the monitor writes exit.json only once the log has everything.
            let exited = state_dir.join(EXIT).exists() || !state_dir.exists();
            let mut chunk = f.read_more().await.ok()?;
            let gone = match tokio::fs::metadata(&f.path).await {
                Ok(m) if m.ino() != f.ino => {
                    // Rotated: the old file was read to its end above; go on with the new one from its start.
                    let handle = tokio::fs::File::open(&f.path).await.ok()?;
                    f = Follow { ino: m.ino(), handle, offset: 0, path: f.path };
                    chunk.push_str(&f.read_more().await.ok()?);
                    false
                }
                Ok(_) => false,
                Err(_) => true,
            };
            if let Some(t) = since {
                chunk = crate::logs::since(&chunk, t);
            }
            if !chunk.is_empty() {
                let out = crate::logs::render(&chunk, timestamps);
                let out = crate::logs::limit(&out, left).to_string();
                left -= out.len();
                return Some((Ok(out), (None, f, state_dir, left)));
            }
            if exited || gone {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (StatusCode::OK, [("content-type", "text/plain")], Body::from_stream(stream)).into_response()
}
