//! Image records: `<root>/images.json` maps a normalized reference to what was pulled for it.
//! Updates take a file lock and replace the file atomically (write temp, fsync, rename).

use crate::digest::Digest;
use crate::error::{io_err, Error, Result};
use nix::fcntl::{Flock, FlockArg};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::Path;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LayerRecord {
    pub digest: Digest,
    pub media_type: String,
    pub size: u64,
    pub diff_id: Digest,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ImageRecord {
    /// Normalized reference, e.g. `docker.io/library/busybox:latest`.
    pub name: String,
    pub manifest_digest: Digest,
    pub manifest_media_type: String,
    /// The index the manifest was selected from, when the reference named one.
    pub index_digest: Option<Digest>,
    /// The config digest is the image ID.
    pub config_digest: Digest,
    pub layers: Vec<LayerRecord>,
    /// Snapshot keys, bottom layer first.
    pub chain_ids: Vec<Digest>,
    /// Seconds since the epoch when it was stored.
    pub stored_at: u64,
}

impl ImageRecord {
    /// Compressed size of the layers.
    pub fn size(&self) -> u64 {
        self.layers.iter().map(|l| l.size).sum()
    }

    /// Every blob this image needs.
    pub fn blobs(&self) -> impl Iterator<Item = &Digest> {
        [&self.manifest_digest, &self.config_digest]
            .into_iter()
            .chain(self.index_digest.iter())
            .chain(self.layers.iter().map(|l| &l.digest))
    }
}

pub type Index = BTreeMap<String, ImageRecord>;

fn lock(root: &Path) -> Result<Flock<File>> {
    let path = root.join("images.lock");
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_err("opening", &path))?;
    Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| Error::Io { what: "locking", path, source: e.into() })
}

fn read_unlocked(root: &Path) -> Result<Index> {
    let path = root.join("images.json");
    match fs::read(&path) {
        Ok(data) => serde_json::from_slice(&data).map_err(|e| Error::Index { path, detail: e.to_string() }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Index::new()),
        Err(e) => Err(Error::Io { what: "reading", path, source: e }),
    }
}

pub fn read(root: &Path) -> Result<Index> {
    let _lock = lock(root)?;
    read_unlocked(root)
}

/// Applies `f` to the index under the lock and writes it back atomically.
pub fn update<T>(root: &Path, f: impl FnOnce(&mut Index) -> T) -> Result<T> {
    let _lock = lock(root)?;
    let mut index = read_unlocked(root)?;
    let out = f(&mut index);
    let path = root.join("images.json");
    let temp = root.join(format!("images.json.{}.tmp", crate::blobs::unique_suffix()));
    let data = serde_json::to_vec_pretty(&index).expect("index serializes");
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&temp)?;
        f.write_all(&data)?;
        f.sync_all()?;
        fs::rename(&temp, &path)
    };
    write().map_err(|e| {
        let _ = fs::remove_file(&temp);
        Error::Io { what: "writing", path: path.clone(), source: e }
    })?;
    Ok(out)
}
