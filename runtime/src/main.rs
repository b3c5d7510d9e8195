//! `skiff-runtime`: parse the runc-style command line and run one command.

use clap::Parser;
use skiff_runtime::cli::Cli;
use skiff_runtime::error::report;

fn main() {
    let cli = Cli::parse();
    if let Err(err) = skiff_runtime::logging::init(&cli.global) {
        eprintln!("skiff-runtime: {}", report(&err));
        std::process::exit(1);
    }
    match skiff_runtime::commands::dispatch(&cli) {
        Ok(code) => std::process::exit(code),
        Err(err) => {
            let message = report(&err);
            // Callers like containerd read the reason from the log file, runc's habit.
            tracing::error!("{message}");
            eprintln!("skiff-runtime: {message}");
            std::process::exit(1);
        }
    }
}
