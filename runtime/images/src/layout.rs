//! Import and export of OCI image-layout archives: a tar holding `oci-layout`, `index.json` and
//! `blobs/sha256/<hex>` — what `skopeo copy ... oci-archive:FILE:TAG` writes.

use crate::digest::{chain_ids, Digest};
use crate::error::{Error, Result};
use crate::images::{self, ImageRecord, LayerRecord};
use crate::manifest::{self, Manifest};
use crate::reference::Reference;
use crate::store::Store;
use std::collections::BTreeSet;
use std::io::{Read, Write};

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";
pub const CONTAINERD_NAME: &str = "io.containerd.image.name";

#[derive(serde::Serialize, serde::Deserialize)]
struct LayoutIndex {
    #[serde(rename = "schemaVersion")]
    schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    media_type: Option<String>,
    manifests: Vec<LayoutDescriptor>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct LayoutDescriptor {
    #[serde(rename = "mediaType")]
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    annotations: std::collections::BTreeMap<String, String>,
}

fn layout_err(msg: impl Into<String>) -> Error {
    Error::Layout(msg.into())
}

impl Store {
    /// Writes `images` (references in the store) as one OCI layout archive.
    pub fn export(&self, images: &[String], out: impl Write) -> Result<()> {
        let records: Vec<ImageRecord> = images.iter().map(|i| self.get(i)).collect::<Result<_>>()?;
        let mut tar = tar::Builder::new(out);
        let add = |tar: &mut tar::Builder<_>, name: &str, data: &[u8]| -> Result<()> {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_entry_type(tar::EntryType::Regular);
            tar.append_data(&mut h, name, data).map_err(|e| layout_err(format!("writing {name}: {e}")))
        };
        add(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
        let mut index = LayoutIndex { schema_version: 2, media_type: Some(manifest::OCI_INDEX.into()), manifests: Vec::new() };
        let mut seen = BTreeSet::new();
        for record in &records {
            let size = std::fs::metadata(self.blobs().path(&record.manifest_digest)).map(|m| m.len()).unwrap_or(0);
            let mut annotations = std::collections::BTreeMap::new();
            annotations.insert(CONTAINERD_NAME.to_string(), record.name.clone());
            if let Ok(r) = record.name.parse::<Reference>() {
                annotations.insert(REF_NAME.to_string(), r.tag.unwrap_or_else(|| record.name.clone()));
            }
            index.manifests.push(LayoutDescriptor {
                media_type: record.manifest_media_type.clone(),
                digest: record.manifest_digest.clone(),
                size,
                annotations,
            });
            for digest in [&record.manifest_digest, &record.config_digest].into_iter().chain(record.layers.iter().map(|l| &l.digest)) {
                if seen.insert(digest.clone()) {
                    let mut file = self.blobs().open_blob(digest)?;
                    tar.append_file(format!("blobs/sha256/{}", digest.hex()), &mut file)
                        .map_err(|e| layout_err(format!("writing blob {digest}: {e}")))?;
                }
            }
        }
        add(&mut tar, "index.json", &serde_json::to_vec(&index).expect("index serializes"))?;
        tar.into_inner().and_then(|mut w| w.flush()).map_err(|e| layout_err(format!("finishing archive: {e}")))
    }

    /// Reads an OCI layout archive: blobs are verified against their names as they stream in; each
    /// manifest of `index.json` becomes an image, named by its annotation or `name` (for a single one).
    pub async fn import(&self, archive: impl Read + Send + 'static, name: Option<Reference>) -> Result<Vec<ImageRecord>> {
        let _gc = self.gc_shared().await?;
        let store = self.clone();
        let index_bytes = crate::store::blocking(move || store.import_blobs(archive)).await?;
        let index: LayoutIndex =
            serde_json::from_slice(&index_bytes).map_err(|e| layout_err(format!("malformed index.json: {e}")))?;
        if index.manifests.len() != 1 && name.is_some() {
            return Err(layout_err(format!("--name given but the archive holds {} images", index.manifests.len())));
        }
        let mut records = Vec::new();
        for desc in &index.manifests {
            let image_name = match (&name, desc.annotations.get(CONTAINERD_NAME), desc.annotations.get(REF_NAME)) {
                (Some(n), _, _) => n.clone(),
                (None, Some(full), _) => full.parse()?,
                (None, None, Some(r)) if r.contains('/') => r.parse()?,
                _ => return Err(layout_err(format!("image {} has no full name in the archive: give one", desc.digest))),
            };
            records.push(self.import_one(&image_name, desc).await?);
        }
        Ok(records)
    }

    fn import_blobs(&self, archive: impl Read) -> Result<Vec<u8>> {
        let mut tar = tar::Archive::new(archive);
        let mut index = None;
        let mut layout_seen = false;
        for entry in tar.entries().map_err(|e| layout_err(format!("not a tar archive: {e}")))? {
            let mut entry = entry.map_err(|e| layout_err(format!("archive is truncated or corrupt: {e}")))?;
            if entry.header().entry_type() != tar::EntryType::Regular {
                continue;
            }
            let path = entry.path().map_err(|e| layout_err(e.to_string()))?.to_string_lossy().trim_start_matches("./").to_string();
            match path.as_str() {
                "oci-layout" => {
                    let mut s = String::new();
                    entry.read_to_string(&mut s).map_err(|e| layout_err(e.to_string()))?;
                    if !s.contains("imageLayoutVersion") {
                        return Err(layout_err("oci-layout file has no imageLayoutVersion"));
                    }
                    layout_seen = true;
                }
                "index.json" => {
                    let mut v = Vec::new();
                    entry.read_to_end(&mut v).map_err(|e| layout_err(e.to_string()))?;
                    index = Some(v);
                }
                p if p.starts_with("blobs/sha256/") => {
                    let digest = Digest::from_hex(&p["blobs/sha256/".len()..])
                        .map_err(|e| layout_err(format!("bad blob name {p}: {e}")))?;
                    let size = entry.header().size().ok();
                    if !self.blobs().contains(&digest) {
                        self.blobs().put_reader(&digest, size, &mut entry)?;
                    }
                }
                _ => {}
            }
        }
        if !layout_seen {
            return Err(layout_err("no oci-layout file: not an OCI layout archive"));
        }
        index.ok_or_else(|| layout_err("no index.json in the archive"))
    }

    async fn import_one(&self, name: &Reference, desc: &LayoutDescriptor) -> Result<ImageRecord> {
        let bytes = self.blobs().read(&desc.digest)?;
        let (parsed, media_type) = manifest::parse_manifest(&bytes, Some(&desc.media_type))?;
        let (m, manifest_digest, media_type, index_digest) = match parsed {
            Manifest::Image(m) => (m, desc.digest.clone(), media_type, None),
            Manifest::Index(idx) => {
                let d = manifest::select_platform(&idx, &self.inner.options.platform)?;
                let digest = manifest::descriptor_digest(d, "index")?;
                let (parsed, mt) = manifest::parse_manifest(&self.blobs().read(&digest)?, Some(d.media_type().as_ref()))?;
                let Manifest::Image(m) = parsed else { return Err(layout_err("nested index")) };
                (m, digest, mt, Some(desc.digest.clone()))
            }
        };
        let config_digest = manifest::descriptor_digest(m.config(), "config")?;
        let config = manifest::parse_config(&self.blobs().read(&config_digest)?)?;
        let diff_ids = manifest::diff_ids(&config)?;
        if diff_ids.len() != m.layers().len() {
            return Err(manifest::ManifestError::LayerCount { layers: m.layers().len(), diff_ids: diff_ids.len() }.into());
        }
        let chains = chain_ids(&diff_ids);
        let mut layers = Vec::new();
        for (i, (l, diff_id)) in m.layers().iter().zip(diff_ids).enumerate() {
            let layer = LayerRecord {
                digest: manifest::descriptor_digest(l, "layer")?,
                media_type: l.media_type().to_string(),
                size: l.size(),
                diff_id,
            };
            if !self.blobs().contains(&layer.digest) {
                return Err(layout_err(format!("layer {} is missing from the archive", layer.digest)));
            }
            self.unpack_layer(&chains[..=i], &layer).await?;
            layers.push(layer);
        }
        let record = ImageRecord {
            name: name.to_string(),
            manifest_digest,
            manifest_media_type: media_type,
            index_digest,
            config_digest,
            layers,
            chain_ids: chains,
            stored_at: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        };
        let (root, stored) = (self.root().to_path_buf(), record.clone());
        crate::store::blocking(move || images::update(&root, |i| i.insert(stored.name.clone(), stored))).await?;
        Ok(record)
    }
}
