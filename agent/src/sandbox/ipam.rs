//! Host-local IPAM: one file per allocated address under `<root-dir>/ipam/`, holding the pod uid.
//! Creating the file with O_EXCL is the allocation, so it is atomic and survives agent restarts.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("pod CIDR {0:?} is not an IPv4 CIDR")]
    BadCidr(String),
    #[error("no free address left in {0}")]
    Exhausted(String),
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
}

/// An IPv4 network: base address and prefix length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub base: Ipv4Addr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr, IpamError> {
        let bad = || IpamError::BadCidr(s.to_string());
        let (ip, len) = s.split_once('/').ok_or_else(bad)?;
        let ip: Ipv4Addr = ip.parse().map_err(|_| bad())?;
        let prefix: u8 = len.parse().map_err(|_| bad())?;
        if !(8..=30).contains(&prefix) {
            return Err(bad());
        }
        let mask = u32::MAX << (32 - prefix);
        Ok(Cidr { base: Ipv4Addr::from(u32::from(ip) & mask), prefix })
    }
    /// The first host address: the bridge's (the pods' gateway).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.base) + 1)
    }
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.prefix);
        u32::from(ip) & mask == u32::from(self.base)
    }
    /// Pod addresses: every host address after the gateway, broadcast excluded.
    pub fn pod_addresses(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.base) + 2;
        let last = u32::from(self.base) + (1u32 << (32 - self.prefix)) - 2;
        (first..=last).map(Ipv4Addr::from)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.base, self.prefix)
    }
}

pub struct Ipam {
    dir: PathBuf,
    cidr: Cidr,
}

impl Ipam {
    pub fn new(dir: &Path, cidr: Cidr) -> Ipam {
        Ipam { dir: dir.to_path_buf(), cidr }
    }

    fn owners(&self) -> Result<Vec<(Ipv4Addr, String)>, IpamError> {
        let rd = match std::fs::read_dir(&self.dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(source) => return Err(IpamError::Io { what: "listing", path: self.dir.clone(), source }),
        };
        let mut out = vec![];
        for entry in rd.flatten() {
            let Some(ip) = entry.file_name().to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else { continue };
            let owner = std::fs::read_to_string(entry.path()).unwrap_or_default();
            out.push((ip, owner.trim().to_string()));
        }
        Ok(out)
    }

    /// The address of `uid`, allocating one if it has none (idempotent).
    pub fn allocate(&self, uid: &str) -> Result<Ipv4Addr, IpamError> {
        if let Some((ip, _)) = self.owners()?.into_iter().find(|(ip, o)| o == uid && self.cidr.contains(*ip)) {
            return Ok(ip);
        }
        std::fs::create_dir_all(&self.dir)
            .map_err(|source| IpamError::Io { what: "creating", path: self.dir.clone(), source })?;
        for ip in self.cidr.pod_addresses() {
            let path = self.dir.join(ip.to_string());
            match std::fs::OpenOptions::new().write(true).create_new(true).open(&path) {
                Ok(mut f) => {
                    f.write_all(uid.as_bytes())
                        .and_then(|_| f.sync_all())
                        .map_err(|source| IpamError::Io { what: "writing", path: path.clone(), source })?;
                    return Ok(ip);
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(IpamError::Io { what: "creating", path, source }),
            }
        }
        Err(IpamError::Exhausted(self.cidr.to_string()))
    }

    /// Releases every address held by `uid`.
    pub fn release(&self, uid: &str) -> Result<(), IpamError> {
        for (ip, owner) in self.owners()? {
            if owner == uid {
                let path = self.dir.join(ip.to_string());
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                        return Err(IpamError::Io { what: "removing", path, source: e })
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_gateway_and_range() {
        let c = Cidr::parse("10.244.3.0/24").unwrap();
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 244, 3, 1));
        let all: Vec<_> = c.pod_addresses().collect();
        assert_eq!(all.first(), Some(&Ipv4Addr::new(10, 244, 3, 2)));
        assert_eq!(all.last(), Some(&Ipv4Addr::new(10, 244, 3, 254)));
        assert!(c.contains(Ipv4Addr::new(10, 244, 3, 77)) && !c.contains(Ipv4Addr::new(10, 244, 4, 1)));
        assert!(Cidr::parse("10.0.0.0").is_err() && Cidr::parse("x/24").is_err());
    }

    #[test]
    fn allocations_are_idempotent_persistent_and_released() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cidr::parse("10.1.0.0/29").unwrap(); // .2 ..= .6
        let ipam = Ipam::new(dir.path(), c);
        let a = ipam.allocate("a").unwrap();
        assert_eq!(ipam.allocate("a").unwrap(), a);
        let b = Ipam::new(dir.path(), c).allocate("b").unwrap(); // a second instance sees the first's files
        assert_ne!(a, b);
        for u in ["c", "d", "e"] {
            ipam.allocate(u).unwrap();
        }
        assert!(matches!(ipam.allocate("f"), Err(IpamError::Exhausted(_))));
        ipam.release("a").unwrap();
        assert_eq!(ipam.allocate("f").unwrap(), a);
    }
}
