//! `pause`: freeze every process of a running container.

use crate::cli::{GlobalOpts, IdArgs};
use crate::container;
use crate::error::{Error, Result};

pub fn pause(global: &GlobalOpts, args: &IdArgs) -> Result<i32> {
    let mut c = container::load(&global.root, &args.id)?;
    c.pause()
        .map_err(|e| Error::container("pause", &args.id, e))?;
    Ok(0)
}
