//! The `skiff-runtime` binary, run as a short-lived child process per operation.

use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("running {bin} {args}: {source}")]
    Spawn { bin: PathBuf, args: String, source: std::io::Error },
    #[error("skiff-runtime {args} failed: {stderr}")]
    Failed { args: String, stderr: String },
}

#[derive(Clone, Debug)]
pub struct Runtime {
    pub bin: PathBuf,
    pub root: PathBuf,
}

impl Runtime {
    pub async fn run(&self, args: &[&str]) -> Result<String, RuntimeError> {
        let joined = args.join(" ");
        let out = tokio::process::Command::new(&self.bin)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|source| RuntimeError::Spawn { bin: self.bin.clone(), args: joined.clone(), source })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(RuntimeError::Failed { args: joined, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() })
        }
    }

    /// Runs a command whose failure is a message, not an error (exec probes and hooks): success on exit 0, else the
    /// command's output (or the runtime's error). The runtime is killed if the caller gives up (timeout).
    pub async fn run_output(&self, args: &[&str]) -> Result<(), String> {
        let out = tokio::process::Command::new(&self.bin)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
            .map_err(|e| format!("running {}: {e}", self.bin.display()))?;
        if out.status.success() {
            return Ok(());
        }
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        let text = text.trim();
        match out.status.code() {
            Some(code) if text.is_empty() => Err(format!("command exited with code {code}")),
            _ if text.is_empty() => Err("command was killed".into()),
            _ => Err(text.to_string()),
        }
    }

    /// Sends `signal` to every process of the container; a container that is gone is not an error.
    pub async fn kill(&self, id: &str, signal: &str) -> Result<(), RuntimeError> {
        if !self.exists(id) {
            return Ok(());
        }
        match self.run(&["kill", "--all", id, signal]).await {
            Err(RuntimeError::Failed { stderr, .. }) if !self.exists(id) || stderr.contains("not running") || stderr.contains("stopped") => Ok(()),
            r => r.map(|_| ()),
        }
    }

    /// Removes the container (forcefully); a missing one is fine.
    pub async fn delete(&self, id: &str) -> Result<(), RuntimeError> {
        if !self.exists(id) {
            return Ok(());
        }
        self.run(&["delete", "--force", id]).await.map(|_| ())
    }

    pub fn exists(&self, id: &str) -> bool {
        Path::new(&self.root).join(id).exists()
    }
}
