//! Pulls over HTTPS from a real `docker-registry` serving TLS on 127.0.0.1 with a certificate from a throwaway
//! CA: trusted through `ca_certs` it works; without the CA the pull fails naming the certificate problem and
//! leaves nothing behind.

mod common;

use common::*;
use skiff_images::{Reference, RegistryConfig, Store, StoreOptions};
use std::fs;
use std::path::Path;
use std::time::Duration;

fn tls_store(dir: &Path, reg: &Registry, trust_ca: bool) -> Store {
    let registry = RegistryConfig {
        https: vec![reg.host()],
        ca_certs: if trust_ca { vec![reg.ca_pem.clone().unwrap()] } else { Vec::new() },
        retries: 1,
        backoff: Duration::from_millis(20),
        ..Default::default()
    };
    Store::open(dir, StoreOptions { registry, ..Default::default() }).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_over_https_with_a_private_ca() {
    require_env!();
    let reg = Registry::start_tls().await;
    assert!(reg.base().starts_with("https://"));
    let digest = reg.push_image("tests/secure", "1.0", &multi_layer_image()).await;
    let reference: Reference = format!("{}/tests/secure:1.0", reg.host()).parse().unwrap();

    // Not trusting the CA: a clear TLS error, no image, no blobs, no snapshots, no temp files.
    let untrusted_dir = tempfile::tempdir().unwrap();
    let untrusted = tls_store(untrusted_dir.path(), &reg, false);
    let err = untrusted.pull(&reference).await.expect_err("an unknown CA must be refused");
    let msg = format!("{err:#}");
    let chain = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    assert!(msg.contains("https://127.0.0.1"), "names the URL: {msg}");
    assert!(chain.to_lowercase().contains("certificate"), "names the certificate problem: {chain}");
    assert!(untrusted.list().unwrap().is_empty());
    assert!(untrusted.blobs().list().unwrap().is_empty());
    assert_store_consistent(&untrusted);

    // Trusting it: the whole image arrives intact over TLS.
    let dir = tempfile::tempdir().unwrap();
    let store = tls_store(dir.path(), &reg, true);
    let rec = store.pull(&reference).await.unwrap();
    assert_eq!(rec.manifest_digest.to_string(), digest);
    assert_eq!(rec.layers.len(), 3);
    let top = store.snapshot_fs(rec.chain_ids.last().unwrap());
    assert_eq!(fs::read(store.snapshot_fs(&rec.chain_ids[0]).join("bin/busybox")).unwrap(), busybox_bytes());
    assert!(top.is_dir());
    assert_store_consistent(&store);

    // The same registry over plain HTTP is refused by the server; the default for loopback stays plain HTTP,
    // so without `https` the client does not silently speak TLS.
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = Store::open(
        plain_dir.path(),
        StoreOptions {
            registry: RegistryConfig { retries: 0, ..Default::default() },
            ..Default::default()
        },
    )
    .unwrap();
    let err = plain.pull(&reference).await.expect_err("plain HTTP to a TLS port fails");
    assert!(format!("{err:#}").contains("http://127.0.0.1"), "{err:#}");
    assert!(plain.list().unwrap().is_empty());
}
