//! Pulling: resolve the reference to a manifest (through an index when there is one), fetch config
//! and layers into the blob store (several at once), unpack each layer once into its snapshot, record.

use crate::digest::{chain_ids, Digest};
use crate::error::{Error, Result};
use crate::images::{self, ImageRecord, LayerRecord};
use crate::manifest::{self, Manifest};
use crate::reference::Reference;
use crate::store::{blocking, Store};
use oci_spec::image::{Descriptor, ImageManifest};
use tracing::Instrument;

impl Store {
    /// Pulls `reference` and records it under its normalized name. Concurrent pulls of the same
    /// content (in this process or another) share the work.
    pub async fn pull(&self, reference: &Reference) -> Result<ImageRecord> {
        let span = tracing::info_span!("pull", image = %reference);
        self.pull_inner(reference).instrument(span).await
    }

    async fn pull_inner(&self, reference: &Reference) -> Result<ImageRecord> {
        let _gc = self.gc_shared().await?;
        let client = &self.inner.client;
        let (bytes, content_type, digest) = client.manifest(reference, &reference.manifest_ref()).await?;
        let (parsed, media_type) = manifest::parse_manifest(&bytes, content_type.as_deref())?;
        let (manifest, manifest_digest, manifest_media_type, index_digest) = match parsed {
            Manifest::Image(m) => {
                self.inner.blobs.put_bytes(&digest, &bytes)?;
                (m, digest, media_type, None)
            }
            Manifest::Index(index) => {
                let desc = manifest::select_platform(&index, &self.inner.options.platform)?;
                let want = manifest::descriptor_digest(desc, "index")?;
                let (mbytes, mtype, mdigest) = client.manifest(reference, &want.to_string()).await?;
                if mbytes.len() as u64 != desc.size() {
                    return Err(crate::blobs::BlobError::Size { expected: want, expected_size: desc.size(), actual: mbytes.len() as u64 }.into());
                }
                let (parsed, mt) = manifest::parse_manifest(&mbytes, mtype.as_deref())?;
                let Manifest::Image(m) = parsed else {
                    return Err(manifest::ManifestError::MediaType(format!("{mt} (an index inside an index)")).into());
                };
                self.inner.blobs.put_bytes(&digest, &bytes)?;
                self.inner.blobs.put_bytes(&mdigest, &mbytes)?;
                (m, mdigest, mt, Some(digest))
            }
        };
        let record = self.fetch_and_unpack(reference, &manifest, manifest_digest, manifest_media_type, index_digest).await?;
        let stored = record.clone();
        let root = self.root().to_path_buf();
        blocking(move || images::update(&root, |index| index.insert(stored.name.clone(), stored))).await?;
        tracing::info!(digest = %record.manifest_digest, layers = record.layers.len(), "pulled");
        Ok(record)
    }

    async fn fetch_and_unpack(
        &self,
        reference: &Reference,
        manifest: &ImageManifest,
        manifest_digest: Digest,
        manifest_media_type: String,
        index_digest: Option<Digest>,
    ) -> Result<ImageRecord> {
        let config_digest = manifest::descriptor_digest(manifest.config(), "config")?;
        self.fetch_blob(reference, manifest.config()).await?;
        let config = manifest::parse_config(&self.inner.blobs.read(&config_digest)?)?;
        let diff_ids = manifest::diff_ids(&config)?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(manifest::ManifestError::LayerCount { layers: manifest.layers().len(), diff_ids: diff_ids.len() }.into());
        }
        let mut layers = Vec::new();
        for (desc, diff_id) in manifest.layers().iter().zip(&diff_ids) {
            // Refuse unknown layer types before downloading anything.
            crate::unpack::Compression::from_media_type(desc.media_type().as_ref())
                .map_err(|source| Error::Unpack { layer: desc.digest().to_string(), source })?;
            layers.push(LayerRecord {
                digest: manifest::descriptor_digest(desc, "layer")?,
                media_type: desc.media_type().to_string(),
                size: desc.size(),
                diff_id: diff_id.clone(),
            });
        }
        let chains = chain_ids(&diff_ids);
        // Downloads run ahead (bounded); unpacking follows in layer order as each download lands.
        let semaphore = std::sync::Arc::new(tokio::sync::Semaphore::new(self.inner.options.parallel_layers.max(1)));
        let mut downloads = Vec::new();
        for desc in manifest.layers() {
            let (store, reference, desc, sem) = (self.clone(), reference.clone(), desc.clone(), semaphore.clone());
            downloads.push(tokio::spawn(async move {
                let _permit = sem.acquire_owned().await.expect("semaphore open");
                store.fetch_blob(&reference, &desc).await
            }));
        }
        let mut first_err = None;
        for (i, download) in downloads.into_iter().enumerate() {
            let result = match download.await {
                Ok(r) => r,
                Err(e) => Err(Error::Task(e.to_string())),
            };
            if first_err.is_some() {
                continue; // let the others finish or fail; their temp files clean themselves up
            }
            let result = match result {
                Ok(()) => self.unpack_layer(&chains[..=i], &layers[i]).await,
                Err(e) => Err(e),
            };
            if let Err(e) = result {
                first_err = Some(e);
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        Ok(ImageRecord {
            name: reference.to_string(),
            manifest_digest,
            manifest_media_type,
            index_digest,
            config_digest,
            layers,
            chain_ids: chains,
            stored_at: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        })
    }

    pub(crate) async fn unpack_layer(&self, chain: &[Digest], layer: &LayerRecord) -> Result<()> {
        let key = format!("snap:{}", chain.last().expect("non-empty").hex());
        let _guard = self.inflight(key).await;
        let (store, chain, layer) = (self.clone(), chain.to_vec(), layer.clone());
        blocking(move || store.ensure_snapshot(&chain, &layer)).await
    }

    /// Downloads one blob unless present; verifies size and digest before it becomes visible.
    async fn fetch_blob(&self, reference: &Reference, desc: &Descriptor) -> Result<()> {
        let digest = manifest::descriptor_digest(desc, "descriptor")?;
        let blobs = &self.inner.blobs;
        if blobs.contains(&digest) {
            return Ok(());
        }
        let _guard = self.inflight(format!("blob:{}", digest.hex())).await;
        let (b, d) = (blobs.clone(), digest.clone());
        let _lock = blocking(move || Ok(b.lock(&d)?)).await?;
        if blobs.contains(&digest) {
            return Ok(()); // another puller finished it while we waited
        }
        let span = tracing::info_span!("fetch", blob = %digest, size = desc.size());
        let mut ingest = blobs.ingest(&digest, Some(desc.size()))?;
        self.inner.client.blob_into(reference, &digest, &mut ingest).instrument(span).await?;
        ingest.commit()?;
        Ok(())
    }
}
