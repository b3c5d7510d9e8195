//! Per-container root filesystems: overlayfs with the image's snapshots as lowerdirs and `upper/`, `work/` under
//! the container's layer directory (by default its own directory, beside the mount point). A lease file keeps gc
//! off the snapshots in use.

use crate::digest::Digest;
use crate::error::{io_err, Error, Result};
use crate::store::Store;
use sha2::Digest as _;
use std::fs;
use std::path::{Path, PathBuf};

/// Mount syscalls, behind a trait so that planners can be tested with a recording fake.
pub trait Mounter: Send + Sync {
    fn mount_overlay(&self, target: &Path, options: &str) -> std::io::Result<()>;
    fn unmount(&self, target: &Path) -> std::io::Result<()>;
}

/// The real thing: mount(2) and umount2(2).
pub struct SysMounter;

impl Mounter for SysMounter {
    fn mount_overlay(&self, target: &Path, options: &str) -> std::io::Result<()> {
        use nix::mount::{mount, MsFlags};
        mount(Some("overlay"), target, Some("overlay"), MsFlags::empty(), Some(options)).map_err(Into::into)
    }

    fn unmount(&self, target: &Path) -> std::io::Result<()> {
        match nix::mount::umount2(target, nix::mount::MntFlags::empty()) {
            Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(()), // not mounted
            Err(e) => Err(e.into()),
        }
    }
}

/// The overlayfs option string: `lowerdir=top:...:bottom,upperdir=..,workdir=..`.
/// The kernel takes at most one page of options.
pub fn overlay_options(lowers_bottom_first: &[PathBuf], upper: &Path, work: &Path) -> std::result::Result<String, String> {
    if lowers_bottom_first.is_empty() {
        return Err("image has no layers".into());
    }
    for p in lowers_bottom_first.iter().map(|p| p.as_path()).chain([upper, work]) {
        let s = p.to_string_lossy();
        if s.contains([':', ',', '\\']) || !p.is_absolute() {
            return Err(format!("path {s:?} cannot be used in overlay options"));
        }
    }
    let lower: Vec<String> = lowers_bottom_first.iter().rev().map(|p| p.display().to_string()).collect();
    let opts = format!("lowerdir={},upperdir={},workdir={}", lower.join(":"), upper.display(), work.display());
    if opts.len() >= 4096 {
        return Err(format!("overlay options are {} bytes, over the kernel's 4095 (too many layers)", opts.len()));
    }
    Ok(opts)
}

/// A container's overlay layers, prepared but not mounted: what a runtime mounts at `/` inside the container's own
/// mount namespace (an OCI `mounts` entry `{"destination": "/", "type": "overlay", "options": [..]}` ahead of the
/// others), so that the host's mount table holds no line per container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OverlayLayers {
    /// Top layer first, as overlayfs takes them.
    pub lowers: Vec<PathBuf>,
    pub upper: PathBuf,
    pub work: PathBuf,
}

impl OverlayLayers {
    /// The options as separate `key=value` strings: `lowerdir=top:..:bottom`, `upperdir=..`, `workdir=..` (an OCI
    /// runtime hands each to the kernel as its own fsconfig(2) parameter; a joined string would be read as one path).
    pub fn mount_options(&self) -> Vec<String> {
        let lower: Vec<String> = self.lowers.iter().map(|p| p.display().to_string()).collect();
        vec![format!("lowerdir={}", lower.join(":")), format!("upperdir={}", self.upper.display()), format!("workdir={}", self.work.display())]
    }
}

fn overlay_options_of(layers: &OverlayLayers) -> std::result::Result<String, String> {
    let bottom_first: Vec<PathBuf> = layers.lowers.iter().rev().cloned().collect();
    overlay_options(&bottom_first, &layers.upper, &layers.work)
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Lease {
    pub container_dir: PathBuf,
    pub image: String,
    pub chain_ids: Vec<Digest>,
}

impl Lease {
    pub fn read(path: &Path) -> Result<Lease> {
        let data = fs::read(path).map_err(io_err("reading lease", path))?;
        serde_json::from_slice(&data).map_err(|e| Error::Index { path: path.into(), detail: e.to_string() })
    }
}

fn lease_path(store: &Store, container_dir: &Path) -> PathBuf {
    let id = hex::encode(sha2::Sha256::digest(container_dir.as_os_str().as_encoded_bytes()));
    store.root().join("leases").join(format!("{id}.json"))
}

impl Store {
    /// Mounts `image`'s root filesystem at `<container_dir>/rootfs`, with `upper/` and `work/` beside it.
    pub fn mount_rootfs(&self, image: &str, container_dir: &Path) -> Result<PathBuf> {
        let rootfs = container_dir.join("rootfs");
        self.mount_rootfs_at(image, container_dir, &rootfs)?;
        std::path::absolute(&rootfs).map_err(io_err("resolving", &rootfs))
    }

    /// Unmounts `<container_dir>/rootfs` and removes `rootfs/`, `upper/`, `work/` and the lease.
    pub fn unmount_rootfs(&self, container_dir: &Path) -> Result<()> {
        self.unmount_rootfs_at(container_dir, &container_dir.join("rootfs"))
    }

    /// Mounts `image`'s root filesystem at `rootfs` with the writable layer in `<layer_dir>/upper` and
    /// `<layer_dir>/work`. The two may live on different file systems, as containerd's bundles on /run and
    /// snapshots on /var/lib do: the mount point and the container's config on a tmpfs, its writable layer on disk.
    /// The lease is keyed by `layer_dir`.
    pub fn mount_rootfs_at(&self, image: &str, layer_dir: &Path, rootfs: &Path) -> Result<()> {
        let rootfs = std::path::absolute(rootfs).map_err(io_err("resolving", rootfs))?;
        fs::create_dir_all(&rootfs).map_err(io_err("creating", &rootfs))?;
        let (layers, lease_file) = self.prepare_layers(image, layer_dir, &rootfs)?;
        let opts = overlay_options_of(&layers).map_err(|detail| Error::Mount { target: rootfs.clone(), detail })?;
        if let Err(e) = self.inner.mounter.mount_overlay(&rootfs, &opts) {
            let _ = fs::remove_file(&lease_file);
            return Err(Error::Mount { target: rootfs, detail: e.to_string() });
        }
        tracing::info!(image, rootfs = %rootfs.display(), layers = layers.lowers.len(), "rootfs mounted");
        Ok(())
    }

    /// Prepares `image`'s root filesystem for a mount made elsewhere (by the runtime, inside the container's mount
    /// namespace): `<layer_dir>/upper` and `<layer_dir>/work` are made and the lease is taken, as by
    /// [`Store::mount_rootfs_at`], but nothing is mounted. [`Store::unmount_rootfs_at`] undoes it.
    pub fn prepare_rootfs(&self, image: &str, layer_dir: &Path) -> Result<OverlayLayers> {
        let layer_dir = std::path::absolute(layer_dir).map_err(io_err("resolving", layer_dir))?;
        let (layers, lease_file) = self.prepare_layers(image, &layer_dir, &layer_dir)?;
        if let Err(detail) = overlay_options_of(&layers) {
            let _ = fs::remove_file(&lease_file);
            return Err(Error::Mount { target: layer_dir, detail });
        }
        Ok(layers)
    }

    /// The layer directories and the lease; `target` only names the mount in errors.
    fn prepare_layers(&self, image: &str, layer_dir: &Path, target: &Path) -> Result<(OverlayLayers, PathBuf)> {
        let record = self.get(image)?;
        let layer_dir = std::path::absolute(layer_dir).map_err(io_err("resolving", layer_dir))?;
        let (upper, work) = (layer_dir.join("upper"), layer_dir.join("work"));
        for d in [&upper, &work] {
            fs::create_dir_all(d).map_err(io_err("creating", d))?;
        }
        let lowers: Vec<PathBuf> = record.chain_ids.iter().rev().map(|c| self.snapshot_fs(c)).collect();
        if let Some(missing) = lowers.iter().find(|l| !l.is_dir()) {
            return Err(Error::Mount { target: target.into(), detail: format!("snapshot {} is missing: pull the image again", missing.display()) });
        }
        // The lease goes first: gc must not remove a snapshot between here and the mount.
        let lease = Lease { container_dir: layer_dir.clone(), image: record.name.clone(), chain_ids: record.chain_ids.clone() };
        let lease_file = lease_path(self, &layer_dir);
        fs::write(&lease_file, serde_json::to_vec(&lease).expect("lease serializes")).map_err(io_err("writing lease", &lease_file))?;
        Ok((OverlayLayers { lowers, upper, work }, lease_file))
    }

    /// A regular file of `image`'s root filesystem (`path` relative to its root, such as `etc/passwd`), read from
    /// its snapshots as overlayfs would show it: the topmost layer that has it wins; a whiteout, an opaque or
    /// non-directory parent in a higher layer hides it. Symlinks are not followed (the file must be a regular file
    /// in the layer that shows it). `None` when the image has no such regular file.
    pub fn read_image_file(&self, image: &str, path: &Path) -> Result<Option<Vec<u8>>> {
        let record = self.get(image)?;
        let parts: Vec<&std::ffi::OsStr> = path.iter().filter(|c| *c != "/").collect();
        if parts.is_empty() || parts.iter().any(|c| *c == "." || *c == "..") {
            return Ok(None);
        }
        for chain_id in record.chain_ids.iter().rev() {
            let fs_dir = self.snapshot_fs(chain_id);
            // Walk the parents: a missing one lets lower layers show through; anything but a directory hides
            // them; an opaque directory hides them below it once this layer has been looked at.
            let mut dir = fs_dir.clone();
            let mut opaque = false;
            for part in &parts[..parts.len() - 1] {
                dir.push(part);
                match fs::symlink_metadata(&dir) {
                    Ok(m) if m.is_dir() => opaque |= xattr::get(&dir, crate::unpack::OPAQUE_XATTR).ok().flatten().is_some_and(|v| v == b"y"),
                    Ok(_) => return Ok(None),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) => return Err(Error::Io { what: "reading", path: dir, source: e }),
                }
            }
            let file = fs_dir.join(parts.iter().collect::<PathBuf>());
            match fs::symlink_metadata(&file) {
                Ok(m) if m.is_file() => return fs::read(&file).map(Some).map_err(io_err("reading", &file)),
                // A whiteout, a directory, a symlink, a device: this layer shows something that is not the file.
                Ok(_) => return Ok(None),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound || e.raw_os_error() == Some(nix::libc::ENOTDIR) => {}
                Err(e) => return Err(Error::Io { what: "reading", path: file, source: e }),
            }
            if opaque {
                return Ok(None);
            }
        }
        Ok(None)
    }

    /// Unmounts `rootfs` and removes it, `<layer_dir>/upper`, `<layer_dir>/work` and the lease (`layer_dir` itself
    /// is the caller's). Missing pieces are fine: this undoes a half-done [`Store::mount_rootfs_at`] too.
    pub fn unmount_rootfs_at(&self, layer_dir: &Path, rootfs: &Path) -> Result<()> {
        let layer_dir = std::path::absolute(layer_dir).map_err(io_err("resolving", layer_dir))?;
        let rootfs = std::path::absolute(rootfs).map_err(io_err("resolving", rootfs))?;
        if rootfs.exists() {
            self.inner.mounter.unmount(&rootfs).map_err(|e| Error::Mount { target: rootfs.clone(), detail: format!("unmount: {e}") })?;
        }
        for p in [rootfs, layer_dir.join("upper"), layer_dir.join("work")] {
            match fs::remove_dir_all(&p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::Io { what: "removing", path: p, source: e }),
                _ => {}
            }
        }
        let lease_file = lease_path(self, &layer_dir);
        match fs::remove_file(&lease_file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::Io { what: "removing", path: lease_file, source: e }),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_put_the_top_layer_first() {
        let lowers = vec![PathBuf::from("/s/a/fs"), PathBuf::from("/s/b/fs")];
        assert_eq!(
            overlay_options(&lowers, Path::new("/c/upper"), Path::new("/c/work")).unwrap(),
            "lowerdir=/s/b/fs:/s/a/fs,upperdir=/c/upper,workdir=/c/work"
        );
        assert!(overlay_options(&[], Path::new("/u"), Path::new("/w")).is_err());
        assert!(overlay_options(&[PathBuf::from("/a:b")], Path::new("/u"), Path::new("/w")).is_err());
        let many: Vec<PathBuf> = (0..100).map(|i| PathBuf::from(format!("/var/lib/skiff/images/snapshots/{:064}/fs", i))).collect();
        assert!(overlay_options(&many, Path::new("/u"), Path::new("/w")).unwrap_err().contains("too many layers"));
    }
}
