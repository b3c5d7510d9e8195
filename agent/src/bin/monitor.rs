//! `skiff-monitor`: the per-container monitor ([`skiff_agent::container::monitor`]) as a binary of its own.
//!
//! The agent starts one per container start. The same code runs as `skiff-agent monitor`, but this binary holds only
//! what the monitor uses: it is a few MB instead of the agent's 25 MB of code, so its exec, dynamic loading and
//! relocations cost a fraction (the agent falls back to `skiff-agent monitor` when this binary is not beside it).

use clap::Parser;
use skiff_agent::container::monitor::{self, MonitorArgs};

#[derive(Parser)]
#[command(name = "skiff-monitor", version, about = "Skiff per-container monitor (started by skiff-agent, not by hand)")]
struct Cli {
    #[command(flatten)]
    args: MonitorArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    skiff_agent::init_logging();
    // Single-threaded on purpose: it forks the runtime and reaps what it leaves it.
    monitor::run(cli.args)
}
