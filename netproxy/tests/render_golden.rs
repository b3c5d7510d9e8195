//! The renderer and the restore planner against golden outputs (unprivileged). `UPDATE_GOLDEN=1 cargo test`
//! rewrites the files under tests/golden/ after a deliberate change; review the diff.

mod common;

use std::sync::Arc;

use serde_json::json;
use skiff_netproxy::conntrack::{stale_flows, Flow, RecordingConntrack};
use skiff_netproxy::iptables::RecordingIptables;
use skiff_netproxy::model::DesiredState;
use skiff_netproxy::proxier::Proxier;
use skiff_netproxy::render::render;
use skiff_netproxy::restore::{plan, KernelState, Mode};

fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden").join(name);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).expect("writing golden");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e} (run with UPDATE_GOLDEN=1)", path.display()));
    assert_eq!(actual, want, "{} differs; rerun with UPDATE_GOLDEN=1 and review the diff", path.display());
}

#[test]
fn full_ruleset_matches_golden() {
    let (state, warnings) = common::kitchen_sink();
    let rules = render(&state);
    let p = plan(&rules, Mode::Full(&KernelState::default()));
    golden("kitchen_sink.restore", &p.text);
    golden("kitchen_sink.warnings", &(warnings.join("\n") + "\n"));
    // Rendering is pure: twice the same bytes.
    assert_eq!(render(&state), rules);
}

#[test]
fn partial_sync_writes_only_changed_chains() {
    let (state, _) = common::kitchen_sink();
    let before = render(&state);
    let mut changed = state.clone();
    // One endpoint of web:http becomes unready.
    let web = changed.services.iter_mut().find(|s| s.id.name == "web" && s.id.port_name == "http").expect("web");
    Arc::make_mut(web).endpoints.iter_mut().find(|e| e.ip.to_string() == "10.244.2.7").expect("ep").ready = false;
    let after = render(&changed);
    let p = plan(&after, Mode::Partial(&before));
    golden("one_endpoint_unready.restore", &p.text);
    assert_eq!(p.chains_written, 1);
    assert!(!p.text.contains("SKIFF-SERVICES"), "unchanged chains are not rewritten");
    // Nothing changed: nothing to restore.
    assert!(plan(&after, Mode::Partial(&after)).text.is_empty());
}

#[test]
fn removed_service_deletes_its_chains_and_full_sync_cleans_the_kernel() {
    let (state, _) = common::kitchen_sink();
    let before = render(&state);
    let mut smaller = state.clone();
    smaller.services.retain(|s| s.id.name != "sticky");
    let after = render(&smaller);
    let p = plan(&after, Mode::Partial(&before));
    assert_eq!(p.chains_deleted, 1);
    assert!(p.text.contains("-X SKIFF-SVC-"), "{}", p.text);
    // And back: the Service port returns, its chain is written again along with SKIFF-SERVICES.
    let back = plan(&before, Mode::Partial(&after));
    assert_eq!((back.chains_written, back.chains_deleted), (2, 0), "{}", back.text);
    // The np Service loses its local endpoint: its SVL chain goes, the EXT chain changes.
    let mut no_local = state.clone();
    let np = no_local.services.iter_mut().find(|s| s.id.name == "np").expect("np");
    Arc::make_mut(np).endpoints.retain(|e| e.node_name.as_deref() != Some("node-a"));
    let p = plan(&render(&no_local), Mode::Partial(&before));
    assert!(p.text.contains("-X SKIFF-SVL-1BD3B3CEF39153AD"), "{}", p.text);
    assert!(p.text.contains(":SKIFF-EXT-1BD3B3CEF39153AD"), "{}", p.text);
    // A full sync deletes stale chains found by iptables-save and adds only the missing jumps.
    let save_nat = "*nat\n:PREROUTING ACCEPT [0:0]\n:SKIFF-SVC-DEADBEEF00000000 - [0:0]\n:OTHER-CHAIN - [0:0]\n-A PREROUTING -j SKIFF-SERVICES\nCOMMIT\n";
    let kernel = KernelState::parse(save_nat, "");
    let full = plan(&after, Mode::Full(&kernel));
    assert!(full.text.contains("-X SKIFF-SVC-DEADBEEF00000000\n"));
    assert!(!full.text.contains("OTHER-CHAIN"), "other owners' chains are never touched");
    assert!(!full.text.contains("-I PREROUTING"), "present jump not inserted again");
    assert!(full.text.contains("-I OUTPUT -j SKIFF-SERVICES\n"));
    assert!(full.text.contains("-I FORWARD -j SKIFF-FORWARD\n"));
}

#[test]
fn bad_input_is_skipped_with_clear_warnings() {
    let (state, warnings) = common::kitchen_sink();
    let all = warnings.join("\n");
    assert!(all.contains("\"bogus\""), "{all}");
    assert!(all.contains("\"not-an-ip\""), "{all}");
    assert!(all.contains("127.0.0.1 cannot be an endpoint"), "{all}");
    assert!(all.contains("duplicate port \"dup\""), "{all}");
    let names: Vec<String> = state.services.iter().map(|s| s.id.to_string()).collect();
    assert!(!names.iter().any(|n| n.contains("headless") || n.contains("/ext:")), "{names:?}");
    // The port whose name matches no slice port has no endpoints: it is REJECTed.
    let nomatch = state.services.iter().find(|s| s.id.port_name == "nomatch").expect("nomatch");
    assert!(nomatch.endpoints.is_empty());
    let rules = render(&state);
    assert!(rules.filter["SKIFF-SERVICES"].iter().any(|r| r.contains("-d 10.96.0.15/32 -p tcp -m tcp --dport 81 -j REJECT")));
}

#[test]
fn lean_shape_one_chain_four_rules_per_plain_service() {
    let services: Vec<_> = (0..100)
        .map(|i| common::service("ns", &format!("s{i}"), json!({"clusterIP": format!("10.96.1.{}", i + 1), "ports": [{"name": "http", "port": 80}]})))
        .collect();
    let slices: Vec<_> = (0..100)
        .map(|i| {
            let ips: Vec<String> = (0..3).map(|e| format!("10.244.{}.{}", 2 + e, i + 1)).collect();
            common::slice("ns", &format!("s{i}"), "x", json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
                &[(ips[0].as_str(), "node-b", true), (ips[1].as_str(), "node-c", true), (ips[2].as_str(), "node-d", true)])
        })
        .collect();
    let (state, warnings) = DesiredState::build(common::node("node-a"), &services, &slices);
    assert!(warnings.is_empty(), "{warnings:?}");
    let base = render(&DesiredState { node: state.node.clone(), services: vec![] });
    let r = render(&state);
    assert_eq!(r.nat_chain_count() - base.nat_chain_count(), 100, "one chain per service");
    assert_eq!(r.nat_rule_count() - base.nat_rule_count(), 400, "four rules per service (kube-proxy: 11)");
    // Without a Service CIDR the off-cluster masquerade rule is per Service port, as kube-proxy has it.
    let mut per_port = state.clone();
    per_port.node.service_cidr = None;
    let r = render(&per_port);
    assert_eq!(r.nat_rule_count() - base.nat_rule_count(), 500 - 1, "five rules per service, no global rule");
    assert!(r.nat_chain(&r.fragments[0].nat_chains[0].0).expect("svc chain")[0].contains("! -s 10.244.0.0/16 -j SKIFF-MARK-MASQ"));
}

#[test]
fn udp_endpoint_removal_and_first_endpoint_clear_conntrack() {
    let (state, _) = common::kitchen_sink();
    let mut next = state.clone();
    let dns = next.services.iter_mut().find(|s| s.id.port_name == "dns").expect("dns");
    Arc::make_mut(dns).endpoints.retain(|e| e.ip.to_string() != "10.244.1.5");
    let flows = stale_flows(&state, &next);
    assert_eq!(flows, vec![Flow { orig_dst: Some("10.96.0.10".parse().unwrap()), orig_dport: 53, dnat_to: Some("10.244.1.5".parse().unwrap()) }]);
    // Going from no endpoint to one clears the entries of the REJECTed flow.
    let mut empty = state.clone();
    Arc::make_mut(empty.services.iter_mut().find(|s| s.id.port_name == "dns").expect("dns")).endpoints.clear();
    let flows = stale_flows(&empty, &state);
    assert_eq!(flows, vec![Flow { orig_dst: Some("10.96.0.10".parse().unwrap()), orig_dport: 53, dnat_to: None }]);
    // TCP changes never touch conntrack.
    let mut tcp = state.clone();
    Arc::make_mut(tcp.services.iter_mut().find(|s| s.id.port_name == "http").expect("http")).endpoints.clear();
    assert!(stale_flows(&state, &tcp).is_empty());
}

#[test]
fn proxier_resyncs_fully_after_a_failed_restore() {
    let (state, _) = common::kitchen_sink();
    let ipt = RecordingIptables::default();
    let ct = RecordingConntrack::default();
    let mut p = Proxier::new(Box::new(ipt.clone()), Box::new(ct.clone()));
    let first = p.sync(&state, false).expect("first sync");
    assert!(first.full);
    let second = p.sync(&state, false).expect("no-op sync");
    assert!(!second.full);
    assert_eq!(ipt.restores().len(), 1, "nothing changed, nothing restored");
    let mut next = state.clone();
    next.services.retain(|s| s.id.name != "web");
    ipt.fail_next();
    assert!(p.sync(&next, false).is_err());
    let again = p.sync(&next, false).expect("after failure");
    assert!(again.full, "a failure forgets what was applied");
    let last = ipt.restores().last().cloned().unwrap_or_default();
    assert!(last.contains(":SKIFF-SERVICES - [0:0]") && last.contains("-A SKIFF-MARK-MASQ"), "full rewrite");
    // The UDP port of web went away with its endpoints: its flows are cleared once the rules are in.
    assert!(!ct.deleted.lock().unwrap().is_empty());
}

#[test]
fn caches_give_the_same_result_as_the_pure_functions() {
    use skiff_netproxy::model::ModelCache;
    use skiff_netproxy::render::Renderer;
    let services: Vec<_> = (0..20)
        .map(|i| Arc::new(common::service("ns", &format!("s{i}"), json!({"clusterIP": format!("10.96.1.{}", i + 1), "ports": [{"port": 80}]}))))
        .collect();
    let mut slices: Vec<_> = (0..20)
        .map(|i| Arc::new(common::slice("ns", &format!("s{i}"), "x", json!([{"port": 8080, "protocol": "TCP"}]), &[(&format!("10.244.2.{}", i + 1), "node-b", true)])))
        .collect();
    let mut cache = ModelCache::default();
    let mut renderer = Renderer::default();
    for round in 0..3 {
        let (cached, _) = cache.build(common::node("node-a"), &services, &slices);
        let (pure, _) = DesiredState::build(common::node("node-a"), &services, &slices);
        assert_eq!(cached, pure, "round {round}");
        assert_eq!(renderer.render(&cached), render(&pure), "round {round}");
        // Change one slice: a new Arc, as the informer cache would hand out.
        slices[round] = Arc::new(common::slice("ns", &format!("s{round}"), "x", json!([{"port": 9090, "protocol": "TCP"}]), &[("10.244.9.9", "node-a", true)]));
    }
}

/// `cargo test --release -p skiff-netproxy --test render_golden -- --ignored --nocapture`: the CPU a one-Service
/// change costs at 10,000 Services outside iptables (model cache + render memo + plan), with the recording fake.
#[test]
#[ignore]
fn overhead_of_a_one_service_change_at_10k() {
    use skiff_netproxy::model::ModelCache;
    let n = 10_000;
    let services: Vec<_> = (0..n)
        .map(|i| Arc::new(common::service(&format!("ns{}", i % 50), &format!("svc{i}"), json!({"clusterIP": format!("10.96.{}.{}", i / 250, i % 250 + 1), "ports": [{"name": "http", "port": 80}]}))))
        .collect();
    let ip = |k: usize| format!("10.{}.{}.{}", 128 + k / 62500, (k / 250) % 250, k % 250 + 1);
    let mut slices: Vec<_> = (0..n)
        .map(|i| {
            let ips = [ip(i * 3), ip(i * 3 + 1), ip(i * 3 + 2)];
            Arc::new(common::slice(&format!("ns{}", i % 50), &format!("svc{i}"), "x", json!([{"name": "http", "port": 8080, "protocol": "TCP"}]),
                &[(ips[0].as_str(), "node-1", true), (ips[1].as_str(), "node-2", true), (ips[2].as_str(), "node-3", true)]))
        })
        .collect();
    let mut cache = ModelCache::default();
    let mut p = Proxier::new(Box::new(RecordingIptables::default()), Box::new(RecordingConntrack::default()));
    let (state, _) = cache.build(common::node("node-0"), &services, &slices);
    p.sync(&state, true).expect("full");
    let (mut best_model, mut best_sync) = (std::time::Duration::MAX, std::time::Duration::MAX);
    for c in 0..100 {
        let mut s = (*slices[5000 + c % 30]).clone();
        s.endpoints[0].addresses = vec![format!("10.250.{}.{}", c / 250, c % 250 + 1)];
        slices[5000 + c % 30] = Arc::new(s);
        let t = std::time::Instant::now();
        let (state, _) = cache.build(common::node("node-0"), &services, &slices);
        let model = t.elapsed();
        let r = p.sync(&state, false).expect("partial");
        assert_eq!(r.chains_written, 1);
        best_model = best_model.min(model);
        best_sync = best_sync.min(r.duration);
    }
    eprintln!("best of 100: model {best_model:?}, render + plan {best_sync:?}");
}

#[test]
fn cleanup_removes_only_our_chains_and_jumps() {
    use skiff_netproxy::restore::cleanup_plan;
    let nat = "*nat\n:PREROUTING ACCEPT [0:0]\n:OTHER - [0:0]\n:SKIFF-SERVICES - [0:0]\n:SKIFF-SVC-AAAA - [0:0]\n-A PREROUTING -j OTHER\n-A PREROUTING -j SKIFF-SERVICES\n-A SKIFF-SERVICES -j SKIFF-SVC-AAAA\nCOMMIT\n";
    let text = cleanup_plan(&KernelState::parse(nat, ""));
    assert_eq!(text, "*nat\n-D PREROUTING -j SKIFF-SERVICES\n:SKIFF-SERVICES - [0:0]\n:SKIFF-SVC-AAAA - [0:0]\n-X SKIFF-SERVICES\n-X SKIFF-SVC-AAAA\nCOMMIT\n");
    assert!(cleanup_plan(&KernelState::default()).is_empty());
}
