//! Paths given to `VolumeFs`: parsed once, then resolved only by the kernel
//! with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` relative to the
//! volume root's fd, so no component (`..`, a symlink, a directory swapped
//! for a symlink meanwhile) can lead out: the kernel answers `EXDEV`, which
//! becomes [`Error::PathEscape`].

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::error::Error;

/// A path relative to the volume root, split into components (`.` and
/// empty ones dropped; `..` kept for the kernel to resolve).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RelPath {
    /// The path as the caller wrote it, for messages.
    pub text: String,
    /// Its components.
    pub comps: Vec<Vec<u8>>,
}

impl RelPath {
    /// Parses `path`: absolute paths and `..` that climb above the root
    /// (counted lexically) are [`Error::PathEscape`]; a NUL byte is
    /// [`Error::InvalidPath`].
    pub fn parse(path: &Path) -> Result<RelPath, Error> {
        let bytes = path.as_os_str().as_bytes();
        let text = path.to_string_lossy().into_owned();
        if bytes.contains(&0) {
            return Err(Error::InvalidPath {
                path: text,
                reason: "holds a NUL byte".into(),
            });
        }
        if bytes.starts_with(b"/") {
            return Err(Error::PathEscape { path: text });
        }
        let mut depth: i64 = 0;
        let mut comps = Vec::new();
        for c in bytes.split(|b| *b == b'/') {
            match c {
                b"" | b"." => continue,
                b".." => depth -= 1,
                _ => depth += 1,
            }
            if depth < 0 {
                return Err(Error::PathEscape { path: text });
            }
            comps.push(c.to_vec());
        }
        Ok(RelPath { text, comps })
    }

    /// True when it names the root itself.
    pub fn is_root(&self) -> bool {
        self.comps.is_empty()
    }

    /// The whole path as one C string (`.` for the root).
    pub fn full(&self) -> CString {
        join(&self.comps)
    }

    /// The parent directory and the last component; refused for the root
    /// and for a last component `..`, which name no entry to work on.
    pub fn split(&self, what: &str) -> Result<(CString, CString), Error> {
        let bad = |reason: String| Error::InvalidPath {
            path: self.text.clone(),
            reason,
        };
        let (last, parent) = self
            .comps
            .split_last()
            .ok_or_else(|| bad(format!("names the volume root, which {what} cannot take")))?;
        if last.as_slice() == b".." {
            return Err(bad("ends in '..'; name the entry itself".into()));
        }
        let name = CString::new(last.clone()).map_err(|_| bad("holds a NUL byte".into()))?;
        Ok((join(parent), name))
    }

    /// The first `n` components as one C string.
    pub fn prefix(&self, n: usize) -> CString {
        join(&self.comps[..n.min(self.comps.len())])
    }

    /// Maps an error of resolving or operating on this path: `EXDEV`
    /// (RESOLVE_BENEATH refused a step out) is [`Error::PathEscape`],
    /// anything else an [`Error::Io`] naming the operation and the path.
    pub fn error(&self, what: &str, e: io::Error) -> Error {
        if e.raw_os_error() == Some(libc::EXDEV) {
            Error::PathEscape {
                path: self.text.clone(),
            }
        } else {
            Error::Io {
                context: format!("{what} {:?}", self.text),
                source: e,
            }
        }
    }
}

fn join(comps: &[Vec<u8>]) -> CString {
    if comps.is_empty() {
        return c".".to_owned();
    }
    let joined = comps.join(&b'/');
    // Components never hold NUL (checked in parse).
    CString::new(joined).unwrap_or_else(|_| c".".to_owned())
}

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// Resolution flags of every `VolumeFs` open: stay beneath the directory
/// fd (absolute symlinks and `..` past it fail with `EXDEV`), and never
/// cross a /proc magic link. Symlinks that stay inside are followed.
pub(crate) const RESOLVE_VOLUME: u64 = libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS;

/// `openat2(dir, path, flags | O_CLOEXEC, mode, RESOLVE_VOLUME)`, retried
/// on `EAGAIN` (the kernel's answer when a concurrent rename may have
/// raced a `..` step).
pub(crate) fn openat2(
    dir: BorrowedFd<'_>,
    path: &CStr,
    flags: i32,
    mode: u32,
) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: if flags & libc::O_CREAT != 0 {
            u64::from(mode)
        } else {
            0
        },
        resolve: RESOLVE_VOLUME,
    };
    loop {
        // SAFETY: `how` is a fully initialised open_how whose size we pass,
        // `path` is NUL-terminated and `dir` an open fd for the call.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir.as_raw_fd(),
                path.as_ptr(),
                &how as *const OpenHow,
                std::mem::size_of::<OpenHow>(),
            )
        };
        if ret >= 0 {
            // SAFETY: openat2 returned a new fd that nothing else owns.
            return Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) });
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<RelPath, Error> {
        RelPath::parse(Path::new(s))
    }

    #[test]
    fn parses_and_refuses_lexical_escapes() {
        assert_eq!(p("a/./b//c/").unwrap().full().as_bytes(), b"a/b/c");
        assert!(p("").unwrap().is_root());
        assert!(p("./.").unwrap().is_root());
        assert_eq!(p("a/../b").unwrap().full().as_bytes(), b"a/../b");
        for bad in ["/etc/passwd", "..", "../x", "a/../../x", "a/b/../../.."] {
            assert!(
                matches!(p(bad), Err(Error::PathEscape { .. })),
                "{bad} must be an escape"
            );
        }
        assert!(matches!(
            RelPath::parse(Path::new(std::ffi::OsStr::from_bytes(b"a\0b"))),
            Err(Error::InvalidPath { .. })
        ));
    }

    #[test]
    fn split_names_the_last_component() {
        let (parent, name) = p("a/b/c").unwrap().split("x").unwrap();
        assert_eq!(
            (parent.as_bytes(), name.as_bytes()),
            (&b"a/b"[..], &b"c"[..])
        );
        let (parent, name) = p("f").unwrap().split("x").unwrap();
        assert_eq!((parent.as_bytes(), name.as_bytes()), (&b"."[..], &b"f"[..]));
        assert!(p("")
            .unwrap()
            .split("remove")
            .unwrap_err()
            .to_string()
            .contains("root"));
        assert!(p("a/..").unwrap().split("remove").is_err());
    }
}
