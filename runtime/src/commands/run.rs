//! `run`: create and start a container; unless --detach, wait for it, delete it and exit with
//! its exit code (128 + signal if it was killed, so an OOM kill gives 137).
//!
//! A container with `process.terminal` and no --console-socket gets a foreground terminal, as
//! with `runc run`: the runtime receives the pty itself and relays it ([`crate::terminal`]).

use crate::bundle::Bundle;
use crate::cli::{GlobalOpts, RunArgs};
use crate::error::{report, Error, Result};
use crate::terminal::{self, ConsoleSocket};
use crate::wait;

pub fn run(global: &GlobalOpts, args: &RunArgs) -> Result<i32> {
    let bundle = Bundle::load(&args.init.bundle)?;
    let console = match (bundle.terminal(), &args.init.console_socket, args.detach) {
        (true, None, false) => {
            terminal::become_subreaper()?;
            Some(ConsoleSocket::new()?)
        }
        _ => None,
    };
    let mut c = super::create::create_container(
        global,
        &args.id,
        &args.init,
        &bundle,
        console.as_ref().map(|s| s.path()),
    )?;
    let master = match console
        .as_ref()
        .map(ConsoleSocket::receive_master)
        .transpose()
    {
        Ok(m) => m,
        Err(e) => {
            let cleanup = super::delete::delete_container(&mut c, true).err();
            return Err(e.with_cleanup(cleanup));
        }
    };
    if let Err(e) = super::start::start_container(&mut c) {
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
    let waited = match master {
        Some(master) => terminal::relay(pid, master),
        None => wait::wait_forwarding(pid),
    };
    let cleanup = match waited {
        Ok(_) => super::delete::delete_reaped(&mut c),
        Err(_) => super::delete::delete_container(&mut c, true),
    }
    .err();
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
