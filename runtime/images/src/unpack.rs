//! Applying one layer tar to a snapshot directory, overlay style.
//!
//! Each snapshot holds only its layer's changes; snapshots stack as overlayfs lowerdirs. So a whiteout
//! `dir/.wh.name` becomes an overlay whiteout (a 0/0 character device `dir/name`) and an opaque marker
//! `dir/.wh..wh..opq` becomes the `trusted.overlay.opaque=y` xattr on `dir`.
//!
//! [`plan_entry`] decides what an entry means and rejects the ones that would escape the root
//! (pure, unit tested); [`apply_layer`] does the file system work. Writing never follows a symlink:
//! every parent component is checked to be a real directory.

use crate::digest::Digest;
use nix::sys::stat::{Mode, SFlag};
use sha2::{Digest as _, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

pub const WHITEOUT_PREFIX: &str = ".wh.";
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";
pub const OPAQUE_XATTR: &str = "trusted.overlay.opaque";

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {path:?} escapes the root: {why}")]
    Escape { path: String, why: &'static str },
    #[error("layer entry {path:?} would write through the symlink {symlink:?}")]
    ThroughSymlink { path: String, symlink: PathBuf },
    #[error("layer entry {path:?}: parent {parent:?} exists and is not a directory")]
    NotADirectory { path: String, parent: PathBuf },
    #[error("layer entry {path:?}: hard link target {target:?} does not exist in this layer or below")]
    MissingLinkTarget { path: String, target: PathBuf },
    #[error("layer entry {path:?}: malformed whiteout")]
    BadWhiteout { path: String },
    #[error("layer entry {path:?}: {what}: {source}")]
    Io { path: String, what: &'static str, source: io::Error },
    #[error("layer is truncated or not a valid tar stream: {0}")]
    Tar(io::Error),
    #[error("layer content hashes to {actual}, but the image config says its diff ID is {expected}")]
    DiffId { expected: Digest, actual: Digest },
    #[error("unknown layer media type {0:?}")]
    MediaType(String),
}

/// How a layer blob is compressed, from its media type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    pub fn from_media_type(media_type: &str) -> Result<Self, UnpackError> {
        const LAYERS: &[(&str, Compression)] = &[
            ("application/vnd.oci.image.layer.v1.tar", Compression::None),
            ("application/vnd.oci.image.layer.v1.tar+gzip", Compression::Gzip),
            ("application/vnd.oci.image.layer.v1.tar+zstd", Compression::Zstd),
            ("application/vnd.oci.image.layer.nondistributable.v1.tar", Compression::None),
            ("application/vnd.oci.image.layer.nondistributable.v1.tar+gzip", Compression::Gzip),
            ("application/vnd.oci.image.layer.nondistributable.v1.tar+zstd", Compression::Zstd),
            ("application/vnd.docker.image.rootfs.diff.tar", Compression::None),
            ("application/vnd.docker.image.rootfs.diff.tar.gzip", Compression::Gzip),
            ("application/vnd.docker.image.rootfs.diff.tar.zstd", Compression::Zstd),
            ("application/vnd.docker.image.rootfs.foreign.diff.tar.gzip", Compression::Gzip),
        ];
        LAYERS
            .iter()
            .find(|(m, _)| *m == media_type)
            .map(|(_, c)| *c)
            .ok_or_else(|| UnpackError::MediaType(media_type.to_string()))
    }

    pub fn decoder<'a>(self, reader: impl Read + 'a) -> Result<Box<dyn Read + 'a>, UnpackError> {
        Ok(match self {
            Compression::None => Box::new(reader),
            Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(reader)),
            Compression::Zstd => Box::new(zstd::stream::read::Decoder::new(reader).map_err(UnpackError::Tar)?),
        })
    }
}

/// What one tar entry asks for, with its path cleaned to be relative to the layer root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing to do (the root itself, AUFS metadata).
    Skip,
    /// Hide `path` of the layers below.
    Whiteout(PathBuf),
    /// Hide everything below `dir` in the layers below.
    Opaque(PathBuf),
    /// Create a file, directory, symlink, device or fifo at `path`.
    Write(PathBuf),
    /// Hard link `path` to `target` (both relative to the root).
    HardLink { path: PathBuf, target: PathBuf },
}

/// The kind of a tar entry, as far as planning cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Regular,
    Directory,
    Symlink,
    HardLink,
    Other,
}

/// Cleans an entry path: leading `/` and `.` components are dropped (absolute paths are resolved
/// inside the root), `..` components are rejected.
pub fn clean_path(raw: &Path) -> Result<PathBuf, UnpackError> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                return Err(UnpackError::Escape { path: raw.display().to_string(), why: "`..` component" })
            }
            Component::Prefix(_) => {
                return Err(UnpackError::Escape { path: raw.display().to_string(), why: "path prefix" })
            }
        }
    }
    Ok(out)
}

/// Decides what an entry means; rejects entries whose path or link target leads outside the root.
pub fn plan_entry(raw: &Path, kind: Kind, link: Option<&Path>) -> Result<Action, UnpackError> {
    let path = clean_path(raw)?;
    let shown = || raw.display().to_string();
    let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
        return Ok(Action::Skip); // the root directory itself, or a non-UTF-8 name handled below
    };
    let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();
    if name == OPAQUE_MARKER {
        return Ok(Action::Opaque(parent));
    }
    if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
        if hidden.starts_with(WHITEOUT_PREFIX) {
            return Ok(Action::Skip); // other AUFS metadata (.wh..wh.plnk, .wh..wh.aufs)
        }
        if hidden.is_empty() || hidden == "." || hidden == ".." || kind == Kind::Directory {
            return Err(UnpackError::BadWhiteout { path: shown() });
        }
        return Ok(Action::Whiteout(parent.join(hidden)));
    }
    match kind {
        Kind::HardLink => {
            let target = link.ok_or(UnpackError::MissingLinkTarget { path: shown(), target: PathBuf::new() })?;
            let target = clean_path(target).map_err(|_| UnpackError::Escape {
                path: shown(),
                why: "hard link target leads outside the root",
            })?;
            if target.as_os_str().is_empty() {
                return Err(UnpackError::Escape { path: shown(), why: "hard link to the root" });
            }
            Ok(Action::HardLink { path, target })
        }
        Kind::Symlink => {
            let target = link.unwrap_or(Path::new(""));
            if target.as_os_str().is_empty() {
                return Err(UnpackError::Escape { path: shown(), why: "empty symlink target" });
            }
            // Absolute targets resolve inside the container's root at run time. A relative target
            // must not climb above the root from where the link sits.
            if !target.is_absolute() {
                let mut depth = parent.components().count() as isize;
                for c in target.components() {
                    match c {
                        Component::ParentDir => depth -= 1,
                        Component::Normal(_) => depth += 1,
                        _ => {}
                    }
                    if depth < 0 {
                        return Err(UnpackError::Escape { path: shown(), why: "symlink target leads outside the root" });
                    }
                }
            }
            Ok(Action::Write(path))
        }
        _ => Ok(Action::Write(path)),
    }
}

/// Counts and hashes bytes as they are read (the uncompressed layer = its diff ID).
struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Options for applying a layer.
#[derive(Clone, Debug)]
pub struct ApplyOptions {
    /// chown entries to their uid/gid (needs root); off for rootless use.
    pub ownership: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        ApplyOptions { ownership: nix::unistd::geteuid().is_root() }
    }
}

/// Unpacks the (compressed) layer `blob` into `dest`, an empty directory, with `lowers` (top-most first)
/// the snapshots below it. Returns the diff ID (sha256 of the uncompressed tar).
pub fn apply_layer(
    blob: impl Read,
    compression: Compression,
    dest: &Path,
    lowers: &[PathBuf],
    opts: &ApplyOptions,
) -> Result<Digest, UnpackError> {
    let reader = HashingReader { inner: compression.decoder(io::BufReader::with_capacity(256 * 1024, blob))?, hasher: Sha256::new() };
    let mut archive = tar::Archive::new(reader);
    let mut dirs: Vec<(PathBuf, i64)> = Vec::new();
    for entry in archive.entries().map_err(UnpackError::Tar)? {
        let mut entry = entry.map_err(UnpackError::Tar)?;
        apply_entry(&mut entry, dest, lowers, opts, &mut dirs)?;
    }
    let mut reader = archive.into_inner();
    // The tar reader stops at the end-of-archive blocks; the diff ID covers every byte.
    io::copy(&mut reader, &mut io::sink()).map_err(UnpackError::Tar)?;
    // Directory times last: creating children changed them.
    for (dir, mtime) in dirs.iter().rev() {
        set_mtime(dir, *mtime).map_err(|source| UnpackError::Io { path: dir.display().to_string(), what: "setting mtime", source })?;
    }
    Ok(Digest::from_hasher(reader.hasher))
}

fn apply_entry<R: Read>(
    entry: &mut tar::Entry<R>,
    dest: &Path,
    lowers: &[PathBuf],
    opts: &ApplyOptions,
    dirs: &mut Vec<(PathBuf, i64)>,
) -> Result<(), UnpackError> {
    let header = entry.header();
    let et = header.entry_type();
    let kind = match et {
        tar::EntryType::Regular | tar::EntryType::Continuous | tar::EntryType::GNUSparse => Kind::Regular,
        tar::EntryType::Directory => Kind::Directory,
        tar::EntryType::Symlink => Kind::Symlink,
        tar::EntryType::Link => Kind::HardLink,
        tar::EntryType::XGlobalHeader | tar::EntryType::XHeader | tar::EntryType::GNULongName | tar::EntryType::GNULongLink => {
            return Ok(());
        }
        _ => Kind::Other,
    };
    let raw = entry.path().map_err(UnpackError::Tar)?.into_owned();
    let link = entry.link_name().map_err(UnpackError::Tar)?.map(|l| l.into_owned());
    let shown = raw.display().to_string();
    let io_err = |what: &'static str| {
        let shown = shown.clone();
        move |source| UnpackError::Io { path: shown, what, source }
    };
    let action = plan_entry(&raw, kind, link.as_deref())?;
    match action {
        Action::Skip => Ok(()),
        Action::Whiteout(rel) => {
            let full = prepare_path(dest, &rel, lowers, &shown)?;
            remove_existing(&full).map_err(io_err("removing before whiteout"))?;
            nix::sys::stat::mknod(&full, SFlag::S_IFCHR, Mode::from_bits_truncate(0o000), 0)
                .map_err(|e| UnpackError::Io { path: shown.clone(), what: "creating overlay whiteout", source: e.into() })
        }
        Action::Opaque(rel) => {
            let full = if rel.as_os_str().is_empty() {
                dest.to_path_buf()
            } else {
                let full = prepare_path(dest, &rel, lowers, &shown)?;
                if !is_real_dir(&full) {
                    remove_existing(&full).map_err(io_err("replacing with directory"))?;
                    create_implicit_dir(&full, &rel, lowers).map_err(io_err("creating directory"))?;
                }
                full
            };
            xattr::set(&full, OPAQUE_XATTR, b"y").map_err(io_err("setting trusted.overlay.opaque"))
        }
        Action::HardLink { path, target } => {
            let full = prepare_path(dest, &path, lowers, &shown)?;
            let target_full = resolve_link_target(dest, &target, lowers, opts, &shown)?;
            remove_existing(&full).map_err(io_err("replacing"))?;
            fs::hard_link(&target_full, &full).map_err(io_err("creating hard link"))
        }
        Action::Write(rel) => {
            let full = prepare_path(dest, &rel, lowers, &shown)?;
            let header = entry.header().clone();
            let mode = header.mode().map_err(UnpackError::Tar)? & 0o7777;
            let (uid, gid) = (header.uid().map_err(UnpackError::Tar)?, header.gid().map_err(UnpackError::Tar)?);
            let mtime = header.mtime().map_err(UnpackError::Tar)? as i64;
            let is_dir = kind == Kind::Directory;
            if !(is_dir && is_real_dir(&full)) {
                remove_existing(&full).map_err(io_err("replacing"))?;
            }
            match kind {
                Kind::Directory => {
                    if !is_real_dir(&full) {
                        fs::create_dir(&full).map_err(io_err("creating directory"))?;
                    }
                }
                Kind::Symlink => {
                    let target = link.as_deref().unwrap_or(Path::new(""));
                    std::os::unix::fs::symlink(target, &full).map_err(io_err("creating symlink"))?;
                }
                Kind::Regular | Kind::HardLink => {
                    let mut file = OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .custom_flags(nix::libc::O_NOFOLLOW)
                        .mode(0o600)
                        .open(&full)
                        .map_err(io_err("creating file"))?;
                    io::copy(entry, &mut file).map_err(UnpackError::Tar)?;
                }
                Kind::Other => {
                    let sflag = match et {
                        tar::EntryType::Char => SFlag::S_IFCHR,
                        tar::EntryType::Block => SFlag::S_IFBLK,
                        tar::EntryType::Fifo => SFlag::S_IFIFO,
                        other => {
                            return Err(UnpackError::Io {
                                path: shown,
                                what: "unsupported tar entry type",
                                source: io::Error::other(format!("{other:?}")),
                            })
                        }
                    };
                    let dev = nix::sys::stat::makedev(
                        header.device_major().ok().flatten().unwrap_or(0) as u64,
                        header.device_minor().ok().flatten().unwrap_or(0) as u64,
                    );
                    nix::sys::stat::mknod(&full, sflag, Mode::from_bits_truncate(0o600), dev)
                        .map_err(|e| UnpackError::Io { path: shown.clone(), what: "creating device node", source: e.into() })?;
                }
            }
            // Ownership before mode, so that chown does not clear setuid bits.
            if opts.ownership {
                std::os::unix::fs::lchown(&full, Some(uid as u32), Some(gid as u32)).map_err(io_err("chown"))?;
            }
            if kind != Kind::Symlink {
                fs::set_permissions(&full, fs::Permissions::from_mode(mode)).map_err(io_err("chmod"))?;
            }
            if let Some(exts) = entry.pax_extensions().map_err(UnpackError::Tar)? {
                for ext in exts {
                    let ext = ext.map_err(UnpackError::Tar)?;
                    if let Some(name) = ext.key().ok().and_then(|k| k.strip_prefix("SCHILY.xattr.")) {
                        if let Err(e) = xattr::set(&full, name, ext.value_bytes()) {
                            // user.* xattrs are not allowed on symlinks; trusted.* need root.
                            if kind != Kind::Symlink {
                                return Err(UnpackError::Io { path: shown, what: "setting xattr", source: e });
                            }
                        }
                    }
                }
            }
            if is_dir {
                dirs.push((full, mtime));
            } else {
                set_mtime(&full, mtime).map_err(io_err("setting mtime"))?;
            }
            Ok(())
        }
    }
}

fn is_real_dir(p: &Path) -> bool {
    fs::symlink_metadata(p).map(|m| m.is_dir()).unwrap_or(false)
}

fn remove_existing(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn set_mtime(p: &Path, mtime: i64) -> io::Result<()> {
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use nix::sys::time::TimeSpec;
    let t = TimeSpec::new(mtime, 0);
    utimensat(None, p, &t, &t, UtimensatFlags::NoFollowSymlink).map_err(io::Error::from)
}

/// Makes sure every parent of `rel` under `dest` is a real directory (creating missing ones with the
/// metadata of the same directory in the layers below), and returns `dest/rel`.
fn prepare_path(dest: &Path, rel: &Path, lowers: &[PathBuf], shown: &str) -> Result<PathBuf, UnpackError> {
    let mut cur = dest.to_path_buf();
    let mut cur_rel = PathBuf::new();
    let parents: Vec<_> = rel.parent().map(|p| p.components().collect()).unwrap_or_default();
    for c in parents {
        cur.push(c);
        cur_rel.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.file_type().is_symlink() => {
                return Err(UnpackError::ThroughSymlink { path: shown.to_string(), symlink: cur_rel });
            }
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(UnpackError::NotADirectory { path: shown.to_string(), parent: cur_rel }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // In the merged view this parent may be a symlink from a layer below; an upper
                // directory would silently shadow it, so refuse rather than change the image.
                let below = lowers.iter().find_map(|l| fs::symlink_metadata(l.join(&cur_rel)).ok());
                if below.is_some_and(|m| m.file_type().is_symlink()) {
                    return Err(UnpackError::ThroughSymlink { path: shown.to_string(), symlink: cur_rel });
                }
                create_implicit_dir(&cur, &cur_rel, lowers)
                    .map_err(|source| UnpackError::Io { path: shown.to_string(), what: "creating parent directory", source })?;
            }
            Err(source) => return Err(UnpackError::Io { path: shown.to_string(), what: "inspecting parent", source }),
        }
    }
    Ok(dest.join(rel))
}

/// Creates a directory the tar did not list: in overlay the upper directory's metadata wins, so copy
/// mode and owner from the layers below when they have it.
fn create_implicit_dir(full: &Path, rel: &Path, lowers: &[PathBuf]) -> io::Result<()> {
    fs::create_dir(full)?;
    let below = lowers.iter().find_map(|l| fs::symlink_metadata(l.join(rel)).ok().filter(|m| m.is_dir()));
    match below {
        Some(m) => {
            if nix::unistd::geteuid().is_root() {
                std::os::unix::fs::lchown(full, Some(m.uid()), Some(m.gid()))?;
            }
            fs::set_permissions(full, fs::Permissions::from_mode(m.mode() & 0o7777))
        }
        None => fs::set_permissions(full, fs::Permissions::from_mode(0o755)),
    }
}

/// Finds a hard link's target in this layer, or copies it up from the layers below (a hard link can
/// only point inside its own snapshot). No component of the target may be a symlink.
fn resolve_link_target(
    dest: &Path,
    target: &Path,
    lowers: &[PathBuf],
    opts: &ApplyOptions,
    shown: &str,
) -> Result<PathBuf, UnpackError> {
    let escape = || UnpackError::Escape { path: shown.to_string(), why: "hard link target goes through a symlink" };
    let check = |root: &Path| -> Result<Option<fs::Metadata>, UnpackError> {
        let mut cur = root.to_path_buf();
        let parents: Vec<_> = target.parent().map(|p| p.components().collect()).unwrap_or_default();
        for c in parents {
            cur.push(c);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.file_type().is_symlink() => return Err(escape()),
                Ok(m) if m.is_dir() => {}
                _ => return Ok(None),
            }
        }
        Ok(fs::symlink_metadata(root.join(target)).ok())
    };
    match check(dest)? {
        Some(m) if m.is_dir() => Err(UnpackError::Escape { path: shown.to_string(), why: "hard link to a directory" }),
        Some(_) => Ok(dest.join(target)),
        None => {
            for lower in lowers {
                if let Some(m) = check(lower)? {
                    if !m.is_file() {
                        break;
                    }
                    let full = prepare_path(dest, target, lowers, shown)?;
                    let io_err = |source| UnpackError::Io { path: shown.to_string(), what: "copying up hard link target", source };
                    let mut src = File::open(lower.join(target)).map_err(io_err)?;
                    let mut dst = OpenOptions::new().write(true).create_new(true).mode(0o600).open(&full).map_err(io_err)?;
                    io::copy(&mut src, &mut dst).map_err(io_err)?;
                    if opts.ownership {
                        std::os::unix::fs::lchown(&full, Some(m.uid()), Some(m.gid())).map_err(io_err)?;
                    }
                    fs::set_permissions(&full, fs::Permissions::from_mode(m.mode() & 0o7777)).map_err(io_err)?;
                    if let Ok(names) = xattr::list(lower.join(target)) {
                        for name in names {
                            if let Ok(Some(v)) = xattr::get(lower.join(target), &name) {
                                let _ = xattr::set(&full, &name, &v);
                            }
                        }
                    }
                    return Ok(full);
                }
            }
            Err(UnpackError::MissingLinkTarget { path: shown.to_string(), target: target.to_path_buf() })
        }
    }
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
