//! `update`: apply new resource limits to a container's cgroups.

use std::io::Read;

use libcgroups::common::{CgroupManager, ControllerOpt};
use libcontainer::container::ContainerStatus;

use crate::cli::{GlobalOpts, UpdateArgs};
use crate::container;
use crate::error::{Error, Result};
use crate::resources;

pub fn update(global: &GlobalOpts, args: &UpdateArgs) -> Result<i32> {
    let json = match &args.resources {
        None => None,
        Some(p) if p.as_os_str() == "-" => {
            let mut s = String::new();
            std::io::stdin()
                .read_to_string(&mut s)
                .map_err(|e| Error::io("read resources from stdin", e))?;
            Some(s)
        }
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| Error::io(format!("read {}", p.display()), e))?,
        ),
    };
    let resources = resources::from_args(args, json.as_deref())?;
    let c = container::load(&global.root, &args.id)?;
    if c.status() == ContainerStatus::Stopped {
        return Err(Error::IncorrectState {
            op: "update",
            id: args.id.clone(),
            status: container::status_name(c.status()),
        });
    }
    crate::cgroups::manager(&c)?
        .apply(&ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(|e| Error::Cgroup {
            op: "apply resources",
            id: args.id.clone(),
            source: Box::new(e),
        })?;
    Ok(0)
}
