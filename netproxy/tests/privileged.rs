//! Real rules in a lab network namespace (root only; each test skips cleanly otherwise): ClusterIP over TCP and
//! UDP, NodePort from outside, session affinity, hairpin, REJECT, conntrack cleanup, both iptables backends, and
//! pod routes over rtnetlink. See tests/lab/mod.rs for the topology.

mod common;
mod lab;

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use lab::{Lab, NODE_IP};
use serde_json::json;
use skiff_netproxy::conntrack::ConntrackCli;
use skiff_netproxy::iptables::{Backend, IptablesCli};
use skiff_netproxy::model::DesiredState;
use skiff_netproxy::proxier::Proxier;

fn proxier(lab: &Lab, backend: Backend) -> Proxier {
    Proxier::new(
        Box::new(IptablesCli::new(backend, Some(lab.node.path()))),
        Box::new(ConntrackCli { netns: Some(lab.node.path()) }),
    )
}

fn sync(p: &mut Proxier, services: &[Service], slices: &[EndpointSlice]) {
    let (state, warnings) = DesiredState::build(common::node("node-a"), services, slices);
    assert!(warnings.is_empty(), "{warnings:?}");
    p.sync(&state, false).expect("sync");
}

fn web(ip: &str, extra: serde_json::Value) -> Service {
    let mut spec = json!({"clusterIP": ip, "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}], "type": "NodePort"});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    common::service("default", "web", spec)
}

fn web_slice(pods: &[usize]) -> EndpointSlice {
    let ips: Vec<String> = pods.iter().map(|i| Lab::pod_ip(*i)).collect();
    let eps: Vec<(&str, &str, bool)> = ips.iter().map(|ip| (ip.as_str(), "node-a", true)).collect();
    common::slice("default", "web", "1", json!([{"name": "http", "port": 8080, "protocol": "TCP"}]), &eps)
}

fn clusterip_and_nodeport(backend: Backend, test: &str) {
    let Some(mut lab) = lab::lab(test) else { return };
    lab.http_server(1);
    lab.http_server(2);
    let mut p = proxier(&lab, backend);
    sync(&mut p, &[web("10.96.0.10", json!({}))], &[web_slice(&[1, 2])]);
    // From a pod without an endpoint, from the node itself, and from outside through the NodePort.
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        seen.insert(Lab::get(lab.pod(3), "http://10.96.0.10/", 3).expect("pod → ClusterIP"));
    }
    assert_eq!(seen.into_iter().collect::<Vec<_>>(), ["pod1", "pod2"], "both endpoints get traffic");
    let body = Lab::get(&lab.node, "http://10.96.0.10/", 3).expect("node → ClusterIP");
    assert!(body.starts_with("pod"), "{body}");
    let body = Lab::get(&lab.ext, &format!("http://{NODE_IP}:30080/"), 3).expect("outside → NodePort");
    assert!(body.starts_with("pod"), "{body}");
    // The chains are ours alone, and a second identical sync writes nothing.
    let (state, _) = DesiredState::build(common::node("node-a"), &[web("10.96.0.10", json!({}))], &[web_slice(&[1, 2])]);
    let r = p.sync(&state, false).expect("no-op sync");
    assert_eq!(r.chains_written, 0);
    // A full resync against iptables-save converges to the same rules (no duplicated jumps).
    p.sync(&state, true).expect("full resync");
    let save = lab.node.exec(&["iptables-save", "-t", "nat"]).map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    if backend == Backend::Nft {
        let save = save.expect("iptables-save");
        assert_eq!(save.matches("-A PREROUTING -j SKIFF-SERVICES").count(), 1, "{save}");
    }
    assert!(Lab::get(&lab.ext, &format!("http://{NODE_IP}:30080/"), 3).is_ok());
}

#[test]
fn clusterip_and_nodeport_nft() {
    clusterip_and_nodeport(Backend::Nft, "cipnft");
}

#[test]
fn clusterip_and_nodeport_legacy() {
    clusterip_and_nodeport(Backend::Legacy, "ciplegacy");
}

#[test]
fn session_affinity_sticks_to_one_endpoint() {
    let Some(mut lab) = lab::lab("affinity") else { return };
    lab.http_server(1);
    lab.http_server(2);
    let mut p = proxier(&lab, Backend::Nft);
    let svc = web("10.96.0.11", json!({"sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}}}));
    sync(&mut p, &[svc], &[web_slice(&[1, 2])]);
    let first = Lab::get(lab.pod(3), "http://10.96.0.11/", 3).expect("first request");
    for _ in 0..15 {
        assert_eq!(Lab::get(lab.pod(3), "http://10.96.0.11/", 3).expect("request"), first, "same client, same endpoint");
    }
}

#[test]
fn hairpin_pod_reaches_itself_through_its_service() {
    let Some(mut lab) = lab::lab("hairpin") else { return };
    lab.http_server(1);
    let mut p = proxier(&lab, Backend::Nft);
    sync(&mut p, &[web("10.96.0.12", json!({}))], &[web_slice(&[1])]);
    assert_eq!(Lab::get(lab.pod(1), "http://10.96.0.12/", 3).expect("pod1 → its own service"), "pod1");
}

#[test]
fn service_without_endpoints_is_rejected_fast() {
    let Some(lab) = lab::lab("reject") else { return };
    let mut p = proxier(&lab, Backend::Nft);
    sync(&mut p, &[web("10.96.0.13", json!({}))], &[web_slice(&[])]);
    for (who, url) in [(lab.pod(3), "http://10.96.0.13/"), (&lab.node, "http://10.96.0.13/"), (&lab.ext, "http://192.168.77.1:30080/")] {
        let start = Instant::now();
        let err = Lab::get(who, url, 5).expect_err("no endpoints: refused");
        assert!(start.elapsed() < Duration::from_secs(2), "{url} from {}: refused fast, not a timeout ({err})", who.name);
    }
}

#[test]
fn udp_reaches_endpoint_and_stale_conntrack_is_cleared() {
    let Some(mut lab) = lab::lab("udp") else { return };
    lab.udp_server(1, 5353, "udp1");
    lab.udp_server(2, 5353, "udp2");
    let dns = common::service("default", "dns", json!({"clusterIP": "10.96.0.20", "ports": [{"name": "dns", "port": 53, "targetPort": 5353, "protocol": "UDP"}]}));
    let slice = |pod: usize| {
        let ip = Lab::pod_ip(pod);
        common::slice("default", "dns", "1", json!([{"name": "dns", "port": 5353, "protocol": "UDP"}]), &[(ip.as_str(), "node-a", true)])
    };
    let mut p = proxier(&lab, Backend::Nft);
    sync(&mut p, std::slice::from_ref(&dns), &[slice(1)]);
    Lab::send_udp(lab.pod(3), "10.96.0.20", 53, 40000, "first");
    assert!(lab::wait_until(Duration::from_secs(3), || lab.output("udp1").contains("first")), "UDP to the ClusterIP reaches pod1");
    let entries = || {
        let out = lab.node.exec(&["conntrack", "-L", "-p", "udp", "--orig-dst", "10.96.0.20"]).expect("conntrack -L");
        String::from_utf8_lossy(&out.stdout).lines().filter(|l| l.contains("10.96.0.20")).map(str::to_string).collect::<Vec<_>>()
    };
    assert!(entries().iter().any(|l| l.contains("src=10.244.1.11")), "entry DNATed to pod1: {:?}", entries());
    // The endpoint moves to pod2: the old entry must go, or the client keeps talking to pod1 until it expires.
    sync(&mut p, std::slice::from_ref(&dns), &[slice(2)]);
    assert!(!entries().iter().any(|l| l.contains("src=10.244.1.11")), "stale entry removed: {:?}", entries());
    Lab::send_udp(lab.pod(3), "10.96.0.20", 53, 40000, "second");
    assert!(lab::wait_until(Duration::from_secs(3), || lab.output("udp2").contains("second")), "same client flow now reaches pod2");
}

#[test]
fn pod_routes_follow_nodes() {
    let Some(lab) = lab::lab("routes") else { return };
    let node = |name: &str, cidr: &str, ip: &str| -> k8s_openapi::api::core::v1::Node {
        serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"podCIDR": cidr},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}]}}))
        .expect("node")
    };
    // A route of another owner must survive our syncs.
    lab.node.exec(&["ip", "route", "add", "10.250.0.0/24", "via", "192.168.77.2"]).expect("foreign route");
    let path = lab.node.path();
    let run = move |nodes: Vec<k8s_openapi::api::core::v1::Node>| -> (String, Vec<String>) {
        let path = path.clone();
        std::thread::spawn(move || {
            let f = std::fs::File::open(&path).expect("netns file");
            nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
            let report = rt.block_on(async {
                skiff_netproxy::routes::enable_forwarding().expect("forwarding");
                let h = skiff_netproxy::routes::connect().expect("netlink");
                let (desired, _) = skiff_netproxy::routes::desired_routes(&nodes, "node-a");
                skiff_netproxy::routes::sync_routes(&h, &desired).await.expect("sync routes")
            });
            let out = std::process::Command::new("ip").args(["route", "show"]).output().expect("ip route");
            (String::from_utf8_lossy(&out.stdout).into_owned(), report.failed)
        })
        .join()
        .expect("route thread")
    };
    let (routes, failed) = run(vec![node("node-a", "10.244.1.0/24", NODE_IP), node("node-b", "10.244.2.0/24", "192.168.77.2")]);
    assert!(routes.contains("10.244.2.0/24 via 192.168.77.2 dev vext proto 83"), "{routes}");
    assert!(!routes.contains("10.244.1.0/24 via"), "no route to our own pod CIDR: {routes}");
    assert!(failed.is_empty(), "{failed:?}");
    // A node whose address is not reachable (its route comes first in CIDR order) keeps only its own route out.
    let (routes, failed) = run(vec![
        node("node-a", "10.244.1.0/24", NODE_IP),
        node("node-c", "10.244.0.0/24", "10.99.0.1"),
        node("node-b", "10.244.2.0/24", "192.168.77.2"),
    ]);
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].contains("10.244.0.0/24"), "{failed:?}");
    assert!(routes.contains("10.244.2.0/24 via 192.168.77.2"), "{routes}");
    let (routes, _) = run(vec![node("node-a", "10.244.1.0/24", NODE_IP)]);
    assert!(!routes.contains("10.244.2.0/24"), "node-b left, its route too: {routes}");
    assert!(routes.contains("10.250.0.0/24 via 192.168.77.2"), "foreign route kept: {routes}");
    let fwd = lab.node.exec(&["sysctl", "-n", "net.ipv4.ip_forward"]).expect("sysctl");
    assert_eq!(String::from_utf8_lossy(&fwd.stdout).trim(), "1");
}

#[test]
fn other_owners_rules_survive_our_syncs() {
    let Some(lab) = lab::lab("coexist") else { return };
    lab.node.exec(&["iptables", "-t", "nat", "-N", "OTHER"]).expect("other chain");
    lab.node.exec(&["iptables", "-t", "nat", "-A", "OTHER", "-j", "RETURN"]).expect("other rule");
    lab.node.exec(&["iptables", "-t", "nat", "-A", "PREROUTING", "-j", "OTHER"]).expect("other jump");
    let mut p = proxier(&lab, Backend::Nft);
    sync(&mut p, &[web("10.96.0.14", json!({}))], &[web_slice(&[1])]);
    let (state, _) = DesiredState::build(common::node("node-a"), &[] as &[Arc<Service>], &[] as &[Arc<EndpointSlice>]);
    p.sync(&state, true).expect("full resync to nothing");
    let save = String::from_utf8_lossy(&lab.node.exec(&["iptables-save", "-t", "nat"]).expect("save").stdout).into_owned();
    assert!(save.contains("-A OTHER -j RETURN") && save.contains("-A PREROUTING -j OTHER"), "{save}");
    assert!(!save.contains("SKIFF-SVC-"), "service chains removed: {save}");
    // --cleanup takes everything of ours, in both backends, and nothing else.
    let mut legacy = proxier(&lab, Backend::Legacy);
    sync(&mut legacy, &[web("10.96.0.14", json!({}))], &[web_slice(&[1])]);
    let removed = skiff_netproxy::cleanup(Some(lab.node.path())).expect("cleanup");
    assert!(removed >= 14, "chains of both backends: {removed}");
    for save in ["iptables-nft-save", "iptables-legacy-save"] {
        let all = String::from_utf8_lossy(&lab.node.exec(&[save]).expect("save").stdout).into_owned();
        assert!(!all.contains("SKIFF-"), "{save}: {all}");
        if save == "iptables-nft-save" {
            assert!(all.contains("-A PREROUTING -j OTHER"), "{all}");
        }
    }
}

#[test]
fn restart_keeps_established_connections() {
    let Some(mut lab) = lab::lab("restart") else { return };
    // An echo server in pod1, and a client in pod3 holding one connection through the ClusterIP.
    let echo = "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',8080))\ns.listen(1)\n\
                c,_=s.accept()\nwhile True:\n    d=c.recv(100)\n    if not d: break\n    c.sendall(d)\n";
    let pod1 = lab.pod(1).name.clone();
    lab.spawn(&pod1, &["python3", "-c", echo], None, false);
    std::thread::sleep(Duration::from_millis(300));
    let mut p = proxier(&lab, Backend::Nft);
    sync(&mut p, &[web("10.96.0.15", json!({}))], &[web_slice(&[1])]);
    let client = "import socket,sys\nc=socket.create_connection(('10.96.0.15',80),timeout=3)\nfor line in sys.stdin:\n    c.sendall(line.encode())\n    print(c.recv(100).decode().strip(), flush=True)\n";
    let mut child = std::process::Command::new("ip")
        .args(["netns", "exec", &lab.pod(3).name, "python3", "-c", client])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("client");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut stdin = child.stdin.take().expect("stdin");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let _guard = Kill(child);
    use std::io::{BufRead, Write};
    let mut roundtrip = |text: &str| -> String {
        writeln!(stdin, "{text}").expect("write");
        stdin.flush().expect("flush");
        let mut line = String::new();
        stdout.read_line(&mut line).expect("read");
        line.trim().to_string()
    };
    assert_eq!(roundtrip("before"), "before");
    // "Restart": a new proxier knows nothing and resyncs everything against iptables-save.
    drop(p);
    let mut p = proxier(&lab, Backend::Nft);
    sync(&mut p, &[web("10.96.0.15", json!({}))], &[web_slice(&[1])]);
    assert_eq!(roundtrip("after"), "after", "the established connection survived the restart's full sync");
}

#[test]
fn client_addresses_masqueraded_only_where_they_must_be() {
    let Some(mut lab) = lab::lab("srcip") else { return };
    // pod1 answers every connection with the address it sees the client at.
    let whoami = "import socket\ns=socket.socket()\ns.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\ns.bind(('0.0.0.0',8080))\ns.listen(16)\n\
                  while True:\n    c,a=s.accept()\n    c.recv(1000)\n    c.sendall(('HTTP/1.0 200 OK\\r\\n\\r\\n'+a[0]).encode())\n    c.close()\n";
    let pod1 = lab.pod(1).name.clone();
    lab.spawn(&pod1, &["python3", "-c", whoami], None, false);
    assert!(lab::wait_until(Duration::from_secs(5), || Lab::get(&lab.node, "http://10.244.1.11:8080/", 1).is_ok()));
    let mut p = proxier(&lab, Backend::Nft);
    let local = web("10.96.0.16", json!({"externalTrafficPolicy": "Local"}));
    sync(&mut p, &[local], &[web_slice(&[1])]);
    // A pod keeps its address; an off-cluster client of the ClusterIP is masqueraded (to the node's bridge
    // address); an outside client of a NodePort with externalTrafficPolicy Local keeps its address.
    assert_eq!(Lab::get(lab.pod(3), "http://10.96.0.16/", 3).expect("pod3"), "10.244.1.13");
    assert_eq!(Lab::get(&lab.ext, "http://10.96.0.16/", 3).expect("ext → ClusterIP"), "10.244.1.1");
    assert_eq!(Lab::get(&lab.ext, &format!("http://{NODE_IP}:30080/"), 3).expect("ext → NodePort (Local)"), "192.168.77.2");
    // With externalTrafficPolicy Cluster the NodePort client is masqueraded.
    sync(&mut p, &[web("10.96.0.16", json!({}))], &[web_slice(&[1])]);
    assert_eq!(Lab::get(&lab.ext, &format!("http://{NODE_IP}:30080/"), 3).expect("ext → NodePort (Cluster)"), "10.244.1.1");
}
