//! Harness for the privileged runtime tests: a capability gate, busybox bundles built from the
//! host's busybox-static, the runtime binary run with its output in files, and guards that
//! delete containers and remove network namespaces even when a test fails.

#![allow(dead_code)]

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

use libcontainer::oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType, LinuxResources, Spec};

pub const BUSYBOX: &str = "/bin/busybox";
const APPLETS: [&str; 20] = [
    "sh", "true", "sleep", "cat", "echo", "hostname", "id", "ls", "readlink", "pwd", "touch",
    "env", "tty", "stty", "mkdir", "chown", "sysctl", "grep", "head", "wc",
];

/// Why privileged tests cannot run here, or None when they can.
pub fn skip_reason() -> Option<String> {
    if !nix::unistd::geteuid().is_root() {
        return Some("not running as root".into());
    }
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_SYS_ADMIN: u64 = 21;
    if cap_eff & (1 << CAP_SYS_ADMIN) == 0 {
        return Some("CAP_SYS_ADMIN is not in the effective set".into());
    }
    if !Path::new("/proc/self/ns/pid").exists() {
        return Some("no /proc/self/ns: namespaces unavailable".into());
    }
    if !Path::new("/sys/fs/cgroup").is_dir() {
        return Some("no /sys/fs/cgroup".into());
    }
    if !Path::new(BUSYBOX).is_file() {
        return Some(format!(
            "{BUSYBOX} missing (apt-get install busybox-static)"
        ));
    }
    None
}

/// Returns from the test with a printed reason unless privileged tests can run.
#[macro_export]
macro_rules! require_privileges {
    () => {
        if let Some(reason) = common::skip_reason() {
            let thread = std::thread::current();
            eprintln!("skipping {}: {reason}", thread.name().unwrap_or("test"));
            return;
        }
    };
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// What one run of the runtime binary did.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

/// A test's private world: state root, bundles, a cgroup parent; everything removed on drop.
pub struct Lab {
    pub dir: tempfile::TempDir,
    pub root: PathBuf,
    /// Parent of this lab's container cgroups, e.g. `/skiff-rt-test-123-4`.
    pub cgroup_parent: String,
    ids: std::cell::RefCell<Vec<String>>,
}

impl Lab {
    pub fn new() -> Lab {
        let dir = tempfile::Builder::new()
            .prefix("skiff-rt-test-")
            .tempdir()
            .expect("temp dir");
        let root = dir.path().join("state");
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        Lab {
            root,
            cgroup_parent: format!("/skiff-rt-test-{}-{n}", std::process::id()),
            dir,
            ids: Default::default(),
        }
    }

    /// Starts the runtime with `args` without waiting; output goes to files like [`Lab::rt`].
    pub fn spawn(&self, args: &[&str]) -> (std::process::Child, PathBuf, PathBuf) {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let out_path = self.dir.path().join(format!("out-{n}"));
        let err_path = self.dir.path().join(format!("err-{n}"));
        let child = Command::new(env!("CARGO_BIN_EXE_skiff-runtime"))
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&out_path).unwrap())
            .stderr(File::create(&err_path).unwrap())
            .spawn()
            .expect("run skiff-runtime");
        (child, out_path, err_path)
    }

    /// Runs the runtime with `args`; stdout and stderr go to files (a container started by it
    /// may keep inherited pipes open long after the runtime exits).
    pub fn rt(&self, args: &[&str]) -> Out {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let out_path = self.dir.path().join(format!("out-{n}"));
        let err_path = self.dir.path().join(format!("err-{n}"));
        let status = Command::new(env!("CARGO_BIN_EXE_skiff-runtime"))
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(Stdio::null())
            .stdout(File::create(&out_path).unwrap())
            .stderr(File::create(&err_path).unwrap())
            .status()
            .expect("run skiff-runtime");
        Out {
            code: status.code().unwrap_or(-1),
            stdout: std::fs::read_to_string(out_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(err_path).unwrap_or_default(),
        }
    }

    /// Runs the runtime with `args` on a pseudo-terminal of its own, made by util-linux
    /// `script`, after `stty rows 33 cols 101`; writes `input` to the terminal and keeps it open
    /// until the runtime exits (`script` sends end-of-file when its stdin closes). None when
    /// `script` is not installed.
    pub fn rt_on_terminal(&self, args: &[&str], input: &[u8]) -> Option<Out> {
        use std::io::Write;
        if !Path::new("/usr/bin/script").exists() {
            return None;
        }
        let mut line = format!(
            "stty rows 33 cols 101; exec {} --root {}",
            env!("CARGO_BIN_EXE_skiff-runtime"),
            self.root.display()
        );
        for a in args {
            line.push_str(" '");
            line.push_str(&a.replace('\'', "'\\''"));
            line.push('\'');
        }
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let out_path = self.dir.path().join(format!("out-{n}"));
        let err_path = self.dir.path().join(format!("err-{n}"));
        let mut child = Command::new("/usr/bin/script")
            .args(["-qec", &line, "/dev/null"])
            .stdin(Stdio::piped())
            .stdout(File::create(&out_path).unwrap())
            .stderr(File::create(&err_path).unwrap())
            .spawn()
            .expect("run script");
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                break child.wait().unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        drop(stdin);
        Some(Out {
            code: status.code().unwrap_or(-1),
            stdout: std::fs::read_to_string(out_path).unwrap_or_default(),
            stderr: std::fs::read_to_string(err_path).unwrap_or_default(),
        })
    }

    /// Remembers `id` so that drop deletes it.
    pub fn track(&self, id: &str) {
        self.ids.borrow_mut().push(id.to_owned());
    }

    pub fn cgroups_path(&self, id: &str) -> String {
        format!("{}/{id}", self.cgroup_parent)
    }

    /// A bundle named `name` running `args`, with `edit` applied to the default spec.
    pub fn bundle(&self, name: &str, args: &[&str], edit: impl FnOnce(&mut Spec)) -> PathBuf {
        let bundle = self.dir.path().join(name);
        let rootfs = bundle.join("rootfs");
        for d in ["bin", "proc", "dev", "sys", "tmp", "etc"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy(BUSYBOX, rootfs.join("bin/busybox")).unwrap();
        for applet in APPLETS {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        let mut spec = Spec::default();
        let mut root = spec.root().clone().unwrap();
        root.set_path(PathBuf::from("rootfs"));
        root.set_readonly(Some(false));
        spec.set_root(Some(root));
        let mut process = spec.process().clone().unwrap();
        process.set_args(Some(args.iter().map(|s| s.to_string()).collect()));
        spec.set_process(Some(process));
        let mut linux = spec.linux().clone().unwrap();
        linux.set_cgroups_path(Some(PathBuf::from(self.cgroups_path(name))));
        spec.set_linux(Some(linux));
        edit(&mut spec);
        spec.save(bundle.join("config.json")).unwrap();
        bundle
    }

    /// Polls `state` until the container reports `status` (10 s at most).
    pub fn wait_status(&self, id: &str, status: &str) -> serde_json::Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let state = self.state(id);
            if state["status"] == status || std::time::Instant::now() > deadline {
                assert_eq!(state["status"], status, "{id}: {state}");
                return state;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    pub fn state(&self, id: &str) -> serde_json::Value {
        let out = self.rt(&["state", id]);
        assert_eq!(out.code, 0, "state {id}: {out:?}");
        serde_json::from_str(&out.stdout).expect("state JSON")
    }

    /// Fails unless container `id` left no state dir, cgroup dirs (a leaf under this lab's parent
    /// in any hierarchy) or mounts of its bundle behind. The parent itself stays until drop, as
    /// runc leaves it.
    pub fn assert_gone(&self, id: &str) {
        assert!(!self.root.join(id).exists(), "state dir of {id} remains");
        for dir in cgroup_dirs(&self.cgroup_parent) {
            let leaves: Vec<PathBuf> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect();
            assert!(leaves.is_empty(), "cgroup dirs {leaves:?} remain");
        }
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        let bundle = self.dir.path().to_string_lossy().into_owned();
        assert!(
            !mountinfo.contains(&bundle),
            "mounts under {bundle} remain:\n{mountinfo}"
        );
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for id in self.ids.borrow().iter() {
            if self.root.join(id).exists() {
                let out = self.rt(&["delete", "--force", id]);
                if out.code != 0 {
                    eprintln!("cleanup: delete --force {id}: {}", out.stderr);
                }
            }
        }
        // Last resort for cgroups a failed delete left: rmdir only removes empty ones.
        for dir in cgroup_dirs(&self.cgroup_parent) {
            if let Ok(entries) = std::fs::read_dir(&dir) {
                for e in entries.flatten() {
                    if e.path().is_dir() {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(&dir);
        }
    }
}

/// `path` in every mounted cgroup hierarchy.
pub fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    skiff_runtime::cgroups::cgroup_mounts(&mountinfo)
        .into_iter()
        .map(|m| m.join(path.trim_start_matches('/')))
        .collect()
}

/// A cgroup file of `controller` for `path`: the v1 hierarchy if mounted, else the v2 one.
pub fn cgroup_file(controller: &str, path: &str, file: &str) -> PathBuf {
    let v1 = Path::new("/sys/fs/cgroup")
        .join(controller)
        .join(path.trim_start_matches('/'))
        .join(file);
    if v1.exists() {
        v1
    } else {
        Path::new("/sys/fs/cgroup")
            .join(path.trim_start_matches('/'))
            .join(file)
    }
}

/// Edits `spec` as JSON: what the runtime spec says, in its own field names.
pub fn edit_json(spec: &mut Spec, edit: impl FnOnce(&mut serde_json::Value)) {
    let mut value = serde_json::to_value(&*spec).unwrap();
    edit(&mut value);
    *spec = serde_json::from_value(value).unwrap();
}

pub fn set_resources(spec: &mut Spec, resources: LinuxResources) {
    let mut linux = spec.linux().clone().unwrap();
    linux.set_resources(Some(resources));
    spec.set_linux(Some(linux));
}

pub fn set_network_path(spec: &mut Spec, path: &Path) {
    let mut linux = spec.linux().clone().unwrap();
    let mut namespaces: Vec<LinuxNamespace> = linux.namespaces().clone().unwrap_or_default();
    namespaces.retain(|n| n.typ() != LinuxNamespaceType::Network);
    let mut net = LinuxNamespace::default();
    net.set_typ(LinuxNamespaceType::Network);
    net.set_path(Some(path.to_owned()));
    namespaces.push(net);
    linux.set_namespaces(Some(namespaces));
    spec.set_linux(Some(linux));
}

/// A network namespace made with `ip netns add`, deleted on drop.
pub struct NetNs {
    pub name: String,
}

impl NetNs {
    pub fn new(tag: &str) -> NetNs {
        let name = format!("skiff-rt-test-{}-{tag}", std::process::id());
        let st = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip");
        assert!(st.success(), "ip netns add {name}");
        NetNs { name }
    }

    pub fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(&self.name)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let st = Command::new("ip")
            .args(["netns", "delete", &self.name])
            .status();
        if !matches!(st, Ok(s) if s.success()) {
            eprintln!("cleanup: ip netns delete {} failed", self.name);
        }
    }
}
