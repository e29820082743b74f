//! The command line of `msb volume`.

use clap::{Args, Subcommand, ValueEnum};

use crate::spec::parse_mib;

const VOLUME_AFTER_HELP: &str = "\
Volumes live under $MSB_HOME (default ~/.microsandbox): volumes/<name>/ holds
a dir volume's files, or a disk volume's disk.raw (ext4); db/msb.db the
metadata. Mount one with `msb run -v NAME:/guest` or
`msb run --mount type=volume,src=NAME,dst=/guest,mode=ensure-exists`.

Examples:
  msb volume create cache --quota 1024 --label team=ci
  msb volume create pgdata --kind disk --size 2048
  msb volume fs cache write seed.txt 'hello'
  msb volume fs cache mkdir notes
  echo hi | msb volume fs cache write notes/hi.txt
  msb volume ls --label team=ci
  msb volume inspect cache --json
  msb volume rm cache pgdata

Exit status: 0 done; 1 refused or failed (not found, exists, in use, I/O;
  `fs exists` prints false); 2 bad usage (bad name, option or path).";

/// Options of `msb volume`.
#[derive(Debug, Args)]
#[command(after_help = VOLUME_AFTER_HELP)]
pub struct VolumeArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: VolumeCommand,
}

/// `msb volume` subcommands.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a named volume (an error if it exists).
    Create(CreateArgs),
    /// List volumes: name, kind, quota, used, capacity, created, in use.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show every field of a volume and which VMs use it.
    Inspect(InspectArgs),
    /// Remove volumes and their data (refused while a running VM uses one).
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Read and write a dir volume's files from the host, no VM needed.
    Fs(FsArgs),
}

/// `--kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    /// A host directory served by virtiofsd-msb (quota with --quota).
    Dir,
    /// A raw ext4 image attached as virtio-blk (capacity with --size).
    Disk,
}

fn mib(text: &str) -> Result<u32, String> {
    parse_mib(text)
}

/// `msb volume create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Volume name: 1-63 of [A-Za-z0-9_.-], not starting with '.' or '-'.
    pub name: String,
    /// Storage kind.
    #[arg(long, value_enum, default_value = "dir")]
    pub kind: KindArg,
    /// Quota of a dir volume in MiB (0: unlimited), e.g. `--quota 1024`.
    #[arg(long, value_name = "MIB", value_parser = mib)]
    pub quota: Option<u32>,
    /// Capacity of a disk volume in MiB (required for --kind disk).
    #[arg(long, value_name = "MIB", value_parser = mib)]
    pub size: Option<u32>,
    /// A label, repeatable: `--label env=prod`.
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
}

/// `msb volume ls`.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only volumes with this label (repeatable; all must match).
    #[arg(long = "label", value_name = "K=V")]
    pub labels: Vec<String>,
    /// JSON output (an array of inspect objects).
    #[arg(long)]
    pub json: bool,
}

/// `msb volume inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Volume name.
    pub name: String,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
}

/// `msb volume rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Volume names.
    #[arg(required = true, value_name = "NAME")]
    pub names: Vec<String>,
}

/// `msb volume fs`.
#[derive(Debug, Args)]
pub struct FsArgs {
    /// Volume name (a dir volume).
    pub name: String,
    /// The operation; every PATH is relative to the volume root.
    #[command(subcommand)]
    pub op: FsOp,
}

/// `msb volume fs NAME …` operations.
#[derive(Debug, Subcommand)]
pub enum FsOp {
    /// Print a file's bytes on stdout.
    Read {
        /// File to read.
        path: String,
    },
    /// Write a file (created 0644 or truncated) from DATA or stdin.
    Write {
        /// File to write.
        path: String,
        /// The contents; read from stdin when absent.
        data: Option<String>,
    },
    /// Create a directory and its parents (0755).
    Mkdir {
        /// Directory to create.
        path: String,
    },
    /// Remove a file or empty directory; `-r` removes a tree.
    Rm {
        /// Remove a directory and everything in it.
        #[arg(short = 'r', long)]
        recursive: bool,
        /// What to remove.
        path: String,
    },
    /// Print true (exit 0) or false (exit 1).
    Exists {
        /// Path to test.
        path: String,
    },
    /// List a directory: type, size, name.
    Ls {
        /// Directory [default: the volume root].
        path: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}
