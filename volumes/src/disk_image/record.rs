//! The format record of an image: the `user.msb.disk-format` xattr on the
//! host file, written when msb first attaches it as raw. Guests cannot
//! reach it (they write blocks of the disk, not the file's xattrs).

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use super::DiskFormat;

/// Name of the xattr holding an image's recorded format.
pub const FORMAT_XATTR: &str = "user.msb.disk-format";
/// Longest record value read.
const MAX_VALUE: usize = 64;

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path holds a NUL byte"))
}

fn c_name() -> CString {
    CString::new(FORMAT_XATTR).unwrap_or_default()
}

/// The format recorded on `image`; `None` when there is no record or the
/// filesystem keeps no user xattrs. The error names a record that holds no
/// format name.
pub fn read_record(image: &Path) -> Result<Option<DiskFormat>, String> {
    let path = c_path(image).map_err(|e| e.to_string())?;
    let name = c_name();
    let mut buf = [0u8; MAX_VALUE];
    // SAFETY: `path` and `name` are NUL-terminated strings that outlive the
    // call; `buf` is a writable buffer of the length passed.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA) | Some(libc::EOPNOTSUPP) => Ok(None),
            _ => Err(format!("cannot read {FORMAT_XATTR}: {e}")),
        };
    }
    let value = String::from_utf8_lossy(&buf[..n as usize]).into_owned();
    value.trim().parse::<DiskFormat>().map(Some).map_err(|_| {
        format!(
            "{FORMAT_XATTR} holds {value:?}, not a format name; remove it: setfattr -x \
             {FORMAT_XATTR} {}",
            image.display()
        )
    })
}

/// Records `image` as raw.
pub fn record_raw(image: &Path) -> io::Result<()> {
    let path = c_path(image)?;
    let name = c_name();
    let value = DiskFormat::Raw.name().as_bytes();
    // SAFETY: `path` and `name` are NUL-terminated strings and `value` a
    // readable buffer of the length passed, all alive for the call.
    let rc = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
