//! Options of the sandbox commands (`msb create/exec/shell/cp/ls/inspect/
//! stop/start/rm`).

use clap::Args;

use crate::cli::{LogLevel, MachineArgs};

const CREATE_AFTER_HELP: &str = "\
Examples:
  msb create dev -v ./src:/app:ro -w /app
  msb create worker --mount type=volume,src=cache,dst=/cache,mode=ensure-exists --tmpfs /tmp:size=100M
  msb exec dev -- ls -l /app
  msb stop dev && msb start dev && msb rm -f dev

The sandbox boots now and stays up until `msb stop`; its mounts follow the
same grammar and checks as `msb run`. Exit status: 0 up; 2 bad usage, spec
or name (nothing created); 125 the VM did not come up (nothing left).";

/// `msb create`.
#[derive(Debug, Args)]
#[command(after_help = CREATE_AFTER_HELP)]
pub struct CreateArgs {
    /// Name of the sandbox (letters, digits, `_`, `.`, `-`).
    pub name: String,

    /// OCI image of the root filesystem, e.g. `--image alpine:latest`
    /// [default: the embedded root, msb-init + busybox].
    #[arg(long)]
    pub image: Option<String>,

    /// The VM: VMM, size, kernel, mounts, environment.
    #[command(flatten)]
    pub machine: MachineArgs,

    /// Log level of msb itself (RUST_LOG overrides).
    #[arg(long, value_enum, default_value = "warn")]
    pub log_level: LogLevel,
}

const EXEC_AFTER_HELP: &str = "\
Examples:
  msb exec dev -- uname -a
  echo hi | msb exec -i dev -- cat
  msb exec -it dev -- sh
  msb exec -e FOO=bar -w /tmp -u 1000:1000 --timeout 10 dev -- sh -c 'id; echo $FOO'

Exit status: the command's own; 128+N when a signal N killed it; 124 --timeout;
  126 the command could not be run; 127 not found; 2 bad usage or the sandbox
  is not running; 125 msb or the sandbox failed.";

/// `msb exec`.
#[derive(Debug, Args)]
#[command(after_help = EXEC_AFTER_HELP)]
pub struct ExecArgs {
    /// Forward stdin to the command.
    #[arg(short = 'i', long)]
    pub interactive: bool,

    /// Run on a pseudo-terminal (interactive programs, Ctrl-C, resizes).
    #[arg(short = 't', long)]
    pub tty: bool,

    /// Set an environment variable: `-e KEY=VALUE`, or `-e KEY` to pass the
    /// host's value.
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,

    /// Working directory in the guest, e.g. `-w /app`.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,

    /// User (and group) ids to run as, e.g. `-u 1000` or `-u 1000:100`.
    #[arg(short = 'u', long = "user", value_name = "UID[:GID]")]
    pub user: Option<String>,

    /// Kill the command after this many seconds (exit status 124).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,

    /// The sandbox.
    pub name: String,

    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// `msb shell`.
#[derive(Debug, Args)]
pub struct ShellArgs {
    /// The sandbox.
    pub name: String,

    /// User (and group) ids, e.g. `-u 1000`.
    #[arg(short = 'u', long = "user", value_name = "UID[:GID]")]
    pub user: Option<String>,

    /// The shell to run [default: /bin/sh].
    #[arg(long, default_value = "/bin/sh")]
    pub shell: String,
}

/// `msb cp`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:\n  msb cp ./config.toml dev:/etc/\n  msb cp dev:/var/log ./logs")]
pub struct CpArgs {
    /// Source: a host path, or `NAME:GUEST_PATH`.
    pub src: String,
    /// Destination: a host path, or `NAME:GUEST_PATH`.
    pub dst: String,
}

/// `msb ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `msb inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The sandbox.
    pub name: String,
}

/// `msb stop`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Stop the VM at once instead of a clean guest shutdown.
    #[arg(short = 'f', long)]
    pub force: bool,

    /// Sandboxes to stop.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `msb start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Sandboxes to start.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// `msb rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Remove running sandboxes too (stopped first).
    #[arg(short = 'f', long)]
    pub force: bool,

    /// Sandboxes to remove.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// The hidden `msb sandbox-supervisor NAME`.
#[derive(Debug, Args)]
pub struct SupervisorArgs {
    /// The sandbox to supervise.
    pub name: String,

    /// The state directory it lives in (also in the command line, so the
    /// process shows which `MSB_HOME` it belongs to).
    #[arg(long)]
    pub home: std::path::PathBuf,
}
