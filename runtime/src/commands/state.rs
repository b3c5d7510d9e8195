//! `state`: print the OCI state JSON of a container.

use crate::cli::{GlobalOpts, IdArgs};
use crate::container::{self, OciState};
use crate::error::Result;

pub fn state(global: &GlobalOpts, args: &IdArgs) -> Result<i32> {
    let c = container::load(&global.root, &args.id)?;
    super::print_json(&OciState::of(&c))?;
    Ok(0)
}
