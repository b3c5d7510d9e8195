//! The OCI runtime config (config.json) of a container, from the image config and the pod spec. Pure.

use std::path::Path;

use k8s_openapi::api::core::v1::Container;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use serde_json::{json, Value};
use skiff_images::RunConfig;

use crate::sandbox::files::PodFiles;
use super::security::Security;
use crate::volumes::mounts::BindMount;

/// The process arguments, as Kubernetes combines `command`/`args` with the image's Entrypoint/Cmd.
pub fn process_args(c: &Container, image: &RunConfig) -> Vec<String> {
    match (&c.command, &c.args) {
        (Some(cmd), args) if !cmd.is_empty() => cmd.iter().chain(args.iter().flatten()).cloned().collect(),
        (_, Some(args)) if !args.is_empty() => image.entrypoint.iter().chain(args).cloned().collect(),
        _ => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    }
}

/// Image env first, then the container's resolved env (later wins); HOSTNAME and a default PATH.
pub fn process_env(image: &RunConfig, hostname: &str, container_env: &[(String, String)]) -> Vec<String> {
    let mut env: Vec<(String, String)> = vec![];
    let mut set = |k: &str, v: &str| {
        if let Some(e) = env.iter_mut().find(|(ek, _)| ek == k) {
            e.1 = v.to_string();
        } else {
            env.push((k.to_string(), v.to_string()));
        }
    };
    set("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin");
    set("HOSTNAME", hostname);
    for kv in &image.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        set(k, v);
    }
    for (k, v) in container_env {
        set(k, v);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// Parses a CPU quantity into millicores ("500m", "2", "0.5").
pub fn cpu_millis(q: &Quantity) -> Option<i64> {
    let s = q.0.trim();
    if let Some(m) = s.strip_suffix('m') {
        return m.parse().ok();
    }
    s.parse::<f64>().ok().map(|c| (c * 1000.0).round() as i64)
}

/// Parses a memory quantity into bytes ("64Mi", "1G", "1000").
pub fn memory_bytes(q: &Quantity) -> Option<i64> {
    let s = q.0.trim();
    const UNITS: [(&str, f64); 12] = [
        ("Ki", 1024.0), ("Mi", 1048576.0), ("Gi", 1073741824.0), ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0), ("Ei", 1152921504606846976.0),
        ("k", 1e3), ("M", 1e6), ("G", 1e9), ("T", 1e12), ("P", 1e15), ("E", 1e18),
    ];
    for (suffix, mult) in UNITS {
        if let Some(n) = s.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|v| (v * mult) as i64);
        }
    }
    s.parse::<f64>().ok().map(|v| v as i64)
}

fn resources(c: &Container) -> Value {
    let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
    let requests = c.resources.as_ref().and_then(|r| r.requests.as_ref());
    let mut res = json!({});
    if let Some(mem) = limits.and_then(|l| l.get("memory")).and_then(memory_bytes) {
        res["memory"] = json!({"limit": mem});
    }
    // Shares from the request (or the limit, which defaults the request), as the kubelet: millis * 1024 / 1000.
    let req_cpu = requests.and_then(|r| r.get("cpu")).or_else(|| limits.and_then(|l| l.get("cpu"))).and_then(cpu_millis);
    let shares = req_cpu.map(|m| (m.saturating_mul(1024) / 1000).clamp(2, 262_144)).unwrap_or(2);
    let mut cpu = json!({"shares": shares});
    if let Some(lim) = limits.and_then(|l| l.get("cpu")).and_then(cpu_millis) {
        cpu["quota"] = json!(lim.saturating_mul(100).max(1000));
        cpu["period"] = json!(100_000);
    }
    res["cpu"] = cpu;
    res
}

/// Everything config.json needs besides the container spec.
pub struct SpecInputs<'a> {
    pub hostname: &'a str,
    /// The pod's network namespace; `None` for `hostNetwork` pods, which share the node's network and UTS
    /// namespaces (and so keep the node's hostname).
    pub netns: Option<&'a Path>,
    pub files: &'a PodFiles,
    pub cgroups_path: String,
    /// What the agent resolved for this container (env, mounts, security).
    pub config: ContainerConfig,
}

/// The container's settings that the agent resolves before rendering: env, volume mounts, security context.
#[derive(Clone, Debug, Default)]
pub struct ContainerConfig {
    /// From [`crate::pods::env::resolve`].
    pub env: Vec<(String, String)>,
    /// The container's volume mounts ([`crate::volumes::mounts`]).
    pub mounts: Vec<BindMount>,
    /// From [`super::security::resolve`].
    pub security: Security,
    /// The image's overlay options (`lowerdir=..`, `upperdir=..`, `workdir=..`, from
    /// `skiff_images::Store::prepare_rootfs`): the runtime mounts the overlay at `/` inside the container's own
    /// mount namespace, before the other mounts, so the host's mount table holds no line per container (every
    /// runtime start reads and copies that table). Empty: the bundle's `rootfs` is already the root filesystem.
    pub rootfs_overlay: Vec<String>,
}

fn bind(dest: &str, src: &Path, read_only: bool) -> Value {
    json!({"destination": dest, "type": "bind", "source": src, "options": ["rbind", "rprivate", if read_only { "ro" } else { "rw" }]})
}

/// The standard mounts, the pod's /etc files (unless a volume is mounted there, as upstream) and the volumes.
fn mounts(inputs: &SpecInputs) -> Vec<Value> {
    let mut out = Vec::new();
    if !inputs.config.rootfs_overlay.is_empty() {
        out.push(json!({"destination": "/", "type": "overlay", "source": "overlay", "options": inputs.config.rootfs_overlay}));
    }
    out.extend([
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", if inputs.config.security.privileged { "rw" } else { "ro" }]}),
    ]);
    let user = &inputs.config.mounts;
    for (dest, src) in [("/etc/hosts", &inputs.files.hosts), ("/etc/resolv.conf", &inputs.files.resolv_conf), ("/etc/hostname", &inputs.files.hostname)] {
        if !user.iter().any(|m| m.destination.trim_end_matches('/') == dest) {
            out.push(bind(dest, src, false));
        }
    }
    out.extend(user.iter().map(|m| bind(&m.destination, &m.source, m.read_only)));
    out
}

fn namespaces(netns: Option<&Path>) -> Value {
    let mut ns = vec![json!({"type": "pid"}), json!({"type": "ipc"}), json!({"type": "mount"})];
    if let Some(path) = netns {
        ns.push(json!({"type": "uts"}));
        ns.push(json!({"type": "network", "path": path}));
    }
    Value::Array(ns)
}

/// The whole config.json of a container.
pub fn render(c: &Container, image: &RunConfig, inputs: &SpecInputs) -> Value {
    let cwd = c.working_dir.clone().filter(|w| !w.is_empty()).or_else(|| image.working_dir.clone()).filter(|w| !w.is_empty());
    let sec = &inputs.config.security;
    let mut resources = resources(c);
    let (masked, readonly) = if sec.privileged {
        // Privileged: nothing masked, every device allowed by the device cgroup (host device nodes are not
        // added to /dev).
        resources["devices"] = json!([{"allow": true, "access": "rwm"}]);
        (json!([]), json!([]))
    } else {
        (
            json!(["/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
                   "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi"]),
            json!(["/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]),
        )
    };
    let mut user = json!({"uid": sec.uid, "gid": sec.gid});
    if !sec.additional_gids.is_empty() {
        user["additionalGids"] = json!(sec.additional_gids);
    }
    let mut linux = json!({
        "namespaces": namespaces(inputs.netns),
        "cgroupsPath": inputs.cgroups_path,
        "resources": resources,
        "maskedPaths": masked,
        "readonlyPaths": readonly,
    });
    if !sec.sysctls.is_empty() {
        linux["sysctl"] = json!(sec.sysctls);
    }
    let mut spec = json!({
        "ociVersion": "1.0.2",
        "process": {
            // tty: true runs on a terminal whose master the monitor takes over the console socket.
            "terminal": c.tty == Some(true),
            "user": user,
            "args": process_args(c, image),
            "env": process_env(image, inputs.hostname, &inputs.config.env),
            "cwd": cwd.unwrap_or_else(|| "/".into()),
            "capabilities": {"bounding": sec.capabilities, "effective": sec.capabilities, "permitted": sec.capabilities},
            // No "rlimits": the container inherits the runtime's limits, as with containerd 2. Setting one above
            // the caller's hard limit needs CAP_SYS_RESOURCE (and NOFILE at most fs.nr_open); without it the
            // runtime's intermediate process fails with EPERM (hosts whose bounding set lacks it, as here).
            "noNewPrivileges": sec.no_new_privileges,
        },
        "root": {"path": "rootfs", "readonly": sec.readonly_rootfs},
        "mounts": mounts(inputs),
        "linux": linux,
    });
    if inputs.netns.is_some() {
        spec["hostname"] = json!(inputs.hostname);
    }
    spec
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(v: Value) -> Container {
        serde_json::from_value(v).unwrap()
    }

    fn image() -> RunConfig {
        RunConfig { entrypoint: vec!["/ep".into()], cmd: vec!["cmd".into()], env: vec!["A=img".into(), "B=img".into()], ..Default::default() }
    }

    #[test]
    fn command_and_args_combine_like_kubernetes() {
        let i = image();
        assert_eq!(process_args(&container(json!({"name": "c"})), &i), ["/ep", "cmd"]);
        assert_eq!(process_args(&container(json!({"name": "c", "args": ["x"]})), &i), ["/ep", "x"]);
        assert_eq!(process_args(&container(json!({"name": "c", "command": ["sh"]})), &i), ["sh"]);
        assert_eq!(process_args(&container(json!({"name": "c", "command": ["sh"], "args": ["-c", "x"]})), &i), ["sh", "-c", "x"]);
    }

    #[test]
    fn container_env_overrides_image_env() {
        let env = process_env(&image(), "p", &[("B".into(), "pod".into())]);
        assert!(env.contains(&"A=img".to_string()) && env.contains(&"B=pod".to_string()) && env.contains(&"HOSTNAME=p".to_string()));
    }

    #[test]
    fn quantities_and_limits() {
        assert_eq!(cpu_millis(&Quantity("500m".into())), Some(500));
        assert_eq!(cpu_millis(&Quantity("2".into())), Some(2000));
        assert_eq!(memory_bytes(&Quantity("64Mi".into())), Some(64 << 20));
        assert_eq!(memory_bytes(&Quantity("1G".into())), Some(1_000_000_000));
        let c = container(json!({"name": "c", "resources": {"limits": {"cpu": "250m", "memory": "32Mi"}}}));
        let r = resources(&c);
        assert_eq!(r["memory"]["limit"], json!(32 << 20));
        assert_eq!(r["cpu"]["quota"], json!(25_000));
        assert_eq!(r["cpu"]["shares"], json!(256));
    }

    fn render_sample() -> Value {
        let files = PodFiles { hosts: "/p/etc-hosts".into(), resolv_conf: "/p/resolv.conf".into(), hostname: "/p/hostname".into() };
        let inputs = SpecInputs {
            hostname: "web",
            netns: Some(Path::new("/run/netns/skiff-x")),
            files: &files,
            cgroups_path: "/skiff/besteffort/podu1/c1".into(),
            config: ContainerConfig::default(),
        };
        render(&container(json!({"name": "c", "command": ["sh", "-c", "echo hi"]})), &image(), &inputs)
    }

    /// Guards the container-start EPERM: any rlimit in config.json is applied with setrlimit by the runtime's
    /// intermediate process, which fails when it exceeds the caller's hard limit without CAP_SYS_RESOURCE.
    #[test]
    fn spec_sets_no_rlimits_so_the_container_inherits_the_runtimes() {
        let spec = render_sample();
        assert!(spec["process"].get("rlimits").is_none(), "{}", spec["process"]);
    }

    #[test]
    fn host_network_pods_share_the_nodes_network_and_uts_namespaces() {
        let files = PodFiles { hosts: "/p/etc-hosts".into(), resolv_conf: "/p/resolv.conf".into(), hostname: "/p/hostname".into() };
        let inputs = SpecInputs { hostname: "node-1", netns: None, files: &files, cgroups_path: "/x".into(), config: ContainerConfig::default() };
        let spec = render(&container(json!({"name": "c", "command": ["true"]})), &image(), &inputs);
        let ns = spec["linux"]["namespaces"].as_array().unwrap();
        assert!(!ns.iter().any(|n| n["type"] == "network" || n["type"] == "uts"), "{ns:?}");
        assert!(spec.get("hostname").is_none());
        assert_eq!(render_sample()["hostname"], "web");
    }

    #[test]
    fn spec_has_pod_netns_cgroups_path_and_bind_mounts() {
        let spec = render_sample();
        assert_eq!(spec["process"]["args"], json!(["sh", "-c", "echo hi"]));
        assert_eq!(spec["linux"]["cgroupsPath"], "/skiff/besteffort/podu1/c1");
        let ns = spec["linux"]["namespaces"].as_array().unwrap();
        assert!(ns.contains(&json!({"type": "network", "path": "/run/netns/skiff-x"})));
        let mounts = spec["mounts"].as_array().unwrap();
        assert!(mounts.iter().any(|m| m["destination"] == "/etc/hosts" && m["source"] == "/p/etc-hosts"));
    }

    #[test]
    fn security_settings_reach_the_spec() {
        let files = PodFiles { hosts: "/h".into(), resolv_conf: "/r".into(), hostname: "/n".into() };
        let security = Security {
            uid: 1000,
            gid: 2000,
            additional_gids: vec![3000],
            capabilities: vec!["CAP_NET_ADMIN".into()],
            no_new_privileges: true,
            readonly_rootfs: true,
            privileged: false,
            sysctls: [("net.core.somaxconn".to_string(), "1024".to_string())].into(),
        };
        let config = ContainerConfig { security, ..Default::default() };
        let inputs = SpecInputs { hostname: "web", netns: Some(Path::new("/n")), files: &files, cgroups_path: String::new(), config };
        let spec = render(&container(json!({"name": "c"})), &image(), &inputs);
        assert_eq!(spec["process"]["user"], json!({"uid": 1000, "gid": 2000, "additionalGids": [3000]}));
        assert_eq!(spec["process"]["capabilities"]["bounding"], json!(["CAP_NET_ADMIN"]));
        assert_eq!(spec["process"]["noNewPrivileges"], true);
        assert_eq!(spec["root"]["readonly"], true);
        assert_eq!(spec["linux"]["sysctl"]["net.core.somaxconn"], "1024");
        assert!(!spec["linux"]["maskedPaths"].as_array().unwrap().is_empty());

        let config = ContainerConfig { security: Security { privileged: true, ..Default::default() }, ..Default::default() };
        let inputs = SpecInputs { hostname: "web", netns: Some(Path::new("/n")), files: &files, cgroups_path: String::new(), config };
        let spec = render(&container(json!({"name": "c"})), &image(), &inputs);
        assert_eq!(spec["linux"]["maskedPaths"], json!([]));
        assert_eq!(spec["linux"]["resources"]["devices"], json!([{"allow": true, "access": "rwm"}]));
        let sys = spec["mounts"].as_array().unwrap().iter().find(|m| m["destination"] == "/sys").unwrap().clone();
        assert!(sys["options"].as_array().unwrap().contains(&json!("rw")));
    }

    #[test]
    fn the_image_overlay_is_mounted_at_the_root_before_everything_else() {
        let files = PodFiles { hosts: "/h".into(), resolv_conf: "/r".into(), hostname: "/n".into() };
        let opts = vec!["lowerdir=/s/b/fs:/s/a/fs".to_string(), "upperdir=/l/upper".into(), "workdir=/l/work".into()];
        let config = ContainerConfig { rootfs_overlay: opts.clone(), ..Default::default() };
        let inputs = SpecInputs { hostname: "web", netns: None, files: &files, cgroups_path: String::new(), config };
        let spec = render(&container(json!({"name": "c"})), &image(), &inputs);
        let mounts = spec["mounts"].as_array().unwrap();
        assert_eq!(mounts[0], json!({"destination": "/", "type": "overlay", "source": "overlay", "options": opts}));
        assert_eq!(mounts.iter().filter(|m| m["destination"] == "/").count(), 1);
        assert_eq!(mounts[1]["destination"], "/proc");
        assert_eq!(spec["root"]["path"], "rootfs");
        // Without overlay options the bundle's rootfs is used as it is.
        let inputs = SpecInputs { hostname: "web", netns: None, files: &files, cgroups_path: String::new(), config: ContainerConfig::default() };
        let spec = render(&container(json!({"name": "c"})), &image(), &inputs);
        assert_eq!(spec["mounts"][0]["destination"], "/proc");
    }

    #[test]
    fn volume_mounts_are_binds_and_replace_the_pod_files() {
        let files = PodFiles { hosts: "/p/etc-hosts".into(), resolv_conf: "/p/resolv.conf".into(), hostname: "/p/hostname".into() };
        let config = ContainerConfig {
            mounts: vec![
                BindMount { destination: "/data".into(), source: "/v/data".into(), read_only: false },
                BindMount { destination: "/etc/hosts".into(), source: "/v/h".into(), read_only: true },
            ],
            ..Default::default()
        };
        let inputs = SpecInputs { hostname: "web", netns: Some(Path::new("/n")), files: &files, cgroups_path: String::new(), config };
        let spec = render(&container(json!({"name": "c"})), &image(), &inputs);
        let mounts = spec["mounts"].as_array().unwrap();
        assert!(mounts.contains(&json!({"destination": "/data", "type": "bind", "source": "/v/data", "options": ["rbind", "rprivate", "rw"]})));
        let hosts: Vec<&Value> = mounts.iter().filter(|m| m["destination"] == "/etc/hosts").collect();
        assert_eq!(hosts, [&json!({"destination": "/etc/hosts", "type": "bind", "source": "/v/h", "options": ["rbind", "rprivate", "ro"]})]);
    }
}
