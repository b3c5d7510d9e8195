//! Foreground terminals: `run` or `exec -t` of a process with a terminal and no `--console-socket`.
//!
//! libcontainer 0.7 hands a terminal out only through a console socket (runc's protocol: the
//! container creates the pty and sends its master as SCM_RIGHTS) and only when detached. So, as
//! `runc run` does, the runtime makes its own console socket in a private temp dir
//! ([`ConsoleSocket`]), creates the process detached with it, receives the master and then
//! [`relay`]s: its stdin (in raw mode when it is a terminal) to the master, the master to its
//! stdout, its window size to the master (at once and on SIGWINCH), other signals to the process,
//! until the process exits. No crate proxies a pty like this, so the relay is written here over
//! rustix (termios, poll, recvmsg) and nix (signalfd, waitpid).

use std::io::{IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use rustix::event::{poll, PollFd, PollFlags};
use rustix::net::{recvmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
use rustix::termios::{
    isatty, tcgetattr, tcgetwinsize, tcsetattr, tcsetwinsize, OptionalActions, Termios,
};

use crate::error::{Error, Result};
use crate::wait::{exit_code, FORWARDED};

/// How long output is still copied after the process exited, for a background process that
/// keeps the terminal open (the process itself closing it ends the copy at once).
const DRAIN_AFTER_EXIT_MS: i64 = 200;

/// A listening console socket in a private (0700) temp directory, removed on drop.
pub struct ConsoleSocket {
    dir: PathBuf,
    path: PathBuf,
    listener: UnixListener,
}

impl ConsoleSocket {
    pub fn new() -> Result<ConsoleSocket> {
        let template = std::env::temp_dir().join("skiff-console.XXXXXX");
        let dir = nix::unistd::mkdtemp(&template).map_err(|source| Error::Sys {
            what: format!("create a private directory like {}", template.display()),
            source,
        })?;
        let path = dir.join("console.sock");
        let listener = match UnixListener::bind(&path) {
            Ok(l) => l,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(Error::io(format!("bind {}", path.display()), e));
            }
        };
        Ok(ConsoleSocket {
            dir,
            path,
            listener,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Receives the pty master. libcontainer connects while it builds the container (so the
    /// connection is already queued) and the container process sends the master during its
    /// setup; if that process dies first, the message never comes and this gets end of file.
    pub fn receive_master(&self) -> Result<OwnedFd> {
        let what = "receive the terminal from the console socket";
        let (stream, _) = self.listener.accept().map_err(|e| Error::io(what, e))?;
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut name = [0u8; 4096];
        recvmsg(
            &stream,
            &mut [IoSliceMut::new(&mut name)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        )
        .map_err(|e| Error::io(what, e.into()))?;
        for msg in control.drain() {
            if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
                if let Some(fd) = fds.next() {
                    return Ok(fd);
                }
            }
        }
        Err(Error::io(
            what,
            std::io::Error::other("the container sent no terminal (did its setup fail?)"),
        ))
    }
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            tracing::warn!(dir = %self.dir.display(), err = %e, "could not remove console socket dir");
        }
    }
}

/// Makes this process a child subreaper, so that a container process that outlives its parent
/// inside libcontainer is re-parented to the runtime and can be waited for.
pub fn become_subreaper() -> Result<()> {
    nix::sys::prctl::set_child_subreaper(true).map_err(|source| Error::Sys {
        what: "become a child subreaper".into(),
        source,
    })
}

/// Puts a terminal into raw mode and restores its settings on drop.
struct RawMode<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
}

impl<'a> RawMode<'a> {
    fn enter(fd: BorrowedFd<'a>) -> Result<RawMode<'a>> {
        let what = "put the terminal into raw mode";
        let saved = tcgetattr(fd).map_err(|e| Error::io(what, e.into()))?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(fd, OptionalActions::Now, &raw).map_err(|e| Error::io(what, e.into()))?;
        Ok(RawMode { fd, saved })
    }
}

impl Drop for RawMode<'_> {
    fn drop(&mut self) {
        if let Err(e) = tcsetattr(self.fd, OptionalActions::Now, &self.saved) {
            tracing::warn!(err = %e, "could not restore the terminal settings");
        }
    }
}

/// Copies the window size of our own terminal (stdin, else stdout), if we have one.
fn copy_window_size(master: BorrowedFd<'_>) {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let size = tcgetwinsize(stdin.as_fd()).or_else(|_| tcgetwinsize(stdout.as_fd()));
    if let Ok(size) = size {
        if let Err(e) = tcsetwinsize(master, size) {
            tracing::warn!(err = %e, "could not set the container's window size");
        }
    }
}

/// Relays between the runtime's stdio and the terminal `master` until child `pid` exits, and
/// returns its exit code (128 + signal when killed). `pid` is reaped by its pid only.
pub fn relay(pid: Pid, master: OwnedFd) -> Result<i32> {
    let sys = |what: &str, source| Error::Sys {
        what: format!("{what} (relaying the terminal of pid {pid})"),
        source,
    };
    let io =
        |what: &str, e: std::io::Error| Error::io(format!("{what} (terminal of pid {pid})"), e);

    let mut set = SigSet::empty();
    for sig in FORWARDED {
        set.add(sig);
    }
    set.add(Signal::SIGCHLD);
    // As in wait::wait_forwarding: blocked for good, taken from a signalfd in the poll loop.
    set.thread_block().map_err(|e| sys("block signals", e))?;
    let signals = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| sys("create a signalfd", e))?;

    let stdin = std::io::stdin();
    let stdin_fd = stdin.as_fd();
    let _raw = if isatty(stdin_fd) {
        Some(RawMode::enter(stdin_fd)?)
    } else {
        None
    };
    copy_window_size(master.as_fd());

    let mut stdout = std::io::stdout().lock();
    let mut buf = vec![0u8; 32 * 1024];
    let mut stdin_open = true;
    let mut master_open = true;
    let mut exited: Option<i32> = None;
    loop {
        if exited.is_none() {
            match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
                Ok(status) => exited = exit_code(status),
                Err(Errno::EINTR) => {}
                Err(e) => return Err(sys("waitpid", e)),
            }
        }
        if let (Some(code), false) = (exited, master_open) {
            return Ok(code);
        }
        let mut fds = vec![PollFd::new(&signals, PollFlags::IN)];
        let master_slot = master_open.then(|| {
            fds.push(PollFd::new(&master, PollFlags::IN));
            fds.len() - 1
        });
        let stdin_slot = (stdin_open && exited.is_none()).then(|| {
            fds.push(PollFd::from_borrowed_fd(stdin_fd, PollFlags::IN));
            fds.len() - 1
        });
        let timeout = rustix::event::Timespec {
            tv_sec: 0,
            tv_nsec: DRAIN_AFTER_EXIT_MS * 1_000_000,
        };
        let ready = match poll(&mut fds, exited.map(|_| &timeout)) {
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(io("poll", e.into())),
        };
        if ready == 0 {
            // Exited, and the terminal stayed quiet: something in the background holds it.
            if let Some(code) = exited {
                return Ok(code);
            }
            continue;
        }
        let is_ready = |slot: Option<usize>| slot.is_some_and(|i| !fds[i].revents().is_empty());
        let (signal_ready, master_ready, stdin_ready) = (
            is_ready(Some(0)),
            is_ready(master_slot),
            is_ready(stdin_slot),
        );

        if master_ready {
            match rustix::io::read(&master, &mut buf) {
                // EIO once every slave end is closed.
                Ok(0) | Err(_) => master_open = false,
                Ok(n) => {
                    stdout
                        .write_all(&buf[..n])
                        .and_then(|_| stdout.flush())
                        .map_err(|e| io("write the terminal's output", e))?;
                }
            }
        }
        if stdin_ready {
            match rustix::io::read(stdin_fd, &mut buf) {
                Ok(0) | Err(_) => stdin_open = false,
                Ok(n) => write_all(master.as_fd(), &buf[..n])
                    .map_err(|e| io("write to the terminal", e.into()))?,
            }
        }
        if signal_ready {
            while let Some(info) = signals.read_signal().map_err(|e| sys("read a signal", e))? {
                match Signal::try_from(info.ssi_signo as i32) {
                    // Reaped at the top of the loop.
                    Ok(Signal::SIGCHLD) => {}
                    // Resizing the pty signals the container's foreground process group itself.
                    Ok(Signal::SIGWINCH) => copy_window_size(master.as_fd()),
                    Ok(sig) => match kill(pid, sig) {
                        Ok(()) | Err(Errno::ESRCH) => {}
                        Err(e) => return Err(sys("forward a signal", e)),
                    },
                    Err(_) => {}
                }
            }
        }
    }
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> rustix::io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_socket_dir_is_private_and_removed() {
        let socket = ConsoleSocket::new().unwrap();
        let dir = socket.path().parent().unwrap().to_owned();
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&dir).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);
        assert!(socket.path().exists());
        drop(socket);
        assert!(!dir.exists());
    }
}
