//! `resume`: thaw a paused container.

use crate::cli::{GlobalOpts, IdArgs};
use crate::container;
use crate::error::{Error, Result};

pub fn resume(global: &GlobalOpts, args: &IdArgs) -> Result<i32> {
    let mut c = container::load(&global.root, &args.id)?;
    c.resume()
        .map_err(|e| Error::container("resume", &args.id, e))?;
    Ok(0)
}
