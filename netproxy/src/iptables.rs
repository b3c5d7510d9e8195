//! The iptables executor: `iptables-restore --noflush` and `iptables-save` behind the [`Iptables`] trait, with a
//! real implementation (the `iptables` package's binaries, optionally entered into a network namespace with
//! `nsenter`) and a recording fake for tests. Both tables go to the kernel in one restore process per sync.
//!
//! The CLI is used rather than a crate: the `iptables` crate runs one process per rule, which the measurements in
//! machine-facts.md show to be 200–300× slower than one batched restore, and no crate speaks the restore format.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("starting {cmd}: {source}")]
    Spawn { cmd: String, source: std::io::Error },
    #[error("writing the rules to {cmd}: {source}")]
    Stdin { cmd: String, source: std::io::Error },
    #[error("{cmd} failed ({status}): {stderr}")]
    Failed { cmd: String, status: std::process::ExitStatus, stderr: String },
    #[error("{cmd} did not finish within {after:?}; killed")]
    Timeout { cmd: String, after: Duration },
    #[error("{0}")]
    Injected(String),
}

/// The two things netproxy asks of iptables.
pub trait Iptables: Send + Sync {
    /// Applies restore input with `--noflush` (tables not named and chains not declared stay untouched).
    fn restore(&self, text: &str) -> Result<(), IptablesError>;
    /// `iptables-save -t <table>`.
    fn save(&self, table: &str) -> Result<String, IptablesError>;
}

/// Which iptables flavour writes the kernel's tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// iptables-nft: rules in nf_tables. `--noflush` restores slow down superlinearly with the table's size.
    Nft,
    /// iptables-legacy: the x_tables blob; a restore is a read-modify-write of the whole table, linear in size.
    Legacy,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Nft => "nft",
            Backend::Legacy => "legacy",
        }
    }
}

/// The binaries of one backend, run inside `netns` when given.
#[derive(Clone, Debug)]
pub struct IptablesCli {
    pub backend: Backend,
    pub restore_bin: PathBuf,
    pub save_bin: PathBuf,
    /// A network namespace file (`/run/netns/NAME`) to enter with `nsenter --net=`; `None`: our own.
    pub netns: Option<PathBuf>,
    /// Kill a restore that takes longer (the benchmark bounds nf_tables runs with it); `None`: wait.
    pub timeout: Option<Duration>,
}

impl IptablesCli {
    pub fn new(backend: Backend, netns: Option<PathBuf>) -> IptablesCli {
        let (restore, save) = match backend {
            Backend::Nft => ("iptables-nft-restore", "iptables-nft-save"),
            Backend::Legacy => ("iptables-legacy-restore", "iptables-legacy-save"),
        };
        IptablesCli { backend, restore_bin: restore.into(), save_bin: save.into(), netns, timeout: None }
    }

    fn command(&self, bin: &PathBuf) -> Command {
        match &self.netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net={}", ns.display())).arg(bin);
                c
            }
            None => Command::new(bin),
        }
    }

    /// How many rules of other owners this backend holds in the nat and filter tables (for the backend choice).
    pub fn foreign_rules(&self) -> Result<usize, IptablesError> {
        let mut n = 0;
        for table in ["nat", "filter"] {
            n += self.save(table)?.lines().filter(|l| l.starts_with("-A ") && !l.contains("SKIFF-")).count();
        }
        Ok(n)
    }

    /// Do this backend's binaries work here (kernel support included)?
    pub fn works(&self) -> bool {
        self.save("nat").is_ok()
    }
}

impl Iptables for IptablesCli {
    fn restore(&self, text: &str) -> Result<(), IptablesError> {
        let cmd = format!("{} --noflush", self.restore_bin.display());
        let mut child = self
            .command(&self.restore_bin)
            .args(["-w", "5", "--noflush"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| IptablesError::Spawn { cmd: cmd.clone(), source })?;
        let write = child.stdin.take().map(|mut s| s.write_all(text.as_bytes()));
        if let Some(limit) = self.timeout {
            let start = Instant::now();
            while child.try_wait().map_err(|source| IptablesError::Spawn { cmd: cmd.clone(), source })?.is_none() {
                if start.elapsed() > limit {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(IptablesError::Timeout { cmd, after: limit });
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        let out = child.wait_with_output().map_err(|source| IptablesError::Spawn { cmd: cmd.clone(), source })?;
        if !out.status.success() {
            return Err(IptablesError::Failed { cmd, status: out.status, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() });
        }
        if let Some(Err(source)) = write {
            return Err(IptablesError::Stdin { cmd, source });
        }
        Ok(())
    }

    fn save(&self, table: &str) -> Result<String, IptablesError> {
        let cmd = format!("{} -t {table}", self.save_bin.display());
        let out = self
            .command(&self.save_bin)
            .args(["-t", table])
            .stdin(Stdio::null())
            .output()
            .map_err(|source| IptablesError::Spawn { cmd: cmd.clone(), source })?;
        if !out.status.success() {
            return Err(IptablesError::Failed { cmd, status: out.status, stderr: String::from_utf8_lossy(&out.stderr).trim().to_string() });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// Removes all our chains and jumps from `ipt`'s tables; returns how many chains went.
pub fn cleanup(ipt: &dyn Iptables) -> Result<usize, IptablesError> {
    let kernel = crate::restore::KernelState::parse(&ipt.save("nat")?, &ipt.save("filter")?);
    let text = crate::restore::cleanup_plan(&kernel);
    if !text.is_empty() {
        ipt.restore(&text)?;
    }
    Ok(kernel.nat_chains.len() + kernel.filter_chains.len())
}

/// Chooses the backend for `--backend auto`, with the reason (logged).
///
/// nf_tables when its binaries work, unless other owners' rules already live in legacy tables and none in
/// nf_tables (then we join them). Measured here (docs/benchmarks.md) with our lean ruleset at 10,000 Services: a
/// one-Service change costs ~60 ms in `iptables-nft-restore --noflush` but ~250 ms in legacy, which rewrites
/// the whole table blob on every restore; legacy only wins the rare full sync (~0.6 s vs ~3 s). Partial syncs are
/// the steady state, so nf_tables scales better for us; the superlinear `--noflush` cost in machine-facts.md
/// comes from kube-proxy's 4× larger chain count.
pub fn choose_backend(netns: Option<PathBuf>) -> (Backend, String) {
    let legacy = IptablesCli::new(Backend::Legacy, netns.clone());
    let nft = IptablesCli::new(Backend::Nft, netns);
    if !nft.works() {
        return (Backend::Legacy, "iptables-nft does not work here".into());
    }
    if !legacy.works() {
        return (Backend::Nft, "iptables-legacy does not work here".into());
    }
    match (legacy.foreign_rules(), nft.foreign_rules()) {
        (Ok(l), Ok(0)) if l > 0 => (Backend::Legacy, format!("{l} rules of other owners are in legacy tables and nf_tables is empty; joining them")),
        _ => (Backend::Nft, "one-Service changes are ~4x cheaper in nf_tables than in legacy at 10,000 Services".into()),
    }
}

/// A fake that records every restore input and serves canned `iptables-save` output; `fail_next` makes the next
/// restore fail. Clones share the same record.
#[derive(Clone, Default)]
pub struct RecordingIptables {
    inner: Arc<Mutex<Recorded>>,
}

#[derive(Default)]
struct Recorded {
    restores: Vec<String>,
    saves: std::collections::BTreeMap<String, String>,
    fail_next: bool,
}

impl RecordingIptables {
    pub fn restores(&self) -> Vec<String> {
        self.inner.lock().expect("fake lock").restores.clone()
    }
    pub fn set_save(&self, table: &str, text: &str) {
        self.inner.lock().expect("fake lock").saves.insert(table.into(), text.into());
    }
    pub fn fail_next(&self) {
        self.inner.lock().expect("fake lock").fail_next = true;
    }
}

impl Iptables for RecordingIptables {
    fn restore(&self, text: &str) -> Result<(), IptablesError> {
        let mut r = self.inner.lock().expect("fake lock");
        r.restores.push(text.to_string());
        if std::mem::take(&mut r.fail_next) {
            return Err(IptablesError::Injected("injected restore failure".into()));
        }
        Ok(())
    }
    fn save(&self, table: &str) -> Result<String, IptablesError> {
        Ok(self.inner.lock().expect("fake lock").saves.get(table).cloned().unwrap_or_default())
    }
}
