//! `kubectl exec` and `kubectl attach`, as the API server forwards them (docs/api-agent-contract.md): a WebSocket
//! speaking the remote-command protocol ([`channel`]) on `/exec/{ns}/{pod}/{container}` and
//! `/attach/{ns}/{pod}/{container}`.
//!
//! - exec without a terminal: `skiff-runtime exec <id> -- <command>` as a child with pipes for stdin, stdout and
//!   stderr; its exit code is the command's (the runtime waits for it and forwards signals).
//! - exec with a terminal: the [`tty`] helper process (console socket, subreaper, resize).
//! - attach: the container's output as it is written to its log file, until the container exits; for containers
//!   with `stdin: true`, what the client sends goes to the container's stdin through its monitor
//!   ([`crate::container::stdin`]).

pub mod channel;
pub mod tty;

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::container::container_id;
use crate::container::state::{self, EXIT};
use crate::Config;
use channel::Incoming;
use tty::Frame;

/// The query of an exec or attach request.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StreamRequest {
    pub command: Vec<String>,
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

impl StreamRequest {
    /// `command` repeats; flags are `true`/`1` (kubectl sends `stdout=true`).
    pub fn parse(query: &str) -> StreamRequest {
        let mut r = StreamRequest::default();
        for (k, v) in form_urlencoded::parse(query.as_bytes()) {
            let on = matches!(v.as_ref(), "true" | "1" | "");
            match k.as_ref() {
                "command" => r.command.push(v.into_owned()),
                "input" | "stdin" => r.stdin = on,
                "output" | "stdout" => r.stdout = on,
                "error" | "stderr" => r.stderr = on,
                "tty" => r.tty = on,
                _ => {}
            }
        }
        if r.tty {
            // A terminal merges stderr into stdout.
            r.stderr = false;
        }
        r
    }
}

/// A running container of this node: its runtime id and the state dir of its current attempt.
#[derive(Debug)]
pub struct Running {
    pub id: String,
    pub state_dir: PathBuf,
    pub log_file: PathBuf,
}

/// Finds the running attempt of `container` in pod `ns/pod` (a pod recreated under the same name has another uid:
/// the one with the container running wins).
pub fn find_running(config: &Config, ns: &str, pod: &str, container: &str) -> Result<Running, (StatusCode, String)> {
    let prefix = format!("{ns}_{pod}_");
    let mut found_pod = false;
    for e in std::fs::read_dir(&config.log_dir).into_iter().flatten().flatten() {
        let dir = e.file_name().to_string_lossy().into_owned();
        let Some(uid) = dir.strip_prefix(&prefix) else { continue };
        found_pod = true;
        let attempts = state::scan(&config.pod_state_dir(uid));
        if let Some(a) = attempts.get(container).and_then(|l| l.last()).filter(|a| a.started.is_some() && a.exited.is_none()) {
            return Ok(Running {
                id: container_id(uid, container, a.restart),
                state_dir: a.dir.clone(),
                log_file: e.path().join(container).join(format!("{}.log", a.restart)),
            });
        }
    }
    if found_pod {
        Err((StatusCode::BAD_REQUEST, format!("container {container:?} in pod {ns}/{pod} is not running")))
    } else {
        Err((StatusCode::NOT_FOUND, format!("pod {ns}/{pod} has no containers on this node")))
    }
}

fn not_websocket() -> Response {
    (
        StatusCode::BAD_REQUEST,
        "the node agent speaks the WebSocket remote-command protocol (v5.channel.k8s.io, v4.channel.k8s.io), not SPDY",
    )
        .into_response()
}

static SESSION: AtomicU64 = AtomicU64::new(0);

pub async fn exec(
    config: Config,
    (ns, pod, container): (String, String, String),
    query: String,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else { return not_websocket() };
    let req = StreamRequest::parse(&query);
    if req.command.is_empty() {
        return (StatusCode::BAD_REQUEST, "you must specify at least 1 command").into_response();
    }
    let running = match find_running(&config, &ns, &pod, &container) {
        Ok(r) => r,
        Err((code, msg)) => return (code, msg).into_response(),
    };
    ws.protocols(channel::PROTOCOLS).on_upgrade(move |socket| async move {
        let n = SESSION.fetch_add(1, Ordering::Relaxed);
        let work = config.run_dir.join("exec").join(format!("{}-{n}", std::process::id()));
        tracing::info!(pod = %format!("{ns}/{pod}"), %container, command = ?req.command, tty = req.tty, "exec");
        let outcome = if req.tty { exec_tty(&config, &running, &req, &work, socket).await } else { exec_pipes(&config, &running, &req, &work, socket).await };
        if let Err(e) = outcome {
            tracing::debug!(error = %e, "exec session ended early");
        }
        let _ = tokio::fs::remove_dir_all(&work).await;
    })
}

pub async fn attach(
    config: Config,
    (ns, pod, container): (String, String, String),
    query: String,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let Ok(ws) = ws else { return not_websocket() };
    let req = StreamRequest::parse(&query);
    let running = match find_running(&config, &ns, &pod, &container) {
        Ok(r) => r,
        Err((code, msg)) => return (code, msg).into_response(),
    };
    ws.protocols(channel::PROTOCOLS).on_upgrade(move |socket| async move {
        if let Err(e) = attach_session(&running, &req, socket).await {
            tracing::debug!(error = %e, "attach session ended early");
        }
    })
}

type Out = mpsc::Sender<Message>;

/// Sends everything from `out_rx` to the socket; returns when the channel closes or the client is gone.
async fn write_loop(mut sink: futures::stream::SplitSink<WebSocket, Message>, mut out_rx: mpsc::Receiver<Message>) {
    while let Some(m) = out_rx.recv().await {
        if sink.send(m).await.is_err() {
            return;
        }
    }
    // A normal closure: the client reads it as the end of every stream (1005, "no status", is an error to it).
    let close = axum::extract::ws::CloseFrame { code: axum::extract::ws::close_code::NORMAL, reason: "".into() };
    let _ = sink.send(Message::Close(Some(close))).await;
}

/// Copies a pipe to the socket on `channel` until EOF.
async fn pump(mut from: impl AsyncRead + Unpin, channel: u8, out: Out) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if out.send(Message::Binary(channel::frame(channel, &buf[..n]).into())).await.is_err() {
                    return;
                }
            }
        }
    }
}

async fn finish(out: &Out, command: &[String], outcome: Result<i32, String>) {
    let status = channel::exit_status(command, &outcome);
    let _ = out.send(Message::Binary(channel::frame(channel::ERROR, status.to_string().as_bytes()).into())).await;
}

/// Waits for output pumps after the process ended; a background child holding the pipes may not keep us.
async fn join_pumps(pumps: Vec<tokio::task::JoinHandle<()>>) {
    for p in pumps {
        let abort = p.abort_handle();
        if tokio::time::timeout(Duration::from_millis(500), p).await.is_err() {
            abort.abort();
        }
    }
}

async fn exec_pipes(config: &Config, running: &Running, req: &StreamRequest, work: &std::path::Path, socket: WebSocket) -> std::io::Result<()> {
    tokio::fs::create_dir_all(work).await?;
    let log = work.join("runtime.log");
    let pipe = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
    let spawned = tokio::process::Command::new(&config.runtime_bin)
        .arg("--root")
        .arg(config.runtime_root())
        .arg("--log")
        .arg(&log)
        .arg("exec")
        .arg(&running.id)
        .arg("--")
        .args(&req.command)
        .stdin(pipe(req.stdin))
        .stdout(pipe(req.stdout))
        // The runtime's own errors go to stderr too; without a stderr stream they are still in its log.
        .stderr(pipe(req.stderr))
        .spawn();
    let (sink, mut stream) = socket.split();
    let (out_tx, out_rx) = mpsc::channel(64);
    let writer = tokio::spawn(write_loop(sink, out_rx));
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            finish(&out_tx, &req.command, Err(format!("running {}: {e}", config.runtime_bin.display()))).await;
            drop(out_tx);
            let _ = writer.await;
            return Ok(());
        }
    };
    let mut pumps = vec![];
    if let Some(o) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(o, channel::STDOUT, out_tx.clone())));
    }
    if let Some(e) = child.stderr.take() {
        pumps.push(tokio::spawn(pump(e, channel::STDERR, out_tx.clone())));
    }
    let mut stdin = child.stdin.take();
    let pid = child.id();
    let status = loop {
        tokio::select! {
            s = child.wait() => break s,
            m = stream.next() => match m {
                Some(Ok(Message::Binary(data))) => match channel::decode(&data) {
                    Incoming::Stdin(d) => if let Some(s) = stdin.as_mut() {
                        if s.write_all(d).await.is_err() { stdin = None; }
                    },
                    Incoming::Close(channel::STDIN) => stdin = None,
                    Incoming::Resize(_) | Incoming::Close(_) => {}
                    Incoming::Ignored(why) => tracing::debug!(%why, "exec message ignored"),
                },
                Some(Ok(_)) => {}
                // The client is gone: hang up the command (the runtime forwards SIGHUP to it).
                None | Some(Err(_)) => {
                    stdin = None;
                    if let Some(pid) = pid {
                        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGHUP);
                    }
                    break child.wait().await;
                }
            }
        }
    };
    drop(stdin);
    join_pumps(pumps).await;
    let outcome = match status {
        Ok(s) => match s.code() {
            Some(code) => match runtime_failure(&log).await {
                Some(msg) if code != 0 => Err(msg),
                _ => Ok(code),
            },
            None => Err("the runtime was killed".into()),
        },
        Err(e) => Err(format!("waiting for the runtime: {e}")),
    };
    finish(&out_tx, &req.command, outcome).await;
    drop(out_tx);
    let _ = writer.await;
    Ok(())
}

/// The runtime's own error (as opposed to the command's exit code), from its log.
async fn runtime_failure(log: &std::path::Path) -> Option<String> {
    let text = tokio::fs::read_to_string(log).await.ok()?;
    let line = text.lines().rev().find(|l| l.contains("ERROR") || l.contains("\"level\":\"error\""))?;
    Some(format!("OCI runtime exec failed: {}", line.trim()))
}

async fn exec_tty(config: &Config, running: &Running, req: &StreamRequest, work: &std::path::Path, socket: WebSocket) -> std::io::Result<()> {
    tokio::fs::create_dir_all(work).await?;
    let (sink, mut stream) = socket.split();
    // kubectl sends its terminal size first thing: wait a moment for it so the command starts with the right size
    // (the runtime cannot set it before the command runs). Input that comes first is replayed.
    let mut early: Vec<Vec<u8>> = vec![];
    let mut size = None;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1000);
    while size.is_none() {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(Message::Binary(data)))) => match channel::decode(&data) {
                Incoming::Resize(s) => size = Some(s),
                _ => early.push(data.to_vec()),
            },
            Ok(Some(Ok(_))) => {}
            Ok(None | Some(Err(_))) => return Ok(()),
            Err(_) => break,
        }
    }
    let args = tty::ExecTtyArgs {
        runtime: config.runtime_bin.clone(),
        runtime_root: config.runtime_root(),
        id: running.id.clone(),
        work_dir: work.to_path_buf(),
        size: size.map(|s| format!("{}x{}", s.width, s.height)),
        command: req.command.clone(),
    };
    let exe = std::env::current_exe()?;
    let spawned = tokio::process::Command::new(exe)
        .args(args.to_args())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let (out_tx, out_rx) = mpsc::channel(64);
    let writer = tokio::spawn(write_loop(sink, out_rx));
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) => {
            finish(&out_tx, &req.command, Err(format!("starting the terminal helper: {e}"))).await;
            drop(out_tx);
            let _ = writer.await;
            return Ok(());
        }
    };
    let mut pumps = vec![];
    if let Some(o) = child.stdout.take() {
        pumps.push(tokio::spawn(pump(o, channel::STDOUT, out_tx.clone())));
    }
    let mut errors = child.stderr.take();
    let stderr_task = tokio::spawn(async move {
        let mut s = String::new();
        if let Some(e) = errors.as_mut() {
            let _ = e.read_to_string(&mut s).await;
        }
        s
    });
    let mut stdin = child.stdin.take();
    let send = |f: tty::Frame| f.encode();
    for data in early {
        if let (Incoming::Stdin(d), Some(s)) = (channel::decode(&data), stdin.as_mut()) {
            if s.write_all(&send(tty::Frame::Input(d.to_vec()))).await.is_err() {
                stdin = None;
            }
        }
    }
    let status = loop {
        tokio::select! {
            s = child.wait() => break s,
            m = stream.next() => match m {
                Some(Ok(Message::Binary(data))) => {
                    let frame = match channel::decode(&data) {
                        Incoming::Stdin(d) => Some(tty::Frame::Input(d.to_vec())),
                        Incoming::Resize(size) => Some(tty::Frame::Resize { cols: size.width, rows: size.height }),
                        Incoming::Close(channel::STDIN) => Some(tty::Frame::EndOfInput),
                        Incoming::Close(_) => None,
                        Incoming::Ignored(why) => { tracing::debug!(%why, "exec message ignored"); None }
                    };
                    if let (Some(f), Some(s)) = (frame, stdin.as_mut()) {
                        if s.write_all(&send(f)).await.is_err() { stdin = None; }
                    }
                }
                Some(Ok(_)) => {}
                // The client is gone: closing the helper's input makes it hang up the terminal.
                None | Some(Err(_)) => { stdin = None; break child.wait().await; }
            }
        }
    };
    drop(stdin);
    join_pumps(pumps).await;
    let stderr = stderr_task.await.unwrap_or_default();
    let outcome = match status {
        Err(e) => Err(format!("waiting for the terminal helper: {e}")),
        Ok(_) => helper_result(&stderr),
    };
    finish(&out_tx, &req.command, outcome).await;
    drop(out_tx);
    let _ = writer.await;
    Ok(())
}

/// The helper's result line (the last JSON line of its stderr).
pub fn helper_result(stderr: &str) -> Result<i32, String> {
    let last = stderr.lines().rev().find_map(|l| serde_json::from_str::<serde_json::Value>(l.trim()).ok());
    match last {
        Some(v) if v["exitCode"].is_i64() => Ok(v["exitCode"].as_i64().unwrap_or(0) as i32),
        Some(v) if v["error"].is_string() => Err(v["error"].as_str().unwrap_or_default().to_string()),
        _ => Err(format!("the terminal helper ended without a result: {}", stderr.trim())),
    }
}

/// Streams the container's output (from its CRI log, as it is written) until the container exits.
async fn attach_session(running: &Running, req: &StreamRequest, socket: WebSocket) -> std::io::Result<()> {
    let (sink, mut stream) = socket.split();
    let (out_tx, out_rx) = mpsc::channel(64);
    let writer = tokio::spawn(write_loop(sink, out_rx));
    let mut offset = tokio::fs::metadata(&running.log_file).await.map(|m| m.len()).unwrap_or(0);
    // The container's stdin, through its monitor (containers with `stdin: true` only; others ignore input as the
    // kubelet does for them).
    let mut input = if req.stdin {
        tokio::net::UnixStream::connect(running.state_dir.join(crate::container::stdin::ATTACH_SOCKET)).await.ok()
    } else {
        None
    };
    loop {
        let data = tokio::fs::read(&running.log_file).await.unwrap_or_default();
        let end = data.iter().rposition(|&b| b == b'\n').map(|i| i + 1).unwrap_or(0) as u64;
        if end > offset {
            for line in String::from_utf8_lossy(&data[offset as usize..end as usize]).lines() {
                let Some((_, stream_name, partial, text)) = crate::logs::parse_line(line) else { continue };
                let ch = match (stream_name, req.tty) {
                    ("stderr", false) if req.stderr => channel::STDERR,
                    ("stderr", false) => continue,
                    _ if req.stdout => channel::STDOUT,
                    _ => continue,
                };
                let mut bytes = text.as_bytes().to_vec();
                if !partial {
                    bytes.push(b'\n');
                }
                if out_tx.send(Message::Binary(channel::frame(ch, &bytes).into())).await.is_err() {
                    return Ok(());
                }
            }
            offset = end;
        }
        if running.state_dir.join(EXIT).exists() && end <= offset {
            break;
        }
        tokio::select! {
            // A terminal session is interactive: look at the output more often.
            _ = tokio::time::sleep(Duration::from_millis(if req.tty { 40 } else { 200 })) => {}
            m = stream.next() => match m {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Ok(()),
                Some(Ok(Message::Binary(data))) => {
                    let frame = match channel::decode(&data) {
                        Incoming::Stdin(d) => Some(Frame::Input(d.to_vec())),
                        Incoming::Resize(size) => Some(Frame::Resize { cols: size.width, rows: size.height }),
                        // End of input from this session (v5): the monitor decides what that means (stdinOnce).
                        Incoming::Close(channel::STDIN) => Some(Frame::EndOfInput),
                        _ => None,
                    };
                    if let (Some(f), Some(w)) = (frame, input.as_mut()) {
                        let end = f == Frame::EndOfInput;
                        if w.write_all(&f.encode()).await.is_err() || end {
                            input = None;
                        }
                    }
                }
                Some(Ok(_)) => {}
            },
        }
    }
    drop(input);
    finish(&out_tx, &[], Ok(0)).await;
    drop(out_tx);
    let _ = writer.await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubectls_query() {
        let r = StreamRequest::parse("command=sh&command=-c&command=echo+a%26b&container=c&stdin=true&stdout=true&tty=true&stderr=true");
        assert_eq!(r.command, ["sh", "-c", "echo a&b"]);
        assert!(r.stdin && r.stdout && r.tty && !r.stderr);
        let r = StreamRequest::parse("command=ls&stdout=1&stderr=true");
        assert!(!r.stdin && r.stdout && r.stderr && !r.tty);
    }

    #[test]
    fn helper_results() {
        assert_eq!(helper_result("noise\n{\"exitCode\":3}\n"), Ok(3));
        assert_eq!(helper_result("{\"error\":\"no such file\"}"), Err("no such file".into()));
        assert!(helper_result("").is_err());
    }
}
