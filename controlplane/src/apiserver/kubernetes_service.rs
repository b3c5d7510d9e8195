//! The `default/kubernetes` Service, as upstream's API server keeps it: how pods reach the API. Client libraries'
//! in-cluster configuration reads `KUBERNETES_SERVICE_HOST`/`PORT`, which the agent sets from this Service, and the
//! serving certificate already names its ClusterIP and `kubernetes.default.svc`.
//!
//! - The Service: ClusterIP the first address of the Service range, port 443 named `https` to the API servers'
//!   port, no selector (so the endpoints controller leaves its endpoints alone); made at start where missing (if a
//!   user's Service already holds that address, a warning says so and the Service is not made).
//! - Its endpoints, the Endpoints and the EndpointSlice `kubernetes`: the addresses of the API servers that are
//!   alive. Upstream's "lease" endpoint reconciler keeps a master lease per server in storage; Skiff keeps it as a
//!   Lease in kube-system (`skiff-apiserver-<address>`, holder the server's `ip:port`) that each server renews every
//!   [`RENEW_EVERY`] and that counts as alive for [`LEASE_SECONDS`]; each server then writes the addresses of the
//!   live ones (those with its own port). A server shutting down removes its Lease and its address.
//! - A server whose address is loopback (pods cannot reach it there) takes no part in the endpoints.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde_json::{json, Value};

use super::errors::ApiError;
use super::write::create_if_missing;
use super::{codec, ApiServer};
use crate::api::resources::{self, ResourceInfo};

pub const NAME: &str = "kubernetes";
pub const RENEW_EVERY: Duration = Duration::from_secs(10);
pub const LEASE_SECONDS: i64 = 30;
const LEASE_PREFIX: &str = "skiff-apiserver-";
const LEASE_LABEL: &str = "skiff.dev/apiserver-endpoint";

fn info(group: &str, version: &str, plural: &str) -> Result<&'static ResourceInfo, ApiError> {
    resources::find(group, version, plural).ok_or_else(|| ApiError::internal(format!("no {plural} resource")))
}

/// The Service's ClusterIP: the first address of the Service range.
pub fn cluster_ip(s: &ApiServer) -> IpAddr {
    let (net, _) = s.config.service_cidr;
    IpAddr::V4(std::net::Ipv4Addr::from(u32::from(net) + 1))
}

fn lease_name(me: SocketAddr) -> String {
    let ip = me.ip().to_string().replace(['.', ':'], "-");
    format!("{LEASE_PREFIX}{ip}-{}", me.port())
}

/// Make the Service where missing (at start and in every round, so a deleted one comes back, as upstream's). Returns
/// why it could not be made, if it could not (its ClusterIP held by another Service, say); the caller logs it.
pub async fn ensure_service(s: &ApiServer, port: u16) -> Result<Option<String>, ApiError> {
    let svc_info = info("", "v1", "services")?;
    if s.store.get(&svc_info.key(Some("default"), NAME)).await.map_err(|e| ApiError::from_store(svc_info, NAME, e))?.is_some() {
        return Ok(None);
    }
    let svc = json!({
        "metadata": {"name": NAME, "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {"type": "ClusterIP", "clusterIP": cluster_ip(s).to_string(), "sessionAffinity": "None",
                 "ports": [{"name": "https", "port": 443, "protocol": "TCP", "targetPort": port}]}
    });
    match create_if_missing(s, svc_info, Some("default"), svc).await {
        Ok(made) => {
            if made {
                tracing::info!(cluster_ip = %cluster_ip(s), "Service default/kubernetes created");
            }
            Ok(None)
        }
        Err(e) => Ok(Some(e.message)),
    }
}

/// Renew this server's Lease (when it has an address pods can reach), then write the live servers' addresses.
pub async fn reconcile(s: &ApiServer, me: Option<SocketAddr>, port: u16) -> Result<(), ApiError> {
    let lease_info = info("coordination.k8s.io", "v1", "leases")?;
    let now = chrono::Utc::now();
    if let Some(me) = me {
        let name = lease_name(me);
        let spec = json!({"holderIdentity": me.to_string(), "leaseDurationSeconds": LEASE_SECONDS,
                          "renewTime": now.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()});
        let key = lease_info.key(Some("kube-system"), &name);
        match s.store.get(&key).await.map_err(|e| ApiError::from_store(lease_info, &name, e))? {
            None => {
                let lease = json!({"metadata": {"name": name, "labels": {LEASE_LABEL: "true"}}, "spec": spec});
                create_if_missing(s, lease_info, Some("kube-system"), lease).await?;
            }
            Some(kv) => {
                let mut lease = codec::object_from_kv(&kv)?;
                lease["spec"] = spec;
                strip_version(&mut lease);
                // A conflict: another writer meanwhile; the next round renews.
                let _ = s.store.update(&key, codec::to_stored(&lease), kv.mod_revision).await;
            }
        }
    }
    let list = s
        .store
        .list(&lease_info.prefix(Some("kube-system")), Default::default())
        .await
        .map_err(|e| ApiError::from_store(lease_info, "", e))?;
    let mut live: Vec<IpAddr> = Vec::new();
    for kv in &list.items {
        let lease = codec::object_from_kv(kv)?;
        if lease.pointer(&format!("/metadata/labels/{}", LEASE_LABEL.replace('/', "~1"))).and_then(Value::as_str) != Some("true") {
            continue;
        }
        let Some(addr) = lease.pointer("/spec/holderIdentity").and_then(Value::as_str).and_then(|h| h.parse::<SocketAddr>().ok()) else { continue };
        let renewed = lease.pointer("/spec/renewTime").and_then(Value::as_str).and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
        let ttl = lease.pointer("/spec/leaseDurationSeconds").and_then(Value::as_i64).unwrap_or(LEASE_SECONDS);
        if addr.port() == port && renewed.is_some_and(|r| now.signed_duration_since(r) < chrono::Duration::seconds(ttl)) {
            live.push(addr.ip());
        }
    }
    live.sort();
    live.dedup();
    write_endpoints(s, &live, port).await
}

fn strip_version(obj: &mut Value) {
    if let Some(m) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
}

/// The Endpoints and the EndpointSlice `kubernetes` with these addresses, written only when they differ.
async fn write_endpoints(s: &ApiServer, live: &[IpAddr], port: u16) -> Result<(), ApiError> {
    let ports = json!([{"name": "https", "port": port, "protocol": "TCP"}]);
    let subsets = if live.is_empty() {
        json!([])
    } else {
        json!([{"addresses": live.iter().map(|ip| json!({"ip": ip.to_string()})).collect::<Vec<_>>(), "ports": ports}])
    };
    let endpoints = json!({"metadata": {"name": NAME, "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}},
                           "subsets": subsets});
    put(s, info("", "v1", "endpoints")?, endpoints, &["subsets"]).await?;
    let slice = json!({
        "metadata": {"name": NAME, "labels": {"kubernetes.io/service-name": NAME}},
        "addressType": "IPv4",
        "endpoints": live.iter().filter(|ip| ip.is_ipv4())
            .map(|ip| json!({"addresses": [ip.to_string()], "conditions": {"ready": true}})).collect::<Vec<_>>(),
        "ports": ports,
    });
    put(s, info("discovery.k8s.io", "v1", "endpointslices")?, slice, &["endpoints", "ports", "addressType"]).await
}

/// Create `want` in default, or set `fields` of the stored object to want's where they differ.
async fn put(s: &ApiServer, info: &'static ResourceInfo, want: Value, fields: &[&str]) -> Result<(), ApiError> {
    let key = info.key(Some("default"), NAME);
    match s.store.get(&key).await.map_err(|e| ApiError::from_store(info, NAME, e))? {
        None => {
            create_if_missing(s, info, Some("default"), want).await?;
        }
        Some(kv) => {
            let mut have = codec::object_from_kv(&kv)?;
            let empty = |v: Option<&Value>| v.is_none_or(|v| v.is_null() || v.as_array().is_some_and(Vec::is_empty));
            let differs = fields.iter().any(|f| {
                let (h, w) = (have.get(*f), want.get(*f));
                h != w && !(empty(h) && empty(w))
            });
            if differs {
                for f in fields {
                    have[*f] = want[*f].clone();
                }
                strip_version(&mut have);
                let _ = s.store.update(&key, codec::to_stored(&have), kv.mod_revision).await;
            }
        }
    }
    Ok(())
}

/// Drop this server's Lease and rewrite the endpoints without it (at shutdown).
pub async fn withdraw(s: &ApiServer, me: SocketAddr, port: u16) -> Result<(), ApiError> {
    let lease_info = info("coordination.k8s.io", "v1", "leases")?;
    let name = lease_name(me);
    let key = lease_info.key(Some("kube-system"), &name);
    if let Some(kv) = s.store.get(&key).await.map_err(|e| ApiError::from_store(lease_info, &name, e))? {
        let _ = s.store.delete(&key, Some(kv.mod_revision)).await;
    }
    reconcile(s, None, port).await
}

/// The address pods reach this server at: the advertised one unless it is loopback or unspecified; then the
/// address the host would send from (a UDP socket's local address after connect: no packet is sent), or else the
/// first global IPv4 address of an interface. None when the host has none.
pub fn pod_facing_address(advertised: SocketAddr) -> Option<SocketAddr> {
    let usable = |ip: IpAddr| !ip.is_loopback() && !ip.is_unspecified();
    if usable(advertised.ip()) {
        return Some(advertised);
    }
    let port = advertised.port();
    let routed = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|sock| sock.connect("192.0.2.1:9").map(|_| sock))
        .and_then(|sock| sock.local_addr())
        .ok()
        .map(|a| a.ip())
        .filter(|ip| usable(*ip));
    let any = || {
        nix::ifaddrs::getifaddrs().ok()?.find_map(|ifa| {
            let ip = IpAddr::V4(ifa.address?.as_sockaddr_in()?.ip());
            (usable(ip) && !ip.is_multicast()).then_some(ip)
        })
    };
    routed.or_else(any).map(|ip| SocketAddr::new(ip, port))
}

/// Keep the Service and its endpoints, until the server closes.
pub fn spawn(s: Weak<ApiServer>, me: Option<SocketAddr>, port: u16) {
    tokio::spawn(async move {
        let Some(server) = s.upgrade() else { return };
        let mut closing = server.closing();
        drop(server);
        // Said once while it lasts, not every round.
        let mut refused: Option<String> = None;
        loop {
            let Some(server) = s.upgrade() else { return };
            if *closing.borrow() {
                if let Some(me) = me {
                    if let Err(e) = withdraw(&server, me, port).await {
                        tracing::debug!(error = %e.message, "withdrawing from the kubernetes endpoints");
                    }
                }
                return;
            }
            match ensure_service(&server, port).await {
                Ok(why) => {
                    if let Some(why) = why.as_ref().filter(|w| refused.as_ref() != Some(w)) {
                        tracing::warn!(error = %why, "cannot create the Service default/kubernetes (is its ClusterIP taken?)");
                    }
                    refused = why;
                }
                Err(e) => tracing::warn!(error = %e.message, "Service default/kubernetes"),
            }
            if let Err(e) = reconcile(&server, me, port).await {
                tracing::warn!(error = %e.message, "kubernetes Service endpoints");
            }
            drop(server);
            tokio::select! {
                _ = tokio::time::sleep(RENEW_EVERY) => {}
                _ = closing.changed() => {}
            }
        }
    });
}

/// For tests: the server keeps its Service and endpoints as `spawn` does.
pub async fn run_once(s: &Arc<ApiServer>, me: Option<SocketAddr>, port: u16) -> Result<(), ApiError> {
    if let Some(why) = ensure_service(s, port).await? {
        return Err(ApiError::internal(why));
    }
    reconcile(s, me, port).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::apiserver::Config;
    use crate::store::sqlite::{SqliteConfig, SqliteStore};
    use crate::store::Store;

    async fn get(s: &ApiServer, group: &str, plural: &str, ns: &str, name: &str) -> Option<Value> {
        let info = info(group, "v1", plural).unwrap();
        s.store.get(&info.key(Some(ns), name)).await.unwrap().map(|kv| codec::object_from_kv(&kv).unwrap())
    }

    fn slice_ips(slice: &Value) -> Vec<String> {
        slice["endpoints"].as_array().unwrap().iter().map(|e| e["addresses"][0].as_str().unwrap().to_string()).collect()
    }

    #[tokio::test]
    async fn service_and_endpoints_follow_the_live_servers() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(SqliteConfig::new(dir.path().join("s.db"))).unwrap());
        let a = ApiServer::new(store.clone(), Config::default());
        a.start().await.unwrap();
        let b = ApiServer::new(store, Config::default());
        let (ma, mb): (SocketAddr, SocketAddr) = ("192.0.2.10:6443".parse().unwrap(), "192.0.2.11:6443".parse().unwrap());
        run_once(&a, Some(ma), 6443).await.unwrap();
        let svc = get(&a, "", "services", "default", NAME).await.expect("the kubernetes Service");
        assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1");
        assert_eq!(svc["spec"]["ports"][0]["port"], 443);
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 6443);
        assert!(svc["spec"].get("selector").is_none_or(Value::is_null));
        // Deleted, it comes back in the next round.
        let svc_info = info("", "v1", "services").unwrap();
        let (gone, _) = a.store.delete(&svc_info.key(Some("default"), NAME), None).await.unwrap();
        a.alloc.release_service(&codec::object_from_kv(&gone).unwrap()).await; // as the API's delete does
        assert!(get(&a, "", "services", "default", NAME).await.is_none());
        run_once(&a, Some(ma), 6443).await.unwrap();
        let again = get(&a, "", "services", "default", NAME).await.expect("the kubernetes Service, made again");
        assert_eq!(again["spec"]["clusterIP"], "10.96.0.1");
        let slice = get(&a, "discovery.k8s.io", "endpointslices", "default", NAME).await.unwrap();
        assert_eq!(slice_ips(&slice), ["192.0.2.10"]);
        assert_eq!(slice["metadata"]["labels"]["kubernetes.io/service-name"], NAME);
        // A second server: both addresses; the Service is made once.
        run_once(&b, Some(mb), 6443).await.unwrap();
        run_once(&a, Some(ma), 6443).await.unwrap();
        let slice = get(&a, "discovery.k8s.io", "endpointslices", "default", NAME).await.unwrap();
        assert_eq!(slice_ips(&slice), ["192.0.2.10", "192.0.2.11"]);
        let ep = get(&a, "", "endpoints", "default", NAME).await.unwrap();
        assert_eq!(ep["subsets"][0]["addresses"].as_array().unwrap().len(), 2);
        assert_eq!(ep["subsets"][0]["ports"][0]["port"], 6443);
        // One shuts down: its address goes.
        withdraw(&b, mb, 6443).await.unwrap();
        let slice = get(&a, "discovery.k8s.io", "endpointslices", "default", NAME).await.unwrap();
        assert_eq!(slice_ips(&slice), ["192.0.2.10"]);
        // One stops renewing (its lease expired): its address goes too; a server without an address renews nothing.
        let lease_info = info("coordination.k8s.io", "v1", "leases").unwrap();
        let key = lease_info.key(Some("kube-system"), &lease_name(ma));
        let kv = a.store.get(&key).await.unwrap().unwrap();
        let mut lease = codec::object_from_kv(&kv).unwrap();
        lease["spec"]["renewTime"] = json!("2020-01-01T00:00:00.000000Z");
        strip_version(&mut lease);
        a.store.update(&key, codec::to_stored(&lease), kv.mod_revision).await.unwrap();
        run_once(&b, None, 6443).await.unwrap();
        let slice = get(&a, "discovery.k8s.io", "endpointslices", "default", NAME).await.unwrap();
        assert!(slice_ips(&slice).is_empty());
        let ep = get(&a, "", "endpoints", "default", NAME).await.unwrap();
        assert!(ep["subsets"].as_array().unwrap().is_empty());
    }

    #[test]
    fn loopback_is_not_an_address_for_pods() {
        let routed = pod_facing_address("127.0.0.1:6443".parse().unwrap());
        assert!(routed.is_none_or(|a| !a.ip().is_loopback() && a.port() == 6443));
        let given: SocketAddr = "192.0.2.7:7443".parse().unwrap();
        assert_eq!(pod_facing_address(given), Some(given));
    }
}
