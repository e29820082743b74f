//! The stat-virtualization record: the guest-visible owner, mode (file type
//! included) and device number of an inode, kept in the host xattr
//! `user.msb.override_stat` so the host inode's own owner and mode stay the
//! daemon's.
//!
//! The value is 20 bytes, byte-compatible with microsandbox volumes:
//!
//! | bytes  | field                                  |
//! |--------|----------------------------------------|
//! | 0      | version, 1                             |
//! | 1..4   | zero                                   |
//! | 4..8   | uid (u32, little-endian)               |
//! | 8..12  | gid (u32, little-endian)               |
//! | 12..16 | mode, type bits included (u32, LE)     |
//! | 16..20 | rdev, FUSE encoding (u32, LE)          |
//!
//! Anything else stored under that name (another length, another version,
//! non-zero padding, a type that does not fit the host inode) is a corrupt
//! record: the inode answers `EIO` and the daemon keeps serving the rest.

use std::ffi::CStr;
use std::fmt;
use std::io;

/// Name of the host xattr holding the record.
pub const XATTR_NAME: &CStr = c"user.msb.override_stat";

/// Name of the xattr a writable strict probe sets and removes on the root.
pub const PROBE_XATTR_NAME: &CStr = c"user.msb._probe";

/// Length of an encoded record.
pub const RECORD_LEN: usize = 20;

/// The only record version there is.
pub const VERSION: u8 = 1;

/// A decoded record: what the guest sees instead of the host inode's owner,
/// mode and device number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatOverride {
    /// Guest-visible owner.
    pub uid: u32,
    /// Guest-visible group.
    pub gid: u32,
    /// Guest-visible mode: file type (`S_IFMT` bits) and permission bits.
    pub mode: u32,
    /// Guest-visible device number of a char/block device (FUSE encoding,
    /// as the guest kernel sent it in MKNOD); 0 for everything else.
    pub rdev: u32,
}

/// Why a stored record cannot be used. Converts into an `EIO` error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRecord(pub String);

impl fmt::Display for CorruptRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corrupt {}: {}", XATTR_NAME.to_string_lossy(), self.0)
    }
}

impl std::error::Error for CorruptRecord {}

impl From<CorruptRecord> for io::Error {
    fn from(_: CorruptRecord) -> io::Error {
        io::Error::from_raw_os_error(libc::EIO)
    }
}

/// The file types a record may name.
const VALID_TYPES: [u32; 7] = [
    libc::S_IFREG,
    libc::S_IFDIR,
    libc::S_IFLNK,
    libc::S_IFCHR,
    libc::S_IFBLK,
    libc::S_IFIFO,
    libc::S_IFSOCK,
];

/// Setuid and setgid bits.
const PRIV_BITS: u32 = libc::S_ISUID | libc::S_ISGID;

impl StatOverride {
    /// The record for a host inode as it is now (no record stored yet).
    pub fn from_host(st: &libc::stat64) -> Self {
        StatOverride {
            uid: st.st_uid,
            gid: st.st_gid,
            mode: st.st_mode,
            rdev: 0,
        }
    }

    /// The file type bits.
    pub fn file_type(&self) -> u32 {
        self.mode & libc::S_IFMT
    }

    /// Encodes the record.
    pub fn encode(&self) -> [u8; RECORD_LEN] {
        let mut out = [0u8; RECORD_LEN];
        out[0] = VERSION;
        out[4..8].copy_from_slice(&self.uid.to_le_bytes());
        out[8..12].copy_from_slice(&self.gid.to_le_bytes());
        out[12..16].copy_from_slice(&self.mode.to_le_bytes());
        out[16..20].copy_from_slice(&self.rdev.to_le_bytes());
        out
    }

    /// Decodes a stored value, checking version, padding and file type.
    pub fn decode(bytes: &[u8]) -> Result<Self, CorruptRecord> {
        if bytes.len() != RECORD_LEN {
            return Err(CorruptRecord(format!(
                "{} bytes, want {RECORD_LEN}",
                bytes.len()
            )));
        }
        if bytes[0] != VERSION {
            return Err(CorruptRecord(format!("version {}", bytes[0])));
        }
        if bytes[1..4] != [0, 0, 0] {
            return Err(CorruptRecord("non-zero padding".into()));
        }
        let word =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let rec = StatOverride {
            uid: word(4),
            gid: word(8),
            mode: word(12),
            rdev: word(16),
        };
        if !VALID_TYPES.contains(&rec.file_type()) {
            return Err(CorruptRecord(format!("file type {:#o}", rec.file_type())));
        }
        if rec.mode & !(libc::S_IFMT | 0o7777) != 0 {
            return Err(CorruptRecord(format!("mode {:#o}", rec.mode)));
        }
        Ok(rec)
    }

    /// Parses the result of reading the xattr: `None` (absent) is `Ok(None)`.
    pub fn parse(value: Option<&[u8]>) -> Result<Option<Self>, CorruptRecord> {
        value.map(Self::decode).transpose()
    }

    /// Checks that this record can describe a host inode of type
    /// `host_type`: a directory only a directory; a regular file any other
    /// type (special files and file-backed symlinks are host regular files).
    pub fn fits_host_type(&self, host_type: u32) -> Result<(), CorruptRecord> {
        let ok = match host_type {
            libc::S_IFDIR => self.file_type() == libc::S_IFDIR,
            libc::S_IFREG => self.file_type() != libc::S_IFDIR,
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(CorruptRecord(format!(
                "type {:#o} on a host inode of type {host_type:#o}",
                self.file_type()
            )))
        }
    }

    /// Applies the record to a host `stat`: owner, mode and device number
    /// come from the record, everything else (size, times, links, inode
    /// number) from the host.
    pub fn apply(&self, st: &mut libc::stat64) -> Result<(), CorruptRecord> {
        self.fits_host_type(st.st_mode & libc::S_IFMT)?;
        st.st_uid = self.uid;
        st.st_gid = self.gid;
        st.st_mode = self.mode;
        st.st_rdev = match self.file_type() {
            libc::S_IFCHR | libc::S_IFBLK => u64::from(self.rdev),
            _ => 0,
        };
        Ok(())
    }

    /// The record after a data change (write, truncate) by a writer who
    /// lacks `CAP_FSETID` (`privileged` false), as the kernel's
    /// `should_remove_suid` does it: setuid goes, and setgid when group
    /// execute is set (setgid without it marks mandatory locking). `None`
    /// when nothing changes.
    pub fn after_data_change(&self, privileged: bool) -> Option<Self> {
        if privileged || self.file_type() != libc::S_IFREG {
            return None;
        }
        let mut kill = self.mode & libc::S_ISUID;
        if self.mode & (libc::S_ISGID | libc::S_IXGRP) == (libc::S_ISGID | libc::S_IXGRP) {
            kill |= libc::S_ISGID;
        }
        (kill != 0).then_some(StatOverride {
            mode: self.mode & !kill,
            ..*self
        })
    }

    /// Whether setuid or setgid is set.
    pub fn has_priv_bits(&self) -> bool {
        self.mode & PRIV_BITS != 0
    }

    /// The record as the daemon honours it on a host inode owned by
    /// `host_uid`, the daemon running as `daemon_uid`.
    ///
    /// Only the daemon writes records on the inodes it owns; any user may
    /// set `user.*` xattrs on their own files and move them into a shared
    /// directory. So on an inode the daemon does not own, a record grants
    /// nothing its host owner could not: setuid and setgid are dropped, and
    /// a character or block device reads as a plain regular file (rdev 0).
    /// Owner, group and the other mode bits are kept (they grant nothing
    /// by themselves).
    pub fn trusted_for_owner(self, host_uid: u32, daemon_uid: u32) -> Self {
        if host_uid == daemon_uid {
            return self;
        }
        let mut rec = self;
        rec.mode &= !PRIV_BITS;
        if matches!(rec.file_type(), libc::S_IFCHR | libc::S_IFBLK) {
            rec.mode = libc::S_IFREG | (rec.mode & 0o7777);
            rec.rdev = 0;
        }
        rec
    }
}

/// What a strict-mode probe found out about the share's filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XattrSupport {
    /// `user.*` xattrs are stored.
    Supported,
    /// The filesystem answers `EOPNOTSUPP` for `user.*` xattrs.
    Unsupported,
    /// The probe failed for another reason (the errno).
    Unknown(i32),
}

/// Classifies the errno of a `getxattr` of a missing `user.*` name: the
/// answer `ENODATA` already proves the filesystem implements them (no write
/// is needed, so this works on read-only shares).
pub fn classify_read_probe(result: Result<usize, i32>) -> XattrSupport {
    match result {
        Ok(_) | Err(libc::ENODATA) | Err(libc::ERANGE) => XattrSupport::Supported,
        Err(libc::EOPNOTSUPP) => XattrSupport::Unsupported,
        Err(e) => XattrSupport::Unknown(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(mode: u32) -> StatOverride {
        StatOverride {
            uid: 1000,
            gid: 100,
            mode,
            rdev: 0,
        }
    }

    #[test]
    fn layout_is_fixed() {
        let r = StatOverride {
            uid: 0x0403_0201,
            gid: 0x0807_0605,
            mode: libc::S_IFCHR | 0o620,
            rdev: 0x0103,
        };
        let b = r.encode();
        assert_eq!(b[0], 1);
        assert_eq!(&b[1..4], &[0, 0, 0]);
        assert_eq!(&b[4..8], &[1, 2, 3, 4]);
        assert_eq!(&b[8..12], &[5, 6, 7, 8]);
        assert_eq!(&b[12..16], &(libc::S_IFCHR | 0o620).to_le_bytes());
        assert_eq!(&b[16..20], &[3, 1, 0, 0]);
        assert_eq!(StatOverride::decode(&b).unwrap(), r);
    }

    #[test]
    fn absent_and_corrupt_values() {
        assert_eq!(StatOverride::parse(None).unwrap(), None);
        let good = rec(libc::S_IFREG | 0o644).encode();
        assert!(StatOverride::parse(Some(&good)).unwrap().is_some());
        assert!(StatOverride::decode(&good[..19]).is_err());
        let mut long = good.to_vec();
        long.push(0);
        assert!(StatOverride::decode(&long).is_err());
        let mut v2 = good;
        v2[0] = 2;
        assert!(StatOverride::decode(&v2).is_err());
        let mut pad = good;
        pad[2] = 1;
        assert!(StatOverride::decode(&pad).is_err());
        for bad_mode in [0o644, 0o170644, libc::S_IFREG | 0o10000] {
            let b = rec(bad_mode).encode();
            assert!(StatOverride::decode(&b).is_err(), "{bad_mode:o}");
        }
        let e: io::Error = StatOverride::decode(&[]).unwrap_err().into();
        assert_eq!(e.raw_os_error(), Some(libc::EIO));
    }

    #[test]
    fn records_must_fit_the_host_type() {
        let dir = rec(libc::S_IFDIR | 0o755);
        assert!(dir.fits_host_type(libc::S_IFDIR).is_ok());
        assert!(dir.fits_host_type(libc::S_IFREG).is_err());
        for t in [
            libc::S_IFREG,
            libc::S_IFLNK,
            libc::S_IFCHR,
            libc::S_IFBLK,
            libc::S_IFIFO,
            libc::S_IFSOCK,
        ] {
            assert!(rec(t | 0o600).fits_host_type(libc::S_IFREG).is_ok());
            assert!(rec(t | 0o600).fits_host_type(libc::S_IFDIR).is_err());
            assert!(rec(t | 0o600).fits_host_type(libc::S_IFLNK).is_err());
        }
    }

    #[test]
    fn apply_takes_owner_mode_and_rdev() {
        // SAFETY: plain data; zero is valid.
        let mut st: libc::stat64 = unsafe { std::mem::zeroed() };
        st.st_mode = libc::S_IFREG | 0o600;
        st.st_size = 42;
        st.st_rdev = 7;
        let r = StatOverride {
            uid: 5,
            gid: 6,
            mode: libc::S_IFBLK | 0o660,
            rdev: 0x0801,
        };
        r.apply(&mut st).unwrap();
        assert_eq!((st.st_uid, st.st_gid), (5, 6));
        assert_eq!(st.st_mode, libc::S_IFBLK | 0o660);
        assert_eq!(st.st_rdev, 0x0801);
        assert_eq!(st.st_size, 42);
        let mut st2 = st;
        st2.st_mode = libc::S_IFREG;
        rec(libc::S_IFREG | 0o4755).apply(&mut st2).unwrap();
        assert_eq!(st2.st_rdev, 0, "rdev only for devices");
    }

    #[test]
    fn data_changes_clear_setuid_like_the_kernel() {
        let r = rec(libc::S_IFREG | 0o6755);
        assert_eq!(
            r.after_data_change(false).unwrap().mode,
            libc::S_IFREG | 0o755
        );
        assert_eq!(r.after_data_change(true), None, "CAP_FSETID keeps them");
        // setgid without group execute is kept (mandatory-locking marker).
        let r = rec(libc::S_IFREG | 0o2744);
        assert_eq!(r.after_data_change(false), None);
        let r = rec(libc::S_IFREG | 0o4700);
        assert_eq!(
            r.after_data_change(false).unwrap().mode,
            libc::S_IFREG | 0o700
        );
        assert_eq!(rec(libc::S_IFDIR | 0o2775).after_data_change(false), None);
        assert_eq!(rec(libc::S_IFREG | 0o755).after_data_change(false), None);
    }

    #[test]
    fn read_probe_classification() {
        assert_eq!(
            classify_read_probe(Err(libc::ENODATA)),
            XattrSupport::Supported
        );
        assert_eq!(classify_read_probe(Ok(20)), XattrSupport::Supported);
        assert_eq!(
            classify_read_probe(Err(libc::EOPNOTSUPP)),
            XattrSupport::Unsupported
        );
        assert_eq!(
            classify_read_probe(Err(libc::EACCES)),
            XattrSupport::Unknown(libc::EACCES)
        );
    }
    #[test]
    fn records_on_inodes_the_daemon_does_not_own_grant_nothing() {
        let forged = StatOverride {
            uid: 0,
            gid: 0,
            mode: libc::S_IFREG | libc::S_ISUID | libc::S_ISGID | 0o755,
            rdev: 0,
        };
        assert_eq!(forged.trusted_for_owner(1000, 1000), forged);
        let t = forged.trusted_for_owner(4242, 0);
        assert_eq!(t.mode, libc::S_IFREG | 0o755);
        assert_eq!((t.uid, t.gid), (0, 0));
        let dev = StatOverride {
            uid: 0,
            gid: 0,
            mode: libc::S_IFCHR | 0o666,
            rdev: 0x0101,
        };
        let t = dev.trusted_for_owner(4242, 0);
        assert_eq!((t.mode, t.rdev), (libc::S_IFREG | 0o666, 0));
        let fifo = StatOverride {
            mode: libc::S_IFIFO | libc::S_ISGID | 0o644,
            ..dev
        };
        assert_eq!(fifo.trusted_for_owner(1, 2).mode, libc::S_IFIFO | 0o644);
    }
}
