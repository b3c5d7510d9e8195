//! Pod-level cgroups, as the kubelet's pod container manager makes them: `<root>/<qos>/pod<uid>` in every
//! hierarchy, with the pod's CPU shares (sum of requests), CPU quota and memory limit (sums of the limits, when
//! every container declares one) written before its containers start, so that the pod as a whole is held to what
//! its spec says. Works on cgroup v1, v2 and this kind of v1+v2 hybrid (hierarchies are read from mountinfo).
//!
//! Written by hand: a few file writes per pod; cgroups-rs would bring its own hierarchy model for no gain here and
//! libcontainer's managers live in the runtime process, not in the agent.

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::container::spec::{cpu_millis, memory_bytes};

/// CFS period the kubelet uses.
const CPU_PERIOD_US: i64 = 100_000;
/// The kubelet's minimum CPU shares (also what BestEffort pods get).
const MIN_SHARES: i64 = 2;
const MAX_SHARES: i64 = 262_144;
/// The kubelet's minimum CFS quota.
const MIN_QUOTA_US: i64 = 1_000;

/// What the pod cgroup is held to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodResources {
    pub cpu_shares: i64,
    /// CFS quota in µs per [`CPU_PERIOD_US`], when every container has a CPU limit.
    pub cpu_quota_us: Option<i64>,
    /// Bytes, when every container has a memory limit.
    pub memory_limit: Option<i64>,
}

/// Sum over the regular containers (sidecars included: init containers that keep running), compared with the
/// largest init container (which runs alone), as upstream's `PodRequests`/`PodLimits` without overhead.
fn pod_total(pod: &Pod, get: impl Fn(&Container) -> Option<i64>) -> Option<i64> {
    let spec = pod.spec.as_ref()?;
    let sidecar = |c: &Container| c.restart_policy.as_deref() == Some("Always");
    let mut long_running = 0i64;
    for c in spec.containers.iter().chain(spec.init_containers.iter().flatten().filter(|c| sidecar(c))) {
        long_running = long_running.saturating_add(get(c)?);
    }
    let mut init_max = 0i64;
    for c in spec.init_containers.iter().flatten().filter(|c| !sidecar(c)) {
        init_max = init_max.max(get(c)?);
    }
    Some(long_running.max(init_max))
}

fn quantity(c: &Container, which: &str, name: &str, parse: fn(&k8s_openapi::apimachinery::pkg::api::resource::Quantity) -> Option<i64>) -> Option<i64> {
    let r = c.resources.as_ref()?;
    let map = if which == "limits" { r.limits.as_ref() } else { r.requests.as_ref() };
    map?.get(name).and_then(parse)
}

/// The kubelet's `ResourceConfigForPod` (cgroup values only; pids and hugepages are not managed here).
pub fn pod_resources(pod: &Pod) -> PodResources {
    let qos = crate::status::qos_class(pod);
    if qos == "BestEffort" {
        return PodResources { cpu_shares: MIN_SHARES, ..Default::default() };
    }
    // A request defaults to the limit when only the limit is given (the API server's defaulting).
    let cpu_request = |c: &Container| {
        Some(quantity(c, "requests", "cpu", cpu_millis).or_else(|| quantity(c, "limits", "cpu", cpu_millis)).unwrap_or(0))
    };
    let millis = pod_total(pod, cpu_request).unwrap_or(0);
    let cpu_shares = (millis.saturating_mul(1024) / 1000).clamp(MIN_SHARES, MAX_SHARES);
    let cpu_quota_us = pod_total(pod, |c| quantity(c, "limits", "cpu", cpu_millis))
        .map(|m| (m.saturating_mul(CPU_PERIOD_US) / 1000).max(MIN_QUOTA_US));
    let memory_limit = pod_total(pod, |c| quantity(c, "limits", "memory", memory_bytes));
    PodResources { cpu_shares, cpu_quota_us, memory_limit }
}

/// One mounted cgroup hierarchy: v1 with its controllers, or the v2 one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    pub mount: PathBuf,
    /// v1 controllers (`cpu`, `cpuacct`, `memory`, `name=systemd`, ...); empty for v2.
    pub controllers: Vec<String>,
    pub v2: bool,
}

/// cgroup hierarchies from `/proc/self/mountinfo` text, each once (the first mount of a v1 controller set).
pub fn parse_hierarchies(mountinfo: &str) -> Vec<Hierarchy> {
    let mut out: Vec<Hierarchy> = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let mount = left.split(' ').nth(4).unwrap_or_default();
        let mut r = right.split(' ');
        let (fstype, _source, options) = (r.next().unwrap_or(""), r.next(), r.next().unwrap_or(""));
        let h = match fstype {
            "cgroup2" => Hierarchy { mount: mount.into(), controllers: vec![], v2: true },
            "cgroup" => {
                let known = ["rw", "ro", "nosuid", "nodev", "noexec", "relatime", "clone_children", "noprefix"];
                let controllers: Vec<String> =
                    options.split(',').filter(|o| !known.contains(o) && !o.starts_with("release_agent=")).map(String::from).collect();
                Hierarchy { mount: mount.into(), controllers, v2: false }
            }
            _ => continue,
        };
        if !out.iter().any(|o| o.v2 == h.v2 && o.controllers == h.controllers) {
            out.push(h);
        }
    }
    out
}

/// The host's cgroup hierarchies, read once: they do not change while the agent runs, and mountinfo grows with every
/// pod's mounts.
pub fn hierarchies() -> Vec<Hierarchy> {
    static HIERARCHIES: std::sync::OnceLock<Vec<Hierarchy>> = std::sync::OnceLock::new();
    HIERARCHIES.get_or_init(|| parse_hierarchies(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default())).clone()
}

/// `<root>/<qos>/pod<uid>` below each hierarchy.
pub fn pod_dirs(root: &str, qos: &str, uid: &str) -> Vec<(Hierarchy, PathBuf)> {
    let rel = Path::new(root.trim_start_matches('/')).join(qos).join(format!("pod{uid}"));
    hierarchies().into_iter().map(|h| { let p = h.mount.join(&rel); (h, p) }).collect()
}

/// The files and values for one hierarchy.
pub fn files_for(h: &Hierarchy, r: &PodResources) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if h.v2 {
        // The kubelet's shares → weight conversion.
        out.push(("cpu.weight", (1 + ((r.cpu_shares - 2) * 9999) / 262_142).to_string()));
        let quota = r.cpu_quota_us.map(|q| q.to_string()).unwrap_or_else(|| "max".into());
        out.push(("cpu.max", format!("{quota} {CPU_PERIOD_US}")));
        out.push(("memory.max", r.memory_limit.map(|m| m.to_string()).unwrap_or_else(|| "max".into())));
    } else {
        if h.controllers.iter().any(|c| c == "cpu") {
            out.push(("cpu.shares", r.cpu_shares.to_string()));
            out.push(("cpu.cfs_period_us", CPU_PERIOD_US.to_string()));
            out.push(("cpu.cfs_quota_us", r.cpu_quota_us.unwrap_or(-1).to_string()));
        }
        if h.controllers.iter().any(|c| c == "memory") {
            out.push(("memory.limit_in_bytes", r.memory_limit.unwrap_or(-1).to_string()));
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
#[error("{what} {}: {source}", path.display())]
pub struct CgroupError {
    what: &'static str,
    path: PathBuf,
    source: std::io::Error,
}

/// Creates the pod cgroup where it is limited (cpu and memory hierarchies, or v2) and writes its limits. A file
/// that the hierarchy does not offer (a v2 tree without the controller enabled, as on a hybrid host) is skipped;
/// any other failure is an error, so that a pod never runs without the limits it asked for.
pub fn apply_pod_resources(root: &str, qos: &str, uid: &str, r: &PodResources) -> Result<(), CgroupError> {
    for (h, dir) in pod_dirs(root, qos, uid) {
        let files = files_for(&h, r);
        if files.is_empty() {
            continue;
        }
        if h.v2 {
            // Only where the hierarchy has the controllers (a hybrid host's v2 tree has none): then they are
            // handed down from the root to the pod's parent, as libcontainer does for the container's own cgroup.
            let available = std::fs::read_to_string(h.mount.join("cgroup.controllers")).unwrap_or_default();
            if !available.split_whitespace().any(|c| c == "cpu" || c == "memory") {
                continue;
            }
            enable_v2_controllers(&h.mount, &dir)?;
        }
        std::fs::create_dir_all(&dir).map_err(|source| CgroupError { what: "creating", path: dir.clone(), source })?;
        for (name, value) in files {
            let path = dir.join(name);
            if !path.exists() {
                continue;
            }
            std::fs::write(&path, &value).map_err(|source| CgroupError { what: "writing", path, source })?;
        }
    }
    Ok(())
}

/// On v2, turns cpu and memory on in `cgroup.subtree_control` from the mount (included) down to `dir`'s parent.
fn enable_v2_controllers(mount: &Path, dir: &Path) -> Result<(), CgroupError> {
    let Ok(rel) = dir.strip_prefix(mount) else { return Ok(()) };
    let parts: Vec<_> = rel.components().collect();
    let mut cur = mount.to_path_buf();
    for k in 0..parts.len() {
        if k > 0 {
            cur.push(parts[k - 1]);
            std::fs::create_dir_all(&cur).map_err(|source| CgroupError { what: "creating", path: cur.clone(), source })?;
        }
        let available = std::fs::read_to_string(cur.join("cgroup.controllers")).unwrap_or_default();
        let enabled = std::fs::read_to_string(cur.join("cgroup.subtree_control")).unwrap_or_default();
        for c in ["cpu", "memory"] {
            if available.split_whitespace().any(|a| a == c) && !enabled.split_whitespace().any(|e| e == c) {
                let path = cur.join("cgroup.subtree_control");
                std::fs::write(&path, format!("+{c}")).map_err(|source| CgroupError { what: "writing", path, source })?;
            }
        }
    }
    Ok(())
}

/// Removes `<root>/<qos>/pod<uid>` (and the empty container cgroups below it) in every hierarchy.
pub fn remove_pod(root: &str, uid: &str) {
    for qos in ["guaranteed", "burstable", "besteffort"] {
        for (_, pod) in pod_dirs(root, qos, uid) {
            if !pod.is_dir() {
                continue;
            }
            for child in std::fs::read_dir(&pod).into_iter().flatten().flatten() {
                if child.path().is_dir() {
                    let _ = std::fs::remove_dir(child.path());
                }
            }
            if let Err(e) = std::fs::remove_dir(&pod) {
                tracing::warn!(path = %pod.display(), error = %e, "removing a pod cgroup failed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: serde_json::Value, init: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": containers, "initContainers": init}}))
            .unwrap()
    }

    fn c(name: &str, requests: serde_json::Value, limits: serde_json::Value) -> serde_json::Value {
        json!({"name": name, "image": "x", "resources": {"requests": requests, "limits": limits}})
    }

    #[test]
    fn guaranteed_pods_get_sums_of_their_limits() {
        let p = pod(
            json!([c("a", json!({}), json!({"cpu": "500m", "memory": "64Mi"})), c("b", json!({}), json!({"cpu": "1", "memory": "32Mi"}))]),
            json!([]),
        );
        let r = pod_resources(&p);
        assert_eq!(r, PodResources { cpu_shares: 1536, cpu_quota_us: Some(150_000), memory_limit: Some(96 << 20) });
    }

    #[test]
    fn burstable_pods_get_limits_only_when_every_container_declares_one() {
        let p = pod(json!([c("a", json!({"cpu": "250m"}), json!({"memory": "64Mi"})), c("b", json!({"cpu": "250m"}), json!({}))]), json!([]));
        let r = pod_resources(&p);
        assert_eq!(r, PodResources { cpu_shares: 512, cpu_quota_us: None, memory_limit: None });
        let p = pod(json!([c("a", json!({"cpu": "100m"}), json!({"memory": "64Mi"}))]), json!([]));
        assert_eq!(pod_resources(&p).memory_limit, Some(64 << 20));
    }

    #[test]
    fn best_effort_pods_get_minimum_shares() {
        let p = pod(json!([{"name": "a", "image": "x"}]), json!([]));
        assert_eq!(pod_resources(&p), PodResources { cpu_shares: 2, cpu_quota_us: None, memory_limit: None });
    }

    #[test]
    fn init_containers_count_as_the_largest_one_and_sidecars_add_up() {
        let p = pod(
            json!([c("a", json!({}), json!({"cpu": "100m", "memory": "10Mi"}))]),
            json!([c("init", json!({}), json!({"cpu": "2", "memory": "5Mi"}))]),
        );
        let r = pod_resources(&p);
        assert_eq!(r.cpu_quota_us, Some(200_000));
        assert_eq!(r.memory_limit, Some(10 << 20));
        let mut side = c("side", json!({}), json!({"cpu": "100m", "memory": "10Mi"}));
        side["restartPolicy"] = json!("Always");
        let p = pod(json!([c("a", json!({}), json!({"cpu": "100m", "memory": "10Mi"}))]), json!([side]));
        assert_eq!(pod_resources(&p).memory_limit, Some(20 << 20));
    }

    #[test]
    fn hierarchies_of_a_hybrid_host() {
        let mi = "\
25 30 0:22 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:9 - tmpfs tmpfs ro,mode=755
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:10 - cgroup2 cgroup2 rw,nsdelegate
27 25 0:24 / /sys/fs/cgroup/systemd rw,nosuid shared:11 - cgroup cgroup rw,xattr,name=systemd
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:14 - cgroup cgroup rw,cpu,cpuacct
31 25 0:28 / /sys/fs/cgroup/memory rw,nosuid shared:15 - cgroup cgroup rw,memory
40 30 0:27 / /other/cpu rw shared:14 - cgroup cgroup rw,cpu,cpuacct
";
        let h = parse_hierarchies(mi);
        assert_eq!(h.len(), 4);
        assert!(h[0].v2 && h[0].mount == Path::new("/sys/fs/cgroup/unified"));
        assert_eq!(h[2].controllers, ["cpu", "cpuacct"]);
        let r = PodResources { cpu_shares: 512, cpu_quota_us: Some(50_000), memory_limit: Some(1 << 20) };
        assert_eq!(
            files_for(&h[2], &r),
            [("cpu.shares", "512".to_string()), ("cpu.cfs_period_us", "100000".into()), ("cpu.cfs_quota_us", "50000".into())]
        );
        assert_eq!(files_for(&h[3], &r), [("memory.limit_in_bytes", "1048576".to_string())]);
        assert!(files_for(&h[1], &r).is_empty(), "name=systemd has nothing to limit");
        assert_eq!(
            files_for(&h[0], &r),
            [("cpu.weight", "20".to_string()), ("cpu.max", "50000 100000".into()), ("memory.max", "1048576".into())]
        );
        let none = PodResources { cpu_shares: 2, ..Default::default() };
        assert_eq!(files_for(&h[0], &none), [("cpu.weight", "1".to_string()), ("cpu.max", "max 100000".into()), ("memory.max", "max".into())]);
    }
}
