//! Host-side helpers shared by the bench-daemon and bench-guest-io
//! binaries (through `#[path]`): where the files a daemon serves go, and
//! how much CPU a daemon used.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

/// Where benchmark files go by default: `/dev/shm` when it is there and
/// stores `user.*` xattrs (virtiofsd-msb's stat virtualization needs them),
/// else the temporary directory. On tmpfs the figures show the daemons,
/// not the host disk: on ext4 without a journal (these machines' root)
/// every new inode scans past all inodes freed in the last seconds, so a
/// create costs 15 to 500 us depending on what ran before.
pub fn default_parent() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let probe = shm.join(format!("msb-bench-probe-{}", std::process::id()));
    let ok = File::create(&probe).is_ok() && set_user_xattr(&probe);
    let _ = fs::remove_file(&probe);
    if ok {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    }
}

fn set_user_xattr(path: &Path) -> bool {
    let Ok(p) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: NUL-terminated strings and a 1-byte value.
    unsafe {
        libc::setxattr(
            p.as_ptr(),
            c"user.probe".as_ptr(),
            c"1".as_ptr().cast(),
            1,
            0,
        ) == 0
    }
}

/// A short name of the filesystem `path` is on.
pub fn filesystem_name(path: &Path) -> String {
    let Ok(p) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return "unknown".into();
    };
    // SAFETY: all-zero is a valid statfs; the kernel fills it.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: NUL-terminated path and a writable struct.
    if unsafe { libc::statfs(p.as_ptr(), &mut st) } != 0 {
        return "unknown".into();
    }
    match st.f_type {
        0x0102_1994 => "tmpfs".into(),
        0xef53 => "ext4".into(),
        0x5846_5342 => "xfs".into(),
        0x9123_683e => "btrfs".into(),
        t => format!("filesystem {t:#x}"),
    }
}

/// CPU time a process has used, all threads together, in nanoseconds
/// (`/proc/PID/task/*/schedstat`): what the daemon spent, whatever else
/// the machine was doing.
pub fn process_cpu_ns(pid: u32) -> Option<u64> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let stat = std::fs::read_to_string(task.ok()?.path().join("schedstat")).ok()?;
        total += stat.split_whitespace().next()?.parse::<u64>().ok()?;
    }
    Some(total)
}
