//! Root-only: one container, with the config.json the agent renders, run through `skiff-agent monitor` (not the
//! whole cluster) with `skiff-runtime` and a busybox rootfs; checks the CRI log, started.json and exit.json.
//! Skips with a printed reason when not root or when busybox-static or the runtime binary is missing.
//! Everything it creates (container, cgroup dirs, netns, temp dir) is removed by Drop guards.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Container;
use serde_json::{json, Value};
use skiff_agent::container::monitor::MonitorArgs;
use skiff_agent::container::spec::{render, SpecInputs};
use skiff_agent::sandbox::files::PodFiles;
use skiff_images::RunConfig;

const BUSYBOX: &str = "/bin/busybox";
const APPLETS: [&str; 6] = ["sh", "echo", "cat", "sleep", "true", "id"];

fn runtime_bin() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_skiff-agent")).with_file_name("skiff-runtime")
}

fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not running as root".into());
    }
    if !Path::new(BUSYBOX).is_file() {
        return Some(format!("{BUSYBOX} missing (apt-get install busybox-static)"));
    }
    if !runtime_bin().is_file() {
        return Some(format!("{} missing (cargo build -p skiff-runtime)", runtime_bin().display()));
    }
    if !Path::new("/sys/fs/cgroup").is_dir() {
        return Some("no /sys/fs/cgroup".into());
    }
    if Command::new("ip").arg("-V").stdout(Stdio::null()).stderr(Stdio::null()).status().is_err() {
        return Some("no `ip` (iproute2)".into());
    }
    None
}

/// A network namespace made with `ip netns add`, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Netns {
        let ok = Command::new("ip").args(["netns", "add", &name]).status().map(|s| s.success()).unwrap_or(false);
        assert!(ok, "ip netns add {name}");
        Netns(name)
    }
    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "delete", &self.0]).status();
    }
}

/// Deletes the container (forced) and then removes the cgroup tree under `cgroup_root` in every hierarchy.
struct ContainerGuard {
    runtime_root: PathBuf,
    id: String,
    cgroup_root: String,
}

fn cgroup_mounts() -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split_whitespace().next()?;
            let mount_point = pre.split_whitespace().nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .collect()
}

fn remove_dirs_depth_first(dir: &Path) {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                remove_dirs_depth_first(&e.path());
            }
        }
    }
    let _ = std::fs::remove_dir(dir);
}

impl Drop for ContainerGuard {
    fn drop(&mut self) {
        if self.runtime_root.join(&self.id).exists() {
            let _ = Command::new(runtime_bin())
                .arg("--root")
                .arg(&self.runtime_root)
                .args(["delete", "--force", &self.id])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        for m in cgroup_mounts() {
            let dir = m.join(&self.cgroup_root);
            if dir.exists() {
                remove_dirs_depth_first(&dir);
            }
        }
    }
}

/// Kills (by its own pid) and reaps the monitor if the test leaves before it ended.
struct ChildGuard(std::process::Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn busybox_bundle(bundle: &Path) {
    let rootfs = bundle.join("rootfs");
    for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
    for applet in APPLETS {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
    }
}

/// `skiff-monitor`, the binary the agent starts when it is installed beside it.
#[test]
fn monitor_runs_a_container_and_writes_cri_logs_and_exit_code() {
    monitor_case("bin", Path::new(env!("CARGO_BIN_EXE_skiff-monitor")), false);
}

/// `skiff-agent monitor`, what the agent starts when `skiff-monitor` is not beside it.
#[test]
fn the_agents_monitor_subcommand_does_the_same() {
    monitor_case("sub", Path::new(env!("CARGO_BIN_EXE_skiff-agent")), true);
}

fn monitor_case(case: &str, program: &Path, subcommand: bool) {
    if let Some(reason) = skip_reason() {
        eprintln!("skipping the monitor test ({case}): {reason}");
        return;
    }
    // Declared first, dropped last: everything else lives inside it.
    let tmp = tempfile::Builder::new().prefix("skiff-agent-mon-").tempdir().unwrap();
    let pid = std::process::id();
    let netns = Netns::new(format!("skiff-mon-{case}-{pid}"));

    let pod_dir = tmp.path().join("pod");
    std::fs::create_dir_all(&pod_dir).unwrap();
    let files = PodFiles {
        hosts: pod_dir.join("etc-hosts"),
        resolv_conf: pod_dir.join("resolv.conf"),
        hostname: pod_dir.join("hostname"),
    };
    std::fs::write(&files.hosts, "127.0.0.1\tlocalhost\n").unwrap();
    std::fs::write(&files.resolv_conf, "").unwrap();
    std::fs::write(&files.hostname, "web\n").unwrap();

    let bundle = tmp.path().join("bundle");
    busybox_bundle(&bundle);
    let container: Container = serde_json::from_value(json!({
        "name": "c",
        "command": ["sh", "-c", "echo hello; cat /etc/hostname; echo oops >&2; exit 3"],
    }))
    .unwrap();
    let id = format!("skiff-mon-test-{case}-{pid}");
    let cgroup_root = format!("skiff-mon-test-{case}-{pid}");
    let netns_path = netns.path();
    let inputs = SpecInputs {
        hostname: "web",
        netns: Some(netns_path.as_path()),
        files: &files,
        cgroups_path: format!("/{cgroup_root}/besteffort/podu1/{id}"),
        config: Default::default(),
    };
    let spec = render(&container, &RunConfig::default(), &inputs);
    std::fs::write(bundle.join("config.json"), serde_json::to_vec_pretty(&spec).unwrap()).unwrap();

    let runtime_root = tmp.path().join("rt");
    let _container = ContainerGuard { runtime_root: runtime_root.clone(), id: id.clone(), cgroup_root };
    let state_dir = tmp.path().join("state");
    let log_file = tmp.path().join("logs/c/0.log");
    let args = MonitorArgs {
        runtime: runtime_bin(),
        runtime_root,
        id,
        bundle,
        log_file: log_file.clone(),
        state_dir: state_dir.clone(),
        log_max_size: 10 << 20,
        log_max_files: 5,
        stdin: false,
        stdin_once: false,
        tty: false,
    };
    let monitor_out = tmp.path().join("monitor.log");
    let out = std::fs::File::create(&monitor_out).unwrap();
    let mut monitor = ChildGuard(
        Command::new(program)
            .args(if subcommand { args.to_args() } else { args.flags() })
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = monitor.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "monitor did not finish in 30 s");
        std::thread::sleep(Duration::from_millis(20));
    };
    let diag = || {
        format!(
            "monitor: {}\nruntime.log: {}",
            std::fs::read_to_string(&monitor_out).unwrap_or_default(),
            std::fs::read_to_string(state_dir.join("runtime.log")).unwrap_or_default()
        )
    };
    assert!(status.success(), "monitor exited with {status}\n{}", diag());

    let exited: Value = serde_json::from_str(&std::fs::read_to_string(state_dir.join("exit.json")).unwrap()).unwrap();
    assert_eq!(exited["exit_code"], 3, "{exited}\n{}", diag());
    assert_eq!(exited["reason"], "Error", "{exited}");
    let started: Value = serde_json::from_str(&std::fs::read_to_string(state_dir.join("started.json")).unwrap()).unwrap();
    assert!(started["pid"].as_i64().unwrap_or(0) > 0, "{started}");

    let log = std::fs::read_to_string(&log_file).unwrap();
    let lines: Vec<(&str, &str, &str)> = log
        .lines()
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let ts = parts.next().unwrap();
            assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "timestamp in {l:?}");
            (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""))
        })
        .collect();
    let stdout: Vec<_> = lines.iter().filter(|l| l.0 == "stdout").map(|l| (l.1, l.2)).collect();
    let stderr: Vec<_> = lines.iter().filter(|l| l.0 == "stderr").map(|l| (l.1, l.2)).collect();
    assert_eq!(stdout, [("F", "hello"), ("F", "web")], "{log}");
    assert_eq!(stderr, [("F", "oops")], "{log}");
}
