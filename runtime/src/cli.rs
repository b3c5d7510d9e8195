//! The command line, shaped like runc's so that a containerd-style caller can use it in runc's place.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(
    name = "skiff-runtime",
    version,
    about = "OCI runtime with runc's command line"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts, before or after the command name.
#[derive(Debug, Clone, Args)]
pub struct GlobalOpts {
    /// Directory holding the state of containers.
    #[arg(long, global = true, default_value = "/run/skiff/runtime")]
    pub root: PathBuf,
    /// Write logs to this file instead of stderr.
    #[arg(long, global = true)]
    pub log: Option<PathBuf>,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log at debug level.
    #[arg(long, global = true)]
    pub debug: bool,
    /// Manage cgroups through systemd (cgroupsPath as slice:prefix:name).
    #[arg(long, global = true)]
    pub systemd_cgroup: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Table,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a container from a bundle; its process waits for `start`.
    Create(CreateArgs),
    /// Run the process of a created container.
    Start(IdArgs),
    /// Print the OCI state of a container as JSON.
    State(IdArgs),
    /// Send a signal to the container's init process (or all its processes).
    Kill(KillArgs),
    /// Delete a stopped (or, with --force, any) container and its resources.
    Delete(DeleteArgs),
    /// Create and start a container, then wait for it unless --detach.
    Run(RunArgs),
    /// List containers.
    List(ListArgs),
    /// List the processes of a container.
    Ps(PsArgs),
    /// Run a new process inside a running container.
    Exec(ExecArgs),
    /// Suspend all processes of a container.
    Pause(IdArgs),
    /// Resume a paused container.
    Resume(IdArgs),
    /// Change the resource limits of a container.
    Update(UpdateArgs),
    /// Print the features of this runtime as OCI features JSON.
    Features,
}

#[derive(Debug, Args)]
pub struct IdArgs {
    pub id: String,
}

/// Options shared by `create` and `run`.
#[derive(Debug, Clone, Args)]
pub struct InitOpts {
    /// Bundle directory (holding config.json).
    #[arg(short, long, default_value = ".")]
    pub bundle: PathBuf,
    /// File to write the container's init pid to.
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    /// Unix socket receiving the pseudo-terminal master when process.terminal is true.
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Use chroot-like MS_MOVE instead of pivot_root (for ramfs roots).
    #[arg(long)]
    pub no_pivot: bool,
    /// Pass this many extra fds (from fd 3) to the container.
    #[arg(long, default_value_t = 0)]
    pub preserve_fds: i32,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    pub id: String,
    #[command(flatten)]
    pub init: InitOpts,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    pub id: String,
    #[command(flatten)]
    pub init: InitOpts,
    /// Return once the container is started instead of waiting for it.
    #[arg(short, long)]
    pub detach: bool,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    pub id: String,
    /// Signal name or number (TERM, SIGTERM, 15).
    #[arg(default_value = "SIGTERM")]
    pub signal: String,
    /// Signal every process of the container, not only its init.
    #[arg(short, long)]
    pub all: bool,
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    pub id: String,
    /// Kill the container first if it is still running.
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Print only the container ids.
    #[arg(short, long)]
    pub quiet: bool,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    pub id: String,
    #[arg(short, long, value_enum, default_value_t = OutputFormat::Table)]
    pub format: OutputFormat,
    /// Options for ps(1) in table format (default -ef).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    pub id: String,
    /// Command and arguments (unless --process is given).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
    /// A process.json (OCI process) describing what to run.
    #[arg(short, long)]
    pub process: Option<PathBuf>,
    /// Allocate a pseudo-terminal: relayed to our stdio, or sent to --console-socket.
    #[arg(short, long)]
    pub tty: bool,
    /// Return once the process is started instead of waiting for it.
    #[arg(short, long)]
    pub detach: bool,
    #[arg(long)]
    pub pid_file: Option<PathBuf>,
    #[arg(long)]
    pub console_socket: Option<PathBuf>,
    /// Environment variables NAME=value (repeatable).
    #[arg(short, long)]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// User as uid[:gid].
    #[arg(short, long)]
    pub user: Option<String>,
}

#[derive(Debug, Args)]
pub struct UpdateArgs {
    pub id: String,
    /// Resources as an OCI linux.resources JSON file ("-" for stdin).
    #[arg(short, long)]
    pub resources: Option<PathBuf>,
    /// Memory limit in bytes (suffixes k, m, g accepted).
    #[arg(long)]
    pub memory: Option<String>,
    /// Memory plus swap limit in bytes (suffixes k, m, g accepted; -1 for unlimited).
    #[arg(long)]
    pub memory_swap: Option<String>,
    /// Maximum number of processes (-1 or 0 for unlimited).
    #[arg(long)]
    pub pids_limit: Option<i64>,
    #[arg(long)]
    pub cpu_shares: Option<u64>,
    #[arg(long, allow_hyphen_values = true)]
    pub cpu_quota: Option<i64>,
    #[arg(long)]
    pub cpu_period: Option<u64>,
}
