//! Controller expectations (upstream's `ControllerExpectations`): after a controller creates or deletes pods it
//! waits until its informer has seen those changes before deciding again, so a stale cache never makes it create
//! duplicates or delete twice.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Default)]
struct Pending {
    adds: HashSet<String>,
    deletes: HashSet<String>,
    since: Option<Instant>,
}

pub struct Expectations {
    pending: Mutex<HashMap<String, Pending>>,
    timeout: Duration,
}

impl Expectations {
    pub fn new(timeout: Duration) -> Self {
        Expectations { pending: Mutex::new(HashMap::new()), timeout }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn expect_add(&self, owner: &str, name: String) {
        let mut p = self.lock();
        let e = p.entry(owner.to_string()).or_default();
        e.adds.insert(name);
        e.since.get_or_insert_with(Instant::now);
    }

    pub fn expect_delete(&self, owner: &str, name: String) {
        let mut p = self.lock();
        let e = p.entry(owner.to_string()).or_default();
        e.deletes.insert(name);
        e.since.get_or_insert_with(Instant::now);
    }

    /// Given the names the cache now holds for `owner`, are all expected changes observed (or timed out)?
    pub fn satisfied(&self, owner: &str, observed: &HashSet<String>) -> bool {
        let mut p = self.lock();
        let Some(e) = p.get_mut(owner) else { return true };
        e.adds.retain(|n| !observed.contains(n));
        e.deletes.retain(|n| observed.contains(n));
        let timed_out = e.since.is_some_and(|s| s.elapsed() > self.timeout);
        if e.adds.is_empty() && e.deletes.is_empty() || timed_out {
            if timed_out {
                tracing::warn!(owner, "expected pod changes not observed in time; acting on the cache as it is");
            }
            p.remove(owner);
            return true;
        }
        false
    }

    /// Forget an owner (it was deleted).
    pub fn forget(&self, owner: &str) {
        self.lock().remove(owner);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_adds_and_deletes() {
        let e = Expectations::new(Duration::from_secs(60));
        assert!(e.satisfied("rs", &HashSet::new()));
        e.expect_add("rs", "p1".into());
        e.expect_delete("rs", "old".into());
        let seen = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<HashSet<_>>();
        assert!(!e.satisfied("rs", &seen(&["old"])));
        assert!(!e.satisfied("rs", &seen(&["p1", "old"])));
        assert!(e.satisfied("rs", &seen(&["p1"])));
        assert!(e.satisfied("rs", &seen(&[])), "cleared once satisfied");
    }

    #[test]
    fn times_out() {
        let e = Expectations::new(Duration::from_millis(0));
        e.expect_add("rs", "never".into());
        std::thread::sleep(Duration::from_millis(2));
        assert!(e.satisfied("rs", &HashSet::new()));
    }
}
