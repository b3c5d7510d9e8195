//! Manifests, indexes and image configs: media types, parsing, and platform selection.

use crate::digest::{Digest, DigestError};
use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use std::fmt;

pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// Everything a registry may answer for `/manifests/`, best first, for the `Accept` header.
pub const ACCEPT: &str = "application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json";

/// Manifests above this size are refused (the distribution spec suggests 4 MiB).
pub const MAX_MANIFEST: usize = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("malformed {what}: {detail}")]
    Malformed { what: &'static str, detail: String },
    #[error("unsupported manifest media type {0:?}")]
    MediaType(String),
    #[error("not a container image: config media type {0:?}")]
    ConfigMediaType(String),
    #[error("no manifest for platform {want} in the index (available: {available})")]
    NoPlatform { want: Platform, available: String },
    #[error("bad digest in {what}: {source}")]
    Digest { what: &'static str, source: DigestError },
    #[error("image has {layers} layers but its config lists {diff_ids} diff IDs")]
    LayerCount { layers: usize, diff_ids: usize },
}

/// A parsed `/manifests/` answer.
#[derive(Debug)]
pub enum Manifest {
    Index(Box<ImageIndex>),
    Image(Box<ImageManifest>),
}

#[derive(serde::Deserialize)]
struct Probe {
    #[serde(rename = "mediaType")]
    media_type: Option<String>,
    manifests: Option<serde_json::Value>,
    layers: Option<serde_json::Value>,
}

fn malformed(what: &'static str) -> impl FnOnce(String) -> ManifestError {
    move |detail| ManifestError::Malformed { what, detail }
}

/// Parses a manifest or an index. The media type comes from the body, else from `content_type`
/// (the HTTP header), else from the shape of the document.
pub fn parse_manifest(bytes: &[u8], content_type: Option<&str>) -> Result<(Manifest, String), ManifestError> {
    let probe: Probe = serde_json::from_slice(bytes).map_err(|e| malformed("manifest")(e.to_string()))?;
    let header = content_type.map(|c| c.split(';').next().unwrap_or(c).trim().to_string());
    let media_type = match (probe.media_type, header) {
        (Some(m), _) => m,
        (None, Some(h)) if h != "application/json" && h != "text/plain" => h,
        _ if probe.manifests.is_some() => OCI_INDEX.to_string(),
        _ if probe.layers.is_some() => OCI_MANIFEST.to_string(),
        _ => return Err(ManifestError::Malformed { what: "manifest", detail: "neither `manifests` nor `layers`".into() }),
    };
    let manifest = match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => Manifest::Index(Box::new(
            ImageIndex::from_reader(bytes).map_err(|e| malformed("image index")(e.to_string()))?,
        )),
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let m = ImageManifest::from_reader(bytes).map_err(|e| malformed("image manifest")(e.to_string()))?;
            let config_type = m.config().media_type().to_string();
            if config_type != OCI_CONFIG && config_type != DOCKER_CONFIG {
                return Err(ManifestError::ConfigMediaType(config_type));
            }
            Manifest::Image(Box::new(m))
        }
        other => return Err(ManifestError::MediaType(other.to_string())),
    };
    Ok((manifest, media_type))
}

pub fn parse_config(bytes: &[u8]) -> Result<ImageConfiguration, ManifestError> {
    ImageConfiguration::from_reader(bytes).map_err(|e| malformed("image config")(e.to_string()))
}

pub fn descriptor_digest(d: &Descriptor, what: &'static str) -> Result<Digest, ManifestError> {
    d.digest().to_string().parse().map_err(|source| ManifestError::Digest { what, source })
}

pub fn diff_ids(config: &ImageConfiguration) -> Result<Vec<Digest>, ManifestError> {
    config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| d.parse().map_err(|source| ManifestError::Digest { what: "image config diff_ids", source }))
        .collect()
}

/// An OS/architecture(/variant) to select from an index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The machine we run on, in Go's names.
    pub fn host() -> Self {
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "x86" => ("386", None),
            "powerpc64" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            "loongarch64" => ("loong64", None),
            other => (other, None),
        };
        Platform { os: "linux".into(), architecture: architecture.into(), variant: variant.map(str::to_string) }
    }

    fn matches(&self, os: &str, arch: &str, variant: Option<&str>) -> bool {
        self.os == os
            && self.architecture == arch
            && match (&self.variant, variant) {
                (Some(want), Some(have)) => want == have,
                _ => true,
            }
    }
}

impl std::str::FromStr for Platform {
    type Err = String;
    /// `os/arch[/variant]`.
    fn from_str(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] => Ok(Platform { os: os.to_string(), architecture: arch.to_string(), variant: None }),
            [os, arch, v] => Ok(Platform { os: os.to_string(), architecture: arch.to_string(), variant: Some(v.to_string()) }),
            _ => Err(format!("platform {s:?} is not os/arch[/variant]")),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// Picks the manifest for `want` from an index (the first match, as containerd does).
pub fn select_platform<'a>(index: &'a ImageIndex, want: &Platform) -> Result<&'a Descriptor, ManifestError> {
    let found = index.manifests().iter().find(|d| {
        d.platform().as_ref().is_some_and(|p| {
            want.matches(&p.os().to_string(), &p.architecture().to_string(), p.variant().as_deref())
        })
    });
    found.ok_or_else(|| ManifestError::NoPlatform {
        want: want.clone(),
        available: index
            .manifests()
            .iter()
            .filter_map(|d| d.platform().as_ref())
            .map(|p| format!("{}/{}", p.os(), p.architecture()))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn index() -> Vec<u8> {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D1}","size":10,"platform":{{"architecture":"arm64","os":"linux","variant":"v8"}}}},
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D2}","size":20,"platform":{{"architecture":"amd64","os":"linux"}}}}]}}"#
        )
        .into_bytes()
    }

    #[test]
    fn selects_platform() {
        let (m, mt) = parse_manifest(&index(), None).unwrap();
        assert_eq!(mt, DOCKER_LIST);
        let Manifest::Index(idx) = m else { panic!("expected an index") };
        let amd = Platform { os: "linux".into(), architecture: "amd64".into(), variant: None };
        assert_eq!(select_platform(&idx, &amd).unwrap().digest().to_string(), D2);
        let arm: Platform = "linux/arm64/v8".parse().unwrap();
        assert_eq!(select_platform(&idx, &arm).unwrap().digest().to_string(), D1);
        let err = select_platform(&idx, &"linux/s390x".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("linux/arm64, linux/amd64"), "{err}");
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(Platform::host(), amd);
        }
    }

    #[test]
    fn parses_docker_and_oci_manifests() {
        let m = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}","config":{{"mediaType":"{DOCKER_CONFIG}","digest":"{D1}","size":1}},
            "layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"{D2}","size":2}}]}}"#
        );
        let (m, mt) = parse_manifest(m.as_bytes(), Some("application/json")).unwrap();
        assert_eq!(mt, DOCKER_MANIFEST);
        assert!(matches!(m, Manifest::Image(_)));
        // no mediaType in the body: header, then shape
        let bare = format!(r#"{{"schemaVersion":2,"config":{{"mediaType":"{OCI_CONFIG}","digest":"{D1}","size":1}},"layers":[]}}"#);
        assert_eq!(parse_manifest(bare.as_bytes(), None).unwrap().1, OCI_MANIFEST);
        assert_eq!(parse_manifest(bare.as_bytes(), Some(&format!("{OCI_MANIFEST}; charset=utf-8"))).unwrap().1, OCI_MANIFEST);
    }

    #[test]
    fn rejects_bad_manifests() {
        let err = |b: &str, ct: Option<&str>| parse_manifest(b.as_bytes(), ct).unwrap_err().to_string();
        assert!(err("{not json", None).contains("malformed manifest"));
        assert!(err(r#"{"schemaVersion":2}"#, None).contains("neither"));
        assert!(err(r#"{"schemaVersion":1,"mediaType":"application/vnd.docker.distribution.manifest.v1+prettyjws"}"#, None)
            .contains("unsupported manifest media type"));
        assert!(err(&format!(r#"{{"mediaType":"{OCI_MANIFEST}","layers":"nope"}}"#), None).contains("malformed image manifest"));
        let helm = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"{D1}","size":1}},"layers":[]}}"#
        );
        assert!(err(&helm, None).contains("not a container image"));
    }
}
