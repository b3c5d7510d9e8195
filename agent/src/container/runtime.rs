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
    ///
    /// Only the first [`MAX_COMMAND_OUTPUT`] bytes of each of stdout and stderr are kept (the kubelet's probe limit):
    /// a probe that prints without end must not grow the agent's memory.
    pub async fn run_output(&self, args: &[&str]) -> Result<(), String> {
        let mut child = tokio::process::Command::new(&self.bin)
            .arg("--root")
            .arg(&self.root)
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("running {}: {e}", self.bin.display()))?;
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        let (stdout, stderr, status) = tokio::join!(read_capped(stdout), read_capped(stderr), child.wait());
        let status = status.map_err(|e| format!("running {}: {e}", self.bin.display()))?;
        if status.success() {
            return Ok(());
        }
        let text = format!("{}{}", String::from_utf8_lossy(&stdout), String::from_utf8_lossy(&stderr));
        let text = text.trim();
        match status.code() {
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

/// How much of an exec probe's or hook's stdout (and of its stderr) is kept: the kubelet's 10 KiB.
pub const MAX_COMMAND_OUTPUT: usize = 10 * 1024;

/// Reads `r` to its end, keeping the first [`MAX_COMMAND_OUTPUT`] bytes (the rest is read and dropped, so the
/// writer never blocks on a full pipe).
async fn read_capped(r: Option<impl tokio::io::AsyncRead + Unpin>) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut kept = Vec::new();
    let Some(mut r) = r else { return kept };
    let mut buf = [0u8; 8192];
    while let Ok(n) = r.read(&mut buf).await {
        if n == 0 {
            break;
        }
        let room = MAX_COMMAND_OUTPUT.saturating_sub(kept.len());
        kept.extend_from_slice(&buf[..n.min(room)]);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn command_output_is_capped() {
        let long = vec![b'x'; 100_000];
        assert_eq!(read_capped(Some(&long[..])).await.len(), MAX_COMMAND_OUTPUT);
        assert_eq!(read_capped(Some(&b"short"[..])).await, b"short");
        assert!(read_capped(None::<&[u8]>).await.is_empty());
    }
}
