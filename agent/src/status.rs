//! PodStatus from what the worker observed. Pure.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

use crate::container::container_id;
use crate::container::state::Attempt;
use crate::pods::actions::Observed;

/// Why a container is waiting, as the worker knows it (image pull errors, back-off).
pub type Waiting = std::collections::BTreeMap<String, (String, String)>;

fn ts(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn terminated(uid: &str, name: &str, a: &Attempt) -> Option<Value> {
    let e = a.exited.as_ref()?;
    let mut v = json!({"exitCode": e.exit_code, "reason": e.reason, "finishedAt": ts(&e.finished_at),
                       "containerID": format!("skiff://{}", container_id(uid, name, a.restart))});
    if let Some(s) = &a.started {
        v["startedAt"] = json!(ts(&s.started_at));
    }
    if !e.message.is_empty() {
        v["message"] = json!(e.message);
    }
    Some(v)
}

/// QoS class from the containers' requests and limits.
pub fn qos_class(pod: &Pod) -> &'static str {
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let r = c.resources.as_ref();
        let limits = r.and_then(|r| r.limits.as_ref());
        let requests = r.and_then(|r| r.requests.as_ref());
        for res in ["cpu", "memory"] {
            let l = limits.and_then(|l| l.get(res));
            let q = requests.and_then(|q| q.get(res)).or(l);
            any |= l.is_some() || q.is_some();
            guaranteed &= l.is_some() && q == l;
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        _ => "Burstable",
    }
}

pub struct StatusInputs<'a> {
    pub pod: &'a Pod,
    pub observed: &'a Observed,
    pub waiting: &'a Waiting,
    /// Probe results of running containers; a running container without an entry is started and ready.
    pub health: &'a std::collections::BTreeMap<String, crate::probes::Health>,
    pub host_ip: String,
    pub pod_ip: Option<String>,
    pub start_time: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

pub fn render(i: &StatusInputs) -> Value {
    let uid = i.pod.metadata.uid.as_deref().unwrap_or_default();
    let spec = i.pod.spec.as_ref();
    let policy = spec.and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always");
    let mut statuses = vec![];
    let (mut all_ready, mut any_running, mut all_done, mut any_failed, mut any_started) = (true, false, true, false, false);
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        let attempts = i.observed.attempts.get(&c.name).map(Vec::as_slice).unwrap_or_default();
        let last = attempts.last();
        let restart_count = last.map(|a| a.restart).unwrap_or(0);
        let running = last.is_some_and(|a| a.started.is_some() && a.exited.is_none());
        let health = i.health.get(&c.name).filter(|h| Some(h.restart) == last.map(|a| a.restart));
        let ready = running && health.is_none_or(|h| h.ready);
        let started = running && health.is_none_or(|h| h.started);
        let mut st = json!({"name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                            "restartCount": restart_count, "ready": ready, "started": started});
        let waiting = i.waiting.get(&c.name);
        match (last, waiting) {
            (Some(a), None) if running => {
                let s = a.started.as_ref().map(|s| ts(&s.started_at)).unwrap_or_default();
                st["state"] = json!({"running": {"startedAt": s}});
                st["containerID"] = json!(format!("skiff://{}", container_id(uid, &c.name, a.restart)));
            }
            (Some(a), w) if a.exited.is_some() => {
                let t = terminated(uid, &c.name, a).unwrap_or_default();
                st["containerID"] = t["containerID"].clone();
                let code = a.exited.as_ref().map(|e| e.exit_code).unwrap_or(0);
                any_failed |= code != 0;
                match w {
                    Some((reason, message)) => {
                        st["state"] = json!({"waiting": {"reason": reason, "message": message}});
                        st["lastState"] = json!({"terminated": t});
                        all_done = false;
                    }
                    None => st["state"] = json!({"terminated": t}),
                }
            }
            (_, Some((reason, message))) => {
                st["state"] = json!({"waiting": {"reason": reason, "message": message}});
                all_done = false;
            }
            _ => {
                st["state"] = json!({"waiting": {"reason": "ContainerCreating"}});
                all_done = false;
            }
        }
        if let Some(prev) = attempts.len().checked_sub(2).and_then(|k| terminated(uid, &c.name, &attempts[k])) {
            if st.get("lastState").is_none() {
                st["lastState"] = json!({"terminated": prev});
            }
        }
        if !ready {
            all_ready = false;
        }
        any_running |= running;
        any_started |= last.is_some();
        statuses.push(st);
    }
    let phase = if any_running || (any_started && !all_done) {
        "Running"
    } else if any_started && all_done {
        if any_failed && policy != "Always" {
            "Failed"
        } else if !any_failed && policy != "Always" {
            "Succeeded"
        } else {
            "Running"
        }
    } else {
        "Pending"
    };
    let cond = |t: &str, ok: bool| {
        json!({"type": t, "status": if ok { "True" } else { "False" }, "lastProbeTime": null, "lastTransitionTime": null})
    };
    let ready = all_ready && !statuses.is_empty();
    let mut status = json!({
        "phase": phase,
        "conditions": [cond("PodScheduled", true), cond("Initialized", true), cond("ContainersReady", ready), cond("Ready", ready)],
        "containerStatuses": statuses,
        "hostIP": i.host_ip, "hostIPs": [{"ip": i.host_ip}],
        "startTime": ts(&i.start_time),
        "qosClass": qos_class(i.pod),
    });
    if let Some(ip) = &i.pod_ip {
        status["podIP"] = json!(ip);
        status["podIPs"] = json!([{"ip": ip}]);
    }
    let _ = i.now;
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::state::{Exited, Started};

    fn pod(policy: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "uid": "u"},
            "spec": {"restartPolicy": policy, "containers": [{"name": "c", "image": "busybox"}]}}))
        .unwrap()
    }

    fn render_with(p: &Pod, attempts: Vec<Attempt>, waiting: Waiting) -> Value {
        let observed = Observed { sandbox_ready: true, attempts: [("c".to_string(), attempts)].into(), ..Default::default() };
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        render(&StatusInputs { pod: p, observed: &observed, waiting: &waiting, health: &Default::default(), host_ip: "10.0.0.1".into(),
                               pod_ip: Some("10.244.0.2".into()), start_time: now, now })
    }

    fn attempt(exit: Option<i32>) -> Attempt {
        let t = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        Attempt { restart: 0, dir: Default::default(), started: Some(Started { monitor_pid: 1, pid: 2, started_at: t }),
                  exited: exit.map(|c| Exited { exit_code: c, finished_at: t, reason: "Error".into(), message: String::new() }) }
    }

    #[test]
    fn running_pod_is_ready() {
        let s = render_with(&pod("Always"), vec![attempt(None)], Waiting::new());
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["conditions"][3]["status"], "True");
        assert_eq!(s["podIP"], "10.244.0.2");
        assert_eq!(s["qosClass"], "BestEffort");
        assert!(s["containerStatuses"][0]["state"]["running"].is_object());
    }

    #[test]
    fn phases_of_finished_pods() {
        assert_eq!(render_with(&pod("Never"), vec![attempt(Some(0))], Waiting::new())["phase"], "Succeeded");
        assert_eq!(render_with(&pod("Never"), vec![attempt(Some(2))], Waiting::new())["phase"], "Failed");
        assert_eq!(render_with(&pod("Always"), vec![], Waiting::new())["phase"], "Pending");
        let w: Waiting = [("c".to_string(), ("CrashLoopBackOff".to_string(), "back-off".to_string()))].into();
        let s = render_with(&pod("Always"), vec![attempt(Some(1))], w);
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["containerStatuses"][0]["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(s["containerStatuses"][0]["lastState"]["terminated"]["exitCode"], 1);
    }

    #[test]
    fn image_pull_errors_keep_the_pod_pending() {
        let w: Waiting = [("c".to_string(), ("ErrImagePull".to_string(), "not found".to_string()))].into();
        let s = render_with(&pod("Always"), vec![], w);
        assert_eq!(s["phase"], "Pending");
        assert_eq!(s["containerStatuses"][0]["state"]["waiting"]["reason"], "ErrImagePull");
    }
}
