//! The crate's error: one variant per module error, plus the store's own failures.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Reference(#[from] crate::reference::ReferenceError),
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
    #[error(transparent)]
    Manifest(#[from] crate::manifest::ManifestError),
    #[error(transparent)]
    Blob(#[from] crate::blobs::BlobError),
    #[error("unpacking layer {layer}: {source}")]
    Unpack { layer: String, source: crate::unpack::UnpackError },
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthError),
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: std::io::Error },
    #[error("image {0} is not in the store")]
    NotFound(String),
    #[error("image store index {path} is corrupt: {detail}")]
    Index { path: PathBuf, detail: String },
    #[error("OCI layout archive: {0}")]
    Layout(String),
    #[error("mounting the rootfs at {target}: {detail}")]
    Mount { target: PathBuf, detail: String },
    #[error("background task failed: {0}")]
    Task(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(what: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { what, path, source }
}
