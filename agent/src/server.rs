//! The agent's HTTP server for the API server: `/healthz`, `/containerLogs/{ns}/{pod}/{container}`, and the
//! WebSocket `/exec/...` and `/attach/...` sessions ([`crate::exec`]).

use std::future::Future;
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

pub async fn serve(listener: tokio::net::TcpListener, config: Config, shutdown: impl Future<Output = ()> + Send + 'static) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/containerLogs/{ns}/{pod}/{container}", get(container_logs))
        .route("/exec/{ns}/{pod}/{container}", any(exec))
        .route("/attach/{ns}/{pod}/{container}", any(attach))
        .with_state(config);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown).await {
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

async fn container_logs(
    State(config): State<Config>,
    Path((ns, pod, container)): Path<(String, String, String)>,
    Query(q): Query<LogParams>,
) -> Response {
    let (file, state_dir) = match locate(&config, &ns, &pod, &container, truthy(&q.previous)) {
        Ok(x) => x,
        Err(msg) => return error(StatusCode::NOT_FOUND, msg),
    };
    let content = match tokio::fs::read(&file).await {
        Ok(c) => c,
        Err(e) => return error(StatusCode::NOT_FOUND, format!("reading {}: {e}", file.display())),
    };
    let timestamps = truthy(&q.timestamps);
    // Only whole lines are rendered; a trailing partial write waits for the next read.
    let whole = content.iter().rposition(|&b| b == b'\n').map(|i| i + 1).unwrap_or(0);
    let text = String::from_utf8_lossy(&content[..whole]).into_owned();
    let text = match q.tail_lines {
        Some(n) => crate::logs::tail(&text, n).to_string(),
        None => text,
    };
    let first = crate::logs::render(&text, timestamps);
    if !truthy(&q.follow) {
        return (StatusCode::OK, [("content-type", "text/plain")], first).into_response();
    }
    let stream = futures::stream::unfold((Some(first), whole as u64, file, state_dir), move |(pending, mut offset, file, state_dir)| async move {
        if let Some(first) = pending {
            return Some((Ok::<_, std::io::Error>(first), (None, offset, file, state_dir)));
        }
        loop {
            let exited = state_dir.join(EXIT).exists();
            let data = tokio::fs::read(&file).await.ok()?;
            let end = data.iter().rposition(|&b| b == b'\n').map(|i| i + 1).unwrap_or(0) as u64;
            if end > offset {
                let chunk = String::from_utf8_lossy(&data[offset as usize..end as usize]).into_owned();
                offset = end;
                return Some((Ok(crate::logs::render(&chunk, timestamps)), (None, offset, file, state_dir)));
            }
            if exited {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    (StatusCode::OK, [("content-type", "text/plain")], Body::from_stream(stream)).into_response()
}
