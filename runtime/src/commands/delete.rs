//! `delete`: remove a stopped container (with --force, any container) and all it left behind.

use libcontainer::container::Container;

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
    delete_container(&mut c, args.force)?;
    Ok(0)
}

/// libcontainer's delete (kill if forced, cgroups, poststop hooks, state dir), then the empty
/// cgroup parents it leaves behind.
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
