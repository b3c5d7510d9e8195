use super::*;
use std::os::unix::fs::FileTypeExt;

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// One tar entry, with its name written raw so that hostile names (`..`) can be built.
struct E<'a> {
    name: &'a str,
    kind: tar::EntryType,
    link: &'a str,
    data: &'a [u8],
    mode: u32,
}

fn file<'a>(name: &'a str, data: &'a [u8]) -> E<'a> {
    E { name, kind: tar::EntryType::Regular, link: "", data, mode: 0o644 }
}
fn dir(name: &str) -> E<'_> {
    E { name, kind: tar::EntryType::Directory, link: "", data: b"", mode: 0o755 }
}
fn symlink<'a>(name: &'a str, link: &'a str) -> E<'a> {
    E { name, kind: tar::EntryType::Symlink, link, data: b"", mode: 0o777 }
}
fn hardlink<'a>(name: &'a str, link: &'a str) -> E<'a> {
    E { name, kind: tar::EntryType::Link, link, data: b"", mode: 0o644 }
}

fn tar_of(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_old();
        {
            let old = h.as_old_mut();
            old.name[..e.name.len()].copy_from_slice(e.name.as_bytes());
            old.linkname[..e.link.len()].copy_from_slice(e.link.as_bytes());
        }
        h.set_entry_type(e.kind);
        h.set_mode(e.mode);
        h.set_size(e.data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        h.set_cksum();
        b.append(&h, e.data).unwrap();
    }
    b.into_inner().unwrap()
}

fn apply(entries: &[E], dest: &Path, lowers: &[PathBuf]) -> Result<Digest, UnpackError> {
    let data = tar_of(entries);
    apply_layer(&data[..], Compression::None, dest, lowers, &ApplyOptions::default())
}

#[test]
fn plans_paths_and_whiteouts() {
    let p = |s: &str| plan_entry(Path::new(s), Kind::Regular, None).unwrap();
    assert_eq!(p("/etc/passwd"), Action::Write("etc/passwd".into()));
    assert_eq!(p("./a/./b"), Action::Write("a/b".into()));
    assert_eq!(p("./"), Action::Skip);
    assert_eq!(p("a/.wh.b"), Action::Whiteout("a/b".into()));
    assert_eq!(p(".wh.top"), Action::Whiteout("top".into()));
    assert_eq!(p("a/b/.wh..wh..opq"), Action::Opaque("a/b".into()));
    assert_eq!(p(".wh..wh..opq"), Action::Opaque("".into()));
    assert_eq!(p("a/.wh..wh.plnk"), Action::Skip);
    assert!(matches!(plan_entry(Path::new("a/.wh."), Kind::Regular, None), Err(UnpackError::BadWhiteout { .. })));
    assert!(matches!(plan_entry(Path::new("a/.wh.x"), Kind::Directory, None), Err(UnpackError::BadWhiteout { .. })));
}

#[test]
fn plans_reject_escapes() {
    for bad in ["../etc/passwd", "a/../../x", "/../x"] {
        let err = plan_entry(Path::new(bad), Kind::Regular, None).unwrap_err();
        assert!(matches!(err, UnpackError::Escape { .. }), "{bad}: {err}");
        assert!(err.to_string().contains("escapes the root"), "{err}");
    }
    let sym = |name: &str, target: &str| plan_entry(Path::new(name), Kind::Symlink, Some(Path::new(target)));
    assert!(sym("bin/sh", "busybox").is_ok());
    assert!(sym("bin/sh", "/bin/busybox").is_ok(), "absolute targets resolve inside the root");
    assert!(sym("usr/lib/x", "../../lib/x").is_ok());
    assert!(sym("a/b/c", "../../../etc").is_err(), "climbs above the root");
    assert!(sym("a", "x/../../y").is_err());
    assert!(sym("a", "").is_err());
    let hl = |name: &str, target: &str| plan_entry(Path::new(name), Kind::HardLink, Some(Path::new(target)));
    assert_eq!(hl("a", "/bin/busybox").unwrap(), Action::HardLink { path: "a".into(), target: "bin/busybox".into() });
    assert!(matches!(hl("a", "../../etc/shadow"), Err(UnpackError::Escape { .. })));
    assert!(matches!(hl("a", "/"), Err(UnpackError::Escape { .. })));
}

#[test]
fn unpacks_files_links_and_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("fs");
    fs::create_dir(&dest).unwrap();
    let diff = apply(
        &[
            dir("bin"),
            file("bin/busybox", b"#!elf"),
            symlink("bin/sh", "busybox"),
            hardlink("bin/ls", "bin/busybox"),
            E { mode: 0o4755, ..file("bin/su", b"su") },
            file("deep/implicit/file", b"x"),
        ],
        &dest,
        &[],
    )
    .unwrap();
    assert_eq!(diff, Digest::of(&tar_of(&[
        dir("bin"),
        file("bin/busybox", b"#!elf"),
        symlink("bin/sh", "busybox"),
        hardlink("bin/ls", "bin/busybox"),
        E { mode: 0o4755, ..file("bin/su", b"su") },
        file("deep/implicit/file", b"x"),
    ])));
    assert_eq!(fs::read(dest.join("bin/busybox")).unwrap(), b"#!elf");
    assert_eq!(fs::read_link(dest.join("bin/sh")).unwrap(), Path::new("busybox"));
    let a = fs::metadata(dest.join("bin/busybox")).unwrap();
    let b = fs::metadata(dest.join("bin/ls")).unwrap();
    assert_eq!(a.ino(), b.ino(), "hard link shares the inode");
    assert_eq!(fs::metadata(dest.join("bin/su")).unwrap().mode() & 0o7777, 0o4755);
    assert_eq!(fs::metadata(dest.join("deep/implicit")).unwrap().mode() & 0o777, 0o755);
    assert_eq!(a.mtime(), 1_700_000_000);
}

#[test]
fn rejects_writing_through_symlinks_and_escaping_links() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    fs::create_dir(&outside).unwrap();
    fs::write(outside.join("secret"), b"keep").unwrap();
    let cases: Vec<(Vec<E>, &str)> = vec![
        (vec![symlink("etc", outside.to_str().unwrap()), file("etc/secret", b"pwned")], "through the symlink"),
        (vec![symlink("l", "."), dir("d"), symlink("d/up", ".."), file("d/up/x", b"x")], "through the symlink"),
        (vec![file("../outside/secret", b"pwned")], "escapes the root"),
        (vec![hardlink("h", "../outside/secret")], "escapes the root"),
        (vec![symlink("l", outside.to_str().unwrap()), hardlink("h", "l/secret")], "goes through a symlink"),
        (vec![symlink("a/b", "../../../outside")], "leads outside"),
        (vec![hardlink("h", "does/not/exist")], "does not exist"),
    ];
    for (i, (entries, want)) in cases.iter().enumerate() {
        let dest = tmp.path().join(format!("fs{i}"));
        fs::create_dir(&dest).unwrap();
        let err = apply(entries, &dest, &[]).unwrap_err();
        assert!(err.to_string().contains(want), "case {i}: {err}");
    }
    assert_eq!(fs::read(outside.join("secret")).unwrap(), b"keep");
    assert_eq!(fs::read_dir(&outside).unwrap().count(), 1);
}

#[test]
fn truncated_and_unknown_layers_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tar_of(&[file("a", &[7u8; 5000])]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    io::Write::write_all(&mut gz, &data).unwrap();
    let gz = gz.finish().unwrap();
    let cut = &gz[..gz.len() / 2];
    let err = apply_layer(cut, Compression::Gzip, tmp.path(), &[], &ApplyOptions::default()).unwrap_err();
    assert!(err.to_string().contains("truncated"), "{err}");
    let zs = zstd::encode_all(&data[..], 3).unwrap();
    let diff = apply_layer(&zs[..], Compression::Zstd, tmp.path(), &[], &ApplyOptions::default()).unwrap();
    assert_eq!(diff, Digest::of(&data));
    assert!(matches!(Compression::from_media_type("application/x-foo"), Err(UnpackError::MediaType(_))));
    assert_eq!(Compression::from_media_type("application/vnd.docker.image.rootfs.diff.tar.gzip").unwrap(), Compression::Gzip);
}

#[test]
fn whiteouts_and_opaque_dirs_become_overlay_markers() {
    if !is_root() {
        eprintln!("skipped: overlay whiteouts (char devices, trusted.* xattrs) need root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let lower = tmp.path().join("lower");
    let upper = tmp.path().join("upper");
    fs::create_dir_all(&lower).unwrap();
    fs::create_dir_all(&upper).unwrap();
    apply(&[E { mode: 0o750, ..dir("etc") }, file("etc/old", b"1"), dir("var"), file("var/x", b"x"), file("gone", b"g"), file("linked", b"L")], &lower, &[])
        .unwrap();
    apply(
        &[
            file(".wh.gone", b""),
            file("etc/.wh.old", b""),
            dir("var"),
            file("var/.wh..wh..opq", b""),
            file("var/new", b"n"),
            hardlink("again", "linked"),
        ],
        &upper,
        std::slice::from_ref(&lower),
    )
    .unwrap();
    let wh = fs::symlink_metadata(upper.join("gone")).unwrap();
    assert!(wh.file_type().is_char_device() && wh.rdev() == 0, "whiteout is a 0/0 char device");
    assert!(fs::symlink_metadata(upper.join("etc/old")).unwrap().file_type().is_char_device());
    assert_eq!(fs::metadata(upper.join("etc")).unwrap().mode() & 0o777, 0o750, "implicit parent copies the lower's mode");
    assert_eq!(xattr::get(upper.join("var"), OPAQUE_XATTR).unwrap().as_deref(), Some(&b"y"[..]));
    assert_eq!(fs::read(upper.join("var/new")).unwrap(), b"n");
    assert_eq!(fs::read(upper.join("again")).unwrap(), b"L", "hard link target copied up from below");
}

#[test]
fn refuses_to_shadow_a_lower_symlink_with_an_implicit_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let (lower, upper) = (tmp.path().join("lower"), tmp.path().join("upper"));
    fs::create_dir_all(&lower).unwrap();
    fs::create_dir_all(&upper).unwrap();
    apply(&[dir("usr"), dir("usr/lib"), symlink("lib", "usr/lib")], &lower, &[]).unwrap();
    let err = apply(&[file("lib/libc.so", b"x")], &upper, std::slice::from_ref(&lower)).unwrap_err();
    assert!(matches!(err, UnpackError::ThroughSymlink { .. }), "{err}");
    // Replacing the symlink itself is fine.
    apply(&[dir("lib"), file("lib/libc.so", b"x")], &upper, &[lower]).unwrap();
}
