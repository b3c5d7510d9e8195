//! What the monitors leave in `<run-dir>/pods/<uid>/<container>/<restart>/`: `started.json` once the container
//! runs, `exit.json` once it ended (or could not start). The agent's view of its containers is rebuilt from these
//! files, which is what lets it restart without losing track of running containers or exit codes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Started {
    pub monitor_pid: i32,
    pub pid: i32,
    pub started_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Exited {
    pub exit_code: i32,
    pub finished_at: DateTime<Utc>,
    /// `Completed`, `Error`, `OOMKilled`, `CreateContainerError`, `RunContainerError`.
    pub reason: String,
    #[serde(default)]
    pub message: String,
}

/// One attempt (restart number) of one container.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub restart: u32,
    pub dir: PathBuf,
    pub started: Option<Started>,
    pub exited: Option<Exited>,
}

pub const STARTED: &str = "started.json";
pub const EXIT: &str = "exit.json";

pub fn attempt_dir(pod_state_dir: &Path, name: &str, restart: u32) -> PathBuf {
    pod_state_dir.join(name).join(restart.to_string())
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}

/// Writes `value` as JSON atomically (temp file + rename).
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(value).map_err(std::io::Error::other)?)?;
    std::fs::rename(tmp, path)
}

/// Every container's attempts, oldest first.
pub fn scan(pod_state_dir: &Path) -> BTreeMap<String, Vec<Attempt>> {
    let mut out = BTreeMap::new();
    let Ok(containers) = std::fs::read_dir(pod_state_dir) else { return out };
    for c in containers.flatten() {
        let Some(name) = c.file_name().to_str().map(str::to_string) else { continue };
        let Ok(attempts) = std::fs::read_dir(c.path()) else { continue };
        let mut list: Vec<Attempt> = attempts
            .flatten()
            .filter_map(|a| {
                let restart = a.file_name().to_str()?.parse().ok()?;
                let dir = a.path();
                Some(Attempt { restart, started: read_json(&dir.join(STARTED)), exited: read_json(&dir.join(EXIT)), dir })
            })
            .collect();
        list.sort_by_key(|a| a.restart);
        out.insert(name, list);
    }
    out
}
