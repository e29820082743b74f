//! Which extended attributes the guest may see and change.
//!
//! - `user.*` names are the guest's, except the daemon's own `user.msb.*`
//!   namespace (the stat-virtualization record lives there).
//! - `user.msb.*` is invisible: not listed, `getxattr` answers `ENODATA`,
//!   `setxattr`/`removexattr` answer `EPERM`, and none of them touches the
//!   host attribute.
//! - Every other namespace (`security.*`, `trusted.*`, `system.*` such as
//!   POSIX ACLs, anything unknown) is rejected, never remapped: not listed,
//!   `getxattr` answers `ENODATA`, `setxattr`/`removexattr` answer
//!   `EOPNOTSUPP`. A guest can therefore never give a host file capabilities
//!   (`security.capability`), an SELinux label, an ACL granting host users
//!   access, or overlayfs metadata (`trusted.*`) (CVE-2021-20263 class).

/// How a guest-supplied xattr name is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XattrClass {
    /// A `user.*` name of the guest's: passed through.
    Guest,
    /// The daemon's `user.msb.*` namespace: invisible to the guest.
    Reserved,
    /// Any other namespace: rejected.
    Foreign,
}

/// Prefix of the daemon's own attributes.
pub const RESERVED_PREFIX: &[u8] = b"user.msb.";

/// Classifies one name (without its NUL).
pub fn classify(name: &[u8]) -> XattrClass {
    if name.starts_with(RESERVED_PREFIX) {
        XattrClass::Reserved
    } else if name.starts_with(b"user.") {
        XattrClass::Guest
    } else {
        XattrClass::Foreign
    }
}

impl XattrClass {
    /// Errno for a `getxattr` of a name that is not the guest's.
    pub fn get_errno(self) -> Option<i32> {
        match self {
            XattrClass::Guest => None,
            XattrClass::Reserved | XattrClass::Foreign => Some(libc::ENODATA),
        }
    }

    /// Errno for a `setxattr` or `removexattr` of a name that is not the
    /// guest's.
    pub fn change_errno(self) -> Option<i32> {
        match self {
            XattrClass::Guest => None,
            XattrClass::Reserved => Some(libc::EPERM),
            XattrClass::Foreign => Some(libc::EOPNOTSUPP),
        }
    }
}

/// Keeps only the guest's names of a `listxattr` buffer (NUL-separated).
pub fn filter_list(list: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(list.len());
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        if classify(name) == XattrClass::Guest {
            out.extend_from_slice(name);
            out.push(0);
        }
    }
    out
}

/// Bytes the guest's xattrs take on the inode behind `path` (a
/// `/proc/self/fd` path), as a quota counts them: name plus value of every
/// attribute the guest can see (`user.*` but the daemon's own `user.msb.*`).
/// 0 when they cannot be read (symlinks, filesystems without xattrs).
pub fn guest_xattr_bytes(path: &std::ffi::CStr) -> u64 {
    use crate::filesystem::sys::xattr;
    let Ok(len) = xattr::list(path, &mut []) else {
        return 0;
    };
    // Room for a list that grew meanwhile; a list that outgrew it reads
    // as none (the next change measures again).
    let mut list = vec![0u8; len + 1024];
    let Ok(n) = xattr::list(path, &mut list) else {
        return 0;
    };
    filter_list(&list[..n])
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .filter_map(|n| {
            let c = std::ffi::CString::new(n).ok()?;
            let len = xattr::get(path, &c, &mut []).ok()?;
            Some((n.len() + len) as u64)
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes() {
        assert_eq!(classify(b"user.comment"), XattrClass::Guest);
        assert_eq!(classify(b"user.msb.override_stat"), XattrClass::Reserved);
        assert_eq!(classify(b"user.msb._probe"), XattrClass::Reserved);
        assert_eq!(classify(b"user.msbx"), XattrClass::Guest);
        for foreign in [
            &b"security.capability"[..],
            b"security.selinux",
            b"trusted.overlay.opaque",
            b"system.posix_acl_access",
            b"user",
            b"",
            b"os2.x",
        ] {
            assert_eq!(classify(foreign), XattrClass::Foreign, "{foreign:?}");
        }
        assert_eq!(XattrClass::Reserved.get_errno(), Some(libc::ENODATA));
        assert_eq!(XattrClass::Reserved.change_errno(), Some(libc::EPERM));
        assert_eq!(XattrClass::Foreign.change_errno(), Some(libc::EOPNOTSUPP));
        assert_eq!(XattrClass::Guest.change_errno(), None);
    }

    #[test]
    fn lists_keep_only_guest_names() {
        let host = b"user.a\0user.msb.override_stat\0security.selinux\0user.b\0trusted.x\0";
        assert_eq!(filter_list(host), b"user.a\0user.b\0");
        assert_eq!(filter_list(b""), b"");
        assert_eq!(filter_list(b"user.msb.override_stat\0"), b"");
        // A list without the final NUL still parses.
        assert_eq!(filter_list(b"user.a\0user.b"), b"user.a\0user.b\0");
    }
}
