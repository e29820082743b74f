//! System mounts of PID 1 and the mounts the config asks for.

use std::io::Read;
use std::time::{Duration, Instant};

use super::{fstype, modules, sys};
use crate::config::{GuestMount, MountFlags, RootOverlay, UpperLayer};

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
    if let GuestMount::Virtiofs {
        tag,
        flags,
        file: Some(name),
        ..
    } = mount
    {
        return bind_file(tag, name, &target, flags).map_err(fail);
    }
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
            modules::load_for_fstype(&fstype).map_err(fail)?;
            sys::mount(&dev, &target, &fstype, flag_bits(flags), "")
                .map_err(|e| fail(format!("{dev} as {fstype}: {e}")))
        }
    }
}

/// Where single-file shares are mounted (in PID 1's own root, outside a
/// `--rootfs` or image root) until their file is bound into place.
const FILE_SHARES: &str = "/run/msb-file-shares";

/// A single-file share: the share mounted out of sight, its one entry
/// `name` bind-mounted onto the file `target` (created empty when missing,
/// with its parents), the flags applied to the bind, then the share
/// detached, so nothing names it any more. Renaming over or unlinking
/// `target` fails with `EBUSY`, as on any mount point.
fn bind_file(tag: &str, name: &str, target: &str, flags: &MountFlags) -> Result<(), String> {
    let hidden = format!("{FILE_SHARES}/{tag}");
    sys::mkdir_all(&hidden).map_err(|e| format!("mkdir {hidden}: {e}"))?;
    sys::mount(tag, &hidden, "virtiofs", flag_bits(flags), "")
        .map_err(|e| format!("virtiofs tag {tag:?}: {e}"))?;
    let bound = file_target(target).and_then(|()| {
        let source = format!("{hidden}/{name}");
        sys::mount(&source, target, "", libc::MS_BIND, "")
            .map_err(|e| format!("bind {name:?} of tag {tag:?}: {e}"))?;
        let bits = flag_bits(flags);
        if bits != 0 {
            sys::mount("", target, "", libc::MS_REMOUNT | libc::MS_BIND | bits, "")
                .map_err(|e| format!("apply ro/noexec/nosuid/nodev: {e}"))?;
        }
        Ok(())
    });
    if let Err(e) = sys::umount_detach(&hidden) {
        eprintln!("msb-init: detach {hidden}: {e}");
    }
    let _ = std::fs::remove_dir(&hidden);
    let _ = std::fs::remove_dir(FILE_SHARES);
    bound
}

/// Makes `target` a file a file can be bound onto: an existing
/// non-directory is used as it is, a missing one is created empty (mode
/// 0644, parents 0755).
fn file_target(target: &str) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::metadata(target) {
        Ok(m) if m.is_dir() => {
            return Err(format!(
                "{target} is a directory; a file can only be mounted on a file"
            ))
        }
        Ok(_) => return Ok(()),
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(format!("{target}: {e}")),
        Err(_) => {}
    }
    if let Some(parent) = std::path::Path::new(target).parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("mkdir {}: {e}", parent.display()))?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(target)
        .map(drop)
        .or_else(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => Ok(()),
            _ => Err(format!("create {target}: {e}")),
        })
}

/// Where an image root's lower tree and upper layer are mounted.
const OVERLAY_LOWER: &str = "/run/msb-root/lower";
/// See [`OVERLAY_LOWER`].
const OVERLAY_UPPER: &str = "/run/msb-root/upper";

/// Mounts an image root at `target`: the image tree (virtio-fs, read-only)
/// under a writable layer (tmpfs or the sandbox's disk), merged by
/// overlayfs. The upper layer keeps `upper/` and overlayfs's `work/` side
/// by side, so a disk can be reused across restarts.
pub fn mount_root_overlay(o: &RootOverlay, target: &str) -> Result<(), String> {
    let fail = |what: String| format!("image root: {what}");
    for dir in [OVERLAY_LOWER, OVERLAY_UPPER, target] {
        sys::mkdir_all(dir).map_err(|e| fail(format!("mkdir {dir}: {e}")))?;
    }
    sys::mount(&o.lower_tag, OVERLAY_LOWER, "virtiofs", libc::MS_RDONLY, "")
        .map_err(|e| fail(format!("image tree (tag {:?}): {e}", o.lower_tag)))?;
    match &o.upper {
        UpperLayer::Tmpfs { size_bytes } => {
            let data = size_bytes.map(|s| format!("size={s}")).unwrap_or_default();
            sys::mount("tmpfs", OVERLAY_UPPER, "tmpfs", 0, &data)
                .map_err(|e| fail(format!("tmpfs upper layer: {e}")))?;
        }
        UpperLayer::Block { serial } => {
            let dev = find_disk(serial).map_err(fail)?;
            let fstype = sniff(&dev).map_err(fail)?;
            modules::load_for_fstype(fstype).map_err(fail)?;
            sys::mount(&dev, OVERLAY_UPPER, fstype, 0, "")
                .map_err(|e| fail(format!("upper layer {dev} as {fstype}: {e}")))?;
        }
    }
    let (upper, work) = (
        format!("{OVERLAY_UPPER}/upper"),
        format!("{OVERLAY_UPPER}/work"),
    );
    for dir in [&upper, &work] {
        sys::mkdir_all(dir).map_err(|e| fail(format!("mkdir {dir}: {e}")))?;
    }
    modules::load_for_fstype("overlay").map_err(fail)?;
    let data = format!("lowerdir={OVERLAY_LOWER},upperdir={upper},workdir={work}");
    sys::mount("overlay", target, "overlay", 0, &data)
        .map_err(|e| fail(format!("overlay on {target}: {e}")))
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

/// Unmounts every block-device filesystem (newest first) so disks are left
/// clean: without it ext4 keeps "needs recovery" set, and the image then
/// refuses a later read-only mount (EROFS) and shows stale metadata to host
/// tools until its journal is replayed. A mount that cannot be unmounted
/// (busy) is remounted read-only, which also flushes and marks it clean.
/// Returns one message per mount that could be neither.
pub fn unmount_disks() -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut failures = Vec::new();
    for line in table.lines().rev() {
        let mut fields = line.split(' ');
        let (Some(source), Some(target)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !source.starts_with("/dev/") {
            continue;
        }
        let target = unescape_mount_field(target);
        if let Err(e) = sys::umount(&target) {
            if let Err(e2) = sys::mount("", &target, "", libc::MS_REMOUNT | libc::MS_RDONLY, "") {
                failures.push(format!("unmount {target}: {e}; remount read-only: {e2}"));
            }
        }
    }
    failures
}

/// Decodes the octal escapes (`\040` for a space) of /proc/self/mounts.
fn unescape_mount_field(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::unescape_mount_field;

    #[test]
    fn mount_fields_are_unescaped() {
        assert_eq!(unescape_mount_field("/mnt/a\\040b"), "/mnt/a b");
        assert_eq!(unescape_mount_field("/plain"), "/plain");
        assert_eq!(unescape_mount_field("/end\\04"), "/end\\04");
    }
}
