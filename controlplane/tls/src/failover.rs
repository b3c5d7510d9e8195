//! Client-side failover between several API servers for clients that take one URL (kube-rs, like client-go): a
//! local TCP forwarder on 127.0.0.1 that sends each new connection to the API server that answered last, or to the
//! next one in the list when it does not accept (k3s' and RKE2's agents do the same). TLS passes through
//! untouched, end to end: every Skiff API server's certificate names 127.0.0.1, so the client verifies the real
//! server behind the forwarder. Connections to a server that dies break; the client's retries and relisting
//! watchers then reach the next server. Hand-written: a few lines over tokio, no crate does just this.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Parse `host:port` entries (an `https://` prefix is allowed).
pub fn parse_servers(list: &[String]) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for s in list {
        let hp = s.trim().trim_start_matches("https://").trim_end_matches('/');
        let ok = hp.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            return Err(format!("{s:?} is not HOST:PORT"));
        }
        out.push(hp.to_string());
    }
    if out.is_empty() {
        return Err("no API server given".into());
    }
    Ok(out)
}

/// With `servers` given, point `config` at a forwarder to them (the kubeconfig keeps its CA and credentials; the
/// connections are verified as 127.0.0.1, which every Skiff API server certificate names). Empty: unchanged.
pub async fn apply(mut config: kube::Config, servers: &[String]) -> Result<kube::Config, String> {
    if servers.is_empty() {
        return Ok(config);
    }
    let servers = parse_servers(servers)?;
    let local = start(servers.clone()).await.map_err(|e| format!("starting the forwarder: {e}"))?;
    tracing::info!(servers = %servers.join(","), %local, "API servers behind a local failover forwarder");
    config.cluster_url = format!("https://{local}").parse().map_err(|e| format!("{e}"))?;
    config.tls_server_name = None;
    Ok(config)
}

/// Start forwarding on 127.0.0.1 (an ephemeral port) to `servers` (`host:port`, tried in order from the last one
/// that worked). Returns the local address; the forwarder runs until the process ends.
pub async fn start(servers: Vec<String>) -> std::io::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let local = listener.local_addr()?;
    let servers = Arc::new(servers);
    let current = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let (servers, current) = (servers.clone(), current.clone());
            tokio::spawn(async move {
                let Some(mut upstream) = connect(&servers, &current).await else { return };
                let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
            });
        }
    });
    Ok(local)
}

async fn connect(servers: &[String], current: &AtomicUsize) -> Option<tokio::net::TcpStream> {
    let start = current.load(Ordering::Relaxed);
    for i in 0..servers.len() {
        let n = (start + i) % servers.len();
        match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(&servers[n])).await {
            Ok(Ok(s)) => {
                if n != start {
                    tracing::warn!(from = %servers[start], to = %servers[n], "API server failover");
                    current.store(n, Ordering::Relaxed);
                }
                let _ = s.set_nodelay(true);
                return Some(s);
            }
            _ => tracing::debug!(server = %servers[n], "API server not reachable"),
        }
    }
    tracing::warn!("no API server reachable");
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers every connection with its name.
    async fn named(name: &'static str) -> (String, tokio::task::JoinHandle<()>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.write_all(name.as_bytes()).await;
            }
        });
        (addr, task)
    }

    async fn ask(local: SocketAddr) -> String {
        let mut s = tokio::net::TcpStream::connect(local).await.unwrap();
        let mut out = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out)).await;
        out
    }

    #[tokio::test]
    async fn fails_over_and_stays() {
        let (a, ta) = named("a").await;
        let (b, _tb) = named("b").await;
        let local = start(vec![a, b]).await.unwrap();
        assert_eq!(ask(local).await, "a");
        ta.abort();
        let _ = ta.await;
        assert_eq!(ask(local).await, "b", "the next server when the first is gone");
        assert_eq!(ask(local).await, "b", "and it stays there");
    }

    #[test]
    fn server_lists() {
        assert_eq!(parse_servers(&["https://10.0.0.1:6443/".into(), "cp2:6443".into()]).unwrap(), ["10.0.0.1:6443", "cp2:6443"]);
        assert!(parse_servers(&["10.0.0.1".into()]).is_err());
        assert!(parse_servers(&[]).is_err());
        assert!(parse_servers(&["h:0".into()]).is_err());
    }
}
