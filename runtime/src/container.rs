//! Finding containers in the state directory (`--root`), and their state as the OCI spec prints it.

use std::path::{Path, PathBuf};

use libcontainer::container::{Container, ContainerStatus};
use libcontainer::oci_spec::runtime::Spec;
use serde::Serialize;

use crate::error::{Error, Result};

/// Rejects ids that are not a single path component, before they are joined to the root.
pub fn check_id(id: &str) -> Result<()> {
    if id.is_empty() || id == "." || id == ".." || id.contains('/') || id.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "invalid container id {id:?}"
        )));
    }
    Ok(())
}

pub fn dir(root: &Path, id: &str) -> PathBuf {
    root.join(id)
}

/// Loads container `id` from the state directory, with its status refreshed from /proc.
pub fn load(root: &Path, id: &str) -> Result<Container> {
    check_id(id)?;
    let dir = dir(root, id);
    if !dir.join("state.json").is_file() {
        return Err(Error::NotFound(id.to_owned()));
    }
    Container::load(dir).map_err(|source| Error::container("load", id, source))
}

/// Every container in the state directory, sorted by id. Entries that cannot be loaded (a
/// create in progress, a damaged state file) are skipped with a warning, as runc does.
pub fn load_all(root: &Path) -> Result<Vec<Container>> {
    let entries = match std::fs::read_dir(root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("read {}", root.display()), e)),
    };
    let mut containers = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(format!("read {}", root.display()), e))?;
        let id = entry.file_name().to_string_lossy().into_owned();
        match load(root, &id) {
            Ok(c) => containers.push(c),
            Err(err) => tracing::warn!(%id, err = %crate::error::report(&err), "skipping"),
        }
    }
    containers.sort_by(|a, b| a.id().cmp(b.id()));
    Ok(containers)
}

/// The state as `runc state` prints it: the OCI state plus rootfs, created and owner.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OciState {
    pub oci_version: String,
    pub id: String,
    pub pid: i32,
    pub status: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    pub created: serde_json::Value,
    pub owner: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<std::collections::HashMap<String, String>>,
}

pub fn status_name(status: ContainerStatus) -> String {
    status.to_string().to_lowercase()
}

impl OciState {
    pub fn of(container: &Container) -> OciState {
        let status = container.status();
        let pid = match status {
            ContainerStatus::Stopped => 0,
            _ => container.pid().map(|p| p.as_raw()).unwrap_or(0),
        };
        // The rootfs is not in libcontainer's state; read it from the bundle when it is still there.
        let rootfs = Spec::load(container.bundle().join("config.json"))
            .ok()
            .and_then(|spec| {
                spec.root()
                    .as_ref()
                    .map(|r| container.bundle().join(r.path()))
            })
            .unwrap_or_default();
        OciState {
            oci_version: libcontainer::oci_spec::runtime::VERSION.to_owned(),
            id: container.id().to_owned(),
            pid,
            status: status_name(status),
            bundle: container.bundle().clone(),
            rootfs,
            created: serde_json::to_value(container.created()).unwrap_or_default(),
            owner: container
                .creator()
                .map(|o| o.to_string_lossy().into_owned())
                .unwrap_or_default(),
            annotations: container.state.annotations.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_one_path_component() {
        for bad in ["", ".", "..", "a/b", "../x"] {
            assert!(check_id(bad).is_err(), "{bad:?}");
        }
        assert!(check_id("pod-1_c.2").is_ok());
    }

    #[test]
    fn unknown_container_is_not_found() {
        let root = tempfile::tempdir().unwrap();
        let err = load(root.path(), "nope").unwrap_err();
        assert_eq!(err.to_string(), "container \"nope\" does not exist");
    }

    #[test]
    fn missing_root_lists_nothing() {
        assert!(load_all(Path::new("/nonexistent/root")).unwrap().is_empty());
    }
}
