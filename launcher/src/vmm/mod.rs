//! VMM backends: turn a [`VmPlan`] into the exact command line of
//! cloud-hypervisor or QEMU, and say how the guest's output reaches us.
//!
//! - [`qemu`], [`cloud_hypervisor`]: the exact argv of each backend;
//! - [`ch_events`]: CH's event monitor (CH has no `-no-reboot`);
//! - [`detect`] (+ [`kvm_probe`]): the default VMM and a real KVM probe;
//! - [`check_plan`]: what a backend cannot express, refused up front;
//! - [`spawn`] / [`command`]: starting the VMM process.
//!
//! Contract with the launcher for the output FIFOs: both VMMs open
//! `plan.stdout_fifo` / `plan.stderr_fifo` with a blocking write-only
//! `open` (QEMU at start-up, CH while creating the VM), so the launcher
//! must hold each FIFO open for reading before starting the VMM.

pub mod ch_events;
pub mod cloud_hypervisor;
pub mod detect;
pub mod kvm_probe;
mod plan_check;
mod process;
pub mod qemu;
#[cfg(test)]
pub(crate) mod test_plans;

use std::path::PathBuf;

use guest_init::config::{OutputChannel, StdioChannels};

pub use plan_check::{check_plan, PlanError};
pub use process::{command, event_pipe, spawn, Spawned, VMM_LOG};

/// Which VMM runs the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmKind {
    /// cloud-hypervisor (needs KVM).
    CloudHypervisor,
    /// QEMU, with KVM when usable, else TCG.
    Qemu,
}

/// CPU virtualisation for QEMU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    /// Hardware virtualisation.
    Kvm,
    /// Software emulation.
    Tcg,
}

/// Image format of a disk: found on the host before the VMM starts, and
/// always passed to the VMM explicitly (see [`volumes::disk_image`]).
pub use volumes::disk_image::DiskFormat;

/// A virtio-fs device backed by a `virtiofsd-msb` socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsShare {
    /// Device tag the guest mounts.
    pub tag: String,
    /// vhost-user socket of the daemon.
    pub socket: PathBuf,
    /// Request queues.
    pub num_queues: u32,
    /// Queue size.
    pub queue_size: u32,
}

/// A virtio-blk disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// Host image path.
    pub path: PathBuf,
    /// Image format.
    pub format: DiskFormat,
    /// Attach read-only.
    pub readonly: bool,
    /// Serial the guest finds the disk by (at most 20 bytes).
    pub serial: String,
}

/// Everything a backend needs to start one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmPlan {
    /// Kernel image (bzImage).
    pub kernel: PathBuf,
    /// Initramfs (newc cpio, gzip).
    pub initramfs: PathBuf,
    /// Kernel command line without console settings (the backend adds them).
    pub cmdline: String,
    /// vCPUs.
    pub cpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// virtio-fs devices, the control share first.
    pub shares: Vec<FsShare>,
    /// virtio-blk devices.
    pub disks: Vec<Disk>,
    /// FIFO carrying the command's stdout (the launcher reads it).
    pub stdout_fifo: PathBuf,
    /// FIFO carrying the command's stderr.
    pub stderr_fifo: PathBuf,
    /// File receiving the kernel console (for diagnostics).
    pub console_log: PathBuf,
    /// Unix socket of the agent channel (a sandbox's guest agent), which
    /// the VMM creates and listens on; `None` for `msb run`.
    pub agent_socket: Option<PathBuf>,
    /// Working directory for VMM control files (API socket, event monitor).
    pub run_dir: PathBuf,
    /// QEMU acceleration.
    pub accel: Accel,
}

/// How a VMM run ended, as far as the VMM can tell (the guest's own report
/// on the control share is the authority on the command's result).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmmExit {
    /// The guest powered off and the VMM exited 0. Under QEMU this also
    /// covers a guest reboot (`-no-reboot`).
    PoweredOff,
    /// The guest rebooted (CH only; the launcher stopped CH).
    Rebooted,
    /// The guest kernel panicked (pvpanic, or its banner on the console).
    GuestPanic,
    /// The VMM failed and exited with this code; its log says why.
    Failed(i32),
    /// The VMM died from this signal (SIGKILL from the launcher, or a crash:
    /// SIGABRT, SIGSEGV, SIGSYS from CH's seccomp filter).
    Killed(i32),
}

/// Where the guest writes the command's stdout and stderr under `kind`:
/// QEMU's named virtio-serial ports, CH's virtio console and serial port.
/// `/dev/hvc0` and `/dev/ttyS0` are ttys: the guest must put them in raw
/// mode (no `OPOST`/`ONLCR`) or every `\n` reaches the host as `\r\n`.
pub fn guest_stdio(kind: VmmKind) -> StdioChannels {
    match kind {
        VmmKind::Qemu => StdioChannels {
            stdout: OutputChannel::Port {
                name: qemu::STDOUT_PORT.to_string(),
            },
            stderr: OutputChannel::Port {
                name: qemu::STDERR_PORT.to_string(),
            },
        },
        VmmKind::CloudHypervisor => StdioChannels {
            stdout: OutputChannel::Device {
                path: "/dev/hvc0".to_string(),
            },
            stderr: OutputChannel::Device {
                path: "/dev/ttyS0".to_string(),
            },
        },
    }
}

/// `base` plus a backend's kernel `params`, placed before a standalone `--`
/// (what follows it goes to init, not the kernel) so they reach the kernel
/// and, coming after `base`'s own, win for parameters given twice.
pub fn kernel_cmdline(base: &str, params: &str) -> String {
    let base = base.trim();
    let dashdash = base.match_indices("--").map(|(i, _)| i).find(|&i| {
        let before_ok = i == 0 || base.as_bytes()[i - 1].is_ascii_whitespace();
        let after = base.as_bytes().get(i + 2);
        before_ok && after.is_none_or(|b| b.is_ascii_whitespace())
    });
    match dashdash {
        Some(i) => {
            let head = base[..i].trim_end();
            if head.is_empty() {
                format!("{params} {}", &base[i..])
            } else {
                format!("{head} {params} {}", &base[i..])
            }
        }
        None if base.is_empty() => params.to_string(),
        None => format!("{base} {params}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_params_go_before_init_args() {
        assert_eq!(kernel_cmdline("", "console=ttyS0"), "console=ttyS0");
        assert_eq!(
            kernel_cmdline(" quiet ", "console=ttyS0"),
            "quiet console=ttyS0"
        );
        assert_eq!(
            kernel_cmdline("quiet -- a b", "console=ttyS0"),
            "quiet console=ttyS0 -- a b"
        );
        assert_eq!(kernel_cmdline("-- a", "p=1"), "p=1 -- a");
        assert_eq!(kernel_cmdline("quiet --", "p=1"), "quiet p=1 --");
        assert_eq!(kernel_cmdline("opt=--x a--b", "p=1"), "opt=--x a--b p=1");
    }

    #[test]
    fn stdio_channels_per_backend() {
        let q = guest_stdio(VmmKind::Qemu);
        assert_eq!(
            q.stdout,
            OutputChannel::Port {
                name: "msb.stdout".into()
            }
        );
        assert_eq!(
            q.stderr,
            OutputChannel::Port {
                name: "msb.stderr".into()
            }
        );
        let c = guest_stdio(VmmKind::CloudHypervisor);
        assert_eq!(
            c.stdout,
            OutputChannel::Device {
                path: "/dev/hvc0".into()
            }
        );
        assert_eq!(
            c.stderr,
            OutputChannel::Device {
                path: "/dev/ttyS0".into()
            }
        );
    }
}
