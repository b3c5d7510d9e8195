//! `features`: what this runtime supports, as the OCI runtime features JSON.

use libcontainer::oci_spec::runtime::{
    ApparmorBuilder, CgroupBuilder, Features, FeaturesBuilder, IDMapBuilder, IntelRdtBuilder,
    LinuxFeatureBuilder, LinuxNamespaceType, MountExtensionsBuilder, SeccompBuilder,
    SelinuxBuilder, VERSION,
};
use libcontainer::syscall::linux::MountOption;

use crate::error::{Error, Result};

pub fn features() -> Result<i32> {
    super::print_json(&document()?)?;
    Ok(0)
}

const CAPABILITIES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const HOOKS: [&str; 6] = [
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
];

/// The features document; what libcontainer 0.7 implements, with its default cargo features
/// (cgroups v1, v2 and systemd, libseccomp).
pub fn document() -> Result<Features> {
    let e = |e: libcontainer::oci_spec::OciSpecError| Error::InvalidArgument(e.to_string());
    let linux = LinuxFeatureBuilder::default()
        .namespaces(vec![
            LinuxNamespaceType::Pid,
            LinuxNamespaceType::Network,
            LinuxNamespaceType::Uts,
            LinuxNamespaceType::Ipc,
            LinuxNamespaceType::Mount,
            LinuxNamespaceType::User,
            LinuxNamespaceType::Cgroup,
            LinuxNamespaceType::Time,
        ])
        .capabilities(CAPABILITIES.map(String::from).to_vec())
        .cgroup(
            CgroupBuilder::default()
                .v1(true)
                .v2(true)
                .systemd(true)
                .systemd_user(true)
                .rdma(false)
                .build()
                .map_err(e)?,
        )
        .seccomp(SeccompBuilder::default().enabled(true).build().map_err(e)?)
        .apparmor(
            ApparmorBuilder::default()
                .enabled(true)
                .build()
                .map_err(e)?,
        )
        .selinux(
            SelinuxBuilder::default()
                .enabled(false)
                .build()
                .map_err(e)?,
        )
        .intel_rdt(
            IntelRdtBuilder::default()
                .enabled(true)
                .build()
                .map_err(e)?,
        )
        .mount_extensions(
            MountExtensionsBuilder::default()
                .idmap(IDMapBuilder::default().enabled(false).build().map_err(e)?)
                .build()
                .map_err(e)?,
        )
        .build()
        .map_err(e)?;
    FeaturesBuilder::default()
        .oci_version_min("1.0.0")
        .oci_version_max(VERSION)
        .hooks(HOOKS.map(String::from).to_vec())
        .mount_options(MountOption::known_options())
        .linux(linux)
        .build()
        .map_err(e)
}

#[cfg(test)]
mod tests {
    #[test]
    fn document_serializes_with_spec_field_names() {
        let v = serde_json::to_value(super::document().unwrap()).unwrap();
        assert_eq!(v["ociVersionMin"], "1.0.0");
        assert!(v["linux"]["namespaces"].as_array().unwrap().len() >= 7);
        assert_eq!(v["linux"]["cgroup"]["v1"], true);
        assert!(v["mountOptions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|o| o == "ro"));
    }
}
