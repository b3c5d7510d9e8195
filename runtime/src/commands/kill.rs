//! `kill`: send a signal to the container's init, or with --all to each of its processes.

use libcontainer::container::ContainerStatus;
use nix::unistd::Pid;

use crate::cli::{GlobalOpts, KillArgs};
use crate::container;
use crate::error::{Error, Result};
use crate::signal;

pub fn kill(global: &GlobalOpts, args: &KillArgs) -> Result<i32> {
    let sig = signal::parse(&args.signal)?;
    let mut c = container::load(&global.root, &args.id)?;
    let before = c.status();
    c.kill(sig, args.all)
        .map_err(|e| Error::container("kill", &args.id, e))?;
    // libcontainer records "stopped" after any signal. A process that is still alive keeps its
    // state (a created container that got USR1 is still created); once it has really exited,
    // the next load finds it gone and reports it stopped.
    if let Some(pid) = c.pid() {
        if before != ContainerStatus::Stopped && is_alive(pid) {
            c.set_status(before)
                .save()
                .map_err(|e| Error::container("save the state of", &args.id, e))?;
        }
    }
    Ok(0)
}

/// True while `pid` exists and has not exited (zombies have exited).
fn is_alive(pid: Pid) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name, which may contain spaces.
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive() {
        assert!(is_alive(nix::unistd::getpid()));
        assert!(!is_alive(Pid::from_raw(i32::MAX)));
    }
}
