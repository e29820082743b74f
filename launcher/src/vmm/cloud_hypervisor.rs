//! The cloud-hypervisor backend: the exact `cloud-hypervisor` command line
//! for a [`VmPlan`] (flag names from CH's `--help` and docs; needs CH
//! v51.0 or newer, see [`super::detect::CH_MIN_VERSION`]).
//!
//! Output channels: the command's stdout goes to the virtio console
//! (`/dev/hvc0` in the guest, `--console file=<stdout fifo>`), its stderr to
//! the legacy serial port (`/dev/ttyS0`, `--serial file=<stderr fifo>`). CH
//! opens both files with a plain blocking `open(O_WRONLY|O_CREAT|O_TRUNC)`
//! while creating the VM (and again on a reboot): the launcher must have
//! both FIFOs open for reading before CH starts, or CH blocks forever.
//!
//! Kernel messages: `console=ttyS0 loglevel=1` (added after
//! `plan.cmdline`, so they win over its own `loglevel=`) keeps the kernel
//! off hvc0 entirely (no `console=` at all could let the kernel pick hvc0,
//! i.e. stdout) and keeps its messages out of stderr except `KERN_EMERG`;
//! a panic raises the console level, so a kernel panic does appear on
//! stderr, which is where a user wants it. There is no separate kernel log
//! under CH: `plan.console_log` is not written.
//!
//! Lifecycle: CH has no `-no-reboot`. `panic=-1` turns a guest panic into a
//! reboot, and `--pvpanic` adds a pvpanic PCI device so a guest with the
//! `pvpanic_pci` module reports the panic first. Events go to an inherited
//! pipe (`--event-monitor fd=`[`CH_EVENT_FD`]); [`super::ch_events`] parses
//! them and says when the launcher must stop CH.

use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use super::{kernel_cmdline, DiskFormat, VmPlan};

/// Kernel parameters the cloud-hypervisor backend adds to `plan.cmdline`.
pub const CH_KERNEL_PARAMS: &str = "console=ttyS0 loglevel=1 panic=-1";

/// The descriptor number the event-monitor pipe's write end must have in
/// the CH process (`--event-monitor fd=3`).
pub const CH_EVENT_FD: i32 = 3;

/// File name of CH's HTTP API socket in `plan.run_dir`.
pub const API_SOCKET: &str = "ch-api.sock";

/// Where CH's API socket for `plan` lives.
pub fn api_socket(plan: &VmPlan) -> PathBuf {
    plan.run_dir.join(API_SOCKET)
}

/// The `--disk image_type=` value of a disk format. CH v51-v53 open raw and
/// qcow2 only, so [`super::check_plan`] refuses the other formats for CH.
pub fn image_type(format: DiskFormat) -> &'static str {
    format.name()
}

/// The exact arguments (program name excluded) of `cloud-hypervisor` for
/// `plan`. The image type is always explicit: CH's autodetection is
/// deprecated, and it would let a guest that writes a QCOW2 header into a
/// raw disk change how that disk is opened next time. CH splits option
/// values on `,` with no escape, so paths and tags it would misread (see
/// `ch_value_ok`) are refused beforehand by [`super::check_plan`].
pub fn ch_argv(plan: &VmPlan) -> Vec<OsString> {
    let mut a: Vec<OsString> = Vec::new();
    let mut flag = |name: &str, value: OsString| {
        a.push(name.into());
        a.push(value);
    };
    flag("--kernel", plan.kernel.clone().into_os_string());
    flag("--initramfs", plan.initramfs.clone().into_os_string());
    flag(
        "--cmdline",
        kernel_cmdline(&plan.cmdline, CH_KERNEL_PARAMS).into(),
    );
    flag("--cpus", format!("boot={}", plan.cpus).into());
    flag(
        "--memory",
        format!("size={}M,shared=on", plan.memory_mib).into(),
    );
    flag("--console", kv("file=", &plan.stdout_fifo, ""));
    flag("--serial", kv("file=", &plan.stderr_fifo, ""));
    flag("--api-socket", kv("path=", &api_socket(plan), ""));
    flag("--event-monitor", format!("fd={CH_EVENT_FD}").into());
    for share in &plan.shares {
        let rest = format!(
            ",num_queues={},queue_size={}",
            share.num_queues, share.queue_size
        );
        flag(
            "--fs",
            kv(&format!("tag={},socket=", share.tag), &share.socket, &rest),
        );
    }
    for disk in &plan.disks {
        let mut rest = String::new();
        if disk.readonly {
            rest.push_str(",readonly=on");
        }
        rest.push_str(",image_type=");
        rest.push_str(image_type(disk.format));
        rest.push_str(",serial=");
        rest.push_str(&disk.serial);
        flag("--disk", kv("path=", &disk.path, &rest));
    }
    if let Some(socket) = &plan.agent_socket {
        // Hybrid vsock: the host side is a unix socket CH listens on; the
        // supervisor connects and sends `CONNECT <port>`.
        flag(
            "--vsock",
            kv(&format!("cid={AGENT_GUEST_CID},socket="), socket, ""),
        );
    }
    a.push("--pvpanic".into());
    a
}

/// Guest CID of the agent's vsock device (any value above 2 works; each VM
/// has its own device).
pub const AGENT_GUEST_CID: u32 = 3;

/// `<before><path><after>` as an OsString, keeping non-UTF-8 path bytes.
fn kv(before: &str, path: &Path, after: &str) -> OsString {
    let mut v = before.as_bytes().to_vec();
    v.extend_from_slice(path.as_os_str().as_bytes());
    v.extend_from_slice(after.as_bytes());
    OsString::from_vec(v)
}

/// Whether CH's option parser would read `value` back unchanged: it must
/// be UTF-8 (CH's argv is `String`), hold none of `,` `"` `[` `]` (CH
/// splits on commas outside quotes and brackets, with no escape), and have
/// no leading or trailing whitespace (CH trims values).
pub(crate) fn ch_value_ok(value: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(value) else {
        return false;
    };
    !text.contains([',', '"', '[', ']']) && text.trim() == text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmm::test_plans::{full_plan, minimal_plan};

    fn strings(v: Vec<OsString>) -> Vec<String> {
        v.into_iter()
            .map(|s| s.into_string().expect("utf-8 argv"))
            .collect()
    }

    #[test]
    fn minimal_plan_argv() {
        let expected = [
            "--kernel",
            "/k/vmlinuz",
            "--initramfs",
            "/k/initrd.gz",
            "--cmdline",
            "quiet console=ttyS0 loglevel=1 panic=-1",
            "--cpus",
            "boot=1",
            "--memory",
            "size=256M,shared=on",
            "--console",
            "file=/run/x/stdout.fifo",
            "--serial",
            "file=/run/x/stderr.fifo",
            "--api-socket",
            "path=/run/x/ch-api.sock",
            "--event-monitor",
            "fd=3",
            "--pvpanic",
        ];
        assert_eq!(strings(ch_argv(&minimal_plan())), expected);
    }

    #[test]
    fn full_plan_argv() {
        let mut plan = full_plan();
        // CH cannot take these two (see check_plan); use names it can.
        plan.shares[1].socket = "/run/x/m0.sock".into();
        plan.disks[1].path = "/data/ab.qcow2".into();
        let expected = [
            "--kernel",
            "/k/vmlinuz",
            "--initramfs",
            "/k/initrd.gz",
            "--cmdline",
            "quiet loglevel=3 console=ttyS0 loglevel=1 panic=-1 -- init-arg",
            "--cpus",
            "boot=2",
            "--memory",
            "size=1024M,shared=on",
            "--console",
            "file=/run/x/stdout.fifo",
            "--serial",
            "file=/run/x/stderr.fifo",
            "--api-socket",
            "path=/run/x/ch-api.sock",
            "--event-monitor",
            "fd=3",
            "--fs",
            "tag=msb-control,socket=/run/x/msb-control.sock,num_queues=1,queue_size=1024",
            "--fs",
            "tag=msb-m0,socket=/run/x/m0.sock,num_queues=2,queue_size=512",
            "--disk",
            "path=/data/disk.raw,image_type=raw,serial=msb-d0",
            "--disk",
            "path=/data/ab.qcow2,readonly=on,image_type=qcow2,serial=msb-d1",
            "--disk",
            "path=/data/c.vmdk,image_type=vmdk,serial=msb-d2",
            "--pvpanic",
        ];
        assert_eq!(strings(ch_argv(&plan)), expected);
    }

    #[test]
    fn values_ch_reads_back() {
        assert!(ch_value_ok(b"/run/x/a=b.sock"));
        assert!(ch_value_ok(b"/run/x/with space"));
        for bad in [
            &b"/a,b"[..],
            b"/a\"b",
            b"/a[b",
            b"/a]b",
            b" /lead",
            b"/trail ",
            b"/\xff",
        ] {
            assert!(!ch_value_ok(bad), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn agent_channel_is_a_hybrid_vsock() {
        let mut plan = crate::vmm::test_plans::minimal_plan();
        plan.agent_socket = Some("/run/x/agent.sock".into());
        let argv = strings(ch_argv(&plan));
        let tail: Vec<&str> = argv[argv.len() - 3..].iter().map(String::as_str).collect();
        assert_eq!(
            tail,
            ["--vsock", "cid=3,socket=/run/x/agent.sock", "--pvpanic"]
        );
        plan.agent_socket = None;
        assert!(!strings(ch_argv(&plan)).iter().any(|a| a == "--vsock"));
    }
}
