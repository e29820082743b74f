//! Sample plans shared by the backends' argv tests.

use std::path::PathBuf;

use super::{Accel, Disk, DiskFormat, FsShare, VmPlan};

/// No shares, no disks, TCG.
pub(crate) fn minimal_plan() -> VmPlan {
    VmPlan {
        kernel: "/k/vmlinuz".into(),
        initramfs: "/k/initrd.gz".into(),
        cmdline: "quiet".into(),
        cpus: 1,
        memory_mib: 256,
        shares: Vec::new(),
        disks: Vec::new(),
        stdout_fifo: "/run/x/stdout.fifo".into(),
        stderr_fifo: "/run/x/stderr.fifo".into(),
        console_log: "/run/x/console.log".into(),
        agent_socket: None,
        run_dir: "/run/x".into(),
        accel: Accel::Tcg,
    }
}

/// Two shares (one socket path with a comma), three disks of every
/// format (one read-only, one path with a comma), init arguments, KVM.
pub(crate) fn full_plan() -> VmPlan {
    let share = |tag: &str, socket: &str, num_queues, queue_size| FsShare {
        tag: tag.into(),
        socket: PathBuf::from(socket),
        num_queues,
        queue_size,
    };
    let disk = |path: &str, format, readonly, serial: &str| Disk {
        path: PathBuf::from(path),
        format,
        readonly,
        serial: serial.into(),
    };
    VmPlan {
        cmdline: "quiet loglevel=3 -- init-arg".into(),
        cpus: 2,
        memory_mib: 1024,
        shares: vec![
            share("msb-control", "/run/x/msb-control.sock", 1, 1024),
            share("msb-m0", "/run/x/odd,name.sock", 2, 512),
        ],
        disks: vec![
            disk("/data/disk.raw", DiskFormat::Raw, false, "msb-d0"),
            disk("/data/a,b.qcow2", DiskFormat::Qcow2, true, "msb-d1"),
            disk("/data/c.vmdk", DiskFormat::Vmdk, false, "msb-d2"),
        ],
        accel: Accel::Kvm,
        ..minimal_plan()
    }
}
