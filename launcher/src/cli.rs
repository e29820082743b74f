//! The `msb` command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use serde::{Deserialize, Serialize};

use crate::sandbox_cmd::args as sb;

/// Run commands in micro-VMs with host directories, named volumes, tmpfs and
/// disks mounted.
#[derive(Debug, Parser)]
#[command(name = "msb", version, about, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// `msb` subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command in a fresh micro-VM and return its output and exit code.
    Run(Box<RunArgs>),
    /// Manage named volumes: create, ls, inspect, rm, and host-side file
    /// access (fs).
    Volume(crate::volume::args::VolumeArgs),
    /// Pull an image from a registry into the local image store.
    Pull(crate::image::args::PullArgs),
    /// Load images from a docker-archive, oci-archive or OCI layout.
    Load(crate::image::args::LoadArgs),
    /// Manage local images: ls, inspect, rm, prune.
    Image(crate::image::args::ImageArgs),
    /// Registry credentials: login, logout.
    Registry(crate::image::args::RegistryArgs),
    /// Create a sandbox that stays up (boots now; `msb exec` into it).
    Create(Box<sb::CreateArgs>),
    /// Run a command in a running sandbox.
    Exec(sb::ExecArgs),
    /// An interactive shell in a running sandbox.
    Shell(sb::ShellArgs),
    /// Copy files and trees between the host and a running sandbox.
    Cp(sb::CpArgs),
    /// List sandboxes: name, image, status, created, mounts.
    #[command(alias = "list")]
    Ls(sb::LsArgs),
    /// Show every field of a sandbox, as JSON.
    Inspect(sb::InspectArgs),
    /// Stop sandboxes (a clean guest shutdown; --force stops the VM at once).
    Stop(sb::StopArgs),
    /// Start stopped sandboxes with the configuration they were created with.
    Start(sb::StartArgs),
    /// Remove sandboxes (a running one only with -f).
    #[command(alias = "remove")]
    Rm(sb::RmArgs),
    /// Serve the HTTP/JSON API on a unix socket (default $MSB_HOME/msb.sock),
    /// e.g. `msb serve` or `msb serve --socket /run/msb.sock`.
    Serve(crate::serve::ServeArgs),
    /// The process that owns a running sandbox (started by create/start).
    #[command(name = "sandbox-supervisor", hide = true)]
    SandboxSupervisor(sb::SupervisorArgs),
}

/// The VMM that runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VmmChoice {
    /// cloud-hypervisor (needs a usable /dev/kvm).
    CloudHypervisor,
    /// QEMU, with KVM when usable, else TCG.
    Qemu,
}

/// How much `msb` logs on stderr.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    /// Errors only.
    Error,
    /// Errors and warnings (default).
    Warn,
    /// Progress of each phase.
    Info,
    /// Timings and commands started.
    Debug,
    /// Everything.
    Trace,
}

const RUN_AFTER_HELP: &str = "\
Examples:
  msb run -- echo hello
  msb run -v ./src:/app:ro -w /app -- ls -l
  msb run -v cache:/cache -- du -sh /cache
  msb run --mount type=volume,src=pg,dst=/var/lib/pg,mode=ensure-exists,kind=disk,size=1024 -- ls /var/lib/pg
  msb run --tmpfs /tmp:size=64M,noexec -- sh -c 'df -h /tmp'
  msb run --disk ./data.qcow2:/data -- cat /data/notes
  msb run -v ./config.toml:/etc/app/config.toml:ro -- cat /etc/app/config.toml
  msb run --mount type=bind,src=./cache,dst=/cache -e HOME=/cache -- sh -c 'ls $HOME'
  msb run --image 127.0.0.1:5000/py:3 -- python3 -c 'print(6*7)'
  msb run --image 127.0.0.1:5000/app:1          # the image's Entrypoint + Cmd

Exit status: the command's own exit code; 128+N when a signal N killed it;
  2 bad usage or mount spec (nothing was started); 124 --timeout reached;
  125 msb or the VM failed; 126 the command could not be run;
  127 the command was not found; 130/143 msb got SIGINT/SIGTERM.";

/// What a VM is made of and how it starts: shared by `msb run` and
/// `msb create`, and stored as a sandbox's spec.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineArgs {
    /// VMM to use [default: cloud-hypervisor when installed and /dev/kvm is
    /// usable, else QEMU with KVM when usable, else QEMU with TCG].
    #[arg(long, value_enum)]
    pub vmm: Option<VmmChoice>,

    /// Number of vCPUs, e.g. `--cpus 2`.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub cpus: u32,

    /// Guest memory, e.g. `--memory 1G` (a plain number is MiB).
    #[arg(long, default_value = "512M")]
    pub memory: String,

    /// Guest kernel (bzImage) [default: the one scripts/setup.sh fetched].
    #[arg(long, env = "MSB_KERNEL")]
    pub kernel: Option<PathBuf>,

    /// Initramfs holding msb-init [default: the one scripts/setup.sh built].
    #[arg(long, env = "MSB_INITRAMFS")]
    pub initramfs: Option<PathBuf>,

    /// Host directory that becomes the guest's root (served read-write by
    /// virtiofsd-msb), e.g. `--rootfs ./debian-rootfs`.
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,

    /// Bind-mount a host directory or file, or mount a named volume:
    /// `SRC:GUEST[:ro,noexec,nosuid,nodev,stat-virt=strict|relaxed|off,
    /// host-perms=private|mirror]`, e.g. `-v ./src:/app:ro`,
    /// `-v ./app.toml:/etc/app/app.toml:ro` or `-v cache:/cache`. A single
    /// file is served alone (nothing else of its directory is reachable)
    /// and lands on a file at GUEST, created when missing; renaming over it
    /// or removing it fails with EBUSY in the guest, as for any mount
    /// point. A SRC starting with `/` or `.` is a host path
    /// (write `./name` for a directory in the current one); anything else
    /// is the name of a volume, which must exist (see `msb volume`; or use
    /// `--mount type=volume,…,mode=ensure-exists`). stat-virt keeps guest
    /// owners/modes in a host xattr (default strict); host-perms mirror
    /// copies guest rwx bits to the host (default private); neither applies
    /// to disk volumes.
    #[arg(short = 'v', long = "volume", value_name = "SRC:GUEST[:OPTS]")]
    pub volumes: Vec<String>,

    /// Mount a tmpfs: `GUEST[:size=64M,ro,noexec,nosuid,nodev]`, e.g.
    /// `--tmpfs /tmp:size=64M`.
    #[arg(long = "tmpfs", value_name = "GUEST[:OPTS]")]
    pub tmpfs: Vec<String>,

    /// Attach a disk image and mount it: `HOST:GUEST[:format=raw|qcow2|vmdk|…,
    /// backing=allow,fstype=…,ro,noexec,nosuid,nodev]`, e.g.
    /// `--disk ./data.qcow2:/data`. The format is read from the image's
    /// header on the host when not given (a given one must agree), and a raw
    /// image stays raw whatever its guest writes (recorded in its
    /// user.msb.disk-format xattr). An image naming other files (a backing
    /// file, an external data file, VMDK extents) is refused unless
    /// backing=allow, and then only files in the image's directory are
    /// opened. The fstype is detected from the superblock when not given.
    #[arg(long = "disk", value_name = "HOST:GUEST[:OPTS]")]
    pub disks: Vec<String>,

    /// Long form of a mount: `type=bind|volume|tmpfs|disk,src=…,dst=…[,OPTS]`,
    /// e.g. `--mount type=tmpfs,dst=/scratch,size=1G`. Named volumes:
    /// `type=volume,src=NAME,dst=/guest[,mode=existing|create|ensure-exists,
    /// kind=dir|disk,size=MIB,quota=MIB,ro,…]`: existing (default) needs the
    /// volume, create makes it (an error if it exists), ensure-exists makes
    /// it when missing; kind/size/quota define a new volume and must match
    /// an existing one (whose metadata is never changed). A dir volume is
    /// served by virtiofsd-msb under its quota (shared with every other VM
    /// using it); a disk volume (size required) is attached as virtio-blk
    /// and mounted ext4. The volume counts as in use until the run ends.
    #[arg(long = "mount", value_name = "type=…,src=…,dst=…")]
    pub mounts: Vec<String>,

    /// Set an environment variable: `-e KEY=VALUE`, or `-e KEY` to pass the
    /// host's value.
    #[arg(short = 'e', long = "env", value_name = "KEY[=VALUE]")]
    pub env: Vec<String>,

    /// Working directory of the command in the guest, e.g. `-w /app`.
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,

    /// Give up (exit 125, VM stopped) when the guest has not come up
    /// (msb-init running with its control share mounted) within this many
    /// seconds, e.g. `--boot-timeout 120` on a slow host.
    #[arg(long, value_name = "SECS", env = "MSB_BOOT_TIMEOUT", default_value_t = 60,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub boot_timeout: u64,
}

impl Default for MachineArgs {
    /// The same defaults as the command line's.
    fn default() -> Self {
        MachineArgs {
            vmm: None,
            cpus: 1,
            memory: "512M".into(),
            kernel: None,
            initramfs: None,
            rootfs: None,
            volumes: Vec::new(),
            tmpfs: Vec::new(),
            disks: Vec::new(),
            mounts: Vec::new(),
            env: Vec::new(),
            workdir: None,
            boot_timeout: 60,
        }
    }
}

/// Options of `msb run`.
#[derive(Debug, Args)]
#[command(after_help = RUN_AFTER_HELP)]
pub struct RunArgs {
    /// The VM: VMM, size, kernel, mounts, environment.
    #[command(flatten)]
    pub machine: MachineArgs,

    /// Forward stdin to the command (`echo hi | msb run -i -- cat`).
    #[arg(short = 'i', long)]
    pub interactive: bool,

    /// Run the command on a pseudo-terminal (implies -i), e.g.
    /// `msb run -t -- sh`.
    #[arg(short = 't', long)]
    pub tty: bool,

    /// OCI image of the root filesystem, pulled when not in the store, e.g.
    /// `--image alpine:latest`; writes go to a layer that is gone with the
    /// VM [default: the embedded root, msb-init + busybox].
    #[arg(long)]
    pub image: Option<String>,

    /// Stop the VM after this many seconds (exit status 124), e.g.
    /// `--timeout 30`.
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,

    /// Log level of msb itself (RUST_LOG overrides).
    #[arg(long, value_enum, default_value = "warn")]
    pub log_level: LogLevel,

    /// The command and its arguments, after `--`. Optional with --image:
    /// without one the image's Entrypoint and Cmd run; a command given
    /// replaces the Cmd and follows the Entrypoint (as with `docker run`).
    #[arg(last = true, required_unless_present = "image", value_name = "CMD")]
    pub command: Vec<String>,
}
