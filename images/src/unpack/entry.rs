//! One tar entry: its path checked and split, its metadata (header plus
//! PAX overrides), and the host inode made for it.

use std::ffi::{CStr, CString};
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd};

use virtiofsd_msb::confinement::open_beneath;
use virtiofsd_msb::filesystem::sys;
use virtiofsd_msb::policy::stat_override::{StatOverride, XATTR_NAME};

use super::tree::{chmod_fd, cname, set_mtime_fd, set_xattr};

/// Longest entry path or link target accepted, in bytes.
pub const MAX_PATH: usize = 4096;
/// Longest path component (NAME_MAX).
pub const MAX_NAME: usize = 255;
/// Prefix of a whiteout entry.
pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// Name of the opaque-directory marker.
pub const OPAQUE_MARKER: &[u8] = b".wh..wh..opq";
/// Host xattr keeping an image file's `security.capability` (hidden from
/// the guest like every `user.msb.*` name; a host file never gets real
/// capabilities).
pub const CAPABILITY_XATTR: &CStr = c"user.msb.security.capability";

/// Splits an entry path into components beneath the layer root: leading
/// `/` and `.` components are dropped (absolute paths are contained, read
/// relative to the root); `..` is refused.
pub fn split_path(raw: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if raw.len() > MAX_PATH {
        return Err(format!("path longer than {MAX_PATH} bytes"));
    }
    if raw.contains(&0) {
        return Err("path holds a NUL byte".into());
    }
    let mut out = Vec::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err("path holds a '..' component".into()),
            c if c.len() > MAX_NAME => {
                return Err(format!("path component longer than {MAX_NAME} bytes"))
            }
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

/// What the entry means for the layer.
#[derive(Debug, PartialEq, Eq)]
pub enum Kind {
    /// An ordinary entry.
    Plain,
    /// `.wh.NAME`: hides NAME of the lower layers.
    Whiteout(Vec<u8>),
    /// `.wh..wh..opq`: hides everything the lower layers have in the
    /// parent directory.
    Opaque,
    /// Other `.wh..wh.*` names (aufs bookkeeping): skipped.
    Ignored,
}

/// Classifies the last component.
pub fn classify(name: &[u8]) -> Kind {
    if name == OPAQUE_MARKER {
        Kind::Opaque
    } else if name.starts_with(b".wh..wh.") {
        Kind::Ignored
    } else if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
        Kind::Whiteout(hidden.to_vec())
    } else {
        Kind::Plain
    }
}

/// Owner, permission bits, mtime and xattrs of an entry.
#[derive(Debug, Clone)]
pub struct Meta {
    /// Guest owner.
    pub uid: u32,
    /// Guest group.
    pub gid: u32,
    /// Permission bits (0o7777).
    pub perm: u32,
    /// Modification time.
    pub mtime: libc::timespec,
    /// `user.*` xattrs (not `user.msb.*`) and `security.capability`.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Reads the metadata of `entry`, PAX records overriding the header.
pub fn meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta, String> {
    let h = entry.header();
    let mut uid = h.uid().map_err(|e| format!("bad uid: {e}"))?;
    let mut gid = h.gid().map_err(|e| format!("bad gid: {e}"))?;
    let perm = h.mode().map_err(|e| format!("bad mode: {e}"))? & 0o7777;
    let mut mtime = libc::timespec {
        tv_sec: h.mtime().unwrap_or(0).min(i64::MAX as u64) as i64,
        tv_nsec: 0,
    };
    let mut xattrs = Vec::new();
    if let Some(pax) = entry
        .pax_extensions()
        .map_err(|e| format!("bad PAX header: {e}"))?
    {
        for ext in pax {
            let ext = ext.map_err(|e| format!("bad PAX record: {e}"))?;
            let Ok(key) = ext.key() else { continue };
            let value = ext.value_bytes();
            match key {
                "uid" => uid = parse_decimal(value).ok_or("bad PAX uid")?,
                "gid" => gid = parse_decimal(value).ok_or("bad PAX gid")?,
                "mtime" => mtime = parse_pax_time(value).ok_or("bad PAX mtime")?,
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        if wanted_xattr(name.as_bytes()) {
                            xattrs.push((name.as_bytes().to_vec(), value.to_vec()));
                        }
                    }
                }
            }
        }
    }
    let id = |v: u64, what: &str| u32::try_from(v).map_err(|_| format!("{what} {v} too large"));
    Ok(Meta {
        uid: id(uid, "uid")?,
        gid: id(gid, "gid")?,
        perm,
        mtime,
        xattrs,
    })
}

fn wanted_xattr(name: &[u8]) -> bool {
    (name.starts_with(b"user.") && !name.starts_with(b"user.msb."))
        || name == b"security.capability"
}

fn parse_decimal(v: &[u8]) -> Option<u64> {
    std::str::from_utf8(v).ok()?.trim().parse().ok()
}

/// PAX times are decimal seconds with an optional fraction.
fn parse_pax_time(v: &[u8]) -> Option<libc::timespec> {
    let text = std::str::from_utf8(v).ok()?.trim();
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    let tv_sec: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let tv_nsec = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    Some(libc::timespec { tv_sec, tv_nsec })
}

/// The Linux `new_encode_dev` of a device number, the encoding FUSE (and
/// so the record) uses.
pub fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// Host mode of a regular file: read (and execute) bits only, never
/// writable, never setuid/setgid/sticky: a file is shared by every root
/// of every image holding its layer.
pub fn host_file_mode(perm: u32) -> u32 {
    (perm & 0o555) | 0o400
}

/// Host mode of a directory: owner rwx (the store must be able to remove
/// it), the other read/execute bits as in the image.
pub fn host_dir_mode(perm: u32) -> u32 {
    (perm & 0o755) | 0o700
}

/// Writes the stat-virtualization record and the wanted xattrs onto the
/// open file or directory `fd`.
pub fn write_record(
    fd: BorrowedFd<'_>,
    rec: &StatOverride,
    xattrs: &[(Vec<u8>, Vec<u8>)],
) -> io::Result<()> {
    for (name, value) in xattrs {
        let host_name = if name == b"security.capability" {
            CAPABILITY_XATTR.to_owned()
        } else {
            CString::new(name.clone()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?
        };
        set_xattr(fd, &host_name, value)?;
    }
    set_xattr(fd, XATTR_NAME, &rec.encode())
}

/// Copies `data` into `file` in 128 KiB writes (`io::copy` would use 8 KiB
/// ones: a syscall per 8 KiB of every layer).
fn copy_data(data: &mut impl Read, file: &mut std::fs::File) -> io::Result<u64> {
    use std::io::Write;
    let mut buf = vec![0u8; 128 << 10];
    let mut total = 0u64;
    loop {
        let n = match data.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        file.write_all(&buf[..n])?;
        total += n as u64;
    }
}

/// Creates regular file `name` in `dir` (it must not exist), fills it from
/// `data`, and gives it its record, xattrs, host mode and mtime. Device
/// nodes and fifos come here too (with no data): the host gets a plain
/// file, the record the real type.
pub fn create_file(
    dir: BorrowedFd<'_>,
    name: &[u8],
    data: &mut impl Read,
    rec: &StatOverride,
    meta: &Meta,
) -> io::Result<u64> {
    let cname = cname(name)?;
    let fd = open_beneath(
        dir,
        &cname,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
        0o600,
    )?;
    // SAFETY: `fd` is an open file we own; the File takes it over.
    let mut file = unsafe { std::fs::File::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(fd)) };
    let n = copy_data(data, &mut file)?;
    write_record(file.as_fd(), rec, &meta.xattrs)?;
    chmod_fd(file.as_fd(), host_file_mode(meta.perm))?;
    set_mtime_fd(file.as_fd(), meta.mtime)?;
    Ok(n)
}

/// Runs `create` (which makes `name` in `dir`); when it finds the name
/// taken (a later tar entry replaces an earlier one), removes what is
/// there and runs it again. Returns its result and whether a directory was
/// removed (open directory fds may then be stale).
pub fn create_replacing<T>(
    dir: BorrowedFd<'_>,
    name: &CStr,
    mut create: impl FnMut() -> io::Result<T>,
) -> io::Result<(T, bool)> {
    match create() {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            let st = sys::stat_at(dir, name)?;
            super::tree::remove_entry(dir, name)?;
            Ok((create()?, st.st_mode & libc::S_IFMT == libc::S_IFDIR))
        }
        r => r.map(|v| (v, false)),
    }
}

/// Makes directory `name` in `dir`, keeping an existing directory and
/// replacing anything else.
pub fn make_dir(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<()> {
    match sys::mkdir_at(dir, name, 0o700) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            let st = sys::stat_at(dir, name)?;
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                return Ok(());
            }
            super::tree::remove_entry(dir, name)?;
            sys::mkdir_at(dir, name, 0o700)
        }
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_contained() {
        assert_eq!(
            split_path(b"./usr/bin/").unwrap(),
            vec![b"usr".to_vec(), b"bin".to_vec()]
        );
        assert_eq!(
            split_path(b"/etc//passwd").unwrap(),
            vec![b"etc".to_vec(), b"passwd".to_vec()]
        );
        assert!(split_path(b"./").unwrap().is_empty());
        assert!(split_path(b"a/../../etc").is_err());
        assert!(split_path(b"..").is_err());
        assert!(split_path(&vec![b'a'; 300]).is_err());
        assert!(split_path(&b"a/".repeat(3000)).is_err());
    }

    #[test]
    fn whiteouts() {
        assert_eq!(classify(b".wh.foo"), Kind::Whiteout(b"foo".to_vec()));
        assert_eq!(classify(b".wh..wh..opq"), Kind::Opaque);
        assert_eq!(classify(b".wh..wh.plnk"), Kind::Ignored);
        assert_eq!(classify(b"foo"), Kind::Plain);
    }

    #[test]
    fn times_and_devices() {
        let t = parse_pax_time(b"1700000000.5").unwrap();
        assert_eq!((t.tv_sec, t.tv_nsec), (1_700_000_000, 500_000_000));
        assert!(parse_pax_time(b"x").is_none());
        assert_eq!(encode_dev(1, 3), 0x103);
        assert_eq!(encode_dev(8, 0x1234), 0x34 | (8 << 8) | (0x1200 << 12));
        assert_eq!(host_file_mode(0o4755), 0o555);
        assert_eq!(host_file_mode(0o000), 0o400);
        assert_eq!(host_dir_mode(0o1777), 0o755);
    }
}
