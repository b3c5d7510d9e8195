//! Leader election with a coordination.k8s.io Lease (client-go's leaderelection): of all control-plane
//! processes only the holder of the Lease runs the controllers (or the scheduler). The holder renews every
//! `retry_period`; a Lease not renewed for `lease_duration` may be taken over by another candidate. Writes are
//! compare-and-swap on the Lease's resourceVersion, so two candidates never both win.

use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::PostParams;
use kube::{Api, Client};
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub namespace: String,
    pub lease_name: String,
    /// This candidate's name (unique per process).
    pub identity: String,
    pub lease_duration: Duration,
    /// A leader that could not renew for this long steps down.
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

impl LeaderConfig {
    pub fn new(lease_name: &str, identity: &str) -> Self {
        LeaderConfig {
            namespace: "kube-system".into(),
            lease_name: lease_name.into(),
            identity: identity.into(),
            // A standby takes over at most lease_duration + retry_period after the leader's last renewal: 13 s,
            // inside the 15 s promised with room for a loaded machine (upstream's 15 s lease and 2 s retry can take
            // 17 s). Renewing every second costs one small write per Lease and second.
            lease_duration: Duration::from_secs(12),
            renew_deadline: Duration::from_secs(8),
            retry_period: Duration::from_secs(1),
        }
    }
}

/// What a candidate should do with the Lease as it is now (pure).
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Write it with us as holder (`transition`: the holder changes).
    Take { transition: bool },
    /// Someone else holds it and it is fresh.
    Wait,
}

pub fn decide(lease: Option<&Lease>, identity: &str, now: chrono::DateTime<Utc>) -> Step {
    let Some(spec) = lease.and_then(|l| l.spec.as_ref()) else { return Step::Take { transition: true } };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder == identity {
        return Step::Take { transition: false };
    }
    let duration = spec.lease_duration_seconds.unwrap_or(15) as i64;
    let expired = spec.renew_time.as_ref().is_none_or(|t| crate::api::time::plus_seconds(t.0, duration) < now);
    if holder.is_empty() || expired {
        Step::Take { transition: true }
    } else {
        Step::Wait
    }
}

/// Try once to hold the Lease. Ok(true): we hold it now.
async fn try_hold(api: &Api<Lease>, cfg: &LeaderConfig) -> Result<bool, kube::Error> {
    let now = Utc::now();
    let current = match api.get(&cfg.lease_name).await {
        Ok(l) => Some(l),
        Err(kube::Error::Api(e)) if e.code == 404 => None,
        Err(e) => return Err(e),
    };
    let Step::Take { transition } = decide(current.as_ref(), &cfg.identity, now) else { return Ok(false) };
    let old_spec = current.as_ref().and_then(|l| l.spec.clone()).unwrap_or_default();
    let spec = LeaseSpec {
        holder_identity: Some(cfg.identity.clone()),
        lease_duration_seconds: Some(cfg.lease_duration.as_secs() as i32),
        acquire_time: if transition { Some(MicroTime(now)) } else { old_spec.acquire_time.clone() },
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(old_spec.lease_transitions.unwrap_or(0) + i32::from(transition && current.is_some())),
        ..Default::default()
    };
    let result = match current {
        None => {
            let lease = Lease {
                metadata: ObjectMeta { name: Some(cfg.lease_name.clone()), namespace: Some(cfg.namespace.clone()), ..Default::default() },
                spec: Some(spec),
            };
            api.create(&PostParams::default(), &lease).await
        }
        Some(mut lease) => {
            // The resourceVersion from the read makes this a compare-and-swap.
            lease.spec = Some(spec);
            api.replace(&cfg.lease_name, &PostParams::default(), &lease).await
        }
    };
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Run `work` whenever this candidate leads, until `shutdown` flips. `work` gets a receiver that flips when it
/// must stop (leadership lost or shutdown) and must return soon after.
pub async fn run_elected<F, Fut>(client: Client, cfg: LeaderConfig, mut shutdown: watch::Receiver<bool>, work: F)
where
    F: Fn(watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    loop {
        // Candidate: try until we hold the Lease.
        loop {
            if *shutdown.borrow() {
                return;
            }
            match try_hold(&api, &cfg).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::debug!(lease = %cfg.lease_name, error = %e, "leader election: could not read or write the lease"),
            }
            tokio::select! {
                _ = tokio::time::sleep(cfg.retry_period) => {}
                _ = shutdown.changed() => {}
            }
        }
        tracing::info!(lease = %cfg.lease_name, identity = %cfg.identity, "became leader");
        let (stop_tx, stop_rx) = watch::channel(false);
        let task = tokio::spawn(work(stop_rx));
        // Leader: renew until we cannot for renew_deadline, or shutdown.
        let mut last_renew = tokio::time::Instant::now();
        let lost = loop {
            tokio::select! {
                _ = tokio::time::sleep(cfg.retry_period) => {}
                _ = shutdown.changed() => break false,
            }
            match try_hold(&api, &cfg).await {
                Ok(true) => last_renew = tokio::time::Instant::now(),
                Ok(false) => break true,
                Err(e) => tracing::warn!(lease = %cfg.lease_name, error = %e, "could not renew the lease"),
            }
            if last_renew.elapsed() > cfg.renew_deadline {
                break true;
            }
        };
        let _ = stop_tx.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        if lost {
            tracing::warn!(lease = %cfg.lease_name, identity = %cfg.identity, "lost leadership; standing by");
        } else {
            // Leaving on purpose: let a standby take over at once.
            if let Ok(mut lease) = api.get(&cfg.lease_name).await {
                if lease.spec.as_ref().and_then(|s| s.holder_identity.as_deref()) == Some(cfg.identity.as_str()) {
                    if let Some(spec) = lease.spec.as_mut() {
                        spec.holder_identity = None;
                    }
                    let _ = api.replace(&cfg.lease_name, &PostParams::default(), &lease).await;
                }
            }
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed_secs_ago: i64, duration: i32) -> Lease {
        Lease {
            metadata: Default::default(),
            spec: Some(LeaseSpec {
                holder_identity: (!holder.is_empty()).then(|| holder.to_string()),
                renew_time: Some(MicroTime(Utc::now() - chrono::Duration::seconds(renewed_secs_ago))),
                lease_duration_seconds: Some(duration),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn decisions() {
        let now = Utc::now();
        assert_eq!(decide(None, "a", now), Step::Take { transition: true });
        assert_eq!(decide(Some(&lease("a", 1, 15)), "a", now), Step::Take { transition: false });
        assert_eq!(decide(Some(&lease("b", 1, 15)), "a", now), Step::Wait);
        assert_eq!(decide(Some(&lease("b", 20, 15)), "a", now), Step::Take { transition: true });
        assert_eq!(decide(Some(&lease("", 1, 15)), "a", now), Step::Take { transition: true });
    }
}
