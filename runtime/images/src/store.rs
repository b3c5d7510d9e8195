//! The store: one root directory holding blobs, snapshots, image records and rootfs leases.
//!
//! ```text
//! <root>/blobs/sha256/<hex>        verified content (manifests, configs, compressed layers)
//! <root>/ingest/                   temp files and per-digest lock files
//! <root>/snapshots/<chainid>/fs    one unpacked layer, overlay style; stack them as lowerdirs
//! <root>/snapshots/.tmp-*          a layer being unpacked (renamed into place when complete)
//! <root>/images.json               reference → ImageRecord
//! <root>/leases/<id>.json          snapshots used by a mounted container rootfs
//! <root>/gc.lock                   shared by writers, exclusive for gc
//! ```

use crate::blobs::{unique_suffix, BlobStore};
use crate::digest::Digest;
use crate::error::{io_err, Error, Result};
use crate::images::{self, ImageRecord, LayerRecord};
use crate::manifest::{self, Platform};
use crate::reference::Reference;
use crate::registry::{RegistryClient, RegistryConfig};
use crate::rootfs::{Mounter, SysMounter};
use crate::unpack::{self, ApplyOptions, Compression};
use nix::fcntl::{Flock, FlockArg};
use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// How a store is opened.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    pub registry: RegistryConfig,
    pub platform: Platform,
    /// Layers downloaded at once per pull.
    pub parallel_layers: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { registry: RegistryConfig::default(), platform: Platform::host(), parallel_layers: 3 }
    }
}

#[derive(Clone)]
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub root: PathBuf,
    pub blobs: BlobStore,
    pub client: RegistryClient,
    pub options: StoreOptions,
    pub mounter: Box<dyn Mounter>,
    /// Work in flight in this process, by key (`blob:<hex>`, `snap:<hex>`): the second puller waits.
    inflight: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// What `gc` removed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct GcReport {
    pub blobs: usize,
    pub snapshots: usize,
    pub temp_files: usize,
    pub bytes: u64,
}

/// The parts of an image config the agent needs to build a container's process.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct RunConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
    pub exposed_ports: Vec<String>,
}

impl Store {
    pub fn open(root: &Path, options: StoreOptions) -> Result<Self> {
        Self::open_with_mounter(root, options, Box::new(SysMounter))
    }

    pub fn open_with_mounter(root: &Path, options: StoreOptions, mounter: Box<dyn Mounter>) -> Result<Self> {
        for dir in ["snapshots", "leases"] {
            fs::create_dir_all(root.join(dir)).map_err(io_err("creating", root.join(dir)))?;
        }
        let blobs = BlobStore::open(root)?;
        let client = RegistryClient::new(options.registry.clone())?;
        Ok(Store {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                blobs,
                client,
                options,
                mounter,
                inflight: Mutex::new(HashMap::new()),
            }),
        })
    }

    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    pub fn blobs(&self) -> &BlobStore {
        &self.inner.blobs
    }

    pub fn snapshot_fs(&self, chain_id: &Digest) -> PathBuf {
        self.inner.root.join("snapshots").join(chain_id.hex()).join("fs")
    }

    /// Serializes work on `key` within this process.
    pub(crate) async fn inflight(&self, key: String) -> tokio::sync::OwnedMutexGuard<()> {
        let m = self.inner.inflight.lock().expect("inflight poisoned").entry(key).or_default().clone();
        m.lock_owned().await
    }

    /// Held (shared) by anything that writes blobs or snapshots, so that gc never removes half of a pull.
    pub(crate) fn gc_lock(&self, arg: FlockArg) -> Result<Flock<File>> {
        let path = self.inner.root.join("gc.lock");
        let file = OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io_err("opening", &path))?;
        Flock::lock(file, arg).map_err(|(_, e)| Error::Io { what: "locking", path, source: e.into() })
    }

    pub(crate) async fn gc_shared(&self) -> Result<Flock<File>> {
        let store = self.clone();
        blocking(move || store.gc_lock(FlockArg::LockShared)).await
    }

    pub fn list(&self) -> Result<Vec<ImageRecord>> {
        Ok(images::read(&self.inner.root)?.into_values().collect())
    }

    /// The record for a reference (normalized first: `busybox` finds `docker.io/library/busybox:latest`).
    pub fn get(&self, reference: &str) -> Result<ImageRecord> {
        let index = images::read(&self.inner.root)?;
        let key = reference.parse::<Reference>().map(|r| r.to_string()).unwrap_or_else(|_| reference.to_string());
        index
            .get(&key)
            .or_else(|| index.values().find(|r| r.manifest_digest.to_string() == reference || r.config_digest.to_string() == reference))
            .cloned()
            .ok_or(Error::NotFound(reference.to_string()))
    }

    /// Forgets an image name; its blobs and snapshots go at the next `gc` if nothing else uses them.
    pub fn remove(&self, reference: &str) -> Result<ImageRecord> {
        let record = self.get(reference)?;
        images::update(&self.inner.root, |index| index.remove(&record.name))?;
        Ok(record)
    }

    /// The parsed OCI image config of a stored image.
    pub fn image_config(&self, reference: &str) -> Result<oci_spec::image::ImageConfiguration> {
        let record = self.get(reference)?;
        Ok(manifest::parse_config(&self.inner.blobs.read(&record.config_digest)?)?)
    }

    /// Entrypoint, Cmd, Env, WorkingDir, User and ExposedPorts of a stored image.
    pub fn run_config(&self, reference: &str) -> Result<RunConfig> {
        let config = self.image_config(reference)?;
        let Some(c) = config.config() else { return Ok(RunConfig::default()) };
        Ok(RunConfig {
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
            user: c.user().clone().filter(|u| !u.is_empty()),
            exposed_ports: c.exposed_ports().clone().unwrap_or_default(),
        })
    }

    /// Unpacks the layer whose chain ID is `chain[i]` (all below must exist). Blocking.
    pub(crate) fn ensure_snapshot(&self, chain: &[Digest], layer: &LayerRecord) -> Result<()> {
        let chain_id = chain.last().expect("non-empty chain");
        let dir = self.inner.root.join("snapshots").join(chain_id.hex());
        if dir.join("fs").is_dir() {
            return Ok(());
        }
        let _lock = self.inner.blobs.lock_key(&format!("snap-{}", chain_id.hex()))?;
        if dir.join("fs").is_dir() {
            return Ok(());
        }
        let compression = Compression::from_media_type(&layer.media_type)
            .map_err(|source| Error::Unpack { layer: layer.digest.to_string(), source })?;
        let temp = self.inner.root.join("snapshots").join(format!(".tmp-{}", unique_suffix()));
        let temp_fs = temp.join("fs");
        fs::create_dir_all(&temp_fs).map_err(io_err("creating", &temp_fs))?;
        let lowers: Vec<PathBuf> = chain[..chain.len() - 1].iter().rev().map(|c| self.snapshot_fs(c)).collect();
        let result = (|| {
            let blob = self.inner.blobs.open_blob(&layer.digest)?;
            let span = tracing::info_span!("unpack", layer = %layer.digest, chain_id = %chain_id);
            let _enter = span.enter();
            let diff_id = unpack::apply_layer(blob, compression, &temp_fs, &lowers, &ApplyOptions::default())
                .map_err(|source| Error::Unpack { layer: layer.digest.to_string(), source })?;
            if diff_id != layer.diff_id {
                return Err(Error::Unpack {
                    layer: layer.digest.to_string(),
                    source: unpack::UnpackError::DiffId { expected: layer.diff_id.clone(), actual: diff_id },
                });
            }
            // Durability: the unpacked files must be on disk before the snapshot appears under its final
            // name, or a crash could leave a "complete" snapshot holding empty or short files that every
            // later container would use. One syncfs(2) of the store's filesystem after the whole layer (as
            // containerd's `WithSyncFs` apply option) costs far less than an fsync per file.
            sync_filesystem(&temp_fs)?;
            match fs::rename(&temp, &dir) {
                Ok(()) => sync_dir(dir.parent().expect("snapshots/<id> has a parent")),
                Err(_) if dir.join("fs").is_dir() => Ok(()), // another process finished first
                Err(e) => Err(Error::Io { what: "renaming snapshot into place", path: dir.clone(), source: e }),
            }
        })();
        if temp.exists() {
            let _ = fs::remove_dir_all(&temp);
        }
        result
    }

    /// Chain IDs still in use by mounted container root filesystems.
    fn leased_snapshots(&self) -> Result<BTreeSet<Digest>> {
        let dir = self.inner.root.join("leases");
        let mut out = BTreeSet::new();
        for entry in fs::read_dir(&dir).map_err(io_err("listing", &dir))? {
            let path = entry.map_err(io_err("listing", &dir))?.path();
            if let Ok(lease) = crate::rootfs::Lease::read(&path) {
                out.extend(lease.chain_ids);
            }
        }
        Ok(out)
    }

    /// Removes blobs and snapshots no image record or mounted rootfs refers to, and leftovers of
    /// interrupted pulls. Waits for running pulls to finish.
    pub fn gc(&self) -> Result<GcReport> {
        let _gc = self.gc_lock(FlockArg::LockExclusive)?;
        let index = images::read(&self.inner.root)?;
        let mut keep_blobs: BTreeSet<Digest> = BTreeSet::new();
        let mut keep_snaps = self.leased_snapshots()?;
        for record in index.values() {
            keep_blobs.extend(record.blobs().cloned());
            keep_snaps.extend(record.chain_ids.iter().cloned());
        }
        let mut report = GcReport::default();
        for digest in self.inner.blobs.list()? {
            if !keep_blobs.contains(&digest) {
                report.bytes += fs::metadata(self.inner.blobs.path(&digest)).map(|m| m.len()).unwrap_or(0);
                self.inner.blobs.remove(&digest)?;
                report.blobs += 1;
            }
        }
        let snaps = self.inner.root.join("snapshots");
        for entry in fs::read_dir(&snaps).map_err(io_err("listing", &snaps))? {
            let entry = entry.map_err(io_err("listing", &snaps))?;
            let name = entry.file_name().to_string_lossy().to_string();
            let keep = Digest::from_hex(&name).is_ok_and(|d| keep_snaps.contains(&d));
            if !keep {
                fs::remove_dir_all(entry.path()).map_err(io_err("removing snapshot", entry.path()))?;
                if name.starts_with(".tmp-") {
                    report.temp_files += 1;
                } else {
                    report.snapshots += 1;
                }
            }
        }
        // Nobody writes while we hold the exclusive lock: every temp file is a leftover.
        let ingest = self.inner.blobs.ingest_dir();
        for entry in fs::read_dir(&ingest).map_err(io_err("listing", &ingest))? {
            let path = entry.map_err(io_err("listing", &ingest))?.path();
            fs::remove_file(&path).map_err(io_err("removing", &path))?;
            if path.extension().is_some_and(|e| e == "tmp") {
                report.temp_files += 1;
            }
        }
        tracing::info!(?report, "gc done");
        Ok(report)
    }
}

/// Runs blocking file system work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f).await.map_err(|e| Error::Task(e.to_string()))?
}

/// Flushes the filesystem holding `path` (syncfs(2)).
fn sync_filesystem(path: &Path) -> Result<()> {
    let dir = File::open(path).map_err(io_err("opening for syncfs", path))?;
    nix::unistd::syncfs(dir.as_raw_fd())
        .map_err(|e| Error::Io { what: "syncfs of the snapshot", path: path.to_path_buf(), source: e.into() })
}

/// Makes a rename in `dir` durable (fsync of the directory).
fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("syncing directory", dir))
}
