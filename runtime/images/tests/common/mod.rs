//! Test harness: a real `docker-registry` on 127.0.0.1, a tiny push client, and test images built from
//! Debian's busybox-static. Everything is torn down by Drop guards, also when a test fails.
#![allow(dead_code)]

use sha2::{Digest as _, Sha256};
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const REGISTRY_BIN: &str = "/usr/bin/docker-registry";
pub const BUSYBOX: &str = "/bin/busybox";

/// A bcrypt hash of "s3cret" (cost 4), for the htpasswd-protected registry.
pub const HTPASSWD: &str = "tester:$2b$04$vZUfGKzjjOYfmMlmQN0v5eCNxo5We/y378OIZKxVqAYmCp2SoUdBK\n";

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Why the registry tests cannot run here, if they cannot.
pub fn skip_reason() -> Option<&'static str> {
    if !is_root() {
        return Some("needs root (overlay whiteouts, chown, mount)");
    }
    if !Path::new(REGISTRY_BIN).exists() {
        return Some("needs Debian's docker-registry (apt-get install docker-registry)");
    }
    if !Path::new(BUSYBOX).exists() {
        return Some("needs Debian's busybox-static (apt-get install busybox-static)");
    }
    None
}

macro_rules! require_env {
    () => {
        if let Some(why) = common::skip_reason() {
            eprintln!("skipped: {why}");
            return;
        }
    };
}
pub(crate) use require_env;

/// A `docker-registry serve` child on 127.0.0.1:<free port>; killed by PID on drop.
pub struct Registry {
    child: Child,
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub http: reqwest::Client,
    basic: Option<(String, String)>,
    /// PEM of the CA that signed the registry's certificate, when it serves HTTPS.
    pub ca_pem: Option<PathBuf>,
}

/// A throwaway CA and a certificate for 127.0.0.1/localhost signed by it (PEM: CA cert, leaf cert, leaf key).
fn test_pki() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "skiff test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    leaf.subject_alt_names.push(SanType::IpAddress(std::net::IpAddr::from([127, 0, 0, 1])));
    leaf.distinguished_name.push(DnType::CommonName, "127.0.0.1");
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &ca_cert, &ca_key).unwrap();
    (ca_cert.pem(), leaf_cert.pem(), leaf_key.serialize_pem())
}

impl Registry {
    pub async fn start() -> Registry {
        Self::start_with(false).await
    }

    /// With `htpasswd`, the registry demands basic auth (user `tester`, password `s3cret`).
    pub async fn start_with(htpasswd: bool) -> Registry {
        Self::start_opts(htpasswd, false).await
    }

    /// Serving HTTPS with a certificate from a throwaway CA (see `ca_pem`).
    pub async fn start_tls() -> Registry {
        Self::start_opts(false, true).await
    }

    async fn start_opts(htpasswd: bool, tls: bool) -> Registry {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let auth = if htpasswd {
            std::fs::write(dir.path().join("htpasswd"), HTPASSWD).unwrap();
            format!("auth:\n  htpasswd:\n    realm: test-realm\n    path: {}\n", dir.path().join("htpasswd").display())
        } else {
            String::new()
        };
        let (tls_config, ca_pem, http) = if tls {
            let (ca, cert, key) = test_pki();
            let ca_path = dir.path().join("ca.pem");
            std::fs::write(&ca_path, &ca).unwrap();
            std::fs::write(dir.path().join("cert.pem"), cert).unwrap();
            std::fs::write(dir.path().join("key.pem"), key).unwrap();
            let config = format!(
                "  tls:\n    certificate: {}\n    key: {}\n",
                dir.path().join("cert.pem").display(),
                dir.path().join("key.pem").display()
            );
            let client = reqwest::Client::builder()
                .add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap())
                .build()
                .unwrap();
            (config, Some(ca_path), client)
        } else {
            (String::new(), None, reqwest::Client::new())
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: error\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:{port}\n{tls_config}{auth}",
            dir.path().join("storage").display()
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY_BIN)
            .arg("serve")
            .arg(&config_path)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start docker-registry");
        let basic = htpasswd.then(|| ("tester".to_string(), "s3cret".to_string()));
        let reg = Registry { child, dir, port, http, basic, ca_pem };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(resp) = reg.req(reqwest::Method::GET, &format!("{}/v2/", reg.base())).send().await {
                if resp.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "registry did not come up: {}", reg.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        reg
    }

    pub fn base(&self) -> String {
        let scheme = if self.ca_pem.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    fn req(&self, method: reqwest::Method, url: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, url);
        match &self.basic {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    /// Monolithic upload: POST /blobs/uploads/, then PUT <location>?digest=.
    pub async fn push_blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        let resp = self.req(reqwest::Method::POST, &format!("{}/v2/{repo}/blobs/uploads/", self.base())).send().await.unwrap();
        assert_eq!(resp.status(), 202, "start upload: {}", resp.text().await.unwrap_or_default());
        let location = resp.headers()["location"].to_str().unwrap().to_string();
        let location = if location.starts_with('/') { format!("{}{location}", self.base()) } else { location };
        let sep = if location.contains('?') { '&' } else { '?' };
        let resp = self
            .req(reqwest::Method::PUT, &format!("{location}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "finish upload: {}", resp.text().await.unwrap_or_default());
        digest
    }

    pub async fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, data: &[u8]) -> String {
        let resp = self
            .req(reqwest::Method::PUT, &format!("{}/v2/{repo}/manifests/{reference}", self.base()))
            .header("content-type", media_type)
            .body(data.to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "push manifest: {}", resp.text().await.unwrap_or_default());
        sha256(data)
    }

    /// Where the registry keeps a blob's bytes (to corrupt it).
    pub fn blob_data_path(&self, digest: &str) -> PathBuf {
        let hex = digest.strip_prefix("sha256:").unwrap();
        self.dir.path().join(format!("storage/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]))
    }

    /// Pushes every blob of `image` and its manifest under `tag`; returns the manifest digest.
    pub async fn push_image(&self, repo: &str, tag: &str, image: &TestImage) -> String {
        for blob in image.blobs() {
            self.push_blob(repo, blob).await;
        }
        self.push_manifest(repo, tag, &image.manifest_media_type, &image.manifest).await
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// One tar entry of a test layer.
pub enum Entry {
    Dir(&'static str, u32),
    File(String, Vec<u8>, u32),
    Symlink(&'static str, &'static str),
    HardLink(&'static str, &'static str),
}

pub fn file(path: &str, data: &[u8]) -> Entry {
    Entry::File(path.to_string(), data.to_vec(), 0o644)
}

#[derive(Clone, Copy)]
pub enum Comp {
    None,
    Gzip,
    Zstd,
}

pub struct Layer {
    pub tar: Vec<u8>,
    pub blob: Vec<u8>,
    pub media_type: String,
}

pub fn layer(entries: &[Entry], comp: Comp) -> Layer {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            Entry::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            Entry::File(p, data, mode) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, &data[..]).unwrap();
            }
            Entry::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
            Entry::HardLink(p, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    let tar = b.into_inner().unwrap();
    let (blob, media_type) = match comp {
        Comp::None => (tar.clone(), "application/vnd.oci.image.layer.v1.tar"),
        Comp::Gzip => {
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&tar).unwrap();
            (gz.finish().unwrap(), "application/vnd.oci.image.layer.v1.tar+gzip")
        }
        Comp::Zstd => (zstd::encode_all(&tar[..], 3).unwrap(), "application/vnd.oci.image.layer.v1.tar+zstd"),
    };
    Layer { tar, blob, media_type: media_type.to_string() }
}

pub struct TestImage {
    pub layers: Vec<Layer>,
    pub config: Vec<u8>,
    pub manifest: Vec<u8>,
    pub manifest_media_type: String,
}

impl TestImage {
    pub fn new(layers: Vec<Layer>) -> TestImage {
        Self::with_options(layers, false)
    }

    /// `docker`: a Docker schema 2 manifest instead of an OCI one.
    pub fn with_options(layers: Vec<Layer>, docker: bool) -> TestImage {
        let diff_ids: Vec<String> = layers.iter().map(|l| sha256(&l.tar)).collect();
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {
                "Entrypoint": ["/bin/sh", "-c"],
                "Cmd": ["echo hello"],
                "Env": ["PATH=/bin:/usr/bin", "GREETING=hi"],
                "WorkingDir": "/tmp",
                "User": "1000:1000",
                "ExposedPorts": {"8080/tcp": {}}
            },
            "rootfs": {"type": "layers", "diff_ids": diff_ids}
        }))
        .unwrap();
        let (mt, config_mt) = if docker {
            ("application/vnd.docker.distribution.manifest.v2+json", "application/vnd.docker.container.image.v1+json")
        } else {
            ("application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.config.v1+json")
        };
        let layer_descs: Vec<_> = layers
            .iter()
            .map(|l| {
                let media_type = if docker { l.media_type.replace("application/vnd.oci.image.layer.v1.tar+gzip", "application/vnd.docker.image.rootfs.diff.tar.gzip") } else { l.media_type.clone() };
                serde_json::json!({"mediaType": media_type, "digest": sha256(&l.blob), "size": l.blob.len()})
            })
            .collect();
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": mt,
            "config": {"mediaType": config_mt, "digest": sha256(&config), "size": config.len()},
            "layers": layer_descs
        }))
        .unwrap();
        TestImage { layers, config, manifest, manifest_media_type: mt.to_string() }
    }

    pub fn blobs(&self) -> impl Iterator<Item = &Vec<u8>> {
        self.layers.iter().map(|l| &l.blob).chain([&self.config])
    }

    pub fn digest(&self) -> String {
        sha256(&self.manifest)
    }
}

pub fn busybox_bytes() -> Vec<u8> {
    std::fs::read(BUSYBOX).unwrap()
}

/// One layer: busybox with a few applets linked, /etc/passwd.
pub fn single_layer_image() -> TestImage {
    TestImage::new(vec![layer(
        &[
            Entry::Dir("bin", 0o755),
            Entry::File("bin/busybox".into(), busybox_bytes(), 0o755),
            Entry::Symlink("bin/sh", "busybox"),
            Entry::Symlink("bin/ls", "/bin/busybox"),
            Entry::Dir("etc", 0o755),
            file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
            Entry::Dir("tmp", 0o1777),
        ],
        Comp::Gzip,
    )])
}

/// Three layers (gzip, zstd, plain): whiteouts, an opaque directory, hard links and a symlink tree.
pub fn multi_layer_image() -> TestImage {
    let base = layer(
        &[
            Entry::Dir("bin", 0o755),
            Entry::File("bin/busybox".into(), busybox_bytes(), 0o755),
            Entry::Symlink("bin/sh", "busybox"),
            Entry::Dir("etc", 0o755),
            file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n"),
            file("etc/removed", b"this file is deleted by layer 2"),
            Entry::Dir("opt", 0o755),
            Entry::Dir("opt/old", 0o700),
            file("opt/old/a", b"a"),
            file("opt/old/b", b"b"),
            Entry::Dir("usr", 0o755),
            Entry::Dir("usr/lib", 0o755),
            file("usr/lib/keep", b"keep"),
            Entry::Dir("tmp", 0o1777),
        ],
        Comp::Gzip,
    );
    let second = layer(
        &[
            file("etc/.wh.removed", b""),
            Entry::Dir("opt/old", 0o755),
            file("opt/old/.wh..wh..opq", b""),
            file("opt/old/new", b"new"),
            Entry::Dir("data", 0o755),
            file("data/orig", b"linked content"),
            Entry::HardLink("data/link1", "data/orig"),
            Entry::HardLink("data/link2", "data/orig"),
            Entry::Dir("usr/share", 0o755),
            Entry::Dir("usr/share/tree", 0o755),
            Entry::Symlink("usr/share/tree/rel", "../../lib/keep"),
            Entry::Symlink("usr/share/tree/abs", "/etc/passwd"),
            Entry::Symlink("usr/share/tree/dir", "../../lib"),
            Entry::Symlink("usr/share/tree/chain", "rel"),
            Entry::Symlink("usr/share/tree/dangling", "/nowhere"),
        ],
        Comp::Zstd,
    );
    let third = layer(&[file("etc/added", b"added in layer 3"), Entry::HardLink("bin/sh2", "bin/busybox")], Comp::None);
    TestImage::new(vec![base, second, third])
}

/// A store in a temp dir, with quick retries.
pub fn store_in(dir: &Path) -> skiff_images::Store {
    let options = skiff_images::StoreOptions {
        registry: skiff_images::RegistryConfig { retries: 2, backoff: Duration::from_millis(20), ..Default::default() },
        ..Default::default()
    };
    skiff_images::Store::open(dir, options).unwrap()
}

/// Unmounts a container rootfs on drop, even when the test fails.
pub struct MountGuard<'a> {
    pub store: &'a skiff_images::Store,
    pub dir: PathBuf,
}

impl Drop for MountGuard<'_> {
    fn drop(&mut self) {
        if let Err(e) = self.store.unmount_rootfs(&self.dir) {
            eprintln!("cleanup: unmount {}: {e}", self.dir.display());
            let _ = nix::mount::umount2(&self.dir.join("rootfs"), nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

pub fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let p = path.to_string_lossy();
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(&p))
}

/// Every blob in the store hashes to its name and no temp file is left.
pub fn assert_store_consistent(store: &skiff_images::Store) {
    for d in store.blobs().list().unwrap() {
        let data = store.blobs().read(&d).unwrap();
        assert_eq!(sha256(&data), d.to_string(), "blob content matches its name");
    }
    let leftovers: Vec<_> = std::fs::read_dir(store.blobs().ingest_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "tmp"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    let snaps: Vec<_> = std::fs::read_dir(store.root().join("snapshots"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp"))
        .collect();
    assert!(snaps.is_empty(), "temp snapshots left: {snaps:?}");
}
