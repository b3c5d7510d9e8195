//! Checks on a bundle before libcontainer sees it, so bad input gets an error naming the problem.

use std::path::{Path, PathBuf};

use libcontainer::oci_spec::runtime::Spec;

use crate::error::{Error, Result};

/// A bundle that exists, with a parsable config.json and an existing rootfs.
#[derive(Debug)]
pub struct Bundle {
    /// Absolute path of the bundle directory.
    pub dir: PathBuf,
    pub spec: Spec,
}

/// Makes `path` absolute against the current directory. libcontainer changes the process's
/// current directory while it builds a container, so relative paths must be fixed first.
pub fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).map_err(|e| Error::io(format!("resolve path {}", path.display()), e))
}

impl Bundle {
    pub fn load(dir: &Path) -> Result<Bundle> {
        let dir = absolute(dir)?;
        if !dir.is_dir() {
            return Err(Error::BundleMissing(dir));
        }
        let config = dir.join("config.json");
        if !config.is_file() {
            return Err(Error::ConfigMissing(config));
        }
        let text = std::fs::read(&config)
            .map_err(|e| Error::io(format!("read {}", config.display()), e))?;
        let spec = crate::validate::parse(&text).map_err(|source| Error::BadConfig {
            path: config.clone(),
            source,
        })?;
        // validate::parse made sure there is a root.
        let root = spec
            .root()
            .as_ref()
            .map(|r| r.path().clone())
            .unwrap_or_default();
        let rootfs = dir.join(root);
        if !rootfs.is_dir() {
            return Err(Error::RootfsMissing(rootfs));
        }
        Ok(Bundle { dir, spec })
    }

    pub fn terminal(&self) -> bool {
        self.spec
            .process()
            .as_ref()
            .and_then(|p| p.terminal())
            .unwrap_or(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_bundle_is_named() {
        let err = Bundle::load(Path::new("/nonexistent/bundle")).unwrap_err();
        assert!(matches!(err, Error::BundleMissing(_)), "{err}");
    }

    #[test]
    fn missing_config_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = Bundle::load(dir.path()).unwrap_err();
        assert!(matches!(err, Error::ConfigMissing(_)), "{err}");
    }

    #[test]
    fn invalid_config_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("config.json"), "{not json").unwrap();
        let err = Bundle::load(dir.path()).unwrap_err();
        assert!(matches!(err, Error::BadConfig { .. }), "{err}");
    }

    #[test]
    fn missing_rootfs_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = Spec::default();
        let mut process = spec.process().clone().unwrap();
        process.set_args(Some(vec!["sh".into()]));
        spec.set_process(Some(process));
        spec.save(dir.path().join("config.json")).unwrap();
        let err = Bundle::load(dir.path()).unwrap_err();
        assert!(matches!(err, Error::RootfsMissing(_)), "{err}");
    }
}
