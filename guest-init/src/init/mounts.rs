//! System mounts of PID 1 and the mounts the config asks for.

use std::io::Read;
use std::time::{Duration, Instant};

use super::{fstype, sys};
use crate::config::{GuestMount, MountFlags};

/// How long to wait for a disk to show up in /sys/block.
const DEVICE_WAIT: Duration = Duration::from_secs(5);

/// Mounts proc, sysfs, devtmpfs and /run under `root` ("" for `/`).
pub fn mount_system(root: &str) -> Result<(), String> {
    for (src, dir, fstype, flags) in [
        (
            "proc",
            "/proc",
            "proc",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        ),
        (
            "sysfs",
            "/sys",
            "sysfs",
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        ),
        ("devtmpfs", "/dev", "devtmpfs", libc::MS_NOSUID),
        ("tmpfs", "/run", "tmpfs", libc::MS_NOSUID | libc::MS_NODEV),
    ] {
        let target = format!("{root}{dir}");
        sys::mkdir_all(&target).map_err(|e| format!("mkdir {target}: {e}"))?;
        match sys::mount(src, &target, fstype, flags, "") {
            Ok(()) => {}
            // devtmpfs may already be mounted by the kernel.
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => return Err(format!("mount {fstype} on {target}: {e}")),
        }
    }
    Ok(())
}

fn flag_bits(flags: &MountFlags) -> libc::c_ulong {
    let mut bits = 0;
    if flags.ro {
        bits |= libc::MS_RDONLY;
    }
    if flags.noexec {
        bits |= libc::MS_NOEXEC;
    }
    if flags.nosuid {
        bits |= libc::MS_NOSUID;
    }
    if flags.nodev {
        bits |= libc::MS_NODEV;
    }
    bits
}

/// Applies one configured mount under `root` ("" for `/`). The error names
/// the mount's target.
pub fn apply(root: &str, mount: &GuestMount) -> Result<(), String> {
    let target = format!("{root}{}", mount.target());
    let fail = |what: String| format!("mount {:?}: {what}", mount.target());
    sys::mkdir_all(&target).map_err(|e| fail(format!("mkdir: {e}")))?;
    match mount {
        GuestMount::Virtiofs { tag, flags, .. } => {
            sys::mount(tag, &target, "virtiofs", flag_bits(flags), "")
                .map_err(|e| fail(format!("virtiofs tag {tag:?}: {e}")))
        }
        GuestMount::Tmpfs {
            size_bytes, flags, ..
        } => {
            let data = size_bytes.map(|s| format!("size={s}")).unwrap_or_default();
            sys::mount("tmpfs", &target, "tmpfs", flag_bits(flags), &data)
                .map_err(|e| fail(format!("tmpfs: {e}")))
        }
        GuestMount::Block {
            serial,
            fstype,
            flags,
            ..
        } => {
            let dev = find_disk(serial).map_err(fail)?;
            let fstype = match fstype {
                Some(f) => f.clone(),
                None => sniff(&dev).map_err(fail)?.to_string(),
            };
            sys::mount(&dev, &target, &fstype, flag_bits(flags), "")
                .map_err(|e| fail(format!("{dev} as {fstype}: {e}")))
        }
    }
}

/// The /dev path of the virtio disk whose serial is `serial`.
fn find_disk(serial: &str) -> Result<String, String> {
    let deadline = Instant::now() + DEVICE_WAIT;
    loop {
        if let Ok(entries) = std::fs::read_dir("/sys/block") {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let s = std::fs::read_to_string(e.path().join("serial")).unwrap_or_default();
                if s.trim() == serial {
                    return Ok(format!("/dev/{name}"));
                }
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("no disk with serial {serial:?} appeared"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads the superblock of `dev` and names its filesystem.
fn sniff(dev: &str) -> Result<&'static str, String> {
    let mut head = Vec::with_capacity(fstype::PROBE_LEN);
    std::fs::File::open(dev)
        .and_then(|f| f.take(fstype::PROBE_LEN as u64).read_to_end(&mut head))
        .map_err(|e| format!("read {dev}: {e}"))?;
    fstype::detect(&head).ok_or_else(|| format!("{dev}: unknown filesystem (set fstype=)"))
}
