//! Events about pods (core/v1 `Event`s, what `kubectl describe` and `kubectl get events` show), with the reasons
//! and messages the kubelet uses. Recording never blocks a pod worker: events go through a bounded channel to one
//! task that writes them, folding a repeat of the same (object, reason, message) into a `count` bump as upstream's
//! event correlator does. A full channel or a failed write drops the event with a debug line: events are
//! best-effort, as in Kubernetes.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::mpsc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Normal,
    Warning,
}

/// One event to record about a pod (and, with `field_path`, one of its containers).
#[derive(Clone, Debug)]
pub struct PodEvent {
    pub namespace: String,
    pub pod: String,
    pub uid: String,
    pub field_path: Option<String>,
    pub kind: Kind,
    pub reason: &'static str,
    pub message: String,
}

impl PodEvent {
    pub fn new(pod: &Pod, container: Option<&str>, kind: Kind, reason: &'static str, message: impl Into<String>) -> PodEvent {
        PodEvent {
            namespace: pod.namespace().unwrap_or_default(),
            pod: pod.name_any(),
            uid: pod.uid().unwrap_or_default(),
            field_path: container.map(|c| format!("spec.containers{{{c}}}")),
            kind,
            reason,
            message: message.into(),
        }
    }
}

#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<PodEvent>,
}

impl Recorder {
    /// Starts the writer task; `host` is the node name (the event's source host).
    pub fn start(client: kube::Client, host: String) -> Recorder {
        let (tx, rx) = mpsc::channel(1024);
        tokio::spawn(write_loop(client, host, rx));
        Recorder { tx }
    }

    /// A recorder whose events go nowhere but `rx` (tests).
    pub fn channel() -> (Recorder, mpsc::Receiver<PodEvent>) {
        let (tx, rx) = mpsc::channel(1024);
        (Recorder { tx }, rx)
    }

    pub fn record(&self, e: PodEvent) {
        tracing::debug!(reason = e.reason, message = %e.message, "event");
        if self.tx.try_send(e).is_err() {
            tracing::debug!("event dropped: the event queue is full");
        }
    }
}

fn key(e: &PodEvent) -> String {
    format!("{}\u{0}{}\u{0}{}\u{0}{}", e.uid, e.field_path.as_deref().unwrap_or(""), e.reason, e.message)
}

/// The Event object for a first occurrence.
pub fn event_object(e: &PodEvent, host: &str, now: DateTime<Utc>) -> serde_json::Value {
    let t = now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let mut involved = json!({"apiVersion": "v1", "kind": "Pod", "name": e.pod, "namespace": e.namespace, "uid": e.uid});
    if let Some(f) = &e.field_path {
        involved["fieldPath"] = json!(f);
    }
    json!({
        "metadata": {"generateName": format!("{}.", e.pod), "namespace": e.namespace},
        "involvedObject": involved,
        "reason": e.reason,
        "message": e.message,
        "type": if e.kind == Kind::Warning { "Warning" } else { "Normal" },
        "count": 1,
        "firstTimestamp": t,
        "lastTimestamp": t,
        "source": {"component": "kubelet", "host": host},
        "reportingComponent": "kubelet",
        "reportingInstance": host,
    })
}

async fn write_loop(client: kube::Client, host: String, mut rx: mpsc::Receiver<PodEvent>) {
    // (key) → (event name, count, first seen); bounded: cleared when it grows past a few thousand entries.
    let mut seen: HashMap<String, (String, i32, DateTime<Utc>)> = HashMap::new();
    while let Some(e) = rx.recv().await {
        let now = Utc::now();
        let api: Api<Event> = Api::namespaced(client.clone(), &e.namespace);
        let k = key(&e);
        if let Some((name, count, first)) = seen.get_mut(&k) {
            if now - *first < chrono::Duration::minutes(10) {
                *count += 1;
                let patch = json!({"count": *count, "lastTimestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)});
                if api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await.is_ok() {
                    continue;
                }
            }
        }
        let obj: Event = match serde_json::from_value(event_object(&e, &host, now)) {
            Ok(o) => o,
            Err(err) => {
                tracing::debug!(error = %err, "event not representable");
                continue;
            }
        };
        match api.create(&PostParams::default(), &obj).await {
            Ok(created) => {
                if seen.len() > 4096 {
                    seen.clear();
                }
                seen.insert(k, (created.name_any(), 1, now));
            }
            Err(err) => tracing::debug!(error = %err, reason = e.reason, "could not record an event"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_objects_look_like_the_kubelets() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u1"}})).unwrap();
        let e = PodEvent::new(&pod, Some("c"), Kind::Warning, "BackOff", "Back-off restarting failed container c");
        let v = event_object(&e, "node-1", DateTime::from_timestamp(0, 0).unwrap());
        assert_eq!(v["involvedObject"]["fieldPath"], "spec.containers{c}");
        assert_eq!(v["type"], "Warning");
        assert_eq!(v["source"], json!({"component": "kubelet", "host": "node-1"}));
        assert_eq!(v["metadata"]["generateName"], "p.");
        let _: Event = serde_json::from_value(v).unwrap();
        let same = PodEvent::new(&pod, Some("c"), Kind::Warning, "BackOff", "Back-off restarting failed container c");
        assert_eq!(key(&e), key(&same));
    }
}
