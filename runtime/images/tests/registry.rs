//! Pulls from a real registry (Debian's docker-registry on 127.0.0.1), unpacking, overlay mounts,
//! concurrency, corruption, import/export and gc. Root-gated: skips cleanly without root.

mod common;

use common::*;
use skiff_images::{Reference, Store};
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

fn reference(reg: &Registry, rest: &str) -> Reference {
    format!("{}/{rest}", reg.host()).parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pull_single_layer_by_tag_and_digest() {
    require_env!();
    let reg = Registry::start().await;
    let image = single_layer_image();
    let digest = reg.push_image("tests/busybox", "1.0", &image).await;
    let tmp = tempfile::tempdir().unwrap();
    let store = store_in(tmp.path());

    let rec = store.pull(&reference(&reg, "tests/busybox:1.0")).await.unwrap();
    assert_eq!(rec.name, format!("{}/tests/busybox:1.0", reg.host()));
    assert_eq!(rec.manifest_digest.to_string(), digest);
    assert_eq!(rec.layers.len(), 1);
    let fs_dir = store.snapshot_fs(&rec.chain_ids[0]);
    assert_eq!(fs::read(fs_dir.join("bin/busybox")).unwrap(), busybox_bytes());
    assert_eq!(fs::metadata(fs_dir.join("bin/busybox")).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(fs::read_link(fs_dir.join("bin/ls")).unwrap(), Path::new("/bin/busybox"));
    assert_eq!(fs::metadata(fs_dir.join("tmp")).unwrap().mode() & 0o7777, 0o1777);

    let by_digest = store.pull(&reference(&reg, &format!("tests/busybox@{digest}"))).await.unwrap();
    assert_eq!(by_digest.manifest_digest, rec.manifest_digest);
    assert_eq!(by_digest.chain_ids, rec.chain_ids);
    let names: Vec<String> = store.list().unwrap().into_iter().map(|r| r.name).collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&format!("{}/tests/busybox@{digest}", reg.host())));

    let run = store.run_config(&rec.name).unwrap();
    assert_eq!(run.entrypoint, ["/bin/sh", "-c"]);
    assert_eq!(run.cmd, ["echo hello"]);
    assert!(run.env.contains(&"GREETING=hi".to_string()));
    assert_eq!(run.working_dir.as_deref(), Some("/tmp"));
    assert_eq!(run.user.as_deref(), Some("1000:1000"));
    assert_eq!(run.exposed_ports, ["8080/tcp"]);

    // A second pull downloads nothing new and changes nothing.
    let blobs_before = store.blobs().list().unwrap().len();
    store.pull(&reference(&reg, "tests/busybox:1.0")).await.unwrap();
    assert_eq!(store.blobs().list().unwrap().len(), blobs_before);
    assert_store_consistent(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_layer_image_mounts_as_overlay_with_whiteouts() {
    require_env!();
    let reg = Registry::start().await;
    let image = multi_layer_image();
    reg.push_image("tests/multi", "latest", &image).await;
    let tmp = tempfile::tempdir().unwrap();
    let store = store_in(&tmp.path().join("store"));
    let rec = store.pull(&reference(&reg, "tests/multi")).await.unwrap();
    assert_eq!(rec.layers.len(), 3);

    // Layer 2's snapshot carries overlay markers.
    let l2 = store.snapshot_fs(&rec.chain_ids[1]);
    let wh = fs::symlink_metadata(l2.join("etc/removed")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
    assert_eq!(xattr::get(l2.join("opt/old"), "trusted.overlay.opaque").unwrap().as_deref(), Some(&b"y"[..]));
    // Layer 3 hard-links a file of layer 1: copied up into its own snapshot.
    let l3 = store.snapshot_fs(&rec.chain_ids[2]);
    assert_eq!(fs::read(l3.join("bin/sh2")).unwrap(), busybox_bytes());

    let container = tmp.path().join("containers/c1");
    let rootfs = store.mount_rootfs(&rec.name, &container).unwrap();
    let guard = MountGuard { store: &store, dir: container.clone() };
    assert!(is_mounted(&rootfs));
    assert!(!rootfs.join("etc/removed").exists(), "whiteout hides the file");
    assert!(rootfs.join("etc/passwd").exists());
    assert_eq!(fs::read_to_string(rootfs.join("etc/added")).unwrap(), "added in layer 3");
    let mut old: Vec<_> = fs::read_dir(rootfs.join("opt/old")).unwrap().map(|e| e.unwrap().file_name()).collect();
    old.sort();
    assert_eq!(old, ["new"], "opaque dir hides the lower entries");
    let (o, l1, l2m) = (
        fs::metadata(rootfs.join("data/orig")).unwrap(),
        fs::metadata(rootfs.join("data/link1")).unwrap(),
        fs::metadata(rootfs.join("data/link2")).unwrap(),
    );
    assert_eq!((o.ino(), o.nlink()), (l1.ino(), 3));
    assert_eq!(o.ino(), l2m.ino());
    assert_eq!(fs::read_to_string(rootfs.join("usr/share/tree/rel")).unwrap(), "keep");
    assert_eq!(fs::read_to_string(rootfs.join("usr/share/tree/chain")).unwrap(), "keep");
    assert_eq!(fs::read_to_string(rootfs.join("usr/share/tree/dir/keep")).unwrap(), "keep");
    assert_eq!(fs::read_link(rootfs.join("usr/share/tree/abs")).unwrap(), Path::new("/etc/passwd"));
    assert!(fs::symlink_metadata(rootfs.join("usr/share/tree/dangling")).unwrap().file_type().is_symlink());

    // Reading a file through the snapshots, without a mount, shows what the mounted overlay shows.
    for path in ["etc/passwd", "etc/removed", "etc/added", "opt/old/a", "opt/old/new", "usr/lib/keep", "usr/share/tree/abs", "bin", "nope", "etc/nope/x", "bin/busybox/x"] {
        let merged = fs::symlink_metadata(rootfs.join(path)).ok().filter(|m| m.is_file()).map(|_| fs::read(rootfs.join(path)).unwrap());
        assert_eq!(store.read_image_file(&rec.name, Path::new(path)).unwrap(), merged, "{path}");
    }
    assert_eq!(store.read_image_file(&rec.name, Path::new("/etc/added")).unwrap().as_deref(), Some(&b"added in layer 3"[..]));
    assert_eq!(store.read_image_file(&rec.name, Path::new("../etc/passwd")).unwrap(), None);

    // Prepared layers, for a runtime that mounts them itself: the same lowers, top first, and a lease.
    let prepared_dir = tmp.path().join("containers/c2");
    let layers = store.prepare_rootfs(&rec.name, &prepared_dir).unwrap();
    let top_first: Vec<PathBuf> = rec.chain_ids.iter().rev().map(|c| store.snapshot_fs(c)).collect();
    assert_eq!(layers.lowers, top_first);
    assert!(layers.upper.is_dir() && layers.work.is_dir());
    let opts = layers.mount_options();
    assert_eq!(opts.len(), 3);
    assert!(opts[0].starts_with("lowerdir=") && opts[0].split(':').count() == 3, "{opts:?}");
    assert_eq!(opts[1], format!("upperdir={}", prepared_dir.join("upper").display()));
    let leases = || fs::read_dir(store.root().join("leases")).unwrap().count();
    assert_eq!(leases(), 2);
    store.unmount_rootfs_at(&prepared_dir, &prepared_dir.join("rootfs")).unwrap();
    assert!(!layers.upper.exists() && !layers.work.exists());
    assert_eq!(leases(), 1);

    // The rootfs runs: busybox in a chroot sees the merged tree.
    let out = std::process::Command::new("chroot")
        .arg(&rootfs)
        .args(["/bin/sh", "-c", "busybox ls /opt/old; busybox cat /etc/added; test ! -e /etc/removed && echo gone"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "new\nadded in layer 3gone\n");

    // Writes land in the container's upper dir, never in the shared snapshots.
    fs::write(rootfs.join("etc/passwd"), "changed").unwrap();
    fs::remove_file(rootfs.join("usr/lib/keep")).unwrap();
    assert_eq!(fs::read_to_string(container.join("upper/etc/passwd")).unwrap(), "changed");
    assert_eq!(fs::read_to_string(store.snapshot_fs(&rec.chain_ids[0]).join("etc/passwd")).unwrap(), "root:x:0:0:root:/root:/bin/sh\n");
    assert!(store.snapshot_fs(&rec.chain_ids[0]).join("usr/lib/keep").exists());

    // gc keeps what a mounted rootfs uses even after the image is removed.
    store.remove(&rec.name).unwrap();
    let report = store.gc().unwrap();
    assert_eq!(report.snapshots, 0, "leased snapshots stay");
    assert!(store.snapshot_fs(&rec.chain_ids[2]).is_dir());
    drop(guard);
    assert!(!is_mounted(&rootfs));
    assert!(!container.join("upper").exists() && !rootfs.exists());
    let report = store.gc().unwrap();
    assert_eq!(report.snapshots, 3);
    assert!(store.blobs().list().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_selects_the_host_platform_and_docker_manifests_work() {
    require_env!();
    let reg = Registry::start().await;
    let amd = TestImage::with_options(single_layer_image().layers, true);
    let amd_digest = reg.push_image("tests/multiarch", "amd64-only", &amd).await;
    // A second "platform": different content, so a wrong pick is visible.
    let arm = TestImage::new(vec![layer(&[file("arm", b"arm")], Comp::Gzip)]);
    let arm_digest = reg.push_image("tests/multiarch", "arm-only", &arm).await;
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
        "manifests": [
            {"mediaType": arm.manifest_media_type, "digest": arm_digest, "size": arm.manifest.len(),
             "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}},
            {"mediaType": amd.manifest_media_type, "digest": amd_digest, "size": amd.manifest.len(),
             "platform": {"architecture": "amd64", "os": "linux"}}
        ]
    }))
    .unwrap();
    let index_digest = reg.push_manifest("tests/multiarch", "latest", "application/vnd.docker.distribution.manifest.list.v2+json", &index).await;
    let tmp = tempfile::tempdir().unwrap();
    let store = store_in(tmp.path());
    let rec = store.pull(&reference(&reg, "tests/multiarch")).await.unwrap();
    if std::env::consts::ARCH == "x86_64" {
        assert_eq!(rec.manifest_digest.to_string(), amd_digest);
    }
    assert_eq!(rec.index_digest.unwrap().to_string(), index_digest);
    assert_eq!(rec.manifest_media_type, "application/vnd.docker.distribution.manifest.v2+json");

    let arm_store = Store::open(
        &tmp.path().join("arm"),
        skiff_images::StoreOptions { platform: "linux/arm64".parse().unwrap(), ..Default::default() },
    )
    .unwrap();
    let rec = arm_store.pull(&reference(&reg, "tests/multiarch")).await.unwrap();
    assert_eq!(rec.manifest_digest.to_string(), arm_digest);
    let s390 = Store::open(
        &tmp.path().join("s390"),
        skiff_images::StoreOptions { platform: "linux/s390x".parse().unwrap(), ..Default::default() },
    )
    .unwrap();
    let err = s390.pull(&reference(&reg, "tests/multiarch")).await.unwrap_err().to_string();
    assert!(err.contains("no manifest for platform linux/s390x"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_pulls_share_work_and_keep_the_store_consistent() {
    require_env!();
    let reg = Registry::start().await;
    let image = multi_layer_image();
    reg.push_image("tests/concurrent", "v1", &image).await;
    let tmp = tempfile::tempdir().unwrap();
    let store = store_in(tmp.path());
    let r = reference(&reg, "tests/concurrent:v1");
    // Four pulls in this process and two CLI processes on the same root, all at once.
    let procs: Vec<_> = (0..2)
        .map(|_| {
            std::process::Command::new(env!("CARGO_BIN_EXE_skiff-images"))
                .arg("--root")
                .arg(tmp.path())
                .args(["pull", &r.to_string()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let pulls = (0..4).map(|_| {
        let (s, r) = (store.clone(), r.clone());
        tokio::spawn(async move { s.pull(&r).await })
    });
    let results = futures::future::join_all(pulls).await;
    for res in results {
        res.unwrap().unwrap();
    }
    for p in procs {
        let out = p.wait_with_output().unwrap();
        assert!(out.status.success(), "CLI pull: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(store.list().unwrap().len(), 1);
    assert_eq!(store.blobs().list().unwrap().len(), 5, "manifest, config, 3 layers");
    let snaps = fs::read_dir(tmp.path().join("snapshots")).unwrap().count();
    assert_eq!(snaps, 3);
    assert_store_consistent(&store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_and_bad_content_is_rejected_and_the_store_stays_consistent() {
    require_env!();
    let reg = Registry::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let store = store_in(tmp.path());

    // A layer whose bytes in the registry no longer match its digest.
    let image = single_layer_image();
    reg.push_image("tests/corrupt", "v1", &image).await;
    let layer_digest = sha256(&image.layers[0].blob);
    let path = reg.blob_data_path(&layer_digest);
    let mut data = fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0xff;
    fs::write(&path, &data).unwrap();
    let err = store.pull(&reference(&reg, "tests/corrupt:v1")).await.unwrap_err().to_string();
    assert!(err.contains("digest mismatch") && err.contains(&layer_digest), "{err}");
    assert!(!store.blobs().contains(&layer_digest.parse().unwrap()));
    assert!(store.list().unwrap().is_empty());
    assert_store_consistent(&store);

    // A truncated layer (digest of the truncated bytes, diff ID of the whole tar).
    let mut bad = single_layer_image();
    let half = bad.layers[0].blob.len() / 2;
    bad.layers[0].blob.truncate(half);
    let bad = TestImage::new(bad.layers);
    let fixed_config = {
        let mut c: serde_json::Value = serde_json::from_slice(&bad.config).unwrap();
        c["rootfs"]["diff_ids"][0] = sha256(&single_layer_image().layers[0].tar).into();
        serde_json::to_vec(&c).unwrap()
    };
    let manifest = String::from_utf8(bad.manifest.clone()).unwrap().replace(&sha256(&bad.config), &sha256(&fixed_config)).replace(
        &format!("\"size\":{}", bad.config.len()),
        &format!("\"size\":{}", fixed_config.len()),
    );
    reg.push_blob("tests/truncated", &bad.layers[0].blob).await;
    reg.push_blob("tests/truncated", &fixed_config).await;
    reg.push_manifest("tests/truncated", "v1", &bad.manifest_media_type, manifest.as_bytes()).await;
    let err = store.pull(&reference(&reg, "tests/truncated:v1")).await.unwrap_err().to_string();
    assert!(err.contains("truncated"), "{err}");
    assert_store_consistent(&store);

    // Unknown layer media type: refused before any layer is downloaded.
    let odd = TestImage::new(vec![layer(&[file("x", b"x")], Comp::Gzip)]);
    let manifest = String::from_utf8(odd.manifest.clone()).unwrap().replace("application/vnd.oci.image.layer.v1.tar+gzip", "application/x-mystery");
    for b in odd.blobs() {
        reg.push_blob("tests/odd", b).await;
    }
    reg.push_manifest("tests/odd", "v1", &odd.manifest_media_type, manifest.as_bytes()).await;
    let err = store.pull(&reference(&reg, "tests/odd:v1")).await.unwrap_err().to_string();
    assert!(err.contains("unknown layer media type \"application/x-mystery\""), "{err}");
    assert!(!store.blobs().contains(&sha256(&odd.layers[0].blob).parse().unwrap()));

    // A size that does not match the blob.
    let sized = TestImage::new(vec![layer(&[file("y", b"y")], Comp::Gzip)]);
    let real = sized.layers[0].blob.len();
    let manifest = String::from_utf8(sized.manifest.clone()).unwrap().replace(&format!("\"size\":{real}"), &format!("\"size\":{}", real + 7));
    for b in sized.blobs() {
        reg.push_blob("tests/sized", b).await;
    }
    let pushed = reg
        .http
        .put(format!("{}/v2/tests/sized/manifests/v1", reg.base()))
        .header("content-type", sized.manifest_media_type.as_str())
        .body(manifest)
        .send()
        .await
        .unwrap();
    if pushed.status() == 201 {
        let err = store.pull(&reference(&reg, "tests/sized:v1")).await.unwrap_err().to_string();
        assert!(err.contains("size mismatch"), "{err}");
    }

    // Missing image and tag.
    let err = store.pull(&reference(&reg, "tests/nothing:v1")).await.unwrap_err().to_string();
    assert!(err.contains("404"), "{err}");
    assert_store_consistent(&store);
    assert!(store.list().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_from_a_docker_config_file() {
    require_env!();
    let reg = Registry::start_with(true).await;
    reg.push_image("tests/private", "v1", &single_layer_image()).await;
    let tmp = tempfile::tempdir().unwrap();
    let anonymous = store_in(&tmp.path().join("anon"));
    let err = anonymous.pull(&reference(&reg, "tests/private:v1")).await.unwrap_err().to_string();
    assert!(err.contains("no credentials"), "{err}");

    let config = format!(r#"{{"auths": {{"{}": {{"auth": "dGVzdGVyOnMzY3JldA=="}}}}}}"#, reg.host());
    let credentials = skiff_images::auth::CredentialStore::parse(config.as_bytes(), Path::new("config.json")).unwrap();
    let options = skiff_images::StoreOptions {
        registry: skiff_images::RegistryConfig { credentials, ..Default::default() },
        ..Default::default()
    };
    let store = Store::open(&tmp.path().join("auth"), options).unwrap();
    let rec = store.pull(&reference(&reg, "tests/private:v1")).await.unwrap();
    assert_eq!(rec.layers.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_import_round_trip_and_skopeo_archives() {
    require_env!();
    let reg = Registry::start().await;
    reg.push_image("tests/layout", "v2", &multi_layer_image()).await;
    let tmp = tempfile::tempdir().unwrap();
    let store = store_in(&tmp.path().join("a"));
    let rec = store.pull(&reference(&reg, "tests/layout:v2")).await.unwrap();
    let archive = tmp.path().join("image.tar");
    store.export(std::slice::from_ref(&rec.name), fs::File::create(&archive).unwrap()).unwrap();

    let other = store_in(&tmp.path().join("b"));
    let imported = other.import(fs::File::open(&archive).unwrap(), None).await.unwrap();
    assert_eq!(imported.len(), 1);
    assert_eq!(imported[0].name, rec.name);
    assert_eq!(imported[0].manifest_digest, rec.manifest_digest);
    assert_eq!(imported[0].chain_ids, rec.chain_ids);
    let top = other.snapshot_fs(&rec.chain_ids[2]);
    assert_eq!(fs::read_to_string(top.join("etc/added")).unwrap(), "added in layer 3");
    assert_store_consistent(&other);

    // A corrupted archive: a blob whose bytes do not match its name.
    let mut bytes = fs::read(&archive).unwrap();
    let config_pos = bytes.windows(18).position(|w| w == b"\"GREETING=hi\",\"PAT" || w == b"GREETING=hi\"],\"Wor").unwrap_or(0);
    if config_pos > 0 {
        bytes[config_pos + 1] = b'X';
        let bad = tmp.path().join("bad.tar");
        fs::write(&bad, &bytes).unwrap();
        let third = store_in(&tmp.path().join("c"));
        let err = third.import(fs::File::open(&bad).unwrap(), None).await.unwrap_err().to_string();
        assert!(err.contains("digest mismatch"), "{err}");
        assert_store_consistent(&third);
    }
    let err = other.import(&b"not a tar at all, just text padding it out to more than one block"[..], None).await;
    assert!(err.is_err());

    // skopeo reads our archive and writes one we read.
    if Path::new("/usr/bin/skopeo").exists() {
        let out = std::process::Command::new("skopeo")
            .args(["inspect", "--raw", &format!("oci-archive:{}", archive.display())])
            .output()
            .unwrap();
        assert!(out.status.success(), "skopeo inspect: {}", String::from_utf8_lossy(&out.stderr));
        let skopeo_archive = tmp.path().join("skopeo.tar");
        let out = std::process::Command::new("skopeo")
            .args(["copy", "--src-tls-verify=false", "--insecure-policy"])
            .arg(format!("docker://{}/tests/layout:v2", reg.host()))
            .arg(format!("oci-archive:{}:v2", skopeo_archive.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&out.stderr));
        let fresh = store_in(&tmp.path().join("d"));
        let err = fresh.import(fs::File::open(&skopeo_archive).unwrap(), None).await.unwrap_err().to_string();
        assert!(err.contains("no full name"), "{err}");
        let name: Reference = "example.com/imported/app:v2".parse().unwrap();
        let imported = fresh.import(fs::File::open(&skopeo_archive).unwrap(), Some(name)).await.unwrap();
        assert_eq!(imported[0].name, "example.com/imported/app:v2");
        assert_eq!(imported[0].chain_ids, rec.chain_ids);
        assert_store_consistent(&fresh);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_removes_unreferenced_content_and_leftovers() {
    require_env!();
    let reg = Registry::start().await;
    reg.push_image("tests/gc", "one", &single_layer_image()).await;
    reg.push_image("tests/gc", "multi", &multi_layer_image()).await;
    let tmp = tempfile::tempdir().unwrap();
    let store = store_in(tmp.path());
    let one = store.pull(&reference(&reg, "tests/gc:one")).await.unwrap();
    let multi = store.pull(&reference(&reg, "tests/gc:multi")).await.unwrap();
    // Leftovers of an interrupted pull.
    fs::write(store.blobs().ingest_dir().join("abc.123.tmp"), b"partial").unwrap();
    fs::create_dir_all(tmp.path().join("snapshots/.tmp-999/fs")).unwrap();

    let report = store.gc().unwrap();
    assert_eq!((report.blobs, report.snapshots, report.temp_files), (0, 0, 2));
    store.remove("nonexistent:tag").unwrap_err();
    store.remove(&one.name).unwrap();
    let report = store.gc().unwrap();
    assert_eq!((report.blobs, report.snapshots), (3, 1), "manifest, config, layer; one snapshot");
    assert!(store.snapshot_fs(&multi.chain_ids[2]).is_dir());
    assert!(store.get(&multi.name).is_ok());
    assert_store_consistent(&store);
}
