//! A container's security settings from the pod's and the container's `securityContext` (the container's win)
//! and the image's `User`, as containerd's CRI plugin derives them: user and groups, capabilities, no-new-privs,
//! read-only rootfs, privileged, sysctls. Pure: the image's /etc/passwd and /etc/group come in as text.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};

/// The capabilities a container gets by default (containerd's and Docker's list).
pub const DEFAULT_CAPS: [&str; 14] = [
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SecurityError {
    /// Upstream's `verifyRunAsNonRoot` messages.
    #[error("container's runAsUser breaks non-root policy (pod: \"{pod}\", container: {container})")]
    RunAsUserRoot { pod: String, container: String },
    #[error("container has runAsNonRoot and image will run as root (pod: \"{pod}\", container: {container})")]
    ImageRunsAsRoot { pod: String, container: String },
    #[error("container has runAsNonRoot and image has non-numeric user ({user}), cannot verify user is non-root (pod: \"{pod}\", container: {container})")]
    NonNumericUser { user: String, pod: String, container: String },
    #[error("unable to find user {0}: no matching entries in passwd file")]
    UnknownUser(String),
    #[error("unable to find group {0}: no matching entries in group file")]
    UnknownGroup(String),
    #[error("unknown capability {0:?}")]
    UnknownCapability(String),
    #[error("{field} {value} is not a user or group id (0 to 2147483647)")]
    InvalidId { field: &'static str, value: i64 },
}

/// A user or group id from a security context: upstream's range, never cut to 32 bits (4294967296 would be root).
fn id32(field: &'static str, value: i64) -> Result<u32, SecurityError> {
    u32::try_from(value).ok().filter(|v| *v <= i32::MAX as u32).ok_or(SecurityError::InvalidId { field, value })
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Security {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    /// Bounding, effective and permitted set.
    pub capabilities: Vec<String>,
    pub no_new_privileges: bool,
    pub readonly_rootfs: bool,
    /// No masked or read-only paths, /sys writable, every device allowed by the device cgroup.
    pub privileged: bool,
    pub sysctls: BTreeMap<String, String>,
}

impl Default for Security {
    fn default() -> Self {
        Security {
            uid: 0,
            gid: 0,
            additional_gids: vec![],
            capabilities: DEFAULT_CAPS.iter().map(|c| c.to_string()).collect(),
            no_new_privileges: false,
            readonly_rootfs: false,
            privileged: false,
            sysctls: BTreeMap::new(),
        }
    }
}

/// An /etc/passwd or /etc/group line split on ':'. Hand-written: the format is trivial, and the crates that read
/// these files read the host's through libc, not an image's.
fn entries(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines().filter(|l| !l.trim_start().starts_with('#')).map(|l| l.split(':').collect::<Vec<_>>()).filter(|f| f.len() >= 3)
}

/// (name, uid, gid) from passwd text.
fn passwd_entries(passwd: &str) -> Vec<(String, u32, u32)> {
    entries(passwd)
        .filter(|f| f.len() >= 4)
        .filter_map(|f| Some((f[0].to_string(), f[2].parse().ok()?, f[3].parse().ok()?)))
        .collect()
}

/// (name, gid, members) from group text.
fn group_entries(group: &str) -> Vec<(String, u32, Vec<String>)> {
    entries(group)
        .filter_map(|f| {
            let members = f.get(3).map(|m| m.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()).unwrap_or_default();
            Some((f[0].to_string(), f[2].parse().ok()?, members))
        })
        .collect()
}

/// The image's `User` ("", "uid", "uid:gid", "name", "name:group") as (uid, gid, user name), looked up in the
/// image's passwd and group files.
pub fn image_user(user: &str, passwd: &str, group: &str) -> Result<(u32, u32, Option<String>), SecurityError> {
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let users = passwd_entries(passwd);
    let (uid, mut gid, name) = if u.is_empty() {
        (0, 0, Some("root".to_string()))
    } else if let Ok(uid) = u.parse::<u32>() {
        let e = users.iter().find(|(_, id, _)| *id == uid);
        (uid, e.map(|e| e.2).unwrap_or(0), e.map(|e| e.0.clone()))
    } else {
        let e = users.iter().find(|(n, _, _)| n == u).ok_or_else(|| SecurityError::UnknownUser(u.to_string()))?;
        (e.1, e.2, Some(e.0.clone()))
    };
    if let Some(g) = g.filter(|g| !g.is_empty()) {
        gid = match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => group_entries(group)
                .into_iter()
                .find(|(n, _, _)| n == g)
                .map(|e| e.1)
                .ok_or_else(|| SecurityError::UnknownGroup(g.to_string()))?,
        };
    }
    Ok((uid, gid, name))
}

fn normalize_cap(c: &str) -> String {
    let up = c.to_ascii_uppercase();
    if up == "ALL" || up.starts_with("CAP_") {
        up
    } else {
        format!("CAP_{up}")
    }
}

/// Every capability the kernel knows of (the `caps` crate's list), sorted.
fn known_caps() -> Vec<String> {
    let mut v: Vec<String> = caps::all().into_iter().map(|c| c.to_string()).collect();
    v.sort();
    v
}

/// The capabilities "ALL" and privileged mean: every one the agent itself holds (containerd's
/// `WithAllCurrentCapabilities`): asking the runtime for one outside its bounding set fails with EPERM.
pub fn all_caps(available: &[String]) -> Vec<String> {
    known_caps().into_iter().filter(|c| available.contains(c)).collect()
}

/// The agent's own bounding set, by name.
pub fn current_caps() -> Vec<String> {
    caps::read(None, caps::CapSet::Bounding).map(|s| s.into_iter().map(|c| c.to_string()).collect()).unwrap_or_default()
}

/// Default caps, then `add` ("ALL" = every available one), then `drop` ("ALL" = none but what `add` names), as
/// containerd.
pub fn capabilities(add: &[String], drop: &[String], available: &[String]) -> Result<Vec<String>, SecurityError> {
    let add: Vec<String> = add.iter().map(|c| normalize_cap(c)).collect();
    let drop: Vec<String> = drop.iter().map(|c| normalize_cap(c)).collect();
    let known = known_caps();
    for c in add.iter().chain(&drop) {
        if c != "ALL" && !known.contains(c) {
            return Err(SecurityError::UnknownCapability(c.clone()));
        }
    }
    let mut caps: Vec<String> = if add.iter().any(|c| c == "ALL") {
        all_caps(available)
    } else {
        DEFAULT_CAPS.iter().map(|c| c.to_string()).collect()
    };
    if drop.iter().any(|c| c == "ALL") {
        caps.clear();
    }
    for c in add.iter().filter(|c| *c != "ALL") {
        if !caps.contains(c) {
            caps.push(c.clone());
        }
    }
    caps.retain(|c| !drop.contains(c));
    Ok(caps)
}

/// The pod as upstream's `format.Pod` prints it: `name_namespace(uid)`.
fn pod_label(pod: &Pod) -> String {
    let m = &pod.metadata;
    format!("{}_{}({})", m.name.as_deref().unwrap_or_default(), m.namespace.as_deref().unwrap_or("default"), m.uid.as_deref().unwrap_or_default())
}

/// The image facts security depends on: its config's `User` and its /etc/passwd and /etc/group (empty when
/// absent); and the capabilities the agent can hand out ([`current_caps`]).
pub struct ImageUser<'a> {
    pub user: &'a str,
    pub passwd: &'a str,
    pub group: &'a str,
    pub available_caps: &'a [String],
}

/// The security settings of container `c`.
pub fn resolve(pod: &Pod, c: &Container, image: &ImageUser) -> Result<Security, SecurityError> {
    let (image_user_field, passwd, group) = (image.user, image.passwd, image.group);
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.clone()).unwrap_or_default();
    let csc = c.security_context.clone().unwrap_or_default();
    let run_as_user = csc.run_as_user.or(psc.run_as_user);
    let run_as_group = csc.run_as_group.or(psc.run_as_group);
    let non_root = csc.run_as_non_root.or(psc.run_as_non_root) == Some(true);
    let err_ctx = || (pod_label(pod), c.name.clone());
    if non_root {
        match run_as_user {
            Some(0) => {
                let (pod, container) = err_ctx();
                return Err(SecurityError::RunAsUserRoot { pod, container });
            }
            Some(_) => {}
            None => {
                let u = image_user_field.split(':').next().unwrap_or_default();
                match u.parse::<u32>() {
                    _ if u.is_empty() => {
                        let (pod, container) = err_ctx();
                        return Err(SecurityError::ImageRunsAsRoot { pod, container });
                    }
                    Ok(0) => {
                        let (pod, container) = err_ctx();
                        return Err(SecurityError::ImageRunsAsRoot { pod, container });
                    }
                    Ok(_) => {}
                    Err(_) => {
                        let (pod, container) = err_ctx();
                        return Err(SecurityError::NonNumericUser { user: u.to_string(), pod, container });
                    }
                }
            }
        }
    }
    let (uid, gid, name) = match run_as_user {
        // runAsUser replaces the image's user; its group is the passwd entry's when there is one.
        Some(uid) => {
            let uid = id32("runAsUser", uid)?;
            let e = passwd_entries(passwd).into_iter().find(|(_, id, _)| *id == uid);
            (uid, e.as_ref().map(|e| e.2).unwrap_or(0), e.map(|e| e.0))
        }
        None => image_user(image_user_field, passwd, group)?,
    };
    let gid = run_as_group.map(|g| id32("runAsGroup", g)).transpose()?.unwrap_or(gid);
    let mut additional_gids: Vec<u32> = vec![];
    if let Some(name) = &name {
        for (_, g, members) in group_entries(group) {
            if members.iter().any(|m| m == name) && g != gid {
                additional_gids.push(g);
            }
        }
    }
    let extra = psc.supplemental_groups.iter().flatten().map(|g| id32("supplementalGroups", *g));
    for g in extra.chain(psc.fs_group.map(|g| id32("fsGroup", g))) {
        let g = g?;
        if !additional_gids.contains(&g) {
            additional_gids.push(g);
        }
    }
    let privileged = csc.privileged == Some(true);
    let capabilities = if privileged {
        all_caps(image.available_caps)
    } else {
        let add = csc.capabilities.as_ref().and_then(|c| c.add.clone()).unwrap_or_default();
        let drop = csc.capabilities.as_ref().and_then(|c| c.drop.clone()).unwrap_or_default();
        capabilities(&add, &drop, image.available_caps)?
    };
    let sysctls = psc.sysctls.iter().flatten().map(|s| (s.name.clone(), s.value.clone())).collect();
    Ok(Security {
        uid,
        gid,
        additional_gids,
        capabilities,
        no_new_privileges: csc.allow_privilege_escalation == Some(false) && !privileged,
        readonly_rootfs: csc.read_only_root_filesystem == Some(true),
        privileged,
        sysctls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\nweb:x:1000:1000::/home/web:/bin/sh\nnobody:x:65534:65534::/:/bin/false\n";
    const GROUP: &str = "root:x:0:\nweb:x:1000:\nwheel:x:10:web,other\nnogroup:x:65534:\n";

    fn pod(psc: serde_json::Value, csc: serde_json::Value) -> (Pod, Container) {
        let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"securityContext": psc, "containers": [{"name": "c", "securityContext": csc}]}}))
        .unwrap();
        let c = p.spec.as_ref().unwrap().containers[0].clone();
        (p, c)
    }

    /// Every known capability but CAP_SYS_RESOURCE, as on a host whose bounding set lacks it.
    fn available() -> Vec<String> {
        known_caps().into_iter().filter(|c| c != "CAP_SYS_RESOURCE").collect()
    }

    fn run(psc: serde_json::Value, csc: serde_json::Value, user: &str) -> Result<Security, SecurityError> {
        let (p, c) = pod(psc, csc);
        resolve(&p, &c, &ImageUser { user, passwd: PASSWD, group: GROUP, available_caps: &available() })
    }

    #[test]
    fn defaults_are_root_with_the_default_caps() {
        assert_eq!(run(json!({}), json!({}), "").unwrap(), Security::default());
    }

    #[test]
    fn image_users() {
        assert_eq!(image_user("", PASSWD, GROUP).unwrap(), (0, 0, Some("root".into())));
        assert_eq!(image_user("1000", PASSWD, GROUP).unwrap(), (1000, 1000, Some("web".into())));
        assert_eq!(image_user("1234", PASSWD, GROUP).unwrap(), (1234, 0, None));
        assert_eq!(image_user("web", PASSWD, GROUP).unwrap(), (1000, 1000, Some("web".into())));
        assert_eq!(image_user("web:wheel", PASSWD, GROUP).unwrap(), (1000, 10, Some("web".into())));
        assert_eq!(image_user("5:7", "", "").unwrap(), (5, 7, None));
        assert_eq!(image_user("ghost", PASSWD, GROUP), Err(SecurityError::UnknownUser("ghost".into())));
        assert_eq!(image_user("web:ghosts", PASSWD, GROUP), Err(SecurityError::UnknownGroup("ghosts".into())));
    }

    #[test]
    fn users_and_groups_pod_and_container_level() {
        let s = run(json!({"runAsUser": 1000, "runAsGroup": 3000, "supplementalGroups": [4000], "fsGroup": 2000}), json!({}), "").unwrap();
        assert_eq!((s.uid, s.gid), (1000, 3000));
        assert_eq!(s.additional_gids, [10, 4000, 2000]); // wheel from /etc/group, supplemental, fsGroup
        let s = run(json!({"runAsUser": 1000}), json!({"runAsUser": 65534}), "").unwrap();
        assert_eq!((s.uid, s.gid), (65534, 65534));
        let s = run(json!({}), json!({}), "web").unwrap();
        assert_eq!((s.uid, s.gid, s.additional_gids.clone()), (1000, 1000, vec![10]));
    }

    #[test]
    fn ids_beyond_32_bits_are_refused_not_truncated_to_root() {
        for (psc, csc) in [
            (json!({"runAsNonRoot": true, "runAsUser": 4294967296u64}), json!({})),
            (json!({}), json!({"runAsGroup": 4294967296u64})),
            (json!({"supplementalGroups": [-1]}), json!({})),
            (json!({"fsGroup": 2147483648u64}), json!({})),
        ] {
            let e = run(psc.clone(), csc, "").unwrap_err();
            assert!(matches!(e, SecurityError::InvalidId { .. }), "{psc}: {e}");
        }
    }

    #[test]
    fn run_as_non_root_is_enforced_with_upstreams_messages() {
        let e = |psc, csc, user: &str| run(psc, csc, user).unwrap_err().to_string();
        assert_eq!(e(json!({"runAsNonRoot": true}), json!({}), ""),
                   "container has runAsNonRoot and image will run as root (pod: \"p_ns(u)\", container: c)");
        assert_eq!(e(json!({}), json!({"runAsNonRoot": true}), "0:0"),
                   "container has runAsNonRoot and image will run as root (pod: \"p_ns(u)\", container: c)");
        assert_eq!(e(json!({"runAsNonRoot": true, "runAsUser": 0}), json!({}), "1000"),
                   "container's runAsUser breaks non-root policy (pod: \"p_ns(u)\", container: c)");
        assert!(e(json!({"runAsNonRoot": true}), json!({}), "web").contains("non-numeric user (web)"));
        assert!(run(json!({"runAsNonRoot": true}), json!({}), "1000").is_ok());
        assert!(run(json!({"runAsNonRoot": true, "runAsUser": 5}), json!({}), "").is_ok());
        // The container's runAsNonRoot=false wins over the pod's.
        assert!(run(json!({"runAsNonRoot": true}), json!({"runAsNonRoot": false}), "").is_ok());
    }

    #[test]
    fn capabilities_add_drop_and_all() {
        let caps = |add: &[&str], drop: &[&str]| {
            let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
            capabilities(&v(add), &v(drop), &available())
        };
        let c = caps(&["NET_ADMIN", "CAP_SYS_TIME"], &["KILL", "cap_chown"]).unwrap();
        assert!(c.contains(&"CAP_NET_ADMIN".into()) && c.contains(&"CAP_SYS_TIME".into()));
        assert!(!c.contains(&"CAP_KILL".into()) && !c.contains(&"CAP_CHOWN".into()));
        assert_eq!(caps(&["NET_BIND_SERVICE"], &["ALL"]).unwrap(), ["CAP_NET_BIND_SERVICE"]);
        assert!(caps(&[], &["ALL"]).unwrap().is_empty());
        let all = caps(&["ALL"], &["SYS_ADMIN"]).unwrap();
        assert!(all.len() > 30 && !all.contains(&"CAP_SYS_ADMIN".into()));
        // "ALL" is what the agent holds.
        assert!(!all.contains(&"CAP_SYS_RESOURCE".into()) && all.contains(&"CAP_NET_ADMIN".into()));
        assert_eq!(caps(&["BOGUS"], &[]), Err(SecurityError::UnknownCapability("CAP_BOGUS".into())));
    }

    #[test]
    fn privileged_read_only_no_new_privs_and_sysctls() {
        let s = run(json!({"sysctls": [{"name": "net.ipv4.ip_unprivileged_port_start", "value": "0"}]}),
                    json!({"privileged": true, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false}), "").unwrap();
        assert!(s.privileged && s.readonly_rootfs && !s.no_new_privileges);
        assert_eq!(s.capabilities, available());
        assert_eq!(s.sysctls["net.ipv4.ip_unprivileged_port_start"], "0");
        let s = run(json!({}), json!({"allowPrivilegeEscalation": false}), "").unwrap();
        assert!(s.no_new_privileges && !s.privileged);
    }
}
