//! Connecting to a port of a pod, as a process of the pod would: `localhost:<port>` inside the pod's network
//! namespace.
//!
//! The agent is a multi-threaded tokio process, so no worker thread may change namespace: each connect runs on a
//! fresh thread that enters the namespace, connects (blocking, with a timeout) and ends; the connected socket, which
//! keeps its namespace, is handed back to tokio.

use std::fs::File;
use std::future::Future;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream as StdTcpStream};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;

pub type DialFuture = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;

/// Opens connections to a pod's ports. The real one is [`PodNetwork`]; tests pass a fake.
pub trait Dialer: Send + Sync {
    fn dial(&self, port: u16) -> DialFuture;
}

pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The network of one pod: its namespace (an open handle, so it stays the same namespace for the whole session),
/// or the agent's own for `hostNetwork` pods.
pub struct PodNetwork {
    pub netns: Option<Arc<File>>,
}

/// IPv4 localhost, then IPv6 (as containerd does): a server may listen on either.
fn connect_localhost(port: u16) -> io::Result<StdTcpStream> {
    let v4 = StdTcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), CONNECT_TIMEOUT);
    let e4 = match v4 {
        Ok(s) => return Ok(s),
        Err(e) => e,
    };
    match StdTcpStream::connect_timeout(&SocketAddr::from((Ipv6Addr::LOCALHOST, port)), CONNECT_TIMEOUT) {
        Ok(s) => Ok(s),
        Err(e6) => Err(io::Error::new(e4.kind(), format!("IPv4: {e4}; IPv6: {e6}"))),
    }
}

impl Dialer for PodNetwork {
    fn dial(&self, port: u16) -> DialFuture {
        let netns = self.netns.clone();
        Box::pin(async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            std::thread::Builder::new().name("portforward-dial".into()).spawn(move || {
                let result = (|| -> io::Result<StdTcpStream> {
                    if let Some(ns) = &netns {
                        // This thread alone enters the pod's namespace, and ends right after the connect.
                        nix::sched::setns(ns.as_ref(), nix::sched::CloneFlags::CLONE_NEWNET)
                            .map_err(|e| io::Error::other(format!("entering the pod's network namespace: {e}")))?;
                    }
                    let s = connect_localhost(port)?;
                    s.set_nonblocking(true)?;
                    Ok(s)
                })();
                let _ = tx.send(result);
            })?;
            let stream = rx.await.map_err(|_| io::Error::other("the connecting thread ended without an answer"))??;
            TcpStream::from_std(stream)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn host_network_dials_localhost() {
        let l = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let port = l.local_addr().unwrap().port();
        let net = PodNetwork { netns: None };
        let (c, a) = tokio::join!(net.dial(port), l.accept());
        let (c, (_, from)) = (c.unwrap(), a.unwrap());
        assert_eq!(c.peer_addr().unwrap(), SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        assert_eq!(c.local_addr().unwrap(), from);
    }

    /// Removes the test's namespace even when an assertion fails.
    struct NetnsGuard(std::path::PathBuf);

    impl Drop for NetnsGuard {
        fn drop(&mut self) {
            if let Err(e) = crate::sandbox::netns::remove(&self.0) {
                eprintln!("removing {}: {e}", self.0.display());
            }
        }
    }

    /// Accepts one connection and writes `word` to it.
    fn answer_once(l: std::net::TcpListener, word: &'static [u8]) {
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let _ = std::io::Write::write_all(&mut s, word);
            }
        });
    }

    #[tokio::test]
    async fn dials_inside_the_pods_namespace_not_the_agents() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipping: network namespaces need root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pod-ns");
        crate::sandbox::netns::create(&path).unwrap();
        let _guard = NetnsGuard(path.clone());
        // In the pod's namespace: loopback up and a server on an ephemeral port (the socket keeps its namespace
        // when the thread that made it ends).
        let inside = crate::sandbox::netns::run_in(&path, || {
            let up = std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status();
            assert!(up.is_ok_and(|s| s.success()), "ip link set lo up");
            std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap()
        })
        .unwrap();
        let port = inside.local_addr().unwrap().port();
        answer_once(inside, b"pod");
        // The same port in the agent's namespace answers otherwise, if it is free here.
        if let Ok(host) = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
            answer_once(host, b"host");
        }
        let net = PodNetwork { netns: Some(Arc::new(File::open(&path).unwrap())) };
        let mut c = net.dial(port).await.unwrap();
        let mut got = vec![];
        tokio::io::AsyncReadExt::read_to_end(&mut c, &mut got).await.unwrap();
        assert_eq!(got, b"pod");
        // A port that only the agent's namespace listens on is refused inside.
        let host_only = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let e = net.dial(host_only.local_addr().unwrap().port()).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
    }

    #[tokio::test]
    async fn nothing_listening_is_refused_on_both_families() {
        // A port held on both loopback addresses by sockets that are bound but never listen: connections are
        // refused, and no other test can start listening there meanwhile (a bound-then-dropped port could be).
        let mut held = None;
        for _ in 0..100 {
            let v4 = tokio::net::TcpSocket::new_v4().unwrap();
            v4.bind((Ipv4Addr::LOCALHOST, 0).into()).unwrap();
            let port = v4.local_addr().unwrap().port();
            let v6 = tokio::net::TcpSocket::new_v6().ok().filter(|v6| v6.bind((std::net::Ipv6Addr::LOCALHOST, port).into()).is_ok());
            let both = v6.is_some();
            held = Some((port, v4, v6));
            if both {
                break;
            }
        }
        let (port, _v4, _v6) = held.unwrap();
        let e = PodNetwork { netns: None }.dial(port).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused, "{e}");
        assert!(e.to_string().contains("IPv4") && e.to_string().contains("IPv6"), "{e}");
    }
}
