//! The container's input for `stdin: true` containers, kept by the monitor (as conmon / containerd-shim keep it):
//! without a terminal, the container reads the read end of a pipe whose write end the monitor holds, so it sees no
//! end of input while nobody is attached; with `tty: true`, input goes to the terminal's master. `kubectl attach -i`
//! sessions reach it through a unix socket in the attempt's state dir (`attach.sock`): the agent connects and sends
//! [`Frame`]s (input, terminal size, end of input); the monitor copies the input into the pipe or terminal. With
//! `stdinOnce`, the end of the first session closes the pipe (the container sees EOF) and no session can write
//! again (a terminal stays: the container reads the end of input when the user types it).
//!
//! Driven from the monitor's single-threaded poll loop: everything here is non-blocking.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use rustix::termios::{tcsetwinsize, Winsize};

pub use crate::exec::tty::Frame;

/// The socket attach sessions connect to, in the attempt's state dir.
pub const ATTACH_SOCKET: &str = "attach.sock";

/// Buffered but not yet written to the pipe; sessions are not read while this much waits (back-pressure).
const MAX_PENDING: usize = 256 * 1024;

struct Session {
    stream: UnixStream,
    /// Bytes of a frame not yet whole.
    partial: Vec<u8>,
}

pub struct StdinRelay {
    socket_path: PathBuf,
    listener: Option<UnixListener>,
    sessions: Vec<Session>,
    /// The pipe's write end, or the terminal's master.
    pipe: Option<File>,
    tty: bool,
    pending: Vec<u8>,
    once: bool,
    /// stdinOnce: the first session ended; close the pipe once `pending` is written.
    closing: bool,
}

/// What the poll loop should wait for.
pub enum Interest<'a> {
    Read(BorrowedFd<'a>),
    Write(BorrowedFd<'a>),
}

pub(crate) fn set_nonblocking(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let raw = fd.as_raw_fd();
    let flags = OFlag::from_bits_truncate(fcntl(raw, FcntlArg::F_GETFL)?);
    fcntl(raw, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

impl StdinRelay {
    /// The pipe's read end (the container's stdin) and the relay holding its write end and listening in `state_dir`.
    pub fn new(state_dir: &Path, once: bool) -> std::io::Result<(OwnedFd, StdinRelay)> {
        let (read, write) = nix::unistd::pipe()?;
        Ok((read, Self::with_sink(state_dir, write, once, false)?))
    }

    /// Input for a terminal: `master` is (a duplicate of) the pty master; it is made non-blocking.
    pub fn for_terminal(state_dir: &Path, master: OwnedFd, once: bool) -> std::io::Result<StdinRelay> {
        Self::with_sink(state_dir, master, once, true)
    }

    fn with_sink(state_dir: &Path, sink: OwnedFd, once: bool, tty: bool) -> std::io::Result<StdinRelay> {
        set_nonblocking(sink.as_fd())?;
        let socket_path = state_dir.join(ATTACH_SOCKET);
        let _ = std::fs::remove_file(&socket_path);
        let listener = UnixListener::bind(&socket_path)?;
        listener.set_nonblocking(true)?;
        Ok(StdinRelay {
            socket_path,
            listener: Some(listener),
            sessions: Vec::new(),
            pipe: Some(File::from(sink)),
            tty,
            pending: Vec::new(),
            once,
            closing: false,
        })
    }

    /// The descriptors to poll, in the order [`StdinRelay::handle`] expects their readiness.
    pub fn interests(&self) -> Vec<Interest<'_>> {
        let mut out = Vec::new();
        if let Some(l) = &self.listener {
            out.push(Interest::Read(l.as_fd()));
        }
        if self.pending.len() < MAX_PENDING {
            for s in &self.sessions {
                out.push(Interest::Read(s.stream.as_fd()));
            }
        }
        if let (Some(p), false) = (&self.pipe, self.pending.is_empty()) {
            out.push(Interest::Write(p.as_fd()));
        }
        out
    }

    /// Acts on the readiness of [`StdinRelay::interests`] (same order, `true` = ready).
    pub fn handle(&mut self, ready: &[bool]) {
        let mut i = 0;
        let mut next = || {
            let r = ready.get(i).copied().unwrap_or(false);
            i += 1;
            r
        };
        let accept = self.listener.is_some() && next();
        let reading = self.pending.len() < MAX_PENDING;
        let session_ready: Vec<bool> = if reading { self.sessions.iter().map(|_| next()).collect() } else { vec![] };
        let writable = self.pipe.is_some() && !self.pending.is_empty() && next();

        if accept {
            self.accept();
        }
        let mut ended = Vec::new();
        let mut buf = [0u8; 32 * 1024];
        for (k, ready) in session_ready.iter().enumerate() {
            if !ready {
                continue;
            }
            let session = &mut self.sessions[k];
            match session.stream.read(&mut buf) {
                Ok(0) => ended.push(k),
                Ok(n) => {
                    session.partial.extend_from_slice(&buf[..n]);
                    for frame in Frame::decode_all(&mut session.partial) {
                        match frame {
                            Frame::Input(d) if self.pipe.is_some() => self.pending.extend_from_slice(&d),
                            Frame::Input(_) => {}
                            Frame::Resize { cols, rows } => {
                                if let (true, Some(p)) = (self.tty, self.pipe.as_ref()) {
                                    let _ = tcsetwinsize(p, Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 });
                                }
                            }
                            Frame::EndOfInput => {
                                if !ended.contains(&k) {
                                    ended.push(k);
                                }
                            }
                        }
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                Err(_) => ended.push(k),
            }
        }
        ended.sort_unstable();
        for k in ended.into_iter().rev() {
            self.sessions.remove(k);
            if self.once && !self.tty {
                // The first session is over: no more input, ever (the kubelet's stdinOnce).
                self.closing = true;
                self.listener = None;
                let _ = std::fs::remove_file(&self.socket_path);
            }
        }
        if writable || self.closing {
            self.flush();
        }
    }

    fn accept(&mut self) {
        let Some(l) = &self.listener else { return };
        loop {
            match l.accept() {
                Ok((s, _)) => {
                    if s.set_nonblocking(true).is_ok() {
                        self.sessions.push(Session { stream: s, partial: Vec::new() });
                    }
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return,
            }
        }
    }

    fn flush(&mut self) {
        let mut broken = false;
        if let Some(p) = self.pipe.as_mut() {
            while !self.pending.is_empty() {
                match p.write(&self.pending) {
                    Ok(n) => {
                        self.pending.drain(..n);
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        broken = true;
                        break;
                    }
                }
            }
        }
        if broken {
            // The container closed its stdin or is gone: input has nowhere to go.
            self.pipe = None;
            self.pending.clear();
        }
        if self.closing && self.pending.is_empty() {
            self.pipe = None;
            self.sessions.clear();
        }
    }
}

impl Drop for StdinRelay {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket_path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    /// Polls and handles until `done` holds or a few seconds pass.
    fn drive(relay: &mut StdinRelay, mut done: impl FnMut(&StdinRelay) -> bool) {
        for _ in 0..200 {
            if done(relay) {
                return;
            }
            let ready = {
                let interests = relay.interests();
                let mut fds: Vec<PollFd> = interests
                    .iter()
                    .map(|i| match i {
                        Interest::Read(fd) => PollFd::new(*fd, PollFlags::POLLIN),
                        Interest::Write(fd) => PollFd::new(*fd, PollFlags::POLLOUT),
                    })
                    .collect();
                let _ = poll(&mut fds, PollTimeout::from(20u16));
                fds.iter().map(|f| f.revents().is_some_and(|e| !e.is_empty())).collect::<Vec<_>>()
            };
            relay.handle(&ready);
        }
        panic!("condition not reached");
    }

    fn read_available(r: &mut File) -> Vec<u8> {
        let mut out = vec![];
        let mut buf = [0u8; 4096];
        loop {
            match r.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(_) => break,
            }
        }
        out
    }

    #[test]
    fn sessions_feed_the_pipe_and_stdin_stays_open_between_them() {
        let dir = tempfile::tempdir().unwrap();
        let (read, mut relay) = StdinRelay::new(dir.path(), false).unwrap();
        set_nonblocking(read.as_fd()).unwrap();
        let mut r = File::from(read);
        let mut a = UnixStream::connect(dir.path().join(ATTACH_SOCKET)).unwrap();
        a.write_all(&Frame::Input(b"hello\n".to_vec()).encode()).unwrap();
        let mut got = vec![];
        drive(&mut relay, |_| {
            got.extend(read_available(&mut r));
            got == b"hello\n"
        });
        drop(a);
        drive(&mut relay, |rl| rl.sessions.is_empty());
        // Not stdinOnce: still open (a read would block, not return EOF), and another session can write.
        let mut buf = [0u8; 8];
        assert_eq!(r.read(&mut buf).unwrap_err().kind(), ErrorKind::WouldBlock);
        let mut b = UnixStream::connect(dir.path().join(ATTACH_SOCKET)).unwrap();
        b.write_all(&Frame::Input(b"again".to_vec()).encode()).unwrap();
        let mut got = vec![];
        drive(&mut relay, |_| {
            got.extend(read_available(&mut r));
            got == b"again"
        });
    }

    #[test]
    fn stdin_once_closes_after_the_first_session_with_its_data_delivered() {
        let dir = tempfile::tempdir().unwrap();
        let (read, mut relay) = StdinRelay::new(dir.path(), true).unwrap();
        let mut r = File::from(read);
        let mut a = UnixStream::connect(dir.path().join(ATTACH_SOCKET)).unwrap();
        a.write_all(&Frame::Input(b"last ".to_vec()).encode()).unwrap();
        a.write_all(&Frame::Input(b"words".to_vec()).encode()).unwrap();
        a.write_all(&Frame::EndOfInput.encode()).unwrap();
        drive(&mut relay, |rl| rl.pipe.is_none());
        let mut all = vec![];
        r.read_to_end(&mut all).unwrap(); // EOF: the write end is closed
        assert_eq!(all, b"last words");
        assert!(!dir.path().join(ATTACH_SOCKET).exists(), "no more sessions");
        assert!(UnixStream::connect(dir.path().join(ATTACH_SOCKET)).is_err());
    }

    #[test]
    fn big_input_is_delivered_whole_with_back_pressure() {
        let dir = tempfile::tempdir().unwrap();
        let (read, mut relay) = StdinRelay::new(dir.path(), true).unwrap();
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
        let expected = data.clone();
        let reader = std::thread::spawn(move || {
            let mut r = File::from(read);
            let mut all = vec![];
            r.read_to_end(&mut all).unwrap();
            all
        });
        let path = dir.path().join(ATTACH_SOCKET);
        let writer = std::thread::spawn(move || {
            let mut a = UnixStream::connect(path).unwrap();
            for chunk in data.chunks(10_000) {
                a.write_all(&Frame::Input(chunk.to_vec()).encode()).unwrap();
            }
        });
        drive(&mut relay, |rl| rl.pipe.is_none());
        writer.join().unwrap();
        assert_eq!(reader.join().unwrap(), expected);
    }
}
