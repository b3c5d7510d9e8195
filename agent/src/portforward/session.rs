//! One port-forward connection speaking SPDY/3.1 (the kubelet's `portforward.k8s.io` protocol), whatever carries
//! the bytes (a plain upgraded HTTP connection, or WebSocket binary messages).
//!
//! The client opens two streams per forwarded connection, both with headers `port` and `requestID`: `streamType:
//! error` (which it half-closes at once) and `streamType: data`. Every stream is answered with SYN_REPLY. When both
//! streams of a request are there, a forwarder task dials the pod's port and copies bytes both ways: DATA frames of
//! the data stream to the pod, the pod's bytes back as DATA frames. When the pod's side ends, the data stream and
//! then the error stream are closed (FIN); an error (e.g. nothing listens) is written on the error stream first,
//! which kubectl prints. PINGs from the client are echoed. A malformed frame ends the whole connection (the header
//! compression state is shared, so nothing after it can be trusted).
//!
//! The client (moby/spdystream) does no flow control, so neither does this side: backpressure comes from the
//! transport and from bounded channels (the reader waits when a pod does not read its input, as spdystream does).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::dial::{Dialer, CONNECT_TIMEOUT};
use super::spdy::{self, Decoder, Encoder, Frame, FLAG_FIN};

/// Bytes read from the pod per DATA frame.
const CHUNK: usize = 32 * 1024;
/// DATA frames queued towards one pod connection before the reader waits.
const INBOUND_QUEUE: usize = 32;
/// Frames queued towards the client before forwarders wait.
const OUTBOUND_QUEUE: usize = 64;
/// How long the first stream of a request waits for the second (the kubelet's streamCreationTimeout).
const STREAM_CREATION_TIMEOUT: Duration = Duration::from_secs(30);

/// The pod, as error messages name it.
#[derive(Clone, Debug)]
pub struct PodRef {
    pub name: String,
    pub uid: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("reading from the client: {0}")]
    Read(io::Error),
    #[error("malformed SPDY frame: {0}")]
    Frame(#[from] spdy::FrameError),
}

/// Writes frames from `rx` to `sink` until every sender is gone or the client is; closes the sink at the end.
pub async fn write_frames<S>(mut rx: mpsc::Receiver<Frame>, mut sink: S) -> io::Result<()>
where
    S: Sink<Vec<u8>, Error = io::Error> + Unpin,
{
    let mut enc = Encoder::new();
    while let Some(frame) = rx.recv().await {
        let mut bytes = Vec::new();
        enc.encode(&frame, &mut bytes).map_err(io::Error::other)?;
        // Coalesce what is already queued into one write (one WebSocket message).
        while bytes.len() < CHUNK {
            match rx.try_recv() {
                Ok(f) => enc.encode(&f, &mut bytes).map_err(io::Error::other)?,
                Err(_) => break,
            }
        }
        sink.send(bytes).await?;
    }
    sink.close().await
}

/// Where a stream of the connection stands.
enum StreamState {
    /// The error stream of a request: the client only ever half-closes it.
    Error,
    /// The data stream of a request: its bytes go to the forwarder (until the client's FIN), and a client reset
    /// stops the forwarder.
    Data { inbound: Option<mpsc::Sender<Vec<u8>>>, reset: Option<oneshot::Sender<()>> },
}

/// The streams of one request id, until both are there.
struct Pending {
    since: tokio::time::Instant,
    error: Option<u32>,
    data: Option<PendingData>,
}

/// A data stream waiting for its error stream: what its forwarder will read.
struct PendingData {
    stream_id: u32,
    port: u16,
    inbound: mpsc::Receiver<Vec<u8>>,
    reset: oneshot::Receiver<()>,
}

struct Session {
    dialer: Arc<dyn Dialer>,
    pod: PodRef,
    out: mpsc::Sender<Frame>,
    streams: HashMap<u32, StreamState>,
    pending: HashMap<String, Pending>,
    last_stream_id: u32,
    /// Forwarders, each ending with its (data, error) stream ids.
    forwarders: JoinSet<(u32, u32)>,
    stream_timeout: Duration,
}

/// Serves one connection: `input` yields the client's bytes in whatever pieces the transport has; frames to the
/// client go to `sink`. Returns when the client hangs up or sends GOAWAY, or with the error that ended it.
pub async fn serve<I, S>(input: I, sink: S, dialer: Arc<dyn Dialer>, pod: PodRef) -> Result<(), SessionError>
where
    I: Stream<Item = io::Result<Vec<u8>>> + Unpin,
    S: Sink<Vec<u8>, Error = io::Error> + Unpin + Send + 'static,
{
    serve_with(input, sink, dialer, pod, STREAM_CREATION_TIMEOUT).await
}

/// [`serve`] with another stream creation timeout (tests).
async fn serve_with<I, S>(input: I, sink: S, dialer: Arc<dyn Dialer>, pod: PodRef, stream_timeout: Duration) -> Result<(), SessionError>
where
    I: Stream<Item = io::Result<Vec<u8>>> + Unpin,
    S: Sink<Vec<u8>, Error = io::Error> + Unpin + Send + 'static,
{
    let (out, rx) = mpsc::channel(OUTBOUND_QUEUE);
    let writer = tokio::spawn(async move {
        if let Err(e) = write_frames(rx, sink).await {
            tracing::debug!(error = %e, "port-forward: writing to the client ended");
        }
    });
    let mut session = Session {
        dialer,
        pod,
        out,
        streams: HashMap::new(),
        pending: HashMap::new(),
        last_stream_id: 0,
        forwarders: JoinSet::new(),
        stream_timeout,
    };
    let result = session.read_loop(input).await;
    if let Err(SessionError::Frame(_)) = &result {
        let _ = session.out.send(Frame::GoAway { last_good_stream_id: session.last_stream_id, status: spdy::PROTOCOL_ERROR }).await;
    }
    // The connection is over: every forwarded connection with it.
    session.forwarders.shutdown().await;
    drop(session);
    let _ = writer.await;
    result
}

impl Session {
    async fn read_loop<I>(&mut self, mut input: I) -> Result<(), SessionError>
    where
        I: Stream<Item = io::Result<Vec<u8>>> + Unpin,
    {
        let mut dec = Decoder::new();
        let mut buf: Vec<u8> = Vec::new();
        let mut sweep = tokio::time::interval(self.stream_timeout / 6);
        loop {
            let chunk = tokio::select! {
                c = input.next() => c,
                // Forget the streams of finished forwarders, so a long session does not pile them up.
                Some(done) = self.forwarders.join_next(), if !self.forwarders.is_empty() => {
                    if let Ok((data_id, error_id)) = done {
                        self.streams.remove(&data_id);
                        self.streams.remove(&error_id);
                    }
                    continue;
                }
                _ = sweep.tick() => {
                    self.expire_pending().await;
                    continue;
                }
            };
            match chunk {
                None => return Ok(()),
                Some(Err(e)) => return Err(SessionError::Read(e)),
                Some(Ok(bytes)) => buf.extend_from_slice(&bytes),
            }
            let mut at = 0;
            while let Some((frame, n)) = dec.decode(&buf[at..])? {
                at += n;
                if !self.handle(frame).await {
                    return Ok(());
                }
            }
            buf.drain(..at);
        }
    }

    /// Acts on one frame; false when the client said GOAWAY.
    async fn handle(&mut self, frame: Frame) -> bool {
        match frame {
            Frame::SynStream { stream_id, headers, flags, .. } => self.open(stream_id, &headers, flags).await,
            Frame::Data { stream_id, flags, data } => self.data(stream_id, flags, data).await,
            Frame::RstStream { stream_id, .. } => {
                if let Some(StreamState::Data { reset, .. }) = self.streams.get_mut(&stream_id) {
                    if let Some(r) = reset.take() {
                        let _ = r.send(());
                    }
                }
                self.streams.remove(&stream_id);
            }
            // Client pings have odd ids; this side sends none, so an even one is not an answer to anything.
            Frame::Ping { id } if id % 2 == 1 => {
                let _ = self.out.send(Frame::Ping { id }).await;
            }
            Frame::GoAway { .. } => return false,
            Frame::Ping { .. }
            | Frame::SynReply { .. }
            | Frame::Headers { .. }
            | Frame::Settings { .. }
            | Frame::WindowUpdate { .. }
            | Frame::Unknown { .. } => {}
        }
        true
    }

    async fn refuse(&mut self, stream_id: u32, status: u32, why: String) {
        tracing::warn!(pod = %self.pod.name, stream_id, %why, "port-forward stream refused");
        let _ = self.out.send(Frame::RstStream { stream_id, status }).await;
    }

    async fn open(&mut self, stream_id: u32, headers: &spdy::Headers, flags: u8) {
        // Client streams have odd, increasing ids (SPDY/3 §2.3.2).
        if stream_id % 2 == 0 || stream_id <= self.last_stream_id {
            return self.refuse(stream_id, spdy::PROTOCOL_ERROR, format!("stream id {stream_id} after {}", self.last_stream_id)).await;
        }
        self.last_stream_id = stream_id;
        let request = match parse_request(stream_id, headers) {
            Ok(r) => r,
            Err(why) => return self.refuse(stream_id, spdy::REFUSED_STREAM, why).await,
        };
        let slot = self.pending.entry(request.id.clone()).or_insert_with(|| Pending {
            since: tokio::time::Instant::now(),
            error: None,
            data: None,
        });
        let taken = match request.kind {
            Kind::Error => slot.error.is_some(),
            Kind::Data => slot.data.is_some(),
        };
        if taken {
            return self.refuse(stream_id, spdy::REFUSED_STREAM, format!("request {} has two {:?} streams", request.id, request.kind)).await;
        }
        match request.kind {
            Kind::Error => {
                slot.error = Some(stream_id);
                self.streams.insert(stream_id, StreamState::Error);
            }
            Kind::Data => {
                let (tx, rx) = mpsc::channel(INBOUND_QUEUE);
                let (reset_tx, reset_rx) = oneshot::channel();
                // A SYN_STREAM with FIN: the client sends nothing on it.
                let inbound = (flags & FLAG_FIN == 0).then_some(tx);
                slot.data = Some(PendingData { stream_id, port: request.port, inbound: rx, reset: reset_rx });
                self.streams.insert(stream_id, StreamState::Data { inbound, reset: Some(reset_tx) });
            }
        }
        // spdystream drops data that comes before the reply: reply first.
        let _ = self.out.send(Frame::SynReply { stream_id, flags: 0, headers: vec![] }).await;
        let complete = matches!(self.pending.get(&request.id), Some(Pending { error: Some(_), data: Some(_), .. }));
        if complete {
            let Some(Pending { error: Some(error_id), data: Some(data), .. }) = self.pending.remove(&request.id) else {
                return;
            };
            let fwd = Forward {
                dialer: self.dialer.clone(),
                pod: self.pod.clone(),
                out: self.out.clone(),
                port: data.port,
                data_id: data.stream_id,
                error_id,
            };
            self.forwarders.spawn(async move {
                fwd.run(data.inbound, data.reset).await;
                (data.stream_id, error_id)
            });
        }
    }

    /// Requests whose second stream never came: the error stream says so and ends, the data stream is reset.
    async fn expire_pending(&mut self) {
        let expired: Vec<String> =
            self.pending.iter().filter(|(_, p)| p.since.elapsed() >= self.stream_timeout).map(|(id, _)| id.clone()).collect();
        for id in expired {
            let Some(p) = self.pending.remove(&id) else { continue };
            tracing::warn!(pod = %self.pod.name, request = %id, "port-forward: timed out waiting for the request's other stream");
            if let Some(error_id) = p.error {
                let msg = format!("timed out waiting for the streams of request {id}");
                let _ = self.out.send(Frame::Data { stream_id: error_id, flags: 0, data: msg.into_bytes() }).await;
                let _ = self.out.send(Frame::Data { stream_id: error_id, flags: FLAG_FIN, data: vec![] }).await;
                self.streams.remove(&error_id);
            }
            if let Some(d) = p.data {
                let _ = self.out.send(Frame::RstStream { stream_id: d.stream_id, status: spdy::CANCEL }).await;
                self.streams.remove(&d.stream_id);
            }
        }
    }

    async fn data(&mut self, stream_id: u32, flags: u8, data: Vec<u8>) {
        let Some(StreamState::Data { inbound, .. }) = self.streams.get_mut(&stream_id) else {
            // Error streams carry nothing from the client; a reset stream's late data is dropped.
            return;
        };
        if !data.is_empty() {
            if let Some(tx) = inbound.as_ref() {
                if tx.send(data).await.is_err() {
                    // The forwarder is done: the rest is dropped, as the pod side is closed.
                    *inbound = None;
                }
            }
        }
        if flags & FLAG_FIN != 0 {
            *inbound = None;
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Error,
    Data,
}

#[derive(Debug, PartialEq, Eq)]
struct Request {
    kind: Kind,
    port: u16,
    id: String,
}

/// The stream's headers, checked as the kubelet checks them.
fn parse_request(stream_id: u32, headers: &spdy::Headers) -> Result<Request, String> {
    let port = spdy::header(headers, "port").filter(|p| !p.is_empty()).ok_or("\"port\" header is required")?;
    let port: u16 = port.parse().map_err(|e| format!("unable to parse {port:?} as a port: {e}"))?;
    if port == 0 {
        return Err("port \"0\" must be > 0".into());
    }
    let kind = match spdy::header(headers, "streamType") {
        None | Some("") => return Err("\"streamType\" header is required".into()),
        Some("error") => Kind::Error,
        Some("data") => Kind::Data,
        Some(other) => return Err(format!("invalid stream type {other:?}")),
    };
    // Clients older than request ids send pairs with consecutive odd ids: error first, then data (the kubelet's
    // fallback).
    let id = match spdy::header(headers, "requestID").filter(|r| !r.is_empty()) {
        Some(id) => id.to_string(),
        None if kind == Kind::Error => stream_id.to_string(),
        None => stream_id.saturating_sub(2).to_string(),
    };
    Ok(Request { kind, port, id })
}

/// One forwarded connection: the pod's port and the two streams that carry it.
struct Forward {
    dialer: Arc<dyn Dialer>,
    pod: PodRef,
    out: mpsc::Sender<Frame>,
    port: u16,
    data_id: u32,
    error_id: u32,
}

impl Forward {
    async fn run(self, mut inbound: mpsc::Receiver<Vec<u8>>, mut reset: oneshot::Receiver<()>) {
        let dialed = tokio::select! {
            d = tokio::time::timeout(CONNECT_TIMEOUT + std::time::Duration::from_secs(1), self.dialer.dial(self.port)) => d,
            _ = &mut reset => return self.close_error_stream().await,
        };
        let conn = match dialed {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                let msg = format!("failed to connect to localhost:{} inside the pod's network namespace: {e}", self.port);
                return self.fail(msg).await;
            }
            Err(_) => {
                let msg = format!("timed out connecting to localhost:{} inside the pod's network namespace", self.port);
                return self.fail(msg).await;
            }
        };
        tracing::debug!(pod = %self.pod.name, port = self.port, stream = self.data_id, "port-forward connection open");
        let (mut from_pod, mut to_pod) = conn.into_split();
        let up = async {
            while let Some(bytes) = inbound.recv().await {
                to_pod.write_all(&bytes).await?;
            }
            // The client's FIN: the pod reads end of input, and may still answer.
            to_pod.shutdown().await
        };
        let out = self.out.clone();
        let data_id = self.data_id;
        let down = async move {
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = from_pod.read(&mut buf).await?;
                if n == 0 {
                    return Ok::<bool, io::Error>(true);
                }
                if out.send(Frame::Data { stream_id: data_id, flags: 0, data: buf[..n].to_vec() }).await.is_err() {
                    return Ok(false);
                }
            }
        };
        tokio::pin!(up, down);
        let mut up_done = false;
        let pod_ended = loop {
            tokio::select! {
                r = &mut up, if !up_done => {
                    up_done = true;
                    if let Err(e) = r {
                        tracing::debug!(pod = %self.pod.name, port = self.port, error = %e, "port-forward: writing to the pod failed");
                    }
                }
                r = &mut down => break match r {
                    Ok(eof) => eof,
                    Err(e) => {
                        tracing::debug!(pod = %self.pod.name, port = self.port, error = %e, "port-forward: reading from the pod failed");
                        true
                    }
                },
                _ = &mut reset => break false,
            }
        };
        if pod_ended {
            let _ = self.out.send(Frame::Data { stream_id: self.data_id, flags: FLAG_FIN, data: vec![] }).await;
        }
        self.close_error_stream().await;
    }

    async fn fail(self, message: String) {
        let message = format!("error forwarding port {} to pod {}, uid {}: {message}", self.port, self.pod.name, self.pod.uid);
        tracing::info!(pod = %self.pod.name, port = self.port, %message, "port-forward failed");
        let _ = self.out.send(Frame::Data { stream_id: self.error_id, flags: 0, data: message.into_bytes() }).await;
        let _ = self.out.send(Frame::Data { stream_id: self.data_id, flags: FLAG_FIN, data: vec![] }).await;
        self.close_error_stream().await;
    }

    /// The end of the error stream tells the client the request is over (it waits for it).
    async fn close_error_stream(&self) {
        let _ = self.out.send(Frame::Data { stream_id: self.error_id, flags: FLAG_FIN, data: vec![] }).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;
    use tokio::io::DuplexStream;

    /// Ports of the fake pod: a port maps to a loopback listener; any other is refused.
    struct Loopback(HashMap<u16, SocketAddr>);

    impl Dialer for Loopback {
        fn dial(&self, port: u16) -> super::super::dial::DialFuture {
            let addr = self.0.get(&port).copied();
            Box::pin(async move {
                match addr {
                    Some(a) => tokio::net::TcpStream::connect(a).await,
                    None => Err(io::Error::new(io::ErrorKind::ConnectionRefused, "Connection refused (os error 111)")),
                }
            })
        }
    }

    /// A server that sends back what it reads, then closes once its input ends.
    async fn echo_server() -> SocketAddr {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((s, _)) = l.accept().await else { return };
                tokio::spawn(async move {
                    let (mut r, mut w) = s.into_split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        addr
    }

    /// The client end: frames in and out over an in-memory pipe, with its own compression contexts.
    struct Client {
        enc: Encoder,
        dec: Decoder,
        io: DuplexStream,
        buf: Vec<u8>,
    }

    impl Client {
        async fn send(&mut self, f: Frame) {
            let mut bytes = vec![];
            self.enc.encode(&f, &mut bytes).unwrap();
            self.io.write_all(&bytes).await.unwrap();
        }
        async fn send_raw(&mut self, bytes: &[u8]) {
            self.io.write_all(bytes).await.unwrap();
        }
        /// The next frame, or None when the server closed.
        async fn next(&mut self) -> Option<Frame> {
            loop {
                if let Some((f, n)) = self.dec.decode(&self.buf).unwrap() {
                    self.buf.drain(..n);
                    return Some(f);
                }
                let mut chunk = vec![0u8; 65536];
                let n = tokio::time::timeout(std::time::Duration::from_secs(20), self.io.read(&mut chunk)).await.expect("a frame in time").unwrap();
                if n == 0 {
                    return None;
                }
                self.buf.extend_from_slice(&chunk[..n]);
            }
        }
        async fn open(&mut self, stream_id: u32, kind: &str, port: u16, request: u32) {
            let headers = h(&[("streamtype", kind), ("port", &port.to_string()), ("requestid", &request.to_string())]);
            self.send(Frame::SynStream { stream_id, associated_to: 0, priority: 0, flags: 0, headers }).await;
        }
    }

    fn start(ports: HashMap<u16, SocketAddr>) -> (Client, tokio::task::JoinHandle<Result<(), SessionError>>) {
        start_with(ports, STREAM_CREATION_TIMEOUT)
    }

    fn start_with(ports: HashMap<u16, SocketAddr>, timeout: Duration) -> (Client, tokio::task::JoinHandle<Result<(), SessionError>>) {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let (r, w) = tokio::io::split(theirs);
        let pod = PodRef { name: "default/web".into(), uid: "u-1".into() };
        let task = tokio::spawn(serve_with(super::super::read_chunks(r), super::super::write_bytes(w), Arc::new(Loopback(ports)), pod, timeout));
        (Client { enc: Encoder::new(), dec: Decoder::new(), io: ours, buf: vec![] }, task)
    }

    /// Per stream: the bytes received and whether it was closed (FIN).
    #[derive(Default, Debug)]
    struct Received {
        data: HashMap<u32, Vec<u8>>,
        fin: HashMap<u32, bool>,
        replies: Vec<u32>,
    }

    impl Received {
        /// Takes a reply or data frame of the server's; anything else fails the test.
        fn record(&mut self, f: Frame) {
            match f {
                Frame::SynReply { stream_id, .. } => self.replies.push(stream_id),
                Frame::Data { stream_id, flags, data } => {
                    self.data.entry(stream_id).or_default().extend(data);
                    if flags & FLAG_FIN != 0 {
                        self.fin.insert(stream_id, true);
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    async fn collect_until_closed(c: &mut Client, streams: &[u32]) -> Received {
        let mut r = Received::default();
        while !streams.iter().all(|s| r.fin.get(s) == Some(&true)) {
            r.record(c.next().await.expect("the connection stays open"));
        }
        r
    }

    #[tokio::test]
    async fn forwards_a_connection_both_ways_and_closes_both_streams() {
        let (mut c, task) = start(HashMap::from([(80, echo_server().await)]));
        c.open(1, "error", 80, 0).await;
        c.send(Frame::Data { stream_id: 1, flags: FLAG_FIN, data: vec![] }).await;
        c.open(3, "data", 80, 0).await;
        c.send(Frame::Data { stream_id: 3, flags: 0, data: b"hello ".to_vec() }).await;
        c.send(Frame::Data { stream_id: 3, flags: FLAG_FIN, data: b"pod".to_vec() }).await;
        let r = collect_until_closed(&mut c, &[1, 3]).await;
        assert_eq!(r.replies, [1, 3]);
        assert_eq!(r.data.get(&3).map(Vec::as_slice), Some(&b"hello pod"[..]));
        assert!(r.data.get(&1).is_none_or(|d| d.is_empty()), "no error: {:?}", r.data.get(&1));
        drop(c);
        assert!(task.await.unwrap().is_ok());
    }

    #[tokio::test]
    async fn nothing_listening_is_an_error_on_the_error_stream() {
        let (mut c, _task) = start(HashMap::new());
        c.open(1, "error", 81, 7).await;
        c.open(3, "data", 81, 7).await;
        let r = collect_until_closed(&mut c, &[1, 3]).await;
        let msg = String::from_utf8(r.data[&1].clone()).unwrap();
        assert!(msg.starts_with("error forwarding port 81 to pod default/web, uid u-1: "), "{msg}");
        assert!(msg.contains("refused"), "{msg}");
        // The connection is still usable: a ping is answered.
        c.send(Frame::Ping { id: 1 }).await;
        assert_eq!(c.next().await, Some(Frame::Ping { id: 1 }));
    }

    #[tokio::test]
    async fn many_concurrent_connections_carry_a_megabyte_each_intact() {
        let (mut c, _task) = start(HashMap::from([(80, echo_server().await)]));
        let n = 20u32;
        let payload = |i: u32| (0..1_000_000u32).map(|b| (b.wrapping_mul(31).wrapping_add(i * 7)) as u8).collect::<Vec<u8>>();
        for i in 0..n {
            c.open(4 * i + 1, "error", 80, i).await;
            c.open(4 * i + 3, "data", 80, i).await;
        }
        // Interleave the uploads in 16 KiB frames while reading what comes back, so neither side's buffers fill.
        let streams: Vec<u32> = (0..n).flat_map(|i| [4 * i + 1, 4 * i + 3]).collect();
        let (mut reader, mut writer) = tokio::io::split(c.io);
        let mut enc = c.enc;
        let up = async move {
            let payloads: Vec<Vec<u8>> = (0..n).map(payload).collect();
            for off in (0..1_000_000).step_by(16384) {
                for i in 0..n {
                    let end = (off + 16384).min(1_000_000);
                    let fin = if end == 1_000_000 { FLAG_FIN } else { 0 };
                    let mut bytes = vec![];
                    enc.encode(&Frame::Data { stream_id: 4 * i + 3, flags: fin, data: payloads[i as usize][off..end].to_vec() }, &mut bytes).unwrap();
                    writer.write_all(&bytes).await.unwrap();
                }
            }
            writer
        };
        let mut dec = c.dec;
        let down = async move {
            let mut r = Received::default();
            let mut buf = vec![];
            while !streams.iter().all(|s| r.fin.get(s) == Some(&true)) {
                if let Some((f, k)) = dec.decode(&buf).unwrap() {
                    buf.drain(..k);
                    r.record(f);
                    continue;
                }
                let mut chunk = vec![0u8; 65536];
                let k = reader.read(&mut chunk).await.unwrap();
                assert!(k > 0, "the connection closed early");
                buf.extend_from_slice(&chunk[..k]);
            }
            r
        };
        let (_, r) = tokio::time::timeout(std::time::Duration::from_secs(60), async { tokio::join!(up, down) }).await.expect("done in time");
        assert_eq!(r.replies.len(), 2 * n as usize);
        for i in 0..n {
            let got = r.data.get(&(4 * i + 3)).cloned().unwrap_or_default();
            assert!(got == payload(i), "connection {i}: {} bytes back", got.len());
        }
    }

    #[tokio::test]
    async fn bad_streams_are_reset_and_the_connection_goes_on() {
        let (mut c, _task) = start(HashMap::from([(80, echo_server().await)]));
        c.send(Frame::SynStream { stream_id: 1, associated_to: 0, priority: 0, flags: 0, headers: h(&[("streamtype", "data")]) }).await;
        assert_eq!(c.next().await, Some(Frame::RstStream { stream_id: 1, status: spdy::REFUSED_STREAM }));
        // An even (server-side) id.
        c.open(4, "data", 80, 1).await;
        assert_eq!(c.next().await, Some(Frame::RstStream { stream_id: 4, status: spdy::PROTOCOL_ERROR }));
        // A second error stream for one request.
        c.open(5, "error", 80, 2).await;
        assert_eq!(c.next().await, Some(Frame::SynReply { stream_id: 5, flags: 0, headers: vec![] }));
        c.open(7, "error", 80, 2).await;
        assert_eq!(c.next().await, Some(Frame::RstStream { stream_id: 7, status: spdy::REFUSED_STREAM }));
        c.send(Frame::Ping { id: 3 }).await;
        assert_eq!(c.next().await, Some(Frame::Ping { id: 3 }));
    }

    #[tokio::test]
    async fn a_client_reset_stops_the_forwarded_connection() {
        // A pod server that never closes: only the client's reset ends the request.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let (closed_tx, closed_rx) = oneshot::channel();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut b = [0u8; 16];
            // Reads until the agent drops its end.
            while s.read(&mut b).await.map(|n| n > 0).unwrap_or(false) {}
            let _ = closed_tx.send(());
        });
        let (mut c, _task) = start(HashMap::from([(80, addr)]));
        c.open(1, "error", 80, 0).await;
        c.open(3, "data", 80, 0).await;
        c.send(Frame::Data { stream_id: 3, flags: 0, data: b"x".to_vec() }).await;
        assert!(matches!(c.next().await, Some(Frame::SynReply { stream_id: 1, .. })));
        assert!(matches!(c.next().await, Some(Frame::SynReply { stream_id: 3, .. })));
        c.send(Frame::RstStream { stream_id: 3, status: spdy::CANCEL }).await;
        assert_eq!(c.next().await, Some(Frame::Data { stream_id: 1, flags: FLAG_FIN, data: vec![] }));
        tokio::time::timeout(std::time::Duration::from_secs(10), closed_rx).await.expect("the pod connection is closed").unwrap();
    }

    #[tokio::test]
    async fn a_request_missing_its_data_stream_times_out_on_its_error_stream() {
        let timeout = Duration::from_millis(300);
        let (mut c, _task) = start_with(HashMap::new(), timeout);
        c.open(1, "error", 80, 0).await;
        assert!(matches!(c.next().await, Some(Frame::SynReply { stream_id: 1, .. })));
        let before = tokio::time::Instant::now();
        let r = collect_until_closed(&mut c, &[1]).await;
        assert!(before.elapsed() >= timeout - timeout / 6, "{:?}", before.elapsed());
        assert_eq!(r.data.get(&1).map(Vec::as_slice), Some(&b"timed out waiting for the streams of request 0"[..]));
        // A data stream alone is reset.
        c.open(3, "data", 80, 1).await;
        assert!(matches!(c.next().await, Some(Frame::SynReply { stream_id: 3, .. })));
        assert_eq!(c.next().await, Some(Frame::RstStream { stream_id: 3, status: spdy::CANCEL }));
    }

    #[tokio::test]
    async fn finished_requests_are_forgotten() {
        let (out, mut rx) = mpsc::channel(64);
        let drain = tokio::spawn(async move { while rx.recv().await.is_some() {} });
        let mut session = Session {
            dialer: Arc::new(Loopback(HashMap::new())),
            pod: PodRef { name: "default/web".into(), uid: "u-1".into() },
            out,
            streams: HashMap::new(),
            pending: HashMap::new(),
            last_stream_id: 0,
            forwarders: JoinSet::new(),
            stream_timeout: STREAM_CREATION_TIMEOUT,
        };
        let mut enc = Encoder::new();
        let mut bytes = vec![];
        for i in 0..3u32 {
            for (id, kind) in [(4 * i + 1, "error"), (4 * i + 3, "data")] {
                let headers = h(&[("streamtype", kind), ("port", "81"), ("requestid", &i.to_string())]);
                enc.encode(&Frame::SynStream { stream_id: id, associated_to: 0, priority: 0, flags: 0, headers }, &mut bytes).unwrap();
            }
        }
        // The client stays connected (its input never ends) while the three requests fail and end.
        let input = futures::stream::iter(vec![Ok(bytes)]).chain(futures::stream::pending());
        let _ = tokio::time::timeout(Duration::from_millis(500), session.read_loop(input)).await;
        assert_eq!(session.streams.len(), 0, "streams of finished requests are kept");
        assert!(session.pending.is_empty() && session.forwarders.is_empty());
        drop(session);
        drain.await.unwrap();
    }

    #[tokio::test]
    async fn a_malformed_frame_ends_the_connection_with_goaway() {
        let (mut c, task) = start(HashMap::new());
        c.send(Frame::Ping { id: 1 }).await;
        assert_eq!(c.next().await, Some(Frame::Ping { id: 1 }));
        c.send_raw(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1]).await;
        assert_eq!(c.next().await, Some(Frame::GoAway { last_good_stream_id: 0, status: spdy::PROTOCOL_ERROR }));
        assert_eq!(c.next().await, None);
        assert!(matches!(task.await.unwrap(), Err(SessionError::Frame(spdy::FrameError::Version(2)))));
    }

    fn h(pairs: &[(&str, &str)]) -> spdy::Headers {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn requests_are_checked_as_the_kubelet_does() {
        let r = parse_request(1, &h(&[("streamtype", "error"), ("port", "80"), ("requestid", "4")])).unwrap();
        assert_eq!(r, Request { kind: Kind::Error, port: 80, id: "4".into() });
        assert!(parse_request(1, &h(&[("streamtype", "data")])).unwrap_err().contains("port"));
        assert!(parse_request(1, &h(&[("streamtype", "data"), ("port", "http")])).unwrap_err().contains("unable to parse"));
        assert!(parse_request(1, &h(&[("streamtype", "data"), ("port", "70000")])).is_err());
        assert!(parse_request(1, &h(&[("streamtype", "data"), ("port", "0")])).unwrap_err().contains("> 0"));
        assert!(parse_request(1, &h(&[("port", "80")])).unwrap_err().contains("streamType"));
        assert!(parse_request(1, &h(&[("streamtype", "stdin"), ("port", "80")])).unwrap_err().contains("invalid stream type"));
        // No request id: an old client's consecutive pair.
        assert_eq!(parse_request(5, &h(&[("streamtype", "error"), ("port", "80")])).unwrap().id, "5");
        assert_eq!(parse_request(7, &h(&[("streamtype", "data"), ("port", "80")])).unwrap().id, "5");
    }
}
