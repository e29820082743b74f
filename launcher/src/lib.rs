//! `msb`: run a command in a micro-VM with host directories, named volumes,
//! tmpfs and disk images mounted, and get its output and exit code back.
//!
//! - [`cli`]: the command line;
//! - [`spec`]: mount specs as the user writes them, parsed and checked;
//! - [`assets`]: finding the guest kernel, initramfs and daemon;
//! - [`vmm`]: the cloud-hypervisor and QEMU backends;
//! - [`process`]: supervised child processes;
//! - [`run`]: starting daemons and the VM, supervising, cleaning up;
//! - [`volume`]: `msb volume` (named volumes) and the named mounts of a run;
//! - [`image`]: `msb pull`, `msb load`, `msb image`, `msb registry` (the
//!   `images` store);
//! - [`serve`]: `msb serve`, the HTTP/JSON API on a unix socket;
//! - [`exit`]: the exit statuses.

pub mod assets;
pub mod cli;
pub mod exit;
pub mod image;
pub mod machine;
pub mod process;
pub mod run;
pub mod sandbox;
pub mod sandbox_cmd;
pub mod sdk;
pub mod serve;
pub mod spec;
pub mod vmm;
pub mod volume;

pub use sandbox::client::ExecEvent;
pub use sandbox::{Error, Result};
pub use sdk::{
    ExecOptions, ExecOutput, ExecStream, Mount, MountBuilder, Sandbox, SandboxBuilder, SandboxFs,
    Volume, VolumeBuilder, VolumeFs,
};
