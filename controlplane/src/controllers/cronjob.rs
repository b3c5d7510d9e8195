//! The CronJob controller, as upstream's (cronjob_controllerv2): at each scheduled time a Job from the job template
//! (named `<cronjob>-<scheduled time in minutes since the epoch>`, so a time is never run twice), in the CronJob's
//! time zone; `concurrencyPolicy` Allow, Forbid (skip while one runs) or Replace (delete the running ones first);
//! `startingDeadlineSeconds` (a start missed by more is skipped, with a `MissSchedule` event); `suspend`; the
//! finished Jobs kept to the history limits (oldest deleted first); status `active`, `lastScheduleTime`,
//! `lastSuccessfulTime`. Schedules are standard 5-field cron expressions and the `@hourly`-style descriptors, parsed
//! by the `croner` crate with day-of-month and day-of-week ORed as in Vixie cron; time zones come from `chrono-tz`.
//!
//! [`plan`] decides from the CronJob, its Jobs and the time (pure); [`reconcile`] acts and sleeps until the next time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use futures::StreamExt;
use k8s_openapi::api::batch::v1::{CronJob, CronJobStatus, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, PropagationPolicy};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::{Api, Client, ResourceExt};
use serde_json::json;

use super::{controlled_by, core_event, error_policy, object_name, object_ref, record_event, ControllerError, ControllersConfig, Informers};

/// The annotation upstream puts on each Job: its scheduled time, in the CronJob's time zone.
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Upstream warns when more starts than this were missed.
const TOO_MANY_MISSED: usize = 100;

/// A standard cron schedule (5 fields, or a descriptor such as `@daily`), checked as upstream's validation does.
pub fn parse_schedule(schedule: &str) -> Result<Cron, String> {
    if schedule.contains("TZ") {
        return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
    }
    let trimmed = schedule.trim();
    if trimmed.starts_with("@every") {
        return Err("@every schedules are not supported".into());
    }
    if !trimmed.starts_with('@') {
        let fields = trimmed.split_whitespace().count();
        if fields != 5 {
            return Err(format!("expected exactly 5 fields, found {fields}: [{trimmed}]"));
        }
        // croner also reads Quartz extensions that standard cron (and so Kubernetes) does not.
        if trimmed.contains(['L', 'W', '#', '+']) {
            return Err(format!("unsupported syntax in {trimmed:?}: L, W, # and + are not standard cron"));
        }
    }
    CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        .build()
        .parse(trimmed)
        .map_err(|e| format!("unparseable schedule: {e}"))
}

/// An IANA time zone name (not `Local`, as upstream).
pub fn parse_time_zone(name: &str) -> Result<chrono_tz::Tz, String> {
    if name.eq_ignore_ascii_case("local") {
        return Err("unknown time zone Local".into());
    }
    name.parse::<chrono_tz::Tz>().map_err(|_| format!("unknown time zone {name}"))
}

pub struct Context {
    client: Client,
    jobs: Store<Job>,
    config: ControllersConfig,
}

#[derive(Debug, Default, PartialEq)]
pub struct Plan {
    /// The Job to create and the time it was scheduled for.
    pub create: Option<Job>,
    /// Running Jobs to delete first (Replace).
    pub delete_active: Vec<String>,
    /// Finished Jobs beyond the history limits.
    pub delete_finished: Vec<String>,
    /// (type, reason, message)
    pub events: Vec<(&'static str, &'static str, String)>,
    pub status: CronJobStatus,
    /// When to look again: the next scheduled time.
    pub requeue_after: Option<Duration>,
}

fn invalid(cj: &CronJob, reason: impl Into<String>) -> ControllerError {
    ControllerError::Invalid { object: object_name(cj), reason: reason.into() }
}

/// Finished, and how: Some(true) complete, Some(false) failed, None still running.
fn finished(job: &Job) -> Option<bool> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    conditions.iter().find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True").map(|c| c.type_ == "Complete")
}

fn job_ref(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// `<cronjob>-<minutes since the epoch>`.
pub fn job_name(cj: &CronJob, scheduled: DateTime<Utc>) -> String {
    format!("{}-{}", cj.name_any(), scheduled.timestamp().div_euclid(60))
}

fn job_for(cj: &CronJob, scheduled: DateTime<Utc>, tz: Option<chrono_tz::Tz>) -> Result<Job, ControllerError> {
    let spec = cj.spec.as_ref().ok_or_else(|| invalid(cj, "spec is missing"))?;
    let template = &spec.job_template;
    let meta = template.metadata.clone().unwrap_or_default();
    let mut annotations = meta.annotations.unwrap_or_default();
    let stamp = match tz {
        Some(tz) => scheduled.with_timezone(&tz).to_rfc3339(),
        None => scheduled.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    };
    annotations.insert(SCHEDULED_TIMESTAMP.into(), stamp);
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(job_name(cj, scheduled)),
            namespace: cj.namespace(),
            labels: meta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![OwnerReference {
                api_version: "batch/v1".into(),
                kind: "CronJob".into(),
                name: cj.name_any(),
                uid: cj.uid().unwrap_or_default(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            ..Default::default()
        },
        spec: template.spec.clone(),
        status: None,
    })
}

/// The scheduled times after `after` up to `now` (inclusive): the most recent one and how many there were (counted
/// up to [`TOO_MANY_MISSED`] + 1), and the next one after `now`.
fn due_times<Z: TimeZone>(cron: &Cron, after: DateTime<Z>, now: DateTime<Z>) -> (Option<DateTime<Utc>>, usize, Option<DateTime<Utc>>) {
    use chrono::Timelike;
    // croner keeps the sub-second part of the time it starts from; scheduled times are whole seconds.
    let whole = |t: DateTime<Z>| t.with_nanosecond(0).unwrap_or(t);
    let next = cron.find_next_occurrence(&now, false).ok().map(|t| whole(t).with_timezone(&Utc));
    let latest = match cron.find_previous_occurrence(&now, true).map(whole) {
        Ok(t) if t > after => t,
        _ => return (None, 0, next),
    };
    let mut count = 0;
    let mut t = after;
    while count <= TOO_MANY_MISSED {
        match cron.find_next_occurrence(&t, false) {
            Ok(n) if n <= now => {
                count += 1;
                t = n;
            }
            _ => break,
        }
    }
    (Some(latest.with_timezone(&Utc)), count, next)
}

pub fn plan(cj: &CronJob, jobs: &[&Job], now: DateTime<Utc>) -> Result<Plan, ControllerError> {
    let spec = cj.spec.as_ref().ok_or_else(|| invalid(cj, "spec is missing"))?;
    let mut plan = Plan::default();
    let old = cj.status.clone().unwrap_or_default();

    // Active and finished Jobs.
    let mut active: Vec<&Job> = Vec::new();
    let mut succeeded: Vec<&Job> = Vec::new();
    let mut failed: Vec<&Job> = Vec::new();
    for j in jobs {
        match finished(j) {
            None if j.metadata.deletion_timestamp.is_none() => active.push(j),
            None => {}
            Some(ok) => {
                let was_active = old.active.iter().flatten().any(|r| r.uid == j.metadata.uid);
                if was_active {
                    let how = if ok { "Complete" } else { "Failed" };
                    plan.events.push(("Normal", "SawCompletedJob", format!("Saw completed job: {}, condition: {how}", j.name_any())));
                }
                if ok { succeeded.push(j) } else { failed.push(j) }
            }
        }
    }
    let last_successful = succeeded
        .iter()
        .filter_map(|j| j.status.as_ref().and_then(|s| s.completion_time.clone()))
        .chain(old.last_successful_time.clone())
        .max_by_key(|t| t.0);
    // History: the oldest finished Jobs beyond the limits go.
    let started = |j: &&Job| j.status.as_ref().and_then(|s| s.start_time.as_ref().map(|t| t.0)).or(j.metadata.creation_timestamp.as_ref().map(|t| t.0));
    for (mut list, limit) in [(succeeded, spec.successful_jobs_history_limit.unwrap_or(3)), (failed, spec.failed_jobs_history_limit.unwrap_or(1))] {
        let limit = limit.max(0) as usize;
        if list.len() > limit {
            list.sort_by_key(started);
            for j in &list[..list.len() - limit] {
                plan.delete_finished.push(j.name_any());
                plan.events.push(("Normal", "SuccessfulDelete", format!("Deleted job {}", j.name_any())));
            }
        }
    }

    // Scheduling.
    let tz = spec.time_zone.as_deref().map(parse_time_zone).transpose().map_err(|e| invalid(cj, e))?;
    let cron = parse_schedule(&spec.schedule).map_err(|e| invalid(cj, format!("spec.schedule: {e}")))?;
    let created = cj.metadata.creation_timestamp.as_ref().map(|t| t.0).unwrap_or(now);
    let mut earliest = old.last_schedule_time.as_ref().map(|t| t.0).unwrap_or(created);
    if let Some(deadline) = spec.starting_deadline_seconds {
        earliest = earliest.max(crate::api::time::minus_seconds(now, deadline));
    }
    let (due, missed, next) = match tz {
        Some(tz) => due_times(&cron, earliest.with_timezone(&tz), now.with_timezone(&tz)),
        None => due_times(&cron, earliest, now),
    };
    plan.requeue_after = next.map(|n| (n - now).to_std().unwrap_or_default() + Duration::from_millis(100));
    let mut last_schedule = old.last_schedule_time.clone();
    let suspended = spec.suspend.unwrap_or(false) || cj.metadata.deletion_timestamp.is_some();
    if let (Some(t), false) = (due, suspended) {
        if missed > TOO_MANY_MISSED {
            plan.events.push(("Warning", "TooManyMissedTimes", format!("too many missed start times: {missed}. Set or decrease .spec.startingDeadlineSeconds or check clock skew")));
        }
        let policy = spec.concurrency_policy.as_deref().unwrap_or("Allow");
        let name = job_name(cj, t);
        let already = jobs.iter().any(|j| j.name_any() == name);
        if already {
            // This time was run already (the status update after the create was lost): only record it.
            last_schedule = Some(Time(t));
        } else if policy == "Forbid" && !active.is_empty() {
            plan.events.push(("Normal", "JobAlreadyActive", "Not starting job because prior execution is running and concurrency policy is Forbid".into()));
        } else {
            if policy == "Replace" {
                for j in &active {
                    plan.delete_active.push(j.name_any());
                    plan.events.push(("Normal", "SuccessfulDelete", format!("Deleted job {}", j.name_any())));
                }
                active.clear();
            }
            let job = job_for(cj, t, tz)?;
            plan.events.push(("Normal", "SuccessfulCreate", format!("Created job {name}")));
            plan.create = Some(job);
            last_schedule = Some(Time(t));
        }
    } else if let (None, false, Some(deadline)) = (due, suspended, spec.starting_deadline_seconds) {
        // A start missed by more than the deadline: said once, the first time it is seen.
        let unbounded = old.last_schedule_time.as_ref().map(|t| t.0).unwrap_or(created);
        if let (Some(t), _, _) = due_times(&cron, unbounded, crate::api::time::minus_seconds(now, deadline)) {
            if old.last_schedule_time.as_ref().is_none_or(|l| l.0 < t) && jobs.iter().all(|j| j.name_any() != job_name(cj, t)) {
                plan.events.push(("Warning", "MissSchedule", format!("Missed scheduled time to start a job: {}", t.to_rfc3339())));
                last_schedule = Some(Time(t));
            }
        }
    }

    let mut refs: Vec<ObjectReference> = active.iter().map(|j| job_ref(j)).collect();
    if let Some(j) = &plan.create {
        refs.push(job_ref(j));
    }
    refs.sort_by(|a, b| a.name.cmp(&b.name));
    plan.status = CronJobStatus { active: (!refs.is_empty()).then_some(refs), last_schedule_time: last_schedule, last_successful_time: last_successful };
    Ok(plan)
}

pub async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Context>) -> Result<Action, ControllerError> {
    let uid = cj.uid().unwrap_or_default();
    let ns = cj.namespace().unwrap_or_default();
    let name = object_name(cj.as_ref());
    let all = ctx.jobs.state();
    let jobs: Vec<&Job> = all.iter().map(|j| j.as_ref()).filter(|j| j.namespace().as_deref() == Some(&ns) && controlled_by(*j, &uid)).collect();
    let plan = plan(&cj, &jobs, Utc::now())?;
    let err = |e| ControllerError::Api { object: name.clone(), source: Box::new(e) };
    let api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let background = DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..Default::default() };
    for j in plan.delete_active.iter().chain(&plan.delete_finished) {
        match api.delete(j, &background).await {
            Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404, .. })) => {}
            Err(e) => return Err(err(e)),
        }
    }
    if let Some(job) = &plan.create {
        match api.create(&PostParams::default(), job).await {
            Ok(_) => tracing::info!(cronjob = %name, job = %job.name_any(), "created job"),
            // Made already, by an earlier round whose status update was lost.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(err(e)),
        }
    }
    let involved = object_ref("batch/v1", "CronJob", &ns, &cj.name_any(), &uid);
    for (type_, reason, message) in &plan.events {
        if let Err(e) = record_event(&ctx.client, &core_event(involved.clone(), reason, message.clone(), type_, "cronjob-controller")).await {
            tracing::debug!(error = %e, "recording an event");
        }
    }
    if cj.status.as_ref() != Some(&plan.status) {
        let cronjobs: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
        match cronjobs.patch_status(&cj.name_any(), &PatchParams::default(), &Patch::Merge(&json!({"status": plan.status}))).await {
            Ok(_) | Err(kube::Error::Api(kube::core::ErrorResponse { code: 404, .. })) => {}
            Err(e) => return Err(err(e)),
        }
    }
    Ok(Action::requeue(plan.requeue_after.unwrap_or(ctx.config.resync).min(ctx.config.resync)))
}

/// Run the controller until `shutdown` resolves, on the process's shared informers.
pub async fn run(informers: Informers, config: ControllersConfig, shutdown: impl Future<Output = ()> + Send + Sync + 'static) {
    let jobs = informers.get::<Job>();
    jobs.ready().await;
    let ctx = Arc::new(Context { client: informers.client().clone(), jobs: jobs.store(), config });
    Controller::new(Api::<CronJob>::all(ctx.client.clone()), kube::runtime::watcher::Config::default())
        .owns_stream(jobs.touched())
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn cj(schedule: &str, extra: Value) -> CronJob {
        let mut v = json!({
            "metadata": {"name": "backup", "namespace": "default", "uid": "cj-uid", "creationTimestamp": "2026-12-07T10:00:30Z"},
            "spec": {"schedule": schedule,
                     "jobTemplate": {"metadata": {"labels": {"app": "backup"}},
                                     "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "b", "image": "busybox"}]}}}}}
        });
        json_patch::merge(&mut v, &extra);
        serde_json::from_value(v).unwrap()
    }

    fn job(name: &str, state: Option<bool>, start: &str) -> Job {
        let conditions = match state {
            None => json!([]),
            Some(ok) => json!([{"type": if ok { "Complete" } else { "Failed" }, "status": "True"}]),
        };
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid"), "creationTimestamp": start,
                         "ownerReferences": [{"apiVersion": "batch/v1", "kind": "CronJob", "name": "backup", "uid": "cj-uid", "controller": true}]},
            "status": {"startTime": start, "completionTime": if state == Some(true) { json!(start) } else { Value::Null }, "conditions": conditions}
        }))
        .unwrap()
    }

    #[test]
    fn schedules_as_upstream_validates_them() {
        assert!(parse_schedule("*/5 * * * *").is_ok());
        assert!(parse_schedule("@hourly").is_ok());
        assert!(parse_schedule("0 0 1 JAN MON-FRI").is_ok());
        assert!(parse_schedule("0 0 * * 7").is_ok());
        assert!(parse_schedule("* * * *").unwrap_err().contains("expected exactly 5 fields, found 4"));
        assert!(parse_schedule("CRON_TZ=UTC * * * * *").unwrap_err().contains("use timeZone field"));
        assert!(parse_schedule("0 0 L * *").is_err());
        assert!(parse_schedule("61 * * * *").is_err());
        assert!(parse_time_zone("Europe/Berlin").is_ok());
        assert!(parse_time_zone("Local").is_err());
        assert!(parse_time_zone("Mars/Olympus").is_err());
    }

    #[test]
    fn any_starting_deadline_is_planned_without_overflow() {
        for deadline in [i64::MAX, 9_000_000_000_000, 0] {
            let c = cj("*/5 * * * *", json!({"spec": {"startingDeadlineSeconds": deadline}}));
            let p = plan(&c, &[], t("2026-12-07T10:06:00Z")).unwrap();
            assert_eq!(p.create.is_some(), deadline > 0, "deadline {deadline}");
        }
    }

    #[test]
    fn a_due_time_makes_one_job_named_by_its_minute() {
        let c = cj("*/5 * * * *", json!({}));
        // Before the first time: nothing, and a wake-up at 10:05.
        let p = plan(&c, &[], t("2026-12-07T10:02:00Z")).unwrap();
        assert!(p.create.is_none());
        assert_eq!(p.requeue_after, Some(Duration::from_secs(180) + Duration::from_millis(100)));
        // At 10:05:02.5: the 10:05 job, scheduled at the whole minute.
        let now = t("2026-12-07T10:05:02.5Z");
        let p = plan(&c, &[], now).unwrap();
        let j = p.create.as_ref().unwrap();
        assert_eq!(j.name_any(), format!("backup-{}", t("2026-12-07T10:05:00Z").timestamp() / 60));
        assert_eq!(j.labels()["app"], "backup");
        assert_eq!(j.annotations()[SCHEDULED_TIMESTAMP], "2026-12-07T10:05:00Z");
        assert_eq!(j.metadata.owner_references.as_ref().unwrap()[0].kind, "CronJob");
        assert_eq!(p.status.last_schedule_time, Some(Time(t("2026-12-07T10:05:00Z"))));
        assert_eq!(p.status.active.as_ref().unwrap().len(), 1);
        assert!(p.events.iter().any(|e| e.1 == "SuccessfulCreate"));
        // Missed several (the controller was down): only the most recent runs.
        let p = plan(&c, &[], t("2026-12-07T10:31:00Z")).unwrap();
        assert_eq!(p.create.unwrap().annotations()[SCHEDULED_TIMESTAMP], "2026-12-07T10:30:00Z");
    }

    #[test]
    fn concurrency_policies() {
        let after = json!({"status": {"lastScheduleTime": "2026-12-07T10:05:00Z"}});
        let running = job("backup-1", None, "2026-12-07T10:05:00Z");
        let now = t("2026-12-07T10:10:01Z");
        let forbid = cj("*/5 * * * *", json!({"spec": {"concurrencyPolicy": "Forbid"}, "status": after["status"]}));
        let p = plan(&forbid, &[&running], now).unwrap();
        assert!(p.create.is_none());
        assert!(p.events.iter().any(|e| e.1 == "JobAlreadyActive"));
        assert_eq!(p.status.last_schedule_time, Some(Time(t("2026-12-07T10:05:00Z"))));
        let replace = cj("*/5 * * * *", json!({"spec": {"concurrencyPolicy": "Replace"}, "status": after["status"]}));
        let p = plan(&replace, &[&running], now).unwrap();
        assert_eq!(p.delete_active, ["backup-1"]);
        assert!(p.create.is_some());
        assert_eq!(p.status.active.as_ref().unwrap().len(), 1);
        let allow = cj("*/5 * * * *", json!({"status": after["status"]}));
        let p = plan(&allow, &[&running], now).unwrap();
        assert!(p.delete_active.is_empty() && p.create.is_some());
        assert_eq!(p.status.active.as_ref().unwrap().len(), 2);
        // Suspended: nothing starts.
        let suspended = cj("*/5 * * * *", json!({"spec": {"suspend": true}, "status": after["status"]}));
        assert!(plan(&suspended, &[], now).unwrap().create.is_none());
    }

    #[test]
    fn starting_deadline_skips_late_starts() {
        let c = cj("0 * * * *", json!({"spec": {"startingDeadlineSeconds": 60}}));
        let p = plan(&c, &[], t("2026-12-07T11:00:30Z")).unwrap();
        assert!(p.create.is_some(), "within the deadline");
        let p = plan(&c, &[], t("2026-12-07T11:05:00Z")).unwrap();
        assert!(p.create.is_none(), "5 minutes late with a 60 s deadline");
        assert!(p.events.iter().any(|e| e.1 == "MissSchedule"), "{:?}", p.events);
        assert_eq!(p.status.last_schedule_time, Some(Time(t("2026-12-07T11:00:00Z"))));
    }

    #[test]
    fn history_limits_and_last_successful_time() {
        let c = cj("*/5 * * * *", json!({"spec": {"successfulJobsHistoryLimit": 1, "failedJobsHistoryLimit": 0},
                                         "status": {"lastScheduleTime": "2026-12-07T10:20:00Z",
                                                    "active": [{"name": "backup-3", "uid": "backup-3-uid"}]}}));
        let jobs = [
            job("backup-1", Some(true), "2026-12-07T10:05:00Z"),
            job("backup-2", Some(true), "2026-12-07T10:10:00Z"),
            job("backup-3", Some(false), "2026-12-07T10:15:00Z"),
        ];
        let refs: Vec<&Job> = jobs.iter().collect();
        let p = plan(&c, &refs, t("2026-12-07T10:21:00Z")).unwrap();
        assert_eq!(p.delete_finished, ["backup-1", "backup-3"]);
        assert_eq!(p.status.last_successful_time, Some(Time(t("2026-12-07T10:10:00Z"))));
        assert!(p.status.active.is_none());
        assert!(p.events.iter().any(|e| e.1 == "SawCompletedJob" && e.2.contains("backup-3") && e.2.contains("Failed")));
    }

    #[test]
    fn time_zones_shift_the_schedule() {
        // 09:00 in Berlin in December is 08:00 UTC.
        let c = cj("0 9 * * *", json!({"spec": {"timeZone": "Europe/Berlin"}, "metadata": {"creationTimestamp": "2026-12-07T00:00:00Z"}}));
        assert!(plan(&c, &[], t("2026-12-07T07:59:00Z")).unwrap().create.is_none());
        let p = plan(&c, &[], t("2026-12-07T08:00:10Z")).unwrap();
        assert_eq!(p.create.unwrap().annotations()[SCHEDULED_TIMESTAMP], "2026-12-07T09:00:00+01:00");
    }
}
