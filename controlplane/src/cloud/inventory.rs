//! The bare-host provider: an inventory file (YAML or JSON) re-read when it changes.
//!
//! ```yaml
//! machines:
//!   - name: node-1                 # the Node's name
//!     addresses:
//!       - {type: InternalIP, address: 10.0.0.11}
//!     zone: rack-a                 # optional: topology.kubernetes.io/zone
//!     shutdown: false              # optional: taints the node node.cloudprovider.kubernetes.io/shutdown
//! loadBalancerPool:                # addresses for Services of type LoadBalancer
//!   - 10.0.0.200-10.0.0.210
//!   - 10.0.0.250
//! ```

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::SystemTime;

use serde::Deserialize;

use super::{CloudProvider, Instance};

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InventoryFile {
    #[serde(default)]
    pub machines: Vec<Machine>,
    #[serde(default)]
    pub load_balancer_pool: Vec<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Machine {
    pub name: String,
    #[serde(default)]
    pub addresses: Vec<Address>,
    pub zone: Option<String>,
    #[serde(default)]
    pub shutdown: bool,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Address {
    #[serde(rename = "type")]
    pub type_: String,
    pub address: String,
}

/// Parse and check an inventory (machine names unique, addresses and pool entries valid).
pub fn parse(text: &str) -> Result<(InventoryFile, Vec<IpAddr>), String> {
    let inv: InventoryFile = serde_yaml_ng::from_str(text).map_err(|e| format!("inventory: {e}"))?;
    let mut names = std::collections::HashSet::new();
    for m in &inv.machines {
        if !names.insert(m.name.clone()) {
            return Err(format!("inventory: machine {:?} is listed twice", m.name));
        }
        for a in &m.addresses {
            if !matches!(a.type_.as_str(), "InternalIP" | "ExternalIP" | "Hostname" | "InternalDNS" | "ExternalDNS") {
                return Err(format!("inventory: machine {:?}: unknown address type {:?}", m.name, a.type_));
            }
            if a.type_.ends_with("IP") && a.address.parse::<IpAddr>().is_err() {
                return Err(format!("inventory: machine {:?}: {:?} is not an IP address", m.name, a.address));
            }
        }
    }
    let mut pool = Vec::new();
    for entry in &inv.load_balancer_pool {
        match entry.split_once('-') {
            Some((a, b)) => {
                let (a, b): (Ipv4Addr, Ipv4Addr) = (
                    a.trim().parse().map_err(|_| format!("inventory: bad pool range {entry:?}"))?,
                    b.trim().parse().map_err(|_| format!("inventory: bad pool range {entry:?}"))?,
                );
                let (lo, hi) = (u32::from(a), u32::from(b));
                if hi < lo || hi - lo > 65535 {
                    return Err(format!("inventory: pool range {entry:?} is reversed or too large"));
                }
                pool.extend((lo..=hi).map(|n| IpAddr::V4(Ipv4Addr::from(n))));
            }
            None => pool.push(entry.trim().parse().map_err(|_| format!("inventory: bad pool address {entry:?}"))?),
        }
    }
    Ok((inv, pool))
}

/// The first pool address that is free, keeping `current` when it is still in the pool and not taken.
pub fn pick(pool: &[IpAddr], current: Option<IpAddr>, used: &[IpAddr]) -> Option<IpAddr> {
    if let Some(c) = current.filter(|c| pool.contains(c) && !used.contains(c)) {
        return Some(c);
    }
    pool.iter().copied().find(|ip| !used.contains(ip))
}

pub struct Inventory {
    path: PathBuf,
    cached: Mutex<Option<(SystemTime, InventoryFile, Vec<IpAddr>)>>,
}

impl Inventory {
    /// Open and check the file now, so a bad inventory stops the start with a clear error.
    pub fn open(path: PathBuf) -> Result<Self, String> {
        let inv = Inventory { path, cached: Mutex::new(None) };
        inv.load()?;
        Ok(inv)
    }

    fn load(&self) -> Result<(Vec<Machine>, Vec<IpAddr>), String> {
        let meta = std::fs::metadata(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if cached.as_ref().is_none_or(|(t, _, _)| *t != mtime) {
            let text = std::fs::read_to_string(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
            let (file, pool) = parse(&text)?;
            *cached = Some((mtime, file, pool));
        }
        let (_, file, pool) = cached.as_ref().ok_or("inventory not loaded")?;
        Ok((file.machines.clone(), pool.clone()))
    }
}

impl CloudProvider for Inventory {
    fn instance(&self, node: &str) -> Result<Option<Instance>, String> {
        let (machines, _) = self.load()?;
        Ok(machines.into_iter().find(|m| m.name == node).map(|m| Instance {
            addresses: m.addresses.into_iter().map(|a| (a.type_, a.address)).collect(),
            zone: m.zone,
            shutdown: m.shutdown,
        }))
    }

    fn ensure_load_balancer(&self, current: Option<IpAddr>, used: &[IpAddr]) -> Result<IpAddr, String> {
        let (_, pool) = self.load()?;
        pick(&pool, current, used).ok_or_else(|| "the load balancer address pool is exhausted".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INV: &str = "
machines:
  - name: n1
    addresses: [{type: InternalIP, address: 10.0.0.11}, {type: Hostname, address: n1}]
    zone: rack-a
  - name: n2
loadBalancerPool: [10.0.0.200-10.0.0.202, 10.0.0.250]
";

    #[test]
    fn parses_machines_and_pool() {
        let (inv, pool) = parse(INV).unwrap();
        assert_eq!(inv.machines.len(), 2);
        assert_eq!(pool.len(), 4);
        assert_eq!(pool[3], "10.0.0.250".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn rejects_bad_inventories() {
        assert!(parse("machines: [{name: a}, {name: a}]").unwrap_err().contains("twice"));
        assert!(parse("machines: [{name: a, addresses: [{type: InternalIP, address: nope}]}]").is_err());
        assert!(parse("loadBalancerPool: [10.0.0.5-10.0.0.1]").unwrap_err().contains("reversed"));
        assert!(parse("machinez: []").is_err(), "unknown fields are errors");
    }

    #[test]
    fn picks_free_addresses_and_keeps_current() {
        let (_, pool) = parse(INV).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(pick(&pool, None, &[]), Some(ip("10.0.0.200")));
        assert_eq!(pick(&pool, None, &[ip("10.0.0.200")]), Some(ip("10.0.0.201")));
        assert_eq!(pick(&pool, Some(ip("10.0.0.202")), &[ip("10.0.0.200")]), Some(ip("10.0.0.202")));
        assert_eq!(pick(&pool, Some(ip("10.9.9.9")), &[]), Some(ip("10.0.0.200")), "an address outside the pool is replaced");
        assert_eq!(pick(&pool[..1], None, &[ip("10.0.0.200")]), None);
    }

    #[test]
    fn provider_reads_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inv.yaml");
        std::fs::write(&path, INV).unwrap();
        let inv = Inventory::open(path.clone()).unwrap();
        let n1 = inv.instance("n1").unwrap().unwrap();
        assert_eq!(n1.zone.as_deref(), Some("rack-a"));
        assert_eq!(n1.addresses[0], ("InternalIP".to_string(), "10.0.0.11".to_string()));
        assert!(inv.instance("n3").unwrap().is_none());
        std::fs::write(&path, "machines: [oops").unwrap();
        assert!(Inventory::open(path).is_err());
    }
}
