//! One module per command, each a function from its parsed arguments to an exit code.

pub mod create;
pub mod delete;
pub mod exec;
pub mod features;
pub mod kill;
pub mod list;
pub mod pause;
pub mod ps;
pub mod resume;
pub mod run;
pub mod start;
pub mod state;
pub mod update;

use crate::cli::{Cli, Command};
use crate::error::Result;

/// Runs the command `cli` names and returns the process exit code.
pub fn dispatch(cli: &Cli) -> Result<i32> {
    let g = &cli.global;
    match &cli.command {
        Command::Create(args) => create::create(g, args),
        Command::Start(args) => start::start(g, args),
        Command::State(args) => state::state(g, args),
        Command::Kill(args) => kill::kill(g, args),
        Command::Delete(args) => delete::delete(g, args),
        Command::Run(args) => run::run(g, args),
        Command::List(args) => list::list(g, args),
        Command::Ps(args) => ps::ps(g, args),
        Command::Exec(args) => exec::exec(g, args),
        Command::Pause(args) => pause::pause(g, args),
        Command::Resume(args) => resume::resume(g, args),
        Command::Update(args) => update::update(g, args),
        Command::Features => features::features(),
    }
}

/// Writes `value` as pretty JSON on stdout.
pub(crate) fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(crate::error::Error::Json)?;
    println!("{text}");
    Ok(())
}
