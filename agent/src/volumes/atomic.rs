//! The kubelet's atomic writer (`pkg/volume/util/atomic_writer.go`), for configMap, secret, downwardAPI and
//! projected volumes: the files live in a timestamped directory `..<time>.<random>`, `..data` is a symlink to it,
//! and every top-level name is a symlink through `..data`. An update writes a new timestamped directory and
//! renames a new `..data` symlink over the old one, so a reader sees either the old set of files or the new one.
//! Hand-written: no crate implements this layout, and containers (and tools written for Kubernetes) rely on it.

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// One file to project: a relative path, its bytes and its mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Projection {
    pub path: String,
    pub data: Vec<u8>,
    pub mode: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum AtomicError {
    #[error("invalid path {0:?}: must be relative, without '..' and not start with '..'")]
    BadPath(String),
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
}

const DATA: &str = "..data";
const DATA_TMP: &str = "..data_tmp";

/// Upstream's `validatePath`: relative, no `..` element, not starting with `..`, not empty.
pub fn validate_path(p: &str) -> Result<(), AtomicError> {
    let bad = || AtomicError::BadPath(p.to_string());
    if p.is_empty() || p.starts_with("..") || Path::new(p).is_absolute() {
        return Err(bad());
    }
    if Path::new(p).components().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(bad());
    }
    Ok(())
}

fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AtomicError {
    let path = path.to_path_buf();
    move |source| AtomicError::Io { what, path, source }
}

/// True when `dir` holds exactly `payload` (same files, bytes and modes).
fn same_as(dir: &Path, payload: &[Projection]) -> bool {
    fn count_files(d: &Path) -> usize {
        std::fs::read_dir(d)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| if e.path().is_dir() { count_files(&e.path()) } else { 1 })
            .sum()
    }
    if count_files(dir) != payload.len() {
        return false;
    }
    payload.iter().all(|p| {
        let f = dir.join(&p.path);
        let mode_ok = std::fs::metadata(&f).is_ok_and(|m| m.permissions().mode() & 0o7777 == p.mode & 0o7777);
        mode_ok && std::fs::read(&f).is_ok_and(|d| d == p.data)
    })
}

fn top_level(payload: &[Projection]) -> BTreeSet<String> {
    payload.iter().filter_map(|p| p.path.split('/').next().map(str::to_string)).collect()
}

/// Makes `dir` hold `payload`; returns whether anything changed. `dir` must exist.
pub fn write(dir: &Path, payload: &[Projection]) -> Result<bool, AtomicError> {
    for p in payload {
        validate_path(&p.path)?;
    }
    let data_link = dir.join(DATA);
    let old_ts = std::fs::read_link(&data_link).ok();
    if let Some(old) = &old_ts {
        if same_as(&dir.join(old), payload) {
            return Ok(false);
        }
    }
    let stamp = chrono::Utc::now().format("..%Y_%m_%d_%H_%M_%S.").to_string();
    let ts = tempfile::Builder::new().prefix(&stamp).tempdir_in(dir).map_err(io("creating a data dir in", dir))?.keep();
    std::fs::set_permissions(&ts, std::fs::Permissions::from_mode(0o755)).map_err(io("chmod", &ts))?;
    for p in payload {
        let f = ts.join(&p.path);
        if let Some(parent) = f.parent() {
            std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).map_err(io("chmod", parent))?;
        }
        std::fs::write(&f, &p.data).map_err(io("writing", &f))?;
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(p.mode & 0o777)).map_err(io("chmod", &f))?;
    }
    let ts_name = ts.file_name().map(PathBuf::from).unwrap_or_default();
    let tmp_link = dir.join(DATA_TMP);
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&ts_name, &tmp_link).map_err(io("creating symlink", &tmp_link))?;
    std::fs::rename(&tmp_link, &data_link).map_err(io("renaming to", &data_link))?;
    let wanted = top_level(payload);
    for name in &wanted {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new(DATA).join(name), &link).map_err(io("creating symlink", &link))?;
        }
    }
    // User-visible names that the new payload no longer has.
    for e in std::fs::read_dir(dir).map_err(io("listing", dir))?.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("..") && !wanted.contains(&name) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    if let Some(old) = old_ts {
        let old = dir.join(old);
        if old != ts {
            let _ = std::fs::remove_dir_all(&old);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(path: &str, data: &str, mode: u32) -> Projection {
        Projection { path: path.into(), data: data.as_bytes().to_vec(), mode }
    }

    #[test]
    fn paths_are_validated() {
        for ok in ["a", "a/b", "a..b", ".a"] {
            assert!(validate_path(ok).is_ok(), "{ok}");
        }
        for bad in ["", "/a", "../a", "a/../b", "..a", "./a"] {
            assert!(validate_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn writes_swaps_and_cleans_up() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path();
        assert!(write(dir, &[p("a", "1", 0o644), p("sub/b", "2", 0o600)]).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "1");
        assert_eq!(std::fs::read_to_string(dir.join("sub/b")).unwrap(), "2");
        assert_eq!(std::fs::read_link(dir.join("a")).unwrap(), Path::new("..data/a"));
        let mode = std::fs::metadata(dir.join("sub/b")).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let first = std::fs::read_link(dir.join(DATA)).unwrap();
        // Same payload: nothing changes.
        assert!(!write(dir, &[p("a", "1", 0o644), p("sub/b", "2", 0o600)]).unwrap());
        assert_eq!(std::fs::read_link(dir.join(DATA)).unwrap(), first);
        // An update: new data dir, the old one and the dropped name are gone.
        assert!(write(dir, &[p("a", "changed", 0o644)]).unwrap());
        assert_eq!(std::fs::read_to_string(dir.join("a")).unwrap(), "changed");
        assert!(!dir.join(&first).exists());
        assert!(std::fs::symlink_metadata(dir.join("sub")).is_err());
        let names: Vec<String> = std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names.len(), 3, "{names:?}"); // a, ..data, the data dir
        assert!(write(dir, &[p("../x", "", 0o644)]).is_err());
    }
}
