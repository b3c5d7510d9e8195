//! Network namespaces bind-mounted at `<run-dir>/netns/<pod-uid>`, created and entered from dedicated threads.
//!
//! Written by hand with nix (not `ip netns`): a short-lived thread unshares its network namespace and bind-mounts
//! `/proc/thread-self/ns/net` onto the file; only that thread ever changes namespace, the agent's other threads
//! stay where they are.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("creating {path}: {source}")]
    CreateFile { path: PathBuf, source: std::io::Error },
    #[error("unsharing the network namespace: {0}")]
    Unshare(nix::Error),
    #[error("bind-mounting the new namespace on {path}: {source}")]
    Mount { path: PathBuf, source: nix::Error },
    #[error("unmounting {path}: {source}")]
    Unmount { path: PathBuf, source: nix::Error },
    #[error("removing {path}: {source}")]
    Remove { path: PathBuf, source: std::io::Error },
    #[error("opening {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("entering {path}: {source}")]
    Enter { path: PathBuf, source: nix::Error },
    #[error("the namespace thread panicked")]
    Thread,
}

/// True when `path` is a mounted network namespace (a bind mount of nsfs), not just a leftover file. Asked of the
/// file itself (statfs: nsfs), not of mountinfo, whose read costs ~0.5 ms of kernel time on a node with a few
/// hundred mounts and is done for every pod.
pub fn is_mounted(path: &Path) -> bool {
    const NSFS_MAGIC: nix::sys::statfs::FsType = nix::sys::statfs::FsType(0x6e73_6673);
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC)
}

/// Creates a network namespace pinned at `path` (idempotent: an existing mount is kept).
pub fn create(path: &Path) -> Result<(), NetnsError> {
    if is_mounted(path) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| NetnsError::CreateFile { path: dir.into(), source })?;
    }
    File::create(path).map_err(|source| NetnsError::CreateFile { path: path.into(), source })?;
    let target = path.to_path_buf();
    let result = std::thread::spawn(move || -> Result<(), NetnsError> {
        // This thread alone moves into the new namespace and ends right after.
        unshare(CloneFlags::CLONE_NEWNET).map_err(NetnsError::Unshare)?;
        mount(Some("/proc/thread-self/ns/net"), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|source| NetnsError::Mount { path: target.clone(), source })
    })
    .join()
    .map_err(|_| NetnsError::Thread)?;
    if result.is_err() {
        let _ = std::fs::remove_file(path);
    }
    result
}

/// Unmounts and removes the namespace file; a missing one is fine.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    if is_mounted(path) {
        umount2(path, MntFlags::MNT_DETACH).map_err(|source| NetnsError::Unmount { path: path.into(), source })?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(NetnsError::Remove { path: path.into(), source: e }),
        _ => Ok(()),
    }
}

/// Runs `f` on a fresh thread that has entered the namespace at `path`.
pub fn run_in<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetnsError> {
    let file = File::open(path).map_err(|source| NetnsError::Open { path: path.into(), source })?;
    let p = path.to_path_buf();
    std::thread::spawn(move || -> Result<T, NetnsError> {
        setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| NetnsError::Enter { path: p, source })?;
        Ok(f())
    })
    .join()
    .map_err(|_| NetnsError::Thread)?
}
