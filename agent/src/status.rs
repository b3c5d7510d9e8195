//! PodStatus from what the worker observed. Pure.

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{json, Value};

use crate::container::container_id;
use crate::container::state::Attempt;
use crate::pods::actions::{init_status, Desired, InitStatus, Observed};

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

/// One container's status and the facts the pod's phase and conditions are made of.
struct One {
    status: Value,
    running: bool,
    /// Running and, with probes, ready.
    ready: bool,
    started: bool,
    /// Terminated, not about to restart.
    done: bool,
    /// The last run exited non-zero.
    failed: bool,
    /// Terminated with exit code 0.
    succeeded: bool,
}

fn container_status(uid: &str, c: &Container, i: &StatusInputs, default_reason: &str) -> One {
    let attempts = i.observed.attempts.get(&c.name).map(Vec::as_slice).unwrap_or_default();
    let last = attempts.last();
    let restart_count = last.map(|a| a.restart).unwrap_or(0);
    let running = last.is_some_and(|a| a.started.is_some() && a.exited.is_none());
    let health = i.health.get(&c.name).filter(|h| Some(h.restart) == last.map(|a| a.restart));
    let ready = running && health.is_none_or(|h| h.ready);
    let started = running && health.is_none_or(|h| h.started);
    let mut st = json!({"name": c.name, "image": c.image.clone().unwrap_or_default(), "imageID": "",
                        "restartCount": restart_count, "ready": ready, "started": started});
    let (mut done, mut failed, mut succeeded) = (true, false, false);
    match (last, i.waiting.get(&c.name)) {
        (Some(a), None) if running => {
            let s = a.started.as_ref().map(|s| ts(&s.started_at)).unwrap_or_default();
            st["state"] = json!({"running": {"startedAt": s}});
            st["containerID"] = json!(format!("skiff://{}", container_id(uid, &c.name, a.restart)));
            done = false;
        }
        (Some(a), w) if a.exited.is_some() => {
            let t = terminated(uid, &c.name, a).unwrap_or_default();
            st["containerID"] = t["containerID"].clone();
            let code = a.exited.as_ref().map(|e| e.exit_code).unwrap_or(0);
            failed = code != 0;
            match w {
                Some((reason, message)) => {
                    st["state"] = json!({"waiting": {"reason": reason, "message": message}});
                    st["lastState"] = json!({"terminated": t});
                    done = false;
                }
                None => {
                    st["state"] = json!({"terminated": t});
                    succeeded = code == 0;
                }
            }
        }
        (_, Some((reason, message))) => {
            st["state"] = json!({"waiting": {"reason": reason, "message": message}});
            done = false;
        }
        _ => {
            st["state"] = json!({"waiting": {"reason": default_reason}});
            done = false;
        }
    }
    if let Some(prev) = attempts.len().checked_sub(2).and_then(|k| terminated(uid, &c.name, &attempts[k])) {
        if st.get("lastState").is_none() {
            st["lastState"] = json!({"terminated": prev});
        }
    }
    One { status: st, running, ready, started: last.is_some(), done, failed, succeeded }
}

pub fn render(i: &StatusInputs) -> Value {
    let uid = i.pod.metadata.uid.as_deref().unwrap_or_default();
    let spec = i.pod.spec.as_ref();
    let policy = spec.and_then(|s| s.restart_policy.as_deref()).unwrap_or("Always");
    let desired = Desired::from_pod(i.pod);
    let init = init_status(&desired, i.observed);
    let initialized = init == InitStatus::Done;

    // Init containers: waiting PodInitializing until their turn; ready once completed (sidecars: running).
    let mut init_statuses = vec![];
    let mut incomplete = vec![];
    let mut sidecars_running = true;
    for c in spec.and_then(|s| s.init_containers.as_ref()).into_iter().flatten() {
        let mut one = container_status(uid, c, i, "PodInitializing");
        let sidecar = c.restart_policy.as_deref() == Some("Always");
        let ready = if sidecar { one.ready } else { one.succeeded };
        one.status["ready"] = json!(ready);
        if sidecar {
            sidecars_running &= one.running;
        }
        if !ready {
            incomplete.push(c.name.clone());
        }
        init_statuses.push(one.status);
    }

    let app_default = if initialized { "ContainerCreating" } else { "PodInitializing" };
    let mut statuses = vec![];
    let (mut all_ready, mut any_running, mut all_done, mut any_failed, mut any_started) = (true, false, true, false, false);
    for c in spec.map(|s| s.containers.as_slice()).unwrap_or_default() {
        let one = container_status(uid, c, i, app_default);
        all_ready &= one.ready;
        any_running |= one.running;
        all_done &= one.done;
        any_failed |= one.failed && one.done;
        any_started |= one.started;
        statuses.push(one.status);
    }
    let phase = if matches!(init, InitStatus::Failed { .. }) {
        "Failed"
    } else if !initialized {
        "Pending"
    } else if any_running || (any_started && !all_done) {
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
    let mut initialized_cond = cond("Initialized", initialized);
    if !initialized {
        initialized_cond["reason"] = json!("ContainersNotInitialized");
        initialized_cond["message"] = json!(format!("containers with incomplete status: [{}]", incomplete.join(" ")));
    }
    let ready = all_ready && sidecars_running && !statuses.is_empty();
    let mut status = json!({
        "phase": phase,
        "conditions": [cond("PodScheduled", true), initialized_cond, cond("ContainersReady", ready), cond("Ready", ready)],
        "containerStatuses": statuses,
        "hostIP": i.host_ip, "hostIPs": [{"ip": i.host_ip}],
        "startTime": ts(&i.start_time),
        "qosClass": qos_class(i.pod),
    });
    if !init_statuses.is_empty() {
        status["initContainerStatuses"] = json!(init_statuses);
    }
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

    fn init_pod(policy: &str) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "uid": "u"},
            "spec": {"restartPolicy": policy, "initContainers": [{"name": "i1", "image": "b"}, {"name": "i2", "image": "b"}],
                     "containers": [{"name": "c", "image": "busybox"}]}}))
        .unwrap()
    }

    fn render_many(p: &Pod, attempts: Vec<(&str, Vec<Attempt>)>, waiting: Waiting) -> Value {
        let observed = Observed { sandbox_ready: true, attempts: attempts.into_iter().map(|(n, a)| (n.to_string(), a)).collect(), ..Default::default() };
        let now = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        render(&StatusInputs { pod: p, observed: &observed, waiting: &waiting, health: &Default::default(), host_ip: "10.0.0.1".into(), pod_ip: None, start_time: now, now })
    }

    #[test]
    fn initializing_pods_are_pending_with_init_statuses() {
        let p = init_pod("Always");
        let s = render_many(&p, vec![("i1", vec![attempt(None)])], Waiting::new());
        assert_eq!(s["phase"], "Pending");
        assert_eq!(s["conditions"][1]["status"], "False");
        assert_eq!(s["conditions"][1]["reason"], "ContainersNotInitialized");
        assert_eq!(s["conditions"][1]["message"], "containers with incomplete status: [i1 i2]");
        assert!(s["initContainerStatuses"][0]["state"]["running"].is_object());
        assert_eq!(s["initContainerStatuses"][1]["state"]["waiting"]["reason"], "PodInitializing");
        assert_eq!(s["containerStatuses"][0]["state"]["waiting"]["reason"], "PodInitializing");
        // i1 done: ready, terminated Completed-style; i2's turn.
        let mut done = attempt(Some(0));
        done.exited.as_mut().unwrap().reason = "Completed".into();
        let s = render_many(&p, vec![("i1", vec![done.clone()])], Waiting::new());
        assert_eq!(s["initContainerStatuses"][0]["ready"], true);
        assert_eq!(s["initContainerStatuses"][0]["state"]["terminated"]["exitCode"], 0);
        assert_eq!(s["conditions"][1]["message"], "containers with incomplete status: [i2]");
        // All done and the app runs.
        let s = render_many(&p, vec![("i1", vec![done.clone()]), ("i2", vec![done]), ("c", vec![attempt(None)])], Waiting::new());
        assert_eq!(s["phase"], "Running");
        assert_eq!(s["conditions"][1]["status"], "True");
        assert!(s["conditions"][1].get("reason").is_none());
        assert_eq!(s["conditions"][3]["status"], "True");
    }

    #[test]
    fn failed_init_containers() {
        let s = render_many(&init_pod("Never"), vec![("i1", vec![attempt(Some(1))])], Waiting::new());
        assert_eq!(s["phase"], "Failed");
        assert_eq!(s["initContainerStatuses"][0]["state"]["terminated"]["exitCode"], 1);
        let w: Waiting = [("i1".to_string(), ("CrashLoopBackOff".to_string(), "back-off".to_string()))].into();
        let s = render_many(&init_pod("Always"), vec![("i1", vec![attempt(Some(1))])], w);
        assert_eq!(s["phase"], "Pending");
        assert_eq!(s["initContainerStatuses"][0]["state"]["waiting"]["reason"], "CrashLoopBackOff");
        assert_eq!(s["initContainerStatuses"][0]["lastState"]["terminated"]["exitCode"], 1);
    }

    #[test]
    fn pods_without_init_containers_have_no_init_statuses() {
        let s = render_with(&pod("Always"), vec![attempt(None)], Waiting::new());
        assert!(s.get("initContainerStatuses").is_none());
        assert_eq!(s["conditions"][1]["status"], "True");
    }
}
