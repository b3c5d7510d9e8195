//! The per-container monitor (`skiff-agent monitor ...`), the role of conmon / containerd-shim.
//!
//! A single-threaded process in its own session (so it outlives the agent and is not hit by signals aimed at the
//! agent's process group). It makes itself a child subreaper, runs `skiff-runtime run --detach` (create and start
//! in one runtime process, as `runc run -d`) with pipes as the container's stdout/stderr, relays both pipes into the
//! CRI log file, reaps the container's init when it exits (it is re-parented here when the runtime exits) and writes
//! `exit.json`.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::Utc;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::state::{write_json, Exited, Started, EXIT, STARTED};
use super::stdin::{Interest, StdinRelay};

#[derive(clap::Args, Debug, Clone)]
pub struct MonitorArgs {
    #[arg(long)]
    pub runtime: PathBuf,
    #[arg(long)]
    pub runtime_root: PathBuf,
    #[arg(long)]
    pub id: String,
    #[arg(long)]
    pub bundle: PathBuf,
    #[arg(long)]
    pub log_file: PathBuf,
    /// The attempt's state dir: started.json, exit.json, pid, runtime.log.
    #[arg(long)]
    pub state_dir: PathBuf,
    /// Rotate the log file at this size: `N.log` → `N.log.1` → ... → `N.log.<max_files - 1>`.
    #[arg(long, default_value_t = 10 << 20)]
    pub log_max_size: u64,
    #[arg(long, default_value_t = 5)]
    pub log_max_files: u32,
    /// The container has a stdin (`stdin: true`): keep it open and take input from attach sessions.
    #[arg(long)]
    pub stdin: bool,
    /// With --stdin: the end of the first attach session closes it (`stdinOnce: true`).
    #[arg(long)]
    pub stdin_once: bool,
    /// The container runs on a terminal (`tty: true`); the monitor holds its master.
    #[arg(long)]
    pub tty: bool,
}

impl MonitorArgs {
    /// The command line of `skiff-agent monitor ...`.
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = vec!["monitor".into()];
        v.extend(self.flags());
        v
    }

    /// The command line of `skiff-monitor ...`: the options alone.
    pub fn flags(&self) -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = Vec::new();
        for (k, p) in [
            ("--runtime", self.runtime.as_os_str()),
            ("--runtime-root", self.runtime_root.as_os_str()),
            ("--id", self.id.as_ref()),
            ("--bundle", self.bundle.as_os_str()),
            ("--log-file", self.log_file.as_os_str()),
            ("--state-dir", self.state_dir.as_os_str()),
        ] {
            v.push(k.into());
            v.push(p.into());
        }
        v.extend(["--log-max-size".into(), self.log_max_size.to_string().into()]);
        v.extend(["--log-max-files".into(), self.log_max_files.to_string().into()]);
        if self.stdin {
            v.push("--stdin".into());
        }
        if self.stdin_once {
            v.push("--stdin-once".into());
        }
        if self.tty {
            v.push("--tty".into());
        }
        v
    }
}

/// The command that starts a monitor: `skiff-monitor` beside the running executable when it is there (a small
/// binary, cheap to start once per container), else this executable's `monitor` subcommand.
pub fn command(args: &MonitorArgs) -> std::io::Result<Command> {
    static SIBLING: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    let exe = std::env::current_exe()?;
    let sibling = SIBLING.get_or_init(|| Some(exe.with_file_name("skiff-monitor")).filter(|p| p.is_file()));
    Ok(match sibling {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(args.flags());
            c
        }
        None => {
            let mut c = Command::new(exe);
            c.args(args.to_args());
            c
        }
    })
}

/// One CRI log line: `<RFC3339Nano> <stream> <F|P> <text>`.
pub fn cri_line(stream: &str, partial: bool, text: &[u8]) -> Vec<u8> {
    let ts = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
    let mut line = format!("{ts} {stream} {} ", if partial { "P" } else { "F" }).into_bytes();
    line.extend_from_slice(text);
    line.push(b'\n');
    line
}

const MAX_LINE: usize = 16 * 1024;

/// Splits buffered output into CRI lines: complete lines as F, over-long ones as P chunks.
pub struct LineSplitter {
    stream: &'static str,
    buf: Vec<u8>,
}

impl LineSplitter {
    pub fn new(stream: &'static str) -> Self {
        LineSplitter { stream, buf: vec![] }
    }
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) {
        self.buf.extend_from_slice(data);
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let rest = self.buf.split_off(i + 1);
            out.extend(cri_line(self.stream, false, &self.buf[..i]));
            self.buf = rest;
        }
        while self.buf.len() >= MAX_LINE {
            let rest = self.buf.split_off(MAX_LINE);
            out.extend(cri_line(self.stream, true, &self.buf));
            self.buf = rest;
        }
    }
    /// Logs what is buffered as a partial line now (the next data continues it).
    pub fn flush_partial(&mut self, out: &mut Vec<u8>) {
        if !self.buf.is_empty() {
            out.extend(cri_line(self.stream, true, &self.buf));
            self.buf.clear();
        }
    }
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if !self.buf.is_empty() {
            out.extend(cri_line(self.stream, false, &self.buf));
            self.buf.clear();
        }
    }
}

fn fail(state_dir: &Path, reason: &str, message: String) -> anyhow::Result<()> {
    let exited = Exited { exit_code: 128, finished_at: Utc::now(), reason: reason.into(), message: message.clone() };
    write_json(&state_dir.join(EXIT), &exited).context("writing exit.json")?;
    signal_ready();
    anyhow::bail!("{reason}: {message}")
}

/// Tells the agent that started.json or exit.json is written: the agent gives the monitor a pipe as its stdout and
/// waits for it to close. Standard output becomes standard error (the monitor's log) from here on.
fn signal_ready() {
    let _ = nix::unistd::dup2(2, 1);
}

fn runtime(args: &MonitorArgs) -> Command {
    let mut c = Command::new(&args.runtime);
    c.arg("--root").arg(&args.runtime_root).arg("--log").arg(args.state_dir.join("runtime.log"));
    c.stdin(Stdio::null());
    c
}

/// `skiff-runtime run --detach ID -b BUNDLE --pid-file PID_FILE`: one runtime process instead of `create` then
/// `start` (an exec, a state load and a state write less per container start).
fn run_command(args: &MonitorArgs, pid_file: &Path) -> Command {
    let mut c = runtime(args);
    c.arg("run").arg("--detach").arg(&args.id).arg("-b").arg(&args.bundle).arg("--pid-file").arg(pid_file);
    c
}

/// Why `run --detach` failed, as the kubelet tells CreateContainer from StartContainer failures: the runtime writes
/// the pid file once the container is created, so a failure with a pid file is a failed start (the runtime has
/// already deleted the container then).
fn run_failure(pid_file: &Path) -> &'static str {
    if read_pid(pid_file) > 0 {
        "RunContainerError"
    } else {
        "CreateContainerError"
    }
}

fn read_pid(pid_file: &Path) -> i32 {
    std::fs::read_to_string(pid_file).ok().and_then(|s| s.trim().parse().ok()).unwrap_or(0)
}

fn last_error(state_dir: &Path, fallback: &str) -> String {
    error_summary(&std::fs::read_to_string(state_dir.join("runtime.log")).unwrap_or_default(), fallback)
}

/// The runtime log's last line, plus its first ERROR line when that differs: libcontainer logs the cause first
/// (e.g. "failed to set rlimit ... EPERM") and only a generic "intermediate process error EPERM" last.
pub fn error_summary(log: &str, fallback: &str) -> String {
    let lines: Vec<&str> = log.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let Some(last) = lines.last() else { return fallback.to_string() };
    match lines.iter().find(|l| l.contains(" ERROR ")) {
        Some(first) if first != last => format!("{last} (cause: {first})"),
        _ => last.to_string(),
    }
}

pub fn run(args: MonitorArgs) -> anyhow::Result<()> {
    // Own session: the agent's death or its terminal's signals do not reach us.
    let _ = nix::unistd::setsid();
    nix::sys::prctl::set_child_subreaper(true).context("PR_SET_CHILD_SUBREAPER")?;
    std::fs::create_dir_all(&args.state_dir).context("creating the state dir")?;
    if let Some(dir) = args.log_file.parent() {
        std::fs::create_dir_all(dir).context("creating the log dir")?;
    }
    let mut log = LogFile::open(&args.log_file, args.log_max_size, args.log_max_files).context("opening the log file")?;

    let pid_file = args.state_dir.join("pid");
    let (streams, mut stdin_relay) = if args.tty {
        let sock = args.state_dir.join("console.sock");
        let _ = std::fs::remove_file(&sock);
        let listener = std::os::unix::net::UnixListener::bind(&sock).context("binding the console socket")?;
        let _ = std::fs::remove_file(&pid_file);
        let mut child = run_command(&args, &pid_file)
            .arg("--console-socket")
            .arg(&sock)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("running skiff-runtime run")?;
        let master = crate::exec::tty::receive_master(&listener, &mut child);
        let status = child.wait().context("waiting for skiff-runtime run")?;
        let _ = std::fs::remove_file(&sock);
        if !status.success() {
            return fail(&args.state_dir, run_failure(&pid_file), last_error(&args.state_dir, "skiff-runtime run failed"));
        }
        let master = match master {
            Ok(m) => m,
            Err(e) => return fail(&args.state_dir, "CreateContainerError", e),
        };
        let relay = if args.stdin {
            let input = master.try_clone().context("duplicating the terminal")?;
            Some(StdinRelay::for_terminal(&args.state_dir, input, args.stdin_once).context("setting up stdin")?)
        } else {
            None
        };
        (vec![(File::from(master), "stdout")], relay)
    } else {
        let (out_r, out_w) = nix::unistd::pipe().context("pipe")?;
        let (err_r, err_w) = nix::unistd::pipe().context("pipe")?;
        let (stdin, relay) = if args.stdin {
            let (read, relay) = StdinRelay::new(&args.state_dir, args.stdin_once).context("setting up stdin")?;
            (Stdio::from(read), Some(relay))
        } else {
            (Stdio::null(), None)
        };
        let _ = std::fs::remove_file(&pid_file);
        let status = run_command(&args, &pid_file)
            .stdin(stdin)
            .stdout(Stdio::from(out_w))
            .stderr(Stdio::from(err_w))
            .status()
            .context("running skiff-runtime run")?;
        if !status.success() {
            return fail(&args.state_dir, run_failure(&pid_file), last_error(&args.state_dir, "skiff-runtime run failed"));
        }
        (vec![(File::from(out_r), "stdout"), (File::from(err_r), "stderr")], relay)
    };
    let pid = read_pid(&pid_file);
    if pid <= 0 {
        // Started, but no pid to watch: stop it rather than leave it unmonitored.
        let _ = runtime(&args).args(["delete", "--force", &args.id]).status();
        return fail(&args.state_dir, "CreateContainerError", "no pid file after skiff-runtime run".into());
    }
    let started = Started { monitor_pid: std::process::id() as i32, pid, started_at: Utc::now() };
    write_json(&args.state_dir.join(STARTED), &started).context("writing started.json")?;
    signal_ready();

    let status = relay(pid, streams, &mut log, stdin_relay.as_mut(), args.tty);
    drop(stdin_relay);
    let (exit_code, reason) = match status {
        WaitStatus::Exited(_, 0) => (0, "Completed"),
        WaitStatus::Exited(_, c) => (c, if oom_killed(&args) { "OOMKilled" } else { "Error" }),
        WaitStatus::Signaled(_, sig, _) => (128 + sig as i32, if oom_killed(&args) { "OOMKilled" } else { "Error" }),
        _ => (255, "Error"),
    };
    let exited = Exited { exit_code, finished_at: Utc::now(), reason: reason.into(), message: String::new() };
    write_json(&args.state_dir.join(EXIT), &exited).context("writing exit.json")?;
    Ok(())
}

/// Whether the kernel's OOM killer killed a process of the container: the `oom_kill` counter of its memory cgroup
/// (cgroup v1 `memory.oom_control`, v2 `memory.events`), read before the cgroup is removed.
fn oom_killed(args: &MonitorArgs) -> bool {
    let Some(path) = std::fs::read(args.bundle.join("config.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v["linux"]["cgroupsPath"].as_str().map(|p| p.trim_start_matches('/').to_string()))
    else {
        return false;
    };
    let candidates = [
        Path::new("/sys/fs/cgroup/memory").join(&path).join("memory.oom_control"),
        Path::new("/sys/fs/cgroup").join(&path).join("memory.events"),
    ];
    candidates.iter().any(|f| oom_kill_count(&std::fs::read_to_string(f).unwrap_or_default()) > 0)
}

/// The `oom_kill N` line of memory.oom_control / memory.events.
pub fn oom_kill_count(text: &str) -> u64 {
    text.lines().find_map(|l| l.strip_prefix("oom_kill ")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

/// The container's CRI log file, rotated by size: whole CRI lines only, so every file parses on its own.
pub struct LogFile {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: u64,
    max_files: u32,
}

impl LogFile {
    pub fn open(path: &Path, max_size: u64, max_files: u32) -> std::io::Result<LogFile> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(LogFile { path: path.to_path_buf(), file, size, max_size, max_files: max_files.max(2) })
    }

    fn rotated(&self, n: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    /// Shifts `.1` → `.2` ... (dropping the oldest) and starts a new current file.
    fn rotate(&mut self) -> std::io::Result<()> {
        let _ = std::fs::remove_file(self.rotated(self.max_files - 1));
        for n in (1..self.max_files - 1).rev() {
            let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
        }
        std::fs::rename(&self.path, self.rotated(1))?;
        self.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.size = 0;
        Ok(())
    }

    /// Writes whole CRI lines, rotating between lines when the next would not fit (a file holds at least one line).
    pub fn write_all(&mut self, mut data: &[u8]) -> std::io::Result<()> {
        while !data.is_empty() {
            let room = self.max_size.saturating_sub(self.size) as usize;
            // The longest run of whole lines that fits; at least one line when the file is empty.
            let fit = match data.get(..room.min(data.len())).and_then(|d| d.iter().rposition(|&b| b == b'\n')) {
                Some(i) => i + 1,
                None if room >= data.len() => data.len(),
                None if self.size == 0 => data.iter().position(|&b| b == b'\n').map(|i| i + 1).unwrap_or(data.len()),
                None => 0,
            };
            if fit == 0 {
                if let Err(e) = self.rotate() {
                    tracing::warn!(path = %self.path.display(), error = %e, "log rotation failed; writing on");
                    self.size = 0;
                }
                continue;
            }
            self.file.write_all(&data[..fit])?;
            self.size += fit as u64;
            data = &data[fit..];
        }
        Ok(())
    }
}

/// Copies the container's output streams into the log until the container init exited and the streams are drained
/// (or stay silent for a second after the exit: a daemonized grandchild may hold them open). Reaps every child that
/// exits meanwhile. With a terminal (`partial_now`), output without a newline yet (a shell prompt) is logged at once
/// as a partial line, so that attached sessions see it.
fn relay(
    pid: i32,
    mut streams: Vec<(File, &'static str)>,
    log: &mut LogFile,
    mut stdin: Option<&mut StdinRelay>,
    partial_now: bool,
) -> WaitStatus {
    let mut splitters: Vec<LineSplitter> = streams.iter().map(|(_, name)| LineSplitter::new(name)).collect();
    let mut open: Vec<bool> = streams.iter().map(|_| true).collect();
    let mut exit: Option<(WaitStatus, Instant)> = None;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        while exit.is_none() {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(s @ (WaitStatus::Exited(p, _) | WaitStatus::Signaled(p, _, _))) if p.as_raw() == pid => {
                    exit = Some((s, Instant::now()))
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        if let Some((s, at)) = exit {
            if !open.iter().any(|o| *o) || at.elapsed() > Duration::from_secs(1) {
                let mut out = vec![];
                for sp in &mut splitters {
                    sp.finish(&mut out);
                }
                let _ = log.write_all(&out);
                return s;
            }
        }
        let (ready, stdin_ready): (Vec<bool>, Vec<bool>) = {
            let mut fds: Vec<PollFd> = vec![];
            let idx: Vec<usize> = (0..streams.len()).filter(|i| open[*i]).collect();
            for i in &idx {
                fds.push(PollFd::new(streams[*i].0.as_fd(), PollFlags::POLLIN));
            }
            for interest in stdin.as_ref().map(|s| s.interests()).unwrap_or_default() {
                fds.push(match interest {
                    Interest::Read(fd) => PollFd::new(fd, PollFlags::POLLIN),
                    Interest::Write(fd) => PollFd::new(fd, PollFlags::POLLOUT),
                });
            }
            let mut r = vec![false; streams.len()];
            if fds.is_empty() {
                std::thread::sleep(Duration::from_millis(100));
                (r, vec![])
            } else {
                let _ = poll(&mut fds, PollTimeout::from(200u16));
                for (k, i) in idx.iter().enumerate() {
                    r[*i] = fds[k].revents().is_some_and(|e| !e.is_empty());
                }
                let s = fds[idx.len()..].iter().map(|f| f.revents().is_some_and(|e| !e.is_empty())).collect();
                (r, s)
            }
        };
        if let Some(s) = stdin.as_mut() {
            s.handle(&stdin_ready);
        }
        for i in 0..streams.len() {
            if !ready[i] {
                continue;
            }
            match streams[i].0.read(&mut buf) {
                // A terminal shared with the input side is non-blocking.
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::Interrupted => {}
                // EIO from a terminal: every slave end is closed.
                Ok(0) | Err(_) => {
                    open[i] = false;
                    let mut out = vec![];
                    splitters[i].finish(&mut out);
                    let _ = log.write_all(&out);
                }
                Ok(n) => {
                    let mut out = vec![];
                    splitters[i].push(&buf[..n], &mut out);
                    if partial_now {
                        splitters[i].flush_partial(&mut out);
                    }
                    let _ = log.write_all(&out);
                }
            }
        }
    }
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_summary_keeps_the_first_error_as_the_cause() {
        assert_eq!(error_summary("", "create failed"), "create failed");
        assert_eq!(error_summary("T ERROR x: boom\n", "f"), "T ERROR x: boom");
        let log = "T ERROR lc: failed to set rlimit err=Nix(EPERM)\nT ERROR lc: intermediate process error EPERM\n";
        assert_eq!(
            error_summary(log, "f"),
            "T ERROR lc: intermediate process error EPERM (cause: T ERROR lc: failed to set rlimit err=Nix(EPERM))"
        );
    }

    #[test]
    fn oom_counters_of_both_cgroup_versions() {
        assert_eq!(oom_kill_count("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"), 2);
        assert_eq!(oom_kill_count("low 0\nhigh 0\nmax 4\noom 1\noom_kill 1\noom_group_kill 0\n"), 1);
        assert_eq!(oom_kill_count("oom_kill_disable 0\nunder_oom 0\n"), 0);
    }

    #[test]
    fn log_file_rotates_by_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut log = LogFile::open(&path, 100, 3).unwrap();
        for i in 0..10 {
            log.write_all(format!("{i:02} {}\n", "x".repeat(40)).as_bytes()).unwrap();
        }
        let sizes_ok = |p: &Path| std::fs::metadata(p).map(|m| m.len() <= 100).unwrap_or(true);
        assert!(sizes_ok(&path) && sizes_ok(&dir.path().join("0.log.1")));
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        assert!(read(&path).starts_with("08 ") && read(&path).contains("\n09 "));
        assert!(read(&dir.path().join("0.log.1")).starts_with("06 "));
        assert!(read(&dir.path().join("0.log.2")).starts_with("04 "));
        assert!(!dir.path().join("0.log.3").exists());
        // Reopening continues the current file's size.
        let mut again = LogFile::open(&path, 100, 3).unwrap();
        again.write_all(b"10\n").unwrap();
        assert!(read(&path).ends_with("10\n") && read(&path).starts_with("08 "));
        // One big write of many lines is split between files at line boundaries.
        let big: String = (0..20).map(|i| format!("{i:03} {}\n", "y".repeat(20))).collect();
        let mut log = LogFile::open(&dir.path().join("1.log"), 100, 3).unwrap();
        log.write_all(big.as_bytes()).unwrap();
        let cur = read(&dir.path().join("1.log"));
        assert!(cur.len() <= 100 && cur.ends_with(&format!("019 {}\n", "y".repeat(20))), "{cur}");
        // A line longer than the limit still gets written whole.
        log.write_all(format!("{}\n", "z".repeat(300)).as_bytes()).unwrap();
        assert_eq!(read(&dir.path().join("1.log")).len(), 301);
    }

    #[test]
    fn splitter_emits_full_and_partial_lines() {
        let mut s = LineSplitter::new("stdout");
        let mut out = vec![];
        s.push(b"hel", &mut out);
        assert!(out.is_empty());
        s.push(b"lo\nwor", &mut out);
        s.finish(&mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].ends_with(" stdout F hello"), "{}", lines[0]);
        assert!(lines[1].ends_with(" stdout F wor"));
        let mut out = vec![];
        s.push(&vec![b'x'; MAX_LINE + 3], &mut out);
        assert!(String::from_utf8(out).unwrap().contains(" stdout P x"));
    }
}
