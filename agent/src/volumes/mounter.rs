//! The mount syscalls volumes need (tmpfs for `medium: Memory` emptyDirs, secrets and projected volumes), behind a
//! trait with the real implementation and a recording fake for tests.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub trait Mounter: Send + Sync {
    /// Mounts a tmpfs on `target` with `options` (e.g. `mode=0755,size=1048576`).
    fn mount_tmpfs(&self, target: &Path, options: &str) -> std::io::Result<()>;
    /// Detaches the mount on `target`.
    fn unmount(&self, target: &Path) -> std::io::Result<()>;
    /// Mount points at or below `dir`, deepest first.
    fn mounts_under(&self, dir: &Path) -> Vec<PathBuf>;
    /// Whether a tmpfs this mounter made is mounted on `dir`.
    fn is_tmpfs_mounted(&self, dir: &Path) -> bool {
        self.mounts_under(dir).iter().any(|p| p == dir)
    }
    /// Whether what is written in `dir` stays in memory: `dir` is on a tmpfs (its own or a parent's).
    fn on_tmpfs(&self, dir: &Path) -> bool {
        dir.ancestors().any(|a| self.is_tmpfs_mounted(a))
    }
}

pub struct SysMounter;

impl Mounter for SysMounter {
    fn mount_tmpfs(&self, target: &Path, options: &str) -> std::io::Result<()> {
        use nix::mount::{mount, MsFlags};
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        mount(Some("tmpfs"), target, Some("tmpfs"), flags, Some(options)).map_err(std::io::Error::from)
    }

    fn unmount(&self, target: &Path) -> std::io::Result<()> {
        use nix::mount::{umount2, MntFlags};
        umount2(target, MntFlags::MNT_DETACH).map_err(std::io::Error::from)
    }

    /// Without reading mountinfo (which costs ~0.5 ms of kernel time per read once a node holds a few hundred
    /// mounts, and this is asked at every volume setup): a tmpfs is a file system of its own, so a directory with a
    /// tmpfs on it is tmpfs and on another device than its parent.
    fn is_tmpfs_mounted(&self, dir: &Path) -> bool {
        use std::os::unix::fs::MetadataExt;
        let tmpfs = nix::sys::statfs::statfs(dir).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
        let own_device = match (std::fs::metadata(dir), dir.parent().map(std::fs::metadata)) {
            (Ok(d), Some(Ok(p))) => d.dev() != p.dev(),
            _ => false,
        };
        tmpfs && own_device
    }

    fn on_tmpfs(&self, dir: &Path) -> bool {
        nix::sys::statfs::statfs(dir).is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
    }

    fn mounts_under(&self, dir: &Path) -> Vec<PathBuf> {
        let infos = procfs::process::Process::myself().and_then(|p| p.mountinfo());
        let mut out: Vec<PathBuf> = infos
            .map(|m| m.0.into_iter().map(|i| i.mount_point).filter(|m| m.starts_with(dir)).collect())
            .unwrap_or_default();
        out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        out.dedup();
        out
    }
}

/// Records calls and keeps the set of mounts in memory.
#[derive(Default)]
pub struct FakeMounter {
    pub calls: Mutex<Vec<String>>,
    pub mounted: Mutex<Vec<PathBuf>>,
}

impl Mounter for FakeMounter {
    fn mount_tmpfs(&self, target: &Path, options: &str) -> std::io::Result<()> {
        self.calls.lock().map_err(|_| std::io::Error::other("poisoned"))?.push(format!("tmpfs {} {options}", target.display()));
        self.mounted.lock().map_err(|_| std::io::Error::other("poisoned"))?.push(target.to_path_buf());
        Ok(())
    }
    fn unmount(&self, target: &Path) -> std::io::Result<()> {
        self.calls.lock().map_err(|_| std::io::Error::other("poisoned"))?.push(format!("umount {}", target.display()));
        self.mounted.lock().map_err(|_| std::io::Error::other("poisoned"))?.retain(|m| m != target);
        Ok(())
    }
    fn mounts_under(&self, dir: &Path) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.mounted.lock().map(|m| m.iter().filter(|m| m.starts_with(dir)).cloned().collect()).unwrap_or_default();
        out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        out
    }
}
