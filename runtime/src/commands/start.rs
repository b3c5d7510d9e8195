//! `start`: let a created container's init run the user process.

use std::io::Write;

use libcontainer::config::YoukiConfig;
use libcontainer::container::{Container, ContainerStatus, State};
use libcontainer::error::LibcontainerError;
use libcontainer::notify_socket::{NotifySocket, NOTIFY_FILE};

use crate::cli::{GlobalOpts, IdArgs};
use crate::container;
use crate::error::{Error, Result};

pub fn start(global: &GlobalOpts, args: &IdArgs) -> Result<i32> {
    let mut c = container::load(&global.root, &args.id)?;
    start_container(&mut c).map_err(|e| Error::container("start", &args.id, e))?;
    Ok(0)
}

/// libcontainer's `Container::start` (status check, start message on the notify socket, state
/// `running`, poststart hooks), except for how the state file is written: see [`save_state`].
pub(crate) fn start_container(c: &mut Container) -> std::result::Result<(), LibcontainerError> {
    c.refresh_status()?;
    if !c.can_start() {
        return Err(LibcontainerError::IncorrectStatus(c.status()));
    }
    let config = YoukiConfig::load(&c.root)?;
    NotifySocket::new(c.root.join(NOTIFY_FILE)).notify_container_start()?;
    c.set_status(ContainerStatus::Running);
    save_state(c).map_err(LibcontainerError::OtherIO)?;
    // Run in the runtime's namespaces after the container process started, as libcontainer does.
    if let Some(hooks) = config.hooks.as_ref() {
        libcontainer::hooks::run_hooks(
            hooks.poststart().as_ref(),
            Some(&c.state),
            Some(&c.root),
            None,
            None,
        )?;
    }
    Ok(())
}

/// Writes the container's state to `state.json` as libcontainer's `State::save` does (same
/// JSON), but in place instead of through `O_TRUNC`. On ext4, the usual file system of a
/// `--root` outside `/run`, truncating a file to size 0 makes the close start its writeback
/// (the `auto_da_alloc` heuristic), and removing the state directory after a `run` then waits
/// for that disk write (up to a few ms). Overwriting from offset 0 and cutting the file to the
/// new length (never 0) queues no write-out. A reader racing with this sees the old or the new
/// bytes of a same-length status; with `O_TRUNC` it could see an empty file.
pub(crate) fn save_state(c: &Container) -> std::io::Result<()> {
    let text = serde_json::to_vec(&c.state).map_err(std::io::Error::other)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(State::file_path(&c.root))?;
    file.write_all(&text)?;
    file.set_len(text.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_state_replaces_a_longer_one_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Container::new(
            "c1",
            ContainerStatus::Created,
            Some(4242),
            dir.path(),
            dir.path(),
        )
        .unwrap();
        // A longer file than the new state: the tail must go.
        std::fs::write(State::file_path(dir.path()), vec![b' '; 4096]).unwrap();
        c.set_status(ContainerStatus::Running);
        save_state(&c).unwrap();
        let text = std::fs::read(State::file_path(dir.path())).unwrap();
        assert_eq!(text, serde_json::to_vec(&c.state).unwrap());
        let loaded = State::load(dir.path()).unwrap();
        assert_eq!(loaded.status, ContainerStatus::Running);
        assert_eq!(loaded.pid, Some(4242));
    }
}
