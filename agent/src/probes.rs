//! Probes (startup, liveness, readiness) and lifecycle hooks (postStart, preStop), as the kubelet's prober runs them.
//!
//! - Handlers: `exec` runs the command in the container through `skiff-runtime exec` (exit 0 = success); `httpGet`
//!   asks the pod's IP (or `host`) from the node — the bridge routes to it — and takes 200–399 as success, without
//!   verifying certificates for HTTPS, as the kubelet; `tcpSocket` succeeds when a connection opens; `sleep` (hooks
//!   only) waits. gRPC probes are not supported yet and fail with a message saying so.
//! - One task per started container attempt with probes ([`probe_loop`]): the startup probe runs until it succeeds
//!   (then liveness and readiness start), each probe on its own period after its initial delay, with success and
//!   failure thresholds. Readiness lands in the shared [`HealthMap`] and wakes the worker to rewrite the status;
//!   a liveness or startup failure stops the container (preStop, TERM, grace, KILL) and the restart policy decides.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, HTTPGetAction, LifecycleHandler, Pod, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::container::runtime::Runtime;
use crate::container::state::EXIT;
use crate::events::{Kind, PodEvent, Recorder};

/// What a probe or hook does, resolved against the container (named ports) and the pod IP.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Handler {
    Exec(Vec<String>),
    Http { scheme: String, host: String, port: u16, path: String, headers: Vec<(String, String)> },
    Tcp { host: String, port: u16 },
    Sleep(u64),
    Unsupported(String),
}

fn resolve_port(port: &IntOrString, c: &Container) -> Result<u16, String> {
    match port {
        IntOrString::Int(p) => u16::try_from(*p).ok().filter(|p| *p > 0).ok_or_else(|| format!("invalid port {p}")),
        IntOrString::String(s) => {
            if let Ok(p) = s.parse::<u16>() {
                return Ok(p);
            }
            c.ports
                .iter()
                .flatten()
                .find(|p| p.name.as_deref() == Some(s.as_str()))
                .and_then(|p| u16::try_from(p.container_port).ok())
                .ok_or_else(|| format!("couldn't find port {s:?} in container {:?}", c.name))
        }
    }
}

fn http(h: &HTTPGetAction, c: &Container, pod_ip: &str) -> Result<Handler, String> {
    let mut path = h.path.clone().unwrap_or_default();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    Ok(Handler::Http {
        scheme: h.scheme.clone().unwrap_or_else(|| "HTTP".into()).to_lowercase(),
        host: h.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| pod_ip.to_string()),
        port: resolve_port(&h.port, c)?,
        path,
        headers: h.http_headers.iter().flatten().map(|x| (x.name.clone(), x.value.clone())).collect(),
    })
}

pub fn probe_handler(p: &Probe, c: &Container, pod_ip: &str) -> Result<Handler, String> {
    if let Some(e) = &p.exec {
        return Ok(Handler::Exec(e.command.clone().unwrap_or_default()));
    }
    if let Some(h) = &p.http_get {
        return http(h, c, pod_ip);
    }
    if let Some(t) = &p.tcp_socket {
        let host = t.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| pod_ip.to_string());
        return Ok(Handler::Tcp { host, port: resolve_port(&t.port, c)? });
    }
    if p.grpc.is_some() {
        return Ok(Handler::Unsupported("gRPC probes are not supported by skiff-agent yet".into()));
    }
    Err("probe has no handler (exec, httpGet, tcpSocket or grpc)".into())
}

pub fn hook_handler(h: &LifecycleHandler, c: &Container, pod_ip: &str) -> Result<Handler, String> {
    if let Some(e) = &h.exec {
        return Ok(Handler::Exec(e.command.clone().unwrap_or_default()));
    }
    if let Some(x) = &h.http_get {
        return http(x, c, pod_ip);
    }
    if let Some(s) = &h.sleep {
        return Ok(Handler::Sleep(s.seconds.max(0) as u64));
    }
    if let Some(t) = &h.tcp_socket {
        let host = t.host.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| pod_ip.to_string());
        return Ok(Handler::Tcp { host, port: resolve_port(&t.port, c)? });
    }
    Err("lifecycle hook has no handler".into())
}

fn addr(host: &str, port: u16) -> Result<SocketAddr, String> {
    host.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, port)).map_err(|_| format!("host {host:?} is not an IP address"))
}

/// Runs a handler once; `Err` carries the failure message (upstream's wording where there is one).
pub async fn run(handler: &Handler, runtime: &Runtime, container_id: &str, timeout: Duration) -> Result<(), String> {
    let work = async {
        match handler {
            Handler::Exec(cmd) => {
                if cmd.is_empty() {
                    return Err("exec handler has no command".to_string());
                }
                let mut args = vec!["exec", container_id, "--"];
                args.extend(cmd.iter().map(String::as_str));
                runtime.run_output(&args).await
            }
            Handler::Http { scheme, host, port, path, headers } => {
                let url = format!("{scheme}://{}{path}", SocketAddr::new(host.parse().map_err(|_| format!("host {host:?} is not an IP address"))?, *port));
                let client = reqwest::Client::builder()
                    .danger_accept_invalid_certs(true)
                    .timeout(timeout)
                    .build()
                    .map_err(|e| e.to_string())?;
                let mut req = client.get(&url).header("User-Agent", "kube-probe/1.32").header("Accept", "*/*");
                for (k, v) in headers {
                    req = req.header(k.as_str(), v.as_str());
                }
                let resp = req.send().await.map_err(|e| format!("Get {url:?}: {}", root_cause(&e)))?;
                let code = resp.status().as_u16();
                if (200..400).contains(&code) {
                    Ok(())
                } else {
                    Err(format!("HTTP probe failed with statuscode: {code}"))
                }
            }
            Handler::Tcp { host, port } => {
                let a = addr(host, *port)?;
                tokio::net::TcpStream::connect(a).await.map(|_| ()).map_err(|e| format!("dial tcp {a}: connect: {e}"))
            }
            Handler::Sleep(secs) => {
                tokio::time::sleep(Duration::from_secs(*secs)).await;
                Ok(())
            }
            Handler::Unsupported(why) => Err(why.clone()),
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("command timed out after {}s", timeout.as_secs())),
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &dyn std::error::Error = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Probe state of a container's current attempt, shared between its probe task and the pod worker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Health {
    pub restart: u32,
    /// The startup probe passed (true without one).
    pub started: bool,
    /// The readiness probe passed (true without one, once started).
    pub ready: bool,
}

pub type HealthMap = Arc<Mutex<BTreeMap<String, Health>>>;

/// Upstream's defaults: period 10 s, timeout 1 s, success 1, failure 3, no initial delay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    pub fn of(p: &Probe) -> Timing {
        let secs = |v: Option<i32>, d: i32, min: i32| Duration::from_secs(v.unwrap_or(d).max(min) as u64);
        Timing {
            initial_delay: secs(p.initial_delay_seconds, 0, 0),
            period: secs(p.period_seconds, 10, 1),
            timeout: secs(p.timeout_seconds, 1, 1),
            success_threshold: p.success_threshold.unwrap_or(1).max(1) as u32,
            failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Which {
    Startup,
    Liveness,
    Readiness,
}

impl Which {
    fn name(self) -> &'static str {
        match self {
            Which::Startup => "Startup",
            Which::Liveness => "Liveness",
            Which::Readiness => "Readiness",
        }
    }
}

/// Consecutive results of one probe → its verdict, with the thresholds. Pure.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    successes: u32,
    failures: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Fail,
    Undecided,
}

impl Counter {
    pub fn record(&mut self, ok: bool, t: &Timing) -> Verdict {
        if ok {
            self.failures = 0;
            self.successes += 1;
            if self.successes >= t.success_threshold {
                return Verdict::Pass;
            }
        } else {
            self.successes = 0;
            self.failures += 1;
            if self.failures >= t.failure_threshold {
                return Verdict::Fail;
            }
        }
        Verdict::Undecided
    }
}

/// Everything a container's probe task needs.
pub struct ProbeTarget {
    pub runtime: Runtime,
    pub events: Recorder,
    pub pod: Pod,
    pub container: Container,
    pub restart: u32,
    pub container_id: String,
    pub pod_ip: String,
    pub state_dir: std::path::PathBuf,
    pub grace: Duration,
}

pub fn has_probes(c: &Container) -> bool {
    c.startup_probe.is_some() || c.liveness_probe.is_some() || c.readiness_probe.is_some()
}

/// The health a container attempt starts with.
pub fn initial_health(c: &Container, restart: u32) -> Health {
    let started = c.startup_probe.is_none();
    Health { restart, started, ready: started && c.readiness_probe.is_none() }
}

fn set_health(health: &HealthMap, name: &str, f: impl FnOnce(&mut Health)) -> bool {
    let mut map = health.lock().unwrap_or_else(|e| e.into_inner());
    match map.get_mut(name) {
        Some(h) => {
            let before = *h;
            f(h);
            before != *h
        }
        None => false,
    }
}

/// Runs the container's probes until it exits or the task is aborted.
pub async fn probe_loop(t: ProbeTarget, health: HealthMap, wake: Arc<Notify>) {
    let c = &t.container;
    let name = c.name.clone();
    let start = Instant::now();
    let mut probes: Vec<(Which, Handler, Timing, Counter, Instant)> = vec![];
    for (which, p) in [(Which::Startup, &c.startup_probe), (Which::Liveness, &c.liveness_probe), (Which::Readiness, &c.readiness_probe)] {
        let Some(p) = p else { continue };
        let timing = Timing::of(p);
        match probe_handler(p, c, &t.pod_ip) {
            Ok(h) => probes.push((which, h, timing, Counter::default(), start + timing.initial_delay)),
            Err(e) => t.events.record(PodEvent::new(&t.pod, Some(&name), Kind::Warning, "Unhealthy", format!("{} probe errored: {e}", which.name()))),
        }
    }
    loop {
        if t.state_dir.join(EXIT).exists() {
            return;
        }
        let started = health.lock().unwrap_or_else(|e| e.into_inner()).get(&name).is_some_and(|h| h.started);
        let now = Instant::now();
        let mut next = now + Duration::from_secs(1);
        for (which, handler, timing, counter, due) in probes.iter_mut() {
            let active = match which {
                Which::Startup => !started,
                _ => started,
            };
            if !active {
                continue;
            }
            if *due > now {
                next = next.min(*due);
                continue;
            }
            *due = now + timing.period;
            next = next.min(*due);
            let result = run(handler, &t.runtime, &t.container_id, timing.timeout).await;
            if t.state_dir.join(EXIT).exists() {
                return;
            }
            if let Err(msg) = &result {
                t.events.record(PodEvent::new(&t.pod, Some(&name), Kind::Warning, "Unhealthy", format!("{} probe failed: {msg}", which.name())));
            }
            match (*which, counter.record(result.is_ok(), timing)) {
                (Which::Startup, Verdict::Pass) => {
                    set_health(&health, &name, |h| {
                        h.started = true;
                        h.ready = c.readiness_probe.is_none();
                    });
                    wake.notify_one();
                }
                (Which::Readiness, v @ (Verdict::Pass | Verdict::Fail)) if set_health(&health, &name, |h| h.ready = v == Verdict::Pass) => {
                    wake.notify_one();
                }
                (Which::Startup | Which::Liveness, Verdict::Fail) => {
                    let what = if *which == Which::Startup { "startup" } else { "liveness" };
                    t.events.record(PodEvent::new(&t.pod, Some(&name), Kind::Normal, "Killing", format!("Container {name} failed {what} probe, will be restarted")));
                    set_health(&health, &name, |h| h.ready = false);
                    wake.notify_one();
                    let ctx = Ctx { runtime: &t.runtime, events: &t.events, pod: &t.pod, container: c, id: &t.container_id, pod_ip: &t.pod_ip };
                    stop_container(&ctx, &t.state_dir, t.grace).await;
                    return;
                }
                _ => {}
            }
        }
        tokio::time::sleep_until(next).await;
    }
}

/// One container of a pod, for hooks and stopping.
pub struct Ctx<'a> {
    pub runtime: &'a Runtime,
    pub events: &'a Recorder,
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub id: &'a str,
    pub pod_ip: &'a str,
}

/// Stops one container: its preStop hook (within the grace period), SIGTERM, then SIGKILL when the grace period is
/// over. Returns once it exited (or 10 s after the SIGKILL).
pub async fn stop_container(ctx: &Ctx<'_>, state_dir: &std::path::Path, grace: Duration) {
    let (runtime, c, id) = (ctx.runtime, ctx.container, ctx.id);
    let deadline = Instant::now() + grace;
    let _ = tokio::time::timeout_at(deadline, run_pre_stop(ctx, grace)).await;
    if let Err(e) = runtime.kill(id, "TERM").await {
        tracing::debug!(container = %c.name, error = %e, "SIGTERM failed");
    }
    let exited = || state_dir.join(EXIT).exists() || !runtime.exists(id);
    while !exited() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    if !exited() {
        let _ = runtime.kill(id, "KILL").await;
        let until = Instant::now() + Duration::from_secs(10);
        while !exited() && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Runs the container's preStop hook, if any, for at most `grace`; a failure is an event, not a reason to wait.
pub async fn run_pre_stop(ctx: &Ctx<'_>, grace: Duration) {
    let c = ctx.container;
    let Some(h) = c.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) else { return };
    let result = match hook_handler(h, c, ctx.pod_ip) {
        Ok(handler) => run(&handler, ctx.runtime, ctx.id, grace.max(Duration::from_secs(1))).await,
        Err(e) => Err(e),
    };
    if let Err(e) = result {
        ctx.events.record(PodEvent::new(ctx.pod, Some(&c.name), Kind::Warning, "FailedPreStopHook", format!("PreStopHook failed: {e}")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(v: serde_json::Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn handlers_resolve_named_ports_and_the_pod_ip() {
        let c = container(json!({"name": "c", "ports": [{"name": "http", "containerPort": 8080}],
            "livenessProbe": {"httpGet": {"port": "http", "path": "healthz"}},
            "readinessProbe": {"tcpSocket": {"port": 9000}},
            "startupProbe": {"exec": {"command": ["cat", "/ready"]}}}));
        assert_eq!(
            probe_handler(c.liveness_probe.as_ref().unwrap(), &c, "10.244.0.5"),
            Ok(Handler::Http { scheme: "http".into(), host: "10.244.0.5".into(), port: 8080, path: "/healthz".into(), headers: vec![] })
        );
        assert_eq!(probe_handler(c.readiness_probe.as_ref().unwrap(), &c, "10.1.1.1"), Ok(Handler::Tcp { host: "10.1.1.1".into(), port: 9000 }));
        assert_eq!(probe_handler(c.startup_probe.as_ref().unwrap(), &c, "x"), Ok(Handler::Exec(vec!["cat".into(), "/ready".into()])));
        let bad = container(json!({"name": "c", "livenessProbe": {"httpGet": {"port": "nope"}}}));
        assert!(probe_handler(bad.liveness_probe.as_ref().unwrap(), &bad, "x").unwrap_err().contains("nope"));
        let grpc = container(json!({"name": "c", "livenessProbe": {"grpc": {"port": 1}}}));
        assert!(matches!(probe_handler(grpc.liveness_probe.as_ref().unwrap(), &grpc, "x"), Ok(Handler::Unsupported(_))));
    }

    #[test]
    fn thresholds_decide() {
        let t = Timing::of(&serde_json::from_value(json!({"successThreshold": 2, "failureThreshold": 2})).unwrap());
        let mut c = Counter::default();
        assert_eq!(c.record(true, &t), Verdict::Undecided);
        assert_eq!(c.record(true, &t), Verdict::Pass);
        assert_eq!(c.record(false, &t), Verdict::Undecided);
        assert_eq!(c.record(true, &t), Verdict::Undecided);
        assert_eq!(c.record(false, &t), Verdict::Undecided);
        assert_eq!(c.record(false, &t), Verdict::Fail);
        let d = Timing::of(&Probe::default());
        assert_eq!((d.period, d.timeout, d.success_threshold, d.failure_threshold), (Duration::from_secs(10), Duration::from_secs(1), 1, 3));
    }

    #[test]
    fn initial_health_follows_the_probes() {
        assert_eq!(initial_health(&container(json!({"name": "c"})), 0), Health { restart: 0, started: true, ready: true });
        let r = container(json!({"name": "c", "readinessProbe": {"tcpSocket": {"port": 1}}}));
        assert_eq!(initial_health(&r, 1), Health { restart: 1, started: true, ready: false });
        let s = container(json!({"name": "c", "startupProbe": {"tcpSocket": {"port": 1}}}));
        assert_eq!(initial_health(&s, 0), Health { restart: 0, started: false, ready: false });
    }

    #[tokio::test]
    async fn tcp_and_http_handlers_against_a_local_server() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else { return };
                tokio::spawn(async move {
                    use tokio::io::{AsyncReadExt, AsyncWriteExt};
                    let mut buf = [0u8; 1024];
                    let n = s.read(&mut buf).await.unwrap_or(0);
                    let req = String::from_utf8_lossy(&buf[..n]);
                    let code = if req.starts_with("GET /ok ") { "200 OK" } else { "500 Internal Server Error" };
                    let _ = s.write_all(format!("HTTP/1.1 {code}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").as_bytes()).await;
                });
            }
        });
        let rt = Runtime { bin: "/nonexistent".into(), root: "/nonexistent".into() };
        let t = Duration::from_secs(2);
        let h = |path: &str| Handler::Http { scheme: "http".into(), host: "127.0.0.1".into(), port, path: path.into(), headers: vec![] };
        assert_eq!(run(&Handler::Tcp { host: "127.0.0.1".into(), port }, &rt, "x", t).await, Ok(()));
        assert_eq!(run(&h("/ok"), &rt, "x", t).await, Ok(()));
        assert_eq!(run(&h("/bad"), &rt, "x", t).await, Err("HTTP probe failed with statuscode: 500".into()));
        // A closed port fails.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let cport = closed.local_addr().unwrap().port();
        drop(closed);
        assert!(run(&Handler::Tcp { host: "127.0.0.1".into(), port: cport }, &rt, "x", t).await.is_err());
    }
}
