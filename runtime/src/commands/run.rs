//! `run`: create and start a container; unless --detach, wait for it, delete it and exit with
//! its exit code (128 + signal if it was killed, so an OOM kill gives 137).

use crate::cli::{GlobalOpts, RunArgs};
use crate::error::{report, Error, Result};
use crate::wait;

pub fn run(global: &GlobalOpts, args: &RunArgs) -> Result<i32> {
    let mut c = super::create::create_container(global, &args.id, &args.init)?;
    if let Err(e) = c.start() {
        let cleanup = super::delete::delete_container(&mut c, true).err();
        return Err(Error::container("start", &args.id, e).with_cleanup(cleanup));
    }
    if args.detach {
        return Ok(0);
    }
    let pid = c.pid().ok_or_else(|| {
        Error::InvalidArgument(format!("container {:?} has no init pid", args.id))
    })?;
    // The init is our child (libcontainer forks it with CLONE_PARENT from its helper).
    let waited = wait::wait_forwarding(pid);
    let cleanup = super::delete::delete_container(&mut c, true).err();
    match waited {
        Ok(code) => {
            // The workload's exit code is the answer; a failed cleanup is still reported.
            if let Some(e) = cleanup {
                tracing::error!(id = %args.id, err = %report(&e), "delete after run failed");
                eprintln!("skiff-runtime: {}", report(&e));
            }
            Ok(code)
        }
        Err(e) => Err(e.with_cleanup(cleanup)),
    }
}
