//! What a pod worker should do next, from the desired pod and the observed containers. Pure: no I/O, no clock.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::container::state::Attempt;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

impl RestartPolicy {
    pub fn parse(s: Option<&str>) -> RestartPolicy {
        match s {
            Some("Never") => RestartPolicy::Never,
            Some("OnFailure") => RestartPolicy::OnFailure,
            _ => RestartPolicy::Always,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InitContainer {
    pub name: String,
    /// A sidecar (`restartPolicy: Always` on an init container): started in order, then kept running.
    pub restartable: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Desired {
    /// Run one by one, each to completion (sidecars: until running), before the app containers start.
    pub init_containers: Vec<InitContainer>,
    pub containers: Vec<String>,
    pub restart_policy: RestartPolicy,
}

impl Desired {
    pub fn from_pod(pod: &k8s_openapi::api::core::v1::Pod) -> Desired {
        let spec = pod.spec.as_ref();
        Desired {
            init_containers: spec
                .and_then(|s| s.init_containers.as_ref())
                .into_iter()
                .flatten()
                .map(|c| InitContainer { name: c.name.clone(), restartable: c.restart_policy.as_deref() == Some("Always") })
                .collect(),
            containers: spec.map(|s| s.containers.iter().map(|c| c.name.clone()).collect()).unwrap_or_default(),
            restart_policy: RestartPolicy::parse(spec.and_then(|s| s.restart_policy.as_deref())),
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct Observed {
    pub sandbox_ready: bool,
    /// Attempts per container name, oldest first.
    pub attempts: BTreeMap<String, Vec<Attempt>>,
    /// A container whose last start attempt failed before it ran (e.g. image pull): when, and how many times.
    pub start_failures: BTreeMap<String, (DateTime<Utc>, u32)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    CreateSandbox,
    /// Start attempt `restart` of the container.
    Start { name: String, restart: u32 },
    /// Crash-loop back-off: nothing before `until`.
    BackOff { name: String, until: DateTime<Utc> },
}

pub const BACKOFF_INITIAL: Duration = Duration::from_secs(10);
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// A container that ran this long resets its back-off.
pub const BACKOFF_RESET: Duration = Duration::from_secs(600);

/// 10 s doubling per consecutive failure, capped at 5 min; none after a run that reset it.
pub fn backoff(failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let d = BACKOFF_INITIAL.saturating_mul(1u32 << failures.saturating_sub(1).min(16));
    d.min(BACKOFF_MAX)
}

fn should_restart(policy: RestartPolicy, exit_code: i32) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => exit_code != 0,
        RestartPolicy::Never => false,
    }
}

/// Consecutive short runs at the end of `attempts` (the back-off exponent).
fn consecutive_failures(attempts: &[Attempt]) -> u32 {
    let mut n = 0;
    for a in attempts.iter().rev() {
        let Some(e) = &a.exited else { break };
        let ran = a.started.as_ref().map(|s| e.finished_at - s.started_at).unwrap_or_default();
        if ran.to_std().unwrap_or_default() >= BACKOFF_RESET {
            break;
        }
        n += 1;
    }
    n
}

fn running(attempts: &[Attempt]) -> bool {
    attempts.last().is_some_and(|a| a.exited.is_none())
}

/// Where the pod's initialization stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InitStatus {
    /// Every init container is done (sidecars running), or an app container has already started.
    Done,
    /// Init container `index` is the one to run, start or wait for.
    Running { index: usize },
    /// Init container `index` failed and the pod's restartPolicy is Never: the pod has failed.
    Failed { index: usize },
}

pub fn init_status(desired: &Desired, observed: &Observed) -> InitStatus {
    let attempts = |n: &str| observed.attempts.get(n).map(Vec::as_slice).unwrap_or_default();
    if desired.containers.iter().any(|n| !attempts(n).is_empty()) {
        return InitStatus::Done;
    }
    for (index, ic) in desired.init_containers.iter().enumerate() {
        let a = attempts(&ic.name);
        if ic.restartable {
            if running(a) {
                continue;
            }
            return InitStatus::Running { index };
        }
        match a.last().and_then(|l| l.exited.as_ref()) {
            Some(e) if e.exit_code == 0 => continue,
            Some(_) if desired.restart_policy == RestartPolicy::Never => return InitStatus::Failed { index },
            _ => return InitStatus::Running { index },
        }
    }
    InitStatus::Done
}

/// What one container needs: a start (maybe after a back-off) or nothing.
fn container_action(name: &str, policy: RestartPolicy, observed: &Observed, now: DateTime<Utc>) -> Option<Action> {
    let attempts = observed.attempts.get(name).map(Vec::as_slice).unwrap_or_default();
    let next = attempts.last().map(|a| a.restart + 1).unwrap_or(0);
    let at = |failures: u32, last: DateTime<Utc>| last + chrono::Duration::from_std(backoff(failures)).unwrap_or_default();
    let wait_until = match attempts.last() {
        None => observed.start_failures.get(name).map(|(when, n)| at(*n, *when)),
        Some(a) => match &a.exited {
            None => return None,
            Some(e) if should_restart(policy, e.exit_code) => {
                let last = observed.start_failures.get(name).map(|(w, _)| *w).unwrap_or(e.finished_at).max(e.finished_at);
                Some(at(consecutive_failures(attempts), last))
            }
            Some(_) => return None,
        },
    };
    Some(match wait_until {
        Some(until) if until > now => Action::BackOff { name: name.to_string(), until },
        _ => Action::Start { name: name.to_string(), restart: next },
    })
}

pub fn compute_pod_actions(desired: &Desired, observed: &Observed, now: DateTime<Utc>) -> Vec<Action> {
    let mut actions = vec![];
    if !observed.sandbox_ready {
        actions.push(Action::CreateSandbox);
    }
    match init_status(desired, observed) {
        InitStatus::Failed { .. } => {}
        InitStatus::Running { index } => {
            // Sidecars before `index` keep running; the init container at `index` is started (a failed regular
            // one restarts as with OnFailure, sidecars always).
            for ic in &desired.init_containers[..index] {
                if ic.restartable {
                    actions.extend(container_action(&ic.name, RestartPolicy::Always, observed, now));
                }
            }
            let ic = &desired.init_containers[index];
            let policy = if ic.restartable { RestartPolicy::Always } else { RestartPolicy::OnFailure };
            actions.extend(container_action(&ic.name, policy, observed, now));
        }
        InitStatus::Done => {
            for ic in desired.init_containers.iter().filter(|ic| ic.restartable) {
                actions.extend(container_action(&ic.name, RestartPolicy::Always, observed, now));
            }
            for name in &desired.containers {
                actions.extend(container_action(name, desired.restart_policy, observed, now));
            }
        }
    }
    actions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::container::state::{Exited, Started};

    fn t(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn attempt(restart: u32, started: i64, exited: Option<(i64, i32)>) -> Attempt {
        Attempt {
            restart,
            dir: Default::default(),
            started: Some(Started { monitor_pid: 1, pid: 2, started_at: t(started) }),
            exited: exited.map(|(f, c)| Exited { exit_code: c, finished_at: t(f), reason: "Error".into(), message: String::new() }),
        }
    }

    fn desired(policy: RestartPolicy) -> Desired {
        Desired { containers: vec!["c".into()], restart_policy: policy, ..Default::default() }
    }

    fn observed(attempts: Vec<Attempt>) -> Observed {
        Observed { sandbox_ready: true, attempts: [("c".to_string(), attempts)].into(), ..Default::default() }
    }

    #[test]
    fn new_pod_gets_a_sandbox_and_its_containers() {
        let a = compute_pod_actions(&desired(RestartPolicy::Always), &Observed::default(), t(0));
        assert_eq!(a, vec![Action::CreateSandbox, Action::Start { name: "c".into(), restart: 0 }]);
    }

    #[test]
    fn running_container_needs_nothing() {
        assert!(compute_pod_actions(&desired(RestartPolicy::Always), &observed(vec![attempt(0, 0, None)]), t(50)).is_empty());
    }

    #[test]
    fn restart_policies() {
        let ok = observed(vec![attempt(0, 0, Some((1, 0)))]);
        let failed = observed(vec![attempt(0, 0, Some((1, 3)))]);
        let late = t(100);
        let start = vec![Action::Start { name: "c".into(), restart: 1 }];
        assert_eq!(compute_pod_actions(&desired(RestartPolicy::Always), &ok, late), start);
        assert!(compute_pod_actions(&desired(RestartPolicy::OnFailure), &ok, late).is_empty());
        assert_eq!(compute_pod_actions(&desired(RestartPolicy::OnFailure), &failed, late), start);
        assert!(compute_pod_actions(&desired(RestartPolicy::Never), &failed, late).is_empty());
    }

    #[test]
    fn crash_loop_backs_off_doubling_to_five_minutes() {
        assert_eq!(backoff(1), Duration::from_secs(10));
        assert_eq!(backoff(2), Duration::from_secs(20));
        assert_eq!(backoff(3), Duration::from_secs(40));
        assert_eq!(backoff(30), Duration::from_secs(300));
        let obs = observed(vec![attempt(0, 0, Some((1, 1))), attempt(1, 12, Some((13, 1)))]);
        let a = compute_pod_actions(&desired(RestartPolicy::Always), &obs, t(20));
        assert_eq!(a, vec![Action::BackOff { name: "c".into(), until: t(33) }]);
        let a = compute_pod_actions(&desired(RestartPolicy::Always), &obs, t(33));
        assert_eq!(a, vec![Action::Start { name: "c".into(), restart: 2 }]);
    }

    #[test]
    fn a_long_run_resets_the_backoff() {
        let obs = observed(vec![attempt(0, 0, Some((1, 1))), attempt(1, 10, Some((10 + 700, 1)))]);
        let a = compute_pod_actions(&desired(RestartPolicy::Always), &obs, t(711));
        assert_eq!(a, vec![Action::Start { name: "c".into(), restart: 2 }]);
    }

    #[test]
    fn failed_image_pulls_back_off() {
        let mut obs = Observed { sandbox_ready: true, ..Default::default() };
        obs.start_failures.insert("c".into(), (t(0), 2));
        let a = compute_pod_actions(&desired(RestartPolicy::Always), &obs, t(5));
        assert_eq!(a, vec![Action::BackOff { name: "c".into(), until: t(20) }]);
    }

    fn with_init(policy: RestartPolicy, inits: &[(&str, bool)]) -> Desired {
        let init_containers = inits.iter().map(|(n, r)| InitContainer { name: n.to_string(), restartable: *r }).collect();
        Desired { init_containers, containers: vec!["c".into()], restart_policy: policy }
    }

    fn observed_many(list: Vec<(&str, Vec<Attempt>)>) -> Observed {
        Observed { sandbox_ready: true, attempts: list.into_iter().map(|(n, a)| (n.to_string(), a)).collect(), ..Default::default() }
    }

    fn start(name: &str, restart: u32) -> Action {
        Action::Start { name: name.into(), restart }
    }

    #[test]
    fn init_containers_run_one_by_one_before_the_app() {
        let d = with_init(RestartPolicy::Always, &[("i1", false), ("i2", false)]);
        let a = compute_pod_actions(&d, &Observed::default(), t(0));
        assert_eq!(a, vec![Action::CreateSandbox, start("i1", 0)]);
        // i1 running: wait.
        let obs = observed_many(vec![("i1", vec![attempt(0, 0, None)])]);
        assert!(compute_pod_actions(&d, &obs, t(1)).is_empty());
        assert_eq!(init_status(&d, &obs), InitStatus::Running { index: 0 });
        // i1 done: i2.
        let obs = observed_many(vec![("i1", vec![attempt(0, 0, Some((1, 0)))])]);
        assert_eq!(compute_pod_actions(&d, &obs, t(2)), vec![start("i2", 0)]);
        // Both done: the app.
        let obs = observed_many(vec![("i1", vec![attempt(0, 0, Some((1, 0)))]), ("i2", vec![attempt(0, 2, Some((3, 0)))])]);
        assert_eq!(init_status(&d, &obs), InitStatus::Done);
        assert_eq!(compute_pod_actions(&d, &obs, t(4)), vec![start("c", 0)]);
    }

    #[test]
    fn failed_init_containers_restart_with_back_off_unless_never() {
        let obs = observed_many(vec![("i1", vec![attempt(0, 0, Some((1, 1)))])]);
        for policy in [RestartPolicy::Always, RestartPolicy::OnFailure] {
            let d = with_init(policy, &[("i1", false), ("i2", false)]);
            assert_eq!(compute_pod_actions(&d, &obs, t(5)), vec![Action::BackOff { name: "i1".into(), until: t(11) }]);
            assert_eq!(compute_pod_actions(&d, &obs, t(11)), vec![start("i1", 1)]);
        }
        let d = with_init(RestartPolicy::Never, &[("i1", false), ("i2", false)]);
        assert_eq!(init_status(&d, &obs), InitStatus::Failed { index: 0 });
        assert!(compute_pod_actions(&d, &obs, t(100)).is_empty());
    }

    #[test]
    fn init_is_done_once_an_app_container_started() {
        // E.g. the init containers' state is gone but the app ran: init containers do not run again.
        let d = with_init(RestartPolicy::Always, &[("i1", false)]);
        let obs = observed_many(vec![("c", vec![attempt(0, 0, Some((1, 1)))])]);
        assert_eq!(init_status(&d, &obs), InitStatus::Done);
        assert_eq!(compute_pod_actions(&d, &obs, t(50)), vec![start("c", 1)]);
    }

    #[test]
    fn sidecars_start_in_order_and_keep_running() {
        let d = with_init(RestartPolicy::Never, &[("side", true), ("i1", false)]);
        assert_eq!(compute_pod_actions(&d, &observed_many(vec![]), t(0)), vec![start("side", 0)]);
        // The sidecar runs: the next init container starts.
        let obs = observed_many(vec![("side", vec![attempt(0, 0, None)])]);
        assert_eq!(compute_pod_actions(&d, &obs, t(1)), vec![start("i1", 0)]);
        // The sidecar died during init: restarted (Always) even with the pod's Never, after a back-off.
        let obs = observed_many(vec![("side", vec![attempt(0, 0, Some((1, 1)))]), ("i1", vec![attempt(0, 1, None)])]);
        assert_eq!(init_status(&d, &obs), InitStatus::Running { index: 0 });
        assert_eq!(compute_pod_actions(&d, &obs, t(20)), vec![start("side", 1)]);
        // After init, with the app running, a dead sidecar is restarted too.
        let obs = observed_many(vec![
            ("side", vec![attempt(0, 0, Some((30, 0)))]),
            ("i1", vec![attempt(0, 1, Some((2, 0)))]),
            ("c", vec![attempt(0, 3, None)]),
        ]);
        assert_eq!(compute_pod_actions(&d, &obs, t(100)), vec![start("side", 1)]);
    }

    #[test]
    fn desired_from_the_pod() {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({"spec": {
            "restartPolicy": "OnFailure",
            "initContainers": [{"name": "a"}, {"name": "s", "restartPolicy": "Always"}],
            "containers": [{"name": "c"}]}}))
        .unwrap();
        let d = Desired::from_pod(&pod);
        assert_eq!(d.init_containers, [InitContainer { name: "a".into(), restartable: false }, InitContainer { name: "s".into(), restartable: true }]);
        assert_eq!(d.containers, ["c"]);
        assert_eq!(d.restart_policy, RestartPolicy::OnFailure);
    }
}
