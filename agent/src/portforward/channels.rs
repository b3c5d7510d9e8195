//! The WebSocket port-forward protocol without SPDY (the kubelet's `v4.channel.k8s.io` port-forward; the Python
//! client speaks it): the ports are in the query (`?ports=80,9000`), one connection per port for the life of the
//! WebSocket. Port `i` has data channel `2i` (both ways) and error channel `2i+1` (to the client); every binary
//! message starts with its channel byte, and the first message on each channel is the port as a little-endian u16.
//! There is no half-close in v4: the client's side of a connection ends with the WebSocket, and the WebSocket is
//! closed once every port's pod side has ended.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::dial::{Dialer, CONNECT_TIMEOUT};
use super::session::PodRef;

/// The subprotocol (binary messages).
pub const PROTOCOL: &str = "v4.channel.k8s.io";

const CHUNK: usize = 32 * 1024;

/// The `ports` query parameters (repeatable, comma-separated), checked as the kubelet checks them.
pub fn parse_ports(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = vec![];
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        if k != "ports" {
            continue;
        }
        if v.is_empty() {
            return Err("query parameter \"ports\" cannot be empty".into());
        }
        for p in v.split(',') {
            let port: u16 = p.parse().map_err(|e| format!("unable to parse {v:?} as a port: {e}"))?;
            if port == 0 {
                return Err(format!("port {v:?} must be > 0"));
            }
            ports.push(port);
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"ports\" is required".into());
    }
    // A channel number is one byte.
    if ports.len() > 127 {
        return Err(format!("{} ports in one request; at most 127", ports.len()));
    }
    Ok(ports)
}

fn message(channel: u8, data: &[u8]) -> Message {
    let mut m = Vec::with_capacity(data.len() + 1);
    m.push(channel);
    m.extend_from_slice(data);
    Message::Binary(m.into())
}

/// Serves one WebSocket until every port's connection ended or the client left.
pub async fn serve(socket: WebSocket, ports: Vec<u16>, dialer: Arc<dyn Dialer>, pod: PodRef) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut out_rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
        let close = CloseFrame { code: axum::extract::ws::close_code::NORMAL, reason: "".into() };
        let _ = sink.send(Message::Close(Some(close))).await;
    });
    let mut inbound = HashMap::new();
    let mut forwarders = JoinSet::new();
    for (i, &port) in ports.iter().enumerate() {
        let data = (2 * i) as u8;
        for ch in [data, data + 1] {
            let _ = out.send(message(ch, &port.to_le_bytes())).await;
        }
        let (tx, rx) = mpsc::channel(32);
        inbound.insert(data, tx);
        forwarders.spawn(forward(dialer.clone(), pod.clone(), port, data, rx, out.clone()));
    }
    drop(out);
    loop {
        tokio::select! {
            m = stream.next() => match m {
                Some(Ok(Message::Binary(b))) => match b.split_first() {
                    Some((ch, data)) => match inbound.get(ch) {
                        Some(tx) => {
                            if tx.send(data.to_vec()).await.is_err() {
                                inbound.remove(ch);
                            }
                        }
                        None => tracing::debug!(channel = ch, "port-forward: message on a channel that is not a data channel"),
                    },
                    None => tracing::debug!("port-forward: empty message"),
                },
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            r = forwarders.join_next() => if r.is_none() { break },
        }
    }
    // The client left, or every connection is over: stop the rest; the writer closes the WebSocket.
    forwarders.shutdown().await;
    let _ = writer.await;
}

async fn forward(dialer: Arc<dyn Dialer>, pod: PodRef, port: u16, channel: u8, mut inbound: mpsc::Receiver<Vec<u8>>, out: mpsc::Sender<Message>) {
    let conn = match tokio::time::timeout(CONNECT_TIMEOUT + std::time::Duration::from_secs(1), dialer.dial(port)).await {
        Ok(Ok(c)) => c,
        failed => {
            let why = match failed {
                Ok(Err(e)) => format!("failed to connect to localhost:{port} inside the pod's network namespace: {e}"),
                _ => format!("timed out connecting to localhost:{port} inside the pod's network namespace"),
            };
            let msg = format!("error forwarding port {port} to pod {}, uid {}: {why}", pod.name, pod.uid);
            tracing::info!(pod = %pod.name, port, %msg, "port-forward failed");
            let _ = out.send(message(channel + 1, msg.as_bytes())).await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = conn.into_split();
    let up = async {
        while let Some(b) = inbound.recv().await {
            to_pod.write_all(&b).await?;
        }
        Ok::<(), io::Error>(())
    };
    let down = async {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = from_pod.read(&mut buf).await?;
            if n == 0 || out.send(message(channel, &buf[..n])).await.is_err() {
                return Ok::<(), io::Error>(());
            }
        }
    };
    // The pod's side ending ends the connection; writing to it failing does not (it may still be answering).
    tokio::pin!(up, down);
    let mut up_done = false;
    loop {
        tokio::select! {
            _ = &mut up, if !up_done => up_done = true,
            r = &mut down => {
                if let Err(e) = r {
                    tracing::debug!(pod = %pod.name, port, error = %e, "port-forward: reading from the pod failed");
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_checked_as_the_kubelet_does() {
        assert_eq!(parse_ports("ports=80"), Ok(vec![80]));
        assert_eq!(parse_ports("ports=80,9000&ports=81&container=x"), Ok(vec![80, 9000, 81]));
        assert!(parse_ports("").unwrap_err().contains("required"));
        assert!(parse_ports("ports=").unwrap_err().contains("cannot be empty"));
        assert!(parse_ports("ports=http").unwrap_err().contains("unable to parse"));
        assert!(parse_ports("ports=0").unwrap_err().contains("> 0"));
        assert!(parse_ports("ports=65536").is_err());
    }

    #[test]
    fn messages_start_with_their_channel() {
        assert_eq!(message(3, &8080u16.to_le_bytes()), Message::Binary(vec![3, 0x90, 0x1f].into()));
    }
}
