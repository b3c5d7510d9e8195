//! A container's `volumeMounts` as bind mounts for its config.json: the volume's host path (joined with
//! `subPath`/`subPathExpr`), read-only when the mount or the volume kind says so.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::Container;

use super::Mounted;
use crate::pods::env::{expand, Resolved};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error("cannot find volume \"{volume}\" to mount into container \"{container}\"")]
    NoVolume { volume: String, container: String },
    #[error("error SubPath `{0}` must not be an absolute path")]
    Absolute(String),
    #[error("error SubPath `{0}` must not contain '..'")]
    Backsteps(String),
    #[error("subPath {sub_path:?} of volume \"{volume}\": {message}")]
    SubPath { volume: String, sub_path: String, message: String },
}

/// One bind mount of a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BindMount {
    pub destination: String,
    pub source: PathBuf,
    pub read_only: bool,
}

/// A subPath must stay inside its volume: relative, no `..`.
pub fn check_sub_path(sub: &str) -> Result<(), MountError> {
    if Path::new(sub).is_absolute() {
        return Err(MountError::Absolute(sub.into()));
    }
    if Path::new(sub).components().any(|c| c == Component::ParentDir) {
        return Err(MountError::Backsteps(sub.into()));
    }
    Ok(())
}

/// With a sub path, the bind comes with its volume's name and host path, for [`resolve_sub_paths`].
pub type Planned = (BindMount, Option<(String, PathBuf)>);

/// The bind mounts of `c` (pure: sub paths are joined, not yet created; see [`resolve_sub_paths`]).
pub fn plan(c: &Container, volumes: &BTreeMap<String, Mounted>, env: &Resolved) -> Result<Vec<Planned>, MountError> {
    let mut out = vec![];
    for vm in c.volume_mounts.iter().flatten() {
        let v = volumes
            .get(&vm.name)
            .ok_or_else(|| MountError::NoVolume { volume: vm.name.clone(), container: c.name.clone() })?;
        let sub = match (&vm.sub_path, &vm.sub_path_expr) {
            (Some(s), _) if !s.is_empty() => Some(s.clone()),
            (_, Some(e)) if !e.is_empty() => Some(expand(e, |n| env.get(n))),
            _ => None,
        };
        let mut source = v.path.clone();
        let mut base = None;
        if let Some(sub) = &sub {
            check_sub_path(sub)?;
            source = v.path.join(sub);
            base = Some((vm.name.clone(), v.path.clone()));
        }
        let read_only = vm.read_only == Some(true) || v.read_only;
        out.push((BindMount { destination: vm.mount_path.clone(), source, read_only }, base));
    }
    Ok(out)
}

/// Creates missing sub path directories (as the kubelet does) and refuses a sub path that resolves, through
/// symlinks, outside its volume.
pub fn resolve_sub_paths(planned: Vec<Planned>) -> Result<Vec<BindMount>, MountError> {
    let mut out = vec![];
    for (mut b, base) in planned {
        if let Some((volume, base)) = base {
            let err = |message: String| MountError::SubPath {
                volume: volume.clone(),
                sub_path: b.source.strip_prefix(&base).unwrap_or(&b.source).display().to_string(),
                message,
            };
            let sub = b.source.strip_prefix(&base).map(Path::to_path_buf).unwrap_or_default();
            b.source = resolve_inside(&base, &sub).map_err(err)?;
        }
        out.push(b);
    }
    Ok(out)
}

/// `sub` (relative, without `..`: checked before) under `base`, resolved one component at a time: an existing
/// component may be a symlink only if it resolves inside the volume, and a missing one is created as a plain
/// directory in its already checked parent, so nothing is ever created outside the volume (the kubelet's
/// doSafeMakeDir). What remains is the window between this check and the runtime's bind mount, in which the pod
/// could swap a checked directory for a symlink; the kubelet closes it by mounting through a file descriptor.
fn resolve_inside(base: &Path, sub: &Path) -> Result<PathBuf, String> {
    let real_base = base.canonicalize().map_err(|e| e.to_string())?;
    let mut cur = real_base.clone();
    for part in sub.components() {
        let next = cur.join(part);
        match std::fs::symlink_metadata(&next) {
            Ok(_) => {
                let real = next.canonicalize().map_err(|e| e.to_string())?;
                if !real.starts_with(&real_base) {
                    return Err("it resolves outside the volume".into());
                }
                cur = real;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&next).map_err(|e| format!("creating it: {e}"))?;
                cur = next;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn container(mounts: serde_json::Value) -> Container {
        serde_json::from_value(json!({"name": "c", "volumeMounts": mounts})).unwrap()
    }

    fn volumes() -> BTreeMap<String, Mounted> {
        [
            ("data".to_string(), Mounted { path: "/v/data".into(), read_only: false }),
            ("cfg".to_string(), Mounted { path: "/v/cfg".into(), read_only: true }),
        ]
        .into()
    }

    #[test]
    fn mounts_and_sub_paths() {
        let env = Resolved { vars: vec![("POD".into(), "p1".into())], skipped: vec![] };
        let c = container(json!([
            {"name": "data", "mountPath": "/data"},
            {"name": "data", "mountPath": "/ro", "readOnly": true},
            {"name": "cfg", "mountPath": "/etc/app"},
            {"name": "data", "mountPath": "/sub", "subPath": "a/b"},
            {"name": "data", "mountPath": "/expr", "subPathExpr": "logs/$(POD)"},
        ]));
        let p = plan(&c, &volumes(), &env).unwrap();
        let b: Vec<(&str, &str, bool)> =
            p.iter().map(|(b, _)| (b.destination.as_str(), b.source.to_str().unwrap(), b.read_only)).collect();
        assert_eq!(b, [("/data", "/v/data", false), ("/ro", "/v/data", true), ("/etc/app", "/v/cfg", true),
                       ("/sub", "/v/data/a/b", false), ("/expr", "/v/data/logs/p1", false)]);
        assert_eq!(p[3].1, Some(("data".to_string(), PathBuf::from("/v/data"))));
    }

    #[test]
    fn bad_mounts_are_refused() {
        let env = Resolved::default();
        let e = |m: serde_json::Value| plan(&container(m), &volumes(), &env).unwrap_err().to_string();
        assert_eq!(e(json!([{"name": "nope", "mountPath": "/x"}])), "cannot find volume \"nope\" to mount into container \"c\"");
        assert_eq!(e(json!([{"name": "data", "mountPath": "/x", "subPath": "../etc"}])), "error SubPath `../etc` must not contain '..'");
        assert_eq!(e(json!([{"name": "data", "mountPath": "/x", "subPath": "/etc"}])), "error SubPath `/etc` must not be an absolute path");
    }

    #[test]
    fn sub_paths_are_created_and_must_stay_inside() {
        let d = tempfile::tempdir().unwrap();
        let vol = d.path().join("vol");
        std::fs::create_dir_all(&vol).unwrap();
        std::os::unix::fs::symlink("/etc", vol.join("escape")).unwrap();
        let mk = |sub: &str| (BindMount { destination: "/x".into(), source: vol.join(sub), read_only: false }, Some(("v".to_string(), vol.clone())));
        let ok = resolve_sub_paths(vec![mk("new/dir")]).unwrap();
        assert!(vol.join("new/dir").is_dir());
        assert_eq!(ok[0].source, vol.join("new/dir").canonicalize().unwrap());
        let e = resolve_sub_paths(vec![mk("escape")]).unwrap_err().to_string();
        assert!(e.contains("resolves outside the volume"), "{e}");
        // Through a symlink out of the volume, nothing is created on the other side.
        let outside = d.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, vol.join("out")).unwrap();
        let e = resolve_sub_paths(vec![mk("out/newdir/deeper")]).unwrap_err().to_string();
        assert!(e.contains("resolves outside the volume"), "{e}");
        assert!(!outside.join("newdir").exists(), "a directory was made outside the volume");
        // A symlink that stays inside the volume is followed.
        std::os::unix::fs::symlink("new", vol.join("alias")).unwrap();
        let ok = resolve_sub_paths(vec![mk("alias/dir")]).unwrap();
        assert_eq!(ok[0].source, vol.join("new/dir").canonicalize().unwrap());
    }
}
