//! ClusterIP and NodePort allocation for Services.
//!
//! Every address and port a Service holds is also *claimed* in the store, one key per value
//! (`/registry/ranges/serviceips/<ip>`, `/registry/ranges/servicenodeports/<port>`), created only if absent: with
//! several API servers over one etcd, the store decides which server gets a value, never both (upstream keeps a
//! bitmap object updated with compare-and-swap; one key per value needs no retry loop over a shared object). The
//! in-memory sets are a cache that picks candidates without a store round trip; a candidate another server claimed
//! first is marked and the next one tried. [`Allocator::repair`] rebuilds the cache from the Services and the
//! claims, claims what older Services hold, and deletes claims no Service has held for two passes in a row (left by
//! a server that died between the two writes); it runs at start and every minute.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::api::validation::FieldError;
use crate::store::{ListOptions, Store, StoreError};

const IP_CLAIMS: &str = "/registry/ranges/serviceips/";
const PORT_CLAIMS: &str = "/registry/ranges/servicenodeports/";

#[derive(Debug, Default)]
pub struct Allocated {
    ips: Vec<u32>,
    ports: Vec<u16>,
}

struct State {
    /// First and last usable address (network and broadcast excluded).
    first: u32,
    last: u32,
    next_ip: u32,
    ips: HashSet<u32>,
    port_lo: u16,
    port_hi: u16,
    next_port: u16,
    ports: HashSet<u16>,
}

pub struct Allocator {
    state: Mutex<State>,
    cidr: String,
    /// Where values are claimed; None: this process alone decides (unit tests).
    store: Option<Arc<dyn Store>>,
    /// Claims without a Service at the last repair (deleted if still so at the next).
    suspects: Mutex<HashSet<String>>,
}

/// Why a claim did not go through.
enum ClaimError {
    /// Claimed by someone else: these values.
    Taken(Allocated),
    Store(StoreError),
}

fn service_ip(svc: &Value) -> Option<u32> {
    svc.pointer("/spec/clusterIP").and_then(Value::as_str).and_then(|s| s.parse::<Ipv4Addr>().ok()).map(u32::from)
}

fn node_ports(svc: &Value) -> Vec<(u16, i64, String)> {
    svc.pointer("/spec/ports")
        .and_then(Value::as_array)
        .map(|ports| {
            ports
                .iter()
                .filter_map(|p| {
                    let np = p.get("nodePort").and_then(Value::as_u64).filter(|n| *n > 0 && *n <= 65535)? as u16;
                    let port = p.get("port").and_then(Value::as_i64).unwrap_or_default();
                    let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string();
                    Some((np, port, proto))
                })
                .collect()
        })
        .unwrap_or_default()
}

impl Allocator {
    pub fn new(cidr: (Ipv4Addr, u8), node_ports: (u16, u16)) -> Self {
        let mask = if cidr.1 == 0 { 0 } else { u32::MAX << (32 - cidr.1) };
        let network = u32::from(cidr.0) & mask;
        let broadcast = network | !mask;
        Allocator {
            state: Mutex::new(State {
                first: network + 1,
                last: broadcast - 1,
                next_ip: network + 1,
                ips: HashSet::new(),
                port_lo: node_ports.0,
                port_hi: node_ports.1,
                next_port: node_ports.0,
                ports: HashSet::new(),
            }),
            cidr: format!("{}/{}", Ipv4Addr::from(network), cidr.1),
            store: None,
            suspects: Mutex::new(HashSet::new()),
        }
    }

    /// Claim every value in `store` (what an API server does; see the module documentation).
    pub fn with_store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Fill in `spec.clusterIP(s)` and node ports of `svc`, keeping those of `old` (an update). Returns what
    /// was newly taken, to give back if the write fails.
    pub async fn allocate_service(&self, svc: &mut Value, old: Option<&Value>) -> Result<Allocated, FieldError> {
        let owner = format!(
            "{}/{}",
            svc.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or_default(),
            svc.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default()
        );
        let mut refreshed = false;
        for _ in 0..32 {
            let mut attempt = svc.clone();
            let taken = match self.allocate_cached(&mut attempt, old) {
                Ok(t) => t,
                // The cache may be stale (another API server released the value): ask the store once.
                Err(e) if e.message.contains("already allocated") && !refreshed && self.store.is_some() => {
                    refreshed = true;
                    if let Some(store) = &self.store {
                        self.refresh(store.as_ref()).await.map_err(|err| FieldError { message: format!("Internal error: {err}"), ..e.clone() })?;
                    }
                    continue;
                }
                Err(e) => return Err(e),
            };
            match self.claim(&taken, &owner).await {
                Ok(()) => {
                    *svc = attempt;
                    return Ok(taken);
                }
                Err(ClaimError::Taken(theirs)) => {
                    // Another API server holds these: they stay marked here; ours go back; pick again. A value the
                    // client asked for by name now fails as "already allocated".
                    let mine = Allocated {
                        ips: taken.ips.iter().copied().filter(|v| !theirs.ips.contains(v)).collect(),
                        ports: taken.ports.iter().copied().filter(|v| !theirs.ports.contains(v)).collect(),
                    };
                    Self::release_locked(&mut self.lock(), &mine);
                }
                Err(ClaimError::Store(e)) => {
                    Self::release_locked(&mut self.lock(), &taken);
                    return Err(FieldError {
                        reason: "FieldValueInvalid",
                        field: "spec.clusterIPs".into(),
                        message: format!("Internal error: claiming the allocation in the store: {e}"),
                    });
                }
            }
        }
        Err(FieldError { reason: "FieldValueInvalid", field: "spec.clusterIPs".into(), message: "Internal error: allocation kept conflicting with other API servers; try again".into() })
    }

    fn allocate_cached(&self, svc: &mut Value, old: Option<&Value>) -> Result<Allocated, FieldError> {
        let mut st = self.lock();
        let mut taken = Allocated::default();
        let result = self.allocate_locked(&mut st, svc, old, &mut taken);
        if result.is_err() {
            Self::release_locked(&mut st, &taken);
        }
        result.map(|_| taken)
    }

    fn claim_keys(a: &Allocated) -> Vec<String> {
        a.ips.iter().map(|ip| format!("{IP_CLAIMS}{}", Ipv4Addr::from(*ip))).chain(a.ports.iter().map(|p| format!("{PORT_CLAIMS}{p}"))).collect()
    }

    /// Create a claim key for every value; all or none.
    async fn claim(&self, a: &Allocated, owner: &str) -> Result<(), ClaimError> {
        let Some(store) = &self.store else { return Ok(()) };
        let value = serde_json::to_vec(&json!({"service": owner})).unwrap_or_default();
        let mut made = Vec::new();
        let mut theirs = Allocated::default();
        let mut failure = None;
        let keys = Self::claim_keys(a);
        for key in &keys {
            match store.create(key, value.clone()).await {
                Ok(_) => made.push(key.clone()),
                Err(StoreError::AlreadyExists(_)) => {
                    if let Some(ip) = key.strip_prefix(IP_CLAIMS).and_then(|v| v.parse::<Ipv4Addr>().ok()) {
                        theirs.ips.push(u32::from(ip));
                    } else if let Some(p) = key.strip_prefix(PORT_CLAIMS).and_then(|v| v.parse::<u16>().ok()) {
                        theirs.ports.push(p);
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none() && theirs.ips.is_empty() && theirs.ports.is_empty() {
            return Ok(());
        }
        for key in made {
            let _ = store.delete(&key, None).await;
        }
        Err(match failure {
            Some(e) => ClaimError::Store(e),
            None => ClaimError::Taken(theirs),
        })
    }

    fn allocate_locked(&self, st: &mut State, svc: &mut Value, old: Option<&Value>, taken: &mut Allocated) -> Result<(), FieldError> {
        let ty = svc.pointer("/spec/type").and_then(Value::as_str).unwrap_or("ClusterIP").to_string();
        let Some(spec) = svc.get_mut("spec").and_then(Value::as_object_mut) else { return Ok(()) };
        if ty == "ExternalName" {
            spec.remove("clusterIP");
            spec.remove("clusterIPs");
        } else {
            let requested = spec.get("clusterIP").and_then(Value::as_str).unwrap_or_default().to_string();
            let old_ip = old.and_then(service_ip);
            let ip = if requested == "None" {
                None
            } else if requested.is_empty() {
                match old_ip {
                    Some(ip) => Some(ip),
                    None => Some(Self::next_ip(st).ok_or_else(|| FieldError {
                        reason: "FieldValueInvalid",
                        field: "spec.clusterIPs".into(),
                        message: format!("Internal error: range is full: {}", self.cidr),
                    })?),
                }
            } else {
                let addr: Ipv4Addr = requested.parse().map_err(|_| {
                    FieldError::invalid("spec.clusterIPs[0]", &json!(requested), "must be a valid IP address")
                })?;
                let n = u32::from(addr);
                if Some(n) != old_ip {
                    if n < st.first || n > st.last {
                        return Err(FieldError::invalid("spec.clusterIPs", &json!([requested]), &format!("failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range. The range of valid IPs is {}", self.cidr)));
                    }
                    if !st.ips.insert(n) {
                        return Err(FieldError::invalid("spec.clusterIPs", &json!([requested]), &format!("failed to allocate IP {requested}: provided IP is already allocated")));
                    }
                    taken.ips.push(n);
                }
                Some(n)
            };
            if let Some(n) = ip {
                if requested.is_empty() && Some(n) != old_ip {
                    taken.ips.push(n);
                }
                let s = Ipv4Addr::from(n).to_string();
                spec.insert("clusterIP".into(), json!(s));
                spec.insert("clusterIPs".into(), json!([s]));
                spec.entry("ipFamilies").or_insert_with(|| json!(["IPv4"]));
                spec.entry("ipFamilyPolicy").or_insert_with(|| json!("SingleStack"));
            } else {
                spec.insert("clusterIPs".into(), json!(["None"]));
            }
        }
        let wants_ports = ty == "NodePort"
            || (ty == "LoadBalancer" && spec.get("allocateLoadBalancerNodePorts").and_then(Value::as_bool).unwrap_or(true));
        if !wants_ports {
            return Ok(());
        }
        let old_ports = old.map(node_ports).unwrap_or_default();
        let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) else { return Ok(()) };
        for (i, p) in ports.iter_mut().enumerate() {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or_default();
            let proto = p.get("protocol").and_then(Value::as_str).unwrap_or("TCP").to_string();
            let requested = p.get("nodePort").and_then(Value::as_u64).filter(|n| *n > 0);
            let np = match requested {
                Some(n) => {
                    let n = u16::try_from(n).map_err(|_| FieldError::invalid(format!("spec.ports[{i}].nodePort"), &json!(n), "must be between 1 and 65535, inclusive"))?;
                    if !old_ports.iter().any(|(o, _, _)| *o == n) && !taken.ports.contains(&n) {
                        if n < st.port_lo || n > st.port_hi {
                            return Err(FieldError::invalid(format!("spec.ports[{i}].nodePort"), &json!(n), &format!("provided port is not in the valid range. The range of valid ports is {}-{}", st.port_lo, st.port_hi)));
                        }
                        if !st.ports.insert(n) {
                            return Err(FieldError::invalid(format!("spec.ports[{i}].nodePort"), &json!(n), "provided port is already allocated"));
                        }
                        taken.ports.push(n);
                    }
                    n
                }
                None => match old_ports.iter().find(|(_, op, opr)| *op == port && *opr == proto) {
                    Some((n, _, _)) => *n,
                    None => {
                        let n = Self::next_port(st).ok_or_else(|| FieldError {
                            reason: "FieldValueInvalid",
                            field: format!("spec.ports[{i}].nodePort"),
                            message: "Internal error: range is full".into(),
                        })?;
                        taken.ports.push(n);
                        n
                    }
                },
            };
            if let Some(m) = p.as_object_mut() {
                m.insert("nodePort".into(), json!(np));
            }
        }
        Ok(())
    }

    fn next_ip(st: &mut State) -> Option<u32> {
        let size = st.last - st.first + 1;
        for _ in 0..size {
            let n = st.next_ip;
            st.next_ip = if n >= st.last { st.first } else { n + 1 };
            if st.ips.insert(n) {
                return Some(n);
            }
        }
        None
    }

    fn next_port(st: &mut State) -> Option<u16> {
        let size = (st.port_hi - st.port_lo) as usize + 1;
        for _ in 0..size {
            let n = st.next_port;
            st.next_port = if n >= st.port_hi { st.port_lo } else { n + 1 };
            if st.ports.insert(n) {
                return Some(n);
            }
        }
        None
    }

    fn release_locked(st: &mut State, a: &Allocated) {
        for ip in &a.ips {
            st.ips.remove(ip);
        }
        for p in &a.ports {
            st.ports.remove(p);
        }
    }

    /// Give back what one `allocate_service` call took (its claims too).
    pub async fn release(&self, a: &Allocated) {
        Self::release_locked(&mut self.lock(), a);
        if let Some(store) = &self.store {
            for key in Self::claim_keys(a) {
                let _ = store.delete(&key, None).await;
            }
        }
    }

    /// Give back everything a deleted Service held.
    pub async fn release_service(&self, svc: &Value) {
        let a = Allocated { ips: service_ip(svc).into_iter().collect(), ports: node_ports(svc).into_iter().map(|p| p.0).collect() };
        self.release(&a).await;
    }

    /// After an update: give back what `old` held and `new` no longer does.
    pub async fn release_unused(&self, old: &Value, new: &Value) {
        let new_ip = service_ip(new);
        let new_ports: Vec<u16> = node_ports(new).into_iter().map(|p| p.0).collect();
        let a = Allocated {
            ips: service_ip(old).into_iter().filter(|ip| Some(*ip) != new_ip).collect(),
            ports: node_ports(old).into_iter().map(|p| p.0).filter(|p| !new_ports.contains(p)).collect(),
        };
        self.release(&a).await;
    }

    /// Rebuild the cache from the claims (and Services) in the store, touching nothing there.
    async fn refresh(&self, store: &dyn Store) -> Result<(), String> {
        let mut claimed = Vec::new();
        for prefix in [IP_CLAIMS, PORT_CLAIMS] {
            let l = store.list(prefix, ListOptions::default()).await.map_err(|e| e.to_string())?;
            claimed.extend(l.items.into_iter().map(|kv| kv.key));
        }
        let res = store.list("/registry/core/services/", ListOptions::default()).await.map_err(|e| e.to_string())?;
        let mut st = self.lock();
        st.ips.clear();
        st.ports.clear();
        for kv in &res.items {
            let Ok(svc) = serde_json::from_slice::<Value>(&kv.value) else { continue };
            st.ips.extend(service_ip(&svc));
            st.ports.extend(node_ports(&svc).into_iter().map(|p| p.0));
        }
        Self::mark_claims(&mut st, claimed);
        Ok(())
    }

    fn mark_claims(st: &mut State, keys: impl IntoIterator<Item = String>) {
        for key in keys {
            if let Some(ip) = key.strip_prefix(IP_CLAIMS).and_then(|v| v.parse::<Ipv4Addr>().ok()) {
                st.ips.insert(u32::from(ip));
            } else if let Some(p) = key.strip_prefix(PORT_CLAIMS).and_then(|v| v.parse::<u16>().ok()) {
                st.ports.insert(p);
            }
        }
    }

    /// Rebuild the cache from the Services and the claims in the store; claim what Services hold without a claim;
    /// delete claims no Service held at this pass and the one before.
    pub async fn repair(&self, store: &dyn Store) -> Result<(), String> {
        let res = store.list("/registry/core/services/", ListOptions::default()).await.map_err(|e| e.to_string())?;
        let mut held = Allocated::default();
        for kv in &res.items {
            let Ok(svc) = serde_json::from_slice::<Value>(&kv.value) else { continue };
            held.ips.extend(service_ip(&svc));
            held.ports.extend(node_ports(&svc).into_iter().map(|p| p.0));
        }
        let held_keys: HashSet<String> = Self::claim_keys(&held).into_iter().collect();
        let mut claimed = HashSet::new();
        if self.store.is_some() {
            for prefix in [IP_CLAIMS, PORT_CLAIMS] {
                let l = store.list(prefix, ListOptions::default()).await.map_err(|e| e.to_string())?;
                claimed.extend(l.items.into_iter().map(|kv| kv.key));
            }
            for key in held_keys.difference(&claimed) {
                match store.create(key, serde_json::to_vec(&json!({"service": "repaired"})).unwrap_or_default()).await {
                    Ok(_) | Err(StoreError::AlreadyExists(_)) => {}
                    Err(e) => return Err(e.to_string()),
                }
            }
            let leaked: HashSet<String> = claimed.difference(&held_keys).cloned().collect();
            let previous = std::mem::replace(&mut *self.suspects.lock().unwrap_or_else(|e| e.into_inner()), leaked.clone());
            for key in leaked.intersection(&previous) {
                tracing::info!(claim = %key, "releasing an allocation no Service holds");
                let _ = store.delete(key, None).await;
                claimed.remove(key);
            }
        }
        let mut st = self.lock();
        st.ips.clear();
        st.ports.clear();
        st.ips.extend(held.ips);
        st.ports.extend(held.ports);
        Self::mark_claims(&mut st, claimed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc() -> Allocator {
        Allocator::new((Ipv4Addr::new(10, 96, 0, 0), 28), (30000, 30002))
    }

    #[tokio::test]
    async fn cluster_ips_are_unique_and_released() {
        let a = alloc();
        let mut seen = HashSet::new();
        let mut svcs = Vec::new();
        for _ in 0..14 {
            let mut svc = json!({"spec": {"type": "ClusterIP", "ports": [{"port": 80}]}});
            a.allocate_service(&mut svc, None).await.unwrap();
            assert!(seen.insert(svc["spec"]["clusterIP"].as_str().unwrap().to_string()));
            svcs.push(svc);
        }
        let mut full = json!({"spec": {"ports": [{"port": 80}]}});
        assert!(a.allocate_service(&mut full, None).await.is_err());
        a.release_service(&svcs[3]).await;
        a.allocate_service(&mut full, None).await.unwrap();
        assert_eq!(full["spec"]["clusterIP"], svcs[3]["spec"]["clusterIP"]);
    }

    #[tokio::test]
    async fn requested_ip_and_ports() {
        let a = alloc();
        let mut s1 = json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.5", "ports": [{"port": 80, "nodePort": 30001}]}});
        a.allocate_service(&mut s1, None).await.unwrap();
        let mut s2 = json!({"spec": {"type": "NodePort", "clusterIP": "10.96.0.5", "ports": [{"port": 80}]}});
        let e = a.allocate_service(&mut s2, None).await.unwrap_err();
        assert!(e.message.contains("already allocated"), "{}", e.message);
        let mut s3 = json!({"spec": {"type": "NodePort", "ports": [{"port": 80}, {"port": 81}]}});
        a.allocate_service(&mut s3, None).await.unwrap();
        let ports: Vec<_> = s3["spec"]["ports"].as_array().unwrap().iter().map(|p| p["nodePort"].as_u64().unwrap()).collect();
        assert_eq!(ports, [30000, 30002]);
        let mut out_of_range = json!({"spec": {"clusterIP": "192.168.0.1", "ports": [{"port": 1}]}});
        assert!(a.allocate_service(&mut out_of_range, None).await.unwrap_err().message.contains("not in the valid range"));
    }

    #[tokio::test]
    async fn updates_keep_allocations() {
        let a = alloc();
        let mut old = json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        a.allocate_service(&mut old, None).await.unwrap();
        let mut new = json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        let taken = a.allocate_service(&mut new, Some(&old)).await.unwrap();
        assert!(taken.ips.is_empty() && taken.ports.is_empty());
        assert_eq!(new["spec"]["clusterIP"], old["spec"]["clusterIP"]);
        assert_eq!(new["spec"]["ports"][0]["nodePort"], old["spec"]["ports"][0]["nodePort"]);
        // NodePort → ClusterIP gives the port back.
        let mut cip = json!({"spec": {"type": "ClusterIP", "clusterIP": old["spec"]["clusterIP"], "ports": [{"port": 80}]}});
        a.allocate_service(&mut cip, Some(&old)).await.unwrap();
        a.release_unused(&old, &cip).await;
        assert!(!a.lock().ports.contains(&(old["spec"]["ports"][0]["nodePort"].as_u64().unwrap() as u16)));
    }

    #[tokio::test]
    async fn two_servers_share_the_store() {
        use crate::store::sqlite::{SqliteConfig, SqliteStore};
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(SqliteConfig::new(dir.path().join("s.db"))).unwrap());
        let a = alloc().with_store(store.clone());
        let b = alloc().with_store(store.clone());
        // B's cache knows nothing of A's allocations: the claims make it pick other values.
        let mut sa = json!({"metadata": {"namespace": "d", "name": "a"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        a.allocate_service(&mut sa, None).await.unwrap();
        let mut sb = json!({"metadata": {"namespace": "d", "name": "b"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        b.allocate_service(&mut sb, None).await.unwrap();
        assert_ne!(sa["spec"]["clusterIP"], sb["spec"]["clusterIP"]);
        assert_ne!(sa["spec"]["ports"][0]["nodePort"], sb["spec"]["ports"][0]["nodePort"]);
        // A value asked for by name that the other server holds is refused.
        let mut dup = json!({"spec": {"clusterIP": sa["spec"]["clusterIP"], "ports": [{"port": 80}]}});
        assert!(b.allocate_service(&mut dup, None).await.unwrap_err().message.contains("already allocated"));
        // Released through A, it can be taken through B (whose cache is stale until it asks the store).
        a.release_service(&sa).await;
        let mut again = json!({"spec": {"clusterIP": sa["spec"]["clusterIP"], "ports": [{"port": 80}]}});
        b.allocate_service(&mut again, None).await.unwrap();
        // A claim no Service holds (a server died between the writes) goes at the second repair, not the first.
        store.create(&format!("{IP_CLAIMS}10.96.0.9"), b"{}".to_vec()).await.unwrap();
        a.repair(store.as_ref()).await.unwrap();
        assert!(store.get(&format!("{IP_CLAIMS}10.96.0.9")).await.unwrap().is_some(), "kept at the first pass");
        a.repair(store.as_ref()).await.unwrap();
        assert!(store.get(&format!("{IP_CLAIMS}10.96.0.9")).await.unwrap().is_none(), "released at the second");
    }
}
