//! Host permissions under stat virtualization: which mode the host inode
//! gets when the guest creates or chmods something.
//!
//! - `private` (default): the guest's mode lives only in the record; host
//!   inodes are created owner-only (0600 files, 0700 directories) and a guest
//!   chmod leaves the host mode alone, so the host user keeps managing the
//!   data and nobody else on the host gains access through the guest.
//! - `mirror`: the 0o777 bits of regular files and directories are copied to
//!   the host inode, so host tools see the guest's permissions. Never
//!   setuid, setgid or sticky (a guest-set setuid bit must not reach the host
//!   inode, CVE-2022-0358 class), never owner or type; an owner-access floor
//!   (rw for files, rwx for directories) keeps the host user's access.

/// Owner access every host regular file keeps.
pub const OWNER_FLOOR_FILE: u32 = 0o600;

/// Owner access every host directory keeps.
pub const OWNER_FLOOR_DIR: u32 = 0o700;

/// `--host-permissions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum HostPermissions {
    /// Guest modes stay in the record; host inodes stay owner-only.
    #[default]
    Private,
    /// The 0o777 bits of regular files and directories reach the host.
    Mirror,
}

impl HostPermissions {
    /// The flag's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            HostPermissions::Private => "private",
            HostPermissions::Mirror => "mirror",
        }
    }

    /// Host permission bits for a new host inode that will show the guest
    /// `guest_mode` (type and permission bits). Special files and
    /// file-backed symlinks are host regular files and always get 0600.
    pub fn create_mode(self, guest_mode: u32) -> u32 {
        let guest_type = guest_mode & libc::S_IFMT;
        match (self, guest_type) {
            (HostPermissions::Private, libc::S_IFDIR) => OWNER_FLOOR_DIR,
            (HostPermissions::Private, _) => OWNER_FLOOR_FILE,
            (HostPermissions::Mirror, libc::S_IFDIR | libc::S_IFREG) => {
                mirrored(guest_type, guest_mode)
            }
            (HostPermissions::Mirror, _) => OWNER_FLOOR_FILE,
        }
    }

    /// The host permission bits to set when the guest changes the mode of
    /// an inode to `guest_mode`; `None` leaves the host inode alone.
    pub fn chmod_mode(self, guest_mode: u32) -> Option<u32> {
        let guest_type = guest_mode & libc::S_IFMT;
        match (self, guest_type) {
            (HostPermissions::Mirror, libc::S_IFDIR | libc::S_IFREG) => {
                Some(mirrored(guest_type, guest_mode))
            }
            _ => None,
        }
    }
}

/// The 0o777 bits of `mode` with the owner floor of `file_type`.
fn mirrored(file_type: u32, mode: u32) -> u32 {
    let floor = if file_type == libc::S_IFDIR {
        OWNER_FLOOR_DIR
    } else {
        OWNER_FLOOR_FILE
    };
    (mode & 0o777) | floor
}

#[cfg(test)]
mod tests {
    use super::*;

    const REG: u32 = libc::S_IFREG;
    const DIR: u32 = libc::S_IFDIR;

    #[test]
    fn private_creates_owner_only_and_never_chmods() {
        let p = HostPermissions::Private;
        assert_eq!(p.create_mode(REG | 0o777), 0o600);
        assert_eq!(p.create_mode(REG), 0o600);
        assert_eq!(p.create_mode(DIR | 0o755), 0o700);
        assert_eq!(p.create_mode(libc::S_IFCHR | 0o666), 0o600);
        assert_eq!(p.chmod_mode(REG | 0o644), None);
        assert_eq!(p.chmod_mode(DIR | 0o4777), None);
    }

    #[test]
    fn mirror_copies_only_rwx_with_a_floor() {
        let m = HostPermissions::Mirror;
        assert_eq!(m.create_mode(REG | 0o644), 0o644);
        assert_eq!(m.create_mode(REG | 0o044), 0o644, "owner floor");
        assert_eq!(m.create_mode(DIR | 0o055), 0o755, "dir floor");
        assert_eq!(m.chmod_mode(REG | 0o4755), Some(0o755), "no setuid");
        assert_eq!(m.chmod_mode(REG | 0o2755), Some(0o755), "no setgid");
        assert_eq!(m.chmod_mode(DIR | 0o1777), Some(0o777), "no sticky");
        assert_eq!(m.chmod_mode(REG), Some(0o600));
        assert_eq!(m.chmod_mode(DIR), Some(0o700));
        // Special files and symlinks live in the record only.
        assert_eq!(m.chmod_mode(libc::S_IFIFO | 0o666), None);
        assert_eq!(m.chmod_mode(libc::S_IFLNK | 0o777), None);
        assert_eq!(m.create_mode(libc::S_IFBLK | 0o666), 0o600);
    }

    #[test]
    fn no_mode_ever_carries_privilege_bits() {
        for perms in [0o7777, 0o6755, 0o4000, 0o2000, 0o1000] {
            for t in [REG, DIR] {
                for p in [HostPermissions::Private, HostPermissions::Mirror] {
                    assert_eq!(p.create_mode(t | perms) & 0o7000, 0);
                    assert_eq!(p.chmod_mode(t | perms).unwrap_or(0) & 0o7000, 0);
                }
            }
        }
    }
}
