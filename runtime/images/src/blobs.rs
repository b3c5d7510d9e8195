//! The content-addressed blob store: `<root>/blobs/sha256/<hex>`.
//!
//! A blob becomes visible only complete and verified: content is written to a temp file under
//! `<root>/ingest/`, fsynced, its size and digest checked, then renamed into place. Writers of the same
//! digest serialize on a file lock (`<root>/ingest/<hex>.lock`), so two processes never write one blob
//! twice at once; a temp file left by a killed process is ignored and removed by `gc`.

use crate::digest::Digest;
use nix::fcntl::{Flock, FlockArg};
use sha2::{Digest as _, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob store I/O on {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("blob {expected}: size mismatch: expected {expected_size} bytes, got {actual} bytes")]
    Size { expected: Digest, expected_size: u64, actual: u64 },
    #[error("blob {expected}: digest mismatch: content hashes to {actual}")]
    Digest { expected: Digest, actual: Digest },
    #[error("blob {0} is not in the store")]
    Missing(Digest),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BlobError + '_ {
    move |source| BlobError::Io { path: path.to_path_buf(), source }
}

#[derive(Clone, Debug)]
pub struct BlobStore {
    root: PathBuf,
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A name unique within this machine: pid, a process counter and the clock.
pub(crate) fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{}-{nanos}", std::process::id(), TEMP_COUNTER.fetch_add(1, Ordering::Relaxed))
}

impl BlobStore {
    pub fn open(root: &Path) -> Result<Self, BlobError> {
        for dir in [root.join("blobs/sha256"), root.join("ingest")] {
            fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        }
        Ok(BlobStore { root: root.to_path_buf() })
    }

    pub fn path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    pub fn ingest_dir(&self) -> PathBuf {
        self.root.join("ingest")
    }

    pub fn contains(&self, digest: &Digest) -> bool {
        self.path(digest).is_file()
    }

    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>, BlobError> {
        let path = self.path(digest);
        fs::read(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => BlobError::Missing(digest.clone()),
            _ => BlobError::Io { path, source: e },
        })
    }

    pub fn open_blob(&self, digest: &Digest) -> Result<File, BlobError> {
        let path = self.path(digest);
        File::open(&path).map_err(|e| match e.kind() {
            io::ErrorKind::NotFound => BlobError::Missing(digest.clone()),
            _ => BlobError::Io { path, source: e },
        })
    }

    /// Takes the cross-process writer lock for `digest` (blocking).
    pub fn lock(&self, digest: &Digest) -> Result<Flock<File>, BlobError> {
        self.lock_key(digest.hex())
    }

    /// Takes a cross-process lock named `key` (blocking).
    pub fn lock_key(&self, key: &str) -> Result<Flock<File>, BlobError> {
        let path = self.ingest_dir().join(format!("{key}.lock"));
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_err(&path))?;
        Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, e)| BlobError::Io { path, source: e.into() })
    }

    /// Starts writing a blob that must hash to `expected` (and be `size` bytes long, when given).
    pub fn ingest(&self, expected: &Digest, size: Option<u64>) -> Result<Ingest, BlobError> {
        let temp = self.ingest_dir().join(format!("{}.{}.tmp", expected.hex(), unique_suffix()));
        let file = File::create(&temp).map_err(io_err(&temp))?;
        Ok(Ingest {
            file: Some(file),
            temp,
            target: self.path(expected),
            expected: expected.clone(),
            expected_size: size,
            hasher: Sha256::new(),
            written: 0,
        })
    }

    /// Writes `data` as a blob, verifying it against `expected`.
    pub fn put_bytes(&self, expected: &Digest, data: &[u8]) -> Result<(), BlobError> {
        if self.contains(expected) {
            return Ok(());
        }
        let mut ingest = self.ingest(expected, Some(data.len() as u64))?;
        ingest.write_chunk(data)?;
        ingest.commit()
    }

    /// Copies a reader into the store, verifying it against `expected`.
    pub fn put_reader(&self, expected: &Digest, size: Option<u64>, mut reader: impl Read) -> Result<(), BlobError> {
        let mut ingest = self.ingest(expected, size)?;
        let mut buf = vec![0u8; 256 * 1024];
        loop {
            let n = reader.read(&mut buf).map_err(|source| BlobError::Io { path: ingest.temp.clone(), source })?;
            if n == 0 {
                break;
            }
            ingest.write_chunk(&buf[..n])?;
        }
        if self.contains(expected) {
            return Ok(()); // someone else finished first; ours is dropped and removed
        }
        ingest.commit()
    }

    /// Every complete blob in the store.
    pub fn list(&self) -> Result<Vec<Digest>, BlobError> {
        let dir = self.root.join("blobs/sha256");
        let mut out = Vec::new();
        for entry in fs::read_dir(&dir).map_err(io_err(&dir))? {
            let entry = entry.map_err(io_err(&dir))?;
            if let Some(d) = entry.file_name().to_str().and_then(|n| Digest::from_hex(n).ok()) {
                out.push(d);
            }
        }
        Ok(out)
    }

    pub fn remove(&self, digest: &Digest) -> Result<(), BlobError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(BlobError::Io { path, source: e }),
            _ => Ok(()),
        }
    }
}

/// A blob being written. Dropped without `commit`, its temp file is removed.
pub struct Ingest {
    file: Option<File>,
    temp: PathBuf,
    target: PathBuf,
    expected: Digest,
    expected_size: Option<u64>,
    hasher: Sha256,
    written: u64,
}

impl Ingest {
    pub fn write_chunk(&mut self, data: &[u8]) -> Result<(), BlobError> {
        self.written += data.len() as u64;
        if let Some(size) = self.expected_size {
            if self.written > size {
                // Stop early: a server sending more than announced is not trusted further.
                return Err(BlobError::Size { expected: self.expected.clone(), expected_size: size, actual: self.written });
            }
        }
        self.hasher.update(data);
        let file = self.file.as_mut().expect("ingest used after commit");
        file.write_all(data).map_err(|source| BlobError::Io { path: self.temp.clone(), source })
    }

    pub fn written(&self) -> u64 {
        self.written
    }

    /// Throws away what was written so far (a retry starts over).
    pub fn reset(&mut self) -> Result<(), BlobError> {
        let file = self.file.as_mut().expect("ingest used after commit");
        file.set_len(0).map_err(io_err(&self.temp))?;
        io::Seek::seek(file, io::SeekFrom::Start(0)).map_err(io_err(&self.temp))?;
        self.hasher = Sha256::new();
        self.written = 0;
        Ok(())
    }

    /// Verifies size and digest, fsyncs, and renames the blob into place.
    pub fn commit(mut self) -> Result<(), BlobError> {
        if let Some(size) = self.expected_size {
            if self.written != size {
                return Err(BlobError::Size { expected: self.expected.clone(), expected_size: size, actual: self.written });
            }
        }
        let actual = Digest::from_hasher(std::mem::take(&mut self.hasher));
        if actual != self.expected {
            return Err(BlobError::Digest { expected: self.expected.clone(), actual });
        }
        let file = self.file.take().expect("ingest committed twice");
        file.sync_all().map_err(io_err(&self.temp))?;
        drop(file);
        fs::rename(&self.temp, &self.target).map_err(io_err(&self.target))?;
        if let Some(dir) = self.target.parent() {
            File::open(dir).and_then(|d| d.sync_all()).map_err(io_err(dir))?;
        }
        Ok(())
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        if self.file.take().is_some() || self.temp.exists() {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verified_writes() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let d = Digest::of(b"hello");
        store.put_bytes(&d, b"hello").unwrap();
        assert_eq!(store.read(&d).unwrap(), b"hello");
        assert_eq!(store.list().unwrap(), vec![d.clone()]);

        let other = Digest::of(b"other");
        let err = store.put_bytes(&other, b"wrong").unwrap_err();
        assert!(matches!(err, BlobError::Digest { .. }), "{err}");
        let err = store.put_reader(&other, Some(3), &b"other"[..]).unwrap_err();
        assert!(matches!(err, BlobError::Size { .. }), "{err}");
        let err = store.put_reader(&other, Some(9), &b"other"[..]).unwrap_err();
        assert!(matches!(err, BlobError::Size { actual: 5, .. }), "{err}");
        assert!(!store.contains(&other));
        assert_eq!(fs::read_dir(store.ingest_dir()).unwrap().count(), 0, "temp files are removed");
        assert!(matches!(store.read(&other), Err(BlobError::Missing(_))));
    }
}
