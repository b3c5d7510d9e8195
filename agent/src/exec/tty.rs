//! `skiff-agent exec-tty ...`: one `kubectl exec -t` session, as a small single-threaded helper process.
//!
//! Why a process of its own: the runtime hands a terminal out only detached, through a console socket (runc's
//! protocol: the pty master travels as SCM_RIGHTS), and the detached exec'd process is then re-parented to the
//! nearest child subreaper among the runtime's ancestors. Being that subreaper inside the multi-threaded agent would
//! make every orphan of every container the agent's zombie; here it is exactly one session's processes.
//!
//! The agent talks to the helper through its stdin ([`Frame`]s: terminal input, resize, end of input) and stdout
//! (the terminal's output, raw). The last line on stderr is the result as JSON: `{"exitCode":N}` or
//! `{"error":"..."}`.

use std::fs::File;
use std::io::{IoSliceMut, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use rustix::termios::{tcsetwinsize, Winsize};

#[derive(clap::Args, Debug, Clone)]
pub struct ExecTtyArgs {
    #[arg(long)]
    pub runtime: PathBuf,
    #[arg(long)]
    pub runtime_root: PathBuf,
    #[arg(long)]
    pub id: String,
    /// A private directory for the console socket, pid file and runtime log.
    #[arg(long)]
    pub work_dir: PathBuf,
    /// The client's terminal size, applied as soon as the terminal exists.
    #[arg(long)]
    pub size: Option<String>,
    #[arg(trailing_var_arg = true, required = true)]
    pub command: Vec<String>,
}

impl ExecTtyArgs {
    pub fn to_args(&self) -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = vec!["exec-tty".into()];
        for (k, p) in [
            ("--runtime", self.runtime.as_os_str()),
            ("--runtime-root", self.runtime_root.as_os_str()),
            ("--id", self.id.as_ref()),
            ("--work-dir", self.work_dir.as_os_str()),
        ] {
            v.push(k.into());
            v.push(p.into());
        }
        if let Some(size) = &self.size {
            v.push("--size".into());
            v.push(size.into());
        }
        v.push("--".into());
        v.extend(self.command.iter().map(Into::into));
        v
    }
}

/// What the agent sends the helper: `[kind][len: u32 BE][payload]`.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Input(Vec<u8>),
    Resize { cols: u16, rows: u16 },
    EndOfInput,
}

impl Frame {
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, Vec<u8>) = match self {
            Frame::Input(d) => (0, d.clone()),
            Frame::Resize { cols, rows } => (1, [cols.to_be_bytes(), rows.to_be_bytes()].concat()),
            Frame::EndOfInput => (2, vec![]),
        };
        let mut v = vec![kind];
        v.extend((payload.len() as u32).to_be_bytes());
        v.extend(payload);
        v
    }

    /// Takes every whole frame off the front of `buf`; a partial one stays.
    pub fn decode_all(buf: &mut Vec<u8>) -> Vec<Frame> {
        let mut out = vec![];
        let mut at = 0;
        while buf.len() >= at + 5 {
            let len = u32::from_be_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]) as usize;
            if buf.len() < at + 5 + len {
                break;
            }
            let payload = &buf[at + 5..at + 5 + len];
            match (buf[at], payload) {
                (0, d) => out.push(Frame::Input(d.to_vec())),
                (1, [c0, c1, r0, r1]) => out.push(Frame::Resize { cols: u16::from_be_bytes([*c0, *c1]), rows: u16::from_be_bytes([*r0, *r1]) }),
                (2, _) => out.push(Frame::EndOfInput),
                _ => {} // unknown or malformed: skipped
            }
            at += 5 + len;
        }
        buf.drain(..at);
        out
    }
}

fn report(result: Result<i32, String>) -> ! {
    let line = match &result {
        Ok(code) => serde_json::json!({"exitCode": code}),
        Err(e) => serde_json::json!({"error": e}),
    };
    eprintln!("{line}");
    std::process::exit(if result.is_ok() { 0 } else { 1 })
}

/// Receives the pty master from the runtime over the console socket.
pub(crate) fn receive_master(listener: &UnixListener, runtime: &mut std::process::Child) -> Result<OwnedFd, String> {
    listener.set_nonblocking(true).map_err(|e| format!("console socket: {e}"))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Ok(Some(status)) = runtime.try_wait() {
                    return Err(format!("the runtime exited ({status}) before it sent a terminal"));
                }
                if Instant::now() > deadline {
                    return Err("the runtime sent no terminal within 30 s".into());
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(format!("console socket: {e}")),
        }
    };
    stream.set_nonblocking(false).map_err(|e| format!("console socket: {e}"))?;
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let mut name = [0u8; 4096];
    recvmsg(&stream, &mut [IoSliceMut::new(&mut name)], &mut control, RecvFlags::empty())
        .map_err(|e| format!("receiving the terminal: {e}"))?;
    for msg in control.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
            if let Some(fd) = fds.next() {
                return Ok(fd);
            }
        }
    }
    Err("the runtime's console message carried no file descriptor".into())
}

fn runtime_error(work_dir: &std::path::Path, stderr: &str) -> String {
    let log = std::fs::read_to_string(work_dir.join("runtime.log")).unwrap_or_default();
    let msg = stderr.trim().trim_start_matches("skiff-runtime: ").to_string();
    if !msg.is_empty() {
        return msg;
    }
    crate::container::monitor::error_summary(&log, "the runtime failed to exec")
}

pub fn run(args: ExecTtyArgs) -> anyhow::Result<()> {
    nix::sys::prctl::set_child_subreaper(true).context("PR_SET_CHILD_SUBREAPER")?;
    std::fs::create_dir_all(&args.work_dir).context("creating the work dir")?;
    let sock = args.work_dir.join("console.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = UnixListener::bind(&sock).with_context(|| format!("binding {}", sock.display()))?;
    let pid_file = args.work_dir.join("pid");
    let mut runtime = Command::new(&args.runtime)
        .arg("--root")
        .arg(&args.runtime_root)
        .arg("--log")
        .arg(args.work_dir.join("runtime.log"))
        .args(["exec", "--tty", "--detach", "--console-socket"])
        .arg(&sock)
        .arg("--pid-file")
        .arg(&pid_file)
        .arg(&args.id)
        .arg("--")
        .args(&args.command)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("spawning the runtime")?;
    let master = receive_master(&listener, &mut runtime);
    let out = runtime.wait_with_output().context("waiting for the runtime")?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let master = match (master, out.status.success()) {
        (Ok(m), true) => m,
        (_, false) => report(Err(runtime_error(&args.work_dir, &stderr))),
        (Err(e), true) => report(Err(e)),
    };
    let pid: i32 = match std::fs::read_to_string(&pid_file).ok().and_then(|s| s.trim().parse().ok()) {
        Some(p) if p > 0 => p,
        _ => report(Err("the runtime wrote no pid for the exec'd process".into())),
    };
    if let Some((cols, rows)) = args.size.as_deref().and_then(|s| s.split_once('x')) {
        if let (Ok(cols), Ok(rows)) = (cols.parse(), rows.parse()) {
            let _ = tcsetwinsize(&master, Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 });
        }
    }
    report(relay(pid, master))
}

/// Copies frames from stdin to the terminal and the terminal to stdout until the exec'd process exits; returns its
/// exit code (128 + signal when killed).
fn relay(pid: i32, master: OwnedFd) -> Result<i32, String> {
    let mut term = File::from(master);
    let stdin = std::io::stdin();
    let mut stdout = std::io::stdout();
    let mut input_open = true;
    let mut pending = vec![];
    let mut buf = vec![0u8; 32 * 1024];
    let mut exited: Option<(i32, Instant)> = None;
    let mut term_open = true;
    loop {
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, c)) if p.as_raw() == pid => exited = Some((c, Instant::now())),
                Ok(WaitStatus::Signaled(p, s, _)) if p.as_raw() == pid => exited = Some((128 + s as i32, Instant::now())),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }
        if let Some((code, at)) = exited {
            // Drain what the process wrote last; a background child may keep the terminal open: not for long.
            if !term_open || at.elapsed() > Duration::from_millis(500) {
                let _ = stdout.flush();
                return Ok(code);
            }
        }
        let (term_ready, in_ready) = {
            let mut fds = vec![PollFd::new(term.as_fd(), PollFlags::POLLIN)];
            if input_open {
                fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            }
            let timeout = if exited.is_some() { 50u16 } else { 200 };
            poll(&mut fds, PollTimeout::from(timeout)).map_err(|e| format!("poll: {e}"))?;
            let ready = |f: &PollFd| f.revents().is_some_and(|e| !e.is_empty());
            (term_open && ready(&fds[0]), fds.get(1).is_some_and(ready))
        };
        if term_ready {
            match term.read(&mut buf) {
                // EIO: every slave end is closed.
                Ok(0) | Err(_) => term_open = false,
                Ok(n) => {
                    if stdout.write_all(&buf[..n]).and_then(|_| stdout.flush()).is_err() {
                        // The agent is gone: hang up the terminal (the session gets SIGHUP).
                        return Err("the agent closed the session".into());
                    }
                }
            }
        }
        if in_ready {
            match stdin.lock().read(&mut buf) {
                Ok(0) | Err(_) => return Err("the agent closed the session".into()),
                Ok(n) => {
                    pending.extend_from_slice(&buf[..n]);
                    for f in Frame::decode_all(&mut pending) {
                        match f {
                            Frame::Input(d) => {
                                let _ = term.write_all(&d);
                            }
                            Frame::Resize { cols, rows } => {
                                let _ = tcsetwinsize(&term, Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 });
                            }
                            // A terminal has no half-close; the shell sees end of input when the user types it.
                            Frame::EndOfInput => input_open = false,
                        }
                    }
                }
            }
        }
        if !term_open && exited.is_none() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_wait_for_whole_ones() {
        let frames = [Frame::Input(b"ls\n".to_vec()), Frame::Resize { cols: 120, rows: 40 }, Frame::EndOfInput];
        let mut buf: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let tail = buf.split_off(buf.len() - 3);
        let got = Frame::decode_all(&mut buf);
        assert_eq!(got, frames[..2]);
        buf.extend(tail);
        assert_eq!(Frame::decode_all(&mut buf), [Frame::EndOfInput]);
        assert!(buf.is_empty());
    }

    #[test]
    fn args_round_trip_through_the_command_line() {
        use clap::Parser;
        #[derive(Parser)]
        struct T {
            #[command(subcommand)]
            c: C,
        }
        #[derive(clap::Subcommand)]
        enum C {
            ExecTty(ExecTtyArgs),
        }
        let a = ExecTtyArgs { runtime: "/r".into(), runtime_root: "/rr".into(), id: "c1".into(), work_dir: "/w".into(), size: Some("80x24".into()), command: vec!["sh".into(), "-c".into(), "ls -l".into()] };
        let mut argv: Vec<std::ffi::OsString> = vec!["x".into()];
        argv.extend(a.to_args());
        let C::ExecTty(b) = T::parse_from(argv).c;
        assert_eq!(b.command, a.command);
        assert_eq!(b.id, "c1");
        assert_eq!(b.size.as_deref(), Some("80x24"));
    }
}
