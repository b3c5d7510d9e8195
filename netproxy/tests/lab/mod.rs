//! A lab for the privileged tests, all inside network namespaces this test creates (nothing in the host's own):
//!
//! ```text
//!   ext (192.168.77.2) ── vext ── node (192.168.77.1; br0 10.244.1.1/24; our rules) ── br0 ── pod1 10.244.1.11
//!                                                                                        ├── pod2 10.244.1.12
//!                                                                                        └── pod3 10.244.1.13
//! ```
//! `ext` plays the outside world and has no route beyond the node; the node's default route points at `ext`, so
//! nothing can leave the machine. The guard kills only the processes it started and deletes every namespace
//! (and with them every interface) on drop, also when the test fails.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant};

use skiff_netproxy::lab::Netns;

pub const NODE_IP: &str = "192.168.77.1";

pub struct Lab {
    pub tag: String,
    children: Vec<(Child, Option<ChildStdin>)>,
    dir: PathBuf,
    // Dropped after the children (fields drop in order): namespaces last.
    pub node: Netns,
    pub ext: Netns,
    pub pods: Vec<Netns>,
}

/// Skips (returns None, printing why) unless root with `ip netns`, busybox, conntrack and both iptables flavours.
pub fn lab(test: &str) -> Option<Lab> {
    if !skiff_netproxy::lab::available() {
        eprintln!("skipping {test}: needs root and `ip netns`");
        return None;
    }
    for bin in ["busybox", "curl", "python3", "conntrack", "iptables-nft-restore", "iptables-legacy-restore", "nsenter"] {
        if Command::new("sh").args(["-c", &format!("command -v {bin}")]).stdout(Stdio::null()).status().map(|s| !s.success()).unwrap_or(true) {
            eprintln!("skipping {test}: {bin} is not installed (bash .ci/deps)");
            return None;
        }
    }
    Some(Lab::new(test).expect("building the lab"))
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

impl Lab {
    fn new(test: &str) -> anyhow::Result<Lab> {
        let tag = format!("snp{}-{test}", std::process::id());
        let dir = std::env::temp_dir().join(&tag);
        std::fs::create_dir_all(&dir)?;
        let node = Netns::create(&format!("{tag}-node"))?;
        let ext = Netns::create(&format!("{tag}-ext"))?;
        let mut pods = Vec::new();
        for i in 1..=3 {
            pods.push(Netns::create(&format!("{tag}-pod{i}"))?);
        }
        let lab = Lab { tag, children: Vec::new(), dir, node, ext, pods };
        let n = lab.node.name.as_str();
        ip(&["-n", n, "link", "add", "br0", "type", "bridge"]);
        ip(&["-n", n, "addr", "add", "10.244.1.1/24", "dev", "br0"]);
        ip(&["-n", n, "link", "set", "br0", "up"]);
        for (i, pod) in lab.pods.iter().enumerate() {
            let host = format!("vp{}", i + 1);
            ip(&["-n", n, "link", "add", &host, "type", "veth", "peer", "name", "eth0", "netns", &pod.name]);
            ip(&["-n", n, "link", "set", &host, "master", "br0", "up"]);
            // Hairpin mode, as the CNI bridge plugin's hairpinMode: with br_netfilter a pod's packet DNATed back
            // to itself is bridged out of the port it came in on, which a bridge port drops without it.
            ip(&["-n", n, "link", "set", &host, "type", "bridge_slave", "hairpin", "on"]);
            ip(&["-n", &pod.name, "addr", "add", &format!("10.244.1.{}/24", 11 + i), "dev", "eth0"]);
            ip(&["-n", &pod.name, "link", "set", "eth0", "up"]);
            ip(&["-n", &pod.name, "route", "add", "default", "via", "10.244.1.1"]);
        }
        ip(&["-n", n, "link", "add", "vext", "type", "veth", "peer", "name", "eth0", "netns", &lab.ext.name]);
        ip(&["-n", n, "addr", "add", &format!("{NODE_IP}/24"), "dev", "vext"]);
        ip(&["-n", n, "link", "set", "vext", "up"]);
        ip(&["-n", &lab.ext.name, "addr", "add", "192.168.77.2/24", "dev", "eth0"]);
        ip(&["-n", &lab.ext.name, "link", "set", "eth0", "up"]);
        ip(&["-n", &lab.ext.name, "route", "add", "default", "via", NODE_IP]);
        ip(&["-n", n, "route", "add", "default", "via", "192.168.77.2"]);
        lab.node.exec(&["sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        Ok(lab)
    }

    pub fn pod(&self, i: usize) -> &Netns {
        &self.pods[i - 1]
    }

    pub fn pod_ip(i: usize) -> String {
        format!("10.244.1.{}", 10 + i)
    }

    /// Starts `args` inside `ns`; the lab kills it on drop. With `keep_stdin` its stdin stays open.
    pub fn spawn(&mut self, ns: &str, args: &[&str], stdout: Option<&str>, keep_stdin: bool) -> u32 {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{ns}")).args(args);
        cmd.stdin(if keep_stdin { Stdio::piped() } else { Stdio::null() });
        match stdout {
            Some(name) => cmd.stdout(std::fs::File::create(self.dir.join(name)).expect("output file")),
            None => cmd.stdout(Stdio::null()),
        };
        let mut child = cmd.stderr(Stdio::null()).spawn().expect("spawning a lab process");
        let stdin = child.stdin.take();
        let pid = child.id();
        self.children.push((child, stdin));
        pid
    }

    /// An HTTP server on :8080 in pod `i` answering its name.
    pub fn http_server(&mut self, i: usize) {
        let root = self.dir.join(format!("www{i}"));
        std::fs::create_dir_all(&root).expect("www dir");
        std::fs::write(root.join("index.html"), format!("pod{i}\n")).expect("index");
        let ns = self.pod(i).name.clone();
        self.spawn(&ns, &["busybox", "httpd", "-f", "-p", "8080", "-h", root.to_str().expect("utf8")], None, false);
        let url = format!("http://{}:8080/", Lab::pod_ip(i));
        wait_until(Duration::from_secs(5), || Lab::get(&self.node, &url, 1).is_ok());
    }

    /// A UDP listener on `port` in pod `i` appending every datagram to the file `name` (python3: busybox's nc
    /// has no UDP).
    pub fn udp_server(&mut self, i: usize, port: u16, name: &str) {
        let ns = self.pod(i).name.clone();
        let script = format!(
            "import socket,sys\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.bind(('0.0.0.0',{port}))\n\
             while True:\n    d,a=s.recvfrom(2048)\n    sys.stdout.write(d.decode()+'\\n')\n    sys.stdout.flush()\n"
        );
        self.spawn(&ns, &["python3", "-c", &script], Some(name), false);
        std::thread::sleep(Duration::from_millis(300));
    }

    pub fn output(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap_or_default()
    }

    /// An HTTP GET with curl from namespace `ns`: Ok(body) or Err(stderr). (busybox 1.35's `wget -T`
    /// segfaults when the connection is refused, so curl it is.)
    pub fn get(ns: &Netns, url: &str, timeout_s: u32) -> Result<String, String> {
        let t = timeout_s.to_string();
        let out: Output = Command::new("ip")
            .args(["netns", "exec", &ns.name, "curl", "-sS", "-m", &t, url])
            .output()
            .expect("wget");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    /// Sends one UDP datagram from `ns` with a fixed source port (so that it reuses one conntrack entry).
    pub fn send_udp(ns: &Netns, dst: &str, port: u16, src_port: u16, text: &str) {
        let script = format!(
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
             s.bind(('0.0.0.0',{src_port}))\ns.sendto(b'{text}',('{dst}',{port}))\n"
        );
        let out = Command::new("ip").args(["netns", "exec", &ns.name, "python3", "-c", &script]).output().expect("python3");
        assert!(out.status.success(), "send_udp: {}", String::from_utf8_lossy(&out.stderr));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for (child, stdin) in &mut self.children {
            drop(stdin.take());
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
        // The namespaces (and every interface in them) go when their guards drop, right after this.
    }
}

pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
