//! The Job controller: runs pods until `completions` succeeded (at most `parallelism` at a time), fails the Job
//! after `backoffLimit` failed pods or `activeDeadlineSeconds`, honours `suspend`, and deletes finished Jobs after
//! `ttlSecondsAfterFinished`.
//!
//! [`plan`] decides from the Job, its pods and the time (pure); [`reconcile`] acts.

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{Job, JobCondition, JobStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};

use super::expectations::Expectations;
use super::replicaset::is_ready;
use super::{controlled_by, delete_owned_pods, error_policy, object_name, owned_pod, ControllerError, ControllersConfig};
use crate::controllers::cached_pod::CachedPod;

pub struct Context {
    client: Client,
    pods: Store<CachedPod>,
    expectations: Expectations,
    config: ControllersConfig,
}

impl Context {
    pub fn new(client: Client, pods: Store<CachedPod>, config: ControllersConfig) -> Self {
        Context { client, pods, expectations: Expectations::new(config.expectations_timeout), config }
    }
}

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    pub create: usize,
    pub delete: Vec<String>,
    pub status: JobStatus,
    /// Delete the Job itself (its TTL after finishing ran out).
    pub delete_job: bool,
    /// When to look again (deadline or TTL), if sooner than the resync.
    pub requeue_after: Option<Duration>,
}

fn phase(p: &CachedPod) -> &str {
    p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Pending")
}

fn finished(status: Option<&JobStatus>) -> Option<(String, DateTime<Utc>)> {
    status.and_then(|s| s.conditions.as_ref())?.iter().find_map(|c| {
        ((c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
            .then(|| (c.type_.clone(), c.last_transition_time.as_ref().map(|t| t.0).unwrap_or_else(Utc::now)))
    })
}

fn condition(type_: &str, reason: &str, message: &str, now: DateTime<Utc>) -> JobCondition {
    JobCondition {
        type_: type_.into(),
        status: "True".into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_probe_time: Some(Time(now)),
        last_transition_time: Some(Time(now)),
    }
}

/// Decide the next step of a Job at time `now`.
pub fn plan(job: &Job, owned: &[&CachedPod], now: DateTime<Utc>) -> Plan {
    let spec = job.spec.clone().unwrap_or_default();
    let old = job.status.clone().unwrap_or_default();
    let mut plan = Plan::default();
    let active: Vec<&CachedPod> = owned
        .iter()
        .copied()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && !matches!(phase(p), "Succeeded" | "Failed"))
        .collect();
    let succeeded = owned.iter().filter(|p| phase(p) == "Succeeded").count() as i32;
    let failed = owned.iter().filter(|p| phase(p) == "Failed").count() as i32;
    let start = old.start_time.as_ref().map(|t| t.0).unwrap_or(now);
    let mut status = JobStatus {
        active: Some(active.len() as i32),
        succeeded: Some(succeeded),
        failed: Some(failed),
        ready: Some(active.iter().filter(|p| is_ready(p)).count() as i32),
        start_time: Some(Time(start)),
        completion_time: old.completion_time.clone(),
        conditions: old.conditions.clone(),
        ..Default::default()
    };
    if let Some((kind, at)) = finished(job.status.as_ref()) {
        // Finished: stop what still runs, then wait for the TTL.
        plan.delete = active.iter().map(|p| p.name_any()).collect();
        if let Some(ttl) = spec.ttl_seconds_after_finished {
            let expires = crate::api::time::plus_seconds(at, ttl as i64);
            if now >= expires {
                plan.delete_job = true;
            } else {
                plan.requeue_after = (expires - now).to_std().ok();
            }
        }
        let _ = kind;
        plan.status = status;
        return plan;
    }
    let suspended = spec.suspend.unwrap_or(false);
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let completions = spec.completions;
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let deadline = spec.active_deadline_seconds.map(|s| crate::api::time::plus_seconds(start, s));
    let mut conditions = status.conditions.take().unwrap_or_default();
    let complete = match completions {
        Some(c) => succeeded >= c,
        None => succeeded > 0 && active.is_empty(),
    };
    if complete {
        conditions.push(condition("Complete", "", "", now));
        if let Some(c) = conditions.last_mut() {
            c.reason = None;
            c.message = None;
        }
        status.completion_time = Some(Time(now));
    } else if failed > backoff_limit {
        conditions.push(condition("Failed", "BackoffLimitExceeded", "Job has reached the specified backoff limit", now));
        plan.delete = active.iter().map(|p| p.name_any()).collect();
    } else if deadline.is_some_and(|d| now >= d) && !suspended {
        conditions.push(condition("Failed", "DeadlineExceeded", "Job was active longer than specified deadline", now));
        plan.delete = active.iter().map(|p| p.name_any()).collect();
    } else {
        let want = if suspended {
            0
        } else {
            match completions {
                Some(c) => parallelism.min((c - succeeded).max(0)),
                None if succeeded > 0 => 0,
                None => parallelism,
            }
        } as usize;
        if active.len() < want {
            plan.create = want - active.len();
        } else if active.len() > want {
            let mut newest: Vec<&CachedPod> = active.clone();
            newest.sort_by_key(|p| std::cmp::Reverse(p.metadata.creation_timestamp.as_ref().map(|t| t.0)));
            plan.delete = newest[..active.len() - want].iter().map(|p| p.name_any()).collect();
        }
        if let Some(d) = deadline {
            plan.requeue_after = (d - now).to_std().ok();
        }
    }
    status.conditions = (!conditions.is_empty()).then_some(conditions);
    plan.status = status;
    plan
}

fn pod_for(job: &Job) -> Result<Pod, ControllerError> {
    owned_pod(job, job.spec.as_ref().map(|s| s.template.clone()))
}

pub async fn reconcile(job: Arc<Job>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let uid = job.uid().unwrap_or_default();
    let ns = job.namespace().unwrap_or_default();
    let name = object_name(job.as_ref());
    if job.metadata.deletion_timestamp.is_some() {
        ctx.expectations.forget(&uid);
        return Ok(Action::await_change());
    }
    let all = ctx.pods.state();
    let owned: Vec<&CachedPod> = all.iter().map(|p| p.as_ref()).filter(|p| p.namespace().as_deref() == Some(&ns) && controlled_by(*p, &uid)).collect();
    let observed: HashSet<String> = owned.iter().map(|p| p.name_any()).collect();
    if !ctx.expectations.satisfied(&uid, &observed) {
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let plan = plan(&job, &owned, Utc::now());
    let err = |e| ControllerError::Api { object: name.clone(), source: Box::new(e) };
    let jobs: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    if plan.delete_job {
        let dp = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
        match jobs.delete(&job.name_any(), &dp).await {
            Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404, .. })) => {}
            Err(e) => return Err(err(e)),
        }
        tracing::info!(job = %name, "deleted finished job after its TTL");
        return Ok(Action::await_change());
    }
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    if plan.create > 0 {
        let pod = pod_for(&job)?;
        for _ in 0..plan.create {
            let created = pods.create(&PostParams::default(), &pod).await.map_err(err)?;
            ctx.expectations.expect_add(&uid, created.name_any());
        }
    }
    delete_owned_pods(&pods, &plan.delete, &ctx.expectations, &uid, &name).await?;
    if job.status.as_ref() != Some(&plan.status) {
        let patch = serde_json::json!({"status": plan.status});
        match jobs.patch_status(&job.name_any(), &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404, .. })) => {}
            Err(e) => return Err(err(e)),
        }
    }
    let next = plan.requeue_after.map_or(ctx.config.resync, |d| d.min(ctx.config.resync) + Duration::from_millis(100));
    Ok(Action::requeue(next))
}

pub fn run(
    jobs: Api<Job>,
    ctx: Arc<Context>,
    pod_events: impl futures::Stream<Item = Result<CachedPod, kube::runtime::watcher::Error>> + Send + 'static,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) -> impl Future<Output = ()> {
    Controller::new(jobs, kube::runtime::watcher::Config::default())
        .owns_stream(pod_events)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(spec: serde_json::Value) -> Job {
        let mut s = json!({"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "x"}]}}});
        json_patch::merge(&mut s, &spec);
        serde_json::from_value(json!({"metadata": {"name": "pi", "namespace": "default", "uid": "job-uid"}, "spec": s})).unwrap()
    }

    fn pod(name: &str, phase: &str) -> CachedPod {
        serde_json::from_value(json!({"metadata": {"name": name, "creationTimestamp": "2026-01-01T00:00:00Z"}, "status": {"phase": phase}})).unwrap()
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:10Z").unwrap().with_timezone(&Utc)
    }

    #[test]
    fn runs_parallelism_pods_until_completions() {
        let j = job(json!({"completions": 3, "parallelism": 2}));
        assert_eq!(plan(&j, &[], t0()).create, 2);
        let (a, b) = (pod("a", "Succeeded"), pod("b", "Running"));
        let p = plan(&j, &[&a, &b], t0());
        assert_eq!(p.create, 1, "two more to go, one running");
        let (c, d) = (pod("c", "Succeeded"), pod("d", "Succeeded"));
        let p = plan(&j, &[&a, &c, &d], t0());
        assert_eq!(p.create, 0);
        let cond = &p.status.conditions.as_ref().unwrap()[0];
        assert_eq!((cond.type_.as_str(), cond.status.as_str()), ("Complete", "True"));
        assert!(p.status.completion_time.is_some());
        assert_eq!(p.status.succeeded, Some(3));
    }

    #[test]
    fn backoff_limit_fails_the_job() {
        let j = job(json!({"backoffLimit": 1}));
        let (a, b, c) = (pod("a", "Failed"), pod("b", "Failed"), pod("c", "Running"));
        let p = plan(&j, &[&a, &b, &c], t0());
        let cond = &p.status.conditions.as_ref().unwrap()[0];
        assert_eq!(cond.reason.as_deref(), Some("BackoffLimitExceeded"));
        assert_eq!(p.delete, ["c"]);
        assert_eq!(p.create, 0);
    }

    #[test]
    fn deadline_and_suspend() {
        let mut j = job(json!({"activeDeadlineSeconds": 5}));
        j.status = Some(JobStatus { start_time: Some(Time(t0() - chrono::Duration::seconds(10))), ..Default::default() });
        let r = pod("r", "Running");
        let p = plan(&j, &[&r], t0());
        assert_eq!(p.status.conditions.as_ref().unwrap()[0].reason.as_deref(), Some("DeadlineExceeded"));
        assert_eq!(p.delete, ["r"]);
        let s = job(json!({"suspend": true}));
        assert_eq!(plan(&s, &[&r], t0()).delete, ["r"]);
        // Any int64 a user wrote is a deadline, however far away (chrono would panic adding it).
        let mut far = job(json!({"activeDeadlineSeconds": i64::MAX}));
        far.status = j.status.clone();
        let p = plan(&far, &[&r], t0());
        assert!(p.delete.is_empty() && p.status.conditions.as_ref().is_none_or(Vec::is_empty), "{:?}", p.status);
    }

    #[test]
    fn ttl_after_finished() {
        let mut j = job(json!({"ttlSecondsAfterFinished": 30}));
        j.status = Some(JobStatus { conditions: Some(vec![condition("Complete", "", "", t0())]), ..Default::default() });
        let p = plan(&j, &[], t0() + chrono::Duration::seconds(10));
        assert!(!p.delete_job);
        assert_eq!(p.requeue_after, Some(Duration::from_secs(20)));
        assert!(plan(&j, &[], t0() + chrono::Duration::seconds(31)).delete_job);
    }
}
