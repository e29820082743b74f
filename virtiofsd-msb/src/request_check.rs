//! Structural checks of a raw FUSE request, made before it is decoded.
//!
//! fuse-backend-rs trusts several fields the guest controls: it cuts names
//! at the first NUL (so `"a\0junk"` would act on `a`), does not compare the
//! header's `len` with the bytes actually sent, and passes WRITE's `size`
//! through. Each check here answers such a request with `EINVAL` instead.

use std::io::Read;
use std::mem::size_of;

use fuse_backend_rs::abi::fuse_abi::{
    CreateIn, GetxattrIn, InHeader, LinkIn, MkdirIn, MknodIn, Opcode, Rename2In, RenameIn,
    SetxattrIn, WriteIn,
};
use vm_memory::ByteValued;

/// Largest name area we read to check (names are at most 255 bytes, link
/// targets at most PATH_MAX).
const MAX_NAME_AREA: usize = 2 * 4096 + 16;

/// How the body of a name-carrying request is laid out: a fixed struct,
/// then `strings` NUL-terminated strings.
fn name_layout(opcode: u32) -> Option<(usize, usize)> {
    let op = |o: Opcode| o as u32;
    Some(match opcode {
        x if x == op(Opcode::Lookup) || x == op(Opcode::Unlink) || x == op(Opcode::Rmdir) => (0, 1),
        x if x == op(Opcode::Removexattr) => (0, 1),
        x if x == op(Opcode::Symlink) => (0, 2),
        x if x == op(Opcode::Mknod) => (size_of::<MknodIn>(), 1),
        x if x == op(Opcode::Mkdir) => (size_of::<MkdirIn>(), 1),
        x if x == op(Opcode::Rename) => (size_of::<RenameIn>(), 2),
        x if x == op(Opcode::Rename2) => (size_of::<Rename2In>(), 2),
        x if x == op(Opcode::Link) => (size_of::<LinkIn>(), 1),
        x if x == op(Opcode::Create) => (size_of::<CreateIn>(), 1),
        x if x == op(Opcode::Getxattr) => (size_of::<GetxattrIn>(), 1),
        _ => return None,
    })
}

/// True when `area` holds exactly `count` NUL-terminated strings, each
/// non-empty except that nothing may follow the last NUL.
fn holds_exact_strings(area: &[u8], count: usize) -> bool {
    let Some(body) = area.strip_suffix(b"\0") else {
        return false;
    };
    body.split(|&b| b == 0).count() == count
}

/// Checks request `header` whose readable bytes (header included) number
/// `available`; `body` reads what follows the header. `Err(errno)` when the
/// request must be refused.
pub fn check(header: &InHeader, available: usize, body: &mut impl Read) -> Result<(), i32> {
    let len = header.len as usize;
    if len < size_of::<InHeader>() || len != available {
        return Err(libc::EINVAL);
    }
    let body_len = len - size_of::<InHeader>();
    if header.opcode == Opcode::Write as u32 {
        let mut w = WriteIn::default();
        body.read_exact(w.as_mut_slice())
            .map_err(|_| libc::EINVAL)?;
        return if w.size as usize == body_len.saturating_sub(size_of::<WriteIn>()) {
            Ok(())
        } else {
            Err(libc::EINVAL)
        };
    }
    if header.opcode == Opcode::Setxattr as u32 {
        let mut s = SetxattrIn::default();
        body.read_exact(s.as_mut_slice())
            .map_err(|_| libc::EINVAL)?;
        let names = body_len
            .checked_sub(size_of::<SetxattrIn>() + s.size as usize)
            .ok_or(libc::EINVAL)?;
        return check_strings(body, names, 1);
    }
    if header.opcode == Opcode::Rename2 as u32 {
        // fuse-backend-rs masks unknown flag bits away, which would turn a
        // request the kernel refuses into a plain rename.
        let mut r = Rename2In::default();
        body.read_exact(r.as_mut_slice())
            .map_err(|_| libc::EINVAL)?;
        let known = libc::RENAME_NOREPLACE | libc::RENAME_EXCHANGE | libc::RENAME_WHITEOUT;
        if r.flags & !known != 0 {
            return Err(libc::EINVAL);
        }
        let names = body_len
            .checked_sub(size_of::<Rename2In>())
            .ok_or(libc::EINVAL)?;
        return check_strings(body, names, 2);
    }
    let Some((fixed, strings)) = name_layout(header.opcode) else {
        return Ok(());
    };
    let names = body_len.checked_sub(fixed).ok_or(libc::EINVAL)?;
    let mut skip = vec![0u8; fixed];
    body.read_exact(&mut skip).map_err(|_| libc::EINVAL)?;
    check_strings(body, names, strings)
}

fn check_strings(body: &mut impl Read, len: usize, count: usize) -> Result<(), i32> {
    if len > MAX_NAME_AREA {
        return Err(libc::ENAMETOOLONG);
    }
    let mut area = vec![0u8; len];
    body.read_exact(&mut area).map_err(|_| libc::EINVAL)?;
    if holds_exact_strings(&area, count) {
        Ok(())
    } else {
        Err(libc::EINVAL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(opcode: Opcode, body_len: usize) -> InHeader {
        InHeader {
            len: (size_of::<InHeader>() + body_len) as u32,
            opcode: opcode as u32,
            ..Default::default()
        }
    }

    fn run(opcode: Opcode, body: &[u8]) -> Result<(), i32> {
        let h = header(opcode, body.len());
        check(&h, h.len as usize, &mut &body[..])
    }

    #[test]
    fn rename2_with_unknown_flags_is_refused() {
        let body = |flags: u32| {
            let r = Rename2In {
                newdir: 1,
                flags,
                padding: 0,
            };
            [r.as_slice(), b"a\0b\0"].concat()
        };
        assert_eq!(run(Opcode::Rename2, &body(libc::RENAME_NOREPLACE)), Ok(()));
        assert_eq!(run(Opcode::Rename2, &body(1 << 3)), Err(libc::EINVAL));
        assert_eq!(run(Opcode::Rename2, &body(1 << 31)), Err(libc::EINVAL));
        assert_eq!(run(Opcode::Rename2, &body(0)[..10]), Err(libc::EINVAL));
    }

    #[test]
    fn names_must_end_at_their_only_nul() {
        assert_eq!(run(Opcode::Lookup, b"name\0"), Ok(()));
        assert_eq!(run(Opcode::Lookup, b"inner\0junk\0"), Err(libc::EINVAL));
        assert_eq!(run(Opcode::Lookup, b"name"), Err(libc::EINVAL));
        assert_eq!(run(Opcode::Lookup, b"name\0\0"), Err(libc::EINVAL));
        assert_eq!(run(Opcode::Symlink, b"link\0target\0"), Ok(()));
        assert_eq!(run(Opcode::Symlink, b"link\0"), Err(libc::EINVAL));
        let mut mkdir = vec![0u8; size_of::<MkdirIn>()];
        mkdir.extend_from_slice(b"d\0");
        assert_eq!(run(Opcode::Mkdir, &mkdir), Ok(()));
        mkdir.extend_from_slice(b"x\0");
        assert_eq!(run(Opcode::Mkdir, &mkdir), Err(libc::EINVAL));
        let mut rename = vec![0u8; size_of::<RenameIn>()];
        rename.extend_from_slice(b"a\0b\0");
        assert_eq!(run(Opcode::Rename, &rename), Ok(()));
        assert_eq!(run(Opcode::Create, b"short"), Err(libc::EINVAL));
    }

    #[test]
    fn header_len_must_match_the_bytes_sent() {
        let h = header(Opcode::Getattr, 16);
        assert_eq!(check(&h, h.len as usize, &mut &[0u8; 16][..]), Ok(()));
        assert_eq!(
            check(&h, h.len as usize + 8, &mut &[0u8; 24][..]),
            Err(libc::EINVAL)
        );
        let short = InHeader { len: 20, ..h };
        assert_eq!(check(&short, 56, &mut &[0u8; 16][..]), Err(libc::EINVAL));
    }

    #[test]
    fn write_size_must_match_its_data() {
        let mut w = WriteIn {
            size: 10,
            ..Default::default()
        };
        let mut body = w.as_slice().to_vec();
        body.extend_from_slice(&[7u8; 10]);
        assert_eq!(run(Opcode::Write, &body), Ok(()));
        w.size = 4096;
        body[..size_of::<WriteIn>()].copy_from_slice(w.as_slice());
        assert_eq!(run(Opcode::Write, &body), Err(libc::EINVAL));
    }

    #[test]
    fn setxattr_name_and_value_fit_the_body() {
        let s = SetxattrIn { size: 3, flags: 0 };
        let mut body = s.as_slice().to_vec();
        body.extend_from_slice(b"user.a\0v\0v");
        assert_eq!(run(Opcode::Setxattr, &body), Ok(()));
        let s = SetxattrIn { size: 30, flags: 0 };
        body[..size_of::<SetxattrIn>()].copy_from_slice(s.as_slice());
        assert_eq!(run(Opcode::Setxattr, &body), Err(libc::EINVAL));
    }
}
