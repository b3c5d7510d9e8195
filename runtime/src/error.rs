//! The runtime's error type: one variant per step that can fail, sources chained.

use std::path::PathBuf;

use libcontainer::error::LibcontainerError;

/// Everything a command can fail with. The binary prints the whole chain (see [`report`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("container {0:?} does not exist")]
    NotFound(String),
    #[error("container {0:?} already exists")]
    Exists(String),
    #[error("invalid container id {id:?}")]
    InvalidId {
        id: String,
        #[source]
        source: Box<LibcontainerError>,
    },
    #[error("bundle {0}: not a directory")]
    BundleMissing(PathBuf),
    #[error("{0}: no such file (a bundle needs a config.json)")]
    ConfigMissing(PathBuf),
    #[error("invalid runtime config {path}")]
    InvalidConfig {
        path: PathBuf,
        #[source]
        source: Box<libcontainer::oci_spec::OciSpecError>,
    },
    #[error("invalid runtime config {path}")]
    BadConfig {
        path: PathBuf,
        #[source]
        source: crate::validate::ConfigError,
    },
    #[error("root.path: rootfs {0} does not exist")]
    RootfsMissing(PathBuf),
    #[error("invalid signal {0:?}")]
    InvalidSignal(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    #[error("not supported: {0}")]
    Unsupported(String),
    #[error("cannot {op} container {id:?}: it is {status}")]
    IncorrectState {
        op: &'static str,
        id: String,
        status: String,
    },
    #[error("failed to {op} container {id:?}")]
    Container {
        op: &'static str,
        id: String,
        #[source]
        source: Box<LibcontainerError>,
    },
    #[error("cgroups of container {id:?}: failed to {op}")]
    Cgroup {
        op: &'static str,
        id: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("failed to {what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to {what}")]
    Sys {
        what: String,
        #[source]
        source: nix::Error,
    },
    #[error("failed to encode JSON")]
    Json(#[source] serde_json::Error),
    #[error("{}; cleanup also failed: {}", report(first.as_ref()), report(cleanup.as_ref()))]
    WithCleanup {
        first: Box<Error>,
        cleanup: Box<Error>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Maps a libcontainer error from operation `op`, turning a wrong-state refusal into
    /// [`Error::IncorrectState`] so the message says what state the container is in.
    pub fn container(op: &'static str, id: &str, source: LibcontainerError) -> Self {
        match source {
            LibcontainerError::IncorrectStatus(status) => Error::IncorrectState {
                op,
                id: id.to_owned(),
                status: status.to_string().to_lowercase(),
            },
            source => Error::Container {
                op,
                id: id.to_owned(),
                source: Box::new(source),
            },
        }
    }

    pub fn io(what: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// Attaches the error of a cleanup step to the error that made the cleanup necessary.
    pub fn with_cleanup(self, cleanup: Option<Error>) -> Self {
        match cleanup {
            None => self,
            Some(cleanup) => Error::WithCleanup {
                first: Box::new(self),
                cleanup: Box::new(cleanup),
            },
        }
    }
}

/// The error and all its sources on one line, `outer: inner: innermost`, as runc prints them.
pub fn report(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        // libcontainer wraps some errors transparently; do not repeat a message verbatim.
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_chains_sources() {
        let err = Error::io(
            "read /x",
            std::io::Error::new(std::io::ErrorKind::NotFound, "gone"),
        );
        assert_eq!(report(&err), "failed to read /x: gone");
    }

    #[test]
    fn incorrect_status_names_the_state() {
        let err = Error::container(
            "start",
            "c1",
            LibcontainerError::IncorrectStatus(libcontainer::container::ContainerStatus::Running),
        );
        assert_eq!(
            err.to_string(),
            "cannot start container \"c1\": it is running"
        );
    }

    #[test]
    fn cleanup_error_is_reported_beside_the_first() {
        let err = Error::NotFound("a".into()).with_cleanup(Some(Error::InvalidSignal("X".into())));
        assert_eq!(
            report(&err),
            "container \"a\" does not exist; cleanup also failed: invalid signal \"X\""
        );
    }
}
