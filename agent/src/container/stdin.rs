//! The container's stdin for `stdin: true` containers, kept by the monitor (as conmon / containerd-shim keep it):
//! the container reads the read end of a pipe whose write end the monitor holds, so it sees no end of input while
//! nobody is attached. `kubectl attach -i` sessions reach it through a unix socket in the attempt's state dir
//! (`attach.sock`): the agent connects and writes what the client types; the monitor copies it into the pipe. With
//! `stdinOnce`, the end of the first session closes the pipe (the container sees EOF) and no session can write again.
//!
//! Driven from the monitor's single-threaded poll loop: everything here is non-blocking.

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use nix::fcntl::{fcntl, FcntlArg, OFlag};

/// The socket attach sessions connect to, in the attempt's state dir.
pub const ATTACH_SOCKET: &str = "attach.sock";

/// Buffered but not yet written to the pipe; sessions are not read while this much waits (back-pressure).
const MAX_PENDING: usize = 256 * 1024;

pub struct StdinRelay {
    socket_path: PathBuf,
    listener: Option<UnixListener>,
    sessions: Vec<UnixStream>,
    pipe: Option<File>,
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

fn set_nonblocking(fd: BorrowedFd<'_>) -> std::io::Result<()> {
    let raw = fd.as_raw_fd();
    let flags = OFlag::from_bits_truncate(fcntl(raw, FcntlArg::F_GETFL)?);
    fcntl(raw, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

impl StdinRelay {
    /// The pipe's read end (the container's stdin) and the relay holding its write end and listening in `state_dir`.
    pub fn new(state_dir: &Path, once: bool) -> std::io::Result<(OwnedFd, StdinRelay)> {
        let (read, write) = nix::unistd::pipe()?;
        set_nonblocking(write.as_fd())?;
        let socket_path = state_dir.join(ATTACH_SOCKET);
        let _ = std::fs::remove_file(&socket_path);
        let listener = UnixListener::bind(&socket_path)?;
        listener.set_nonblocking(true)?;
        let relay = StdinRelay {
            socket_path,
            listener: Some(listener),
            sessions: Vec::new(),
            pipe: Some(File::from(write)),
            pending: Vec::new(),
            once,
            closing: false,
        };
        Ok((read, relay))
    }

    /// The descriptors to poll, in the order [`StdinRelay::handle`] expects their readiness.
    pub fn interests(&self) -> Vec<Interest<'_>> {
        let mut out = Vec::new();
        if let Some(l) = &self.listener {
            out.push(Interest::Read(l.as_fd()));
        }
        if self.pending.len() < MAX_PENDING {
            for s in &self.sessions {
                out.push(Interest::Read(s.as_fd()));
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
            match self.sessions[k].read(&mut buf) {
                Ok(0) => ended.push(k),
                Ok(n) => {
                    if self.pipe.is_some() {
                        self.pending.extend_from_slice(&buf[..n]);
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                Err(_) => ended.push(k),
            }
        }
        for k in ended.into_iter().rev() {
            self.sessions.remove(k);
            if self.once {
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
                        self.sessions.push(s);
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
        a.write_all(b"hello\n").unwrap();
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
        b.write_all(b"again").unwrap();
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
        a.write_all(b"last words").unwrap();
        drop(a);
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
            a.write_all(&data).unwrap();
        });
        drive(&mut relay, |rl| rl.pipe.is_none());
        writer.join().unwrap();
        assert_eq!(reader.join().unwrap(), expected);
    }
}
