//! `delete`: remove a stopped container (with --force, any container) and all it left behind.

use std::time::Duration;

use libcontainer::container::{Container, ContainerStatus};

use crate::cli::{DeleteArgs, GlobalOpts};
use crate::container;
use crate::error::{Error, Result};

pub fn delete(global: &GlobalOpts, args: &DeleteArgs) -> Result<i32> {
    let mut c = match container::load(&global.root, &args.id) {
        Ok(c) => c,
        // Like runc: deleting with --force what is already gone is not an error.
        Err(Error::NotFound(_)) if args.force => return Ok(0),
        Err(e) => return Err(e),
    };
    match c.status() {
        // A stopped container (its init gone) has nothing left to kill: the fast path, as after `run`.
        ContainerStatus::Stopped => delete_stopped(&mut c, Duration::ZERO)?,
        // Like runc's `delete --force` (and its delete of a created container): SIGKILL every process, then wait
        // for them to be gone before removing the cgroups (runc waits up to 10 s). A killed init can take a while
        // to leave its cgroups: it tears down its namespaces first, and the last process of a mount namespace
        // with an overlay root unmounts it, which syncs the overlay's upper file system. libcontainer's own
        // forced delete gives the cgroups only ~0.1 s. (Paused containers take libcontainer's path, which thaws
        // them after the kill.)
        ContainerStatus::Running | ContainerStatus::Created
            if args.force || c.status() == ContainerStatus::Created =>
        {
            let id = c.id().to_owned();
            c.kill(nix::sys::signal::Signal::SIGKILL, true)
                .map_err(|e| Error::container("kill", &id, e))?;
            delete_stopped(&mut c, KILL_WAIT)?;
        }
        _ => delete_container(&mut c, args.force)?,
    }
    Ok(0)
}

/// How long `delete --force` waits for killed processes to leave their cgroups, as runc.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Deletes a container whose init this process has just reaped (`run`): [`delete_stopped`],
/// giving the kernel a moment to empty the cgroups.
pub(crate) fn delete_reaped(c: &mut Container) -> Result<()> {
    delete_stopped(c, Duration::from_secs(2))
}

/// Deletes a stopped container without what makes libcontainer's delete slow: it builds a
/// cgroup manager, which reads /proc/self/mountinfo and /proc/self/cgroup once per known
/// controller (about 4 ms of a 20 ms `run` here, more on a host with many mounts). This removes
/// the leaf in every hierarchy from one read of mountinfo, runs the poststop hooks and removes
/// the state directory, as libcontainer does for a stopped container.
/// When a leaf is still busy (processes outside a pid namespace), or with systemd cgroups or
/// Intel RDT, it falls back to libcontainer's delete, which kills what is left. A busy leaf is
/// retried for up to `wait` first (the init was reaped or killed just now).
pub(crate) fn delete_stopped(c: &mut Container, wait: Duration) -> Result<()> {
    let id = c.id().to_owned();
    let config = match c.spec() {
        Ok(config) if !c.systemd() && c.intel_rdt_dir().is_none() => config,
        _ => return delete_container(c, true),
    };
    // A just-reaped init's pid namespace is torn down by the kernel only now (and on a busy host
    // that takes a moment): give the cgroups up to `wait` to empty before the slower, forceful path.
    let deadline = std::time::Instant::now() + wait;
    let emptied = loop {
        if crate::cgroups::remove_if_empty(&id, &config.cgroup_path)? {
            break true;
        }
        if std::time::Instant::now() >= deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    if !emptied {
        return delete_container(c, true);
    }
    c.set_status(ContainerStatus::Stopped);
    if let Some(hooks) = &config.hooks {
        libcontainer::hooks::run_hooks(hooks.poststop().as_ref(), Some(&c.state), None, None, None)
            .map_err(|e| Error::container("run the poststop hooks of", &id, e.into()))?;
    }
    std::fs::remove_dir_all(&c.root)
        .map_err(|e| Error::io(format!("remove {}", c.root.display()), e))
}

/// libcontainer's delete (kill if forced, cgroups, poststop hooks, state dir), then the leaf in
/// the hierarchies libcontainer does not know (named ones, the unified one of a hybrid host).
pub(crate) fn delete_container(c: &mut Container, force: bool) -> Result<()> {
    let id = c.id().to_owned();
    // Read before delete: the saved config disappears with the state directory.
    let cgroup_path = c.spec().ok().map(|config| config.cgroup_path);
    c.delete(force)
        .map_err(|e| Error::container("delete", &id, e))?;
    if let Some(path) = cgroup_path {
        if !c.systemd() {
            crate::cgroups::remove_empty(&id, &path)?;
        }
    }
    Ok(())
}
