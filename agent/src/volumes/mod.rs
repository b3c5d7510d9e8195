//! Pod volumes, in two steps like everything else in the agent: [`plan`] (pure) turns the pod's `volumes` and
//! the fetched ConfigMaps/Secrets into a [`Plan`] per volume; [`setup`] makes it so under
//! `<pod-dir>/volumes/<plugin>/<name>` (the kubelet's `kubernetes.io~<plugin>` names), and [`teardown`] unmounts
//! what it mounted. [`mounts`] turns a container's `volumeMounts` into the bind mounts of its config.json.
//!
//! - emptyDir: a directory (mode 0777); `medium: Memory` is a tmpfs of the pod's memory limit (or the node's
//!   allocatable memory), or of its `sizeLimit` when smaller.
//! - hostPath: the host path itself, after the `type` check ([`host_path`]).
//! - configMap, secret, downwardAPI, projected: files written by the [`atomic`] writer, so updates (re-projected
//!   on the worker's periodic syncs) are atomic; secret and projected volumes live on a tmpfs, as the kubelet's:
//!   in the run dir when that is a tmpfs, else on a tmpfs of their own ([`VolumeDirs`]).
//!   `serviceAccountToken` projections write the pod's bound token (fetched and refreshed in [`PodObjects`]).
//! - fsGroup: volume files get the group (best effort) and group read (write for emptyDir) permissions.
//!
//! - persistentVolumeClaim: the claim's bound volume when it is a hostPath (with its type; Skiff's local-path
//!   provisioner makes DirectoryOrCreate ones) or a local volume (which must exist); `readOnly` honoured.
//!
//! Not done: mount propagation (`mountPropagation` is ignored: every bind mount is `rprivate`), the network/cloud
//! volume types (the pod waits with a message naming the type).

pub mod atomic;
pub mod host_path;
pub mod mounter;
pub mod mounts;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, Volume};

use crate::container::spec::memory_bytes;
use crate::pods::downward::{self, DownwardError, PodContext};
use crate::pods::objects::{config_map_data, not_found, secret_data, PodObjects};
use atomic::Projection;
use mounter::Mounter;

#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    #[error("{0}")]
    NotFound(String),
    #[error("{kind} references non-existent {what} key: {key}")]
    MissingKey { kind: &'static str, what: &'static str, key: String },
    #[error(transparent)]
    Downward(#[from] DownwardError),
    #[error("volume type {0} is not supported by skiff-agent")]
    Unsupported(String),
    #[error("volume name {0:?} is not a DNS label (lower case letters, digits and '-')")]
    InvalidName(String),
    #[error("{0}")]
    HostPath(String),
    #[error(transparent)]
    Atomic(#[from] atomic::AtomicError),
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    /// How the kubelet reports a volume that could not be set up (its FailedMount event).
    #[error("MountVolume.SetUp failed for volume \"{volume}\" : {source}")]
    SetUp { volume: String, source: Box<VolumeError> },
}

/// What a volume is, decided from the pod and its objects.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    EmptyDir { memory: bool, size_limit: Option<i64> },
    HostPath { path: PathBuf, kind: String },
    /// configMap, secret, downwardAPI and projected: files under `<plugin>/<name>`, on a tmpfs when `tmpfs`.
    Files { plugin: &'static str, tmpfs: bool, files: Vec<Projection> },
    /// persistentVolumeClaim: the bound volume's host directory (hostPath with its type, or local).
    Persistent { path: PathBuf, kind: String, read_only: bool },
}

pub const EMPTY_DIR: &str = "kubernetes.io~empty-dir";
pub const CONFIG_MAP: &str = "kubernetes.io~configmap";
pub const SECRET: &str = "kubernetes.io~secret";
pub const DOWNWARD_API: &str = "kubernetes.io~downward-api";
pub const PROJECTED: &str = "kubernetes.io~projected";
const DEFAULT_MODE: i32 = 0o644;

fn from_keys(
    kind: &'static str,
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    mode: i32,
    optional: bool,
) -> Result<Vec<Projection>, VolumeError> {
    let m = |x: i32| x as u32;
    let Some(items) = items.filter(|i| !i.is_empty()) else {
        return Ok(data.iter().map(|(k, v)| Projection { path: k.clone(), data: v.clone(), mode: m(mode) }).collect());
    };
    let mut out = vec![];
    for item in items {
        match data.get(&item.key) {
            Some(v) => out.push(Projection { path: item.path.clone(), data: v.clone(), mode: m(item.mode.unwrap_or(mode)) }),
            None if optional => {}
            None => {
                let what = if kind == "configmap" { "config" } else { "secret" };
                return Err(VolumeError::MissingKey { kind, what, key: item.key.clone() });
            }
        }
    }
    Ok(out)
}

fn config_map_files(
    objects: &PodObjects,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    mode: i32,
    optional: bool,
) -> Result<Vec<Projection>, VolumeError> {
    match objects.config_map(name) {
        Some(cm) => from_keys("configmap", &config_map_data(cm), items, mode, optional),
        None if optional => Ok(vec![]),
        None => Err(VolumeError::NotFound(not_found("configmap", name))),
    }
}

fn secret_files(
    objects: &PodObjects,
    name: &str,
    items: Option<&Vec<KeyToPath>>,
    mode: i32,
    optional: bool,
) -> Result<Vec<Projection>, VolumeError> {
    match objects.secret(name) {
        Some(s) => from_keys("secret", &secret_data(s), items, mode, optional),
        None if optional => Ok(vec![]),
        None => Err(VolumeError::NotFound(not_found("secret", name))),
    }
}

fn downward_files(pod: &Pod, items: &[DownwardAPIVolumeFile], mode: i32, ctx: &PodContext) -> Result<Vec<Projection>, VolumeError> {
    let mut out = vec![];
    for item in items {
        let data = if let Some(f) = &item.field_ref {
            downward::field_value(pod, &f.field_path, ctx)?
        } else if let Some(r) = &item.resource_field_ref {
            let container = r.container_name.clone().unwrap_or_default();
            downward::resource_value(pod, &container, &r.resource, r.divisor.as_ref(), ctx)?
        } else {
            String::new()
        };
        out.push(Projection { path: item.path.clone(), data: data.into_bytes(), mode: item.mode.unwrap_or(mode) as u32 });
    }
    Ok(out)
}

/// A memory-backed emptyDir's size, as upstream: the pod's memory limit when every container has one (else the
/// node's allocatable memory), or the volume's sizeLimit when smaller.
fn memory_volume_size(pod: &Pod, size_limit: Option<i64>, ctx: &PodContext) -> Option<i64> {
    let containers = pod.spec.as_ref().map(|s| s.containers.as_slice()).unwrap_or_default();
    let limits: Option<Vec<i64>> = containers
        .iter()
        .map(|c| c.resources.as_ref()?.limits.as_ref()?.get("memory").and_then(memory_bytes))
        .collect();
    let pod_limit = limits.filter(|l| !l.is_empty()).map(|l| l.iter().fold(0i64, |a, b| a.saturating_add(*b)));
    let ceiling = pod_limit.or(Some(ctx.node.memory_bytes).filter(|m| *m > 0));
    match (ceiling, size_limit) {
        (Some(c), Some(s)) => Some(c.min(s)),
        (c, s) => s.or(c),
    }
}

fn plan_one(pod: &Pod, v: &Volume, objects: &PodObjects, ctx: &PodContext) -> Result<Plan, VolumeError> {
    // The name becomes a directory under the pod's: a DNS label, as the API server checks, never a path (a
    // static pod's manifest or an older server may not have checked it).
    let label = |n: &str| {
        !n.is_empty() && n.len() <= 63 && n.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !n.starts_with('-') && !n.ends_with('-')
    };
    if !label(&v.name) {
        return Err(VolumeError::InvalidName(v.name.clone()));
    }
    if let Some(e) = &v.empty_dir {
        let memory = e.medium.as_deref() == Some("Memory");
        let size_limit = e.size_limit.as_ref().and_then(memory_bytes).filter(|s| *s > 0);
        let size_limit = if memory { memory_volume_size(pod, size_limit, ctx) } else { size_limit };
        return Ok(Plan::EmptyDir { memory, size_limit });
    }
    if let Some(h) = &v.host_path {
        return Ok(Plan::HostPath { path: PathBuf::from(&h.path), kind: h.type_.clone().unwrap_or_default() });
    }
    if let Some(c) = &v.persistent_volume_claim {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let claim = objects
            .claims
            .get(&c.claim_name)
            .and_then(Option::as_ref)
            .ok_or_else(|| VolumeError::NotFound(format!("persistentvolumeclaim \"{}\" not found", c.claim_name)))?;
        let pv_name = claim
            .spec
            .as_ref()
            .and_then(|s| s.volume_name.clone())
            .filter(|v| !v.is_empty())
            .ok_or_else(|| VolumeError::NotFound(format!("error processing PVC {ns}/{}: PVC is not bound", c.claim_name)))?;
        let pv = objects
            .volumes
            .get(&pv_name)
            .and_then(Option::as_ref)
            .ok_or_else(|| VolumeError::NotFound(format!("persistentvolume \"{pv_name}\" not found")))?;
        let spec = pv.spec.clone().unwrap_or_default();
        let read_only = c.read_only == Some(true);
        if let Some(h) = spec.host_path {
            return Ok(Plan::Persistent { path: PathBuf::from(h.path), kind: h.type_.unwrap_or_default(), read_only });
        }
        if let Some(l) = spec.local {
            return Ok(Plan::Persistent { path: PathBuf::from(l.path), kind: String::new(), read_only });
        }
        return Err(VolumeError::Unsupported(format!("persistentVolumeClaim (volume {pv_name} is neither hostPath nor local)")));
    }
    if let Some(c) = &v.config_map {
        let mode = c.default_mode.unwrap_or(DEFAULT_MODE);
        let files = config_map_files(objects, &c.name, c.items.as_ref(), mode, c.optional == Some(true))?;
        return Ok(Plan::Files { plugin: CONFIG_MAP, tmpfs: false, files });
    }
    if let Some(s) = &v.secret {
        let mode = s.default_mode.unwrap_or(DEFAULT_MODE);
        let name = s.secret_name.clone().unwrap_or_default();
        let files = secret_files(objects, &name, s.items.as_ref(), mode, s.optional == Some(true))?;
        return Ok(Plan::Files { plugin: SECRET, tmpfs: true, files });
    }
    if let Some(d) = &v.downward_api {
        let mode = d.default_mode.unwrap_or(DEFAULT_MODE);
        let files = downward_files(pod, d.items.as_deref().unwrap_or_default(), mode, ctx)?;
        return Ok(Plan::Files { plugin: DOWNWARD_API, tmpfs: false, files });
    }
    if let Some(p) = &v.projected {
        let mode = p.default_mode.unwrap_or(DEFAULT_MODE);
        let mut files = vec![];
        for src in p.sources.iter().flatten() {
            if let Some(c) = &src.config_map {
                files.extend(config_map_files(objects, &c.name, c.items.as_ref(), mode, c.optional == Some(true))?);
            }
            if let Some(s) = &src.secret {
                files.extend(secret_files(objects, &s.name, s.items.as_ref(), mode, s.optional == Some(true))?);
            }
            if let Some(d) = &src.downward_api {
                files.extend(downward_files(pod, d.items.as_deref().unwrap_or_default(), mode, ctx)?);
            }
            if let Some(t) = &src.service_account_token {
                let key = (t.audience.clone().unwrap_or_default(), t.expiration_seconds.unwrap_or(3600));
                match objects.tokens.get(&key) {
                    Some(Ok(token)) => files.push(Projection { path: t.path.clone(), data: token.token.clone().into_bytes(), mode: mode as u32 }),
                    Some(Err(e)) => return Err(VolumeError::NotFound(e.clone())),
                    None => return Err(VolumeError::NotFound("failed to fetch token: not requested yet".into())),
                }
            }
        }
        return Ok(Plan::Files { plugin: PROJECTED, tmpfs: true, files });
    }
    let json = serde_json::to_value(v).unwrap_or_default();
    let kind = json.as_object().and_then(|o| o.keys().find(|k| *k != "name").cloned()).unwrap_or_else(|| "(none)".into());
    Err(VolumeError::Unsupported(kind))
}

/// Every volume of `pod`, in spec order, with its plan or why it has none. With an fsGroup, projected files get
/// group read permission (as the kubelet's `SetVolumeOwnership` gives them).
pub fn plan(pod: &Pod, objects: &PodObjects, ctx: &PodContext) -> Vec<(String, Result<Plan, VolumeError>)> {
    let spec = pod.spec.as_ref();
    let fs_group = spec.and_then(|s| s.security_context.as_ref()).and_then(|s| s.fs_group).is_some();
    spec.and_then(|s| s.volumes.as_ref())
        .into_iter()
        .flatten()
        .map(|v| {
            let mut p = plan_one(pod, v, objects, ctx);
            if let (Ok(Plan::Files { files, .. }), true) = (&mut p, fs_group) {
                for f in files {
                    f.mode |= 0o440;
                }
            }
            (v.name.clone(), p)
        })
        .collect()
}

/// Where a volume is on the host, and whether containers always get it read-only (configMap, secret,
/// downwardAPI and projected volumes are, as upstream).
#[derive(Clone, Debug, PartialEq)]
pub struct Mounted {
    pub path: PathBuf,
    pub read_only: bool,
}

pub fn volume_dir(pod_dir: &Path, plugin: &str, name: &str) -> PathBuf {
    pod_dir.join("volumes").join(plugin).join(name)
}

/// Where a pod's volumes go: `disk` (emptyDir, configMap, downwardAPI: under the agent's root dir, as the kubelet's
/// /var/lib/kubelet/pods) and `memory` (secret and projected volumes: under the run dir). On a run dir that is a
/// tmpfs (/run) the memory volumes are plain directories there: never on disk, and no mount of their own that every
/// later mount namespace copy and mountinfo read must walk; elsewhere each gets a tmpfs, as the kubelet's.
#[derive(Clone, Debug)]
pub struct VolumeDirs {
    pub disk: PathBuf,
    pub memory: PathBuf,
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> VolumeError {
    let path = path.to_path_buf();
    move |source| VolumeError::Io { what, path, source }
}

/// Creates `dir` with `mode` if missing; true when it did.
fn ensure_dir(dir: &Path, mode: u32) -> Result<bool, VolumeError> {
    if dir.is_dir() {
        return Ok(false);
    }
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(io("chmod", dir))?;
    Ok(true)
}

fn ensure_tmpfs(m: &dyn Mounter, dir: &Path, options: &str) -> Result<(), VolumeError> {
    if !m.is_tmpfs_mounted(dir) {
        m.mount_tmpfs(dir, options).map_err(io("mounting a tmpfs on", dir))?;
    }
    Ok(())
}

/// Best effort, as the kubelet's `SetVolumeOwnership`: group `gid` on everything below `dir`, setgid on dirs.
fn set_group(dir: &Path, gid: u32) {
    let chown = |p: &Path| {
        if let Err(e) = std::os::unix::fs::lchown(p, None, Some(gid)) {
            tracing::debug!(path = %p.display(), error = %e, "fsGroup chown failed");
        }
    };
    chown(dir);
    if let Ok(m) = std::fs::metadata(dir) {
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(m.permissions().mode() | 0o2000));
    }
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            set_group(&p, gid);
            if let Ok(m) = std::fs::metadata(&p) {
                let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(m.permissions().mode() | 0o050));
            }
        } else {
            chown(&p);
        }
    }
}

/// Makes every planned volume exist under `dirs`; the first failure (as `MountVolume.SetUp failed ...`) stops
/// the pod's containers from starting. Idempotent: run again on every refresh to project updates.
pub fn setup(
    dirs: &VolumeDirs,
    plans: Vec<(String, Result<Plan, VolumeError>)>,
    fs_group: Option<u32>,
    m: &dyn Mounter,
) -> Result<BTreeMap<String, Mounted>, VolumeError> {
    let mut out = BTreeMap::new();
    for (name, plan) in plans {
        let wrap = |e: VolumeError| VolumeError::SetUp { volume: name.clone(), source: Box::new(e) };
        let mounted = match plan.map_err(wrap)? {
            Plan::EmptyDir { memory, size_limit } => {
                let dir = volume_dir(&dirs.disk, EMPTY_DIR, &name);
                let created = ensure_dir(&dir, 0o777).map_err(wrap)?;
                if memory {
                    let size = size_limit.map(|s| format!(",size={s}")).unwrap_or_default();
                    ensure_tmpfs(m, &dir, &format!("mode=0777{size}")).map_err(wrap)?;
                }
                // Ownership once, when the volume is made: later the directory belongs to the pod.
                if let (Some(g), true) = (fs_group, created) {
                    set_group(&dir, g);
                }
                Mounted { path: dir, read_only: false }
            }
            Plan::HostPath { path, kind } => {
                host_path::check(&path, &kind).map_err(|e| wrap(VolumeError::HostPath(e)))?;
                Mounted { path, read_only: false }
            }
            Plan::Persistent { path, kind, read_only } => {
                // local volumes must exist (upstream); hostPath ones follow their type (local-path: DirectoryOrCreate).
                let kind = if kind.is_empty() && !path.exists() { "Directory".to_string() } else { kind };
                host_path::check(&path, &kind).map_err(|e| wrap(VolumeError::HostPath(e)))?;
                Mounted { path, read_only }
            }
            Plan::Files { plugin, tmpfs, files } => {
                let dir = volume_dir(if tmpfs { &dirs.memory } else { &dirs.disk }, plugin, &name);
                ensure_dir(&dir, 0o755).map_err(wrap)?;
                if tmpfs && !m.on_tmpfs(&dir) {
                    ensure_tmpfs(m, &dir, "mode=0755").map_err(wrap)?;
                }
                let changed = atomic::write(&dir, &files).map_err(|e| wrap(e.into()))?;
                if changed {
                    tracing::info!(volume = %name, files = files.len(), "volume files projected");
                    if let Some(g) = fs_group {
                        set_group(&dir, g);
                    }
                }
                Mounted { path: dir, read_only: true }
            }
        };
        out.insert(name, mounted);
    }
    Ok(out)
}

/// Unmounts every mount below the `volumes` directories of `dirs` (deepest first); the caller then removes the
/// directories.
pub fn teardown(dirs: &VolumeDirs, m: &dyn Mounter) -> Result<(), VolumeError> {
    // A missing directory has no mounts below it: mountinfo (long on a busy node) is read only when needed.
    for d in [dirs.disk.join("volumes"), dirs.memory.join("volumes")].into_iter().filter(|d| d.exists()) {
        for mp in m.mounts_under(&d) {
            m.unmount(&mp).map_err(io("unmounting", &mp))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    use serde_json::json;

    fn pod(volumes: serde_json::Value) -> Pod {
        serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns", "labels": {"a": "1"}},
            "spec": {"containers": [{"name": "c", "resources": {"limits": {"cpu": "2"}}}], "volumes": volumes}}))
        .unwrap()
    }

    fn objects() -> PodObjects {
        let cm: ConfigMap = serde_json::from_value(json!({"data": {"k1": "v1", "k2": "v2"}, "binaryData": {"b": "eA=="}})).unwrap();
        let s: Secret = serde_json::from_value(json!({"data": {"pw": "cHc="}})).unwrap();
        let now = std::time::SystemTime::now();
        let token = crate::pods::objects::ProjectedToken { token: "jwt".into(), issued: now, expires: now + std::time::Duration::from_secs(3600) };
        PodObjects {
            config_maps: [("cm".to_string(), Some(cm))].into(),
            secrets: [("s".to_string(), Some(s))].into(),
            tokens: [(("".to_string(), 3600), Ok(token)), (("vault".to_string(), 600), Err("failed to fetch token: 403".to_string()))].into(),
            ..Default::default()
        }
    }

    fn files(p: &Result<Plan, VolumeError>) -> Vec<(String, String, u32)> {
        match p {
            Ok(Plan::Files { files, .. }) => {
                files.iter().map(|f| (f.path.clone(), String::from_utf8_lossy(&f.data).into_owned(), f.mode)).collect()
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn plans_for_every_kind() {
        let p = pod(json!([
            {"name": "e", "emptyDir": {}},
            {"name": "m", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
            {"name": "h", "hostPath": {"path": "/x", "type": "Directory"}},
            {"name": "c", "configMap": {"name": "cm"}},
            {"name": "ci", "configMap": {"name": "cm", "items": [{"key": "k1", "path": "d/one", "mode": 0o600}], "defaultMode": 0o640}},
            {"name": "s", "secret": {"secretName": "s", "defaultMode": 0o400}},
            {"name": "d", "downwardAPI": {"items": [{"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                                                     {"path": "cpu", "resourceFieldRef": {"containerName": "c", "resource": "limits.cpu"}}]}},
            {"name": "pr", "projected": {"sources": [{"configMap": {"name": "cm", "items": [{"key": "k2", "path": "k2"}]}},
                                                      {"secret": {"name": "s"}}, {"serviceAccountToken": {"path": "token"}}]}},
            {"name": "opt", "configMap": {"name": "gone", "optional": true}},
        ]));
        let plans = plan(&p, &objects(), &PodContext::default());
        assert_eq!(plans[0].1.as_ref().unwrap(), &Plan::EmptyDir { memory: false, size_limit: None });
        assert_eq!(plans[1].1.as_ref().unwrap(), &Plan::EmptyDir { memory: true, size_limit: Some(1 << 20) });
        assert_eq!(plans[2].1.as_ref().unwrap(), &Plan::HostPath { path: "/x".into(), kind: "Directory".into() });
        assert_eq!(files(&plans[3].1), [("b".into(), "x".into(), 0o644), ("k1".into(), "v1".into(), 0o644), ("k2".into(), "v2".into(), 0o644)]);
        assert_eq!(files(&plans[4].1), [("d/one".into(), "v1".into(), 0o600)]);
        assert_eq!(files(&plans[5].1), [("pw".into(), "pw".into(), 0o400)]);
        assert!(matches!(plans[5].1, Ok(Plan::Files { tmpfs: true, plugin: SECRET, .. })));
        assert_eq!(files(&plans[6].1), [("labels".into(), "a=\"1\"".into(), 0o644), ("cpu".into(), "2".into(), 0o644)]);
        assert_eq!(files(&plans[7].1), [("k2".into(), "v2".into(), 0o644), ("pw".into(), "pw".into(), 0o644), ("token".into(), "jwt".into(), 0o644)]);
        assert!(files(&plans[8].1).is_empty());
        // A token that could not be had holds the volume (and so the pod) back, saying why.
        let p = pod(json!([{"name": "v", "projected": {"sources": [{"serviceAccountToken": {"path": "t", "audience": "vault", "expirationSeconds": 600}}]}},
                           {"name": "w", "projected": {"sources": [{"serviceAccountToken": {"path": "t", "audience": "other"}}]}}]));
        let plans = plan(&p, &objects(), &PodContext::default());
        assert!(plans[0].1.as_ref().unwrap_err().to_string().contains("failed to fetch token: 403"));
        assert!(plans[1].1.is_err());
    }

    #[test]
    fn volume_names_are_labels_never_paths() {
        let p = pod(json!([{"name": "/etc", "emptyDir": {"medium": "Memory"}}, {"name": "../../x", "configMap": {"name": "cm"}},
                           {"name": "ok-1", "emptyDir": {}}]));
        let plans = plan(&p, &objects(), &PodContext::default());
        assert!(matches!(&plans[0].1, Err(VolumeError::InvalidName(n)) if n == "/etc"), "{:?}", plans[0].1);
        assert!(matches!(&plans[1].1, Err(VolumeError::InvalidName(_))), "{:?}", plans[1].1);
        assert!(plans[2].1.is_ok());
    }

    #[test]
    fn memory_volumes_are_sized_like_upstream() {
        let ctx = PodContext { node: crate::pods::downward::NodeAllocatable { memory_bytes: 1 << 30, ..Default::default() }, ..Default::default() };
        let size = |containers: serde_json::Value, limit: Option<&str>| {
            let p: Pod = serde_json::from_value(json!({"metadata": {"name": "p"}, "spec": {"containers": containers,
                "volumes": [{"name": "m", "emptyDir": {"medium": "Memory", "sizeLimit": limit}}]}}))
            .unwrap();
            match plan(&p, &PodObjects::default(), &ctx).remove(0).1 {
                Ok(Plan::EmptyDir { size_limit, .. }) => size_limit,
                other => panic!("{other:?}"),
            }
        };
        let lim = |m: &str| json!({"name": "c", "resources": {"limits": {"memory": m}}});
        assert_eq!(size(json!([{"name": "c"}]), None), Some(1 << 30));
        assert_eq!(size(json!([{"name": "c"}]), Some("1Mi")), Some(1 << 20));
        assert_eq!(size(json!([lim("64Mi"), lim("64Mi")]), None), Some(128 << 20));
        assert_eq!(size(json!([lim("64Mi")]), Some("1Gi")), Some(64 << 20));
        assert_eq!(size(json!([lim("64Mi"), {"name": "free"}]), None), Some(1 << 30));
    }

    #[test]
    fn plan_errors_use_upstreams_messages() {
        let p = pod(json!([
            {"name": "a", "configMap": {"name": "gone"}},
            {"name": "b", "configMap": {"name": "cm", "items": [{"key": "nope", "path": "x"}]}},
            {"name": "c", "secret": {"secretName": "s", "items": [{"key": "nope", "path": "x"}]}},
            {"name": "d", "secret": {"secretName": "gone"}},
            {"name": "e", "persistentVolumeClaim": {"claimName": "x"}},
            {"name": "f", "configMap": {"name": "cm", "items": [{"key": "nope", "path": "x"}], "optional": true}},
        ]));
        let plans = plan(&p, &objects(), &PodContext::default());
        let msg = |i: usize| plans[i].1.as_ref().unwrap_err().to_string();
        assert_eq!(msg(0), "configmap \"gone\" not found");
        assert_eq!(msg(1), "configmap references non-existent config key: nope");
        assert_eq!(msg(2), "secret references non-existent secret key: nope");
        assert_eq!(msg(3), "secret \"gone\" not found");
        assert_eq!(msg(4), "persistentvolumeclaim \"x\" not found");
        assert!(files(&plans[5].1).is_empty());
    }

    #[test]
    fn claims_mount_their_bound_volumes() {
        let claim = |name: &str, volume: Option<&str>| -> (String, Option<k8s_openapi::api::core::v1::PersistentVolumeClaim>) {
            (name.into(), Some(serde_json::from_value(json!({"metadata": {"name": name}, "spec": {"volumeName": volume}})).unwrap()))
        };
        let volume = |name: &str, source: serde_json::Value| -> (String, Option<k8s_openapi::api::core::v1::PersistentVolume>) {
            let mut v = json!({"metadata": {"name": name}, "spec": {}});
            json_patch::merge(&mut v["spec"], &source);
            (name.into(), Some(serde_json::from_value(v).unwrap()))
        };
        let objects = PodObjects {
            claims: [claim("data", Some("pv-1")), claim("logs", Some("pv-2")), claim("pending", None), claim("nfs", Some("pv-3"))].into(),
            volumes: [
                volume("pv-1", json!({"hostPath": {"path": "/srv/pvc-1", "type": "DirectoryOrCreate"}})),
                volume("pv-2", json!({"local": {"path": "/mnt/disk"}})),
                volume("pv-3", json!({"nfs": {"server": "x", "path": "/"}})),
            ]
            .into(),
            ..Default::default()
        };
        let mut p = pod(json!([
            {"name": "a", "persistentVolumeClaim": {"claimName": "data"}},
            {"name": "b", "persistentVolumeClaim": {"claimName": "logs", "readOnly": true}},
            {"name": "c", "persistentVolumeClaim": {"claimName": "pending"}},
            {"name": "d", "persistentVolumeClaim": {"claimName": "nfs"}},
        ]));
        p.metadata.namespace = Some("ns".into());
        let plans = plan(&p, &objects, &PodContext::default());
        assert_eq!(plans[0].1.as_ref().unwrap(), &Plan::Persistent { path: "/srv/pvc-1".into(), kind: "DirectoryOrCreate".into(), read_only: false });
        assert_eq!(plans[1].1.as_ref().unwrap(), &Plan::Persistent { path: "/mnt/disk".into(), kind: String::new(), read_only: true });
        assert_eq!(plans[2].1.as_ref().unwrap_err().to_string(), "error processing PVC ns/pending: PVC is not bound");
        assert!(plans[3].1.as_ref().unwrap_err().to_string().contains("neither hostPath nor local"));
        assert!(objects.waiting_for_claims());
    }

    #[test]
    fn fs_group_adds_group_read() {
        let mut p = pod(json!([{"name": "s", "secret": {"secretName": "s", "defaultMode": 0o400}}]));
        p.spec.as_mut().unwrap().security_context = Some(serde_json::from_value(json!({"fsGroup": 1234})).unwrap());
        assert_eq!(files(&plan(&p, &objects(), &PodContext::default())[0].1), [("pw".into(), "pw".into(), 0o440)]);
    }

    #[test]
    fn setup_and_teardown_with_a_fake_mounter() {
        let d = tempfile::tempdir().unwrap();
        let dirs = VolumeDirs { disk: d.path().join("disk"), memory: d.path().join("run") };
        let m = mounter::FakeMounter::default();
        let p = pod(json!([{"name": "m", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
                           {"name": "s", "secret": {"secretName": "s"}}, {"name": "c", "configMap": {"name": "cm"}}]));
        let out = setup(&dirs, plan(&p, &objects(), &PodContext::default()), None, &m).unwrap();
        let mdir = volume_dir(&dirs.disk, EMPTY_DIR, "m");
        assert_eq!(out["m"], Mounted { path: mdir.clone(), read_only: false });
        assert!(out["c"].read_only && out["c"].path.join("k1").is_file());
        assert!(out["c"].path.starts_with(&dirs.disk), "configMap volumes are on disk: {:?}", out["c"]);
        assert_eq!(std::fs::read_to_string(out["s"].path.join("pw")).unwrap(), "pw");
        assert_eq!(out["s"].path, volume_dir(&dirs.memory, SECRET, "s"), "secret volumes are under the run dir");
        // A second setup mounts nothing new.
        setup(&dirs, plan(&p, &objects(), &PodContext::default()), None, &m).unwrap();
        let calls = m.calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 2, "{calls:?}");
        assert_eq!(calls[0], format!("tmpfs {} mode=0777,size=1048576", mdir.display()));
        assert_eq!(calls[1], format!("tmpfs {} mode=0755", out["s"].path.display()), "the run dir is no tmpfs here");
        teardown(&dirs, &m).unwrap();
        assert!(m.mounted.lock().unwrap().is_empty());
        // On a run dir that is a tmpfs, secrets need no mount of their own.
        let m = mounter::FakeMounter::default();
        m.mounted.lock().unwrap().push(d.path().join("run"));
        let p = pod(json!([{"name": "s2", "secret": {"secretName": "s"}}]));
        let out = setup(&dirs, plan(&p, &objects(), &PodContext::default()), None, &m).unwrap();
        assert_eq!(std::fs::read_to_string(out["s2"].path.join("pw")).unwrap(), "pw");
        assert!(m.calls.lock().unwrap().is_empty(), "{:?}", m.calls.lock().unwrap());
        // A failing volume stops the setup with the kubelet's wording.
        let bad = pod(json!([{"name": "h", "hostPath": {"path": d.path().join("none"), "type": "Directory"}}]));
        let e = setup(&dirs, plan(&bad, &objects(), &PodContext::default()), None, &m).unwrap_err().to_string();
        assert!(e.starts_with("MountVolume.SetUp failed for volume \"h\" : hostPath type check failed: "), "{e}");
    }
}
