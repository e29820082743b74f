//! The shared directory every figure runs on, laid out once per run and
//! served by each fresh daemon in turn (so all of them see the same files,
//! warm in the host page cache).

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A 4 KiB file whose attributes `getattr` asks for.
pub const SMALL: &str = "small";
/// A directory of [`NAMES`] empty files, for `lookup` and `readdirplus`.
pub const NAMES_DIR: &str = "names";
/// Entries in [`NAMES_DIR`].
pub const NAMES: usize = 1000;
/// The file random and sequential reads read.
pub const READ_FILE: &str = "data";
/// The file random and sequential writes write.
pub const WRITE_FILE: &str = "wdata";
/// Size of [`READ_FILE`] and [`WRITE_FILE`].
pub const DATA_BYTES: u64 = 64 << 20;
/// Where `create+unlink` creates and removes its files.
pub const SCRATCH_DIR: &str = "scratch";

/// Where the fixture goes by default: `/dev/shm` when it is there and
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

/// Name of entry `i` of [`NAMES_DIR`].
pub fn name_of(i: usize) -> String {
    format!("f{i:04}")
}

/// Lays out the share under `root` (created if missing).
pub fn create(root: &Path) -> io::Result<PathBuf> {
    let share = root.join("share");
    fs::create_dir_all(share.join(NAMES_DIR))?;
    fs::create_dir_all(share.join(SCRATCH_DIR))?;
    fs::write(share.join(SMALL), vec![7u8; 4096])?;
    for i in 0..NAMES {
        File::create(share.join(NAMES_DIR).join(name_of(i)))?;
    }
    for name in [READ_FILE, WRITE_FILE] {
        let mut f = File::create(share.join(name))?;
        let chunk: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        for _ in 0..DATA_BYTES >> 20 {
            f.write_all(&chunk)?;
        }
        f.sync_all()?;
    }
    Ok(share)
}
