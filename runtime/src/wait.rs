//! Waiting for a container process. libcontainer 0.7 has no wait API, so this is written here:
//! the process (a container's init, or an exec'd process) is a child of the runtime, and is
//! reaped by its pid only — never `waitpid(-1)`, which could steal another child's status.
//!
//! While waiting, the signals a terminal or a supervisor sends to the runtime (INT, TERM, HUP,
//! QUIT, USR1, USR2, WINCH) are forwarded to the process, as `runc run` does. They are blocked
//! and taken with `sigwait`, so no handler runs and the runtime stays single-threaded.

use nix::errno::Errno;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use crate::error::{Error, Result};

pub(crate) const FORWARDED: [Signal; 7] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGWINCH,
];

/// The shell convention runc follows: the exit code, or 128 + the signal that killed it.
pub fn exit_code(status: WaitStatus) -> Option<i32> {
    match status {
        WaitStatus::Exited(_, code) => Some(code),
        WaitStatus::Signaled(_, sig, _) => Some(128 + sig as i32),
        _ => None,
    }
}

/// Waits for child `pid` to end, forwarding signals to it, and returns its exit code.
pub fn wait_forwarding(pid: Pid) -> Result<i32> {
    let sys = |what: &str, source| Error::Sys {
        what: format!("{what} (waiting for pid {pid})"),
        source,
    };
    let mut set = SigSet::empty();
    for sig in FORWARDED {
        set.add(sig);
    }
    set.add(Signal::SIGCHLD);
    // Blocked signals stay pending until sigwait takes them. The mask is not restored: the
    // runtime only cleans up and exits afterwards, and a late TERM must not kill it mid-cleanup.
    set.thread_block().map_err(|e| sys("block signals", e))?;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(status) => {
                if let Some(code) = exit_code(status) {
                    break Ok(code);
                }
            }
            Err(Errno::EINTR) => continue,
            Err(e) => break Err(sys("waitpid", e)),
        }
        match set.wait() {
            Ok(Signal::SIGCHLD) => {}
            Ok(sig) => match kill(pid, sig) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => break Err(sys("forward a signal", e)),
            },
            Err(Errno::EINTR) => {}
            Err(e) => break Err(sys("sigwait", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell_convention() {
        let pid = Pid::from_raw(1);
        assert_eq!(exit_code(WaitStatus::Exited(pid, 3)), Some(3));
        assert_eq!(
            exit_code(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some(137)
        );
        assert_eq!(exit_code(WaitStatus::StillAlive), None);
    }
}
