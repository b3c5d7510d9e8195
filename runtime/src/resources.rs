//! Turning `update` flags into OCI `linux.resources` (pure, so it is tested without cgroups).

use libcontainer::oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder,
};

use crate::cli::UpdateArgs;
use crate::error::{Error, Result};

/// Parses `1048576`, `512k`, `32m`, `1g` (binary units, any case, optional `b`); `-1` means
/// unlimited.
pub fn parse_bytes(s: &str) -> Result<i64> {
    let bad = || Error::InvalidArgument(format!("invalid size {s:?}"));
    let t = s.trim().to_ascii_lowercase();
    if t == "-1" {
        return Ok(-1);
    }
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k')) => (&t[..i], 1i64 << 10),
        Some((i, 'm')) => (&t[..i], 1 << 20),
        Some((i, 'g')) => (&t[..i], 1 << 30),
        Some((i, 't')) => (&t[..i], 1 << 40),
        _ => (t, 1),
    };
    let n: i64 = num.parse().map_err(|_| bad())?;
    if n < 0 {
        return Err(bad());
    }
    n.checked_mul(mult).ok_or_else(bad)
}

/// The resources to apply: the JSON document if one was given, else the flags.
pub fn from_args(args: &UpdateArgs, json: Option<&str>) -> Result<LinuxResources> {
    if let Some(json) = json {
        return serde_json::from_str(json)
            .map_err(|e| Error::InvalidArgument(format!("resources JSON: {e}")));
    }
    let spec_err = |e: libcontainer::oci_spec::OciSpecError| Error::InvalidArgument(e.to_string());
    let mut builder = LinuxResourcesBuilder::default();
    if args.memory.is_some() || args.memory_swap.is_some() {
        let mut memory = LinuxMemoryBuilder::default();
        if let Some(m) = &args.memory {
            memory = memory.limit(parse_bytes(m)?);
        }
        if let Some(m) = &args.memory_swap {
            memory = memory.swap(parse_bytes(m)?);
        }
        builder = builder.memory(memory.build().map_err(spec_err)?);
    }
    if let Some(limit) = args.pids_limit {
        // runc: 0 and -1 both mean no limit.
        let limit = if limit <= 0 { -1 } else { limit };
        builder = builder.pids(
            LinuxPidsBuilder::default()
                .limit(limit)
                .build()
                .map_err(spec_err)?,
        );
    }
    if args.cpu_shares.is_some() || args.cpu_quota.is_some() || args.cpu_period.is_some() {
        let mut cpu = LinuxCpuBuilder::default();
        if let Some(v) = args.cpu_shares {
            cpu = cpu.shares(v);
        }
        if let Some(v) = args.cpu_quota {
            cpu = cpu.quota(v);
        }
        if let Some(v) = args.cpu_period {
            cpu = cpu.period(v);
        }
        builder = builder.cpu(cpu.build().map_err(spec_err)?);
    }
    let resources = builder.build().map_err(spec_err)?;
    if resources == LinuxResources::default() {
        return Err(Error::InvalidArgument(
            "nothing to update: give -r resources.json or a resource flag".into(),
        ));
    }
    Ok(resources)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> UpdateArgs {
        UpdateArgs {
            id: "c".into(),
            resources: None,
            memory: None,
            memory_swap: None,
            pids_limit: None,
            cpu_shares: None,
            cpu_quota: None,
            cpu_period: None,
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_bytes("1048576").unwrap(), 1 << 20);
        assert_eq!(parse_bytes("32m").unwrap(), 32 << 20);
        assert_eq!(parse_bytes("32MB").unwrap(), 32 << 20);
        assert_eq!(parse_bytes("2G").unwrap(), 2 << 30);
        assert_eq!(parse_bytes("-1").unwrap(), -1);
        for bad in ["", "m", "x12", "-5", "12q", "99999999999t"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn flags_become_resources() {
        let r = from_args(
            &UpdateArgs {
                memory: Some("64m".into()),
                pids_limit: Some(10),
                cpu_quota: Some(-1),
                cpu_period: Some(100_000),
                ..args()
            },
            None,
        )
        .unwrap();
        assert_eq!(r.memory().as_ref().unwrap().limit(), Some(64 << 20));
        assert_eq!(r.pids().as_ref().unwrap().limit(), 10);
        assert_eq!(r.cpu().as_ref().unwrap().quota(), Some(-1));
        assert_eq!(r.cpu().as_ref().unwrap().period(), Some(100_000));
        assert!(r.cpu().as_ref().unwrap().shares().is_none());
    }

    #[test]
    fn unlimited_pids() {
        let r = from_args(
            &UpdateArgs {
                pids_limit: Some(0),
                ..args()
            },
            None,
        )
        .unwrap();
        assert_eq!(r.pids().as_ref().unwrap().limit(), -1);
    }

    #[test]
    fn json_document_wins_and_bad_json_is_reported() {
        let r = from_args(&args(), Some(r#"{"pids":{"limit":7}}"#)).unwrap();
        assert_eq!(r.pids().as_ref().unwrap().limit(), 7);
        assert!(from_args(&args(), Some("{")).is_err());
    }

    #[test]
    fn nothing_to_update_is_an_error() {
        assert!(from_args(&args(), None).is_err());
    }
}
