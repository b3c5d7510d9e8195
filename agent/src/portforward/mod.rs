//! `kubectl port-forward`, as the API server forwards it: `/portForward/{ns}/{pod}` upgraded to SPDY/3.1
//! ([`session`], framing in [`spdy`]) over one of two transports:
//!
//! - WebSocket with subprotocol `SPDY/3.1+portforward.k8s.io`: the SPDY bytes travel in binary messages whose
//!   boundaries mean nothing (kubectl 1.31+ tries this first: PortForwardWebsockets);
//! - plain HTTP/1.1 `Upgrade: SPDY/3.1` with `X-Stream-Protocol-Version: portforward.k8s.io` (kubectl's fallback).
//!
//! and, without SPDY, the WebSocket channel protocol `v4.channel.k8s.io` with the ports in the query
//! ([`channels`]; the Python client's).
//!
//! Connections go to `localhost:<port>` inside the pod's network namespace ([`dial`]).

pub mod channels;
pub mod dial;
pub mod session;
pub mod spdy;

use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Request};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::container::state;
use crate::sandbox::netns;
use crate::Config;
use dial::{Dialer, PodNetwork};
use session::PodRef;

/// The port-forward protocol (X-Stream-Protocol-Version).
pub const PROTOCOL: &str = "portforward.k8s.io";
/// The WebSocket subprotocol of SPDY tunneled in WebSocket.
pub const TUNNEL_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
const SPDY: &str = "SPDY/3.1";

/// The pod a request is for, and how to reach its ports.
pub struct Target {
    pub pod: PodRef,
    pub network: PodNetwork,
}

/// Finds the pod `ns/name` among this node's pods (the one with a running container: a pod recreated under the
/// same name has another uid) and opens its network namespace.
pub fn locate(config: &Config, ns: &str, name: &str) -> Result<Target, (StatusCode, String)> {
    let prefix = format!("{ns}_{name}_");
    let mut found = false;
    for e in std::fs::read_dir(&config.log_dir).into_iter().flatten().flatten() {
        let dir = e.file_name().to_string_lossy().into_owned();
        let Some(uid) = dir.strip_prefix(&prefix) else { continue };
        found = true;
        let attempts = state::scan(&config.pod_state_dir(uid));
        let running = attempts.values().filter_map(|l| l.last()).find_map(|a| a.started.as_ref().filter(|_| a.exited.is_none()));
        let Some(started) = running else { continue };
        let pod = PodRef { name: format!("{ns}/{name}"), uid: uid.to_string() };
        let err = |what: String, e: io::Error| (StatusCode::INTERNAL_SERVER_ERROR, format!("{what}: {e}"));
        let path = config.netns_dir().join(uid);
        let netns = if netns::is_mounted(&path) {
            Some(File::open(&path).map_err(|e| err(format!("opening {}", path.display()), e))?)
        } else {
            // No pod namespace: a hostNetwork pod. Checked, not assumed: its container must share the agent's
            // namespace, else connect where the container is.
            let theirs = format!("/proc/{}/ns/net", started.pid);
            let same = |a: &std::fs::Metadata, b: &std::fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
            let t = std::fs::metadata(&theirs).map_err(|e| err(format!("reading {theirs}"), e))?;
            let o = std::fs::metadata("/proc/self/ns/net").map_err(|e| err("reading /proc/self/ns/net".into(), e))?;
            if same(&t, &o) {
                None
            } else {
                Some(File::open(&theirs).map_err(|e| err(format!("opening {theirs}"), e))?)
            }
        };
        return Ok(Target { pod, network: PodNetwork { netns: netns.map(Arc::new) } });
    }
    if found {
        Err((StatusCode::BAD_REQUEST, format!("pod {ns}/{name} is not running")))
    } else {
        Err((StatusCode::NOT_FOUND, format!("pod {ns}/{name} not found on this node")))
    }
}

fn header_has(headers: &HeaderMap, name: header::HeaderName, want: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim().eq_ignore_ascii_case(want))
}

/// `/portForward/{ns}/{pod}`: picks the transport from the upgrade the client asks for.
pub async fn port_forward(config: Config, (ns, name): (String, String), req: Request) -> Response {
    let headers = req.headers();
    let websocket = header_has(headers, header::UPGRADE, "websocket");
    let spdy = header_has(headers, header::UPGRADE, SPDY);
    if !websocket && !spdy {
        return (
            StatusCode::BAD_REQUEST,
            format!("port-forward needs a connection upgrade: WebSocket ({TUNNEL_PROTOCOL}) or {SPDY}"),
        )
            .into_response();
    }
    let target = match locate(&config, &ns, &name) {
        Ok(t) => t,
        Err((code, msg)) => return (code, msg).into_response(),
    };
    if websocket {
        tunneled(req, target).await
    } else {
        plain_spdy(req, target)
    }
}

async fn tunneled(req: Request, target: Target) -> Response {
    let query = req.uri().query().unwrap_or_default().to_string();
    let (mut parts, _) = req.into_parts();
    let ws = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(ws) => ws,
        Err(rejection) => return rejection.into_response(),
    };
    let requested: Vec<String> = ws.requested_protocols().filter_map(|p| p.to_str().ok()).map(String::from).collect();
    if requested.iter().any(|p| p == TUNNEL_PROTOCOL) {
        let ws = ws.protocols([TUNNEL_PROTOCOL]);
        return ws.on_upgrade(move |socket| run("websocket", socket_transport(socket), target));
    }
    // The channel protocol: asked for by name, or (as the kubelet allows) by asking for no subprotocol.
    if requested.is_empty() || requested.iter().any(|p| p == channels::PROTOCOL) {
        let ports = match channels::parse_ports(&query) {
            Ok(p) => p,
            Err(msg) => return (StatusCode::BAD_REQUEST, msg).into_response(),
        };
        let ws = ws.protocols([channels::PROTOCOL]);
        return ws.on_upgrade(move |socket| async move {
            let Target { pod, network } = target;
            tracing::info!(pod = %pod.name, transport = "channels", ?ports, "port-forward session");
            channels::serve(socket, ports, Arc::new(network), pod.clone()).await;
            tracing::info!(pod = %pod.name, transport = "channels", "port-forward session ended");
        });
    }
    // A 400 makes kubectl fall back to plain SPDY.
    (
        StatusCode::BAD_REQUEST,
        format!("unsupported WebSocket subprotocols {requested:?}; this agent speaks {TUNNEL_PROTOCOL} and {}", channels::PROTOCOL),
    )
        .into_response()
}

fn plain_spdy(mut req: Request, target: Target) -> Response {
    let versions: Vec<String> = req
        .headers()
        .get_all("x-stream-protocol-version")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect();
    if !versions.iter().any(|v| v == PROTOCOL) {
        return (
            StatusCode::FORBIDDEN,
            format!("unable to upgrade: unable to negotiate protocol: client supports {versions:?}, server supports [{PROTOCOL}]"),
        )
            .into_response();
    }
    if !header_has(req.headers(), header::CONNECTION, "upgrade") {
        return (StatusCode::BAD_REQUEST, "unable to upgrade: missing upgrade headers in request").into_response();
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let (r, w) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
                run("spdy", (read_chunks(r), write_bytes(w)), target).await;
            }
            Err(e) => tracing::debug!(error = %e, "port-forward upgrade failed"),
        }
    });
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, header::HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, header::HeaderValue::from_static(SPDY));
    h.insert("x-stream-protocol-version", header::HeaderValue::from_static(PROTOCOL));
    resp
}

type Input = std::pin::Pin<Box<dyn Stream<Item = io::Result<Vec<u8>>> + Send>>;
type Output = std::pin::Pin<Box<dyn Sink<Vec<u8>, Error = io::Error> + Send>>;

async fn run(transport: &'static str, (input, output): (Input, Output), target: Target) {
    let Target { pod, network } = target;
    let span = tracing::info_span!("port-forward", pod = %pod.name, transport);
    let dialer: Arc<dyn Dialer> = Arc::new(network);
    tracing::info!(parent: &span, "port-forward session");
    match session::serve(input, output, dialer, pod).await {
        Ok(()) => tracing::info!(parent: &span, "port-forward session ended"),
        // A client killed without a goodbye (kubectl stopped by a signal) is routine.
        Err(e @ session::SessionError::Read(_)) => tracing::info!(parent: &span, error = %e, "port-forward session ended"),
        Err(e) => tracing::warn!(parent: &span, error = %e, "port-forward session closed"),
    }
}

/// The bytes of a byte stream, as they arrive.
pub(crate) fn read_chunks(r: impl AsyncRead + Unpin + Send + 'static) -> Input {
    Box::pin(futures::stream::unfold(Some(r), |r| async move {
        let mut r = r?;
        let mut buf = vec![0u8; 64 * 1024];
        match r.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(buf), Some(r)))
            }
            Err(e) => Some((Err(e), None)),
        }
    }))
}

pub(crate) fn write_bytes(w: impl AsyncWrite + Unpin + Send + 'static) -> Output {
    Box::pin(futures::sink::unfold(w, |mut w, bytes: Vec<u8>| async move {
        w.write_all(&bytes).await?;
        Ok::<_, io::Error>(w)
    }))
}

/// A WebSocket as a byte stream: binary messages in, binary messages out (ends at a close frame).
fn socket_transport(socket: WebSocket) -> (Input, Output) {
    let (sink, stream) = socket.split();
    let input = futures::stream::unfold(Some(stream), |s| async move {
        let mut s = s?;
        loop {
            return match s.next().await {
                None | Some(Ok(Message::Close(_))) => None,
                Some(Ok(Message::Binary(b))) => Some((Ok(b.to_vec()), Some(s))),
                Some(Ok(Message::Text(_))) => {
                    Some((Err(io::Error::new(io::ErrorKind::InvalidData, "text message in a SPDY tunnel")), None))
                }
                // Pings are answered by the WebSocket layer.
                Some(Ok(_)) => continue,
                Some(Err(e)) => Some((Err(io::Error::other(e)), None)),
            };
        }
    });
    let output = sink.sink_map_err(io::Error::other).with(|b: Vec<u8>| async move { Ok::<_, io::Error>(Message::Binary(b.into())) });
    (Box::pin(input), Box::pin(output))
}
