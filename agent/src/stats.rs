//! Resource usage of the node and its containers, for `kubectl top` through the API server's metrics.k8s.io: the
//! kubelet's Summary API (`/stats/summary`) cut to what metrics-server reads — CPU as a rate (`usageNanoCores`)
//! over the last sampling interval, from cumulative counters, and the memory working set (usage minus inactive
//! file pages, as cAdvisor computes it), node-wide and per container.
//!
//! A sampler reads the counters every [`INTERVAL`]: the node's from /proc/stat and /proc/meminfo, each container's
//! from its cgroup `<root>/<qos>/pod<uid>/<container-id>` (v1 `cpuacct.usage` and `memory.*`, or v2 `cpu.stat`
//! and `memory.*`). Written by hand: a few counter files; no crate reads them for both cgroup versions in this
//! layout.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::cgroups::{hierarchies, Hierarchy};

pub const INTERVAL: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub at: DateTime<Utc>,
    /// Cumulative CPU time, nanoseconds.
    pub cpu_ns: u64,
    pub working_set: u64,
}

/// The last two points of a node or container.
#[derive(Clone, Copy, Debug, Default)]
pub struct Track {
    pub prev: Option<Point>,
    pub cur: Option<Point>,
}

impl Track {
    fn push(&mut self, p: Point) {
        self.prev = self.cur.take();
        self.cur = Some(p);
    }

    /// CPU in nanocores over the last interval, and the latest point; None until two points exist (or after a
    /// counter reset, such as a container restart).
    pub fn rate(&self) -> Option<(u64, Point)> {
        let (prev, cur) = (self.prev?, self.cur?);
        let dt = (cur.at - prev.at).num_nanoseconds()? as u128;
        if dt == 0 || cur.cpu_ns < prev.cpu_ns {
            return None;
        }
        Some((((cur.cpu_ns - prev.cpu_ns) as u128 * 1_000_000_000 / dt) as u64, cur))
    }
}

#[derive(Debug, Default)]
pub struct Samples {
    pub node: Track,
    /// By container id (`<pod uid>-<name>-<restart>`), with the pod's uid.
    pub containers: HashMap<String, (String, Track)>,
}

pub type Shared = Arc<Mutex<Samples>>;

/// The process's samples (one agent per process).
pub fn shared() -> &'static Shared {
    static SAMPLES: std::sync::OnceLock<Shared> = std::sync::OnceLock::new();
    SAMPLES.get_or_init(Shared::default)
}

/// uid → (namespace, name) of the pods with logs here: their log directories are `<namespace>_<name>_<uid>`
/// (neither a namespace nor a pod name can hold `_`).
pub fn pods_from_log_dirs(log_dir: &Path) -> HashMap<String, (String, String)> {
    std::fs::read_dir(log_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            let mut parts = n.splitn(3, '_');
            let (ns, name, uid) = (parts.next()?, parts.next()?, parts.next()?);
            Some((uid.to_string(), (ns.to_string(), name.to_string())))
        })
        .collect()
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key value` lines (memory.stat, cpu.stat).
fn stat_field(path: &Path, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.strip_prefix(' ')).and_then(|v| v.trim().parse().ok()))
}

/// Busy CPU time of the whole node from /proc/stat's first line (user nice system idle iowait irq softirq steal).
pub fn node_cpu_ns(proc_stat: &str, ticks_per_second: u64) -> Option<u64> {
    let line = proc_stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    let busy = f.first()? + f.get(1)? + f.get(2)? + f.get(5).unwrap_or(&0) + f.get(6).unwrap_or(&0) + f.get(7).unwrap_or(&0);
    Some(busy * (1_000_000_000 / ticks_per_second.max(1)))
}

/// MemTotal − MemAvailable, in bytes.
pub fn node_working_set(meminfo: &str) -> Option<u64> {
    let kb = |key: &str| meminfo.lines().find_map(|l| l.strip_prefix(key).and_then(|r| r.trim().trim_end_matches(" kB").trim().parse::<u64>().ok()));
    Some(kb("MemTotal:")?.saturating_sub(kb("MemAvailable:")?) * 1024)
}

/// A container cgroup's counters, from the hierarchies that hold them.
fn container_point(cpu: &Hierarchy, mem: &Hierarchy, rel: &Path, at: DateTime<Utc>) -> Option<Point> {
    let cpu_dir = cpu.mount.join(rel);
    let cpu_ns = if cpu.v2 { stat_field(&cpu_dir.join("cpu.stat"), "usage_usec")? * 1000 } else { read_u64(&cpu_dir.join("cpuacct.usage"))? };
    let mem_dir = mem.mount.join(rel);
    let working_set = if mem.v2 {
        read_u64(&mem_dir.join("memory.current")).unwrap_or(0).saturating_sub(stat_field(&mem_dir.join("memory.stat"), "inactive_file").unwrap_or(0))
    } else {
        read_u64(&mem_dir.join("memory.usage_in_bytes"))
            .unwrap_or(0)
            .saturating_sub(stat_field(&mem_dir.join("memory.stat"), "total_inactive_file").unwrap_or(0))
    };
    Some(Point { at, cpu_ns, working_set })
}

/// The hierarchies to read CPU and memory from: v1 `cpuacct` and `memory` where mounted, else the v2 one.
fn sources() -> Option<(Hierarchy, Hierarchy)> {
    let hs = hierarchies();
    let v1 = |c: &str| hs.iter().find(|h| !h.v2 && h.controllers.iter().any(|x| x == c)).cloned();
    let v2 = hs.iter().find(|h| h.v2).cloned();
    Some((v1("cpuacct").or_else(|| v2.clone())?, v1("memory").or(v2)?))
}

/// One round: the node and every container cgroup below `<root>/<qos>/pod<uid>/`.
pub fn sample(root: &str, samples: &Shared) {
    let at = Utc::now();
    let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as u64;
    let node = std::fs::read_to_string("/proc/stat").ok().and_then(|s| node_cpu_ns(&s, ticks)).and_then(|cpu_ns| {
        let ws = node_working_set(&std::fs::read_to_string("/proc/meminfo").ok()?)?;
        Some(Point { at, cpu_ns, working_set: ws })
    });
    let mut seen: Vec<(String, String, Point)> = Vec::new();
    if let Some((cpu, mem)) = sources() {
        let root = Path::new(root.trim_start_matches('/'));
        for qos in ["guaranteed", "burstable", "besteffort"] {
            for pod in std::fs::read_dir(cpu.mount.join(root).join(qos)).into_iter().flatten().flatten() {
                let pod_name = pod.file_name().to_string_lossy().into_owned();
                let Some(uid) = pod_name.strip_prefix("pod").map(str::to_string) else { continue };
                for c in std::fs::read_dir(pod.path()).into_iter().flatten().flatten().filter(|c| c.path().is_dir()) {
                    let id = c.file_name().to_string_lossy().into_owned();
                    let rel = root.join(qos).join(&pod_name).join(&id);
                    if let Some(p) = container_point(&cpu, &mem, &rel, at) {
                        seen.push((id, uid.clone(), p));
                    }
                }
            }
        }
    }
    let mut s = samples.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(n) = node {
        s.node.push(n);
    }
    let live: std::collections::HashSet<&String> = seen.iter().map(|(id, _, _)| id).collect();
    s.containers.retain(|id, _| live.contains(id));
    for (id, uid, p) in seen {
        s.containers.entry(id).or_insert_with(|| (uid, Track::default())).1.push(p);
    }
}

/// Sample every [`INTERVAL`] until the process ends. The reads are of procfs and cgroupfs files, which never wait
/// for a disk, so they run on the runtime's own threads (a blocking-pool thread would cost the agent a malloc arena
/// of its own, about a MiB of RSS).
pub fn spawn_sampler(root: String, samples: Shared) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(INTERVAL);
        loop {
            tick.tick().await;
            sample(&root, &samples);
        }
    });
}

/// The container name in an id `<uid>-<name>-<restart>` (the uid is 36 characters).
pub fn container_name(id: &str, uid: &str) -> Option<String> {
    let rest = id.strip_prefix(uid)?.strip_prefix('-')?;
    let (name, restart) = rest.rsplit_once('-')?;
    restart.bytes().all(|b| b.is_ascii_digit()).then(|| name.to_string())
}

fn usage(rate: u64, p: Point) -> (Value, Value) {
    let t = p.at.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    (json!({"time": t, "usageNanoCores": rate, "usageCoreNanoSeconds": p.cpu_ns}), json!({"time": t, "workingSetBytes": p.working_set}))
}

/// The summary, with pods named from `pods` (uid → (namespace, name)).
pub fn summary(node_name: &str, samples: &Samples, pods: &HashMap<String, (String, String)>) -> Value {
    let node = samples.node.rate().map(|(r, p)| usage(r, p));
    let mut by_pod: HashMap<&String, Vec<Value>> = HashMap::new();
    for (id, (uid, track)) in &samples.containers {
        let (Some((rate, p)), Some(name)) = (track.rate(), container_name(id, uid)) else { continue };
        let (cpu, memory) = usage(rate, p);
        by_pod.entry(uid).or_default().push(json!({"name": name, "cpu": cpu, "memory": memory}));
    }
    let mut pod_list: Vec<Value> = by_pod
        .into_iter()
        .filter_map(|(uid, mut containers)| {
            let (ns, name) = pods.get(uid)?;
            containers.sort_by(|a, b| a["name"].as_str().cmp(&b["name"].as_str()));
            Some(json!({"podRef": {"name": name, "namespace": ns, "uid": uid}, "containers": containers}))
        })
        .collect();
    pod_list.sort_by(|a, b| a["podRef"]["uid"].as_str().cmp(&b["podRef"]["uid"].as_str()));
    let mut node_json = json!({"nodeName": node_name});
    if let Some((cpu, memory)) = node {
        node_json["cpu"] = cpu;
        node_json["memory"] = memory;
    }
    json!({"node": node_json, "pods": pod_list})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(secs: i64, cpu_ns: u64) -> Point {
        Point { at: DateTime::from_timestamp(secs, 0).unwrap(), cpu_ns, working_set: 42 }
    }

    #[test]
    fn rates_need_two_points_and_no_reset() {
        let mut t = Track::default();
        t.push(point(100, 1_000_000_000));
        assert!(t.rate().is_none());
        t.push(point(110, 3_000_000_000));
        assert_eq!(t.rate().unwrap().0, 200_000_000, "2 s of CPU over 10 s is 200 millicores");
        t.push(point(120, 10));
        assert!(t.rate().is_none(), "a counter that went back (a restarted container)");
    }

    #[test]
    fn node_counters() {
        let stat = "cpu  100 0 50 1000 20 5 5 0 0 0\ncpu0 1 2 3\n";
        assert_eq!(node_cpu_ns(stat, 100), Some(160 * 10_000_000));
        let meminfo = "MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   20000000 kB\n";
        assert_eq!(node_working_set(meminfo), Some(4_000_000 * 1024));
    }

    #[test]
    fn summary_names_pods_and_containers() {
        let uid = "0f6c2a4e-7c1d-4a57-9d7e-2b1e8f0a9c11";
        let mut s = Samples::default();
        s.node.push(point(100, 0));
        s.node.push(point(110, 5_000_000_000));
        let mut t = Track::default();
        t.push(point(100, 0));
        t.push(point(110, 1_000_000_000));
        s.containers.insert(format!("{uid}-web-server-0"), (uid.into(), t));
        s.containers.insert("stray".into(), ("other".into(), t));
        let pods: HashMap<String, (String, String)> = [(uid.to_string(), ("default".to_string(), "web".to_string()))].into();
        let out = summary("n1", &s, &pods);
        assert_eq!(out["node"]["cpu"]["usageNanoCores"], 500_000_000);
        assert_eq!(out["pods"][0]["podRef"]["name"], "web");
        assert_eq!(out["pods"][0]["containers"][0]["name"], "web-server");
        assert_eq!(out["pods"][0]["containers"][0]["cpu"]["usageNanoCores"], 100_000_000);
        assert_eq!(out["pods"].as_array().unwrap().len(), 1);
        assert_eq!(container_name(&format!("{uid}-a-b-12"), uid).as_deref(), Some("a-b"));
        assert_eq!(container_name(&format!("{uid}-x"), uid), None);
    }
}
