//! Cgroup helpers libcontainer does not provide: a manager for an existing container, and the
//! removal of the container's own cgroup directory in every hierarchy.
//!
//! libcontainer's v1 manager removes the leaf directory of `linux.cgroupsPath` only in the
//! hierarchies of the controllers it knows; [`plan_removal`] lists that leaf in every mounted
//! hierarchy (v1, named and, on a hybrid host, the unified one) and [`remove_empty`] removes them
//! with `rmdir`, which the kernel refuses for a cgroup that still has processes or children.
//!
//! The parents of the leaf are left in place, as runc and crun leave them: they are shared (the
//! agent's `/skiff/<qos>/pod<uid>/<id>` layout) and removing an empty one races with a
//! concurrent create below it (its `mkdir -p` fails with ENOENT when the parent goes between two
//! steps). The agent removes a pod's cgroup with the pod. Removing the parents also cost a cgroup
//! `rmdir` here and a cgroup `mkdir` in the next container's create in every hierarchy (about
//! 1 ms of a 12 ms `run` when the parent was otherwise empty).

use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use libcgroups::common::{AnyCgroupManager, CgroupConfig};
use libcontainer::container::Container;

use crate::error::{Error, Result};

/// The cgroup manager of an existing container, from the config libcontainer saved at create.
pub fn manager(container: &Container) -> Result<AnyCgroupManager> {
    let id = container.id().to_owned();
    let config = container
        .spec()
        .map_err(|source| Error::container("read the saved config of", &id, source))?;
    libcgroups::common::create_cgroup_manager(CgroupConfig {
        cgroup_path: config.cgroup_path,
        systemd_cgroup: container.systemd(),
        container_name: id.clone(),
    })
    .map_err(|source| Error::Cgroup {
        op: "open the cgroup manager",
        id,
        source: Box::new(source),
    })
}

/// Mount points of cgroup (v1) and cgroup2 file systems in a `/proc/self/mountinfo` text.
pub fn cgroup_mounts(mountinfo: &str) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let fstype = right.split_whitespace().next()?;
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            let mount_point = left.split_whitespace().nth(4)?;
            Some(PathBuf::from(unescape_octal(mount_point)))
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let octal = std::str::from_utf8(&b[i + 1..i + 4]).ok();
            if let Some(v) = octal.and_then(|o| u8::from_str_radix(o, 8).ok()) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The leaf directory of `cgroup_path` in each hierarchy, never a mount point itself and never
/// outside it. Systemd-style paths (`slice:prefix:name`) are left to systemd.
pub fn plan_removal(mounts: &[PathBuf], cgroup_path: &Path) -> Vec<PathBuf> {
    if cgroup_path.to_string_lossy().split(':').count() == 3 && !cgroup_path.starts_with("/") {
        return Vec::new();
    }
    let parts: Vec<&std::ffi::OsStr> = cgroup_path
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        })
        .collect();
    if parts.is_empty() || cgroup_path.components().any(|c| c == Component::ParentDir) {
        return Vec::new();
    }
    mounts
        .iter()
        .map(|mount| parts.iter().fold(mount.clone(), |p, part| p.join(part)))
        .collect()
}

/// Removes the (empty) cgroup directory of `cgroup_path` in every mounted hierarchy.
pub fn remove_empty(id: &str, cgroup_path: &Path) -> Result<()> {
    remove_if_empty(id, cgroup_path).map(|_| ())
}

/// Like [`remove_empty`], and says whether the leaf is gone from every hierarchy (false: some
/// leaf still has processes or children).
pub fn remove_if_empty(id: &str, cgroup_path: &Path) -> Result<bool> {
    let mut all_gone = true;
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")
        .map_err(|e| Error::io("read /proc/self/mountinfo", e))?;
    for dir in plan_removal(&cgroup_mounts(&mountinfo), cgroup_path) {
        match std::fs::remove_dir(&dir) {
            Ok(()) => tracing::debug!(dir = %dir.display(), "removed cgroup directory"),
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            // Still in use (processes or child cgroups): keep it.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc_errno::EBUSY) | Some(libc_errno::ENOTEMPTY)
                ) =>
            {
                all_gone = false;
            }
            Err(e) => {
                return Err(Error::Cgroup {
                    op: "remove a cgroup directory",
                    id: id.to_owned(),
                    source: Box::new(Error::io(format!("rmdir {}", dir.display()), e)),
                })
            }
        }
    }
    Ok(all_gone)
}

mod libc_errno {
    pub const EBUSY: i32 = nix::errno::Errno::EBUSY as i32;
    pub const ENOTEMPTY: i32 = nix::errno::Errno::ENOTEMPTY as i32;
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
25 30 0:23 / /sys rw,nosuid shared:7 - sysfs sysfs rw
35 25 0:30 / /sys/fs/cgroup ro,nosuid shared:9 - tmpfs tmpfs ro,mode=755
36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate
40 35 0:35 / /sys/fs/cgroup/memory rw,nosuid shared:15 - cgroup cgroup rw,memory
41 35 0:36 / /sys/fs/cgroup/my\\040dir rw shared:16 - cgroup cgroup rw,pids
";

    #[test]
    fn finds_v1_and_v2_mounts() {
        assert_eq!(
            cgroup_mounts(MOUNTINFO),
            vec![
                PathBuf::from("/sys/fs/cgroup/unified"),
                PathBuf::from("/sys/fs/cgroup/memory"),
                PathBuf::from("/sys/fs/cgroup/my dir"),
            ]
        );
    }

    #[test]
    fn plans_the_leaf_in_every_mount_and_keeps_the_parents() {
        let mounts = vec![PathBuf::from("/m1"), PathBuf::from("/m2")];
        let plan = plan_removal(&mounts, Path::new("/skiff/pod/c1"));
        assert_eq!(
            plan,
            vec![
                PathBuf::from("/m1/skiff/pod/c1"),
                PathBuf::from("/m2/skiff/pod/c1"),
            ]
        );
    }

    #[test]
    fn relative_paths_are_under_the_mount() {
        let plan = plan_removal(&[PathBuf::from("/m")], Path::new("a/b"));
        assert_eq!(plan, vec![PathBuf::from("/m/a/b")]);
    }

    #[test]
    fn never_plans_outside_or_the_mount_itself() {
        let mounts = [PathBuf::from("/m")];
        assert!(plan_removal(&mounts, Path::new("/")).is_empty());
        assert!(plan_removal(&mounts, Path::new("/a/../../etc")).is_empty());
        assert!(plan_removal(&mounts, Path::new("system.slice:skiff:c1")).is_empty());
    }
}
