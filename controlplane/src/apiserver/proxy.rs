//! pods/log, pods/exec, pods/attach and pods/portforward, forwarded to the node agent of the pod's node.
//!
//! Contract with the agent (kubelet-like paths, see docs/api-agent-contract.md): the agent listens on
//! `Node.status.daemonEndpoints.kubeletEndpoint.Port` (10250 by default) at the node's InternalIP and serves
//! `GET /containerLogs/{ns}/{pod}/{container}?follow=&tailLines=&sinceSeconds=&timestamps=&previous=&limitBytes=`
//! (text/plain, chunked when following) and the upgraded `/exec|/attach/{ns}/{pod}/{container}?command=..&stdin=..`
//! and `/portForward/{ns}/{pod}` endpoints. Upgraded connections (WebSocket or SPDY) are passed through byte for
//! byte after the agent answers 101.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt;
use hyper_util::rt::TokioIo;
use serde_json::Value;

use super::errors::ApiError;
use super::read::load;
use super::{ApiServer, Req, Target};
use crate::api::resources::{self, Subresource};

/// The agent's address for a pod: (host:port, pod object).
async fn node_endpoint(s: &ApiServer, t: &Target) -> Result<(String, Value), ApiError> {
    let name = t.name.as_deref().unwrap_or_default();
    let pod_target = Target { sub: None, ..t.clone() };
    let (pod, _) = load(s, &pod_target, name).await?;
    let node_name = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()).ok_or_else(|| {
        ApiError::bad_request(format!("pod {name} does not have a host assigned"))
    })?;
    let nodes = resources::find("", "v1", "nodes").ok_or_else(|| ApiError::internal("no nodes resource"))?;
    let node_t = Target { info: nodes, namespace: None, name: Some(node_name.to_string()), sub: None };
    let (node, _) = load(s, &node_t, node_name).await?;
    let addr = super::resource_metrics::agent_address(&node)
        .ok_or_else(|| ApiError::internal(format!("node {node_name} has no address to reach its agent at")))?;
    Ok((addr, pod))
}

/// The container a request is for: the `container` parameter, or the pod's only container.
fn container_of(pod: &Value, requested: Option<&str>, name: &str) -> Result<String, ApiError> {
    let names: Vec<&str> = ["containers", "initContainers", "ephemeralContainers"]
        .iter()
        .filter_map(|k| pod.pointer(&format!("/spec/{k}")).and_then(Value::as_array))
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .collect();
    match requested {
        Some(c) if names.contains(&c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!("container {c} is not valid for pod {name}"))),
        None => match pod.pointer("/spec/containers").and_then(Value::as_array).map(Vec::as_slice) {
            Some([only]) => Ok(only["name"].as_str().unwrap_or_default().to_string()),
            _ => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}, choose one of: [{}]",
                names.join(" ")
            ))),
        },
    }
}

pub async fn logs(s: &Arc<ApiServer>, t: &Target, r: &Req) -> Result<Response, ApiError> {
    let name = t.name.as_deref().unwrap_or_default();
    let ns = t.namespace.as_deref().unwrap_or("default");
    let (addr, pod) = node_endpoint(s, t).await?;
    let container = container_of(&pod, r.q("container"), name)?;
    let mut q = Vec::new();
    for k in ["follow", "tailLines", "sinceSeconds", "sinceTime", "timestamps", "previous", "limitBytes"] {
        if let Some(v) = r.q(k) {
            q.push(format!("{k}={}", urlencode(v)));
        }
    }
    let scheme = if s.kubelet_tls.is_some() { "https" } else { "http" };
    let url = format!("{scheme}://{addr}/containerLogs/{ns}/{name}/{container}?{}", q.join("&"));
    let resp = s
        .http
        .get(&url)
        .send()
        .await
        .map_err(|e| ApiError::internal(format!("could not reach the node agent at {addr}: {e}")))?;
    let status = StatusCode::from_u16(resp.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        return Err(ApiError::new(status.as_u16(), "BadRequest", text.trim().to_string()));
    }
    let stream = resp.bytes_stream().map_err(std::io::Error::other);
    Ok((status, [(header::CONTENT_TYPE, "text/plain")], Body::from_stream(stream)).into_response())
}

/// A connection to an agent, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

fn urlencode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// exec / attach / portforward: forward the upgrade request to the agent and splice the two connections.
pub async fn upgrade(s: &Arc<ApiServer>, t: &Target, mut req: Request) -> Result<Response, ApiError> {
    let name = t.name.clone().unwrap_or_default();
    let ns = t.namespace.clone().unwrap_or_else(|| "default".into());
    let (addr, pod) = node_endpoint(s, t).await?;
    let query = req.uri().query().unwrap_or("").to_string();
    let requested = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("container="))
        .map(String::from);
    let path = match t.sub {
        Some(Subresource::PortForward) => format!("/portForward/{ns}/{name}"),
        Some(Subresource::Attach) => {
            let c = container_of(&pod, requested.as_deref(), &name)?;
            format!("/attach/{ns}/{name}/{c}")
        }
        _ => {
            let c = container_of(&pod, requested.as_deref(), &name)?;
            format!("/exec/{ns}/{name}/{c}")
        }
    };
    let tcp = tokio::net::TcpStream::connect(&addr)
        .await
        .map_err(|e| ApiError::internal(format!("could not reach the node agent at {addr}: {e}")))?;
    let stream: Box<dyn Io> = match &s.kubelet_tls {
        Some(tls) => {
            let host = addr.rsplit_once(':').map(|(h, _)| h).unwrap_or(&addr).trim_matches(['[', ']']);
            let name = rustls::pki_types::ServerName::try_from(host.to_string())
                .map_err(|e| ApiError::internal(format!("node agent address {host}: {e}")))?;
            let connector = tokio_rustls::TlsConnector::from(tls.clone());
            Box::new(
                connector
                    .connect(name, tcp)
                    .await
                    .map_err(|e| ApiError::internal(format!("TLS to the node agent at {addr}: {e}")))?,
            )
        }
        None => Box::new(tcp),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| ApiError::internal(format!("node agent handshake: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut out = hyper::Request::builder().method(req.method()).uri(format!("{path}?{query}"));
    for (k, v) in req.headers() {
        if k != header::HOST && k != header::AUTHORIZATION {
            out = out.header(k, v);
        }
    }
    out = out.header(header::HOST, addr.as_str());
    let out = out.body(http_body_util::Empty::<bytes::Bytes>::new()).map_err(|e| ApiError::internal(e.to_string()))?;
    let mut backend = sender.send_request(out).await.map_err(|e| ApiError::internal(format!("node agent request: {e}")))?;
    if backend.status() != hyper::StatusCode::SWITCHING_PROTOCOLS {
        let code = backend.status().as_u16();
        let body = http_body_util::BodyExt::collect(backend.into_body()).await.map(|b| b.to_bytes()).unwrap_or_default();
        return Err(ApiError::new(code, "BadRequest", String::from_utf8_lossy(&body).trim().to_string()));
    }
    let mut resp = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
    for (k, v) in backend.headers() {
        resp = resp.header(k, v);
    }
    let client_upgrade = hyper::upgrade::on(&mut req);
    let backend_upgrade = hyper::upgrade::on(&mut backend);
    tokio::spawn(async move {
        match (client_upgrade.await, backend_upgrade.await) {
            (Ok(c), Ok(b)) => {
                let mut c = TokioIo::new(c);
                let mut b = TokioIo::new(b);
                let _ = tokio::io::copy_bidirectional(&mut c, &mut b).await;
            }
            (c, b) => tracing::debug!(client = c.is_ok(), agent = b.is_ok(), "upgrade failed"),
        }
    });
    resp.body(Body::empty()).map_err(|e| ApiError::internal(e.to_string())).map(|mut r| {
        r.headers_mut().entry(header::CONNECTION).or_insert(HeaderValue::from_static("Upgrade"));
        r
    })
}
