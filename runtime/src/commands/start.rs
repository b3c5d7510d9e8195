//! `start`: let a created container's init run the user process.

use crate::cli::{GlobalOpts, IdArgs};
use crate::container;
use crate::error::{Error, Result};

pub fn start(global: &GlobalOpts, args: &IdArgs) -> Result<i32> {
    let mut c = container::load(&global.root, &args.id)?;
    c.start()
        .map_err(|e| Error::container("start", &args.id, e))?;
    Ok(0)
}
