//! Skiff's OCI runtime: a runc-compatible command line over youki's `libcontainer`.
//!
//! The binary (`main.rs`) parses the command line ([`cli`]), sets up logging ([`logging`]) and
//! calls [`commands::dispatch`], which runs one module per command (`commands/create.rs`,
//! `start.rs`, ...). Commands find containers in the state directory (`--root`) through
//! [`container`], check bundles before libcontainer sees them ([`bundle`], [`validate`]), and add what
//! libcontainer 0.7 lacks: waiting for a container process with signal forwarding ([`wait`]),
//! removal of the empty cgroup directories it leaves behind ([`cgroups`]), signal names
//! ([`signal`]), resource flags for `update` ([`resources`]) and a foreground terminal for
//! `run`/`exec -t` without a console socket ([`terminal`]).
//!
//! libcontainer forks with raw `clone3` and changes the process's current directory, so this
//! runs as a short-lived single-threaded process per operation; the node agent runs the binary.
//! The init of a container is a child of the runtime process that created it.

pub mod bundle;
pub mod cgroups;
pub mod cli;
pub mod commands;
pub mod container;
pub mod error;
pub mod logging;
pub mod resources;
pub mod signal;
pub mod terminal;
pub mod validate;
pub mod wait;

pub use error::{Error, Result};
