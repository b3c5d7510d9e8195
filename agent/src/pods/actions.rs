//! What a pod worker should do next, from the desired pod and the observed containers. Pure: no I/O, no clock.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::container::state::Attempt;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RestartPolicy {
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

#[derive(Clone, Debug)]
pub struct Desired {
    pub containers: Vec<String>,
    pub restart_policy: RestartPolicy,
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

pub fn compute_pod_actions(desired: &Desired, observed: &Observed, now: DateTime<Utc>) -> Vec<Action> {
    let mut actions = vec![];
    if !observed.sandbox_ready {
        actions.push(Action::CreateSandbox);
    }
    for name in &desired.containers {
        let attempts = observed.attempts.get(name).map(Vec::as_slice).unwrap_or_default();
        let next = attempts.last().map(|a| a.restart + 1).unwrap_or(0);
        let at = |failures: u32, last: DateTime<Utc>| last + chrono::Duration::from_std(backoff(failures)).unwrap_or_default();
        let (start, wait_until) = match attempts.last() {
            None => match observed.start_failures.get(name) {
                None => (true, None),
                Some((when, n)) => (true, Some(at(*n, *when))),
            },
            Some(a) => match &a.exited {
                None => (false, None),
                Some(e) if should_restart(desired.restart_policy, e.exit_code) => {
                    let last = observed.start_failures.get(name).map(|(w, _)| *w).unwrap_or(e.finished_at).max(e.finished_at);
                    (true, Some(at(consecutive_failures(attempts), last)))
                }
                Some(_) => (false, None),
            },
        };
        if !start {
            continue;
        }
        match wait_until {
            Some(until) if until > now => actions.push(Action::BackOff { name: name.clone(), until }),
            _ => actions.push(Action::Start { name: name.clone(), restart: next }),
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
        Desired { containers: vec!["c".into()], restart_policy: policy }
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
}
