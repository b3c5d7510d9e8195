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
use serde_json::{json, Value};

use super::errors::ApiError;
use super::read::load;
use super::{ApiServer, Req, Target};
use crate::api::resources::{self, Subresource};
use crate::api::validation::FieldError;

/// The pod a pods/log, exec, attach or portforward request is for.
async fn load_pod(s: &ApiServer, t: &Target) -> Result<Value, ApiError> {
    let name = t.name.as_deref().unwrap_or_default();
    let pod_target = Target { sub: None, ..t.clone() };
    Ok(load(s, &pod_target, name).await?.0)
}

/// The address (host:port) of the agent on the pod's node.
async fn node_endpoint(s: &ApiServer, pod: &Value, name: &str) -> Result<String, ApiError> {
    let node_name = pod.pointer("/spec/nodeName").and_then(Value::as_str).filter(|n| !n.is_empty()).ok_or_else(|| {
        ApiError::bad_request(format!("pod {name} does not have a host assigned"))
    })?;
    let nodes = resources::find("", "v1", "nodes").ok_or_else(|| ApiError::internal("no nodes resource"))?;
    let node_t = Target { info: nodes, namespace: None, name: Some(node_name.to_string()), sub: None };
    let (node, _) = load(s, &node_t, node_name).await?;
    super::resource_metrics::agent_address(&node)
        .ok_or_else(|| ApiError::internal(format!("node {node_name} has no address to reach its agent at")))
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

/// The query of a pods/log request as the agent gets it, checked as upstream does before it looks at
/// the pod: integers parse (400), then ValidatePodLogOptions (422 PodLogOptions Invalid). Booleans follow
/// upstream's query conversion (only `0`, `false`, `f` in any case are false) and are sent on normalized.
fn log_query(r: &Req, name: &str) -> Result<Vec<String>, ApiError> {
    let int = |k: &str| -> Result<Option<i64>, ApiError> {
        r.q(k)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| ApiError::bad_request(format!("invalid value {v:?} for query parameter {k}: not an integer")))
            })
            .transpose()
    };
    let (tail, limit, since) = (int("tailLines")?, int("limitBytes")?, int("sinceSeconds")?);
    let since_time = r.q("sinceTime");
    if let Some(t) = since_time {
        chrono::DateTime::parse_from_rfc3339(t)
            .map_err(|e| ApiError::bad_request(format!("invalid value {t:?} for query parameter sinceTime: {e}")))?;
    }
    let mut errs = Vec::new();
    if let Some(n) = tail.filter(|n| *n < 0) {
        errs.push(FieldError::invalid("tailLines", &json!(n), "must be greater than or equal to 0"));
    }
    if let Some(n) = limit.filter(|n| *n < 1) {
        errs.push(FieldError::invalid("limitBytes", &json!(n), "must be greater than 0"));
    }
    match (since, since_time) {
        (Some(_), Some(_)) => {
            errs.push(FieldError::forbidden("", "at most one of `sinceTime` or `sinceSeconds` may be specified"))
        }
        (Some(n), None) if n < 1 => errs.push(FieldError::invalid("sinceSeconds", &json!(n), "must be greater than 0")),
        _ => {}
    }
    if !errs.is_empty() {
        let list = errs.iter().map(ToString::to_string).collect::<Vec<_>>();
        let list = if list.len() == 1 { list[0].clone() } else { format!("[{}]", list.join(", ")) };
        let causes: Vec<Value> =
            errs.iter().map(|e| json!({"reason": e.reason, "message": e.message, "field": e.field})).collect();
        return Err(ApiError {
            details: Some(json!({"name": name, "kind": "PodLogOptions", "causes": causes})),
            ..ApiError::new(422, "Invalid", format!("PodLogOptions \"{name}\" is invalid: {list}"))
        });
    }
    let mut q = Vec::new();
    for k in ["follow", "timestamps", "previous"] {
        if let Some(v) = r.q(k) {
            let on = !(v == "0" || v.eq_ignore_ascii_case("false") || v.eq_ignore_ascii_case("f"));
            q.push(format!("{k}={on}"));
        }
    }
    for (k, v) in [("tailLines", tail), ("sinceSeconds", since), ("limitBytes", limit)] {
        if let Some(v) = v {
            q.push(format!("{k}={v}"));
        }
    }
    if let Some(t) = since_time {
        q.push(format!("sinceTime={}", urlencode(t)));
    }
    Ok(q)
}

pub async fn logs(s: &Arc<ApiServer>, t: &Target, r: &Req) -> Result<Response, ApiError> {
    let name = t.name.as_deref().unwrap_or_default();
    let ns = t.namespace.as_deref().unwrap_or("default");
    let q = log_query(r, name)?;
    let pod = load_pod(s, t).await?;
    let container = container_of(&pod, r.q("container"), name)?;
    let addr = node_endpoint(s, &pod, name).await?;
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
    let pod = load_pod(s, t).await?;
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
    let addr = node_endpoint(s, &pod, &name).await?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn req(query: &[(&str, &str)]) -> Req {
        Req {
            user: None,
            method: axum::http::Method::GET,
            headers: Default::default(),
            query: query.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            body: Default::default(),
        }
    }

    #[test]
    fn log_options_are_checked_as_upstream_before_the_pod_is_looked_at() {
        let e = log_query(&req(&[("tailLines", "-1")]), "p").unwrap_err();
        assert_eq!((e.code, e.reason), (422, "Invalid"));
        assert_eq!(e.message, "PodLogOptions \"p\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0");
        assert_eq!(e.details.unwrap()["causes"][0]["field"], "tailLines");
        let e = log_query(&req(&[("limitBytes", "0"), ("sinceSeconds", "0")]), "p").unwrap_err();
        assert_eq!(
            e.message,
            "PodLogOptions \"p\" is invalid: [limitBytes: Invalid value: 0: must be greater than 0, sinceSeconds: Invalid value: 0: must be greater than 0]"
        );
        let e = log_query(&req(&[("sinceSeconds", "5"), ("sinceTime", "2026-01-01T00:00:00Z")]), "p").unwrap_err();
        assert!(e.message.ends_with(": Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"), "{}", e.message);
        for (k, v) in [("tailLines", "abc"), ("limitBytes", "1e3"), ("sinceTime", "yesterday")] {
            let e = log_query(&req(&[(k, v)]), "p").unwrap_err();
            assert_eq!(e.code, 400, "{k}={v}: {}", e.message);
            assert!(e.message.contains(k), "{}", e.message);
        }
        let q = log_query(
            &req(&[("follow", "yes"), ("previous", "False"), ("timestamps", "1"), ("tailLines", "5"), ("sinceTime", "2026-01-01T00:00:00+01:00")]),
            "p",
        )
        .unwrap();
        assert_eq!(q, ["follow=true", "timestamps=true", "previous=false", "tailLines=5", "sinceTime=2026-01-01T00%3A00%3A00%2B01%3A00"]);
    }
}
